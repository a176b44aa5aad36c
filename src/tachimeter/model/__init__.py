"""Event, metric-point and mission model types; ids; serialization; validation.

Internal layer: users import these names from ``tachimeter``.
"""

from tachimeter.model.codec import (
    decode_batch,
    decode_event,
    encode_batch,
    encode_event,
    event_from_builtins,
    event_to_builtins,
)
from tachimeter.model.data import (
    BusinessEventData,
    BusinessMetricType,
    CustomData,
    ErrorEventData,
    ErrorSeverity,
    EventData,
    EventMetadata,
    PerformanceEventData,
    UsageEventData,
)
from tachimeter.model.event_types import (
    Custom,
    EventCategory,
    EventKind,
    EventPriority,
    EventType,
    SamplingConfig,
    register_event_type,
)
from tachimeter.model.events import AnalyticsEvent, EventBatch, EventBuilder
from tachimeter.model.ids import EventId
from tachimeter.model.rows import EventRow, MetricBuilder, MetricPoint, MetricType
from tachimeter.model.validation import (
    ValidationLimits,
    ValidationResult,
    validate_batch,
    validate_event,
    validate_events,
)

__all__ = [
    "AnalyticsEvent",
    "BusinessEventData",
    "BusinessMetricType",
    "Custom",
    "CustomData",
    "ErrorEventData",
    "ErrorSeverity",
    "EventBatch",
    "EventBuilder",
    "EventCategory",
    "EventData",
    "EventId",
    "EventKind",
    "EventMetadata",
    "EventPriority",
    "EventRow",
    "EventType",
    "MetricBuilder",
    "MetricPoint",
    "MetricType",
    "PerformanceEventData",
    "SamplingConfig",
    "UsageEventData",
    "ValidationLimits",
    "ValidationResult",
    "decode_batch",
    "decode_event",
    "encode_batch",
    "encode_event",
    "event_from_builtins",
    "event_to_builtins",
    "register_event_type",
    "validate_batch",
    "validate_event",
    "validate_events",
]
