"""Property tests: the scrubber keeps the shape of any JSON-like value, never raises, is
idempotent, and its shortcuts agree with the full search."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from privacy_strategies import json_values, keys, texts

from tachimeter.privacy import Scrubber
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
