"""Hypothesis strategies for arbitrary events (shared by the model's property tests)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from hypothesis import strategies as st

from tachimeter.model import (
    AnalyticsEvent,
    BusinessEventData,
    BusinessMetricType,
    Custom,
    CustomData,
    ErrorEventData,
    ErrorSeverity,
    EventMetadata,
    EventPriority,
    EventType,
    PerformanceEventData,
    UsageEventData,
)
from tachimeter.model.rows import RESERVED_CONTEXT_KEYS

names = st.from_regex(r"[a-z][a-z0-9_]{0,12}(\.[a-z][a-z0-9_]{0,8}){0,2}", fullmatch=True)
text = st.text(max_size=40)
keys = st.text(min_size=1, max_size=12)
finite = st.floats(allow_nan=False, allow_infinity=False)
scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | finite | text
json_values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)
json_objects = st.dictionaries(keys, json_values, max_size=5)

usage = st.builds(
    UsageEventData,
    feature=text,
    action=text,
    success=st.booleans(),
    target=st.none() | text,
    duration_ms=st.none() | st.integers(0, 10**9),
    extra=st.dictionaries(
        keys.filter(lambda k: k not in {"feature", "action", "success", "target", "duration_ms"}),
        json_values,
        max_size=3,
    ),
)
performance = st.builds(
    PerformanceEventData,
    metric=text,
    value=finite,
    unit=text,
    tags=st.dictionaries(keys, text, max_size=3),
)
error = st.builds(
    ErrorEventData,
    code=text,
    message=text,
    severity=st.sampled_from(ErrorSeverity),
    component=text,
    stack_trace=st.none() | text,
    recovered=st.booleans(),
)
business = st.builds(
    BusinessEventData,
    metric_type=st.sampled_from(BusinessMetricType),
    value=finite,
    unit=text,
    backend=st.none() | text,
    model=st.none() | text,
)
event_data = (
    st.none()
    | json_objects
    | usage
    | performance
    | error
    | business
    | st.builds(CustomData, json_values)
)
metadata = st.builds(
    EventMetadata,
    app_version=st.none() | text,
    os=st.none() | text,
    arch=st.none() | text,
    locale=st.none() | text,
    timezone_offset=st.none() | st.integers(-720, 840),
    custom=st.dictionaries(
        keys.filter(lambda k: k not in RESERVED_CONTEXT_KEYS), json_values, max_size=3
    ),
)
event_types = st.sampled_from(EventType) | names.map(Custom)
timestamps = st.datetimes(
    min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1), timezones=st.just(dt.UTC)
)


@st.composite
def events(draw: st.DrawFn) -> AnalyticsEvent:
    """Arbitrary valid-shaped events (any variant, any metadata)."""
    kind = draw(event_types)
    return AnalyticsEvent(
        id=draw(st.uuids().map(lambda u: uuid.UUID(int=u.int))),
        category=kind.category(),
        event_type=kind,
        timestamp=draw(timestamps),
        session_id=draw(st.none() | text),
        priority=draw(st.sampled_from(EventPriority)),
        data=draw(event_data),
        metadata=draw(metadata),
        user_id=draw(st.none() | text),
        call=draw(st.sampled_from(["track", "page", "identify"])),
        page_url=draw(st.none() | text),
        referrer=draw(st.none() | text),
        session_assigned=draw(st.booleans()),
    )
