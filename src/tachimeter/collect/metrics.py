"""The collector's own statistics as Prometheus metrics (``tachimeter_collector_*``).

Read at scrape time from a stats snapshot; scraping never creates a collector (telemetry
does not observe itself). The global collector's are registered on the default registry
when it is created, so ``tachimeter.generate_latest()`` and any ``/metrics`` show them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from tachimeter.collect.collector import CollectorStatsSnapshot
from tachimeter.metrics.family import MetricFamily, Sample

__all__ = ["collector_families", "global_collector_families", "register_global_collector_metrics"]

# (field of CollectorStatsSnapshot, counter family name, help)
_COUNTERS: Final = (
    ("events_received", "tachimeter_collector_events_received", "Events given to the collector"),
    (
        "events_processed",
        "tachimeter_collector_events_processed",
        "Events handed to the sinks in batches",
    ),
    (
        "events_sampled_out",
        "tachimeter_collector_events_sampled_out",
        "Events not kept by sampling",
    ),
    (
        "events_filtered",
        "tachimeter_collector_events_filtered",
        "Events the configuration said not to collect",
    ),
    (
        "events_dead_lettered",
        "tachimeter_collector_events_dead_lettered",
        "Events that failed validation",
    ),
)


def collector_families(stats: CollectorStatsSnapshot) -> list[MetricFamily]:
    """The ``tachimeter_collector_*`` families of one stats snapshot.

    >>> from tachimeter.testing import collector_for_tests
    >>> with collector_for_tests() as collector:
    ...     names = [f.name for f in collector_families(collector.stats())]
    >>> names[:2]
    ['tachimeter_collector_events_received', 'tachimeter_collector_events_processed']
    """
    families = [
        MetricFamily(
            name=name,
            kind="counter",
            documentation=help_text,
            samples=(Sample(f"{name}_total", (), float(getattr(stats, field))),),
        )
        for field, name, help_text in _COUNTERS
    ]
    reasons = dict(stats.dropped_by_reason)
    if not reasons and stats.events_dropped:
        reasons["unknown"] = stats.events_dropped
    families.append(
        MetricFamily(
            name="tachimeter_collector_events_dropped",
            kind="counter",
            documentation="Events dropped, by reason",
            samples=tuple(
                Sample("tachimeter_collector_events_dropped_total", (("reason", r),), float(n))
                for r, n in sorted(reasons.items())
            ),
        )
    )
    families.append(
        MetricFamily(
            name="tachimeter_collector_queue_depth",
            kind="gauge",
            documentation="Events accepted and not yet delivered to every sink",
            samples=(Sample("tachimeter_collector_queue_depth", (), float(stats.events_pending)),),
        )
    )
    families.append(
        MetricFamily(
            name="tachimeter_collector_flush_duration_seconds",
            kind="summary",
            documentation="Time flush() took, from the call to every sink's acknowledgement",
            samples=(
                Sample(
                    "tachimeter_collector_flush_duration_seconds_count", (), float(stats.flushes)
                ),
                Sample(
                    "tachimeter_collector_flush_duration_seconds_sum",
                    (),
                    stats.flush_seconds_total,
                ),
            ),
        )
    )
    return families


def global_collector_families() -> Iterable[MetricFamily]:
    from tachimeter.collect.api import global_collector

    collector = global_collector()
    if collector is None:
        return []
    return collector_families(collector.stats())


def register_global_collector_metrics() -> None:
    """Expose the global collector's statistics on the default registry (idempotent)."""
    from tachimeter.metrics.registry import REGISTRY

    REGISTRY.register_collector(global_collector_families)
