"""prepare_event: validate then sanitize in one step, with exactly the results, events and
counts of validate_event followed by sanitize_event."""

from __future__ import annotations

import datetime as dt
import math
import uuid
from typing import Any
from unittest import mock

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from privacy_strategies import json_values, keys, texts

from tachimeter.model import (
    AnalyticsEvent,
    BusinessEventData,
    BusinessMetricType,
    Custom,
    CustomData,
    ErrorEventData,
    ErrorSeverity,
    EventCategory,
    EventMetadata,
    EventType,
    PerformanceEventData,
    UsageEventData,
    ValidationLimits,
    ValidationResult,
    validate_event,
)
from tachimeter.model.validation import USAGE_FIELDS
from tachimeter.privacy import Scrubber, prepare_event
from tachimeter.privacy import scrubber as scrubber_module

KEY = "sk-" + "Zq8" * 10  # assembled so that no key-shaped literal sits in the source
NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
BOUNDED = settings(max_examples=150, deadline=None)
SMALL = ValidationLimits(max_string_length=40, max_event_bytes=700)

_METADATA = [
    EventMetadata(os="linux", app_version="1.0"),
    EventMetadata(),
    EventMetadata(custom={"note": "pwd=hunter2"}),
    EventMetadata(custom={"os": "reserved"}),
]
_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and infinities too
    | texts
    | st.text(max_size=50)
    | st.just(f"failing call with key {KEY}")
    | st.just("[REDACTED]")
    | st.just(10**400)  # beyond the size bounds' 20 digits
)
_flat = st.dictionaries(keys | st.integers(0, 3), _scalars, max_size=6)
_types = st.sampled_from(
    [EventType.FEATURE_USED, EventType.TOKENS_CONSUMED, EventType.CACHE_HIT]
) | st.sampled_from([Custom("search_performed"), Custom("Bad Name"), Custom("feature_used")])


_recent_offsets = st.timedeltas(min_value=-dt.timedelta(days=8), max_value=dt.timedelta(seconds=10))
# Old events (valid, with an age warning), far and near the 7-day edge.
_old_offsets = st.timedeltas(
    min_value=-dt.timedelta(days=3650), max_value=-dt.timedelta(days=7)
) | st.integers(-5_000, 5_000).map(lambda us: dt.timedelta(days=-7, microseconds=us))


@st.composite
def _events(draw: st.DrawFn) -> AnalyticsEvent:
    """Events around NOW or older, mostly of the shape the one-pass path takes, and its
    edges: clock skew, age, NaN, long strings, sensitive keys, odd keys, nesting,
    categories."""
    kind = draw(_types)
    category = kind.category() if draw(st.booleans()) else EventCategory.SYSTEM
    return AnalyticsEvent(
        id=uuid.UUID("01890a5d-ac96-774b-bcce-b302099a8057"),
        category=category,
        event_type=kind,
        timestamp=NOW + draw(_recent_offsets | _old_offsets),
        session_id=draw(st.none() | st.text(max_size=45)),
        data=draw(_flat | _flat | st.none() | json_values),
        metadata=draw(st.sampled_from(_METADATA)),
        user_id=draw(st.none() | st.text(max_size=45)),
        page_url=draw(st.none() | st.none() | texts),
    )


# Typed payloads. Structs are not type-checked when built, so a field may hold anything;
# strings hold secrets, placeholders, and text beyond SMALL's max_string_length.
_TRACE = f'Traceback (most recent call last):\n  File "a.py", line 3\nAuthError: key {KEY}'
_strings = (
    texts
    | st.text(max_size=50)
    | st.sampled_from(
        [f"failing call with key {KEY}", "[REDACTED]", "tokens", "id 123", "y" * 45, _TRACE]
    )
)


def _mostly(usual: st.SearchStrategy[Any], *rare: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``usual`` fifteen times in sixteen, else one of ``rare``."""
    return st.sampled_from([usual] * 15 + [st.one_of(*rare)]).flatmap(lambda chosen: chosen)


_odd = st.none() | st.integers(0, 9) | st.just(b"raw")
_fields = _mostly(_strings, _odd)
_optional = st.none() | _fields
_sane_numbers = st.integers(-(10**6), 10**6) | st.floats(allow_nan=False, allow_infinity=False)
_numbers = _mostly(
    _sane_numbers, st.floats(), st.booleans(), st.integers(), st.just(10**400), st.just("1")
)
_nested = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=10,
)
_mapping_keys = _mostly(
    keys | st.sampled_from(["surface", "model"]), st.sampled_from(["feature", "duration_ms", 1])
)
_clean_values = (
    st.none()
    | st.booleans()
    | _sane_numbers
    | texts
    | st.sampled_from([f"failing call with key {KEY}", "id 123"])
)
_mapping_values = _mostly(
    _clean_values,
    _scalars,
)
_mappings = _mostly(
    st.dictionaries(_mapping_keys, _mapping_values, max_size=5),
    st.dictionaries(keys, _nested, max_size=3),
    st.just({}),
    st.just(["not", "a", "dict"]),
)
_usage = st.builds(
    UsageEventData,
    feature=_fields,
    action=_fields,
    success=_mostly(st.booleans(), st.none()),
    target=_optional,
    duration_ms=_mostly(st.none() | st.integers(0, 10**6), st.integers(), st.just(1.5)),
    extra=_mappings,
)
_performance = st.builds(
    PerformanceEventData, metric=_fields, value=_numbers, unit=_fields, tags=_mappings
)
_error = st.builds(
    ErrorEventData,
    code=_fields,
    message=_fields,
    severity=_mostly(st.sampled_from(ErrorSeverity), st.just("error")),
    component=_fields,
    stack_trace=_optional,
    recovered=_mostly(st.booleans(), st.just(1)),
)
_business = st.builds(
    BusinessEventData,
    metric_type=_mostly(st.sampled_from(BusinessMetricType), st.just("cost_usd")),
    value=_numbers,
    unit=_fields,
    backend=_optional,
    model=_optional,
)
_typed = _usage | _performance | _error | _business | st.builds(CustomData, _nested)

# Well-typed payloads: every string field a string, every number finite, flat mappings.
_clean_strings = texts | st.sampled_from([f"failing call with key {KEY}", "id 123", _TRACE])
_clean_mappings = st.dictionaries(
    keys.filter(lambda key: key not in USAGE_FIELDS), _clean_values, max_size=4
)
_clean_typed = (
    st.builds(
        UsageEventData,
        feature=_clean_strings,
        action=_clean_strings,
        success=st.booleans(),
        target=st.none() | _clean_strings,
        duration_ms=st.none() | st.integers(0, 10**6),
        extra=_clean_mappings,
    )
    | st.builds(
        PerformanceEventData,
        metric=_clean_strings,
        value=_sane_numbers,
        unit=_clean_strings,
        tags=_clean_mappings,
    )
    | st.builds(
        ErrorEventData,
        code=_clean_strings,
        message=_clean_strings,
        severity=st.sampled_from(ErrorSeverity),
        component=_clean_strings,
        stack_trace=st.none() | _clean_strings,
        recovered=st.booleans(),
    )
    | st.builds(
        BusinessEventData,
        metric_type=st.sampled_from(BusinessMetricType),
        value=_sane_numbers,
        unit=_clean_strings,
        backend=st.none() | _clean_strings,
        model=st.none() | _clean_strings,
    )
)
# The event types each variant is sent with; any other type gets a warning.
_NATURAL_TYPES: dict[type, list[EventType]] = {
    UsageEventData: [EventType.FEATURE_USED, EventType.TOOL_INVOKED],
    PerformanceEventData: [EventType.RESPONSE_LATENCY],
    ErrorEventData: [EventType.ERROR_OCCURRED],
    BusinessEventData: [EventType.TOKENS_CONSUMED, EventType.COST_INCURRED],
    CustomData: [EventType.CACHE_HIT],
}


@st.composite
def _typed_events(draw: st.DrawFn, metadata: EventMetadata) -> AnalyticsEvent:
    """Events with typed payloads (or none), mostly sent with their natural type, in its
    category; around NOW or older, mostly with ``metadata``."""
    data = draw(_mostly(_typed, st.none()))
    natural = _NATURAL_TYPES.get(type(data), [EventType.SESSION_STARTED])
    kind = draw(st.sampled_from(natural) | st.sampled_from(natural) | _types)
    category = draw(_mostly(st.just(kind.category()), st.just(EventCategory.SYSTEM)))
    return AnalyticsEvent(
        id=uuid.UUID("01890a5d-ac96-774b-bcce-b302099a8057"),
        category=category,
        event_type=kind,
        timestamp=NOW + draw(_recent_offsets | _old_offsets),
        session_id=draw(st.none() | st.text(max_size=45)),
        data=data,
        metadata=draw(_mostly(st.just(metadata), st.sampled_from(_METADATA))),
        user_id=draw(st.none() | st.text(max_size=45)),
        page_url=draw(st.none() | st.none() | st.none() | texts),
    )


# Small limits put the edges within reach: strings beyond 40 or 60 characters, nesting
# limits that refuse an `extra` or `tags` mapping itself (depth 0) or what it nests.
_TYPED_LIMITS = st.just(ValidationLimits()) | st.builds(
    ValidationLimits,
    max_string_length=st.sampled_from([40, 60, 32_768]),
    max_property_depth=st.sampled_from([0, 1, 2, 10]),
)
# Room left in an event's size limit beyond its encoded data and metadata (None: the
# drawn limit): around 0 the exact size decides, a little further the size bound does.
_slack = st.sampled_from([None, -3, -2, -1, 0, 1, 2, 3]) | st.integers(-3, 400)


def _fitted(limits: ValidationLimits, event: AnalyticsEvent, slack: int | None) -> ValidationLimits:
    """``limits`` with max_event_bytes ``slack`` bytes beyond what ``event`` encodes to."""
    if slack is None:
        return limits
    try:
        size = len(msgspec.json.encode(event.data)) + len(msgspec.json.encode(event.metadata))
    except (TypeError, ValueError):
        return limits
    return msgspec.structs.replace(limits, max_event_bytes=size + slack)


def _scrubber(mode: str) -> Scrubber:
    if mode == "drop":
        return Scrubber(sensitive_key_action="drop")
    if mode == "hash":
        return Scrubber(hash_user_ids=True, salt="s")
    if mode == "extra":
        return Scrubber(extra_patterns=[r"\d{3}"])
    if mode == "drop_keys":
        return Scrubber(drop_keys=["surface", "model"], extra_patterns=["ok"])
    return Scrubber()


def _two_steps(
    scrubber: Scrubber, event: AnalyticsEvent, limits: ValidationLimits
) -> tuple[AnalyticsEvent, ValidationResult | None]:
    result = validate_event(event, now=NOW, limits=limits)
    if not result.valid:
        return event, result
    return scrubber.sanitize_event(event), result if result.warnings else None


@BOUNDED
@given(
    st.lists(_events(), max_size=6),
    st.sampled_from(["mask", "drop", "hash", "extra"]),
    st.sampled_from([ValidationLimits(), SMALL]),
)
def test_prepare_event_equals_validate_then_sanitize(
    batch: list[AnalyticsEvent], mode: str, limits: ValidationLimits
) -> None:
    """Same events (the same object when nothing changed), same results, same count;
    the second round sees the metadata known, as the one-pass path needs."""
    one, two = _scrubber(mode), _scrubber(mode)
    for event in batch * 2:
        expected = _two_steps(one, event, limits)
        got = prepare_event(event, two, limits=limits, now=NOW)
        assert got == expected
        assert (got[0] is event) == (expected[0] is event)
        assert two.scrubbed_count == one.scrubbed_count


@st.composite
def _typed_batches(draw: st.DrawFn) -> tuple[EventMetadata, list[AnalyticsEvent]]:
    """A metadata object, and events most of which carry it."""
    metadata = draw(st.sampled_from(_METADATA))
    batch = draw(st.lists(_mostly(_typed_events(metadata), _events()), max_size=6))
    return metadata, batch


@settings(max_examples=500, deadline=None)
@given(
    _typed_batches(),
    st.sampled_from(["mask", "drop", "hash", "extra", "drop_keys"]),
    _TYPED_LIMITS,
    st.lists(_slack, min_size=6, max_size=6),
)
def test_prepare_event_equals_validate_then_sanitize_for_typed_payloads(
    drawn: tuple[EventMetadata, list[AnalyticsEvent]],
    mode: str,
    base: ValidationLimits,
    slacks: list[int | None],
) -> None:
    """Typed payloads (usage, performance, error, business, custom) too: same results
    (errors and warnings in the same words and order), the same sanitized event (itself
    when nothing changed, and its data itself when only other fields did), same count;
    also for events at the edge of their size limit."""
    metadata, batch = drawn
    one, two = _scrubber(mode), _scrubber(mode)
    known = _recent({"q": "x"}, metadata=metadata, timestamp=NOW)
    prepare_event(known, two, now=NOW)  # the metadata is known clean (if it is) from here on
    one.sanitize_event(known)
    for event, slack in zip(batch * 2, slacks * 2, strict=False):
        limits = _fitted(base, event, slack)
        expected = _two_steps(one, event, limits)
        got = prepare_event(event, two, limits=limits, now=NOW)
        assert got == expected
        assert (got[0] is event) == (expected[0] is event)
        assert (got[0].data is event.data) == (expected[0].data is event.data)
        assert two.scrubbed_count == one.scrubbed_count


@settings(max_examples=300, deadline=None)
@given(
    st.lists(_clean_typed, min_size=1, max_size=6),
    st.sampled_from(["mask", "drop", "extra", "drop_keys"]),
)
def test_well_typed_payloads_take_one_pass_and_scrub_as_sanitize_event(
    payloads: list[Any], mode: str
) -> None:
    """Well-typed payloads, sent with their natural type and the known metadata, are
    checked and scrubbed in the one pass: no call to validate_event or sanitize_event,
    and the same event and count as sanitize_event gives."""
    one, two = _scrubber(mode), _scrubber(mode)
    metadata = EventMetadata(os="linux")
    known = _recent({"q": "x"}, metadata=metadata, timestamp=NOW)
    prepare_event(known, two, now=NOW)
    one.sanitize_event(known)
    for data in payloads:
        kind = _NATURAL_TYPES[type(data)][0]
        event = _recent(data, metadata=metadata, timestamp=NOW, event_type=kind)
        event = msgspec.structs.replace(event, category=kind.category())
        expected = one.sanitize_event(event)
        with (
            mock.patch.object(scrubber_module, "validate_event", side_effect=AssertionError),
            mock.patch.object(Scrubber, "sanitize_event", side_effect=AssertionError),
        ):
            got = prepare_event(event, two, now=NOW)
        assert got == (expected, None)
        assert (got[0] is event) == (expected is event)
        assert (got[0].data is data) == (expected.data is data)
        assert two.scrubbed_count == one.scrubbed_count


_PAYLOADS: list[Any] = [
    UsageEventData(feature="f", action="a", target="t", duration_ms=5, extra={"k": "v"}),
    PerformanceEventData(metric="m", value=1.5, unit="ms", tags={"model": "x"}),
    ErrorEventData(
        code="E", message="m", severity=ErrorSeverity.ERROR, component="c", stack_trace="s"
    ),
    BusinessEventData(
        metric_type=BusinessMetricType.COST_USD, value=2, unit="usd", backend="b", model="m"
    ),
]
_FIELD_CASES = [
    (payload, name, bad)
    for payload in _PAYLOADS
    for name in payload.__struct_fields__
    for bad in ("y" * 45, math.nan, 10**400, ["a", {"b": math.inf}], object())
] + [
    (payload, name, bad)
    for payload, name in ((_PAYLOADS[0], "extra"), (_PAYLOADS[1], "tags"))
    for bad in ({"feature": "g"}, {1: "x"}, {"k": math.nan}, {"k": {"a": [1, {"b": "y" * 45}]}})
]


@pytest.mark.parametrize(("payload", "name", "bad"), _FIELD_CASES)
def test_each_typed_field_is_checked_as_validate_event_checks_it(
    payload: Any, name: str, bad: Any
) -> None:
    """Whatever a field holds (a string beyond the limit, NaN, a huge int, a nested value,
    an object), the answer is the two steps' answer."""
    one, two = Scrubber(), Scrubber()
    metadata = EventMetadata(os="linux")
    known = _recent({"q": "x"}, metadata=metadata, timestamp=NOW)
    prepare_event(known, two, now=NOW)
    one.sanitize_event(known)
    kind = _NATURAL_TYPES[type(payload)][0]
    data = msgspec.structs.replace(payload, **{name: bad})
    event = _recent(data, metadata=metadata, timestamp=NOW, event_type=kind)
    event = msgspec.structs.replace(event, category=kind.category())
    for limits in (SMALL, ValidationLimits(max_string_length=40)):
        expected = _two_steps(one, event, limits)
        assert prepare_event(event, two, limits=limits, now=NOW) == expected
        assert two.scrubbed_count == one.scrubbed_count


@pytest.mark.parametrize(
    "payload",
    [
        *_PAYLOADS,
        UsageEventData(feature='"\\\n\x01é', action="ü" * 9, extra={"k": [1, {"x": "\x00"}]}),
        ErrorEventData(code="E", message="\x7f" * 30, severity=ErrorSeverity.INFO, component=""),
        BusinessEventData(
            metric_type=BusinessMetricType.QUOTA_REMAINING,
            value=-1.2345678901234567e-300,
            unit="€",
            backend=None,
            model="\U0001f600",
        ),
        PerformanceEventData(metric="m", value=10**19, unit="u", tags={}),
        CustomData({"note": "pwd=hunter2", "n": [1.5, None]}),
    ],
)
def test_typed_payloads_at_their_size_limit(payload: Any) -> None:
    """Around the event's size limit the two steps' answer holds: the size bound never
    passes an event too large, and the exact size decides what the bound cannot."""
    metadata = EventMetadata(os="linux")
    known = _recent({"q": "x"}, metadata=metadata, timestamp=NOW)
    kind = _NATURAL_TYPES[type(payload)][0]
    event = _recent(payload, metadata=metadata, timestamp=NOW, event_type=kind)
    event = msgspec.structs.replace(event, category=kind.category())
    size = len(msgspec.json.encode(payload)) + len(msgspec.json.encode(metadata))
    for slack in (-2, -1, 0, 1, 2, 40, 400):
        limits = ValidationLimits(max_event_bytes=size + slack)
        one, two = Scrubber(), Scrubber()
        prepare_event(known, two, now=NOW)
        one.sanitize_event(known)
        expected = _two_steps(one, event, limits)
        assert (expected[1] is None) == (slack >= 0)
        assert prepare_event(event, two, limits=limits, now=NOW) == expected
        assert two.scrubbed_count == one.scrubbed_count


@BOUNDED
@given(st.lists(_events(), max_size=6))
def test_prepare_events_equals_prepare_event_per_event(batch: list[AnalyticsEvent]) -> None:
    """The batch method gives each event's pair, in order."""
    one, many = Scrubber(), Scrubber()
    expected = [one.prepare_event(event, now=NOW) for event in batch * 2]
    assert many.prepare_events(batch * 2, now=NOW) == expected
    assert many.scrubbed_count == one.scrubbed_count


def _recent(data: Any, **fields: Any) -> AnalyticsEvent:
    event = AnalyticsEvent.new(EventType.FEATURE_USED, data)
    return msgspec.structs.replace(event, **fields) if fields else event


def test_common_events_take_one_pass_with_their_own_clock() -> None:
    """Once the metadata is known, a flat event is checked and scrubbed without the
    two steps, and with the clock read now."""
    scrubber = Scrubber()
    metadata = EventMetadata(os="linux")
    first = _recent({"q": "x"}, metadata=metadata)
    assert prepare_event(first, scrubber) == (first, None)
    event = _recent({"q": f"key {KEY}", "n": 1, "f": 0.5, "ok": True}, metadata=metadata)
    with (
        mock.patch.object(scrubber_module, "validate_event", side_effect=AssertionError),
        mock.patch.object(Scrubber, "sanitize_event", side_effect=AssertionError),
    ):
        prepared, result = prepare_event(event, scrubber)
    assert result is None
    assert prepared.data == {"q": "key [REDACTED_API_KEY]", "n": 1, "f": 0.5, "ok": True}
    assert scrubber.scrubbed_count == 1


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"data": {"note": f"key {KEY}", "x": math.nan}}, "finite"),
        ({"data": {"note": f"key {KEY}", "x": "y" * 40_000}}, "max_string_length"),
        ({"timestamp": dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)}, "future"),
    ],
)
def test_invalid_events_come_back_unsanitized_with_the_errors(
    fields: dict[str, Any], problem: str
) -> None:
    event = msgspec.structs.replace(_recent({"note": f"key {KEY}"}), **fields)
    prepared, result = prepare_event(event)
    assert prepared is event
    assert result is not None and not result.valid
    assert problem in result.errors[0]


def test_warnings_come_with_the_sanitized_event() -> None:
    old = _recent({"note": f"key {KEY}"}, timestamp=dt.datetime.now(dt.UTC) - dt.timedelta(days=9))
    prepared, result = prepare_event(old)
    assert result is not None and result.valid and "days old" in result.warnings[0]
    assert prepared.data == {"note": "key [REDACTED_API_KEY]"}


def test_old_common_events_take_one_pass_with_the_age_warning() -> None:
    """An old flat event is checked and scrubbed in one pass too; its result is the full
    check's, warning and all."""
    scrubber = Scrubber()
    metadata = EventMetadata(os="linux")
    prepare_event(_recent({"q": "x"}, metadata=metadata, timestamp=NOW), scrubber, now=NOW)
    event = _recent(
        {"q": f"key {KEY}", "n": 1},
        metadata=metadata,
        timestamp=NOW - dt.timedelta(days=400, hours=3),
    )
    expected = validate_event(event, now=NOW)
    with (
        mock.patch.object(scrubber_module, "validate_event", side_effect=AssertionError),
        mock.patch.object(Scrubber, "sanitize_event", side_effect=AssertionError),
    ):
        prepared, result = prepare_event(event, scrubber, now=NOW)
    assert result == expected
    assert result.warnings == ["$.timestamp: event is 400.1 days old (more than 7 days)"]
    assert prepared.data == {"q": "key [REDACTED_API_KEY]", "n": 1}


def test_timestamps_at_the_clock_skew_edge_take_the_full_check() -> None:
    """Just inside the allowed skew is valid, just beyond it is an error, whichever path."""
    scrubber = Scrubber()
    prepare_event(_recent({"q": 1}), scrubber)  # the metadata is known from here on
    inside = _recent({"q": 1}, timestamp=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=4))
    beyond = _recent({"q": 1}, timestamp=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=7))
    assert prepare_event(inside, scrubber) == (inside, None)
    _, result = prepare_event(beyond, scrubber)
    assert result is not None and not result.valid
