"""Percentiles with one defined method: linear interpolation between closest ranks.

This is Hyndman and Fan's type 7, numpy's default ``linear`` method and what spreadsheets
call PERCENTILE.INC: for ``n`` sorted values the ``q``-quantile sits at rank
``(n - 1) * q``, between the two values around it. (Spec 414's ``len/2`` and
``len*9/10`` indexing is not a defined method: DESIGN.md.)
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Final

from tachimeter.errors import QueryError

__all__ = ["parse_percentile", "percentile_label", "quantile"]

_LABEL: Final = re.compile(r"p(\d{1,2}(?:\.\d{1,3})?)")


def quantile(sorted_values: Sequence[float], q: float) -> float | None:
    """The ``q``-quantile (0 <= q <= 1) of ascending values; None when there are none.

    >>> quantile([1.0, 2.0, 3.0, 4.0], 0.5)
    2.5
    >>> quantile([10.0], 0.99)
    10.0
    """
    n = len(sorted_values)
    if n == 0:
        return None
    rank = (n - 1) * q
    lo = math.floor(rank)
    hi = min(lo + 1, n - 1)
    frac = rank - lo
    low = float(sorted_values[lo])
    return low + (float(sorted_values[hi]) - low) * frac


def parse_percentile(value: float | str, name: str = "percentile") -> float:
    """A percentile given as 0-100 (``90``, ``99.9``) or a label (``"p90"``) as a fraction.

    >>> parse_percentile("p99"), parse_percentile(50)
    (0.99, 0.5)
    """
    if isinstance(value, str):
        m = _LABEL.fullmatch(value)
        if m is None:
            raise QueryError(
                f"{name} {value!r} is not a percentile label; use p50, p90, p99.9", name
            )
        number = float(m.group(1))
    elif isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    else:
        raise QueryError(
            f"{name} must be a number in [0, 100] or a label like 'p90', got {value!r}", name
        )
    if not 0 <= number <= 100:
        raise QueryError(f"{name} must be in [0, 100], got {value!r}", name)
    return number / 100


def percentile_label(fraction: float) -> str:
    """The label of a percentile fraction: 0.9 -> ``"p90"``, 0.999 -> ``"p99.9"``."""
    return "p" + f"{fraction * 100:.3f}".rstrip("0").rstrip(".")
