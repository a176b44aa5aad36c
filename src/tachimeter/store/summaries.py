"""Summary tables derived from events: daily summaries, sessions, funnels, dashboards.

Each table is kept by a :class:`~tachimeter.store.projection.Projection` that the store
runs in its write transaction with the newly inserted events (already in
``analytics_events``), and that can recompute its tables from the raw rows. Whatever the
order, the batching, duplicates or lateness of events, the incremental tables equal a
rebuild, row for row (the tests check this on seeded data):

======================  ==================================  =================================
projection              tables                              one row per
======================  ==================================  =================================
``DailyEventRollup``    ``analytics_daily_events``,         event name, UTC day (and user)
                        ``analytics_daily_counts``,
                        ``analytics_first_events``          event name, user
``UserActivity``        ``user_activity``,                  user, UTC day (and session)
                        ``user_activity_spans``
``FeatureUsage``        ``feature_usage``,                  feature, UTC day (and user)
                        ``feature_usage_users``
``SessionSummaries``    ``analytics_sessions``,             session
                        ``analytics_session_sources``
``FunnelConversions``   ``funnel_conversions``              funnel entry (step-1 event)
======================  ==================================  =================================

Definitions (docs/schema.md repeats them):

* A **session** is the event's ``session_id`` when it has one (given by the caller or
  assigned by the collector). Events of a user that arrived without one are split into
  sessions by inactivity: a gap of more than 30 minutes starts a new session, whose id is
  ``derived:<id of its first event>``. Columns taken from events (user, device, browser,
  os, country, city, referrer, landing page) come from the earliest event, in (timestamp,
  id) order, that has a value; the exit page from the latest.
* ``user_activity`` counts a user's events of one UTC day; ``session_count`` is the number
  of sessions with an event that day and ``total_duration_ms`` the sum over those sessions
  of the time between their first and last event of the day.
* ``feature_usage`` counts events whose properties have a text ``feature``;
  ``avg_duration_ms`` averages their numeric ``duration_ms`` and ``success_rate`` is the
  share of ``success: true`` among those with a boolean ``success``.
* A **funnel entry** is every event matching a funnel's first step; its row records the
  steps reached from it within the conversion window (see :class:`FunnelDefinition`).

Also here: the property predicates funnels share with event search
(:class:`PropertyFilter`), :func:`refresh_dashboard_metrics` for ``dashboard_metrics`` and
:func:`run_retention`, which deletes data older than the configured ages in small
transactions.
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
import math
import re
import sqlite3
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final, Literal, TypeAlias

import msgspec

from tachimeter.config.settings import AnalyticsConfig, RetentionTarget
from tachimeter.errors import QueryError
from tachimeter.model.events import AnalyticsEvent
from tachimeter.model.rows import EventRow
from tachimeter.model.timestamps import format_timestamp
from tachimeter.store.bulk import execute_rows
from tachimeter.store.projection import Projection, RowCache

__all__ = [
    "SESSION_GAP",
    "DailyEventRollup",
    "DashboardMetric",
    "FeatureUsage",
    "FunnelAttempt",
    "FunnelConversions",
    "FunnelDefinition",
    "FunnelExclusion",
    "FunnelMatcher",
    "FunnelOrder",
    "FunnelStep",
    "PropertyFilter",
    "PropertyOp",
    "RetentionReport",
    "SessionSummaries",
    "TableRetention",
    "UserActivity",
    "backfill_funnel",
    "events_missing_for_rebuild",
    "funnel_from_row",
    "iter_user_events",
    "json_path",
    "parse_property_path",
    "rebuild_summaries",
    "refresh_dashboard_metrics",
    "run_retention",
    "summary_projections",
]

SESSION_GAP: Final = dt.timedelta(minutes=30)
"""Inactivity after which events without a session id start a new session."""

_ONE_US: Final = dt.timedelta(microseconds=1)
_GAP_US: Final = SESSION_GAP // _ONE_US
_EPOCH: Final = dt.datetime(1970, 1, 1)
_DERIVED_PREFIX: Final = "derived:"
# Ids of summary rows are uuid5 names under this namespace: the same row always gets the
# same id, so an incremental table and a rebuild compare equal, ids included.
_ROW_NAMESPACE: Final = uuid.UUID("6f1d3c2e-8a4b-5c6d-9e0f-1a2b3c4d5e6f")
# SQLite's default limit on bound parameters is 32766; chunks of 500 stay far below it
# and keep each statement's plan an index lookup.
_CHUNK: Final = 500

_json_decode = msgspec.json.Decoder().decode
_json_encode = msgspec.json.Encoder(order="sorted").encode

# Rows the projections keep in memory between batches (RowCache): enough for the
# active users, sessions and days of a busy server, a few tens of MB at most.
_FIRSTS_CACHED: Final = 100_000
_DAYS_CACHED: Final = 20_000
_SESSIONS_CACHED: Final = 20_000


def _to_us(text: str) -> int:
    """Microseconds since the epoch of a stored ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` timestamp."""
    return (dt.datetime.fromisoformat(text[:26]) - _EPOCH) // _ONE_US


def _from_us(us: int) -> str:
    """The stored text form of an instant in microseconds since the epoch."""
    return (_EPOCH + dt.timedelta(microseconds=us)).isoformat(timespec="microseconds") + "Z"


def _row_id(*parts: str) -> str:
    return str(uuid.uuid5(_ROW_NAMESPACE, "\x00".join(parts)))


def _decode(text: str | None) -> Any:
    """Decoded JSON, or None for NULL or text that is not JSON (rows from other tools)."""
    if text is None:
        return None
    try:
        return _json_decode(text)
    except msgspec.DecodeError:
        return None


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# -- property predicates -------------------------------------------------------------------

PropertyOp: TypeAlias = Literal[
    "eq", "ne", "in", "not_in", "contains", "gt", "gte", "lt", "lte", "exists", "not_exists"
]
"""Comparisons a :class:`PropertyFilter` can make."""

_PATH_SYNTAX: Final = (
    'use dot-separated keys (model, usage.input), "double quotes" around a key that '
    'contains dots (like "gen_ai.request.model") and [n] for array items'
)
_BARE_KEY: Final = re.compile(r"[^\W\d][\w\-]*")
_QUOTED_KEY: Final = re.compile(r'"([^"\\\x00-\x1f]+)"')
_INDEX: Final = re.compile(r"\[(\d{1,6})\]")
_MAX_PATH: Final = 256
_MAX_DEPTH: Final = 16
_MISSING: Final[Any] = object()


@functools.lru_cache(maxsize=1024)
def parse_property_path(path: str) -> tuple[str | int, ...]:
    """Split a property path into keys and array indexes; ``QueryError`` says what is wrong.

    >>> parse_property_path('"gen_ai.request.model"')
    ('gen_ai.request.model',)
    >>> parse_property_path("items[0].name")
    ('items', 0, 'name')
    """
    if not isinstance(path, str) or not path or len(path) > _MAX_PATH:
        raise QueryError(
            f"property path {path!r} must be a non-empty string of at most {_MAX_PATH} "
            f"characters; {_PATH_SYNTAX}"
        )
    segments: list[str | int] = []
    pos = 0
    while pos < len(path):
        if path[pos] == "[" and segments:
            m = _INDEX.match(path, pos)
            if m is None:
                raise QueryError(
                    f"property path {path!r}: bad array index at {pos}; {_PATH_SYNTAX}"
                )
            segments.append(int(m.group(1)))
            pos = m.end()
            continue
        if segments:
            if path[pos] != ".":
                raise QueryError(f"property path {path!r}: expected '.' at {pos}; {_PATH_SYNTAX}")
            pos += 1
        quoted = _QUOTED_KEY.match(path, pos)
        if quoted is not None:
            segments.append(quoted.group(1))
            pos = quoted.end()
            continue
        bare = _BARE_KEY.match(path, pos)
        if bare is None:
            raise QueryError(f"property path {path!r}: bad key at {pos}; {_PATH_SYNTAX}")
        segments.append(bare.group(0))
        pos = bare.end()
    if len(segments) > _MAX_DEPTH:
        raise QueryError(f"property path {path!r} is deeper than {_MAX_DEPTH} levels")
    return tuple(segments)


def json_path(segments: Iterable[str | int]) -> str:
    """SQLite JSON path (``$."key"[0]``) of parsed segments; keys are always quoted."""
    return "$" + "".join(f"[{s}]" if isinstance(s, int) else f'."{s}"' for s in segments)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_scalar(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, str | int | bool)


def _same(stored: Any, wanted: Any) -> bool:
    """JSON equality as filters define it: booleans only equal booleans, numbers compare
    numerically (1 == 1.0), text compares exactly, null equals null."""
    if wanted is None:
        return stored is None
    if isinstance(wanted, bool):
        return isinstance(stored, bool) and stored is wanted
    if isinstance(wanted, int | float):
        return _is_number(stored) and stored == wanted
    return isinstance(stored, str) and stored == wanted


class PropertyFilter(msgspec.Struct, frozen=True, omit_defaults=True):
    """A predicate on one JSON property of an event (its ``properties`` column).

    ``path`` is ``key``, ``key.nested``, ``"key.with.dots"`` or ``list[0]``. Operators:
    ``eq``/``ne`` (booleans equal only booleans, numbers compare numerically, ``None``
    means JSON null; ``ne`` and ``not_in`` also match events without the property),
    ``in``/``not_in`` (a list of values), ``contains`` (a substring of a text value, or
    an element of an array), ``gt``/``gte``/``lt``/``lte`` (numbers only: a text "10"
    never compares), ``exists``/``not_exists`` (the key is present, even as null).

    >>> f = PropertyFilter("model", "in", ["gpt-4o", "claude-sonnet-4"])
    >>> f.matches({"model": "gpt-4o"}), f.matches({})
    (True, False)
    >>> PropertyFilter('"gen_ai.usage.input_tokens"', "gte", 1000).matches(
    ...     {"gen_ai.usage.input_tokens": 1500})
    True
    """

    path: str
    op: PropertyOp = "eq"
    value: Any = None

    def __post_init__(self) -> None:
        parse_property_path(self.path)
        op, value, where = self.op, self.value, f"property filter on {self.path!r}"
        if op in ("eq", "ne"):
            if not _is_scalar(value):
                raise QueryError(
                    f"{where}: {op!r} needs a text, number, boolean or None value, got "
                    f"{value!r}; use 'in' for a list of values"
                )
        elif op in ("in", "not_in"):
            if (
                not isinstance(value, list | tuple)
                or not value
                or not all(_is_scalar(v) for v in value)
            ):
                raise QueryError(
                    f"{where}: {op!r} needs a non-empty list of text, number, boolean or "
                    f"None values, got {value!r}"
                )
            if isinstance(value, list):
                msgspec.structs.force_setattr(self, "value", tuple(value))
        elif op == "contains":
            if value is None or not _is_scalar(value):
                raise QueryError(
                    f"{where}: 'contains' needs a text, number or boolean value, got {value!r}"
                )
        elif op in ("gt", "gte", "lt", "lte"):
            if not _is_number(value) or not math.isfinite(value):
                raise QueryError(
                    f"{where}: {op!r} needs a finite number, got {value!r}; compare text "
                    "with 'eq', 'in' or 'contains'"
                )
        elif op in ("exists", "not_exists"):
            if value is not None:
                raise QueryError(f"{where}: {op!r} takes no value, got {value!r}")
        else:
            raise QueryError(
                f"{where}: unknown op {op!r}; use one of eq, ne, in, not_in, contains, "
                "gt, gte, lt, lte, exists, not_exists"
            )

    @property
    def segments(self) -> tuple[str | int, ...]:
        """The parsed path."""
        return parse_property_path(self.path)

    def matches(self, properties: Any) -> bool:
        """Whether decoded ``properties`` satisfy this predicate."""
        stored = properties
        for segment in self.segments:
            if isinstance(segment, int):
                if not isinstance(stored, list) or segment >= len(stored):
                    stored = _MISSING
                    break
                stored = stored[segment]
            else:
                if not isinstance(stored, dict) or segment not in stored:
                    stored = _MISSING
                    break
                stored = stored[segment]
        op, value = self.op, self.value
        if op == "exists":
            return stored is not _MISSING
        if op == "not_exists":
            return stored is _MISSING
        if op in ("ne", "not_in"):
            if stored is _MISSING:
                return True
            values = (value,) if op == "ne" else value
            return not any(_same(stored, v) for v in values)
        if stored is _MISSING:
            return False
        if op == "eq":
            return _same(stored, value)
        if op == "in":
            return any(_same(stored, v) for v in value)
        if op == "contains":
            if isinstance(stored, str) and isinstance(value, str):
                return value in stored
            return isinstance(stored, list) and any(_same(item, value) for item in stored)
        if not _is_number(stored):
            return False
        if op == "gt":
            return bool(stored > value)
        if op == "gte":
            return bool(stored >= value)
        if op == "lt":
            return bool(stored < value)
        return bool(stored <= value)


# -- funnel definitions ----------------------------------------------------------------------

FunnelOrder: TypeAlias = Literal["ordered", "strict"]
"""``ordered``: steps in order, other events may come between them; ``strict``: each step
is the user's very next event after the previous one."""

_MAX_STEPS: Final = 20
_MAX_WINDOW: Final = dt.timedelta(days=366)


def _freeze(owner: msgspec.Struct, field: str, kind: type, where: str) -> None:
    """Store a sequence field as a tuple of ``kind`` (lists compare unequal to tuples)."""
    value = getattr(owner, field)
    if not isinstance(value, list | tuple) or not all(isinstance(v, kind) for v in value):
        raise QueryError(f"{where} must be a sequence of {kind.__name__}, got {value!r}")
    if isinstance(value, list):
        msgspec.structs.force_setattr(owner, field, tuple(value))


class FunnelStep(msgspec.Struct, frozen=True, omit_defaults=True):
    """One funnel step: an event name and optional property filters (all must match).

    >>> FunnelStep("mission_completed", (PropertyFilter("model", "eq", "gpt-4o"),)).event
    'mission_completed'
    """

    event: str
    where: tuple[PropertyFilter, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.event, str) or not self.event:
            raise QueryError(f"funnel step event must be a non-empty name, got {self.event!r}")
        _freeze(self, "where", PropertyFilter, f"step {self.event!r}: where")


class FunnelExclusion(msgspec.Struct, frozen=True, omit_defaults=True):
    """An event that disqualifies an entry when it happens between two steps.

    Between ``from_step`` and ``to_step`` (0-based; None is the last step) means after the
    ``from_step`` event and before the ``to_step`` event, or before the end of the
    conversion window when the entry never reached ``to_step``.

    >>> FunnelExclusion("mission_failed", from_step=1).to_step is None
    True
    """

    event: str
    from_step: int = 0
    to_step: int | None = None
    where: tuple[PropertyFilter, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.event, str) or not self.event:
            raise QueryError(f"exclusion event must be a non-empty name, got {self.event!r}")
        _freeze(self, "where", PropertyFilter, f"exclusion {self.event!r}: where")


class FunnelDefinition(msgspec.Struct, frozen=True, kw_only=True):
    """A funnel: ordered steps, a conversion window, an order mode, exclusion steps.

    Each event matching step 1 is an entry. From an entry, step k+1 is the first later
    event (in (timestamp, id) order) matching it, no later than ``conversion_window``
    after the entry; in ``strict`` order it must be the user's very next event. An
    entry with an exclusion event between its exclusion's steps does not count. Per user
    and time range, the entry that got furthest (then the earliest) is the user's result.

    >>> f = FunnelDefinition(name="missions", steps=(FunnelStep("mission_created"),
    ...     FunnelStep("mission_completed")), conversion_window=dt.timedelta(hours=1))
    >>> f.order, len(f.steps)
    ('ordered', 2)
    """

    name: str
    steps: tuple[FunnelStep, ...]
    conversion_window: dt.timedelta = dt.timedelta(days=1)
    order: FunnelOrder = "ordered"
    exclusions: tuple[FunnelExclusion, ...] = ()
    description: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise QueryError(f"funnel name must be non-empty text, got {self.name!r}")
        _freeze(self, "steps", FunnelStep, f"funnel {self.name!r}: steps")
        _freeze(self, "exclusions", FunnelExclusion, f"funnel {self.name!r}: exclusions")
        if not 2 <= len(self.steps) <= _MAX_STEPS:
            raise QueryError(
                f"funnel {self.name!r} needs 2 to {_MAX_STEPS} steps, got {len(self.steps)}"
            )
        if self.order not in ("ordered", "strict"):
            raise QueryError(
                f"funnel {self.name!r}: order must be 'ordered' or 'strict', got {self.order!r}"
            )
        window = self.conversion_window
        if not isinstance(window, dt.timedelta) or not (dt.timedelta(0) < window <= _MAX_WINDOW):
            shown = (
                f"{window.total_seconds():.0f} s"
                if isinstance(window, dt.timedelta)
                else repr(window)
            )
            raise QueryError(
                f"funnel {self.name!r}: conversion_window must be above zero and at most "
                f"{_MAX_WINDOW.days} days ({_MAX_WINDOW.total_seconds():.0f} s), got {shown}"
            )
        if window % dt.timedelta(seconds=1):
            raise QueryError(
                f"funnel {self.name!r}: conversion_window must be whole seconds, got "
                f"{window.total_seconds()} s"
            )
        last = len(self.steps) - 1
        for i, exclusion in enumerate(self.exclusions):
            to_step = last if exclusion.to_step is None else exclusion.to_step
            if not 0 <= exclusion.from_step < to_step <= last:
                raise QueryError(
                    f"funnel {self.name!r}: exclusion {i} ({exclusion.event!r}) needs "
                    f"0 <= from_step < to_step <= {last}, got from_step={exclusion.from_step}, "
                    f"to_step={exclusion.to_step}"
                )
            for k, step in enumerate(self.steps):
                if step.event == exclusion.event and step.where == exclusion.where:
                    raise QueryError(
                        f"funnel {self.name!r}: exclusion {i} ({exclusion.event!r}) is the same "
                        f"event as step {k}; add a property filter to tell them apart"
                    )

    @property
    def window_seconds(self) -> int:
        """The conversion window in whole seconds."""
        return int(self.conversion_window.total_seconds())


class FunnelAttempt(msgspec.Struct, frozen=True):
    """What one entry reached: the timestamps and ids of the matched steps, in order."""

    user_id: str
    session_id: str | None
    step_timestamps: tuple[str, ...]
    entry_id: str

    @property
    def started_at(self) -> str:
        """Timestamp of the entry (step 1)."""
        return self.step_timestamps[0]

    @property
    def reached(self) -> int:
        """Number of steps reached (1 = entered only)."""
        return len(self.step_timestamps)


# One event of a user, as the funnel matcher reads it: (timestamp, id, name, properties
# JSON text or None, session id or None).
_FunnelEvent: TypeAlias = tuple[str, str, str, str | None, str | None]


class FunnelMatcher:
    """Computes a funnel's entries from one user's events (sorted by timestamp, id).

    >>> f = FunnelDefinition(name="f", steps=(FunnelStep("a"), FunnelStep("b")))
    >>> events = [("2024-01-01T00:00:00.000000Z", "1", "a", None, None),
    ...           ("2024-01-01T00:10:00.000000Z", "2", "b", None, None)]
    >>> [a.reached for a in FunnelMatcher(f).attempts("u1", events)]
    [2]
    """

    __slots__ = ("_exclusions", "_steps", "definition", "n_steps", "names", "strict", "window_us")

    def __init__(self, definition: FunnelDefinition) -> None:
        self.definition = definition
        self.window_us = definition.window_seconds * 1_000_000
        self.strict = definition.order == "strict"
        self.n_steps = len(definition.steps)
        last = self.n_steps - 1
        self._steps = tuple((s.event, s.where) for s in definition.steps)
        self._exclusions = tuple(
            (x.event, x.where, x.from_step, last if x.to_step is None else x.to_step)
            for x in definition.exclusions
        )
        # Strict order looks at every event of a user; ordered mode only at these names.
        self.names: frozenset[str] | None = (
            None
            if self.strict
            else frozenset(s.event for s in definition.steps)
            | frozenset(x.event for x in definition.exclusions)
        )

    def _classify(self, name: str, properties: str | None) -> tuple[list[int], list[int]]:
        decoded: Any = _MISSING
        steps: list[int] = []
        exclusions: list[int] = []
        for k, (event, where) in enumerate(self._steps):
            if event != name:
                continue
            if where:
                if decoded is _MISSING:
                    decoded = _decode(properties)
                if not all(f.matches(decoded) for f in where):
                    continue
            steps.append(k)
        for x, (event, where, _, _) in enumerate(self._exclusions):
            if event != name:
                continue
            if where:
                if decoded is _MISSING:
                    decoded = _decode(properties)
                if not all(f.matches(decoded) for f in where):
                    continue
            exclusions.append(x)
        return steps, exclusions

    def attempts(
        self,
        user_id: str,
        events: Sequence[_FunnelEvent],
        entries_from: str | None = None,
        entries_before: str | None = None,
    ) -> list[FunnelAttempt]:
        """Every entry (optionally with ``entries_from <= timestamp < entries_before``)."""
        n_steps = len(self._steps)
        positions: list[list[int]] = [[] for _ in range(n_steps)]
        excluded_at: list[list[int]] = [[] for _ in self._exclusions]
        matched: list[list[int]] = []
        times: list[int] = []
        for i, (ts, _, name, properties, _) in enumerate(events):
            steps, exclusions = self._classify(name, properties)
            for k in steps:
                positions[k].append(i)
            for x in exclusions:
                excluded_at[x].append(i)
            matched.append(steps)
            times.append(_to_us(ts))
        out: list[FunnelAttempt] = []
        for i in positions[0]:
            ts = events[i][0]
            if entries_from is not None and ts < entries_from:
                continue
            if entries_before is not None and ts >= entries_before:
                continue
            deadline = times[i] + self.window_us
            reached = [i]
            current = i
            for k in range(1, n_steps):
                if self.strict:
                    nxt = current + 1
                    if nxt >= len(events) or k not in matched[nxt] or times[nxt] > deadline:
                        break
                else:
                    candidates = positions[k]
                    j = bisect.bisect_right(candidates, current)
                    if j >= len(candidates) or times[candidates[j]] > deadline:
                        break
                    nxt = candidates[j]
                reached.append(nxt)
                current = nxt
            if self._is_excluded(reached, excluded_at, times, deadline):
                continue
            out.append(
                FunnelAttempt(
                    user_id=user_id,
                    session_id=events[i][4],
                    step_timestamps=tuple(events[j][0] for j in reached),
                    entry_id=events[i][1],
                )
            )
        return out

    def _is_excluded(
        self,
        reached: list[int],
        excluded_at: list[list[int]],
        times: list[int],
        deadline: int,
    ) -> bool:
        for x, (_, _, from_step, to_step) in enumerate(self._exclusions):
            hits = excluded_at[x]
            if not hits or len(reached) <= from_step:
                continue
            lo = reached[from_step]
            if len(reached) > to_step:
                hi = reached[to_step]  # exclusive: events strictly before the to_step event
            else:
                hi = bisect.bisect_right(times, deadline)  # up to the end of the window
            j = bisect.bisect_right(hits, lo)
            if j < len(hits) and hits[j] < hi:
                return True
        return False


def funnel_from_row(
    name: str,
    description: str | None,
    steps: str,
    window_seconds: int,
    order: str,
    exclusions: str | None,
) -> FunnelDefinition:
    """The definition stored in a ``funnels`` row (its columns after ``id``)."""
    return msgspec.convert(
        {
            "name": name,
            "description": description,
            "steps": _json_decode(steps),
            "conversion_window": dt.timedelta(seconds=window_seconds),
            "order": order,
            "exclusions": _json_decode(exclusions) if exclusions else [],
        },
        FunnelDefinition,
    )


# -- projections ----------------------------------------------------------------------------


class DailyEventRollup:
    """Keeps ``analytics_daily_events`` (events per name, UTC day and user or ''),
    ``analytics_daily_counts`` (events per UTC day and name) and ``analytics_first_events``
    (each user's first day of each event).

    >>> DailyEventRollup().name
    'daily_event_rollup'
    """

    __slots__ = ("_firsts",)

    _UPSERT = (
        "INSERT INTO analytics_daily_events (event_name, date, user_id, event_count) "
        "VALUES (?, ?, ?, ?) ON CONFLICT (event_name, date, user_id) "
        "DO UPDATE SET event_count = event_count + excluded.event_count"
    )

    _UPSERT_COUNT = (
        "INSERT INTO analytics_daily_counts (date, event_name, event_count) VALUES (?, ?, ?) "
        "ON CONFLICT (date, event_name) DO UPDATE SET event_count = event_count + "
        "excluded.event_count"
    )

    _UPSERT_FIRST = (
        "INSERT INTO analytics_first_events (event_name, user_id, first_date) VALUES (?, ?, ?) "
        "ON CONFLICT (event_name, user_id) DO UPDATE SET first_date = excluded.first_date "
        "WHERE excluded.first_date < first_date"
    )

    def __init__(self) -> None:
        # (event name, user) -> a first date known to be stored: a batch's repeat users
        # need no upsert. 100 000 pairs are a few MB.
        self._firsts: RowCache[tuple[str, str], str] = RowCache(_FIRSTS_CACHED)

    @property
    def name(self) -> str:
        """Projection name."""
        return "daily_event_rollup"

    def discard(self) -> None:
        """Forget the cached first dates (the store rolled back)."""
        self._firsts.clear()

    def apply(
        self,
        conn: sqlite3.Connection,
        events: Sequence[AnalyticsEvent],
        rows: Sequence[EventRow],
    ) -> None:
        """Add the batch's counts."""
        counts: dict[tuple[str, str, str], int] = {}
        get = counts.get
        for r in rows:
            key = (r.event_name, r.timestamp[:10], r.user_id or "")
            counts[key] = get(key, 0) + 1
        execute_rows(conn, self._UPSERT, sorted((*key, n) for key, n in counts.items()))
        per_day: dict[tuple[str, str], int] = {}
        firsts: dict[tuple[str, str], str] = {}
        for (name, date, user_id), n in counts.items():
            day_key = (date, name)
            per_day[day_key] = per_day.get(day_key, 0) + n
            if user_id:
                first_key = (name, user_id)
                held = firsts.get(first_key)
                if held is None or date < held:
                    firsts[first_key] = date
        execute_rows(conn, self._UPSERT_COUNT, sorted((*key, n) for key, n in per_day.items()))
        cache = self._firsts
        cache.check(conn)
        changed: list[tuple[str, str, str]] = []
        for pair, date in firsts.items():
            known = cache.get(pair)
            if known is None or date < known:
                changed.append((*pair, date))
                cache.put(pair, date if known is None else min(known, date))
        execute_rows(conn, self._UPSERT_FIRST, sorted(changed))

    def rebuild(self, conn: sqlite3.Connection) -> None:
        """Recount from ``analytics_events``."""
        self._firsts.clear()
        conn.execute("DELETE FROM analytics_daily_events")
        conn.execute("DELETE FROM analytics_daily_counts")
        conn.execute("DELETE FROM analytics_first_events")
        conn.execute(
            "INSERT INTO analytics_daily_events (event_name, date, user_id, event_count) "
            "SELECT event_name, substr(timestamp, 1, 10), coalesce(user_id, ''), count(*) "
            "FROM analytics_events GROUP BY 1, 2, 3"
        )
        conn.execute(
            "INSERT INTO analytics_daily_counts (date, event_name, event_count) "
            "SELECT date, event_name, sum(event_count) FROM analytics_daily_events GROUP BY 1, 2"
        )
        conn.execute(
            "INSERT INTO analytics_first_events (event_name, user_id, first_date) "
            "SELECT event_name, user_id, min(date) FROM analytics_daily_events "
            "WHERE user_id <> '' GROUP BY 1, 2"
        )


class _UserDay:
    """One user's events of one UTC day, accumulated in any order.

    Sessions with an id keep their first and last instant of the day; events without one
    form inactivity segments (gaps over 30 minutes split them), kept as intervals: a new
    instant joins every interval within 30 minutes of it, so any arrival order ends with
    the segments a sorted sweep would find.
    """

    __slots__ = ("breakdown", "count", "first", "given", "last", "segments")

    def __init__(self) -> None:
        self.count = 0
        self.first = ""
        self.last = ""
        self.breakdown: Counter[str] = Counter()
        self.given: dict[str, list[str]] = {}
        self.segments: list[list[int]] = []

    def add(self, ts: str, name: str, session_id: str | None) -> None:
        # Once per stored event: _widen inlined for one instant.
        if not self.count:
            self.first = self.last = ts
        elif ts < self.first:
            self.first = ts
        elif ts > self.last:
            self.last = ts
        self.count += 1
        self.breakdown[name] += 1
        if session_id is not None:
            span = self.given.get(session_id)
            if span is None:
                self.given[session_id] = [ts, ts]
            elif ts < span[0]:
                span[0] = ts
            elif ts > span[1]:
                span[1] = ts
        else:
            self._join(_to_us(ts), _to_us(ts))

    def _widen(self, session_id: str, first: str, last: str) -> None:
        span = self.given.get(session_id)
        if span is None:
            self.given[session_id] = [first, last]
        else:
            span[0] = min(span[0], first)
            span[1] = max(span[1], last)

    def _join(self, lo: int, hi: int) -> None:
        keep: list[list[int]] = []
        for segment in self.segments:
            if segment[1] >= lo - _GAP_US and segment[0] <= hi + _GAP_US:
                lo, hi = min(lo, segment[0]), max(hi, segment[1])
            else:
                keep.append(segment)
        keep.append([lo, hi])
        self.segments = keep

    def merge_stored(self, row: Sequence[Any], spans: Iterable[Sequence[Any]]) -> None:
        """Fold in a stored ``user_activity`` row and its ``user_activity_spans``."""
        count, first, last, breakdown = row
        if not self.count or first < self.first:
            self.first = first
        if not self.count or last > self.last:
            self.last = last
        self.count += count
        self.breakdown.update(_decode(breakdown) or {})
        for kind, key, span_first, span_last in spans:
            if kind == 0:
                self._widen(key, span_first, span_last)
            else:
                self._join(_to_us(span_first), _to_us(span_last))

    def row(self, user_id: str, date: str) -> tuple[Any, ...]:
        duration_ms = sum((_to_us(b) - _to_us(a)) // 1000 for a, b in self.given.values())
        duration_ms += sum((hi - lo) // 1000 for lo, hi in self.segments)
        return (
            _row_id("user_activity", user_id, date),
            user_id,
            date,
            len(self.given) + len(self.segments),
            self.count,
            duration_ms,
            self.first,
            self.last,
            _json_encode(dict(self.breakdown)).decode(),
        )

    def spans(self, user_id: str, date: str) -> list[tuple[Any, ...]]:
        out = [(user_id, date, 0, k, a, b) for k, (a, b) in self.given.items()]
        for lo, hi in self.segments:
            first = _from_us(lo)
            out.append((user_id, date, 1, first, first, _from_us(hi)))
        return out


def _day_keys_sql(n: int) -> str:
    return ", ".join(["(?, ?)"] * n)


class UserActivity:
    """Keeps ``user_activity`` (one row per user and UTC day) and ``user_activity_spans``
    (the sessions and inactivity segments behind each row's session count and duration),
    merging each batch into the stored rows without rereading events.

    >>> UserActivity().name
    'user_activity'
    """

    __slots__ = ("_days",)

    _INSERT = (
        "INSERT OR REPLACE INTO user_activity (id, user_id, date, session_count, event_count, "
        "total_duration_ms, first_seen_at, last_seen_at, events_breakdown) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    # Merged rows overwrite their unindexed columns in place (REPLACE would delete and
    # re-insert the row and its five index entries).
    _UPSERT = (
        "INSERT INTO user_activity (id, user_id, date, session_count, event_count, "
        "total_duration_ms, first_seen_at, last_seen_at, events_breakdown) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
        "session_count = excluded.session_count, event_count = excluded.event_count, "
        "total_duration_ms = excluded.total_duration_ms, "
        "first_seen_at = excluded.first_seen_at, last_seen_at = excluded.last_seen_at, "
        "events_breakdown = excluded.events_breakdown"
    )
    _INSERT_SPAN = (
        "INSERT INTO user_activity_spans (user_id, date, kind, span_key, first_at, last_at) "
        "VALUES (?, ?, ?, ?, ?, ?)"
    )
    _UPSERT_SPAN = (
        "INSERT INTO user_activity_spans (user_id, date, kind, span_key, first_at, last_at) "
        "VALUES (?, ?, 0, ?, ?, ?) ON CONFLICT (user_id, date, kind, span_key) DO UPDATE SET "
        "first_at = excluded.first_at, last_at = excluded.last_at"
    )

    def __init__(self) -> None:
        # (user, day) -> the day as stored: the next batch of an active user merges into
        # it without reading the row and its spans back.
        self._days: RowCache[tuple[str, str], _UserDay] = RowCache(_DAYS_CACHED)

    @property
    def name(self) -> str:
        """Projection name."""
        return "user_activity"

    def discard(self) -> None:
        """Forget the cached days (the store rolled back)."""
        self._days.clear()

    def apply(
        self,
        conn: sqlite3.Connection,
        events: Sequence[AnalyticsEvent],
        rows: Sequence[EventRow],
    ) -> None:
        """Merge the batch into the (user, day) rows it touches."""
        cache = self._days
        cache.check(conn)
        days: dict[tuple[str, str], _UserDay] = {}
        missing: dict[tuple[str, str], _UserDay] = {}
        # Per touched day: the session ids whose span changed; None when events without
        # a session id changed its inactivity segments (rewritten whole).
        touched: dict[tuple[str, str], set[str | None]] = {}
        seen = days.get
        for r in rows:
            user_id = r.user_id
            if user_id is None:
                continue
            ts = r.timestamp
            key = (user_id, ts[:10])
            day = seen(key)
            if day is None:
                day = cache.get(key)
                if day is None:
                    day = missing[key] = _UserDay()
                days[key] = day
                sessions = touched[key] = set()
            else:
                sessions = touched[key]
            session_id = r.session_id
            day.add(ts, r.event_name, session_id)
            sessions.add(session_id)
        # Each chunk: 2 parameters per key, far below SQLite's limit.
        for chunk in _chunks(sorted(missing), 250):
            params = [v for key in chunk for v in key]
            wanted = _day_keys_sql(len(chunk))
            spans: dict[tuple[str, str], list[tuple[Any, ...]]] = defaultdict(list)
            # Joined to the keys, not `(user_id, date) IN (VALUES ...)`: SQLite answers
            # that row-value IN by scanning the whole table, a cost that grew with the
            # store (at 1M events it was half of this projection's time).
            for user_id, date, *span in conn.execute(
                "SELECT s.user_id, s.date, s.kind, s.span_key, s.first_at, s.last_at "
                f"FROM (VALUES {wanted}) AS k JOIN user_activity_spans AS s "
                "ON s.user_id = k.column1 AND s.date = k.column2",
                params,
            ):
                spans[(user_id, date)].append(span)
            for user_id, date, *stored in conn.execute(
                "SELECT a.user_id, a.date, a.event_count, a.first_seen_at, a.last_seen_at, "
                f"a.events_breakdown FROM (VALUES {wanted}) AS k JOIN user_activity AS a "
                "ON a.user_id = k.column1 AND a.date = k.column2",
                params,
            ):
                missing[(user_id, date)].merge_stored(stored, spans.get((user_id, date), ()))
        keys = sorted(days)
        execute_rows(conn, self._UPSERT, [days[k].row(*k) for k in keys])
        given_spans: list[tuple[Any, ...]] = []
        resegmented: list[tuple[str, str]] = []
        for key in keys:
            day = days[key]
            for session_id in touched[key]:
                if session_id is None:
                    resegmented.append(key)
                else:
                    first, last = day.given[session_id]
                    given_spans.append((*key, session_id, first, last))
            cache.put(key, day)
        execute_rows(conn, self._UPSERT_SPAN, sorted(given_spans))
        if resegmented:
            conn.executemany(
                "DELETE FROM user_activity_spans WHERE user_id = ? AND date = ? AND kind = 1",
                resegmented,
            )
            execute_rows(
                conn,
                self._INSERT_SPAN,
                [s for k in resegmented for s in days[k].spans(*k) if s[2] == 1],
            )

    def rebuild(self, conn: sqlite3.Connection) -> None:
        """Recompute every row from ``analytics_events``."""
        self._days.clear()
        conn.execute("DELETE FROM user_activity")
        conn.execute("DELETE FROM user_activity_spans")
        cursor = conn.execute(
            "SELECT user_id, timestamp, event_name, session_id FROM analytics_events "
            "WHERE user_id IS NOT NULL ORDER BY user_id, timestamp"
        )
        key: tuple[str, str] | None = None
        day = _UserDay()
        for user_id, ts, name, session_id in cursor:
            day_key = (user_id, ts[:10])
            if day_key != key:
                if key is not None:
                    self._write(conn, key, day)
                key, day = day_key, _UserDay()
            day.add(ts, name, session_id)
        if key is not None:
            self._write(conn, key, day)

    def _write(self, conn: sqlite3.Connection, key: tuple[str, str], day: _UserDay) -> None:
        conn.execute(self._INSERT, day.row(*key))
        conn.executemany(self._INSERT_SPAN, day.spans(*key))


def _feature_fields(
    properties: str | None, data: Any = _MISSING
) -> tuple[str, int | None, bool | None] | None:
    """(feature, duration in microseconds, success) of a feature-usage event, else None.

    ``data``: the event's key-value properties in memory, when at hand (the same values
    as decoding ``properties``, without the decoding).
    """
    # Cheap test first: most events are not feature usage and need no JSON decoding.
    if properties is None or '"feature"' not in properties:
        return None
    if data is _MISSING:
        data = _decode(properties)
    if not isinstance(data, dict):
        return None
    feature = data.get("feature")
    if not isinstance(feature, str):
        return None
    duration: Any = data.get("duration_ms")
    duration_us = (
        round(duration * 1000)
        if _is_number(duration) and math.isfinite(duration) and duration >= 0
        else None
    )
    success = data.get("success")
    return feature, duration_us, success if isinstance(success, bool) else None


class _FeatureDay:
    """A feature's totals of one day, as in its ``feature_usage`` row."""

    __slots__ = ("duration_count", "duration_us", "outcomes", "successes", "usage", "users")

    def __init__(self) -> None:
        self.usage = self.duration_us = self.duration_count = 0
        self.successes = self.outcomes = 0
        self.users: set[str] = set()

    @classmethod
    def load(cls, conn: sqlite3.Connection, feature: str, date: str) -> _FeatureDay:
        day = cls()
        for user_id, *part in conn.execute(
            "SELECT user_id, usage_count, duration_us_sum, duration_count, success_count, "
            "outcome_count FROM feature_usage_users WHERE feature_name = ? AND date = ?",
            (feature, date),
        ):
            day.add(user_id, part)
        return day

    def add(self, user_id: str, part: Sequence[int]) -> None:
        self.usage += part[0]
        self.duration_us += part[1]
        self.duration_count += part[2]
        self.successes += part[3]
        self.outcomes += part[4]
        if user_id:
            self.users.add(user_id)

    def row(self, feature: str, date: str) -> tuple[Any, ...]:
        # The same arithmetic as FeatureUsage._SUMMARIZE, so both give equal floats.
        return (
            _row_id("feature_usage", feature, date),
            feature,
            date,
            self.usage,
            len(self.users),
            self.duration_us / 1000.0 / self.duration_count if self.duration_count else None,
            float(self.successes) / self.outcomes if self.outcomes else None,
        )


class FeatureUsage:
    """Keeps ``feature_usage`` (and its per-user parts in ``feature_usage_users``).

    >>> FeatureUsage().name
    'feature_usage'
    """

    __slots__ = ("_days",)

    _UPSERT_USER = (
        "INSERT INTO feature_usage_users (feature_name, date, user_id, usage_count, "
        "duration_us_sum, duration_count, success_count, outcome_count) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (feature_name, date, user_id) DO UPDATE SET "
        "usage_count = usage_count + excluded.usage_count, "
        "duration_us_sum = duration_us_sum + excluded.duration_us_sum, "
        "duration_count = duration_count + excluded.duration_count, "
        "success_count = success_count + excluded.success_count, "
        "outcome_count = outcome_count + excluded.outcome_count"
    )
    _SUMMARIZE = (
        "INSERT OR REPLACE INTO feature_usage (id, feature_name, date, usage_count, "
        "unique_users, avg_duration_ms, success_rate) "
        "SELECT ?, feature_name, date, sum(usage_count), sum(user_id <> ''), "
        "CASE WHEN sum(duration_count) > 0 "
        "THEN sum(duration_us_sum) / 1000.0 / sum(duration_count) END, "
        "CASE WHEN sum(outcome_count) > 0 "
        "THEN CAST(sum(success_count) AS REAL) / sum(outcome_count) END "
        "FROM feature_usage_users WHERE feature_name = ? AND date = ? "
        "GROUP BY feature_name, date"
    )

    _UPSERT_DAY = (
        "INSERT INTO feature_usage (id, feature_name, date, usage_count, unique_users, "
        "avg_duration_ms, success_rate) VALUES (?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET usage_count = excluded.usage_count, "
        "unique_users = excluded.unique_users, avg_duration_ms = excluded.avg_duration_ms, "
        "success_rate = excluded.success_rate"
    )

    def __init__(self) -> None:
        # (feature, day) -> its totals as stored, so a batch updates the summary row
        # without summing every user's part again.
        self._days: RowCache[tuple[str, str], _FeatureDay] = RowCache(_DAYS_CACHED)

    @property
    def name(self) -> str:
        """Projection name."""
        return "feature_usage"

    def discard(self) -> None:
        """Forget the cached totals (the store rolled back)."""
        self._days.clear()

    @staticmethod
    def _fold(
        rows: Iterable[tuple[Any, ...]],
    ) -> dict[tuple[str, str, str], list[int]]:
        parts: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
        for ts, user_id, properties, *data in rows:
            fields = _feature_fields(properties, *data)
            if fields is None:
                continue
            feature, duration_us, success = fields
            part = parts[(feature, ts[:10], user_id or "")]
            part[0] += 1
            if duration_us is not None:
                part[1] += duration_us
                part[2] += 1
            if success is not None:
                part[3] += success
                part[4] += 1
        return parts

    def _write(
        self, conn: sqlite3.Connection, parts: dict[tuple[str, str, str], list[int]]
    ) -> None:
        execute_rows(conn, self._UPSERT_USER, sorted((*key, *v) for key, v in parts.items()))
        days = sorted({(feature, date) for feature, date, _ in parts})
        conn.executemany(
            self._SUMMARIZE,
            [(_row_id("feature_usage", f, d), f, d) for f, d in days],
        )

    def apply(
        self,
        conn: sqlite3.Connection,
        events: Sequence[AnalyticsEvent],
        rows: Sequence[EventRow],
    ) -> None:
        """Add the batch's feature events and update the touched feature-days."""
        parts = self._fold(
            (r.timestamp, r.user_id, r.properties, e.data if type(e.data) is dict else _MISSING)
            for e, r in zip(events, rows, strict=True)
        )
        if not parts:
            return
        cache = self._days
        cache.check(conn)
        touched: dict[tuple[str, str], _FeatureDay] = {}
        for feature, date, _ in parts:
            key = (feature, date)
            if key not in touched:
                # Read before this batch's parts are written (a miss: once per day).
                day = cache.get(key)
                touched[key] = day if day is not None else _FeatureDay.load(conn, *key)
        execute_rows(conn, self._UPSERT_USER, sorted((*key, *v) for key, v in parts.items()))
        for (feature, date, user_id), part in parts.items():
            touched[(feature, date)].add(user_id, part)
        execute_rows(
            conn,
            self._UPSERT_DAY,
            [touched[k].row(*k) for k in sorted(touched)],
        )
        for key, day in touched.items():
            cache.put(key, day)

    def rebuild(self, conn: sqlite3.Connection) -> None:
        """Recompute both tables from ``analytics_events``."""
        self._days.clear()
        conn.execute("DELETE FROM feature_usage_users")
        conn.execute("DELETE FROM feature_usage")
        cursor = conn.execute(
            "SELECT timestamp, user_id, properties FROM analytics_events "
            "WHERE instr(properties, '\"feature\"') > 0"
        )
        self._write(conn, self._fold(cursor))


# Session columns read from an event's context (device_type falls back to "device").
_CONTEXT_FIELDS: Final = ("device_type", "browser", "os", "country", "city")
_SESSION_COLUMNS: Final = (
    "id, user_id, started_at, ended_at, duration_ms, event_count, device_type, browser, os, "
    "country, city, referrer, landing_page, exit_page"
)


_context_cache: dict[str, tuple[tuple[str, str], ...]] = {}
# Distinct contexts remembered: one per producer process and event kind in practice.
_CONTEXTS_CACHED: Final = 1024


def _context_fields(context: str) -> tuple[tuple[str, str], ...]:
    """The session columns (device_type, browser, os, country, city) a context sets."""
    fields = _context_cache.get(context)
    if fields is None:
        data = _decode(context)
        found: list[tuple[str, str]] = []
        if isinstance(data, dict):
            for field in _CONTEXT_FIELDS:
                value = data.get(field)
                if field == "device_type" and value is None:
                    value = data.get("device")
                if isinstance(value, str):
                    found.append((field, value))
        fields = tuple(found)
        if len(_context_cache) >= _CONTEXTS_CACHED:
            _context_cache.clear()
        _context_cache[context] = fields
    return fields


class _SessionFold:
    """Accumulates one session's events in any order (every merge is order-free)."""

    __slots__ = ("count", "first", "keys", "last", "stored_sources", "values")

    def __init__(self) -> None:
        self.first = ""
        self.last = ""
        self.count = 0
        self.values: dict[str, str] = {}
        self.keys: dict[str, str] = {}
        # The analytics_session_sources text as stored, when known: unchanged sources
        # (the common case: a session's columns are set by its first events) are not
        # written again.
        self.stored_sources: str | None = None

    def _offer(self, field: str, key: str, value: str, latest: bool = False) -> None:
        held = self.keys.get(field)
        if held is None or (key > held if latest else key < held):
            self.keys[field] = key
            self.values[field] = value

    def add(
        self,
        ts: str,
        event_id: str,
        user_id: str | None,
        context: str | None,
        page_url: str | None,
        referrer: str | None,
    ) -> None:
        key = ts + event_id  # fixed-width timestamps: text order is (timestamp, id) order
        if not self.count or ts < self.first:
            self.first = ts
        if not self.count or ts > self.last:
            self.last = ts
        self.count += 1
        if user_id is not None:
            self._offer("user_id", key, user_id)
        if referrer is not None:
            self._offer("referrer", key, referrer)
        if page_url is not None:
            self._offer("landing_page", key, page_url)
            self._offer("exit_page", key, page_url, latest=True)
        if context is not None:
            for field, value in _context_fields(context):
                self._offer(field, key, value)

    def merge_stored(self, row: Sequence[Any], sources: str | None) -> None:
        started_at, ended_at, count = row[2], row[3], row[5]
        if not self.count or started_at < self.first:
            self.first = started_at
        if not self.count or ended_at > self.last:
            self.last = ended_at
        self.count += count
        keys = _decode(sources) or {}
        stored = dict(zip(_SESSION_COLUMNS.split(", "), row, strict=True))
        for field, key in keys.items():
            value = stored.get(field)
            if isinstance(value, str):
                self._offer(field, key, value, latest=field == "exit_page")

    def row(self, session_id: str) -> tuple[Any, ...]:
        v = self.values
        duration_ms = (_to_us(self.last) - _to_us(self.first)) // 1000
        return (
            session_id,
            v.get("user_id"),
            self.first,
            self.last,
            duration_ms,
            self.count,
            v.get("device_type"),
            v.get("browser"),
            v.get("os"),
            v.get("country"),
            v.get("city"),
            v.get("referrer"),
            v.get("landing_page"),
            v.get("exit_page"),
        )

    def sources(self) -> str:
        return _json_encode(self.keys).decode()


_EventForSession: TypeAlias = tuple[str, str, str | None, str | None, str | None, str | None]


def _derived_sessions(events: Sequence[_EventForSession]) -> list[tuple[str, _SessionFold]]:
    """The sessions in one user's session-less events, sorted by (timestamp, id)."""
    out: list[tuple[str, _SessionFold]] = []
    last_us = 0
    for event in events:
        us = _to_us(event[0])
        if not out or us - last_us > _GAP_US:
            out.append((_DERIVED_PREFIX + event[1], _SessionFold()))
        out[-1][1].add(*event)
        last_us = us
    return out


class SessionSummaries:
    """Keeps ``analytics_sessions`` (and ``analytics_session_sources``).

    Sessions with a given id are merged incrementally; a user's session-less events are
    merged with the derived sessions near them (a late event can join two sessions or
    start one earlier). Neither rereads stored events.

    >>> SessionSummaries().name
    'analytics_sessions'
    """

    __slots__ = ("_folds",)

    _INSERT = (
        f"INSERT OR REPLACE INTO analytics_sessions ({_SESSION_COLUMNS}) "
        f"VALUES ({', '.join('?' * 14)})"
    )
    # Merged rows overwrite in place: cheaper than REPLACE's delete and re-insert.
    _UPSERT = (
        f"INSERT INTO analytics_sessions ({_SESSION_COLUMNS}) VALUES ({', '.join('?' * 14)}) "
        "ON CONFLICT (id) DO UPDATE SET "
        + ", ".join(f"{c} = excluded.{c}" for c in _SESSION_COLUMNS.split(", ")[1:])
    )
    _SOURCES = (
        "INSERT OR REPLACE INTO analytics_session_sources (session_id, sources) VALUES (?, ?)"
    )

    def __init__(self) -> None:
        # Given-id sessions as stored (merged folds): a busy session's next batch needs
        # no read. Derived sessions are read back (they merge and split).
        self._folds: RowCache[str, _SessionFold] = RowCache(_SESSIONS_CACHED)

    @property
    def name(self) -> str:
        """Projection name."""
        return "analytics_sessions"

    def discard(self) -> None:
        """Forget the cached sessions (the store rolled back)."""
        self._folds.clear()

    def apply(
        self,
        conn: sqlite3.Connection,
        events: Sequence[AnalyticsEvent],
        rows: Sequence[EventRow],
    ) -> None:
        """Merge the batch into its sessions."""
        cache = self._folds
        cache.check(conn)
        given: dict[str, _SessionFold] = {}
        missing: dict[str, _SessionFold] = {}
        sessionless: dict[str, list[EventRow]] = defaultdict(list)
        for r in rows:
            session_id = r.session_id
            if session_id is not None:
                fold = given.get(session_id)
                if fold is None:
                    fold = cache.get(session_id)
                    if fold is None:
                        fold = missing[session_id] = _SessionFold()
                    given[session_id] = fold
                fold.add(r.timestamp, r.id, r.user_id, r.context, r.page_url, r.referrer)
            elif r.user_id is not None:
                sessionless[r.user_id].append(r)
        if given:
            self._merge_given(conn, given, missing)
        for user_id, user_rows in sessionless.items():
            self._merge_derived(conn, user_id, user_rows)

    def _merge_given(
        self,
        conn: sqlite3.Connection,
        folds: dict[str, _SessionFold],
        missing: dict[str, _SessionFold],
    ) -> None:
        for chunk in _chunks(sorted(missing)):
            marks = ", ".join("?" * len(chunk))
            for *row, sources in conn.execute(
                f"SELECT {', '.join('s.' + c for c in _SESSION_COLUMNS.split(', '))}, "
                "src.sources FROM analytics_sessions s LEFT JOIN analytics_session_sources src "
                f"ON src.session_id = s.id WHERE s.id IN ({marks})",
                chunk,
            ):
                fold = missing[row[0]]
                fold.merge_stored(row, sources)
                fold.stored_sources = sources
        ids = sorted(folds)
        execute_rows(conn, self._UPSERT, [folds[i].row(i) for i in ids])
        changed: list[tuple[str, str]] = []
        cache = self._folds
        for i in ids:
            fold = folds[i]
            sources = fold.sources()
            if sources != fold.stored_sources:
                changed.append((i, sources))
                fold.stored_sources = sources
            cache.put(i, fold)
        execute_rows(conn, self._SOURCES, changed)

    def _merge_derived(self, conn: sqlite3.Connection, user_id: str, rows: list[EventRow]) -> None:
        """Merge a user's new session-less events with the derived sessions near them.

        Stored sessions within 30 minutes of a new event and the new events are swept in
        time order; a gap of more than 30 minutes between consecutive items starts a new
        session. A stored session stands for its events (no gap inside is over 30
        minutes), so this equals splitting all the user's events again, without reading
        them: a long session costs the same as a short one.
        """
        stamps = sorted(r.timestamp for r in rows)
        lo = _from_us(_to_us(stamps[0]) - _GAP_US)
        hi = _from_us(_to_us(stamps[-1]) + _GAP_US)
        columns = ", ".join("s." + c for c in _SESSION_COLUMNS.split(", "))
        affected = conn.execute(
            f"SELECT {columns}, src.sources FROM analytics_sessions s "
            "LEFT JOIN analytics_session_sources src ON src.session_id = s.id "
            "WHERE s.user_id = ? AND s.id >= ? AND s.id < ? AND s.ended_at >= ? "
            "AND s.started_at <= ?",
            (user_id, _DERIVED_PREFIX, _DERIVED_PREFIX[:-1] + ";", lo, hi),
        ).fetchall()
        # (start, end, sort key of the first event, stored session or new event)
        items: list[tuple[str, str, str, Any]] = [
            (a[2], a[3], a[2] + a[0][len(_DERIVED_PREFIX) :], a) for a in affected
        ]
        items += [(r.timestamp, r.timestamp, r.timestamp + r.id, r) for r in rows]
        items.sort(key=lambda item: (item[0], item[2]))
        groups: list[tuple[str, _SessionFold]] = []
        end_us = 0
        for start, end, key, item in items:
            if not groups or _to_us(start) - end_us > _GAP_US:
                groups.append((_DERIVED_PREFIX + key[len(start) :], _SessionFold()))
                end_us = _to_us(end)
            else:
                end_us = max(end_us, _to_us(end))
            fold = groups[-1][1]
            if isinstance(item, EventRow):
                fold.add(item.timestamp, item.id, item.user_id, item.context, item.page_url,
                         item.referrer)  # fmt: skip
            else:
                fold.merge_stored(item[:14], item[14])
        gone = [(a[0],) for a in affected]
        for session_id in [a[0] for a in affected] + [i for i, _ in groups]:
            self._folds.pop(session_id)  # a given id that looks derived: never cached stale
        conn.executemany("DELETE FROM analytics_sessions WHERE id = ?", gone)
        conn.executemany("DELETE FROM analytics_session_sources WHERE session_id = ?", gone)
        execute_rows(conn, self._INSERT, [f.row(i) for i, f in groups])
        execute_rows(conn, self._SOURCES, [(i, f.sources()) for i, f in groups])

    def rebuild(self, conn: sqlite3.Connection) -> None:
        """Recompute every session from ``analytics_events``."""
        self._folds.clear()
        conn.execute("DELETE FROM analytics_sessions")
        conn.execute("DELETE FROM analytics_session_sources")
        folds: dict[str, _SessionFold] = {}
        for session_id, *event in conn.execute(
            "SELECT session_id, timestamp, id, user_id, context, page_url, referrer "
            "FROM analytics_events WHERE session_id IS NOT NULL"
        ):
            fold = folds.get(session_id)
            if fold is None:
                fold = folds[session_id] = _SessionFold()
            fold.add(*event)
        conn.executemany(self._INSERT, [f.row(i) for i, f in folds.items()])
        conn.executemany(self._SOURCES, [(i, f.sources()) for i, f in folds.items()])
        current: str | None = None
        events: list[_EventForSession] = []
        derived: list[tuple[str, _SessionFold]] = []
        for event in conn.execute(
            "SELECT timestamp, id, user_id, context, page_url, referrer FROM analytics_events "
            "WHERE session_id IS NULL AND user_id IS NOT NULL ORDER BY user_id, timestamp, id"
        ):
            if event[2] != current:
                derived += _derived_sessions(events)
                current, events = event[2], []
            events.append(event)
        derived += _derived_sessions(events)
        conn.executemany(self._INSERT, [f.row(i) for i, f in derived])
        conn.executemany(self._SOURCES, [(i, f.sources()) for i, f in derived])


_INSERT_CONVERSION: Final = (
    "INSERT OR REPLACE INTO funnel_conversions (id, funnel_id, user_id, session_id, "
    "started_at, completed_at, current_step, completed, step_timestamps) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class FunnelConversions:
    """Keeps ``funnel_conversions``: one row per entry of every funnel in ``funnels``.

    When a user's events arrive, the entries they can change (those at most one
    conversion window before a new event) are recomputed from the user's stored events
    of those windows.

    >>> FunnelConversions().name
    'funnel_conversions'
    """

    __slots__ = ("_cache",)

    _INSERT = _INSERT_CONVERSION

    def __init__(self) -> None:
        self._cache: dict[tuple[Any, ...], FunnelMatcher] = {}

    @property
    def name(self) -> str:
        """Projection name."""
        return "funnel_conversions"

    def _funnels(self, conn: sqlite3.Connection) -> list[tuple[str, FunnelMatcher]]:
        out = []
        for funnel_id, *spec in conn.execute(
            "SELECT id, name, description, steps, conversion_window_seconds, order_mode, "
            "exclusions FROM funnels ORDER BY id"
        ):
            key = (funnel_id, *spec)
            matcher = self._cache.get(key)
            if matcher is None:
                matcher = self._cache[key] = FunnelMatcher(funnel_from_row(*spec))
            out.append((funnel_id, matcher))
        return out

    @staticmethod
    def rows_of(
        funnel_id: str, n_steps: int, attempts: Iterable[FunnelAttempt]
    ) -> list[tuple[Any, ...]]:
        """``funnel_conversions`` rows of a funnel's entries."""
        out = []
        for a in attempts:
            done = a.reached == n_steps
            out.append(
                (
                    _row_id("funnel_conversion", funnel_id, a.entry_id),
                    funnel_id,
                    a.user_id,
                    a.session_id,
                    a.started_at,
                    a.step_timestamps[-1] if done else None,
                    a.reached - 1,
                    int(done),
                    _json_encode(list(a.step_timestamps)).decode(),
                )
            )
        return out

    def apply(
        self,
        conn: sqlite3.Connection,
        events: Sequence[AnalyticsEvent],
        rows: Sequence[EventRow],
    ) -> None:
        """Recompute the entries of each funnel that the batch's users can have changed.

        Three statements per funnel whatever the number of users: delete the entries of
        every affected range, read the events of every range, insert the new entries.
        """
        funnels = self._funnels(conn)
        if not funnels:
            return
        for funnel_id, matcher in funnels:
            stamps: dict[str, list[int]] = defaultdict(list)
            for r in rows:
                if r.user_id is not None and (
                    matcher.names is None or r.event_name in matcher.names
                ):
                    stamps[r.user_id].append(_to_us(r.timestamp))
            # Per range: user, first and last entry time, end of the last entry's window,
            # the first instant after the last entry.
            ranges = [
                (
                    user_id,
                    _from_us(lo),
                    _from_us(hi),
                    _from_us(hi + matcher.window_us),
                    _from_us(hi + 1),
                )
                for user_id in sorted(stamps)
                for lo, hi in _affected_entries(stamps[user_id], matcher.window_us)
            ]
            if not ranges:
                continue
            spec = _json_encode(ranges).decode()
            conn.execute(_DELETE_RANGES, (funnel_id, spec))
            found = _range_events(conn, matcher, spec, len(ranges))
            out: list[tuple[Any, ...]] = []
            for (user_id, first, _, _, until), events_of in zip(ranges, found, strict=True):
                attempts = matcher.attempts(user_id, events_of, first, until)
                out.extend(self.rows_of(funnel_id, matcher.n_steps, attempts))
            execute_rows(conn, self._INSERT, out)

    def rebuild(self, conn: sqlite3.Connection) -> None:
        """Recompute every funnel's entries from ``analytics_events``."""
        conn.execute("DELETE FROM funnel_conversions")
        for funnel_id, matcher in self._funnels(conn):
            backfill_funnel(conn, funnel_id, matcher)


def _affected_entries(stamps: list[int], window_us: int) -> list[tuple[int, int]]:
    """Ranges of entry times a user's new events can change, in microseconds.

    An entry at ``s`` depends on the events in ``[s, s + window]`` only, so an event at
    ``t`` changes the entries in ``[t - window, t]`` (and is one itself). Overlapping
    ranges are merged: a late event recomputes one window, not everything since.
    """
    out: list[tuple[int, int]] = []
    for t in sorted(stamps):
        lo = t - window_us
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], t)
        else:
            out.append((lo, t))
    return out


# The ranges are a JSON array of [user_id, first, last, window_end, ...]; json_each drives
# the join so each range is one probe of the (funnel_id, user_id, started_at) and
# (user_id, timestamp) indexes.
_DELETE_RANGES: Final = (
    "DELETE FROM funnel_conversions WHERE rowid IN (SELECT c.rowid FROM json_each(?2) AS r "
    "CROSS JOIN funnel_conversions AS c WHERE c.funnel_id = ?1 "
    "AND c.user_id = json_extract(r.value, '$[0]') "
    "AND c.started_at >= json_extract(r.value, '$[1]') "
    "AND c.started_at <= json_extract(r.value, '$[2]'))"
)
_RANGE_EVENTS: Final = (
    "SELECT r.key, e.timestamp, e.id, e.event_name, e.properties, e.session_id "
    "FROM json_each(?) AS r CROSS JOIN analytics_events AS e "
    "WHERE e.user_id = json_extract(r.value, '$[0]') "
    "AND e.timestamp >= json_extract(r.value, '$[1]') "
    "AND e.timestamp <= json_extract(r.value, '$[3]')"
)


def _range_events(
    conn: sqlite3.Connection, matcher: FunnelMatcher, spec: str, count: int
) -> list[list[_FunnelEvent]]:
    """Per range of ``spec``: its user's events from its first entry time to the end of
    its last entry's window that can matter to the funnel, sorted by (timestamp, id)."""
    sql = _RANGE_EVENTS
    params: list[Any] = [spec]
    if matcher.names is not None:
        sql += f" AND e.event_name IN ({', '.join('?' * len(matcher.names))})"
        params.extend(sorted(matcher.names))
    found: list[list[_FunnelEvent]] = [[] for _ in range(count)]
    for key, *event in conn.execute(sql, params).fetchall():
        found[key].append(tuple(event))
    for events in found:
        events.sort()
    return found


def iter_user_events(
    conn: sqlite3.Connection,
    names: frozenset[str] | None,
    start: str | None = None,
    end: str | None = None,
) -> Iterator[tuple[str, list[_FunnelEvent]]]:
    """Each user's events (with ``start <= timestamp < end``), sorted by (timestamp, id).

    A bounded range is read in one indexed scan and grouped in memory (sorting a few
    hundred thousand rows in Python beats an ORDER BY that tempts SQLite into walking the
    whole user index); without bounds (a rebuild) rows stream in SQL order instead.
    """
    sql = (
        "SELECT user_id, timestamp, id, event_name, properties, session_id "
        "FROM analytics_events WHERE user_id IS NOT NULL"
    )
    params: list[Any] = []
    if names is not None:
        sql += f" AND event_name IN ({', '.join('?' * len(names))})"
        params.extend(sorted(names))
    if start is not None:
        sql += " AND timestamp >= ?"
        params.append(start)
    if end is not None:
        sql += " AND timestamp < ?"
        params.append(end)
    if start is None and end is None:
        current: str | None = None
        events: list[_FunnelEvent] = []
        for user_id, *event in conn.execute(sql + " ORDER BY user_id, timestamp, id", params):
            if user_id != current:
                if current is not None:
                    yield current, events
                current, events = user_id, []
            events.append(tuple(event))
        if current is not None:
            yield current, events
        return
    grouped: dict[str, list[_FunnelEvent]] = defaultdict(list)
    for user_id, *event in conn.execute(sql, params):
        grouped[user_id].append(tuple(event))
    for user_id in sorted(grouped):
        user_events = grouped[user_id]
        user_events.sort()
        yield user_id, user_events


def backfill_funnel(conn: sqlite3.Connection, funnel_id: str, matcher: FunnelMatcher) -> int:
    """(Re)compute one funnel's ``funnel_conversions`` rows; returns how many were written."""
    conn.execute("DELETE FROM funnel_conversions WHERE funnel_id = ?", (funnel_id,))
    n_steps = matcher.n_steps
    written = 0
    for user_id, events in iter_user_events(conn, matcher.names):
        rows = FunnelConversions.rows_of(funnel_id, n_steps, matcher.attempts(user_id, events))
        conn.executemany(_INSERT_CONVERSION, rows)
        written += len(rows)
    return written


def summary_projections() -> tuple[Projection, ...]:
    """The projections that keep every summary table of this module, in a working order.

    >>> [p.name for p in summary_projections()][:2]
    ['daily_event_rollup', 'user_activity']
    """
    return (
        DailyEventRollup(),
        UserActivity(),
        FeatureUsage(),
        SessionSummaries(),
        FunnelConversions(),
    )


def rebuild_summaries(
    conn: sqlite3.Connection, projections: Sequence[Projection] | None = None
) -> None:
    """Recompute the summary tables from the raw events, in one transaction.

    ``conn`` must be a writable connection not already in a transaction.
    """
    chosen = summary_projections() if projections is None else projections
    conn.execute("BEGIN IMMEDIATE")
    try:
        for projection in chosen:
            projection.rebuild(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def events_missing_for_rebuild(conn: sqlite3.Connection) -> str | None:
    """What a rebuild from the raw events would lose, or None when they cover it all.

    Retention keeps summaries and missions longer than raw events (their own ages in
    ``retention.days``), so after it ran, a rebuild would recompute them from fewer events
    than they were made of. Found by the daily counts (and the other day-keyed summaries
    and the missions) reaching before the oldest stored event, or counting more events on
    its day than are stored.
    """
    oldest = conn.execute("SELECT min(timestamp) FROM analytics_events").fetchone()[0]
    first_day = None if oldest is None else str(oldest)[:10]
    for table, column in (
        ("analytics_daily_counts", "date"),
        ("user_activity", "date"),
        ("feature_usage", "date"),
        ("missions", "substr(created_at, 1, 10)"),
    ):
        earliest = conn.execute(f"SELECT min({column}) FROM {table}").fetchone()[0]
        if earliest is not None and (first_day is None or str(earliest) < first_day):
            held = "no events" if first_day is None else f"events from {first_day} on"
            return (
                f"{table} holds data from {earliest}, but analytics_events holds {held} "
                "(retention deleted the older ones); a rebuild would drop what only the "
                "summaries still know"
            )
    if first_day is not None:
        counted = conn.execute(
            "SELECT sum(event_count) FROM analytics_daily_counts WHERE date = ?", (first_day,)
        ).fetchone()[0]
        stored = conn.execute(
            "SELECT count(*) FROM analytics_events WHERE timestamp >= ? AND timestamp < ?",
            (first_day, _next_day(first_day)),
        ).fetchone()[0]
        if counted is not None and counted > stored:
            return (
                f"the summaries count {counted} events on {first_day}, analytics_events holds "
                f"{stored} (retention deleted the others); a rebuild would lower that day's "
                "figures"
            )
    return None


def _next_day(day: str) -> str:
    return (dt.date.fromisoformat(day) + dt.timedelta(days=1)).isoformat()


# -- dashboard metrics ----------------------------------------------------------------------


class DashboardMetric(msgspec.Struct, frozen=True, kw_only=True):
    """One precomputed dashboard value (a ``dashboard_metrics`` row).

    >>> DashboardMetric(widget_id="overview", metric_key="events_today", value=120.0,
    ...                 previous_value=100.0, change_percent=20.0,
    ...                 updated_at="2024-03-01T12:00:00.000000Z").change_percent
    20.0
    """

    widget_id: str
    metric_key: str
    value: float
    previous_value: float | None
    change_percent: float | None
    updated_at: str


_BUSINESS_KEYS: Final = (
    "input_tokens_today",
    "output_tokens_today",
    "total_tokens_today",
    "cost_usd_today",
)


def _window_figures(conn: sqlite3.Connection, lo: str, hi: str) -> dict[str, float]:
    events, users, errors = conn.execute(
        "SELECT count(*), count(DISTINCT user_id), coalesce(sum(category = 'error'), 0) "
        "FROM analytics_events WHERE timestamp >= ? AND timestamp <= ?",
        (lo, hi),
    ).fetchone()
    figures = {
        "events_today": float(events),
        "unique_users_today": float(users),
        "error_rate_today": errors / events if events else 0.0,
    }
    business = dict(
        conn.execute(
            "SELECT json_extract(properties, '$.metric_type'), "
            "sum(json_extract(properties, '$.value')) FROM analytics_events "
            "WHERE timestamp >= ? AND timestamp <= ? AND category = 'business' "
            "AND json_valid(properties) "
            "AND json_type(properties, '$.value') IN ('integer', 'real') GROUP BY 1",
            (lo, hi),
        ).fetchall()
    )
    # Missions' LLM calls (MissionTracker.llm_call, POST /v1/missions/{id}/llm) carry the
    # OpenTelemetry gen_ai.usage counts and their cost in their own properties.
    calls, mission_in, mission_out, mission_cost = conn.execute(
        "SELECT count(*), coalesce(sum(json_extract(properties, ?)), 0), "
        "coalesce(sum(json_extract(properties, ?)), 0), "
        "coalesce(sum(json_extract(properties, '$.cost_usd')), 0) FROM analytics_events "
        "WHERE timestamp >= ? AND timestamp <= ? AND event_name = 'tokens_consumed' "
        "AND category = 'business' AND json_valid(properties) "
        "AND json_type(properties, ?) IN ('integer', 'real')",
        (_MISSION_INPUT, _MISSION_OUTPUT, lo, hi, _MISSION_INPUT),
    ).fetchone()
    kinds = ("input_tokens", "output_tokens", "total_tokens", "cost_usd")
    if calls or any(k in business for k in kinds):
        tokens_in = float(business.get("input_tokens", 0.0)) + float(mission_in)
        tokens_out = float(business.get("output_tokens", 0.0)) + float(mission_out)
        figures["input_tokens_today"] = tokens_in
        figures["output_tokens_today"] = tokens_out
        figures["total_tokens_today"] = (
            tokens_in + tokens_out + float(business.get("total_tokens", 0.0))
        )
        figures["cost_usd_today"] = float(business.get("cost_usd", 0.0)) + float(mission_cost)
    return figures


_MISSION_INPUT: Final = '$."gen_ai.usage.input_tokens"'
_MISSION_OUTPUT: Final = '$."gen_ai.usage.output_tokens"'


def refresh_dashboard_metrics(conn: sqlite3.Connection, now: dt.datetime) -> list[DashboardMetric]:
    """Recompute ``dashboard_metrics`` for ``now`` and return the rows written.

    Each value covers today so far (UTC midnight to ``now``, inclusive) and is compared
    with the same stretch of yesterday, so a morning is not set against a whole day:

    ``overview``: ``events_today``, ``unique_users_today``, ``error_rate_today`` (share of
    events in the error category, 0 to 1); ``llm``: ``input_tokens_today``,
    ``output_tokens_today``, ``total_tokens_today`` (input + output + ``total_tokens``
    business values) and ``cost_usd_today``, from business events of those kinds and
    from missions' LLM calls (their ``gen_ai.usage`` counts and ``cost_usd``), written
    only when there are such events in either window (otherwise the rows are removed).
    ``change_percent`` is None when yesterday's value is 0.

    ``conn`` must be writable; outside a transaction the write is its own transaction.

    >>> import sqlite3
    >>> from tachimeter.store.migrations import all_migrations
    >>> conn = sqlite3.connect(":memory:", isolation_level=None)
    >>> for m in all_migrations(): _ = conn.executescript(m.up)
    >>> rows = refresh_dashboard_metrics(conn, dt.datetime(2024, 3, 1, 12, tzinfo=dt.UTC))
    >>> [(r.metric_key, r.value) for r in rows]
    [('events_today', 0.0), ('unique_users_today', 0.0), ('error_rate_today', 0.0)]
    """
    now = now if now.tzinfo is not None else now.replace(tzinfo=dt.UTC)
    now = now.astimezone(dt.UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    day = dt.timedelta(days=1)
    today = _window_figures(conn, format_timestamp(midnight), format_timestamp(now))
    yesterday = _window_figures(conn, format_timestamp(midnight - day), format_timestamp(now - day))
    updated_at = format_timestamp(now)
    metrics: list[DashboardMetric] = []
    for key in ("events_today", "unique_users_today", "error_rate_today", *_BUSINESS_KEYS):
        if key not in today and key not in yesterday:
            continue
        value = today.get(key, 0.0)
        previous = yesterday.get(key, 0.0)
        change = (value - previous) / previous * 100 if previous else None
        metrics.append(
            DashboardMetric(
                widget_id="llm" if key in _BUSINESS_KEYS else "overview",
                metric_key=key,
                value=value,
                previous_value=previous,
                change_percent=change,
                updated_at=updated_at,
            )
        )
    own = not conn.in_transaction
    if own:
        conn.execute("BEGIN IMMEDIATE")
    try:
        written = {m.metric_key for m in metrics}
        conn.executemany(
            "DELETE FROM dashboard_metrics WHERE widget_id = 'llm' AND metric_key = ?",
            [(k,) for k in _BUSINESS_KEYS if k not in written],
        )
        conn.executemany(
            "INSERT OR REPLACE INTO dashboard_metrics (id, widget_id, metric_key, value, "
            "previous_value, change_percent, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    _row_id("dashboard_metric", m.widget_id, m.metric_key),
                    m.widget_id,
                    m.metric_key,
                    m.value,
                    m.previous_value,
                    m.change_percent,
                    m.updated_at,
                )
                for m in metrics
            ],
        )
    except BaseException:
        if own:
            conn.execute("ROLLBACK")
        raise
    if own:
        conn.execute("COMMIT")
    return metrics


# -- retention policy -----------------------------------------------------------------------


class TableRetention(msgspec.Struct, frozen=True, kw_only=True):
    """What the retention run removed from one table."""

    target: str
    table: str
    cutoff: str
    deleted: int
    batches: int


class RetentionReport(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of :func:`run_retention`, per table."""

    now: str
    tables: tuple[TableRetention, ...]
    vacuumed: bool
    seconds: float

    @property
    def total_deleted(self) -> int:
        """Rows removed from all tables."""
        return sum(t.deleted for t in self.tables)


# (target in config.retention.days, table, rows to delete, key columns, cutoff form).
# Keys select a batch (LIMIT) and delete exactly those rows; WITHOUT ROWID tables have no
# rowid, so they use their primary key. The daily event rollup follows user_activity: both
# are per-user-per-day summaries that answer long-range questions after raw events expire.
_RETENTION_PLAN: Final[tuple[tuple[RetentionTarget, str, str, str, str], ...]] = (
    ("analytics_events", "analytics_events", "timestamp < ?", "rowid", "timestamp"),
    ("user_activity", "user_activity", "date < ?", "rowid", "date"),
    (
        "user_activity",
        "user_activity_spans",
        "date < ?",
        "user_id, date, kind, span_key",
        "date",
    ),
    (
        "user_activity",
        "analytics_daily_events",
        "date < ?",
        "event_name, date, user_id",
        "date",
    ),
    ("user_activity", "analytics_daily_counts", "date < ?", "date, event_name", "date"),
    ("feature_usage", "feature_usage", "date < ?", "rowid", "date"),
    (
        "feature_usage",
        "feature_usage_users",
        "date < ?",
        "feature_name, date, user_id",
        "date",
    ),
    (
        "analytics_sessions",
        "analytics_sessions",
        "started_at < ?1 AND coalesce(ended_at, started_at) < ?1",
        "id",
        "timestamp",
    ),
    ("funnel_conversions", "funnel_conversions", "started_at < ?", "rowid", "timestamp"),
)


def run_retention(
    conn: sqlite3.Connection,
    config: AnalyticsConfig,
    now: dt.datetime,
    *,
    batch_size: int = 5000,
    vacuum: bool = False,
    pause_seconds: float = 0.0,
) -> RetentionReport:
    """Delete rows older than ``config.retention.days`` allows, table by table, in batches.

    Each batch of at most ``batch_size`` rows is its own short write transaction (about
    50 ms for 5000 events with their indexes), so a writer waits at most one batch;
    ``pause_seconds`` sleeps between batches to leave it more room. Sessions go with their
    ``analytics_session_sources`` rows. Raw events are only cut by age: the summaries
    keep their own, longer ages. ``vacuum=True`` then runs ``VACUUM`` to return the space
    to the file system (it locks the database for a while: schedule it off-peak).

    Targets handled here: ``analytics_events``, ``user_activity`` (and the daily event
    rollup), ``feature_usage``, ``analytics_sessions``, ``funnel_conversions``. Metrics,
    metric rollups and missions are expired by their own stores.

    >>> import sqlite3
    >>> from tachimeter.store.migrations import all_migrations
    >>> conn = sqlite3.connect(":memory:", isolation_level=None)
    >>> for m in all_migrations(): _ = conn.executescript(m.up)
    >>> report = run_retention(conn, AnalyticsConfig(), dt.datetime(2024, 3, 1, tzinfo=dt.UTC))
    >>> report.total_deleted
    0
    """
    if batch_size < 1:
        raise QueryError(f"batch_size must be >= 1, got {batch_size!r}")
    if conn.in_transaction:
        raise QueryError(
            "run_retention needs a connection outside a transaction: it commits every batch"
        )
    started = time.perf_counter()
    now = now if now.tzinfo is not None else now.replace(tzinfo=dt.UTC)
    days = config.retention.days
    results: list[TableRetention] = []
    for target, table, where, key, form in _RETENTION_PLAN:
        cutoff_time = now - dt.timedelta(days=days[target])
        cutoff = (
            cutoff_time.astimezone(dt.UTC).date().isoformat()
            if form == "date"
            else format_timestamp(cutoff_time)
        )
        deleted = batches = 0
        while True:
            conn.execute("BEGIN IMMEDIATE")
            try:
                keys = conn.execute(
                    f"SELECT {key} FROM {table} WHERE {where} LIMIT ?2"
                    if "?1" in where
                    else f"SELECT {key} FROM {table} WHERE {where} LIMIT ?",
                    (cutoff, batch_size),
                ).fetchall()
                if keys:
                    marks = "(" + ", ".join("?" * len(keys[0])) + ")"
                    cols = f"({key})"
                    conn.executemany(f"DELETE FROM {table} WHERE {cols} = {marks}", keys)
                    if table == "analytics_sessions":
                        conn.executemany(
                            "DELETE FROM analytics_session_sources WHERE session_id = ?", keys
                        )
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            deleted += len(keys)
            batches += 1 if keys else 0
            if len(keys) < batch_size:
                break
            if pause_seconds > 0:
                time.sleep(pause_seconds)
        results.append(
            TableRetention(
                target=target, table=table, cutoff=cutoff, deleted=deleted, batches=batches
            )
        )
    if vacuum:
        conn.execute("VACUUM")
    return RetentionReport(
        now=format_timestamp(now),
        tables=tuple(results),
        vacuumed=vacuum,
        seconds=time.perf_counter() - started,
    )
