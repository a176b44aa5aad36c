"""validate_event: spec 406 checks plus the hardening of the issue."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any
from unittest import mock

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import events, finite, json_objects, keys

from tachimeter.model import (
    AnalyticsEvent,
    BusinessEventData,
    BusinessMetricType,
    Custom,
    ErrorEventData,
    ErrorSeverity,
    EventBuilder,
    EventCategory,
    EventMetadata,
    EventType,
    UsageEventData,
    ValidationLimits,
    ValidationResult,
    validate_batch,
    validate_event,
    validate_events,
    validation,
)

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)


def at(offset: dt.timedelta, kind: EventType | str = EventType.FEATURE_USED) -> AnalyticsEvent:
    return EventBuilder(kind).timestamp(NOW + offset).build()


def test_spec_event_validation() -> None:
    """Spec 406 test_event_validation, ported."""
    assert validate_event(EventBuilder(EventType.SESSION_STARTED).build()).valid


def test_old_events_warn_future_events_error_with_clock_skew_allowance() -> None:
    old = validate_event(at(-dt.timedelta(days=8)), now=NOW)
    assert old.valid and "8.0 days old" in old.warnings[0]
    assert validate_event(at(-dt.timedelta(days=6)), now=NOW).warnings == []
    assert validate_event(at(dt.timedelta(seconds=4)), now=NOW).valid
    future = validate_event(at(dt.timedelta(seconds=6)), now=NOW)
    assert not future.valid
    assert "6.0 s in the future (allowed clock skew 5 s)" in future.errors[0]
    lenient = ValidationLimits(clock_skew_seconds=10)
    assert validate_event(at(dt.timedelta(seconds=6)), now=NOW, limits=lenient).valid


def test_timestamps_before_the_unix_epoch_are_errors() -> None:
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    assert validate_event(at(epoch - NOW), now=NOW).valid
    for when in (epoch - dt.timedelta(microseconds=1), dt.datetime(1, 1, 1, tzinfo=dt.UTC)):
        result = validate_event(at(when - NOW), now=NOW)
        assert not result.valid
        assert result.errors[0].startswith(f"$.timestamp: {when.isoformat()} is before 1970")


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"user_id": 42}, "$.user_id: expected a string or None, got int 42; pass str(user_id)"),
        ({"session_id": ["s"]}, "$.session_id: expected a string or None, got list ['s']"),
        ({"data": "text"}, "$.data: expected a dict of properties, a typed payload"),
        ({"data": [1, 2]}, "$.data: expected a dict of properties, a typed payload"),
    ],
)
def test_ids_are_text_and_data_is_a_known_kind(change: dict[str, Any], says: str) -> None:
    """What the store cannot keep is an error here, so the pipeline dead-letters the
    event instead of the store refusing its whole batch."""
    event = msgspec.structs.replace(at(dt.timedelta(0)), **change)
    result = validate_event(event, now=NOW)
    assert not result.valid and result.errors[0].startswith(says)


def test_type_data_mismatch_warns() -> None:
    tokens = validate_event(EventBuilder(EventType.TOKENS_CONSUMED).property("n", 1).build())
    assert tokens.valid and "BusinessEventData" in tokens.warnings[0]
    err = validate_event(EventBuilder(EventType.ERROR_OCCURRED).build())
    assert err.valid and "ErrorEventData" in err.warnings[0]


@pytest.mark.parametrize(
    ("props", "fragment"),
    [
        ({"x": float("nan")}, "$.data.x: nan is not a finite number"),
        ({"x": [1, float("inf")]}, "$.data.x[1]: inf is not a finite number"),
        ({"x": object()}, "$.data.x: object is not a JSON value"),
        ({"x": "y" * 40_000}, "$.data.x: string of 40000 characters exceeds max_string_length"),
        ({1: "int key"}, "key 1 is int, keys must be strings"),
    ],
)
def test_bad_values_are_errors_naming_the_path(props: dict[Any, Any], fragment: str) -> None:
    result = validate_event(EventBuilder.track("feature_used").properties(props).build())
    assert not result.valid
    assert any(fragment in e for e in result.errors), result.errors


def test_nesting_depth_limit() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(12):
        node["k"] = {}
        node = node["k"]
    result = validate_event(EventBuilder.track("feature_used").properties(deep).build())
    assert not result.valid and "max_property_depth 10" in result.errors[0]
    shallow = {"a": {"b": {"c": 1}}}
    assert validate_event(EventBuilder.track("feature_used").properties(shallow).build()).valid


def test_total_size_limit() -> None:
    big = {f"k{i}": "v" * 1000 for i in range(80)}
    result = validate_event(EventBuilder.track("feature_used").properties(big).build())
    assert not result.valid and "max_event_bytes 65536" in result.errors[0]


def test_custom_name_syntax_and_shadowing() -> None:
    bad = validate_event(AnalyticsEvent.new(Custom("Not Valid")))
    assert not bad.valid and "snake_case" in bad.errors[0]
    shadow = validate_event(AnalyticsEvent.new(Custom("feature_used")))
    assert shadow.valid and "EventType.FEATURE_USED" in shadow.warnings[0]


def test_reserved_context_keys_and_usage_field_shadowing_are_errors() -> None:
    event = AnalyticsEvent.new(EventType.FEATURE_USED).with_metadata(
        EventMetadata(custom={"priority": "x"})
    )
    assert "custom metadata key 'priority' is reserved" in validate_event(event).errors[0]
    usage = UsageEventData(feature="f", action="a", extra={"feature": "g"})
    result = validate_event(AnalyticsEvent.new(EventType.FEATURE_USED, usage))
    assert "shadows a usage field" in result.errors[0]


def test_batch_limits() -> None:
    limits = ValidationLimits(max_batch_events=2, max_batch_bytes=100)
    evs = [AnalyticsEvent.new(EventType.FEATURE_USED) for _ in range(3)]
    result = validate_batch(evs, encoded_bytes=101, limits=limits)
    assert not result.valid and len(result.errors) == 2
    assert "3 events exceed max_batch_events 2" in result.errors[0]
    assert validate_batch(evs[:2], encoded_bytes=100, limits=limits).valid


@settings(max_examples=200, deadline=None)
@given(events())
def test_validate_never_raises_on_arbitrary_events(event: AnalyticsEvent) -> None:
    result = validate_event(event)
    assert result.valid == (not result.errors)


def test_validate_never_raises_on_hostile_objects() -> None:
    class Hostile:
        def __getattr__(self, name: str) -> Any:
            raise RuntimeError("no")

    result = validate_event(Hostile())  # type: ignore[arg-type]
    assert not result.valid


# -- the fast path and the batch API ---------------------------------------------------

_near_now = st.timedeltas(min_value=-dt.timedelta(days=8), max_value=dt.timedelta(seconds=10))
# Old events (warned about their age), far and near the 7-day edge, and around the Unix
# epoch (refused before it) back to year 1.
_EPOCH_AGO = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) - NOW
_microseconds = st.integers(-5_000, 5_000).map(lambda us: dt.timedelta(microseconds=us))
_old = (
    st.timedeltas(min_value=-dt.timedelta(days=3650), max_value=-dt.timedelta(days=7))
    | _microseconds.map(lambda us: -dt.timedelta(days=7) + us)
    | _microseconds.map(lambda us: _EPOCH_AGO + us)
    | st.just(dt.datetime(1, 1, 1, tzinfo=dt.UTC) - NOW)
)
_shared_metadata = st.sampled_from(
    [EventMetadata(), EventMetadata(os="linux", app_version="1.0"), EventMetadata(custom={"a": 1})]
)


@st.composite
def _recent_events(draw: st.DrawFn) -> AnalyticsEvent:
    """Events around NOW or older (up to ten years) with flat, nested or no data and shared
    metadata: the shapes the fast path takes, and its edges (clock skew, the 7-day age
    edge, NaN, reserved keys, custom names)."""
    event = draw(events())
    return msgspec.structs.replace(
        event,
        timestamp=NOW + draw(_near_now | _old),
        data=draw(st.none() | json_objects | st.dictionaries(keys, finite | st.just(math.nan))),
        metadata=draw(_shared_metadata | st.just(EventMetadata(custom={"os": "x"}))),
    )


def _full_check(event: AnalyticsEvent, now: dt.datetime) -> ValidationResult:
    with mock.patch.object(validation, "_quick_warnings", return_value=None):
        return validate_event(event, now=now)


@settings(max_examples=150, deadline=None)
@given(st.lists(_recent_events(), max_size=6))
def test_fast_path_gives_the_full_checks_result(batch: list[AnalyticsEvent]) -> None:
    """Whatever the event, the shortcut for clean and old events answers as the full
    check does, the age warning's text included."""
    for event in batch * 2:  # the second time, the metadata is known
        assert validate_event(event, now=NOW) == _full_check(event, NOW)


@settings(max_examples=100, deadline=None)
@given(st.lists(_recent_events() | events(), max_size=8))
def test_validate_events_equals_validate_event_per_event(batch: list[AnalyticsEvent]) -> None:
    """The batch API gives each event's result, None where it is valid without warnings."""
    expected = [validate_event(event, now=NOW) for event in batch]
    assert validate_events(batch, now=NOW) == [
        None if r.valid and not r.warnings else r for r in expected
    ]


def test_validate_events_reads_the_clock() -> None:
    """Without ``now``, the batch is judged against the current time."""
    fresh = EventBuilder(EventType.FEATURE_USED).property("q", 1).build()
    future = at(dt.timedelta(days=365 * 100))
    results = validate_events([fresh, fresh, future])
    assert results[:2] == [None, None]
    assert results[2] is not None and not results[2].valid


@settings(max_examples=100, deadline=None)
@given(st.lists(_recent_events(), min_size=1, max_size=8), st.floats(min_value=0, max_value=3))
def test_validate_events_on_its_own_clock_words_age_warnings_as_the_full_check(
    batch: list[AnalyticsEvent], later: float
) -> None:
    """Without ``now``, the batch's one clock reading (in seconds) judges every event, the
    quick path's age warnings worded against it exactly as the full check words them."""
    for event in batch:
        validate_event(event, now=NOW)  # the metadata is known from here on
    seconds = NOW.timestamp() + later
    exact = dt.datetime.fromtimestamp(seconds, dt.UTC)
    with mock.patch.object(validation.time, "time", return_value=seconds):
        got = validate_events(batch)
    full = [_full_check(event, exact) for event in batch]
    assert got == [None if r.valid and not r.warnings else r for r in full]


def test_old_events_take_the_quick_path_with_the_warning() -> None:
    """An old, otherwise clean event is answered without the full check, warning included,
    and an event exactly 7 days old gets no warning (the full check's strict bound)."""
    old = EventBuilder(EventType.FEATURE_USED).property("q", 1).timestamp(NOW).build()
    validate_event(old, now=NOW)  # the metadata is known from here on
    later = NOW + dt.timedelta(days=30, hours=6)
    with mock.patch.object(validation, "_check_event", side_effect=AssertionError):
        result = validate_event(old, now=later)
        edge = validate_event(old, now=NOW + dt.timedelta(days=7))
    assert result == ValidationResult(
        valid=True, errors=[], warnings=["$.timestamp: event is 30.2 days old (more than 7 days)"]
    )
    assert edge == ValidationResult(valid=True, errors=[], warnings=[])
    assert validate_events([old], now=later) == [result]


@settings(max_examples=300, deadline=None)
@given(
    st.floats(min_value=0, max_value=3),
    st.timedeltas(min_value=-dt.timedelta(days=8), max_value=dt.timedelta(seconds=10)),
    st.sampled_from([validation.DEFAULT_LIMITS, ValidationLimits(clock_skew_seconds=0.5)]),
)
def test_clock_reading_shortcut_never_passes_what_the_seconds_check_refuses(
    later: float, offset: dt.timedelta, limits: ValidationLimits
) -> None:
    """Against a clock reading in seconds, the envelope passes a timestamp without a
    warning only where the 1 ms-margin comparison of seconds passes it, warns only well
    past the age bound, and passes it well inside its bounds."""
    event = EventBuilder(EventType.FEATURE_USED).timestamp(NOW + offset).build()
    validate_event(event, now=NOW)  # the metadata is known from here on
    seconds = NOW.timestamp() + later  # readings a window apart share a window, or not
    ahead = event.timestamp.timestamp() - seconds
    envelope = validation.measure_envelope(event, seconds, limits)
    max_age = limits.max_age_days_warning * 86_400
    if envelope is not None and envelope[1] is None:
        assert 0.001 - max_age < ahead < limits.clock_skew_seconds - 0.001
    if envelope is not None and envelope[1] is not None:
        assert ahead < -max_age - 0.001
    if 0.01 - max_age < ahead < limits.clock_skew_seconds - 0.01:
        assert envelope is not None and envelope[1] is None
    if ahead < -max_age - 0.01:
        assert envelope is not None and envelope[1] is not None


def test_ints_longer_than_the_size_bound_are_measured() -> None:
    """The flat-data size bound assumes ints of at most 20 digits; a longer one is encoded
    and measured (or refused, past what JSON encoding takes), not under-counted."""
    limits = ValidationLimits(max_event_bytes=300)
    long = EventBuilder.track("feature_used").properties({"n": 10**400}).build()
    short = EventBuilder.track("feature_used").properties({"n": 10**19}).build()
    result = validate_event(long, limits=limits)
    assert not result.valid and "more than max_event_bytes 300" in result.errors[0]
    assert validate_event(short, limits=limits).valid
    huge = EventBuilder.track("feature_used").properties({"n": 10**5000}).build()
    assert not validate_event(huge).valid


@pytest.mark.parametrize(
    ("kind", "data"),
    [
        (
            EventType.TOKENS_CONSUMED,
            BusinessEventData(metric_type=BusinessMetricType.INPUT_TOKENS, value=10, unit="tokens"),
        ),
        (
            EventType.ERROR_OCCURRED,
            ErrorEventData(code="E", message="m", severity=ErrorSeverity.ERROR, component="tools"),
        ),
    ],
)
def test_envelope_passes_the_types_that_carry_their_expected_data(
    kind: EventType, data: BusinessEventData | ErrorEventData
) -> None:
    """tokens_consumed with BusinessEventData and error_occurred with ErrorEventData have
    no warning, so the envelope passes them; other data, or another category, is left to
    the full check, which warns."""
    event = AnalyticsEvent.new(kind, data)
    validate_event(event, now=NOW)  # the metadata is known from here on
    at_now = msgspec.structs.replace(event, timestamp=NOW)
    assert validation.measure_envelope(at_now, NOW, validation.DEFAULT_LIMITS) is not None
    assert validate_event(at_now, now=NOW) == ValidationResult(valid=True, errors=[], warnings=[])
    for odd in (
        msgspec.structs.replace(at_now, data={"n": 1}),
        msgspec.structs.replace(at_now, data=None),
        msgspec.structs.replace(at_now, category=EventCategory.SYSTEM),
    ):
        assert validation.measure_envelope(odd, NOW, validation.DEFAULT_LIMITS) is None
        assert validate_event(odd, now=NOW).warnings


def _walk_errors(value: Any, depth: int, limits: ValidationLimits) -> list[str]:
    walker = validation._Walker(limits)
    walker.walk(value, "$.data", depth)
    return walker.errors


_plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.just("z" * 30),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(keys | st.integers(0, 2), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    _plain | st.builds(lambda x: [x, object()], _plain),
    st.integers(0, 3),
    st.sampled_from(
        [
            validation.DEFAULT_LIMITS,
            ValidationLimits(max_string_length=20, max_property_depth=2),
            ValidationLimits(max_property_depth=0),
        ]
    ),
)
def test_passes_walk_answers_as_the_walk(value: Any, depth: int, limits: ValidationLimits) -> None:
    """For plain JSON values the shortcut says "nothing found" exactly when the walk finds
    nothing; for anything else it says no."""
    assert validation.passes_walk(value, depth, limits) == (not _walk_errors(value, depth, limits))
    assert not validation.passes_walk(ErrorSeverity.ERROR, 0, limits)
