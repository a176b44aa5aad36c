"""Event validation (spec 406's ``validate_event``, hardened).

Beyond the spec's checks (older than 7 days warns, a future timestamp errors,
``TokensConsumed`` without business data and ``ErrorOccurred`` without error data warn)
this rejects what would poison storage or analytics: timestamps before 1970 (the Unix
epoch), custom names that break the naming rule, NaN and infinite numbers, values that
are not JSON, nesting deeper than ``max_property_depth``, strings longer than
``max_string_length``, and events whose encoded data and metadata exceed
``max_event_bytes``. A timestamp up to
``clock_skew_seconds`` in the future is accepted: producers' clocks drift.

Every message names the field path, the value and the fix.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Iterable, Sequence
from typing import Any, Final

import msgspec

from tachimeter.model.data import (
    BusinessEventData,
    CustomData,
    ErrorEventData,
    PerformanceEventData,
    UsageEventData,
)
from tachimeter.model.event_types import Custom, EventCategory, EventType, check_custom_name
from tachimeter.model.events import AnalyticsEvent
from tachimeter.model.rows import RESERVED_CONTEXT_KEYS

__all__ = [
    "DEFAULT_LIMITS",
    "ValidationLimits",
    "ValidationResult",
    "validate_batch",
    "validate_event",
    "validate_events",
]


class ValidationLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Bounds checked by :func:`validate_event` and :func:`validate_batch`.

    Defaults: 5 s of clock skew; warn past 7 days of age; 10 levels of nesting (deeper
    JSON is almost always an accidental object dump); 64 KiB of data and metadata per event
    and 32 KiB per string (a long stack trace fits, a file's contents do not); batches of
    at most 10 000 events and 10 MiB.
    """

    clock_skew_seconds: float = 5.0
    max_age_days_warning: int = 7
    max_property_depth: int = 10
    max_event_bytes: int = 65_536
    max_string_length: int = 32_768
    max_batch_events: int = 10_000
    max_batch_bytes: int = 10 * 1024 * 1024


DEFAULT_LIMITS: Final = ValidationLimits()
# The Unix epoch: UUIDv7 ids (and every time bucket) count from it; older is an error.
EARLIEST_TIMESTAMP: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class ValidationResult(msgspec.Struct, kw_only=True):
    """Outcome of a validation: ``valid`` is True when there are no errors.

    >>> from tachimeter.model.events import EventBuilder
    >>> validate_event(EventBuilder(EventType.SESSION_STARTED).build()).valid
    True
    """

    valid: bool
    errors: list[str]
    warnings: list[str]


_SCALARS: Final = (str, int, bool, type(None))
USAGE_FIELDS: Final = frozenset(UsageEventData.__struct_fields__) - {"extra"}
"""The named fields of :class:`UsageEventData`: a key of its ``extra`` must not be one."""
_encoder: Final = msgspec.json.Encoder()
INT_BOUND: Final = 10**20
"""Ints strictly within this bound encode to at most 21 bytes; size bounds assume it (an
int may have thousands of digits)."""


class _Walker:
    """Checks a JSON-like value; collects at most a few errors so a huge bad payload is cheap."""

    __slots__ = ("errors", "limits")

    def __init__(self, limits: ValidationLimits) -> None:
        self.limits = limits
        self.errors: list[str] = []

    def walk(self, value: Any, path: str, depth: int) -> None:
        if len(self.errors) >= 10:
            return
        kind = type(value)
        if kind is str:
            if len(value) > self.limits.max_string_length:
                self.errors.append(
                    f"{path}: string of {len(value)} characters exceeds max_string_length "
                    f"{self.limits.max_string_length}; truncate it or raise the limit"
                )
            return
        if kind is float:
            if not math.isfinite(value):
                self.errors.append(f"{path}: {value!r} is not a finite number; send null instead")
            return
        if kind in _SCALARS:
            return
        if kind is dict or kind is list or kind is tuple:
            if depth >= self.limits.max_property_depth:
                self.errors.append(
                    f"{path}: nested deeper than max_property_depth "
                    f"{self.limits.max_property_depth}; flatten the value"
                )
                return
            if kind is dict:
                for key, item in value.items():
                    if type(key) is not str:
                        self.errors.append(
                            f"{path}: key {key!r} is {type(key).__name__}, keys must be strings"
                        )
                        continue
                    self.walk(item, f"{path}.{key}", depth + 1)
            else:
                for index, item in enumerate(value):
                    self.walk(item, f"{path}[{index}]", depth + 1)
            return
        if isinstance(value, msgspec.Struct):
            for field in value.__struct_fields__:
                self.walk(getattr(value, field), f"{path}.{field}", depth)
            return
        if isinstance(value, (int, float, str)):  # enums with str/int values, bool
            return
        if hasattr(value, "value") and type(value.value) in _SCALARS:  # plain Enum
            return
        self.errors.append(
            f"{path}: {type(value).__name__} is not a JSON value; convert it to str, "
            "a number, a bool, a list or a dict"
        )


def validate_event(
    event: AnalyticsEvent,
    *,
    now: dt.datetime | None = None,
    limits: ValidationLimits = DEFAULT_LIMITS,
) -> ValidationResult:
    """Check an event; never raises, whatever the event holds.

    >>> from tachimeter.model.events import EventBuilder
    >>> validate_event(EventBuilder(EventType.TOKENS_CONSUMED).build()).warnings
    ['$.data: tokens_consumed should carry BusinessEventData (token counts), got no data']
    """
    try:
        quick = _quick_warnings(event, time.time() if now is None else now, limits)
    except Exception:  # anything odd is for the full check to describe
        quick = None
    if quick is not None:
        return ValidationResult(valid=True, errors=[], warnings=list(quick))
    errors: list[str] = []
    warnings: list[str] = []
    try:
        _check_event(event, now, limits, errors, warnings)
    except Exception as exc:  # a hostile object must not escape the validator
        errors.append(f"$: event could not be validated: {type(exc).__name__}: {exc}")
    return ValidationResult(valid=not errors, errors=errors, warnings=warnings)


def validate_events(
    events: Iterable[AnalyticsEvent],
    *,
    now: dt.datetime | None = None,
    limits: ValidationLimits = DEFAULT_LIMITS,
) -> list[ValidationResult | None]:
    """:func:`validate_event` for each event, None for each one that is valid and has no
    warnings (the common case, which then costs no allocation).

    The clock is read once for the whole batch. Never raises.

    >>> from tachimeter.model.events import EventBuilder
    >>> validate_events([EventBuilder(EventType.SESSION_STARTED).build()])
    [None]
    """
    seconds = time.time()
    instant = seconds if now is None else now
    exact = now
    results: list[ValidationResult | None] = []
    append = results.append
    for event in events:
        try:
            quick = _quick_warnings(event, instant, limits)
        except Exception:
            quick = None
        if quick is not None:
            append(ValidationResult(valid=True, errors=[], warnings=list(quick)) if quick else None)
            continue
        if exact is None:  # the full check compares datetimes: the same instant as one
            exact = dt.datetime.fromtimestamp(seconds, dt.UTC)
        result = validate_event(event, now=exact, limits=limits)
        append(None if result.valid and not result.warnings else result)
    return results


# The category of each named type whose events need no warning from the type alone
# (tokens_consumed and error_occurred expect a particular data variant).
_QUIET_CATEGORY: Final[dict[object, EventCategory]] = {
    kind: kind.category()
    for kind in EventType
    if kind not in (EventType.TOKENS_CONSUMED, EventType.ERROR_OCCURRED)
}
# tokens_consumed and error_occurred need no warning when they carry the data they expect:
# (expected data type, category).
_EXPECTED_DATA: Final[dict[object, tuple[type, EventCategory]]] = {
    EventType.TOKENS_CONSUMED: (BusinessEventData, EventType.TOKENS_CONSUMED.category()),
    EventType.ERROR_OCCURRED: (ErrorEventData, EventType.ERROR_OCCURRED.category()),
}
# Custom event names seen to be valid; names are few, the bound guards against ids as names.
_good_custom_names: set[str] = set()


_NO_WARNINGS: Final[tuple[str, ...]] = ()


def _quick_warnings(
    event: AnalyticsEvent, now: dt.datetime | float, limits: ValidationLimits
) -> tuple[str, ...] | None:
    """The full check's warnings when it would find no error and at most the age warning:
    the common event, flat key-value or no data, judged without the full walk. None
    means "run the full check", not "invalid". ``now`` is a datetime (exact) or Unix
    seconds (from ``time.time()``)."""
    envelope = measure_envelope(event, now, limits)
    if envelope is None:
        return None
    data = event.data
    if type(data) is dict:
        data_bytes = _flat_size(data, limits)
        if data_bytes is None:
            return None
    elif data is None:
        data_bytes = 4  # `null`
    else:
        return None
    if data_bytes + envelope[0] > limits.max_event_bytes:
        return None
    warning = envelope[1]
    return _NO_WARNINGS if warning is None else (warning,)


def measure_envelope(
    event: AnalyticsEvent, now: dt.datetime | float, limits: ValidationLimits
) -> tuple[int, str | None] | None:
    """``(metadata bytes, age warning or None)`` when everything but the event's data
    passes the checks of :func:`validate_event` with nothing to report but, perhaps, the
    timestamp's age (timestamp, type, category, metadata, ids): the encoded size of the
    metadata, and the warning's exact text. None when the full check must decide. May
    raise on odd objects.

    Internal, for pipeline stages that check the data in their own pass over it
    (``tachimeter.privacy.prepare_event``); of the data only its type is looked at
    (``tokens_consumed`` and ``error_occurred`` warn without the variant they expect). ``now`` is
    a datetime (exact) or Unix seconds (from ``time.time()``); an age warning against
    seconds is worded against ``datetime.fromtimestamp(now, UTC)``, as
    :func:`validate_events` words it.
    """
    ts = event.timestamp
    if type(ts) is not dt.datetime or ts.tzinfo is None:
        return None
    warning: str | None = None
    if type(now) is float:
        window = _window
        if window[0] is not limits or not window[1] <= now < window[2]:
            window = _timestamp_window(limits, now)
        if not window[3] < ts < window[4]:
            # A margin of 1 ms keeps float rounding from deciding a boundary case; the
            # full check, which reads its own clock, takes those.
            ahead = ts.timestamp() - now
            max_age = limits.max_age_days_warning * 86_400
            if ahead < -max_age - 0.001:
                if ts < EARLIEST_TIMESTAMP:
                    return None
                warning = _age_warning(ts, dt.datetime.fromtimestamp(now, dt.UTC), limits)
                if warning is None:
                    return None
            elif not 0.001 - max_age < ahead < limits.clock_skew_seconds - 0.001:
                return None
    elif isinstance(now, dt.datetime):
        if now.tzinfo is None:
            return None
        ahead = (ts - now).total_seconds()
        if ahead > limits.clock_skew_seconds:
            return None
        if -ahead > limits.max_age_days_warning * 86_400:
            if ts < EARLIEST_TIMESTAMP:
                return None
            warning = _age_text(ahead, limits)
    else:
        return None
    etype = event.event_type
    # One lookup answers "a named type that needs no warning, in its own category".
    if _QUIET_CATEGORY.get(etype) is not event.category:
        if type(etype) is Custom:
            name = etype.name
            if name not in _good_custom_names:
                if type(name) is not str or check_custom_name(name) is not None:
                    return None
                if name in EventType._value2member_map_:
                    return None
                if len(_good_custom_names) >= 1024:
                    _good_custom_names.clear()
                _good_custom_names.add(name)
            if event.category is not etype.category():
                return None
        else:
            expected = _EXPECTED_DATA.get(etype)
            if (
                expected is None
                or type(event.data) is not expected[0]
                or event.category is not expected[1]
            ):
                return None
    metadata = event.metadata
    cached = _checked_metadata.get(id(metadata))
    if cached is None or cached[0] is not metadata:
        return None
    if metadata.custom and not RESERVED_CONTEXT_KEYS.isdisjoint(metadata.custom):
        return None
    max_len = limits.max_string_length
    value = event.session_id
    if value is not None and (type(value) is not str or len(value) > max_len):
        return None
    value = event.user_id
    if value is not None and (type(value) is not str or len(value) > max_len):
        return None
    if event.page_url is not None or event.referrer is not None:
        for value in (event.page_url, event.referrer):
            if value is not None and (type(value) is not str or len(value) > max_len):
                return None
    return cached[1] if warning is None else (cached[1][0], warning)


def _age_warning(ts: dt.datetime, now: dt.datetime, limits: ValidationLimits) -> str | None:
    """The full check's warning for a timestamp this old at ``now``; None if it has none
    (then neither has it an error: ``ts`` is in the past)."""
    ahead = (ts - now).total_seconds()
    if ahead > limits.clock_skew_seconds or -ahead <= limits.max_age_days_warning * 86_400:
        return None
    return _age_text(ahead, limits)


def _age_text(ahead: float, limits: ValidationLimits) -> str:
    return (
        f"$.timestamp: event is {-ahead / 86_400:.1f} days old "
        f"(more than {limits.max_age_days_warning} days)"
    )


_WINDOW_SECONDS: Final = 1.0
_NO_TIME: Final = dt.datetime.max.replace(tzinfo=dt.UTC)
# (limits, from, until, oldest, newest): timestamps strictly between oldest and newest
# pass the age and clock-skew checks at any clock reading in [from, until), with 2 ms to
# spare for float rounding. Comparing datetimes is cheaper than converting one to
# seconds. Replaced whole, so threads see a consistent tuple.
_window: tuple[object, float, float, dt.datetime, dt.datetime] = (
    None,
    0.0,
    0.0,
    _NO_TIME,
    _NO_TIME,
)


def _timestamp_window(
    limits: ValidationLimits, now: float
) -> tuple[object, float, float, dt.datetime, dt.datetime]:
    global _window
    until = now + _WINDOW_SECONDS
    try:
        oldest = dt.datetime.fromtimestamp(
            until - limits.max_age_days_warning * 86_400 + 0.002, dt.UTC
        )
        newest = dt.datetime.fromtimestamp(now + limits.clock_skew_seconds - 0.002, dt.UTC)
    except (OverflowError, OSError, ValueError):  # bounds beyond datetime: no shortcut
        oldest = newest = _NO_TIME
    _window = (limits, now, until, oldest, newest)
    return _window


def _check_event(
    event: AnalyticsEvent,
    now: dt.datetime | None,
    limits: ValidationLimits,
    errors: list[str],
    warnings: list[str],
) -> None:
    now = now or dt.datetime.now(dt.UTC)
    ts: object = event.timestamp
    if not isinstance(ts, dt.datetime):
        errors.append(f"$.timestamp: expected a datetime, got {type(ts).__name__}")
    else:
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=dt.UTC)
        ahead = (ts - now).total_seconds()
        if ahead > limits.clock_skew_seconds:
            errors.append(
                f"$.timestamp: {ts.isoformat()} is {ahead:.1f} s in the future "
                f"(allowed clock skew {limits.clock_skew_seconds:g} s); fix the producer's clock"
            )
        elif ts < EARLIEST_TIMESTAMP:
            errors.append(
                f"$.timestamp: {ts.isoformat()} is before 1970-01-01T00:00:00Z, the earliest "
                "time an event can carry (event ids count milliseconds from it); send the "
                "time the event happened"
            )
        elif -ahead > limits.max_age_days_warning * 86_400:
            warnings.append(_age_text(ahead, limits))

    etype: object = event.event_type
    if isinstance(etype, Custom):
        problem = check_custom_name(etype.name)
        if problem is not None:
            errors.append(f"$.event_type.custom: custom event name {problem}")
        elif etype.name in EventType._value2member_map_:
            warnings.append(
                f"$.event_type.custom: {etype.name!r} is a built-in event type; "
                f"use EventType.{EventType(etype.name).name}"
            )
    elif not isinstance(etype, EventType):
        errors.append(f"$.event_type: expected EventType or Custom, got {type(etype).__name__}")
        return
    if event.category is not etype.category():
        warnings.append(
            f"$.category: {event.category.value!r} differs from {etype.event_name!r}'s "
            f"category {etype.category().value!r}"
        )

    data = event.data
    if etype is EventType.TOKENS_CONSUMED and type(data) is not BusinessEventData:
        warnings.append(
            "$.data: tokens_consumed should carry BusinessEventData (token counts), "
            f"got {_describe(data)}"
        )
    elif etype is EventType.ERROR_OCCURRED and type(data) is not ErrorEventData:
        warnings.append(
            f"$.data: error_occurred should carry ErrorEventData, got {_describe(data)}"
        )

    custom = event.metadata.custom
    shadowed = sorted(RESERVED_CONTEXT_KEYS.intersection(custom)) if custom else None
    if shadowed:
        errors.append(
            f"$.metadata.{shadowed[0]}: custom metadata key {shadowed[0]!r} is reserved "
            f"(reserved: {', '.join(sorted(RESERVED_CONTEXT_KEYS))}); rename it"
        )
    if type(data) is UsageEventData and not USAGE_FIELDS.isdisjoint(data.extra):
        clash = sorted(USAGE_FIELDS.intersection(data.extra))[0]
        errors.append(f"$.data.extra.{clash}: extra key {clash!r} shadows a usage field; rename it")

    if type(data) not in _DATA_TYPES:
        errors.append(
            f"$.data: expected a dict of properties, a typed payload (UsageEventData, ...) "
            f"or None, got {type(data).__name__}; wrap any other JSON value in CustomData"
        )
        return
    walker = _Walker(limits)
    data_bytes = _flat_size(data, limits) if type(data) is dict else None
    if data_bytes is None:
        walker.walk(data, "$.data", 0)
    metadata_bytes = _metadata_size(event.metadata, walker)
    max_len = limits.max_string_length
    for field in ("session_id", "user_id", "page_url", "referrer"):
        value = getattr(event, field)
        if value is None:
            continue
        if type(value) is not str:
            errors.append(
                f"$.{field}: expected a string or None, got {type(value).__name__} "
                f"{_short(value)}; pass str({field})"
            )
        elif len(value) > max_len:
            walker.walk(value, f"$.{field}", 0)
    errors.extend(walker.errors)
    if not walker.errors:
        if data_bytes is None or data_bytes * 2 > limits.max_event_bytes:
            data_bytes = encoded_size(data)  # the estimate is close: measure exactly
        size = data_bytes + metadata_bytes
        if size > limits.max_event_bytes:
            errors.append(
                f"$.data: data and metadata encode to {size} bytes, more than max_event_bytes "
                f"{limits.max_event_bytes}; send less or raise the limit"
            )


def _flat_size(data: dict[Any, Any], limits: ValidationLimits) -> int | None:
    """Fast path for the common payload, a flat dict of short scalars: an upper bound of
    its JSON size, or None when anything needs the full walk (nesting, floats that may be
    NaN, long strings, odd keys)."""
    max_len = limits.max_string_length
    size = 2
    for key, value in data.items():
        kind = type(value)
        if type(key) is not str:
            return None
        if kind is str:
            if len(value) > max_len:
                return None
            # JSON escaping at most doubles ASCII and a code point is at most 6 bytes
            size += 6 * (len(key) + len(value)) + 6
        elif kind is int:
            if not -INT_BOUND < value < INT_BOUND:  # longer digits than the bound allows
                return None
            size += 6 * len(key) + 26
        elif kind is bool or value is None:
            size += 6 * len(key) + 26
        elif kind is float:
            if value - value != 0.0:  # NaN and infinities
                return None
            size += 6 * len(key) + 30
        else:
            return None
    return size


# Metadata objects are shared by every event of a collector: check each one once. Each
# entry holds the object (which keeps its id unique) and measure_envelope's answer for
# a clean event, so that answer costs no allocation.
_checked_metadata: dict[int, tuple[object, tuple[int, None]]] = {}


def _metadata_size(metadata: object, walker: _Walker) -> int:
    cached = _checked_metadata.get(id(metadata))
    if cached is not None and cached[0] is metadata:
        return cached[1][0]
    before = len(walker.errors)
    walker.walk(metadata, "$.metadata", 0)
    size = len(_encoder.encode(metadata))
    if len(walker.errors) == before:
        if len(_checked_metadata) >= 64:
            _checked_metadata.clear()
        _checked_metadata[id(metadata)] = (metadata, (size, None))
    return size


def passes_walk(value: Any, depth: int, limits: ValidationLimits) -> bool:
    """Whether :func:`validate_event`'s walk of ``value`` at ``depth`` finds nothing in it,
    judged for plain JSON values only (str, int, bool, None, float, and dicts with string
    keys, lists and tuples of them): False for anything else, which the full check must
    describe. May raise on odd objects (RecursionError on a cycle).

    Internal, for pipeline stages that check nested data in their own pass over it
    (``tachimeter.privacy.prepare_event``).
    """
    kind = type(value)
    if kind is str:
        return len(value) <= limits.max_string_length
    if kind is float:
        return bool(value - value == 0.0)  # NaN and infinities fail
    if kind is int or kind is bool or value is None:
        return True
    if kind is dict or kind is list or kind is tuple:
        if depth >= limits.max_property_depth:
            return False
        depth += 1
        if kind is dict:
            for key, item in value.items():
                if type(key) is not str or not passes_walk(item, depth, limits):
                    return False
            return True
        return all(passes_walk(item, depth, limits) for item in value)
    return False


def encoded_size(data: object) -> int:
    """The encoded size :func:`validate_event` counts for ``data`` that is not a flat
    dict (a typed payload); may raise on values that are not JSON. Internal."""
    return len(_encoder.encode(data))


_DATA_TYPES: Final = frozenset(
    {
        type(None),
        dict,
        UsageEventData,
        PerformanceEventData,
        ErrorEventData,
        BusinessEventData,
        CustomData,
    }
)


def _short(value: object) -> str:
    try:
        text = repr(value)
    except Exception:  # a hostile __repr__ must not break validation
        return "(unprintable)"
    return text if len(text) <= 40 else text[:37] + "..."


def _describe(data: object) -> str:
    return "no data" if data is None else type(data).__name__


def validate_batch(
    events: Sequence[AnalyticsEvent],
    *,
    encoded_bytes: int | None = None,
    limits: ValidationLimits = DEFAULT_LIMITS,
) -> ValidationResult:
    """Check a batch's size (events and, when known, encoded bytes), not its events."""
    errors: list[str] = []
    if len(events) > limits.max_batch_events:
        errors.append(
            f"$.events: {len(events)} events exceed max_batch_events {limits.max_batch_events}; "
            "split the batch"
        )
    if encoded_bytes is not None and encoded_bytes > limits.max_batch_bytes:
        errors.append(
            f"$: batch of {encoded_bytes} bytes exceeds max_batch_bytes "
            f"{limits.max_batch_bytes}; split the batch"
        )
    return ValidationResult(valid=not errors, errors=errors, warnings=[])
