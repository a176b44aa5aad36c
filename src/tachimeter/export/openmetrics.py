"""Stored metric samples as OpenMetrics 1.0 text, with timestamps, ending in ``# EOF``.

What a backfill needs (``promtool tsdb create-blocks-from openmetrics``): every sample
carries its timestamp (seconds, to the microsecond); a family's series each come in one
run, in time order. How stored series are exposed:

* names and label names that OpenMetrics does not allow (spec 355's ``api.latency``)
  have each bad character replaced by ``_`` (``api_latency``);
* a cumulative counter named ``*_total`` is a ``counter`` family without the suffix;
* a delta counter (spec 355 counter points and event-derived counts: each sample is an
  increment) is a ``counter`` whose value is the running total of its increments from
  the start of the export, since OpenMetrics counters are cumulative;
* gauges are ``gauge``; other series (observations of spec 355 histograms and timers,
  the ``_bucket``/``_count``/``_sum`` series of a scraped histogram) are ``unknown``,
  with their values as stored;
* a non-finite sample of a counter is skipped (counted): OpenMetrics forbids it.

Floats are written as :func:`tachimeter.metrics.primitives.format_float` writes them
for ``/metrics``; label values are escaped as the exposition escapes them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import BinaryIO, Final, NamedTuple

from tachimeter.errors import QueryError
from tachimeter.export.tables import SeriesBlock
from tachimeter.metrics.primitives import format_float
from tachimeter.store.timeseries import SeriesInfo

__all__ = ["Exposure", "OpenMetricsWriter", "check_families", "family_of"]

_BAD_NAME_CHARS: Final = re.compile(r"[^a-zA-Z0-9_:]")
_BAD_LABEL_CHARS: Final = re.compile(r"[^a-zA-Z0-9_]")
_UNIT: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# The sample names a family of each kind claims besides its own name (OpenMetrics 1.0).
_CLAIMED_SUFFIXES: Final = {"counter": ("_total", "_created"), "gauge": (), "unknown": ()}


class Exposure(NamedTuple):
    """How one stored series appears: family name and type, sample name, and whether
    its values are summed into a running total (a delta counter)."""

    family: str
    kind: str
    sample: str
    running_total: bool


def _metric_name(name: str) -> str:
    fixed = _BAD_NAME_CHARS.sub("_", name)
    return "_" + fixed if not fixed or fixed[0].isdigit() else fixed


def _label_name(name: str) -> str:
    fixed = _BAD_LABEL_CHARS.sub("_", name)
    return "_" + fixed if not fixed or fixed[0].isdigit() else fixed


def family_of(series: SeriesInfo) -> Exposure:
    """The OpenMetrics exposure of a stored series.

    >>> family_of(SeriesInfo(id=1, name="api.requests", metric_type="counter",
    ...                      temporality="delta"))
    Exposure(family='api_requests', kind='counter', sample='api_requests_total', running_total=True)
    """
    name = _metric_name(series.name)
    if series.metric_type == "counter":
        base = name[: -len("_total")] if name.endswith("_total") else name
        if series.temporality == "delta" and base:
            return Exposure(base, "counter", base + "_total", True)
        if name.endswith("_total") and base:
            return Exposure(base, "counter", name, False)
        return Exposure(name, "unknown", name, False)
    if series.metric_type == "gauge":
        return Exposure(name, "gauge", name, False)
    return Exposure(name, "unknown", name, False)


def check_families(series: Iterable[SeriesInfo]) -> None:
    """Raise ``QueryError`` before anything is written if two stored metrics would expose
    the same OpenMetrics name (``a.b`` and ``a_b``; a gauge ``x_total`` and a counter
    ``x``), which a reader would reject."""
    kinds: dict[str, tuple[str, str]] = {}
    claimed: dict[str, str] = {}
    for s in series:
        exposure = family_of(s)
        family = exposure.family
        known = kinds.get(family)
        if known is not None:
            if known[0] != exposure.kind:
                raise QueryError(
                    f"metrics {known[1]!r} ({known[0]}) and {s.name!r} ({exposure.kind}) both "
                    f"export as the OpenMetrics family {family!r}; export them one at a time "
                    "with --metric, or use --format csv, jsonl or parquet"
                )
            continue
        kinds[family] = (exposure.kind, s.name)
        for suffix in ("", *_CLAIMED_SUFFIXES[exposure.kind]):
            owner = claimed.setdefault(family + suffix, family)
            if owner != family:
                raise QueryError(
                    f"the OpenMetrics name {family + suffix!r} of metric {s.name!r} clashes "
                    f"with family {owner!r}; export them one at a time with --metric, or use "
                    "--format csv, jsonl or parquet"
                )


def _escape(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    pairs = sorted((_label_name(k), v) for k, v in labels.items())
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


def _seconds(us: int) -> str:
    """Microseconds since the epoch as OpenMetrics seconds, exactly: ``1709294096.123456``."""
    whole, fraction = divmod(abs(us), 1_000_000)
    return f"{'-' if us < 0 else ''}{whole}.{fraction:06d}"


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class OpenMetricsWriter:
    """Writes series blocks (series-major, families in order) as OpenMetrics text.

    >>> import io, numpy as np
    >>> out = io.BytesIO()
    >>> writer = OpenMetricsWriter(out)
    >>> s = SeriesInfo(id=1, name="queue_depth", metric_type="gauge", labels={"q": "a"})
    >>> writer.write(SeriesBlock(s, np.array([1_500_000]), np.array([3.0])))
    1
    >>> writer.close()
    >>> print(out.getvalue().decode(), end="")
    # TYPE queue_depth gauge
    queue_depth{q="a"} 3.0 1.500000
    # EOF
    """

    __slots__ = ("_family", "_out", "_series", "_total", "skipped")

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._family: str | None = None
        self._series: int | None = None
        self._total = 0.0
        self.skipped = 0

    def _header(self, series: SeriesInfo, exposure: Exposure) -> str:
        lines = []
        notes = []
        if _metric_name(series.name) != series.name:
            notes.append(f"stored as {series.name}")
        if exposure.running_total:
            notes.append("increments summed from the start of the export")
        if notes:
            lines.append(f"# HELP {exposure.family} {_help('; '.join(notes))}\n")
        lines.append(f"# TYPE {exposure.family} {exposure.kind}\n")
        unit = series.unit
        if unit and _UNIT.fullmatch(unit) and exposure.family.endswith("_" + unit):
            lines.append(f"# UNIT {exposure.family} {unit}\n")
        return "".join(lines)

    def write(self, block: SeriesBlock) -> int:
        """Write one block's samples; returns how many were written."""
        series = block.series
        exposure = family_of(series)
        out: list[str] = []
        if exposure.family != self._family:
            self._family = exposure.family
            out.append(self._header(series, exposure))
        if series.id != self._series:
            self._series = series.id
            self._total = 0.0
        prefix = exposure.sample + _labels(series.labels) + " "
        counter = exposure.kind == "counter"
        written = 0
        values: Sequence[float] = block.values.tolist()
        for ts, value in zip(block.timestamps.tolist(), values, strict=True):
            if counter and not math.isfinite(value):
                self.skipped += 1
                continue
            if exposure.running_total:
                self._total += value
                value = self._total
            out.append(f"{prefix}{format_float(value)} {_seconds(ts)}\n")
            written += 1
        self._out.write("".join(out).encode("utf-8", "replace"))
        return written

    def close(self) -> None:
        """End the exposition with ``# EOF``."""
        self._out.write(b"# EOF\n")
