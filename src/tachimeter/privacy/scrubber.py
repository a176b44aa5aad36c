"""Secret scrubbing and event sanitization (spec 406's ``sanitize_event``, done thoroughly).

The collector's worker thread runs :meth:`Scrubber.sanitize_event` on every event before
it is serialized, so the scrubber does its work up front (one regex per pattern family,
compiled once per process; a cache of key decisions) and keeps the per-string cost near
zero for the short strings most properties are. The rules themselves, and what counts
as a sensitive key, are documented in :mod:`tachimeter.privacy.patterns`.

How a string is scrubbed: strings too short to hold a secret are returned at once;
otherwise cheap substring tests pick the families that could match (no ``=`` or ``:``,
no assignment), each picked family's regex finds its leftmost match, and the matches
are taken from left to right, a contextual match only if its Python check passes (is
the key sensitive, does the Basic credential decode to ``user:password``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import hmac

import binascii
import datetime as dt
import functools
import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from itertools import islice
from typing import Any, Final, Literal, NamedTuple

import msgspec

from tachimeter.errors import ConfigError
from tachimeter.model import (
    AnalyticsEvent,
    BusinessEventData,
    BusinessMetricType,
    CustomData,
    ErrorEventData,
    ErrorSeverity,
    EventMetadata,
    PerformanceEventData,
    UsageEventData,
    ValidationResult,
    validate_event,
)
from tachimeter.model.validation import (
    DEFAULT_LIMITS,
    INT_BOUND,
    USAGE_FIELDS,
    ValidationLimits,
    encoded_size,
    measure_envelope,
    passes_walk,
)
from tachimeter.privacy.patterns import (
    PLACEHOLDER,
    PLACEHOLDER_PATTERN,
    SECRET_PATTERNS,
    Family,
    SecretPattern,
    key_is_sensitive,
    normalize_key,
)

__all__ = ["DEFAULT_SCRUBBER", "Scrubber", "prepare_event", "sanitize_event"]

# The shortest secret a built-in pattern can find is a `key=value` pair like `pwd=x`;
# without `=` or `:` it is a bearer or basic credential (`Bearer abc123`, 13 characters).
# Shorter strings are returned before any regex runs. Tests check these bounds against
# the patterns' minimum widths.
_MIN_SECRET_LENGTH: Final = 5
_MIN_UNMARKED_SECRET_LENGTH: Final = 13
_MIN_TOKEN_LENGTH: Final = 15
# Each pass replaces at least one secret and never reads a placeholder, so passes stop;
# chains where each replacement exposes one more secret are contrived beyond two.
_MAX_PASSES: Final = 4
# Deeper values are replaced whole: real payloads are a few levels deep, and the bound
# keeps a cyclic or hostile structure from raising RecursionError on the worker thread.
_MAX_DEPTH: Final = 64
# Distinct keys seen in properties are few (dozens); the bound only guards against
# payloads that use ids as keys.
_KEY_CACHE_SIZE: Final = 4096
# How far back a key name is read from its separator (`My API Key: ...`).
_MAX_KEY_LENGTH: Final = 64
# Scrubbed strings are remembered: telemetry repeats its strings (feature and model names,
# routes, error messages), and a hit costs one dict lookup instead of a regex scan. The
# bounds keep the cache under about 2 MB (2048 strings of at most 512 characters, and
# their results); a full cache is cleared rather than kept in LRU order, which would cost
# every hit a reordering. It holds secret-bearing strings too (as the events in flight
# do), at most until it is cleared.
_TEXT_CACHE_SIZE: Final = 2048
_MAX_CACHED_LENGTH: Final = 512
_NOT_CACHED: Final = object()
_DROPPED: Final = object()
_UNCHECKED: Final = object()  # a one-pass preparer's "the full steps must decide"
# Every token but a PEM block is a run of at least _MIN_TOKEN_LENGTH of these characters
# (tests check it against the patterns), so text without such a run skips the token
# regex. The run is found by mapping the UTF-8 bytes through a table and looking for
# `a` * 15: C loops, 2 to 5 times cheaper than the regex on ordinary text of 50 to 500
# characters.
_TOKEN_CHARS: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.+/="
_TOKEN_RUN_TABLE: Final = bytes(
    ord("a") if byte in _TOKEN_CHARS else ord(" ") for byte in range(256)
)
_TOKEN_RUN: Final = b"a" * _MIN_TOKEN_LENGTH
# Below this length the token regex is about as cheap as the run test.
_TOKEN_GATE_LENGTH: Final = 48
_PEM_TRIGGER: Final = "-----BEGIN"

_PLAIN, _MASK, _DROP = 0, 1, 2
# Pattern families, in the order that breaks ties between matches at one position.
_FAMILIES: Final[tuple[Family, ...]] = ("token", "assignment", "bearer", "basic", "url", "query")
_TOKEN, _ASSIGNMENT, _BEARER, _BASIC, _URL, _QUERY = _ALL_FAMILIES = range(len(_FAMILIES))
_KEY_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
_KEY_CHARS_OR_SPACE: Final = _KEY_CHARS | {" ", "\t"}
_USER_CHARS_STOP: Final = frozenset(" \t\r\n\f\v:@/")
_SCHEME_CHARS: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-"
)
# Unquoted values that are code or a stand-in, not a secret: `password: str`,
# `token = None`, `if not secret: raise`, `password = ?` (SQL), `api_key=$OPENAI_API_KEY`,
# `secret: ****`.
_NOT_A_SECRET = re.compile(
    r"(?i:none|null|nil|true|false|undefined|str|string|bytes|int|optional|secretstr"
    r"|redacted|hidden|masked|return|raise|pass|continue|break|await|yield|lambda|self"
    r"|new|let|const|var|fn)|\*+|[xX]{3,}|\.{3}|\?|\$\d*|%s|:\w+|\$[A-Z_][A-Z0-9_]*"
)
# A dotted name, maybe called or subscripted: `settings.API_KEY`, `getpass()`, `env["X"`,
# `std::env::var(`.
_REFERENCE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*(?:(?:\.|::)[A-Za-z_][A-Za-z0-9_]*)*)([(\[].*)?")
_CLOSERS: Final = {")": "(", "]": "[", "}": "{"}
_OPENERS: Final = {opener: closer for closer, opener in _CLOSERS.items()}
_STRING_PREFIXES: Final = frozenset({"f", "b", "r", "u", "rb", "br", "fr", "rf"})
_PLACEHOLDER_SPLIT = re.compile(f"({PLACEHOLDER_PATTERN})")
# A leading character class the source builder may expand into literals: `[rs]k_`.
_LEADING_CLASS = re.compile(r"\[([A-Za-z0-9?&]+)\]")


class _Alternative(NamedTuple):
    """How to read a match of one alternative of a family's regex."""

    placeholder: str
    groups: tuple[int, ...]
    """The secret groups; empty: the whole match (extended back by ``back``)."""
    back: int
    """Length of the part of a token prefix before the character it is found by."""
    value: Callable[[str, int], re.Match[str] | None] | None
    """For assignments: matches the value where the key word and separator end."""
    unquoted_group: int
    """For assignments: the value's group holding an unquoted value (0: none)."""
    may_be_code: bool
    """Whether that unquoted value may be code rather than a secret."""


_Search = Callable[[str, int], "re.Match[str] | None"]
_Source = tuple[_Search, dict[int, _Alternative]]
_Head = tuple[int, int, "re.Match[str]"]  # (start of the secret's match, family, match)

# Rough frequency, in percent, of characters in telemetry text: English letter
# frequencies, a tenth of them for capitals; digits and separators are common in ids,
# timestamps and model names. Used only to pick the rarest character of a prefix.
_LETTERS_BY_FREQUENCY: Final = "etaoinshrdlcumwfgypbvkjxqz"
_LETTER_PERCENT: Final = (
    "12.7 9.1 8.2 7.5 7.0 6.7 6.3 6.1 6.0 4.3 4.0 2.8 2.8 2.4 2.4 2.2 2.0 2.0 1.9 1.5 1.0 0.8 "
    "0.15 0.15 0.1 0.07"
)
_FREQUENCY: Final = {
    **dict(zip(_LETTERS_BY_FREQUENCY, map(float, _LETTER_PERCENT.split()), strict=True)),
    **dict.fromkeys("0123456789", 3.0),
    **dict.fromkeys("-_./", 2.5),
}


def _character_frequency(char: str) -> float:
    if char.isupper():
        return _FREQUENCY.get(char.lower(), 1.0) / 10
    return _FREQUENCY.get(char, 1.0)


def _anchor_index(prefix: str) -> int:
    """Index of the rarest character of ``prefix`` (the later one on a tie)."""
    return min(range(len(prefix)), key=lambda i: (_character_frequency(prefix[i]), -i))


def _split_first(regex: str) -> list[tuple[str, str]]:
    """``regex`` as (literal first character, rest) pairs, or ``[("", regex)]``.

    sre skips an alternative that starts with a literal after one comparison, and skips
    positions whose character starts no alternative at all; a class or group first
    makes it try the alternative everywhere.
    """
    leading = _LEADING_CLASS.match(regex)
    if leading:
        rest = regex[leading.end() :]
        firsts = [re.escape(char) for char in leading.group(1)]
    elif regex[:1] == "\\" and not regex[1:2].isalnum():
        rest, firsts = regex[2:], [regex[:2]]
    elif regex[:1] and regex[0] not in ".^$*+?{}[]()|\\":
        rest, firsts = regex[1:], [re.escape(regex[0])]
    else:
        return [("", regex)]
    if rest[:1] in ("*", "+", "?", "{"):  # the first character is quantified
        return [("", regex)]
    return [(first, rest) for first in firsts]


def _alternatives(pattern: SecretPattern) -> list[tuple[str, str, int]]:
    """(first character, rest, back) for each alternative ``pattern`` becomes.

    A token prefix is matched from its rarest character, then the rest of the prefix
    (a literal, so a failing alternative costs one comparison), then one lookbehind
    checks the whole prefix and the boundary before it; ``back`` is the length of the
    prefix before its rarest character. A token never ends just before a letter or
    digit, so no token ends where another one's boundary is checked: scrubbing a
    second time sees the same boundaries and is idempotent.
    """
    if not pattern.prefixes:
        return [(first, rest, 0) for first, rest in _split_first(pattern.regex)]
    alternatives = []
    for prefix in pattern.prefixes:
        anchor = _anchor_index(prefix)
        boundary = "(?<![A-Za-z0-9])" if prefix[0].isalnum() else ""
        check = f"(?<={boundary}{re.escape(prefix)})"
        tail = re.escape(prefix[anchor + 1 :])
        rest = f"{tail}{check}{pattern.regex}(?![A-Za-z0-9])"
        alternatives.append((re.escape(prefix[anchor]), rest, anchor))
    return alternatives


@functools.cache
def _builtin_sources() -> tuple[_Source, ...]:
    """One compiled regex per pattern family, and how to read its matches.

    Alternatives are grouped by their first character (``k(?:...|...)``); each ends
    with an empty named group, so ``match.lastindex`` (the group that closed last) names
    the alternative that matched, and the groups before it are its secret. Compiled
    once per process, on first use (about 15 ms).
    """
    values: dict[str, re.Pattern[str]] = {}
    sources = []
    for family in _FAMILIES:
        grouped: dict[str, list[tuple[str, int, SecretPattern]]] = {}
        for pattern in SECRET_PATTERNS:
            if pattern.family == family:
                for first, rest, back in _alternatives(pattern):
                    grouped.setdefault(first, []).append((rest, back, pattern))
        parts: list[str] = []
        tagged: list[tuple[str, int, SecretPattern]] = []
        for first, alternatives in grouped.items():
            bodies = []
            for rest, back, pattern in alternatives:
                tag = f"_{len(tagged)}"
                tagged.append((tag, back, pattern))
                bodies.append(f"{rest}(?P<{tag}>)")
            parts.append(f"{first}(?:{'|'.join(bodies)})")
        regex = re.compile("|".join(parts))
        table: dict[int, _Alternative] = {}
        previous = 0
        for tag, back, pattern in tagged:
            index = regex.groupindex[tag]
            value = None
            unquoted_group = 0
            if pattern.value:
                value = values.setdefault(pattern.value, re.compile(pattern.value))
                unquoted_group = value.groups  # the last one, by the patterns' convention
            table[index] = _Alternative(
                pattern.placeholder,
                tuple(range(previous + 1, index)),
                back,
                None if value is None else value.match,
                unquoted_group,
                pattern.value_may_be_code,
            )
            previous = index
        sources.append((regex.search, table))
    return tuple(sources)


class Scrubber:
    """Removes secrets from strings, nested values and events; optionally hashes user ids.

    Secret shapes in any string (API keys, tokens, JWTs, private keys, passwords in URLs
    and ``key=value`` text) become a typed placeholder with the surrounding text kept;
    values under sensitive keys (``password``, ``api_key``, ``Authorization``, ...) are
    masked or dropped. Emails and other personal data that are not secrets are kept:
    add ``extra_patterns`` for them.

    >>> s = Scrubber()
    >>> s.scrub_text("401 with Bearer abc.def-123; retrying postgres://app:pw@db/prod")
    '401 with Bearer [REDACTED]; retrying postgres://app:[REDACTED]@db/prod'
    >>> s.scrub_value({"api_key": "k-1", "input_tokens": 512, "note": ["pwd=hunter2"]})
    {'api_key': '[REDACTED]', 'input_tokens': 512, 'note': ['pwd=[REDACTED]']}
    >>> Scrubber(sensitive_key_action="drop").scrub_value({"token": "t", "model": "gpt-4o"})
    {'model': 'gpt-4o'}

    ``scrubbed_count`` is the number of replacements made so far (strings replaced, keys
    masked or dropped). It is read for summaries; concurrent scrubbing on several threads
    may lose an increment, so treat it as approximate there and use
    :meth:`scrub_text_counted` when an exact per-call figure matters.

    Scrubbing is idempotent: scrubbing a scrubbed value changes nothing (a changed string
    is rescanned until stable; placeholders are never read as secrets, not even by extra
    patterns). User-id hashing is not idempotent: sanitize an event once. The built-in
    patterns are compiled once per process, on first use (15 to 30 ms).
    """

    __slots__ = (
        "_action",
        "_clean_metadata",
        "_count",
        "_drop_keys",
        "_extra",
        "_hmac",
        "_key_cache",
        "_sources",
        "_text_cache",
    )

    def __init__(
        self,
        *,
        extra_patterns: Sequence[str] = (),
        drop_keys: Sequence[str] = (),
        sensitive_key_action: Literal["mask", "drop"] = "mask",
        hash_user_ids: bool = False,
        salt: str | None = None,
    ) -> None:
        if sensitive_key_action not in ("mask", "drop"):
            raise ConfigError(
                f"privacy.sensitive_key_action must be 'mask' or 'drop', "
                f"got {sensitive_key_action!r}"
            )
        if hash_user_ids and not salt:
            raise ConfigError(
                "privacy.salt must be set when privacy.hash_user_ids is true: an unsalted "
                "hash of a user id is reversed by hashing candidate ids"
            )
        extra: list[re.Pattern[str]] = []
        for index, source in enumerate(extra_patterns):
            try:
                compiled = re.compile(source)
            except re.error as exc:
                raise ConfigError(
                    f"privacy.extra_patterns[{index}] {source!r} is not a valid regular "
                    f"expression: {exc}"
                ) from exc
            if compiled.match("") is not None:
                raise ConfigError(
                    f"privacy.extra_patterns[{index}] {source!r} matches the empty string; "
                    f"it would insert {PLACEHOLDER} everywhere"
                )
            extra.append(compiled)
        drop: set[str] = set()
        for index, key in enumerate(drop_keys):
            normalized = normalize_key(key)
            if not normalized:
                raise ConfigError(f"privacy.drop_keys[{index}] {key!r} is empty once normalized")
            drop.add(normalized)

        self._sources: tuple[_Source, ...] | None = None
        self._extra: tuple[re.Pattern[str], ...] = tuple(extra)
        self._drop_keys: frozenset[str] = frozenset(drop)
        self._action = _DROP if sensitive_key_action == "drop" else _MASK
        # The keyed HMAC is set up once; each id hashes a copy of it.
        self._hmac = _keyed_sha256(salt) if hash_user_ids and salt else None
        self._key_cache: dict[str, int] = {}
        # text -> None (clean) or (scrubbed text, replacements); see _TEXT_CACHE_SIZE.
        self._text_cache: dict[str, tuple[str, int] | None] = {}
        self._count = 0
        # The last metadata object found clean. A collector's events share one metadata
        # object, so this skips re-scrubbing it per event (the struct is frozen; mutating
        # its custom dict in place after use is not supported).
        self._clean_metadata: object = None

    def __repr__(self) -> str:
        action = "drop" if self._action == _DROP else "mask"
        return (
            f"Scrubber(extra_patterns={[p.pattern for p in self._extra]!r}, "
            f"drop_keys={sorted(self._drop_keys)!r}, sensitive_key_action={action!r}, "
            f"hash_user_ids={self._hmac is not None!r})"
        )

    @property
    def scrubbed_count(self) -> int:
        """Replacements made so far (approximate under concurrent use)."""
        return self._count

    # -- strings ---------------------------------------------------------------------------

    def scrub_text(self, text: str) -> str:
        """``text`` with every secret replaced by a placeholder; ``text`` itself if none."""
        return self._scrub_str(text)

    def scrub_text_counted(self, text: str) -> tuple[str, int]:
        """Like :meth:`scrub_text`, also returning how many replacements it made."""
        result, count = self._scrub_counted(text)
        self._count += count
        return result, count

    def _scrub_str(self, text: str) -> str:
        size = len(text)
        if (
            size < _MIN_UNMARKED_SECRET_LENGTH
            and (size < _MIN_SECRET_LENGTH or ("=" not in text and ":" not in text))
            and not self._extra
        ):
            return text
        cache = self._text_cache
        cached = cache.get(text, _NOT_CACHED)
        if cached is None:
            return text  # itself, not the equal string cached: callers test identity
        if isinstance(cached, tuple):
            self._count += cached[1]
            return cached[0]  # type: ignore[no-any-return]
        result, count = self._scrub_counted(text)
        if size <= _MAX_CACHED_LENGTH and type(text) is str:
            if len(cache) >= _TEXT_CACHE_SIZE:
                cache.clear()
            cache[text] = (result, count) if count else None
        if count:
            self._count += count
        return result

    def _scrub_text_reference(self, text: str) -> tuple[str, int]:
        """The slow reference for tests: every family's regex, no shortcut, no cache.

        The fast path (:meth:`scrub_text`) must give exactly this text.
        """
        return self._scrub_counted(text, gated=False)

    def _scrub_counted(self, text: str, *, gated: bool = True) -> tuple[str, int]:
        """Scrub ``text`` until nothing changes; ``gated=False`` runs every family.

        A replacement can expose another secret: the boundary checks around a token look
        at its neighbours, and a neighbour may just have become a placeholder (a bot
        token that ran straight into a PEM block). So a text that changed is scanned
        again; in practice a second pass finds nothing.
        """
        text, total = self._scrub_once(text, gated)
        passes = 1
        count = total
        while count and passes < _MAX_PASSES:
            text, count = self._scrub_once(text, gated)
            total += count
            passes += 1
        return text, total

    def _scrub_once(self, text: str, gated: bool) -> tuple[str, int]:
        sources = self._sources
        if sources is None:  # compiled on first use, so that importing costs nothing
            sources = self._sources = _builtin_sources()
        heads: list[_Head] = []
        for family in _families_for(text) if gated else _ALL_FAMILIES:
            search, table = sources[family]
            match = search(text, 0)
            if match is not None:  # a first match starts where its prefix does
                heads.append((match.start() - table[match.lastindex or 0].back, family, match))
        count = 0
        if heads:
            text, count = self._rewrite(text, heads, sources)
        if self._extra:
            text, extra_count = self._apply_extra(text)
            count += extra_count
        return text, count

    @staticmethod
    def _next(
        sources: tuple[_Source, ...], family: int, text: str, position: int, floor: int
    ) -> _Head | None:
        """The next match of ``family`` from ``position`` on, its secret starting at
        ``floor`` or later (a token's prefix may begin before where the search did)."""
        search, table = sources[family]
        match = search(text, position)
        while match is not None:
            start = match.start() - table[match.lastindex or 0].back
            if start >= floor:
                return (start, family, match)
            match = search(text, match.start() + 1)
        return None

    def _rewrite(
        self, text: str, heads: list[_Head], sources: tuple[_Source, ...]
    ) -> tuple[str, int]:
        """Replace secrets, taking the families' matches from left to right.

        ``heads`` holds the next match of each family. The leftmost wins (ties go to the
        family listed first); a match that fails its check is retried one character
        later; matches overlapping a replaced one are searched again after it.
        """
        pieces: list[str] = []
        last = 0  # end of the last replaced span
        count = 0
        while heads:
            index = min(range(len(heads)), key=heads.__getitem__)
            start, family, match = heads[index]
            alternative = sources[family][1][match.lastindex or 0]
            found = self._secret_spans(family, text, match, alternative, start, last)
            if found is None:
                retry = self._next(sources, family, text, match.start() + 1, start + 1)
                if retry is None:
                    del heads[index]
                else:
                    heads[index] = retry
                continue
            spans, end = found
            for span_start, span_end in spans:
                pieces.append(text[last:span_start])
                pieces.append(alternative.placeholder)
                last = span_end
                count += 1
            end = max(end, start + 1)
            for position in range(len(heads) - 1, -1, -1):
                if heads[position][0] < end:
                    again = self._next(sources, heads[position][1], text, end, end)
                    if again is None:
                        del heads[position]
                    else:
                        heads[position] = again
        if not count:
            return text, 0
        pieces.append(text[last:])
        return "".join(pieces), count

    def _secret_spans(
        self,
        family: int,
        text: str,
        match: re.Match[str],
        alternative: _Alternative,
        start: int,
        floor: int,
    ) -> tuple[list[tuple[int, int]], int] | None:
        """The spans to replace and where the match ends, or None if its check fails."""
        if alternative.value is not None:  # an assignment: key word, separator, value
            value = alternative.value(text, match.end())
            if value is None:
                return None
            groups = range(1, value.re.groups + 1)
            spans = [span for span in map(value.span, groups) if span[0] >= 0]
            if not self._is_sensitive_assignment(text, start, floor):
                return None
            if alternative.unquoted_group:
                unquoted = self._unquoted_secret(
                    text, value, alternative.unquoted_group, alternative.may_be_code
                )
                if unquoted is None:
                    return None
                if unquoted:
                    spans = [unquoted]
            return spans, value.end()
        if not alternative.groups:
            return [(start, match.end())], match.end()
        spans = [span for span in map(match.span, alternative.groups) if span[0] >= 0]
        if family == _BASIC:
            if not _is_basic_credential(match.group(alternative.groups[0])):
                return None
        elif family == _URL and not _follows_url_user(text, match.start()):
            return None
        elif family == _QUERY and _NOT_A_SECRET.fullmatch(match.group(alternative.groups[0])):
            return None  # a template: `?key=%s`
        return spans, match.end()

    def _is_sensitive_assignment(self, text: str, start: int, floor: int) -> bool:
        """Whether the key whose last word starts at ``start`` is sensitive."""
        end = start
        size = len(text)
        while end < size and text[end] in _KEY_CHARS:
            end += 1
        # Read the key back over spaces too (`My API Key: ...`), but never into a span
        # already replaced: a second pass sees a placeholder there, and must decide the
        # same way.
        begin = start
        low = max(floor, start - _MAX_KEY_LENGTH)
        while begin > low and text[begin - 1] in _KEY_CHARS_OR_SPACE:
            begin -= 1
        return self._key_action(text[begin:end]) != _PLAIN

    def _unquoted_secret(
        self, text: str, value: re.Match[str], group: int, may_be_code: bool
    ) -> tuple[int, int] | tuple[()] | None:
        """The span of an unquoted value if it is a secret, None if it is a stand-in or
        code, and the empty tuple if the value was quoted (quoted values are data,
        whatever they hold)."""
        value_start, value_end = value.span(group)
        if value_start < 0:
            return ()
        found = text[value_start:value_end]
        if not may_be_code:  # an environment line: `SECRET_KEY=k(9&x` is all key
            if _NOT_A_SECRET.fullmatch(found) or not any(char.isalnum() for char in found):
                return None
            return (value_start, value_end)
        # Brackets the value did not open or close, and a final `:` or `.`, belong to
        # the code or prose around it: `login(password=x)`, `{password: x}`,
        # `pwd=None):`, `pwd = (self.password.encode(...`.
        while found and (
            found[-1] in ":."
            or (found[-1] in _CLOSERS and found.count(found[-1]) > found.count(_CLOSERS[found[-1]]))
        ):
            found = found[:-1]
        while (
            found
            and found[0] in _OPENERS
            and found.count(found[0]) > found.count(_OPENERS[found[0]])
        ):
            found = found[1:]
            value_start += 1
        if not any(char.isalnum() for char in found):  # `(`, `****`: nothing to hide
            return None
        following = text[value_start + len(found) : value_start + len(found) + 1]
        if found in _STRING_PREFIXES and following in ('"', "'"):  # f"Bearer {token}"
            return None
        if _NOT_A_SECRET.fullmatch(found):
            return None
        reference = _REFERENCE.fullmatch(found)
        if reference and (
            reference.group(2)  # a call or subscript: `api_key=os.environ["KEY"]`
            # A variable named like a secret is a reference to one: `password=password`.
            or self._key_action(reference.group(1)) != _PLAIN
        ):
            return None
        return (value_start, value_start + len(found))

    def _apply_extra(self, text: str) -> tuple[str, int]:
        """Apply the user's patterns outside the placeholders already written."""
        if "[REDACTED" not in text:
            return self._replace_extra(text)
        parts = _PLACEHOLDER_SPLIT.split(text)  # odd indices are placeholders
        count = 0
        for index in range(0, len(parts), 2):
            parts[index], found = self._replace_extra(parts[index])
            count += found
        return ("".join(parts), count) if count else (text, 0)

    def _replace_extra(self, text: str) -> tuple[str, int]:
        count = 0
        for pattern in self._extra:
            pieces: list[str] = []
            last = 0
            for match in pattern.finditer(text):
                start, end = match.span()
                if start == end:  # zero-width matches have nothing to hide
                    continue
                pieces.append(text[last:start])
                pieces.append(PLACEHOLDER)
                last = end
            if pieces:
                pieces.append(text[last:])
                text = "".join(pieces)
                count += len(pieces) // 2
        return text, count

    # -- keys and nested values ------------------------------------------------------------

    def is_sensitive_key(self, key: str) -> bool:
        """Whether values under ``key`` are masked or dropped (patterns module: the rule)."""
        return self._key_action(key) != _PLAIN

    def _key_action(self, key: str) -> int:
        action = self._key_cache.get(key)
        if action is None:
            normalized = normalize_key(key)
            if normalized in self._drop_keys:
                action = _DROP
            elif key_is_sensitive(normalized):
                action = self._action
            else:
                action = _PLAIN
            if len(self._key_cache) >= _KEY_CACHE_SIZE:
                self._key_cache.clear()
            self._key_cache[key] = action
        return action

    def scrub_value(self, value: Any) -> Any:
        """A copy of ``value`` with secrets scrubbed from every string, at any depth.

        Dicts, lists and tuples are rebuilt (always new containers); under a sensitive
        key the value becomes ``"[REDACTED]"`` (``None`` stays ``None``) or the key is
        dropped; keys themselves are kept as they are. Other objects (numbers, bools,
        ``None``, anything not JSON-like) are returned unchanged. Never raises.
        """
        return self._scrub(value, True, 0)

    def _scrub(self, value: Any, fresh: bool, depth: int) -> Any:
        """Scrub ``value``; unless ``fresh``, an unchanged container is returned as is."""
        kind = type(value)
        if kind is str:
            return self._scrub_str(value)
        if kind is dict:
            return self._scrub_dict(value, fresh, depth)
        if kind is list or kind is tuple:
            return self._scrub_sequence(value, fresh, depth)
        if value is None or kind is int or kind is float or kind is bool:
            return value
        if isinstance(value, str):  # str subclasses (StrEnum members) stay themselves if clean
            return self._scrub_str(value)
        if isinstance(value, dict):
            return self._scrub_dict(value, fresh, depth)
        if isinstance(value, list | tuple):
            return self._scrub_sequence(value, fresh, depth)
        return value

    def _scrub_dict(self, value: dict[Any, Any], fresh: bool, depth: int) -> Any:
        if depth >= _MAX_DEPTH:
            self._count += 1
            return PLACEHOLDER
        # The hot loop of the worker thread: properties are mostly short strings and
        # numbers under keys seen before, so those are handled here without a call.
        cached_action = self._key_cache.get
        scrub_str = self._scrub_str
        out: dict[Any, Any] | None = {} if fresh else None
        new: Any
        for index, (key, item) in enumerate(value.items()):
            action = cached_action(key)
            if action is None:
                action = self._key_action(key) if isinstance(key, str) else _PLAIN
            if action == _PLAIN:
                kind = type(item)
                if kind is str:
                    new = scrub_str(item)
                elif item is None or kind is int or kind is float or kind is bool:
                    new = item
                else:
                    new = self._scrub(item, fresh, depth + 1)
            elif action == _DROP:
                self._count += 1
                if out is None:
                    out = dict(islice(value.items(), index))
                continue
            elif item is None or (type(item) is str and item == PLACEHOLDER):
                new = item
            else:
                new = PLACEHOLDER
                self._count += 1
            if out is None:
                if new is item:
                    continue
                out = dict(islice(value.items(), index))
            out[key] = new
        return value if out is None else out

    def _scrub_sequence(self, value: list[Any] | tuple[Any, ...], fresh: bool, depth: int) -> Any:
        if depth >= _MAX_DEPTH:
            self._count += 1
            return PLACEHOLDER
        scrub_str = self._scrub_str
        out: list[Any] | None = [] if fresh else None
        new: Any
        for index, item in enumerate(value):
            kind = type(item)
            if kind is str:
                new = scrub_str(item)
            elif item is None or kind is int or kind is float or kind is bool:
                new = item
            else:
                new = self._scrub(item, fresh, depth + 1)
            if out is None:
                if new is item:
                    continue
                out = list(value[:index])
            out.append(new)
        if out is None:
            return value
        return out if isinstance(value, list) else tuple(out)

    # -- user ids and events ---------------------------------------------------------------

    def hash_user_id(self, user_id: str | None) -> str | None:
        """The salted HMAC-SHA256 of ``user_id`` (32 hex digits) if hashing is on, else it."""
        if user_id is None or self._hmac is None:
            return user_id
        digest = self._hmac.copy()
        digest.update(user_id.encode("utf-8", "surrogatepass"))
        return digest.hexdigest()[:32]

    def sanitize_event(self, event: AnalyticsEvent) -> AnalyticsEvent:
        """``event`` with every string scrubbed and sensitive keys masked or dropped.

        Covers the data payload (every variant), the metadata, ``page_url`` and
        ``referrer``; hashes ``user_id`` when hashing is on. Ids (event, session, user)
        are identifiers and are not scrubbed. Returns ``event`` itself when nothing
        changed, so the common case allocates nothing.
        """
        original = event.data
        data = (
            self._scrub_dict(original, False, 0)
            if type(original) is dict
            else self._sanitize_data(original)
        )
        metadata = event.metadata
        if (
            metadata is self._clean_metadata
            and event.page_url is None
            and event.referrer is None
            and self._hmac is None
        ):  # the common case: only the data to look at
            return event if data is original else msgspec.structs.replace(event, data=data)
        changes: dict[str, Any] = {}
        if data is not original:
            changes["data"] = data
        if metadata is not self._clean_metadata:
            scrubbed = self._scrub_fields(
                metadata, ("app_version", "os", "arch", "locale"), ("custom",)
            )
            if scrubbed is metadata:
                self._clean_metadata = metadata
            else:
                changes["metadata"] = scrubbed
        for name in ("page_url", "referrer"):
            current = getattr(event, name)
            if isinstance(current, str):
                scrubbed = self._scrub_str(current)
                if scrubbed is not current:
                    changes[name] = scrubbed
        if self._hmac is not None and event.user_id is not None:
            changes["user_id"] = self.hash_user_id(event.user_id)
        return msgspec.structs.replace(event, **changes) if changes else event

    def sanitize_events(self, events: Iterable[AnalyticsEvent]) -> list[AnalyticsEvent]:
        """:meth:`sanitize_event` for each event, in order; unchanged events are returned
        as themselves.

        The batch shares the scrubber's caches: a string repeated across the batch (a
        feature or model name, an error message) is scanned once, the common metadata
        object once, each key's sensitivity decided once.

        >>> from tachimeter.model import AnalyticsEvent, EventType
        >>> clean = AnalyticsEvent.new(EventType.FEATURE_USED, {"feature": "search"})
        >>> leaky = AnalyticsEvent.new(EventType.FEATURE_USED, {"note": "Bearer abc.def-123"})
        >>> out = Scrubber().sanitize_events([clean, leaky])
        >>> out[0] is clean, out[1].data
        (True, {'note': 'Bearer [REDACTED]'})
        """
        sanitize = self.sanitize_event
        scrub_dict = self._scrub_dict
        out: list[AnalyticsEvent] = []
        append = out.append
        for event in events:
            data = event.data
            # The common event inline: key-value data, the known-clean metadata, no URLs.
            if (
                type(data) is dict
                and event.metadata is self._clean_metadata
                and event.page_url is None
                and event.referrer is None
                and self._hmac is None
            ):
                scrubbed = scrub_dict(data, False, 0)
                append(event if scrubbed is data else msgspec.structs.replace(event, data=scrubbed))
            else:
                append(sanitize(event))
        return out

    def prepare_event(
        self,
        event: AnalyticsEvent,
        *,
        limits: ValidationLimits = DEFAULT_LIMITS,
        now: dt.datetime | None = None,
    ) -> tuple[AnalyticsEvent, ValidationResult | None]:
        """Validate and sanitize ``event`` in one step: what a pipeline does to each event.

        Returns ``(sanitize_event(event), None)`` when :func:`validate_event` finds nothing
        to report (the common case, which then allocates no result), the sanitized event
        and the result when it only warns, and ``(event, result)`` unsanitized when the
        event is invalid. Never raises for an event :meth:`sanitize_event` accepts.

        The common event (the metadata seen before, no URLs, no user-id hashing; data
        that is key-value scalars, a typed payload with well-typed fields, or none) is
        checked and scrubbed in one pass over its values; anything else, and anything the
        pass finds to report but an old timestamp, takes the two steps in turn. Both give
        the same events, results and ``scrubbed_count``.

        >>> from tachimeter.model import AnalyticsEvent, EventType
        >>> event = AnalyticsEvent.new(EventType.FEATURE_USED, {"note": "pwd=hunter2", "n": 1})
        >>> prepared, result = Scrubber().prepare_event(event)
        >>> prepared.data, result
        ({'note': 'pwd=[REDACTED]', 'n': 1}, None)
        """
        return prepare_event(event, self, limits=limits, now=now)

    def prepare_events(
        self,
        events: Iterable[AnalyticsEvent],
        *,
        limits: ValidationLimits = DEFAULT_LIMITS,
        now: dt.datetime | None = None,
    ) -> list[tuple[AnalyticsEvent, ValidationResult | None]]:
        """:meth:`prepare_event` for each event, in order, the clock read once.

        >>> from tachimeter.model import AnalyticsEvent, EventType
        >>> event = AnalyticsEvent.new(EventType.FEATURE_USED, {"feature": "search"})
        >>> Scrubber().prepare_events([event]) == [(event, None)]
        True
        """
        if now is None:
            now = dt.datetime.now(dt.UTC)
        prepare = self.prepare_event
        return [prepare(event, limits=limits, now=now) for event in events]

    def _prepare_one_pass(
        self, event: AnalyticsEvent, limits: ValidationLimits, now: dt.datetime | None
    ) -> tuple[AnalyticsEvent, ValidationResult | None] | None:
        """:func:`prepare_event`'s answer for an event whose metadata is known clean and
        that has no URLs, from one pass over its data; None when the two steps must
        decide (then nothing has been counted)."""
        data = event.data
        kind = type(data)
        if kind is dict:
            if self._extra:  # _prepare_flat skips short strings, which extra patterns read
                return None
            prepare = None
        else:
            prepare = _TYPED_PREPARERS.get(kind)
            if prepare is None:
                return None
        try:
            envelope = measure_envelope(event, time.time() if now is None else now, limits)
            if envelope is None:
                return None
            budget = limits.max_event_bytes - envelope[0]
            if prepare is None:
                prepared = self._prepare_flat(data, limits.max_string_length, budget)
                if prepared is None:
                    return None
            else:
                prepared = prepare(self, data, limits, budget)
                if prepared is _UNCHECKED:
                    return None
        except Exception:  # anything odd is for the full check to describe
            return None
        if prepared is not data:
            event = msgspec.structs.replace(event, data=prepared)
        warning = envelope[1]
        if warning is None:
            return event, None
        # An old event: valid, with the one warning the full check gives it.
        return event, ValidationResult(valid=True, errors=[], warnings=[warning])

    def _prepare_flat(self, data: dict[Any, Any], max_length: int, budget: int) -> Any:
        """``data`` scrubbed as :meth:`_scrub_dict` would, if validation finds nothing in
        it and its encoded size fits ``budget``; None when the full steps must decide.

        Only string keys and scalar values are taken (strings of at most ``max_length``,
        finite floats). Replacements are counted only when the pass succeeds, so a
        caller that falls back to the full steps counts each one once.
        """
        key_action = self._key_cache.get
        finite = math.isfinite
        chars = 0
        count = 0
        out: dict[str, Any] | None = None
        new: Any
        for key, value in data.items():
            if type(key) is not str:
                return None
            action = key_action(key)
            if action is None:
                action = self._key_action(key)
            kind = type(value)
            if kind is str:
                size = len(value)
                if size > max_length:
                    return None
                chars += len(key) + size
                if not action:  # _PLAIN: scrub the text, as _scrub_str does
                    if size < _MIN_UNMARKED_SECRET_LENGTH and (
                        size < _MIN_SECRET_LENGTH or ("=" not in value and ":" not in value)
                    ):
                        continue
                    cached = self._text_cache.get(value, _NOT_CACHED)
                    if cached is None:
                        continue
                    if cached is _NOT_CACHED:
                        new, found = self._scrub_counted(value)
                        if size <= _MAX_CACHED_LENGTH:
                            cache = self._text_cache
                            if len(cache) >= _TEXT_CACHE_SIZE:
                                cache.clear()
                            cache[value] = (new, found) if found else None
                        if not found:
                            continue
                    else:  # a (scrubbed text, replacements) pair
                        new, found = cached  # type: ignore[misc]
                    count += found
                elif action == _MASK and value == PLACEHOLDER:
                    continue
                else:
                    count += 1
                    new = PLACEHOLDER if action == _MASK else _DROPPED
            elif (
                kind is bool
                or value is None
                or (kind is int and -INT_BOUND < value < INT_BOUND)
                or (kind is float and finite(value))
            ):
                chars += len(key)
                if not action or (value is None and action == _MASK):
                    continue
                count += 1
                new = PLACEHOLDER if action == _MASK else _DROPPED
            else:
                return None
            if out is None:
                out = dict(data)
            if new is _DROPPED:
                del out[key]
            else:
                out[key] = new
        # An upper bound of the JSON size: escaping makes at most 6 bytes of a character,
        # and 30 covers the quotes, separators and any number's digits.
        if 6 * chars + 30 * len(data) + 2 > budget:
            return None
        if out is None:
            return data
        self._count += count
        return out

    def _prepare_mapping(
        self, value: Any, data: Any, limits: ValidationLimits, budget: int, rest: int
    ) -> Any:
        """A typed payload's ``extra`` or ``tags`` scrubbed as :meth:`_scrub_fields` does,
        if validation's walk finds nothing in it and ``data`` encodes to at most
        ``budget`` bytes (``rest`` of them left for the mapping by the fields' bound);
        ``_UNCHECKED`` otherwise. Called after the other checks: replacements are
        counted when it succeeds."""
        if type(value) is not dict:
            return _UNCHECKED
        if not self._extra and limits.max_property_depth > 0:  # flat scalars: one pass
            prepared = self._prepare_flat(value, limits.max_string_length, rest)
            if prepared is not None:
                return prepared
        if not passes_walk(value, 0, limits) or encoded_size(data) > budget:
            return _UNCHECKED
        return self._scrub_dict(value, False, 0)

    # The preparers below check each field as validate_event's walk would, inline (this
    # is the worker's hot loop): exact types only (anything else is left to the full
    # check), strings within max_string_length, finite floats, ints within INT_BOUND. The
    # size bound then passes the event, or its exact encoded size decides.

    def _prepare_usage(self, data: UsageEventData, limits: ValidationLimits, budget: int) -> Any:
        """``data`` sanitized, if validation finds nothing in it; else ``_UNCHECKED``."""
        feature, action, target, extra = data.feature, data.action, data.target, data.extra
        duration = data.duration_ms
        if (
            type(feature) is not str
            or type(action) is not str
            or (target is not None and type(target) is not str)
            or type(data.success) is not bool
            or (duration is not None and (type(duration) is not int or not _fits(duration)))
            or type(extra) is not dict
            or not USAGE_FIELDS.isdisjoint(extra)
        ):
            return _UNCHECKED
        max_len = limits.max_string_length
        chars = len(feature) + len(action)
        if len(feature) > max_len or len(action) > max_len:
            return _UNCHECKED
        if target is not None:
            if len(target) > max_len:
                return _UNCHECKED
            chars += len(target)
        rest = budget - _USAGE_SIZE - 6 * chars
        new_extra = self._prepare_mapping(extra, data, limits, budget, rest)
        if new_extra is _UNCHECKED:
            return _UNCHECKED
        scrub = self._scrub_str
        new_feature = scrub(feature)
        new_action = scrub(action)
        new_target = target if target is None else scrub(target)
        if (
            new_feature is feature
            and new_action is action
            and new_target is target
            and new_extra is extra
        ):
            return data
        return msgspec.structs.replace(
            data, feature=new_feature, action=new_action, target=new_target, extra=new_extra
        )

    def _prepare_performance(
        self, data: PerformanceEventData, limits: ValidationLimits, budget: int
    ) -> Any:
        """``data`` sanitized, if validation finds nothing in it; else ``_UNCHECKED``."""
        metric, unit, tags = data.metric, data.unit, data.tags
        if type(metric) is not str or type(unit) is not str or not _is_number(data.value):
            return _UNCHECKED
        max_len = limits.max_string_length
        if len(metric) > max_len or len(unit) > max_len:
            return _UNCHECKED
        rest = budget - _PERFORMANCE_SIZE - 6 * (len(metric) + len(unit))
        new_tags = self._prepare_mapping(tags, data, limits, budget, rest)
        if new_tags is _UNCHECKED:
            return _UNCHECKED
        scrub = self._scrub_str
        new_metric = scrub(metric)
        new_unit = scrub(unit)
        if new_metric is metric and new_unit is unit and new_tags is tags:
            return data
        return msgspec.structs.replace(data, metric=new_metric, unit=new_unit, tags=new_tags)

    def _prepare_error(self, data: ErrorEventData, limits: ValidationLimits, budget: int) -> Any:
        """``data`` sanitized, if validation finds nothing in it; else ``_UNCHECKED``."""
        code, message, component, trace = data.code, data.message, data.component, data.stack_trace
        if (
            type(code) is not str
            or type(message) is not str
            or type(component) is not str
            or (trace is not None and type(trace) is not str)
            or type(data.severity) is not ErrorSeverity
            or type(data.recovered) is not bool
        ):
            return _UNCHECKED
        max_len = limits.max_string_length
        chars = len(code) + len(message) + len(component)
        if len(code) > max_len or len(message) > max_len or len(component) > max_len:
            return _UNCHECKED
        if trace is not None:
            if len(trace) > max_len:
                return _UNCHECKED
            chars += len(trace)
        if _ERROR_SIZE + 6 * chars > budget and encoded_size(data) > budget:
            return _UNCHECKED
        scrub = self._scrub_str
        new_code = scrub(code)
        new_message = scrub(message)
        new_component = scrub(component)
        new_trace = trace if trace is None else scrub(trace)
        if (
            new_code is code
            and new_message is message
            and new_component is component
            and new_trace is trace
        ):
            return data
        return msgspec.structs.replace(
            data, code=new_code, message=new_message, component=new_component, stack_trace=new_trace
        )

    def _prepare_business(
        self, data: BusinessEventData, limits: ValidationLimits, budget: int
    ) -> Any:
        """``data`` sanitized, if validation finds nothing in it; else ``_UNCHECKED``."""
        unit, backend, model = data.unit, data.backend, data.model
        if (
            type(unit) is not str
            or (backend is not None and type(backend) is not str)
            or (model is not None and type(model) is not str)
            or type(data.metric_type) is not BusinessMetricType
            or not _is_number(data.value)
        ):
            return _UNCHECKED
        max_len = limits.max_string_length
        chars = len(unit)
        if chars > max_len:
            return _UNCHECKED
        if backend is not None:
            if len(backend) > max_len:
                return _UNCHECKED
            chars += len(backend)
        if model is not None:
            if len(model) > max_len:
                return _UNCHECKED
            chars += len(model)
        if _BUSINESS_SIZE + 6 * chars > budget and encoded_size(data) > budget:
            return _UNCHECKED
        scrub = self._scrub_str
        new_unit = scrub(unit)
        new_backend = backend if backend is None else scrub(backend)
        new_model = model if model is None else scrub(model)
        if new_unit is unit and new_backend is backend and new_model is model:
            return data
        return msgspec.structs.replace(data, unit=new_unit, backend=new_backend, model=new_model)

    def _prepare_custom(self, data: CustomData, limits: ValidationLimits, budget: int) -> Any:
        """``data`` sanitized, if validation finds nothing in it; else ``_UNCHECKED``."""
        value = data.value
        if not passes_walk(value, 0, limits) or encoded_size(data) > budget:
            return _UNCHECKED
        scrubbed = self._scrub(value, False, 0)
        return data if scrubbed is value else CustomData(scrubbed)

    def _prepare_empty(self, data: None, limits: ValidationLimits, budget: int) -> Any:
        """No data: valid if its ``null`` fits ``budget``."""
        return data if budget >= 4 else _UNCHECKED

    def _sanitize_data(self, data: Any) -> Any:
        if data is None:
            return None
        if isinstance(data, dict):
            return self._scrub_dict(data, False, 0)
        if isinstance(data, UsageEventData):
            return self._scrub_fields(data, ("feature", "action", "target"), ("extra",))
        if isinstance(data, ErrorEventData):
            return self._scrub_fields(data, ("code", "message", "component", "stack_trace"), ())
        if isinstance(data, PerformanceEventData):
            return self._scrub_fields(data, ("metric", "unit"), ("tags",))
        if isinstance(data, BusinessEventData):
            return self._scrub_fields(data, ("unit", "backend", "model"), ())
        if isinstance(data, CustomData):
            value = self._scrub(data.value, False, 0)
            return data if value is data.value else CustomData(value)
        return data

    def _scrub_fields(
        self,
        struct: EventMetadata
        | UsageEventData
        | ErrorEventData
        | PerformanceEventData
        | BusinessEventData,
        strings: tuple[str, ...],
        mappings: tuple[str, ...],
    ) -> Any:
        """``struct`` with its string and mapping fields scrubbed; itself if unchanged.

        Structs are not type-checked when built, so a field of the wrong type is left
        as it is rather than raised on (validation reports it).
        """
        changes: dict[str, Any] = {}
        for name in strings:
            current = getattr(struct, name)
            if isinstance(current, str):
                scrubbed = self._scrub_str(current)
                if scrubbed is not current:
                    changes[name] = scrubbed
        for name in mappings:
            current = getattr(struct, name)
            if isinstance(current, dict):
                scrubbed = self._scrub_dict(current, False, 0)
                if scrubbed is not current:
                    changes[name] = scrubbed
        return msgspec.structs.replace(struct, **changes) if changes else struct


_Preparer = Callable[[Scrubber, Any, ValidationLimits, int], Any]
# The one-pass check and scrub of each data variant but key-value data (which needs no
# scrubber setting to be taken: see _prepare_one_pass).
_TYPED_PREPARERS: Final[dict[type, _Preparer]] = {
    UsageEventData: Scrubber._prepare_usage,
    BusinessEventData: Scrubber._prepare_business,
    PerformanceEventData: Scrubber._prepare_performance,
    ErrorEventData: Scrubber._prepare_error,
    CustomData: Scrubber._prepare_custom,
    type(None): Scrubber._prepare_empty,
}


def _typed_size(cls: type[msgspec.Struct], strings: int) -> int:
    """An upper bound of the JSON of a ``cls`` struct, less 6 bytes a character of its
    ``strings`` string fields: escaping makes at most 6 bytes of a character; 6 covers a
    string's quotes (or ``null``), 32 any other field (the longest float is 24 bytes, an
    int within INT_BOUND 21, an enum's value at most 15), 4 a field name's quotes,
    colon and comma. A mapping field's own bound is added by _prepare_flat."""
    fields = cls.__struct_fields__
    return 2 + sum(len(name) + 4 for name in fields) + 6 * strings + 32 * (len(fields) - strings)


_USAGE_SIZE: Final = _typed_size(UsageEventData, 3)
_PERFORMANCE_SIZE: Final = _typed_size(PerformanceEventData, 2)
_ERROR_SIZE: Final = _typed_size(ErrorEventData, 4)
_BUSINESS_SIZE: Final = _typed_size(BusinessEventData, 3)


def _fits(number: int) -> bool:
    return -INT_BOUND < number < INT_BOUND


def _is_number(value: object) -> bool:
    """Whether ``value`` is a finite float or an int within INT_BOUND (not a bool)."""
    kind = type(value)
    if kind is float:
        return math.isfinite(value)  # type: ignore[arg-type]
    return kind is int and -INT_BOUND < value < INT_BOUND  # type: ignore[operator]


def _families_for(text: str) -> list[int]:
    """The families that could match ``text``, by tests much cheaper than their regexes.

    Each test is implied by every match of its family (the families' regexes are
    case-insensitive for ASCII only, so ``str.lower`` cannot hide a keyword; a token is
    a run of token characters or starts a PEM block).
    """
    families = []
    size = len(text)
    if size >= _MIN_TOKEN_LENGTH and (
        size < _TOKEN_GATE_LENGTH
        or _TOKEN_RUN in text.encode("utf-8", "surrogatepass").translate(_TOKEN_RUN_TABLE)
        or _PEM_TRIGGER in text
    ):
        families.append(_TOKEN)
    has_equals = "=" in text
    has_colon = ":" in text
    if has_equals or has_colon:
        low = text.lower()
        if (
            "pass" in low
            or "pwd" in low
            or "secret" in low
            or "token" in low
            or "key" in low
            or "cred" in low
            or "cookie" in low
            or "auth" in low
        ):
            families.append(_ASSIGNMENT)
    if "earer" in text or "EARER" in text:
        families.append(_BEARER)
    if "asic" in text or "ASIC" in text:
        families.append(_BASIC)
    if has_colon and "@" in text:
        families.append(_URL)
    if has_equals and ("?" in text or "&" in text):
        families.append(_QUERY)
    return families


def _is_basic_credential(token: str) -> bool:
    """Whether ``token`` is base64 of ``user:password`` (what HTTP Basic auth sends)."""
    try:
        decoded = binascii.a2b_base64(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return False
    return b":" in decoded


def _follows_url_user(text: str, colon: int) -> bool:
    """Whether the ``:`` at ``colon`` ends the user of a ``scheme://user:`` authority."""
    begin = colon
    low = max(0, colon - 256)
    while begin > low and text[begin - 1] not in _USER_CHARS_STOP:
        begin -= 1
    if begin < 4 or text[begin - 3 : begin] != "://":
        return False
    scheme_end = begin - 3
    scheme_start = scheme_end
    while scheme_start > 0 and text[scheme_start - 1] in _SCHEME_CHARS:
        scheme_start -= 1
    while scheme_start < scheme_end and not text[scheme_start].isalpha():
        scheme_start += 1  # a scheme starts with a letter (`1+https` is not one)
    return scheme_start < scheme_end


def _keyed_sha256(salt: str) -> hmac.HMAC:
    import hashlib  # deferred: only user-id hashing needs it (a few ms of imports)
    import hmac

    return hmac.new(salt.encode(), digestmod=hashlib.sha256)


DEFAULT_SCRUBBER: Final = Scrubber()
"""The scrubber with default settings, used by :func:`sanitize_event`."""


def sanitize_event(event: AnalyticsEvent) -> AnalyticsEvent:
    """Spec 406's ``sanitize_event`` with the default rules (:data:`DEFAULT_SCRUBBER`).

    >>> from tachimeter.model import EventBuilder, EventType, ErrorSeverity
    >>> event = (EventBuilder(EventType.ERROR_OCCURRED)
    ...          .error_data("API_ERROR", "Failed with key sk-abc123def456ghi789jkl012mno345",
    ...                      ErrorSeverity.ERROR, "backend").build())
    >>> sanitize_event(event).data.message
    'Failed with key [REDACTED_API_KEY]'
    """
    return DEFAULT_SCRUBBER.sanitize_event(event)


def prepare_event(
    event: AnalyticsEvent,
    scrubber: Scrubber = DEFAULT_SCRUBBER,
    *,
    limits: ValidationLimits = DEFAULT_LIMITS,
    now: dt.datetime | None = None,
) -> tuple[AnalyticsEvent, ValidationResult | None]:
    """Validate then sanitize one event, as the collector's worker and the server do.

    ``(prepared, None)`` when the event is valid without warnings; otherwise the
    :func:`~tachimeter.model.validate_event` result comes second, and an invalid event
    comes back unsanitized (check ``result.valid``). :meth:`Scrubber.prepare_event`
    has the details.

    >>> from tachimeter.model import AnalyticsEvent, EventType
    >>> event = AnalyticsEvent.new(EventType.FEATURE_USED, {"q": "key sk-abc123def456ghi789jkl0"})
    >>> prepare_event(event)[0].data
    {'q': 'key [REDACTED_API_KEY]'}
    """
    if (
        event.metadata is scrubber._clean_metadata
        and event.page_url is None
        and event.referrer is None
        and scrubber._hmac is None
    ):  # the common event: one pass over its values checks and scrubs them
        prepared = scrubber._prepare_one_pass(event, limits, now)
        if prepared is not None:
            return prepared
    result = validate_event(event, now=now, limits=limits)
    if not result.valid:
        return event, result
    return scrubber.sanitize_event(event), result if result.warnings else None
