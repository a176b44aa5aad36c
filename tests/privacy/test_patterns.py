"""The sensitive-key rule and the invariants the scrubber's shortcuts rely on."""

from __future__ import annotations

import re
import re._parser as sre_parse
from typing import Any  # only to read the patterns' minimum widths and characters

import pytest

from tachimeter.privacy import Scrubber, patterns, scrubber
from tachimeter.privacy.patterns import (
    SECRET_PATTERNS,
    key_is_sensitive,
    normalize_key,
)

SENSITIVE = [
    "api_key",
    "apiKey",
    "api-key",
    "API_KEY",
    "X-Api-Key",
    "x-api-key",
    "OPENAI_API_KEY",
    "Secret Key",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "session_token",
    "github_token",
    "HF_TOKEN",
    "password",
    "passwd",
    "pwd",
    "db_pwd",
    "DB_PASSWORD",
    "passphrase",
    "secret",
    "client_secret",
    "authorization",
    "Proxy-Authorization",
    "cookie",
    "set-cookie",
    "Set-Cookie",
    "private_key",
    "privateKey",
    "credentials",
    "aws_secret_access_key",
    "AWS_ACCESS_KEY_ID",
    "AccountKey",
    "connection_string",
    "auth",
    "creds",
]
NOT_SENSITIVE = [
    "token_count",
    "input_tokens",
    "output_tokens",
    "tokens_used",
    "max_tokens",
    "total_tokens",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.cache_read.input_tokens",
    "password_changed_at",
    "token_type",
    "secret_name",
    "time_to_first_token",
    "cost_per_token",
    "eos_token",
    "tokenizer",
    "key",
    "cache_key",
    "primary_key",
    "api_key_id",
    "private_key_id",
    "oauth",
    "author",
    "session_id",
    "user_id",
    "model",
    "feature",
]


@pytest.mark.parametrize("key", SENSITIVE)
def test_sensitive_keys(key: str) -> None:
    """Secret-holding keys are sensitive in any case and with any separator."""
    assert key_is_sensitive(normalize_key(key))


@pytest.mark.parametrize("key", NOT_SENSITIVE)
def test_token_counts_and_lookalikes_are_not_sensitive(key: str) -> None:
    """Token counts are core telemetry; keys that only start with a secret word are data."""
    assert not key_is_sensitive(normalize_key(key))


def test_normalization_ignores_case_and_separators() -> None:
    """`X-Api-Key`, `x_api_key`, `X.API.KEY` and `x api key` are one key."""
    forms = {"X-Api-Key", "x_api_key", "X.API.KEY", "x api key", "xApiKey"}
    assert {normalize_key(form) for form in forms} == {"xapikey"}


def _min_width(regex: str) -> int:
    return int(sre_parse.parse(regex).getwidth()[0])


def _full_regexes(family: str) -> list[str]:
    """Each pattern of ``family`` as one regex, prefixes and values included."""
    out = []
    for pattern in SECRET_PATTERNS:
        if pattern.family == family:
            prefixes = pattern.prefixes or ("",)
            out.extend(re.escape(prefix) + pattern.regex + pattern.value for prefix in prefixes)
    return out


def test_every_pattern_compiles_alone() -> None:
    """Patterns are valid on their own and use no named groups or back-references."""
    for pattern in SECRET_PATTERNS:
        for regex in (pattern.regex, pattern.value):
            assert not re.compile(regex).groupindex, pattern.name
            assert "(?P=" not in regex and not re.search(r"\\[1-9]", regex)
        assert (pattern.family == "assignment") == bool(pattern.value), pattern.name


def test_short_strings_cannot_hold_a_token() -> None:
    """The scrubber skips strings shorter than a token; no token can be that short."""
    for regex in _full_regexes("token"):
        assert _min_width(regex) >= scrubber._MIN_TOKEN_LENGTH, regex
    for family in ("bearer", "basic"):
        for regex in _full_regexes(family):
            assert _min_width(regex) >= scrubber._MIN_UNMARKED_SECRET_LENGTH, regex
    for family in ("assignment", "query"):
        for regex in _full_regexes(family):
            assert _min_width(regex) >= scrubber._MIN_SECRET_LENGTH, regex
    # A URL password needs `s://:p@` around it, which the URL check verifies.
    assert Scrubber().scrub_text("s://:p@") == "s://:[REDACTED]@"
    assert len("s://:p@") >= scrubber._MIN_SECRET_LENGTH
    assert scrubber._MIN_UNMARKED_SECRET_LENGTH <= scrubber._MIN_TOKEN_LENGTH


def test_assignments_need_a_separator() -> None:
    """Strings without `=` or `:` skip the assignment, URL and query families."""
    for family in ("assignment", "url", "query"):
        for regex in _full_regexes(family):
            assert "[:=]" in regex or ":" in regex or "=" in regex


def test_assignment_words_pass_the_lowercase_precheck() -> None:
    """Every key word contains one of the substrings the scrubber looks for first."""
    stems = ("pass", "pwd", "secret", "token", "key", "cred", "cookie", "auth")
    for word in (*patterns.ASSIGNMENT_WORDS, *patterns.HEADER_WORDS):
        assert any(stem in word for stem in stems), word


def test_anchor_is_the_rarest_character() -> None:
    """Token prefixes are searched from a rare character, never a common letter."""
    assert scrubber._anchor_index("eyJ") == 2
    assert scrubber._anchor_index("AKIA") == 1
    assert scrubber._anchor_index("sk-") == 1
    for pattern in SECRET_PATTERNS:
        for prefix in pattern.prefixes:
            anchor = prefix[scrubber._anchor_index(prefix)]
            assert anchor not in "etaoinshr", (prefix, anchor)


def _consumed(parsed: Any) -> set[str] | None:
    """The characters a parsed regex can consume (lookarounds excluded); None: any."""
    chars: set[str] = set()
    for op, av in parsed:
        name = str(op)
        if name == "LITERAL":
            chars.add(chr(av))
        elif name == "IN":
            for item_op, item in av:
                item_name = str(item_op)
                if item_name == "LITERAL":
                    chars.add(chr(item))
                elif item_name == "RANGE":
                    chars.update(map(chr, range(item[0], item[1] + 1)))
                else:  # a negation or a category: more than the token characters
                    return None
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            inner = _consumed(av[2])
            if inner is None:
                return None
            chars |= inner
        elif name == "SUBPATTERN":
            inner = _consumed(av[3])
            if inner is None:
                return None
            chars |= inner
        elif name == "ATOMIC_GROUP":
            inner = _consumed(av)
            if inner is None:
                return None
            chars |= inner
        elif name == "BRANCH":
            for branch in av[1]:
                inner = _consumed(branch)
                if inner is None:
                    return None
                chars |= inner
        elif name in ("ASSERT", "ASSERT_NOT", "AT"):
            continue  # consumes nothing
        else:
            return None
    return chars


def test_tokens_are_runs_of_token_characters() -> None:
    """The scrubber skips the token regex in long text without a run of 15 token
    characters: every token but a PEM block (found by its BEGIN line) is such a run."""
    allowed = set(scrubber._TOKEN_CHARS.decode())
    for pattern in SECRET_PATTERNS:
        if pattern.family != "token":
            continue
        if pattern.name == "pem_private_key":
            assert pattern.prefixes == (scrubber._PEM_TRIGGER,)
            continue
        for prefix in pattern.prefixes or ("",):
            consumed = _consumed(sre_parse.parse(re.escape(prefix) + pattern.regex))
            assert consumed is not None and consumed <= allowed, pattern.name
    assert scrubber._TOKEN_GATE_LENGTH >= scrubber._MIN_TOKEN_LENGTH
    assert scrubber._TOKEN_RUN == b"a" * scrubber._MIN_TOKEN_LENGTH
