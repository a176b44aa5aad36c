"""Tachimeter: local-first analytics and telemetry for AI-agent systems.

>>> import tachimeter as tm
>>> tm.EventType.TOKENS_CONSUMED.category().value
'business'

The public API is what ``__all__`` lists here (plus ``tachimeter.testing``); every other
module is internal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
from tachimeter.collect.api import set_default_sinks as _set_default_sinks
from tachimeter.collect.collector import CollectorStatsSnapshot, EventCollector
from tachimeter.collect.sinks import ConsoleSink, EventSink, JsonlFileSink, MemorySink
from tachimeter.collect.subscription import Subscription
from tachimeter.config.manager import AnalyticsConfigManager
from tachimeter.config.settings import AnalyticsConfig
from tachimeter.config.sources import load_config
from tachimeter.errors import (
    CollectorError,
    ConfigError,
    InvalidStateTransition,
    QueryError,
    SinkError,
    StoreError,
    TachimeterError,
    ValidationError,
)
from tachimeter.missions import (
    CollectionFailed,
    Mission,
    MissionAnalytics,
    MissionError,
    MissionMetrics,
    MissionNotFound,
    MissionStatus,
    MissionTracker,
    ToolUsage,
    current_mission,
    mission,
    tool,
)
from tachimeter.model import (
    AnalyticsEvent,
    BusinessEventData,
    BusinessMetricType,
    Custom,
    CustomData,
    ErrorEventData,
    ErrorSeverity,
    EventBatch,
    EventBuilder,
    EventCategory,
    EventId,
    EventMetadata,
    EventPriority,
    EventRow,
    EventType,
    MetricBuilder,
    MetricPoint,
    MetricType,
    PerformanceEventData,
    SamplingConfig,
    UsageEventData,
    ValidationLimits,
    ValidationResult,
    decode_batch,
    decode_event,
    encode_batch,
    encode_event,
    register_event_type,
    validate_batch,
    validate_event,
)
from tachimeter.model.prices import (
    DEFAULT_PRICE_TABLE,
    CostEstimate,
    ModelPrice,
    PriceTable,
    infer_cost,
)
from tachimeter.model.tokens import TokenUsage
from tachimeter.privacy.scrubber import Scrubber, sanitize_event


def _default_sinks(config: AnalyticsConfig) -> list[EventSink]:
    from tachimeter.defaults import default_sinks  # the store loads on first use

    return default_sinks(config)


_set_default_sinks(_default_sinks)

if TYPE_CHECKING:
    from tachimeter.metrics import (
        Counter,
        Gauge,
        Histogram,
        Registry,
        Summary,
        Timer,
        counter,
        gauge,
        generate_latest,
        histogram,
        summary,
        timer,
    )

__version__: str

# The metrics layer loads on first use: most event-only users never pay for it.
_LAZY = {
    "Counter": "tachimeter.metrics",
    "Gauge": "tachimeter.metrics",
    "Histogram": "tachimeter.metrics",
    "Registry": "tachimeter.metrics",
    "Summary": "tachimeter.metrics",
    "Timer": "tachimeter.metrics",
    "counter": "tachimeter.metrics",
    "gauge": "tachimeter.metrics",
    "generate_latest": "tachimeter.metrics",
    "histogram": "tachimeter.metrics",
    "summary": "tachimeter.metrics",
    "timer": "tachimeter.metrics",
}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from tachimeter.model.data import library_version

        return library_version()
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tachimeter' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "DEFAULT_PRICE_TABLE",
    "AnalyticsConfig",
    "AnalyticsConfigManager",
    "AnalyticsEvent",
    "BusinessEventData",
    "BusinessMetricType",
    "CollectionFailed",
    "CollectorError",
    "CollectorStatsSnapshot",
    "ConfigError",
    "ConsoleSink",
    "CostEstimate",
    "Counter",
    "Custom",
    "CustomData",
    "ErrorEventData",
    "ErrorSeverity",
    "EventBatch",
    "EventBuilder",
    "EventCategory",
    "EventCollector",
    "EventId",
    "EventMetadata",
    "EventPriority",
    "EventRow",
    "EventSink",
    "EventType",
    "Gauge",
    "Histogram",
    "InvalidStateTransition",
    "JsonlFileSink",
    "MemorySink",
    "MetricBuilder",
    "MetricPoint",
    "MetricType",
    "Mission",
    "MissionAnalytics",
    "MissionError",
    "MissionMetrics",
    "MissionNotFound",
    "MissionStatus",
    "MissionTracker",
    "ModelPrice",
    "PerformanceEventData",
    "PriceTable",
    "QueryError",
    "Registry",
    "SamplingConfig",
    "Scrubber",
    "SinkError",
    "StoreError",
    "Subscription",
    "Summary",
    "TachimeterError",
    "Timer",
    "TokenUsage",
    "ToolUsage",
    "UsageEventData",
    "ValidationError",
    "ValidationLimits",
    "ValidationResult",
    "configure",
    "counter",
    "current_mission",
    "decode_batch",
    "decode_event",
    "encode_batch",
    "encode_event",
    "flush",
    "gauge",
    "generate_latest",
    "global_collector",
    "histogram",
    "identify",
    "infer_cost",
    "init_global_collector",
    "load_config",
    "mission",
    "page",
    "register_event_type",
    "sanitize_event",
    "shutdown",
    "summary",
    "timer",
    "tool",
    "track",
    "validate_batch",
    "validate_event",
]
