"""Secret scrubbing and event sanitization (spec 406's ``sanitize_event``, done thoroughly).

The collector's worker thread runs :meth:`Scrubber.sanitize_event` on every event before
it is serialized, so the scrubber does its work at construction (one compiled
alternation of every secret shape, a cache of key decisions) and keeps the per-string
cost near zero for the short strings most properties are. The rules themselves, and
what counts as a sensitive key, are documented in :mod:`tachimeter.privacy.patterns`.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import hmac
import re
from collections.abc import Callable, Sequence
from itertools import islice
from typing import Any, Final, Literal

import msgspec

from tachimeter.errors import ConfigError
from tachimeter.model import (
    AnalyticsEvent,
    BusinessEventData,
    CustomData,
    ErrorEventData,
    EventMetadata,
    PerformanceEventData,
    UsageEventData,
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

__all__ = ["DEFAULT_SCRUBBER", "Scrubber", "sanitize_event"]

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

_PLAIN, _MASK, _DROP = 0, 1, 2
# Pattern families, in the order that breaks ties between matches at one position.
_FAMILIES: Final[tuple[Family, ...]] = ("token", "assignment", "bearer", "basic", "url", "query")
_TOKEN, _ASSIGNMENT, _BEARER, _BASIC, _URL, _QUERY = range(len(_FAMILIES))
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
_STRING_PREFIXES: Final = frozenset({"f", "b", "r", "u", "rb", "br", "fr", "rf"})
_PLACEHOLDER_SPLIT = re.compile(f"({PLACEHOLDER_PATTERN})")
# A leading character class the source builder may expand into literals: `[rs]k_`.
_LEADING_CLASS = re.compile(r"\[([A-Za-z0-9?&]+)\]")

# One alternative of a family's regex: its placeholder; its secret groups (empty: the
# whole match, extended back over the part of a token prefix before its anchor); that
# extension; and the group of an unquoted value that may be code (0: none).
_Alternative = tuple[str, tuple[int, ...], int, int]
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
    with an empty group, so ``match.lastindex`` (the group that closed last) names the
    alternative that matched. Compiled once per process.
    """
    sources = []
    for family in _FAMILIES:
        grouped: dict[str, list[tuple[str, int, SecretPattern]]] = {}
        for pattern in SECRET_PATTERNS:
            if pattern.family == family:
                for first, rest, back in _alternatives(pattern):
                    grouped.setdefault(first, []).append((rest, back, pattern))
        parts: list[str] = []
        table: dict[int, _Alternative] = {}
        group = 0
        for first, alternatives in grouped.items():
            bodies = []
            for rest, back, pattern in alternatives:
                own = re.compile(pattern.regex).groups
                secret_groups = tuple(range(group + 1, group + own + 1))
                group += own + 1
                code_group = secret_groups[-1] if pattern.value_may_be_code else 0
                table[group] = (pattern.placeholder, secret_groups, back, code_group)
                bodies.append(f"{rest}()")
            parts.append(f"{first}(?:{'|'.join(bodies)})")
        sources.append((re.compile("|".join(parts)).search, table))
    return tuple(sources)


class Scrubber:
    """Removes secrets from strings, nested values and events; optionally hashes user ids.

    Secret shapes in any string (API keys, tokens, JWTs, private keys, passwords in URLs
    and ``key=value`` text) become a typed placeholder with the surrounding text kept;
    values under sensitive keys (``password``, ``api_key``, ``Authorization``, ...) are
    masked or dropped. Emails and other personal data that are not secrets are kept:
    add ``extra_patterns`` for them.

    >>> s = Scrubber()
    >>> s.scrub_text("retrying with Authorization: Bearer abc.def-123 after 401")
    'retrying with Authorization: Bearer [REDACTED] after 401'
    >>> s.scrub_value({"api_key": "k-1", "input_tokens": 512, "note": ["pwd=hunter2"]})
    {'api_key': '[REDACTED]', 'input_tokens': 512, 'note': ['pwd=[REDACTED]']}
    >>> Scrubber(sensitive_key_action="drop").scrub_value({"token": "t", "model": "gpt-4o"})
    {'model': 'gpt-4o'}

    ``scrubbed_count`` is the number of replacements made so far (strings replaced, keys
    masked or dropped). It is read for summaries; concurrent scrubbing on several threads
    may lose an increment, so treat it as approximate there and use
    :meth:`scrub_text_counted` when an exact per-call figure matters.

    Scrubbing is idempotent: scrubbing a scrubbed value changes nothing. This holds for
    the built-in rules; an extra pattern keeps it as long as it cannot match text next to
    a placeholder that it did not match before (placeholders themselves are protected).
    User-id hashing is not idempotent: sanitize an event once.
    """

    __slots__ = (
        "_action",
        "_count",
        "_drop_keys",
        "_extra",
        "_hmac",
        "_key_cache",
        "_sources",
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

        self._sources = _builtin_sources()
        self._extra: tuple[re.Pattern[str], ...] = tuple(extra)
        self._drop_keys: frozenset[str] = frozenset(drop)
        self._action = _DROP if sensitive_key_action == "drop" else _MASK
        # The keyed HMAC is set up once; each id hashes a copy of it.
        self._hmac = (
            hmac.new(salt.encode(), digestmod=hashlib.sha256) if hash_user_ids and salt else None
        )
        self._key_cache: dict[str, int] = {}
        self._count = 0

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
        if (
            not self._extra
            and len(text) < _MIN_UNMARKED_SECRET_LENGTH
            and (len(text) < _MIN_SECRET_LENGTH or ("=" not in text and ":" not in text))
        ):
            return text
        result, count = self._scrub_counted(text)
        if count:
            self._count += count
        return result

    def _scrub_counted(self, text: str, *, gated: bool = True) -> tuple[str, int]:
        """Scrub ``text`` until nothing changes; ``gated=False`` runs every family.

        A replacement can expose another secret: the boundary checks around a token look
        at its neighbours, and a neighbour may just have become a placeholder (a bot
        token that ran straight into a PEM block). So a text that changed is scanned
        again; in practice a second pass finds nothing.
        """
        total = 0
        for _ in range(_MAX_PASSES):
            text, count = self._scrub_once(text, gated)
            if not count:
                break
            total += count
        return text, total

    def _scrub_once(self, text: str, gated: bool) -> tuple[str, int]:
        families = _families_for(text) if gated else range(len(_FAMILIES))
        heads: list[_Head] = []
        for family in families:
            head = self._next(family, text, 0, 0)
            if head is not None:
                heads.append(head)
        count = 0
        if heads:
            text, count = self._rewrite(text, heads)
        if self._extra:
            text, extra_count = self._apply_extra(text)
            count += extra_count
        return text, count

    def _next(self, family: int, text: str, position: int, floor: int) -> _Head | None:
        """The next match of ``family`` from ``position`` whose secret starts at ``floor`` or on."""
        search, table = self._sources[family]
        match = search(text, position)
        while match is not None:
            start = match.start() - table[match.lastindex or 0][2]
            if start >= floor:
                return (start, family, match)
            match = search(text, match.start() + 1)
        return None

    def _rewrite(self, text: str, heads: list[_Head]) -> tuple[str, int]:
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
            alternative = self._sources[family][1][match.lastindex or 0]
            spans = self._secret_spans(family, text, match, alternative, start, last)
            if spans is None:
                retry = self._next(family, text, match.start() + 1, start + 1)
                if retry is None:
                    del heads[index]
                else:
                    heads[index] = retry
                continue
            for span_start, span_end in spans:
                pieces.append(text[last:span_start])
                pieces.append(alternative[0])
                last = span_end
                count += 1
            end = max(match.end(), start + 1)
            for position in range(len(heads) - 1, -1, -1):
                if heads[position][0] < end:
                    again = self._next(heads[position][1], text, end, end)
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
    ) -> list[tuple[int, int]] | None:
        """The spans to replace in ``match``, or None when its family's check fails."""
        groups = alternative[1]
        if not groups:
            return [(start, match.end())]
        spans = [span for span in map(match.span, groups) if span[0] >= 0]
        if family == _ASSIGNMENT:
            value = self._secret_value(text, match, alternative[3], floor)
            if value is None:
                return None
            if value:
                spans = [value]
        elif family == _BASIC:
            if not _is_basic_credential(match.group(groups[0])):
                return None
        elif family == _URL and not _follows_url_user(text, match.start()):
            return None
        return spans

    def _secret_value(
        self, text: str, match: re.Match[str], code_group: int, floor: int
    ) -> tuple[int, int] | tuple[()] | None:
        """Check an assignment: None if it is no secret, else the unquoted value's span.

        The empty tuple means "the matched group as it is" (a quoted value).
        """
        start = match.start()
        end = start
        size = len(text)
        while end < size and text[end] in _KEY_CHARS:
            end += 1
        # Read the key back over spaces too (`My API Key: ...`), but never into a span
        # already replaced: a second pass sees a placeholder there, and must decide the
        # same way for scrubbing to be idempotent.
        begin = start
        low = max(floor, start - _MAX_KEY_LENGTH)
        while begin > low and text[begin - 1] in _KEY_CHARS_OR_SPACE:
            begin -= 1
        if self._key_action(text[begin:end]) == _PLAIN:
            return None
        if not code_group:
            return ()
        value_start, value_end = match.span(code_group)
        if value_start < 0:
            return ()  # quoted values are data, whatever they look like
        value = text[value_start:value_end]
        # Closing brackets the value did not open belong to the code around it:
        # `login(password=x)`, `{password: x}`.
        while (
            value
            and value[-1] in _CLOSERS
            and value.count(value[-1]) > value.count(_CLOSERS[value[-1]])
        ):
            value = value[:-1]
        if not value:
            return None
        following = text[value_start + len(value) : value_start + len(value) + 1]
        if value in _STRING_PREFIXES and following in ('"', "'"):  # f"Bearer {token}"
            return None
        if _NOT_A_SECRET.fullmatch(value):
            return None
        reference = _REFERENCE.fullmatch(value)
        if reference and (
            reference.group(2)  # a call or subscript: `api_key=os.environ["KEY"]`
            # A variable named like a secret is a reference to one: `password=password`.
            or self._key_action(reference.group(1)) != _PLAIN
        ):
            return None
        return (value_start, value_start + len(value))

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
        out: dict[Any, Any] | None = {} if fresh else None
        for index, (key, item) in enumerate(value.items()):
            action = self._key_action(key) if isinstance(key, str) else _PLAIN
            if action == _PLAIN:
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
        out: list[Any] | None = [] if fresh else None
        for index, item in enumerate(value):
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
        changes: dict[str, Any] = {}
        data = self._sanitize_data(event.data)
        if data is not event.data:
            changes["data"] = data
        metadata = self._scrub_fields(
            event.metadata, ("app_version", "os", "arch", "locale"), ("custom",)
        )
        if metadata is not event.metadata:
            changes["metadata"] = metadata
        for name in ("page_url", "referrer"):
            current = getattr(event, name)
            if current is not None:
                scrubbed = self._scrub_str(current)
                if scrubbed is not current:
                    changes[name] = scrubbed
        if self._hmac is not None and event.user_id is not None:
            changes["user_id"] = self.hash_user_id(event.user_id)
        return msgspec.structs.replace(event, **changes) if changes else event

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
        """``struct`` with its string and mapping fields scrubbed; itself if unchanged."""
        changes: dict[str, Any] = {}
        for name in strings:
            current = getattr(struct, name)
            if current is not None:
                scrubbed = self._scrub_str(current)
                if scrubbed is not current:
                    changes[name] = scrubbed
        for name in mappings:
            current = getattr(struct, name)
            scrubbed = self._scrub_dict(current, False, 0)
            if scrubbed is not current:
                changes[name] = scrubbed
        return msgspec.structs.replace(struct, **changes) if changes else struct


def _families_for(text: str) -> list[int]:
    """The families that could match ``text``, by substring tests that cost nanoseconds.

    Each test is implied by every match of its family (the families' regexes are
    case-insensitive for ASCII only, so ``str.lower`` cannot hide a keyword).
    """
    families = []
    if len(text) >= _MIN_TOKEN_LENGTH:
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
