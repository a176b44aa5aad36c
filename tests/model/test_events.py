"""Events, ids, batches, builders and metadata (spec 406 and spec 355 builders)."""

from __future__ import annotations

import datetime as dt
import time
import uuid

import msgspec
import pytest

from tachimeter.errors import ValidationError
from tachimeter.model import (
    AnalyticsEvent,
    BusinessEventData,
    BusinessMetricType,
    Custom,
    ErrorEventData,
    ErrorSeverity,
    EventBatch,
    EventBuilder,
    EventCategory,
    EventId,
    EventMetadata,
    EventPriority,
    EventType,
    PerformanceEventData,
    UsageEventData,
)
from tachimeter.model.ids import uuid7_from_ns
from tachimeter.model.timestamps import format_timestamp, from_ns, parse_timestamp, to_ns


def test_spec_event_creation() -> None:
    """Spec 406 test_event_creation, ported."""
    event = (
        EventBuilder(EventType.MISSION_CREATED)
        .priority(EventPriority.HIGH)
        .usage_data("mission", "create", True)
        .build()
    )
    assert event.event_type is EventType.MISSION_CREATED
    assert event.category is EventCategory.USAGE
    assert event.priority is EventPriority.HIGH
    assert event.data == UsageEventData(feature="mission", action="create", success=True)


def test_spec_event_batch() -> None:
    """Spec 406 test_event_batch, ported."""
    events = [EventBuilder(EventType.FEATURE_USED).build() for _ in range(10)]
    batch = EventBatch.new(events, 1)
    assert len(batch) == batch.len() == 10
    assert batch.sequence == 1
    assert not batch.is_empty()
    assert EventBatch.new([], 2).is_empty()
    assert batch.created_at.tzinfo is not None


def test_new_event_has_time_ordered_v7_id_and_utc_timestamp() -> None:
    before = dt.datetime.now(dt.UTC)
    event = AnalyticsEvent.new(EventType.FEATURE_USED)
    after = dt.datetime.now(dt.UTC)
    assert event.id.version == 7
    assert before - dt.timedelta(milliseconds=1) <= event.timestamp <= after
    assert abs(EventId.timestamp_ms(event.id) - to_ns(event.timestamp) // 1_000_000) <= 1
    assert event.session_id is None
    assert event.metadata == EventMetadata()


def test_uuid7_layout_and_ordering() -> None:
    ns = time.time_ns()
    ids = [uuid7_from_ns(ns + i * 1_000) for i in range(2000)]
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in ids)
    assert ids == sorted(ids)  # 1 us apart: the sub-millisecond fraction keeps them ordered
    assert len(set(ids)) == len(ids)
    assert EventId.timestamp_ms(ids[0]) == ns // 1_000_000
    assert EventId.from_uuid(str(ids[0])) == ids[0]


def test_with_methods_return_modified_copies() -> None:
    event = AnalyticsEvent.new("search_performed", {"q": "x"})
    sid = uuid.uuid4()
    changed = (
        event.with_session(sid)
        .with_priority(EventPriority.CRITICAL)
        .with_metadata(EventMetadata(os="linux"))
    )
    assert changed.session_id == str(sid) and event.session_id is None
    assert changed.priority is EventPriority.CRITICAL
    assert changed.metadata.os == "linux"
    assert changed.id == event.id
    assert event.event_type == Custom("search_performed")
    assert event.category is EventCategory.USAGE  # registered by the 355 predefined events


def test_builder_406_methods() -> None:
    event = (
        EventBuilder(EventType.RESPONSE_LATENCY)
        .session("s1")
        .performance_data("latency", 12.5, "ms")
        .custom_metadata("region", "eu")
        .build()
    )
    assert event.data == PerformanceEventData(metric="latency", value=12.5, unit="ms")
    assert event.session_id == "s1"
    assert event.metadata.custom == {"region": "eu"}
    assert event.metadata.os  # from the environment
    err = (
        EventBuilder(EventType.ERROR_OCCURRED)
        .error_data("E42", "boom", ErrorSeverity.ERROR, "tools")
        .build()
    )
    assert err.data == ErrorEventData(
        code="E42", message="boom", severity=ErrorSeverity.ERROR, component="tools"
    )
    tokens = (
        EventBuilder(EventType.TOKENS_CONSUMED)
        .business_data(BusinessMetricType.TOTAL_TOKENS, 1500, "tokens", model="m")
        .build()
    )
    assert isinstance(tokens.data, BusinessEventData) and tokens.data.model == "m"


def test_builder_355_methods() -> None:
    event = (
        EventBuilder.track("forge_item_created")
        .user_id("u1")
        .session_id("s1")
        .properties({"a": 1})
        .property("b", "two")
        .context({"browser": "firefox"})
        .page_url("https://example.test/x")
        .referrer("https://ref.test")
        .build()
    )
    assert event.call == "track"
    assert event.event_name == "forge_item_created"
    assert event.data == {"a": 1, "b": "two"}
    assert event.metadata.custom == {"browser": "firefox"}
    assert (event.user_id, event.session_id) == ("u1", "s1")
    assert event.page_url == "https://example.test/x" and event.referrer == "https://ref.test"
    page = EventBuilder.page("/settings").build()
    assert (page.call, page.event_name, page.page_url) == ("page", "page_view", "/settings")
    ident = EventBuilder.identify("u9").build()
    assert (ident.call, ident.event_name, ident.user_id) == ("identify", "user_identified", "u9")


def test_properties_on_usage_data_go_to_extra() -> None:
    event = EventBuilder(EventType.TOOL_INVOKED).usage_data("t", "run", True).property("k", 1)
    data = event.build().data
    assert isinstance(data, UsageEventData) and data.extra == {"k": 1}


def test_properties_on_structured_data_is_a_clear_error() -> None:
    builder = EventBuilder(EventType.RESPONSE_LATENCY).performance_data("x", 1.0, "ms")
    with pytest.raises(ValidationError, match="properties\\(\\) needs key-value or usage data"):
        builder.property("k", 1)


def test_builder_timestamp_naive_means_utc() -> None:
    when = dt.datetime(2025, 3, 1, 12, 0, 0, 5)
    event = EventBuilder.track("feature_used").timestamp(when).build()
    assert event.timestamp == when.replace(tzinfo=dt.UTC)


def test_metadata_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TACHIMETER_APP_VERSION", "9.9.9")
    md = EventMetadata.from_environment()
    assert md.app_version == "9.9.9"
    assert md.os and md.arch
    assert md.timezone_offset == time.localtime().tm_gmtoff // 60
    assert EventMetadata.from_environment(app_version="1.0").app_version == "1.0"
    assert md.with_custom("k", "v").custom == {"k": "v"} and md.custom == {}


def test_events_are_immutable() -> None:
    event = AnalyticsEvent.new(EventType.FEATURE_USED)
    with pytest.raises(AttributeError):
        event.priority = EventPriority.LOW  # type: ignore[misc]


@pytest.mark.parametrize(
    "value",
    [
        dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
        dt.datetime(2024, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC),
        dt.datetime(2024, 6, 1, 2, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    ],
)
def test_timestamps_are_fixed_width_and_round_trip(value: dt.datetime) -> None:
    text = format_timestamp(value)
    assert len(text) == 27 and text.endswith("Z") and text[10] == "T"
    assert parse_timestamp(text) == value
    assert from_ns(to_ns(value)) == value


def test_timestamp_text_order_is_time_order() -> None:
    base = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    values = [base + dt.timedelta(microseconds=m) for m in (0, 1, 999_999, 10**6, 86_400 * 10**6)]
    texts = [format_timestamp(v) for v in values]
    assert texts == sorted(texts)


def test_spec_355_datetime_now_text_parses_as_utc() -> None:
    assert parse_timestamp("2024-01-02 03:04:05") == dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def test_data_structs_are_msgspec_structs() -> None:
    assert isinstance(UsageEventData(feature="f", action="a"), msgspec.Struct)


def test_from_ns_is_exact_to_the_microsecond() -> None:
    import random

    rng = random.Random(7)
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    for _ in range(20_000):
        ns = rng.randrange(0, 4_000_000_000 * 10**9)
        assert from_ns(ns) == epoch + dt.timedelta(microseconds=ns // 1000)


def test_uuid7_is_a_plain_uuid() -> None:
    u = uuid7_from_ns(time.time_ns())
    assert uuid.UUID(str(u)) == u and hash(u) == hash(uuid.UUID(str(u)))
    assert u.is_safe is uuid.SafeUUID.unknown
