"""Collector layer (spec 408): the collector, sampling, sinks, spool, subscriptions."""

from tachimeter.collect.api import (
    configure,
    flush,
    global_collector,
    identify,
    init_global_collector,
    page,
    shutdown,
    track,
)
from tachimeter.collect.collector import CollectorStatsSnapshot, EventCollector
from tachimeter.collect.sampling import Sampler
from tachimeter.collect.sinks import ConsoleSink, EventSink, JsonlFileSink, MemorySink
from tachimeter.collect.spool import Spool
from tachimeter.collect.subscription import Subscription

__all__ = [
    "CollectorStatsSnapshot",
    "ConsoleSink",
    "EventCollector",
    "EventSink",
    "JsonlFileSink",
    "MemorySink",
    "Sampler",
    "Spool",
    "Subscription",
    "configure",
    "flush",
    "global_collector",
    "identify",
    "init_global_collector",
    "page",
    "shutdown",
    "track",
]
