"""The analytics event (spec 406), its batch, and the one builder for both spec flavours.

Spec 406 builds typed events (``EventBuilder(EventType.X).usage_data(...)``); spec 355
builds product-analytics rows (``EventBuilder.track("name").property(...)``). Here they
are one builder producing one :class:`AnalyticsEvent`:

* ``EventBuilder(EventType.FEATURE_USED)`` / ``EventBuilder("search_performed")`` start
  a ``track`` call of that type (a string is looked up among the named types, else it is
  ``Custom(name)``);
* ``EventBuilder.track(name)``, ``.page(url)`` and ``.identify(user_id)`` set the call
  kind that spec 355 stores in ``analytics_events.event_type``;
* ``properties``/``property`` fill key-value data (or a usage payload's ``extra``),
  ``context`` adds to the metadata, which becomes the row's ``context``;
* ``build()`` gives the event, ``build_row()`` the spec 355 row.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import Any, Literal

import msgspec

from tachimeter.errors import ValidationError
from tachimeter.model.data import (
    BusinessEventData,
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
    event_type_from_name,
)
from tachimeter.model.ids import uuid7, uuid7_from_ns
from tachimeter.model.timestamps import from_ns, utc_now

__all__ = ["AnalyticsEvent", "CallKind", "EventBatch", "EventBuilder"]

CallKind = Literal["track", "page", "identify"]
"""How an event was recorded; stored as spec 355's ``analytics_events.event_type``."""

_EMPTY_METADATA = EventMetadata()


# Not tracked by the garbage collector (gc=False): a process keeps many events alive at
# once (queued, buffered, batched for a sink, held by a MemorySink), and every tracked
# survivor makes full collections both sooner and longer. The one cost: a gc=False object
# that sits in a reference cycle is never freed. An event cannot start a cycle (it is
# frozen: its fields exist before it does, and none of them refers to it), so a cycle
# would need a mutable value in its data to be changed afterwards to lead back to it. Data
# is JSON-like: validation dead-letters any data holding an event or any other non-JSON
# object, so the collector never delivers such an event; only hand-made misuse can leak,
# and it leaks that one cycle. Cycles among data values themselves are still collected:
# the data stays tracked (tests/model/test_event_gc.py).
class AnalyticsEvent(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """One analytics event (spec 406), with the spec 355 product fields beside it.

    ``session_assigned`` is True when the collector filled in its own session id rather
    than the caller giving one (DESIGN.md, Sessions).

    >>> e = AnalyticsEvent.new(EventType.FEATURE_USED, {"feature": "search"})
    >>> e.category, e.priority
    (<EventCategory.USAGE: 'usage'>, <EventPriority.NORMAL: 'normal'>)
    """

    id: uuid.UUID
    category: EventCategory
    event_type: EventType | Custom
    timestamp: dt.datetime
    session_id: str | None = None
    priority: EventPriority = EventPriority.NORMAL
    data: Any = None
    metadata: EventMetadata = _EMPTY_METADATA
    user_id: str | None = None
    call: CallKind = "track"
    page_url: str | None = None
    referrer: str | None = None
    session_assigned: bool = False

    @classmethod
    def new(cls, event_type: EventKind | str, data: EventData = None) -> AnalyticsEvent:
        """An event of ``event_type`` happening now, with a fresh time-ordered id."""
        kind = event_type_from_name(event_type) if isinstance(event_type, str) else event_type
        ns = time.time_ns()
        return cls(
            id=uuid7_from_ns(ns),
            category=kind.category(),
            event_type=kind,
            timestamp=from_ns(ns),
            data=data,
        )

    @property
    def event_name(self) -> str:
        """The snake_case name (``analytics_events.event_name``)."""
        return self.event_type.event_name

    def with_session(self, session_id: uuid.UUID | str) -> AnalyticsEvent:
        """A copy in the given session."""
        return msgspec.structs.replace(self, session_id=str(session_id), session_assigned=False)

    def with_priority(self, priority: EventPriority) -> AnalyticsEvent:
        """A copy with another priority."""
        return msgspec.structs.replace(self, priority=priority)

    def with_metadata(self, metadata: EventMetadata) -> AnalyticsEvent:
        """A copy with other metadata."""
        return msgspec.structs.replace(self, metadata=metadata)


class EventBatch(msgspec.Struct, frozen=True, kw_only=True):
    """Events delivered together to a sink, numbered by one per-collector sequence.

    >>> b = EventBatch.new([AnalyticsEvent.new(EventType.FEATURE_USED)], sequence=1)
    >>> len(b), b.is_empty(), b.sequence
    (1, False, 1)
    """

    id: uuid.UUID
    events: list[AnalyticsEvent]
    created_at: dt.datetime
    sequence: int

    @classmethod
    def new(cls, events: list[AnalyticsEvent], sequence: int) -> EventBatch:
        """A batch created now."""
        return cls(id=uuid7(), events=events, created_at=utc_now(), sequence=sequence)

    def __len__(self) -> int:
        return len(self.events)

    def len(self) -> int:
        """Number of events (spec 406's ``len``)."""
        return len(self.events)

    def is_empty(self) -> bool:
        """True when the batch has no events."""
        return not self.events


class EventBuilder:
    """Fluent builder for :class:`AnalyticsEvent` (spec 406 and spec 355 in one API).

    >>> e = (EventBuilder(EventType.MISSION_CREATED)
    ...      .priority(EventPriority.HIGH).usage_data("mission", "create", True).build())
    >>> e.category, e.priority
    (<EventCategory.USAGE: 'usage'>, <EventPriority.HIGH: 'high'>)
    >>> EventBuilder.track("search_performed").user_id("u1").property("hits", 3).build().data
    {'hits': 3}
    """

    __slots__ = (
        "_call",
        "_data",
        "_event_type",
        "_metadata",
        "_page_url",
        "_priority",
        "_referrer",
        "_session_id",
        "_timestamp",
        "_user_id",
    )

    def __init__(self, event_type: EventKind | str, *, call: CallKind = "track") -> None:
        self._event_type: EventKind = (
            event_type_from_name(event_type) if isinstance(event_type, str) else event_type
        )
        self._call: CallKind = call
        self._priority = EventPriority.NORMAL
        self._session_id: str | None = None
        self._data: EventData = None
        self._metadata = EventMetadata.from_environment()
        self._user_id: str | None = None
        self._page_url: str | None = None
        self._referrer: str | None = None
        self._timestamp: dt.datetime | None = None

    # -- spec 355 entry points ------------------------------------------------------------

    @classmethod
    def track(cls, name: EventKind | str) -> EventBuilder:
        """A ``track`` call of the named event."""
        return cls(name, call="track")

    @classmethod
    def page(cls, url: str) -> EventBuilder:
        """A ``page`` call: event ``page_view`` at ``url``."""
        builder = cls("page_view", call="page")
        builder._page_url = url
        return builder

    @classmethod
    def identify(cls, user_id: str) -> EventBuilder:
        """An ``identify`` call: event ``user_identified`` for ``user_id``."""
        builder = cls("user_identified", call="identify")
        builder._user_id = user_id
        return builder

    # -- spec 406 methods ------------------------------------------------------------------

    def priority(self, priority: EventPriority) -> EventBuilder:
        """Set the priority."""
        self._priority = priority
        return self

    def session(self, session_id: uuid.UUID | str) -> EventBuilder:
        """Set the session id."""
        self._session_id = str(session_id)
        return self

    def data(self, data: EventData) -> EventBuilder:
        """Set the data payload (any ``EventData`` variant)."""
        self._data = data
        return self

    def usage_data(self, feature: str, action: str, success: bool) -> EventBuilder:
        """Set a usage payload."""
        self._data = UsageEventData(feature=feature, action=action, success=success)
        return self

    def performance_data(self, metric: str, value: float, unit: str) -> EventBuilder:
        """Set a performance payload."""
        self._data = PerformanceEventData(metric=metric, value=value, unit=unit)
        return self

    def error_data(
        self, code: str, message: str, severity: ErrorSeverity, component: str
    ) -> EventBuilder:
        """Set an error payload."""
        self._data = ErrorEventData(
            code=code, message=message, severity=severity, component=component
        )
        return self

    def business_data(
        self,
        metric_type: Any,
        value: float,
        unit: str,
        *,
        backend: str | None = None,
        model: str | None = None,
    ) -> EventBuilder:
        """Set a business payload (tokens, cost, quota)."""
        self._data = BusinessEventData(
            metric_type=metric_type, value=value, unit=unit, backend=backend, model=model
        )
        return self

    def metadata(self, metadata: EventMetadata) -> EventBuilder:
        """Replace the metadata (default: from the environment)."""
        self._metadata = metadata
        return self

    def custom_metadata(self, key: str, value: Any) -> EventBuilder:
        """Add one custom metadata entry."""
        self._metadata = self._metadata.with_custom(key, value)
        return self

    def timestamp(self, when: dt.datetime) -> EventBuilder:
        """Set when the event happened (default: at ``build()``); naive means UTC."""
        self._timestamp = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
        return self

    # -- spec 355 methods ------------------------------------------------------------------

    def user_id(self, user_id: str) -> EventBuilder:
        """Set the user id."""
        self._user_id = user_id
        return self

    def session_id(self, session_id: uuid.UUID | str) -> EventBuilder:
        """Set the session id (spec 355's name for :meth:`session`)."""
        return self.session(session_id)

    def properties(self, props: dict[str, Any]) -> EventBuilder:
        """Replace the key-value properties (or a usage payload's ``extra``)."""
        if isinstance(self._data, UsageEventData):
            self._data = msgspec.structs.replace(self._data, extra=dict(props))
        elif self._data is None or isinstance(self._data, dict):
            self._data = dict(props)
        else:
            raise ValidationError(
                f"properties() needs key-value or usage data, but this event has "
                f"{type(self._data).__name__}; put extra fields in metadata with context()",
                path="$.data",
            )
        return self

    def property(self, key: str, value: Any) -> EventBuilder:
        """Add one property."""
        if isinstance(self._data, UsageEventData):
            return self.properties({**self._data.extra, key: value})
        current = self._data if isinstance(self._data, dict) else {}
        return self.properties({**current, key: value})

    def context(self, ctx: dict[str, Any]) -> EventBuilder:
        """Add context (device, browser, ...) to the metadata; it lands in the row's context."""
        self._metadata = msgspec.structs.replace(
            self._metadata, custom={**self._metadata.custom, **ctx}
        )
        return self

    def page_url(self, url: str) -> EventBuilder:
        """Set the page URL."""
        self._page_url = url
        return self

    def referrer(self, referrer: str) -> EventBuilder:
        """Set the referrer."""
        self._referrer = referrer
        return self

    # -- results ---------------------------------------------------------------------------

    def build(self) -> AnalyticsEvent:
        """The event."""
        if self._timestamp is None:
            ns = time.time_ns()
            event_id, when = uuid7_from_ns(ns), from_ns(ns)
        else:
            when = self._timestamp
            event_id = uuid7()
        return AnalyticsEvent(
            id=event_id,
            category=self._event_type.category(),
            event_type=self._event_type,
            timestamp=when,
            session_id=self._session_id,
            priority=self._priority,
            data=self._data,
            metadata=self._metadata,
            user_id=self._user_id,
            call=self._call,
            page_url=self._page_url,
            referrer=self._referrer,
        )

    def build_row(self) -> Any:
        """The spec 355 ``analytics_events`` row of the event (an ``EventRow``)."""
        from tachimeter.model.rows import event_to_row

        return event_to_row(self.build())
