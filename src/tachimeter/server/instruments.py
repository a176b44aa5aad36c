"""What ``GET /metrics`` exposes: the server's own metrics and the collector's counters.

The server's (``tachimeter_server_*``) are kept in a registry of the app's own, never the
process default, so an application embedding the server keeps its metrics apart. The
collector's statistics (``tachimeter_collector_*``, DESIGN.md's canonical names) are read
at scrape time from the process's global collector, when one exists; scraping never
creates one (telemetry does not observe itself).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final

from tachimeter.collect.collector import CollectorStatsSnapshot
from tachimeter.metrics.family import MetricFamily, Sample
from tachimeter.metrics.registry import Registry

__all__ = ["ServerInstruments", "collector_families"]

# Request durations: an ingest commit takes milliseconds, a cold query up to seconds.
_DURATION_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

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
    return families


def _global_collector_families() -> Iterable[MetricFamily]:
    from tachimeter.collect.api import global_collector

    collector = global_collector()
    if collector is None:
        return []
    return collector_families(collector.stats())


class ServerInstruments:
    """The server's metrics in a registry of their own (also given the collector's).

    >>> instruments = ServerInstruments()
    >>> instruments.events_ingested.inc(3)
    >>> "tachimeter_server_events_ingested" in [f.name for f in instruments.registry.collect()]
    True
    """

    __slots__ = (
        "events_duplicate",
        "events_ingested",
        "events_rejected",
        "ingest_bytes",
        "registry",
        "request_seconds",
        "requests",
        "stream_subscribers",
        "writer_pending",
    )

    def __init__(
        self,
        registry: Registry | None = None,
        *,
        collector_source: Callable[[], Iterable[MetricFamily]] | None = None,
    ) -> None:
        self.registry = registry if registry is not None else Registry()
        reg = self.registry
        self.requests = reg.counter(
            "tachimeter_server_requests",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            max_series=2_000,
        )
        self.request_seconds = reg.histogram(
            "tachimeter_server_request_duration_seconds",
            "Time from request to the end of the answer's headers, by route template",
            ["route"],
            unit="seconds",
            buckets=_DURATION_BUCKETS,
            max_series=200,
        )
        self.events_ingested = reg.counter(
            "tachimeter_server_events_ingested", "Events committed to the store by ingest"
        )
        self.events_duplicate = reg.counter(
            "tachimeter_server_events_duplicate",
            "Ingested events already stored (a retried batch), skipped",
        )
        self.events_rejected = reg.counter(
            "tachimeter_server_events_rejected",
            "Ingested events refused, by reason",
            ["reason"],
        )
        self.ingest_bytes = reg.counter(
            "tachimeter_server_ingest_bytes", "Request body bytes received by ingest, as sent"
        )
        self.stream_subscribers = reg.gauge(
            "tachimeter_server_stream_subscribers", "Clients connected to the live stream"
        )
        self.writer_pending = reg.gauge(
            "tachimeter_server_writer_pending_events",
            "Events accepted by ingest and waiting for their commit",
        )
        reg.register_collector(collector_source or _global_collector_families)
