"""JSON and MessagePack serialization: exact round trips, clear errors, spec shapes."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import uuid
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import events, json_values

from tachimeter.errors import ValidationError
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
    EventMetadata,
    EventType,
    PerformanceEventData,
    UsageEventData,
    decode_batch,
    decode_event,
    encode_batch,
    encode_event,
)
from tachimeter.model.codec import data_from_builtins, event_from_builtins, event_to_builtins
from tachimeter.model.events import _EMPTY_METADATA

FORMATS = ["json", "msgpack"]


def test_spec_event_serialization() -> None:
    """Spec 406 test_event_serialization, ported."""
    event = (
        EventBuilder(EventType.TOKENS_CONSUMED)
        .data(
            BusinessEventData(
                metric_type=BusinessMetricType.TOTAL_TOKENS,
                value=1500.0,
                unit="tokens",
                backend="anthropic",
                model="claude-3-opus",
            )
        )
        .build()
    )
    decoded = decode_event(encode_event(event))
    assert decoded.id == event.id
    assert decoded.event_type == event.event_type
    assert decoded == event


def test_wire_shape_matches_the_spec() -> None:
    event = (
        EventBuilder(EventType.FEATURE_USED)
        .data(UsageEventData(feature="search", action="query", extra={"hits": 3}))
        .metadata(EventMetadata(os="linux", custom={"region": "eu"}))
        .build()
    )
    wire = json.loads(encode_event(event))
    assert wire["event_type"] == "feature_used"
    assert wire["category"] == "usage"
    assert wire["data"] == {
        "feature": "search",
        "action": "query",
        "success": True,
        "target": None,
        "duration_ms": None,
        "hits": 3,
    }  # extra is flattened, as serde(flatten) does
    assert wire["metadata"]["region"] == "eu"  # custom is flattened
    assert wire["timestamp"].endswith("Z")
    custom = json.loads(encode_event(AnalyticsEvent.new(Custom("plug.in"))))
    assert custom["event_type"] == {"custom": "plug.in"}


@pytest.mark.parametrize("fmt", FORMATS)
@settings(max_examples=150, deadline=None)
@given(event=events())
def test_round_trip_is_exact_for_arbitrary_events(event: AnalyticsEvent, fmt: str) -> None:
    assert decode_event(encode_event(event, format=fmt), format=fmt) == event


@settings(max_examples=50, deadline=None)
@given(st.lists(events(), max_size=5), st.integers(0, 2**40))
def test_batches_round_trip(evs: list[AnalyticsEvent], seq: int) -> None:
    batch = EventBatch.new(evs, seq)
    for fmt in FORMATS:
        assert decode_batch(encode_batch(batch, format=fmt), format=fmt) == batch


def _spec_shaped(data: Any) -> dict[str, Any]:
    """An event as a spec-406 producer would send it: no data_kind, no extras of ours."""
    return {
        "id": str(uuid.uuid4()),
        "category": "usage",
        "event_type": "feature_used",
        "timestamp": "2024-05-01T10:00:00.5+02:00",
        "session_id": None,
        "priority": "high",
        "data": data,
        "metadata": {"app_version": "1.0", "os": "linux", "arch": None, "locale": None,
                     "timezone_offset": 120, "team": "core"},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (None, None),
        ({"a": 1}, {"a": 1}),
        (
            {"feature": "f", "action": "a", "target": None, "duration_ms": 5, "success": False,
             "x": [1]},
            UsageEventData(feature="f", action="a", success=False, duration_ms=5, extra={"x": [1]}),
        ),
        (
            {"metric": "lat", "value": 1.5, "unit": "ms", "tags": {"k": "v"}},
            PerformanceEventData(metric="lat", value=1.5, unit="ms", tags={"k": "v"}),
        ),
        (
            {"code": "E", "message": "m", "severity": "critical", "stack_trace": None,
             "component": "c", "recovered": True},
            ErrorEventData(code="E", message="m", severity=ErrorSeverity.CRITICAL, component="c",
                           recovered=True),
        ),
        (
            {"metric_type": "cost_usd", "value": 0.25, "unit": "usd", "backend": None,
             "model": "m"},
            BusinessEventData(metric_type=BusinessMetricType.COST_USD, value=0.25, unit="usd",
                              model="m"),
        ),
        ([1, 2], CustomData([1, 2])),
        ("text", CustomData("text")),
        ({"metric": "lat", "value": "not a number", "unit": "ms", "tags": {}},
         {"metric": "lat", "value": "not a number", "unit": "ms", "tags": {}}),
    ],
)  # fmt: skip
def test_untagged_spec_data_decodes_to_the_right_variant(data: Any, expected: Any) -> None:
    event = decode_event(json.dumps(_spec_shaped(data)))
    assert event.data == expected
    assert event.timestamp == dt.datetime(2024, 5, 1, 8, 0, 0, 500000, tzinfo=dt.UTC)
    assert event.metadata.timezone_offset == 120 and event.metadata.custom == {"team": "core"}


@pytest.mark.parametrize(
    ("payload", "path", "fragment"),
    [
        (b"{", "$", "truncated"),
        (b"\xff\xfe", "$", "malformed"),
        (b"[]", "$", "Expected `object`"),
        (b'{"event_type": "feature_used", "timestamp": "2024-01-01T00:00:00Z"}', "$", "id"),
        (
            b'{"id": "not-a-uuid", "event_type": "feature_used", '
            b'"timestamp": "2024-01-01T00:00:00Z"}',
            "$.id",
            "Invalid UUID",
        ),
        (
            b'{"id": "018f0000-0000-7000-8000-000000000000", "event_type": "nope", '
            b'"timestamp": "2024-01-01T00:00:00Z"}',
            "$.event_type",
            "Invalid enum value 'nope' - at `$.event_type`; a custom event type is written "
            '{"custom": "nope"}',
        ),
        (
            b'{"id": "018f0000-0000-7000-8000-000000000000", "event_type": "feature_used", '
            b'"timestamp": "yesterday"}',
            "$.timestamp",
            "datetime",
        ),
        (
            b'{"id": "018f0000-0000-7000-8000-000000000000", "event_type": "feature_used", '
            b'"timestamp": "2024-01-01T00:00:00Z", "data_kind": "error", '
            b'"data": {"code": "E", "message": "m", "severity": 7, "component": "c"}}',
            "$.data.severity",
            "Expected `str`, got `int`",
        ),
        (
            b'{"id": "018f0000-0000-7000-8000-000000000000", "event_type": "feature_used", '
            b'"timestamp": "2024-01-01T00:00:00Z", "metadata": {"timezone_offset": "x"}}',
            "$.metadata.timezone_offset",
            "Expected `int | null`",
        ),
    ],
)
def test_bad_input_raises_validation_error_naming_the_field(
    payload: bytes, path: str, fragment: str
) -> None:
    with pytest.raises(ValidationError) as info:
        decode_event(payload)
    assert info.value.path == path
    assert fragment in str(info.value)
    assert f"`{path}`" in str(info.value)


def test_bad_event_inside_a_batch_names_its_index() -> None:
    good = json.loads(encode_event(AnalyticsEvent.new(EventType.FEATURE_USED)))
    bad = dict(good, data_kind="usage", data={"feature": 1, "action": "a"})
    payload = json.dumps(
        {"id": str(uuid.uuid4()), "events": [good, bad], "created_at": good["timestamp"],
         "sequence": 1}
    )  # fmt: skip
    with pytest.raises(ValidationError) as info:
        decode_batch(payload)
    assert info.value.path == "$.events[1].data.feature"


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=200)
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.binary(min_size=1, max_size=8).map(
        lambda b: (
            b'{"id": "018f0000-0000-7000-8000-000000000000", "event_type": "x", "user_id": "'
            + b
            + b'"}'
        )
    )
)
def test_decoder_never_raises_anything_but_validation_error(payload: bytes) -> None:
    for fmt in FORMATS:
        with contextlib.suppress(ValidationError):
            decode_event(payload, format=fmt)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_builtins_decoder_never_raises_anything_but_validation_error(obj: Any) -> None:
    with contextlib.suppress(ValidationError):
        event_from_builtins(obj)
    for kind in (None, "usage", "error", "business", "performance", "empty", "key_value"):
        with contextlib.suppress(ValidationError):
            data_from_builtins(obj, kind)  # type: ignore[arg-type]


def test_builtins_are_plain_json_types() -> None:
    event = EventBuilder(EventType.FEATURE_USED).usage_data("f", "a", True).build()
    assert json.loads(json.dumps(event_to_builtins(event))) == event_to_builtins(event)


def test_unknown_format_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="format must be 'json' or 'msgpack'"):
        encode_event(AnalyticsEvent.new(EventType.FEATURE_USED), format="xml")


@pytest.mark.parametrize("fmt", FORMATS)
def test_invalid_utf8_inside_a_string_is_a_validation_error(fmt: str) -> None:
    event = AnalyticsEvent.new(EventType.FEATURE_USED, {"k": "a-PLACEHOLDER-b"})
    payload = encode_event(event, format=fmt).replace(b"PLACEHOLDER", b"\xff\xfe")
    with pytest.raises(ValidationError, match="not valid UTF-8"):
        decode_event(payload, format=fmt)
    batch = encode_batch(EventBatch.new([event], 1), format=fmt).replace(b"PLACEHOLDER", b"\xff")
    with pytest.raises(ValidationError, match="not valid UTF-8"):
        decode_batch(batch, format=fmt)


# -- the JSON fast path ----------------------------------------------------------------

_reference_encoder = msgspec.json.Encoder()


def _reference_json(event: AnalyticsEvent) -> bytes:
    """The wire JSON built the general way: the wire dict, then encoded."""
    return _reference_encoder.encode(event_to_builtins(event))


_edge_data = st.none() | st.dictionaries(
    st.sampled_from(["custom", "metadata", ',"custom":{}}', "data_kind", "k"]),
    json_values | st.just({"custom": {}}) | st.just(',"custom":{}}'),
    max_size=3,
)


@settings(max_examples=300, deadline=None)
@given(
    events(),
    _edge_data,
    st.sampled_from([_EMPTY_METADATA, EventMetadata(), EventMetadata(os="linux")]) | st.none(),
)
def test_json_fast_path_gives_the_same_bytes(
    event: AnalyticsEvent, data: Any, metadata: EventMetadata | None
) -> None:
    """Key-value or no data, default or custom-free metadata: the same bytes as the wire dict,
    even when the data holds the metadata's own shapes."""
    for candidate in (
        event,
        msgspec.structs.replace(event, data=data),
        msgspec.structs.replace(event, data=data, metadata=metadata or event.metadata),
    ):
        assert encode_event(candidate) == _reference_json(candidate)


@settings(max_examples=50, deadline=None)
@given(st.lists(events(), max_size=4), st.integers(0, 10**6))
def test_json_batch_encoding_gives_the_same_bytes(evs: list[AnalyticsEvent], seq: int) -> None:
    """A batch is the events' JSON as the wire dicts would give it."""
    batch = EventBatch.new(evs, seq)
    expected = _reference_encoder.encode(
        {
            "id": str(batch.id),
            "events": [event_to_builtins(e) for e in batch.events],
            "created_at": batch.created_at.isoformat().replace("+00:00", "Z"),
            "sequence": batch.sequence,
        }
    )
    assert encode_batch(batch) == expected


def test_unencodable_data_raises_as_before() -> None:
    """An object msgspec cannot encode fails the same way on either path."""
    event = AnalyticsEvent.new(EventType.FEATURE_USED, {"x": object()})
    with pytest.raises(TypeError):
        encode_event(event)
