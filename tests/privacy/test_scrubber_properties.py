"""Property tests: the scrubber keeps the shape of any JSON-like value, never raises, is
idempotent, and its shortcuts agree with the full search."""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st
from privacy_strategies import FRAGMENTS, json_values, keys, texts
from secret_corpus import contexts, ordinary_text, secrets

from tachimeter.model import AnalyticsEvent, EventMetadata, EventType
from tachimeter.privacy import Scrubber
from tachimeter.privacy import scrubber as scrubber_module
from tachimeter.privacy.patterns import PLACEHOLDER, key_is_sensitive, normalize_key

MASK = Scrubber()
DROP = Scrubber(sensitive_key_action="drop")
BOUNDED = settings(max_examples=200, deadline=None)


def _sensitive(key: str) -> bool:
    return key_is_sensitive(normalize_key(key))


def _assert_same_shape(original: Any, scrubbed: Any, *, drop: bool) -> None:
    """Same keys (less dropped ones), same lengths, same types; masked values are strings."""
    if isinstance(original, dict):
        kept = [key for key in original if not (drop and _sensitive(key))]
        assert list(scrubbed) == kept
        for key in kept:
            if _sensitive(key):
                assert scrubbed[key] == (None if original[key] is None else PLACEHOLDER)
            else:
                _assert_same_shape(original[key], scrubbed[key], drop=drop)
    elif isinstance(original, list):
        assert type(scrubbed) is list
        assert len(scrubbed) == len(original)
        for before, after in zip(original, scrubbed, strict=True):
            _assert_same_shape(before, after, drop=drop)
    elif isinstance(original, str):
        assert type(scrubbed) is str
    else:
        assert type(scrubbed) is type(original)
        assert scrubbed == original


@BOUNDED
@given(json_values)
def test_masking_keeps_the_shape(value: Any) -> None:
    """Mask mode: same keys, lengths and types; sensitive values become "[REDACTED]"."""
    _assert_same_shape(value, MASK.scrub_value(value), drop=False)


@BOUNDED
@given(json_values)
def test_dropping_keeps_the_rest_of_the_shape(value: Any) -> None:
    """Drop mode: sensitive keys disappear, everything else keeps its shape."""
    _assert_same_shape(value, DROP.scrub_value(value), drop=True)


@BOUNDED
@given(json_values)
def test_scrubbing_a_value_is_idempotent(value: Any) -> None:
    """Scrubbing twice gives what scrubbing once gave."""
    once = MASK.scrub_value(value)
    assert MASK.scrub_value(once) == once


@BOUNDED
@given(texts)
def test_scrubbing_text_is_idempotent(text: str) -> None:
    """No placeholder or leftover context is ever read as a new secret."""
    once = MASK.scrub_text(text)
    assert MASK.scrub_text(once) == once


@BOUNDED
@given(texts | st.text())
def test_shortcuts_agree_with_the_full_search(text: str) -> None:
    """The length test and the substring pre-checks never skip a secret."""
    full = MASK._scrub_counted(text, gated=False)
    assert MASK._scrub_counted(text) == full
    assert MASK.scrub_text(text) == full[0]


@BOUNDED
@given(st.text())
def test_arbitrary_text_never_raises(text: str) -> None:
    """Any string is scrubbed without error, to a string."""
    assert isinstance(MASK.scrub_text(text), str)


@BOUNDED
@given(keys.filter(str.isascii))
def test_key_rule_ignores_case_and_separators(key: str) -> None:
    """Changing case or adding separators never changes whether a key is sensitive."""
    assert MASK.is_sensitive_key(key) == MASK.is_sensitive_key(key.upper())
    assert MASK.is_sensitive_key(key) == MASK.is_sensitive_key("-".join(key))


# -- the fast path against the reference, and the batch API ------------------------------


def _check_fast_path(scrubber: Scrubber, text: str) -> None:
    expected, replacements = scrubber._scrub_text_reference(text)
    for _ in range(2):  # the first call scans, the second answers from the cache
        before = scrubber.scrubbed_count
        assert scrubber.scrub_text(text) == expected
        assert scrubber.scrubbed_count - before == replacements
    if expected == text:
        assert scrubber.scrub_text(text) is text


@BOUNDED
@given(texts | st.text() | st.text(alphabet="abcxyzAKIJ_-./=+ \n:@", min_size=40))
def test_fast_path_equals_the_reference_on_any_text(text: str) -> None:
    """The run test, the substring gates and the cache never change a result or count."""
    _check_fast_path(Scrubber(), text)
    _check_fast_path(MASK, text)  # a long-lived scrubber with a warm cache


@BOUNDED
@given(st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=8), min_size=4, max_size=20))
def test_fast_path_equals_the_reference_on_long_secret_laden_text(parts: list[str]) -> None:
    """Past the length where the token run test starts, with secrets among ordinary words."""
    _check_fast_path(MASK, " ".join(parts))


def test_fast_path_equals_the_reference_on_the_secret_corpus() -> None:
    """Every fake secret in every context, and the ordinary corpus, scrub as the reference."""
    scrubber = Scrubber()
    for secret in secrets():
        for text in contexts(secret.form):
            _check_fast_path(scrubber, text)
            _check_fast_path(scrubber, f"{text} {' '.join(ordinary_text()[:3])}")
    for text in ordinary_text():
        _check_fast_path(scrubber, text)


def test_the_cache_is_bounded_and_returns_the_callers_string() -> None:
    """A full cache starts over; a clean string comes back as the caller's own object."""
    scrubber = Scrubber()
    for index in range(scrubber_module._TEXT_CACHE_SIZE + 10):
        scrubber.scrub_text(f"an ordinary message number {index}")
    assert len(scrubber._text_cache) <= scrubber_module._TEXT_CACHE_SIZE
    first = "".join(["an ordinary ", "message number 3"])
    second = "".join(["an ordinary ", "message number 3"])
    assert scrubber.scrub_text(first) is first
    assert scrubber.scrub_text(second) is second
    long_text = "x " * scrubber_module._MAX_CACHED_LENGTH
    scrubber.scrub_text(long_text)
    assert long_text not in scrubber._text_cache


_event_data = json_values | st.dictionaries(keys, texts | st.integers(), max_size=5)


@st.composite
def _events(draw: st.DrawFn) -> AnalyticsEvent:
    metadata = draw(st.sampled_from(_METADATA))
    event = AnalyticsEvent.new(EventType.FEATURE_USED, draw(_event_data))
    return msgspec.structs.replace(
        event,
        metadata=metadata,
        page_url=draw(st.none() | texts),
        user_id=draw(st.none() | st.text(max_size=5)),
    )


_METADATA = [
    EventMetadata(os="linux"),
    EventMetadata(os="linux", custom={"note": "pwd=hunter2"}),
    EventMetadata(custom={"api_key": "k"}),
]


@BOUNDED
@given(st.lists(_events(), max_size=8), st.sampled_from(["mask", "drop", "hash", "extra"]))
def test_sanitize_events_equals_sanitize_event_per_event(
    batch: list[AnalyticsEvent], mode: str
) -> None:
    """The batch API gives each event's result, the same object when nothing changed,
    and counts the same replacements."""

    def make() -> Scrubber:
        if mode == "drop":
            return Scrubber(sensitive_key_action="drop")
        if mode == "hash":
            return Scrubber(hash_user_ids=True, salt="s")
        if mode == "extra":
            return Scrubber(extra_patterns=[r"\d{3}"])
        return Scrubber()

    one, many = make(), make()
    expected = [one.sanitize_event(event) for event in batch]
    got = many.sanitize_events(batch)
    assert got == expected
    assert [a is b for a, b in zip(got, batch, strict=True)] == [
        a is b for a, b in zip(expected, batch, strict=True)
    ]
    assert many.scrubbed_count == one.scrubbed_count
