"""Rows of spec 355's tables, and the mapping of events onto ``analytics_events``.

Mapping (DESIGN.md): ``event_type`` is the call kind (``track``, ``page``, ``identify``),
``event_name`` the snake_case event name, ``properties`` the data payload as JSON, and
``context`` the metadata as JSON: the metadata's named fields and custom entries, plus
the reserved keys ``category``, ``priority``, ``data_kind``, ``session_assigned`` and
``library`` (``{"name": "tachimeter", "version": ...}``). Timestamps are fixed-width
UTC text (``tachimeter.model.timestamps``). ``event_to_row`` and ``row_to_event`` are
inverse for every valid event.
"""

from __future__ import annotations

import enum
import time
import uuid
from typing import Any, Final

import msgspec

from tachimeter.errors import ValidationError
from tachimeter.model.codec import data_from_builtins, data_to_builtins
from tachimeter.model.data import DATA_KINDS, EventMetadata, data_kind, library_version
from tachimeter.model.event_types import EventCategory, EventPriority, event_type_from_name
from tachimeter.model.events import AnalyticsEvent
from tachimeter.model.ids import uuid7_from_ns
from tachimeter.model.timestamps import format_timestamp, from_ns, parse_timestamp

__all__ = [
    "RESERVED_CONTEXT_KEYS",
    "EventRow",
    "MetricBuilder",
    "MetricPoint",
    "MetricType",
    "event_to_row",
    "row_to_event",
]

RESERVED_CONTEXT_KEYS: Final = frozenset(
    {"category", "priority", "data_kind", "session_assigned", "library"}
) | (frozenset(EventMetadata.__struct_fields__) - {"custom"})
_METADATA_FIELDS: Final = tuple(f for f in EventMetadata.__struct_fields__ if f != "custom")
_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.Decoder().decode


class EventRow(msgspec.Struct, frozen=True, array_like=True):
    """One row of ``analytics_events`` in spec 355's column order (``astuple`` for SQL)."""

    id: str
    event_type: str
    event_name: str
    timestamp: str
    session_id: str | None
    user_id: str | None
    properties: str | None
    context: str | None
    page_url: str | None
    referrer: str | None

    def astuple(self) -> tuple[Any, ...]:
        """The row as a tuple for ``executemany``."""
        return msgspec.structs.astuple(self)


def event_to_row(event: AnalyticsEvent) -> EventRow:
    """The ``analytics_events`` row of an event."""
    md = event.metadata
    context: dict[str, Any] = dict(md.custom) if md.custom else {}
    for field in _METADATA_FIELDS:
        value = getattr(md, field)
        if value is not None:
            context[field] = value
    context["category"] = event.category.value
    context["priority"] = event.priority.value
    context["data_kind"] = data_kind(event.data)
    if event.session_assigned:
        context["session_assigned"] = True
    context["library"] = {"name": "tachimeter", "version": library_version()}
    data = event.data
    return EventRow(
        id=str(event.id),
        event_type=event.call,
        event_name=event.event_type.event_name,
        timestamp=format_timestamp(event.timestamp),
        session_id=event.session_id,
        user_id=event.user_id,
        properties=None if data is None else _json_encode(data_to_builtins(data)).decode(),
        context=_json_encode(context).decode(),
        page_url=event.page_url,
        referrer=event.referrer,
    )


def row_to_event(row: EventRow | tuple[Any, ...]) -> AnalyticsEvent:
    """The event of an ``analytics_events`` row; ``ValidationError`` names a bad column.

    Rows written by other tools work too: a missing context gives the event type's
    category, normal priority and data classified by shape.
    """
    if not isinstance(row, EventRow):
        row = EventRow(*row)
    try:
        context = _json_decode(row.context) if row.context else {}
        if not isinstance(context, dict):
            raise ValidationError("context must be a JSON object", path="context")
    except msgspec.DecodeError as exc:
        raise ValidationError(
            f"row {row.id}: context is not valid JSON: {exc}", "context"
        ) from None
    try:
        properties = _json_decode(row.properties) if row.properties is not None else None
    except msgspec.DecodeError as exc:
        raise ValidationError(
            f"row {row.id}: properties is not valid JSON: {exc}", "properties"
        ) from None
    context = dict(context)
    context.pop("library", None)
    kind = context.pop("data_kind", None)
    if kind not in DATA_KINDS:
        kind = None
    event_type = event_type_from_name(row.event_name)
    try:
        category = EventCategory(context.pop("category", event_type.category().value))
        priority = EventPriority(context.pop("priority", "normal"))
        timestamp = parse_timestamp(row.timestamp)
        event_id = uuid.UUID(row.id)
    except ValueError as exc:
        raise ValidationError(f"row {row.id}: {exc}", "context") from None
    session_assigned = bool(context.pop("session_assigned", False))
    metadata_fields = {k: context.pop(k) for k in list(context) if k in _METADATA_FIELDS}
    metadata = msgspec.convert({**metadata_fields, "custom": context}, EventMetadata)
    call = row.event_type if row.event_type in ("track", "page", "identify") else "track"
    return AnalyticsEvent(
        id=event_id,
        category=category,
        event_type=event_type,
        timestamp=timestamp,
        session_id=row.session_id,
        priority=priority,
        data=data_from_builtins(properties, kind, path="properties"),
        metadata=metadata,
        user_id=row.user_id,
        call=call,  # type: ignore[arg-type]
        page_url=row.page_url,
        referrer=row.referrer,
        session_assigned=session_assigned,
    )


class MetricType(enum.Enum):
    """Kinds of metric point in spec 355's ``metrics`` table."""

    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"
    TIMER = "timer"


class MetricPoint(msgspec.Struct, frozen=True, kw_only=True):
    """One time-series point (spec 355's ``Metric``).

    >>> MetricBuilder.timer("api.request.duration", 12.5).tag("endpoint", "/run").build().unit
    'ms'
    """

    id: uuid.UUID
    name: str
    metric_type: MetricType
    value: float
    timestamp: Any
    tags: dict[str, str] = {}
    unit: str | None = None

    def to_row(self) -> tuple[Any, ...]:
        """The ``metrics`` row: (id, name, metric_type, value, timestamp, tags, unit)."""
        return (
            str(self.id),
            self.name,
            self.metric_type.value,
            self.value,
            format_timestamp(self.timestamp),
            _json_encode(self.tags).decode() if self.tags else None,
            self.unit,
        )


class MetricBuilder:
    """Builder for metric points (spec 355).

    >>> MetricBuilder.counter("missions.created", 1).build().metric_type
    <MetricType.COUNTER: 'counter'>
    """

    __slots__ = ("_metric_type", "_name", "_tags", "_unit", "_value")

    def __init__(self, name: str, metric_type: MetricType, value: float) -> None:
        self._name = name
        self._metric_type = metric_type
        self._value = float(value)
        self._tags: dict[str, str] = {}
        self._unit: str | None = None

    @classmethod
    def counter(cls, name: str, value: float) -> MetricBuilder:
        """A counter increment."""
        return cls(name, MetricType.COUNTER, value)

    @classmethod
    def gauge(cls, name: str, value: float) -> MetricBuilder:
        """A gauge reading."""
        return cls(name, MetricType.GAUGE, value)

    @classmethod
    def timer(cls, name: str, duration_ms: float) -> MetricBuilder:
        """A duration in milliseconds."""
        return cls(name, MetricType.TIMER, duration_ms).unit("ms")

    @classmethod
    def histogram(cls, name: str, value: float) -> MetricBuilder:
        """One histogram observation."""
        return cls(name, MetricType.HISTOGRAM, value)

    def tag(self, key: str, value: object) -> MetricBuilder:
        """Add a tag (values are stored as text)."""
        self._tags[key] = str(value)
        return self

    def unit(self, unit: str) -> MetricBuilder:
        """Set the unit."""
        self._unit = unit
        return self

    def build(self) -> MetricPoint:
        """The point, timestamped now."""
        ns = time.time_ns()
        return MetricPoint(
            id=uuid7_from_ns(ns),
            name=self._name,
            metric_type=self._metric_type,
            value=self._value,
            timestamp=from_ns(ns),
            tags=dict(self._tags),
            unit=self._unit,
        )
