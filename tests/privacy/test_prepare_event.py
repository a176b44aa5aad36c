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
    Custom,
    EventCategory,
    EventMetadata,
    EventType,
    ValidationLimits,
    ValidationResult,
    validate_event,
)
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


def _scrubber(mode: str) -> Scrubber:
    if mode == "drop":
        return Scrubber(sensitive_key_action="drop")
    if mode == "hash":
        return Scrubber(hash_user_ids=True, salt="s")
    if mode == "extra":
        return Scrubber(extra_patterns=[r"\d{3}"])
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
