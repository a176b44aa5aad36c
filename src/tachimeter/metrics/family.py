"""What a scrape sees: metric families and their samples, independent of any text format.

Metrics produce these on ``collect()``; custom collectors registered with
``Registry.register_collector`` return them; the exposition encoders read them.
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ["MetricFamily", "MetricKind", "Sample"]

MetricKind = Literal["counter", "gauge", "histogram", "summary", "unknown"]


class Sample(msgspec.Struct, frozen=True):
    """One value of one series: the full sample name, its label pairs in order, the value.

    >>> Sample("queue_depth", (("queue", "events"),), 12.0).value
    12.0
    """

    name: str
    labels: tuple[tuple[str, str], ...]
    value: float


class MetricFamily(msgspec.Struct, frozen=True):
    """A named metric of one kind with its samples, as exposition formats see it.

    ``name`` is the family name: for a counter it has no ``_total`` (its samples do),
    for a histogram the samples are ``<name>_bucket``, ``<name>_count``, ``<name>_sum``.
    ``unit``, when set, is the family name's last ``_``-separated part.

    >>> MetricFamily(
    ...     name="tachimeter_collector_queue_depth",
    ...     kind="gauge",
    ...     documentation="Events waiting in the collector queue",
    ...     samples=(Sample("tachimeter_collector_queue_depth", (), 3.0),),
    ... ).samples[0].value
    3.0
    """

    name: str
    kind: MetricKind
    documentation: str
    samples: tuple[Sample, ...] = ()
    unit: str = ""
