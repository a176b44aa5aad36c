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

from tachimeter.metrics.family import MetricFamily
from tachimeter.metrics.registry import Registry

__all__ = ["ServerInstruments", "collector_families"]

from tachimeter.collect.metrics import (
    collector_families,
)
from tachimeter.collect.metrics import (
    global_collector_families as _global_collector_families,
)

# Request durations: an ingest commit takes milliseconds, a cold query up to seconds.
_DURATION_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


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
