"""The mission tables, folded from mission events inside the store's write transaction.

:class:`MissionProjection` is a :class:`~tachimeter.store.projection.Projection`: give it
to the store sink (``StoreSink(store, projections=[MissionProjection()])``) and every
batch of newly stored mission events updates ``missions``, ``mission_tags``,
``mission_steps``, ``mission_tool_calls`` and ``mission_llm_calls`` (migration 4,
docs/missions.md) in the same transaction.

The fold does not depend on the order events arrive in (the collector may reorder
across priorities, a spool may replay old events late):

* child rows are keyed by ``(mission_key, seq)`` and inserted with ``OR IGNORE``;
* a mission's counters and totals are recomputed from its child rows;
* its status is that of the status-changing event with the highest ``seq``, so a late
  ``mission_started`` cannot undo a ``mission_completed``;
* creation time is its earliest event, last activity its latest.

So the same events applied in any order and any batching, or :meth:`~MissionProjection.rebuild`
from ``analytics_events``, give the same tables.

Abandonment: a process that crashed leaves its missions active. On start-up the store
calls :func:`abandon_stale_missions`, which records a ``mission_abandoned`` event
(``inferred: true``) for every active mission without an event for ``older_than``. If
the process was alive after all and its later events arrive, they win: anything the
tracker really recorded replaces an inferred ending.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

import msgspec

from tachimeter.missions import properties as p
from tachimeter.missions.lifecycle import MissionStatus
from tachimeter.missions.records import MissionAnalytics, MissionError, ToolUsage
from tachimeter.model.event_types import EventPriority, EventType
from tachimeter.model.events import AnalyticsEvent
from tachimeter.model.ids import uuid7_from_ns
from tachimeter.model.prices import DEFAULT_PRICE_TABLE, PriceTable
from tachimeter.model.rows import EventRow, event_to_row
from tachimeter.model.timestamps import format_timestamp, parse_timestamp, to_ns, utc_now
from tachimeter.model.tokens import TokenUsage

if TYPE_CHECKING:
    import sqlite3

__all__ = [
    "DEFAULT_ABANDON_AFTER",
    "MISSION_TABLES",
    "MissionProjection",
    "abandon_stale_missions",
    "delete_missions",
    "read_mission",
]

DEFAULT_ABANDON_AFTER: Final = dt.timedelta(hours=1)
"""Silence after which an active mission is presumed abandoned: an agent emits an event
at every LLM and tool call, and even long tool calls (builds, test suites) end within
minutes, so an hour without one means its process is gone."""

MISSION_TABLES: Final = (
    "missions",
    "mission_tags",
    "mission_steps",
    "mission_tool_calls",
    "mission_tool_usage",
    "mission_llm_calls",
)

_ACTIVE: Final = ("created", "planning", "executing", "paused")
_ACTIVE_SQL: Final = "('created', 'planning', 'executing', 'paused')"
_FINAL_SQL: Final = "('completed', 'failed', 'cancelled')"
_STARTS: Final = frozenset({EventType.MISSION_STARTED.event_name})
_ENDS: Final = frozenset(
    {
        EventType.MISSION_COMPLETED.event_name,
        EventType.MISSION_FAILED.event_name,
        EventType.MISSION_CANCELLED.event_name,
    }
)
_STEP: Final = EventType.MISSION_STEP_COMPLETED.event_name
_TOOL: Final = EventType.TOOL_INVOKED.event_name
_LLM: Final = EventType.TOKENS_CONSUMED.event_name
_ABANDONED: Final = EventType.MISSION_ABANDONED.event_name
_STATUS_VALUES: Final = frozenset(s.value for s in MissionStatus)
# SQLite's default limit of bound variables per statement is 32 766 since 3.32 but 999
# before; chunks of 500 ids work everywhere.
_IDS_PER_QUERY: Final = 500
# Events read per round when rebuilding: bounds memory, amortizes statement overhead.
_REBUILD_CHUNK: Final = 20_000

_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.Decoder().decode

# A status event wins when it is newer than the status in force; an inferred abandonment
# wins over the newest status seen so far, but only while the mission is still active.
_WINS: Final = f"""(:status IS NOT NULL AND CASE WHEN :inferred
    THEN :status_seq >= status_seq AND status IN {_ACTIVE_SQL}
    ELSE :status_seq > status_seq END)"""

# One statement per mission and batch: the batch's events are reduced in Python first
# (earliest and latest times, highest seq, the winning status), then folded in here with
# the same rules, so the result does not depend on how events were batched.
_HEADER_SQL: Final = f"""
UPDATE missions SET
    backend = COALESCE(backend, :backend),
    model = COALESCE(model, :model),
    tags = CASE WHEN tags = '[]' AND :tags IS NOT NULL THEN :tags ELSE tags END,
    session_id = COALESCE(session_id, :session_id),
    user_id = COALESCE(user_id, :user_id),
    created_at = MIN(created_at, :first_ts),
    last_event_at = MAX(last_event_at, :last_ts),
    last_seq = MAX(last_seq, :last_seq),
    retry_count = MAX(retry_count, :retry_count),
    started_at = CASE WHEN :start_ts IS NULL THEN started_at
        ELSE COALESCE(MIN(started_at, :start_ts), :start_ts) END,
    paused_ms = CASE
        WHEN :final AND {_WINS} THEN COALESCE(:paused_total, paused_ms)
        WHEN status IN {_FINAL_SQL} THEN paused_ms
        ELSE MAX(paused_ms, :paused_so_far) END,
    status = CASE WHEN {_WINS} THEN :status ELSE status END,
    status_seq = CASE WHEN {_WINS} THEN :status_seq ELSE status_seq END,
    ended_at = CASE WHEN {_WINS} THEN :ended_at ELSE ended_at END,
    execution_time_ms = CASE WHEN {_WINS} THEN :execution_time_ms ELSE execution_time_ms END,
    error_code = CASE WHEN {_WINS} THEN :error_code ELSE error_code END,
    error_message = CASE WHEN {_WINS} THEN :error_message ELSE error_message END,
    error_type = CASE WHEN {_WINS} THEN :error_type ELSE error_type END,
    error_step_index = CASE WHEN {_WINS} THEN :error_step_index ELSE error_step_index END,
    error_recoverable = CASE WHEN {_WINS} THEN :error_recoverable ELSE error_recoverable END,
    end_reason = CASE WHEN {_WINS} THEN :end_reason ELSE end_reason END
WHERE mission_key = :key
"""

_STEPS_SQL: Final = """
UPDATE missions SET (step_count, steps_completed, steps_failed) = (
    SELECT COALESCE(MAX(step_index) + 1, 0),
           COUNT(DISTINCT CASE WHEN success THEN step_index END),
           COALESCE(SUM(success = 0), 0)
    FROM mission_steps WHERE mission_key = ?1)
WHERE mission_key = ?1
"""

_TOOLS_SQL: Final = """
UPDATE missions SET (tool_calls, tool_failures, tool_time_ms, distinct_tools) = (
    SELECT COUNT(*), COALESCE(SUM(success = 0), 0), COALESCE(SUM(duration_ms), 0.0),
           COUNT(DISTINCT tool_name)
    FROM mission_tool_calls WHERE mission_key = ?1)
WHERE mission_key = ?1
"""

_LLM_SQL: Final = """
UPDATE missions SET (llm_calls, input_tokens, output_tokens, cache_read_tokens,
                     cache_creation_tokens, reasoning_tokens, total_tokens, total_cost,
                     unpriced_llm_calls) = (
    SELECT COUNT(*), COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0),
           COALESCE(SUM(cache_read_tokens), 0), COALESCE(SUM(cache_creation_tokens), 0),
           COALESCE(SUM(reasoning_tokens), 0), COALESCE(SUM(input_tokens + output_tokens), 0),
           COALESCE(SUM(cost), 0.0), COALESCE(SUM(cost IS NULL), 0)
    FROM mission_llm_calls WHERE mission_key = ?1)
WHERE mission_key = ?1
"""

_TOOL_USAGE_SQL: Final = """
INSERT OR REPLACE INTO mission_tool_usage (tool_name, mission_key, invocations, failures, total_ms)
SELECT tool_name, mission_key, COUNT(*), SUM(success = 0), SUM(duration_ms)
FROM mission_tool_calls WHERE mission_key = ?1 GROUP BY tool_name
"""

_Fact = tuple[str, str, "str | None", "str | None", dict[str, Any]]
"""(event name, timestamp text, session id, user id, properties) of one mission event."""


class MissionProjection:
    """Folds mission events into the mission tables (a store projection).

    ``prices`` prices LLM-call events that arrive without a ``cost_usd`` property (from
    producers other than the tracker, which always prices its calls); default: the
    bundled snapshot.

    >>> import sqlite3
    >>> from tachimeter.store.migrations import all_migrations
    >>> from tachimeter.model.rows import event_to_row
    >>> conn = sqlite3.connect(":memory:")
    >>> for migration in all_migrations():
    ...     _ = conn.executescript(migration.up)
    >>> event = AnalyticsEvent.new(EventType.MISSION_CREATED, {"mission_id": "m1",
    ...     "backend": "openai", "model": "gpt-4o", "tags": [], "seq": 0, "status": "created"})
    >>> MissionProjection().apply(conn, [event], [event_to_row(event)])
    >>> conn.execute("SELECT mission_id, status FROM missions").fetchall()
    [('m1', 'created')]
    """

    __slots__ = ("_prices",)

    def __init__(self, prices: PriceTable | None = None) -> None:
        self._prices = DEFAULT_PRICE_TABLE if prices is None else prices

    @property
    def name(self) -> str:
        """``missions``."""
        return "missions"

    def apply(
        self,
        conn: sqlite3.Connection,
        events: Sequence[AnalyticsEvent],
        rows: Sequence[EventRow],
    ) -> None:
        """Fold newly stored events into the tables (events of other kinds are skipped)."""
        names = p.MISSION_EVENT_NAMES
        facts: list[_Fact] = []
        for event, row in zip(events, rows, strict=True):
            data = event.data
            if type(data) is dict and row.event_name in names and p.MISSION_ID in data:
                facts.append((row.event_name, row.timestamp, row.session_id, row.user_id, data))
        if facts:
            self._fold(conn, facts)

    def rebuild(self, conn: sqlite3.Connection) -> None:
        """Recompute the mission tables from ``analytics_events``."""
        for table in MISSION_TABLES:
            conn.execute(f"DELETE FROM {table}")
        names = sorted(p.MISSION_EVENT_NAMES)
        marks = ", ".join("?" * len(names))
        last = -1
        while True:
            chunk = conn.execute(
                f"SELECT rowid, event_name, timestamp, session_id, user_id, properties "
                f"FROM analytics_events WHERE rowid > ? AND event_name IN ({marks}) "
                f"ORDER BY rowid LIMIT {_REBUILD_CHUNK}",
                (last, *names),
            ).fetchall()
            if not chunk:
                return
            last = chunk[-1][0]
            facts: list[_Fact] = []
            for _, name, ts, session, user, text in chunk:
                try:
                    data = _json_decode(text) if text else None
                except msgspec.DecodeError:
                    continue
                if type(data) is dict and p.MISSION_ID in data:
                    facts.append((name, ts, session, user, data))
            if facts:
                self._fold(conn, facts)

    def _fold(self, conn: sqlite3.Connection, facts: list[_Fact]) -> None:
        by_mission: dict[str, list[_Fact]] = {}
        for fact in facts:
            props = fact[4]
            mission_id = props.get(p.MISSION_ID)
            seq = props.get(p.SEQ)
            # Events that cannot be placed are skipped, never raised on: raising would
            # abort the whole batch, other events included.
            if type(mission_id) is str and mission_id and type(seq) is int and seq >= 0:
                by_mission.setdefault(mission_id, []).append(fact)
        if not by_mission:
            return
        conn.executemany(
            "INSERT INTO missions (mission_id, status, created_at, last_event_at) "
            "VALUES (?, 'created', ?, ?) ON CONFLICT (mission_id) DO NOTHING",
            [(mid, fs[0][1], fs[0][1]) for mid, fs in by_mission.items()],
        )
        keys = _mission_keys(conn, list(by_mission))
        headers: list[dict[str, Any]] = []
        tags: list[tuple[str, int]] = []
        steps: list[tuple[Any, ...]] = []
        tools: list[tuple[Any, ...]] = []
        llms: list[tuple[Any, ...]] = []
        for mission_id, mission_facts in by_mission.items():
            key = keys[mission_id]
            tag_list = _tags(mission_facts[0][4].get(p.TAGS))
            tags.extend((tag, key) for tag in tag_list)
            headers.extend(_headers(key, mission_facts, tag_list))
            for name, ts, _, _, props in mission_facts:
                seq = props[p.SEQ]
                if name == _TOOL:
                    tool = _tool_row(key, seq, ts, props)
                    if tool is not None:
                        tools.append(tool)
                elif name == _LLM:
                    llm = self._llm_row(key, seq, ts, props)
                    if llm is not None:
                        llms.append(llm)
                elif name == _STEP:
                    step = _step_row(key, seq, ts, props)
                    if step is not None:
                        steps.append(step)
        conn.executemany(_HEADER_SQL, headers)
        conn.executemany(
            "INSERT OR IGNORE INTO mission_tags (tag, mission_key) VALUES (?, ?)", tags
        )
        conn.executemany(
            "INSERT OR IGNORE INTO mission_steps (mission_key, seq, step_index, name, success, "
            "duration_ms, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            steps,
        )
        conn.executemany(
            "INSERT OR IGNORE INTO mission_tool_calls (mission_key, seq, tool_name, duration_ms, "
            "success, error_code, step_index, called_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            tools,
        )
        conn.executemany(
            "INSERT OR IGNORE INTO mission_llm_calls (mission_key, seq, model, provider, "
            "input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, "
            "reasoning_tokens, cost, cost_source, duration_ms, called_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            llms,
        )
        # Counters are recomputed from the child rows of the missions whose rows changed.
        for sql, rows in ((_STEPS_SQL, steps), (_TOOLS_SQL, tools), (_LLM_SQL, llms)):
            if rows:
                conn.executemany(sql, sorted({(row[0],) for row in rows}))
        if tools:
            # Tools never leave a mission, so replacing its rows covers every tool it used.
            conn.executemany(_TOOL_USAGE_SQL, sorted({(row[0],) for row in tools}))

    def _llm_row(
        self, key: int, seq: int, ts: str, props: dict[str, Any]
    ) -> tuple[Any, ...] | None:
        model = props.get(p.REQUEST_MODEL) or props.get(p.MODEL)
        if type(model) is not str:
            return None
        counts = [
            _count(props.get(name))
            for name in (
                p.INPUT_TOKENS,
                p.OUTPUT_TOKENS,
                p.CACHE_READ_TOKENS,
                p.CACHE_CREATION_TOKENS,
                p.REASONING_TOKENS,
            )
        ]
        provider = props.get(p.PROVIDER)
        provider = provider if type(provider) is str else None
        if p.COST_USD in props:
            cost = _number(props[p.COST_USD])
            source = props.get(p.COST_SOURCE)
            source = source if type(source) is str else ("unknown" if cost is None else "caller")
        else:
            cost, source = self._price(model, provider, counts, ts)
        return (key, seq, model, provider, *counts, cost, source, _duration(props), ts)

    def _price(
        self, model: str, provider: str | None, counts: list[int], ts: str
    ) -> tuple[float | None, str]:
        try:
            usage = TokenUsage(
                input_tokens=counts[0],
                output_tokens=counts[1],
                cache_read_tokens=counts[2],
                cache_creation_tokens=counts[3],
                reasoning_tokens=counts[4],
            )
            estimate = self._prices.estimate(
                model, usage, provider=provider, at=parse_timestamp(ts)
            )
        except (ValueError, TypeError):  # inconsistent counts from a foreign producer
            return None, "unknown"
        total = estimate.total
        return (None if total is None else float(total)), estimate.source


def _mission_keys(conn: sqlite3.Connection, mission_ids: list[str]) -> dict[str, int]:
    keys: dict[str, int] = {}
    for start in range(0, len(mission_ids), _IDS_PER_QUERY):
        chunk = mission_ids[start : start + _IDS_PER_QUERY]
        marks = ", ".join("?" * len(chunk))
        keys.update(
            conn.execute(
                f"SELECT mission_id, mission_key FROM missions WHERE mission_id IN ({marks})",
                chunk,
            ).fetchall()
        )
    return keys


def _headers(key: int, facts: list[_Fact], tag_list: list[str]) -> list[dict[str, Any]]:
    """The header updates of one mission's events in a batch: usually one, two when the
    batch holds both a real status change and an inferred abandonment."""
    first_ts = last_ts = facts[0][1]
    start_ts: str | None = None
    last_seq = retries = 0
    paused_so_far = 0.0
    session = user = backend = model = None
    real: tuple[int, str, str, dict[str, Any]] | None = None  # seq, name, ts, props
    inferred: tuple[int, str, str, dict[str, Any]] | None = None
    for name, ts, fact_session, fact_user, props in facts:
        seq = props[p.SEQ]
        first_ts = min(first_ts, ts)
        last_ts = max(last_ts, ts)
        last_seq = max(last_seq, seq)
        count = props.get(p.RETRY_COUNT)
        if type(count) is int:
            retries = max(retries, count)
        session = session or fact_session
        user = user or fact_user
        backend = backend or _text(props.get(p.BACKEND))
        model = model or _text(props.get(p.MODEL))
        if name in _STARTS:
            start_ts = ts if start_ts is None else min(start_ts, ts)
        if name == _ABANDONED:
            if inferred is None or seq > inferred[0]:
                inferred = (seq, name, ts, props)
            continue
        if name not in _ENDS:
            paused = _number(props.get(p.PAUSED_MS))
            if paused is not None:
                paused_so_far = max(paused_so_far, paused)
        if props.get(p.STATUS) in _STATUS_VALUES and (real is None or seq > real[0]):
            real = (seq, name, ts, props)
    common = {
        "key": key,
        "backend": backend,
        "model": model,
        "tags": _json_encode(tag_list).decode() if tag_list else None,
        "session_id": session,
        "user_id": user,
        "first_ts": first_ts,
        "last_ts": last_ts,
        "last_seq": last_seq,
        "retry_count": retries,
        "start_ts": start_ts,
        "paused_so_far": paused_so_far,
    }
    out = [{**common, **_status_change(real, inferred=False)}]
    if inferred is not None:
        out.append({**common, **_status_change(inferred, inferred=True)})
    return out


def _status_change(
    fact: tuple[int, str, str, dict[str, Any]] | None, *, inferred: bool
) -> dict[str, Any]:
    if fact is None:
        return dict.fromkeys(_CHANGE_KEYS, None) | {"inferred": False, "final": False}
    seq, name, ts, props = fact
    final = name in _ENDS
    ending = final or inferred
    error_step = props.get(p.ERROR_STEP_INDEX)
    recoverable = props.get(p.ERROR_RECOVERABLE)
    return {
        "status": MissionStatus.ABANDONED.value if inferred else props[p.STATUS],
        "status_seq": seq,
        "inferred": inferred,
        "final": final,
        "paused_total": _number(props.get(p.PAUSED_MS)) if final else None,
        "ended_at": ts if ending else None,
        "execution_time_ms": _number(props.get(p.EXECUTION_TIME_MS)) if final else None,
        "error_code": _text(props.get(p.ERROR_CODE)) if ending else None,
        "error_message": _text(props.get(p.ERROR_MESSAGE)) if ending else None,
        "error_type": _text(props.get(p.ERROR_TYPE)) if ending else None,
        "error_step_index": error_step if ending and type(error_step) is int else None,
        "error_recoverable": int(recoverable) if ending and type(recoverable) is bool else None,
        "end_reason": _text(props.get(p.REASON)) if ending else None,
    }


_CHANGE_KEYS: Final = (
    "status",
    "status_seq",
    "paused_total",
    "ended_at",
    "execution_time_ms",
    "error_code",
    "error_message",
    "error_type",
    "error_step_index",
    "error_recoverable",
    "end_reason",
)


def _step_row(key: int, seq: int, ts: str, props: dict[str, Any]) -> tuple[Any, ...] | None:
    index = props.get(p.STEP_INDEX)
    if type(index) is not int or index < 0:
        return None
    return (
        key,
        seq,
        index,
        _text(props.get(p.STEP_NAME)),
        1 if props.get(p.SUCCESS) is not False else 0,
        _duration(props),
        ts,
    )


def _tool_row(key: int, seq: int, ts: str, props: dict[str, Any]) -> tuple[Any, ...] | None:
    name = props.get(p.TOOL_NAME)
    if type(name) is not str or not name:
        return None
    step = props.get(p.STEP_INDEX)
    return (
        key,
        seq,
        name,
        _duration(props) or 0.0,
        1 if props.get(p.SUCCESS) is not False else 0,
        _text(props.get(p.ERROR_CODE)),
        step if type(step) is int else None,
        ts,
    )


def _tags(value: object) -> list[str]:
    if type(value) is not list:
        return []
    return [tag for tag in value if type(tag) is str and tag]


def _text(value: object) -> str | None:
    return value if type(value) is str else None


def _number(value: object) -> float | None:
    if type(value) is float or type(value) is int:
        return float(value)
    return None


def _count(value: object) -> int:
    return value if type(value) is int and value >= 0 else 0


def _duration(props: dict[str, Any]) -> float | None:
    value = _number(props.get(p.DURATION_MS))
    return value if value is not None and value >= 0 else None


# -- abandonment, retention, reading ---------------------------------------------------------


def abandon_stale_missions(
    conn: sqlite3.Connection,
    older_than: dt.timedelta = DEFAULT_ABANDON_AFTER,
    now: dt.datetime | None = None,
    *,
    write: Callable[[Sequence[AnalyticsEvent]], None] | None = None,
    projection: MissionProjection | None = None,
) -> list[str]:
    """Mark active missions with no event for ``older_than`` as abandoned; returns their ids.

    Each gets a ``mission_abandoned`` event (``inferred: true``, a ``reason`` naming the
    last activity). With ``write`` (the store's own write path, which runs the
    projections) the events are handed to it; otherwise they are inserted into
    ``analytics_events`` and folded here. Run it inside the caller's transaction
    (``with conn: ...``); it does not commit.
    """
    if older_than <= dt.timedelta(0):
        raise ValueError(f"older_than must be a positive duration, got {older_than}")
    now = utc_now() if now is None else now
    cutoff = format_timestamp(now - older_than)
    stale = conn.execute(
        "SELECT mission_id, backend, model, tags, session_id, user_id, last_seq, retry_count, "
        "status, last_event_at FROM missions "
        f"WHERE status IN {_ACTIVE_SQL} AND last_event_at < ? ORDER BY last_event_at",
        (cutoff,),
    ).fetchall()
    if not stale:
        return []
    ns = to_ns(now)
    events: list[AnalyticsEvent] = []
    for mission_id, backend, model, tags, session, user, last_seq, retries, status, last in stale:
        props: dict[str, Any] = {
            p.MISSION_ID: mission_id,
            p.BACKEND: backend,
            p.MODEL: model,
            p.TAGS: _tags(_json_decode(tags)) if tags else [],
            p.SEQ: max(last_seq, 0),
            p.RETRY_COUNT: retries,
            p.STATUS: MissionStatus.ABANDONED.value,
            p.FROM_STATUS: status,
            p.INFERRED: True,
            p.REASON: f"no event since {last} (more than {older_than}); presumed crashed",
        }
        kind = EventType.MISSION_ABANDONED
        events.append(
            AnalyticsEvent(
                id=uuid7_from_ns(ns),
                category=kind.category(),
                event_type=kind,
                timestamp=now,
                session_id=session,
                priority=EventPriority.HIGH,
                data=props,
                user_id=user,
            )
        )
    if write is not None:
        write(events)
    else:
        rows = [event_to_row(e) for e in events]
        _insert_events(conn, rows, now)
        (projection or MissionProjection()).apply(conn, events, rows)
    return [row[0] for row in stale]


def _insert_events(conn: sqlite3.Connection, rows: list[EventRow], now: dt.datetime) -> None:
    columns = {r[1] for r in conn.execute("PRAGMA table_info(analytics_events)")}
    if not columns:
        return
    names = list(EventRow.__struct_fields__)
    extra: list[str] = []
    if "received_at" in columns:
        extra.append("received_at")
    if "mission_id" in columns:
        extra.append("mission_id")
    if "category" in columns:
        extra.append("category")
    if "priority" in columns:
        extra.append("priority")
    received = format_timestamp(now)
    values = []
    for row in rows:
        props = _json_decode(row.properties) if row.properties else {}
        more = {
            "received_at": received,
            "mission_id": props.get(p.MISSION_ID),
            "category": EventType.MISSION_ABANDONED.category().value,
            "priority": EventPriority.HIGH.value,
        }
        values.append((*row.astuple(), *(more[c] for c in extra)))
    all_columns = ", ".join(names + extra)
    marks = ", ".join("?" * (len(names) + len(extra)))
    conn.executemany(
        f"INSERT OR IGNORE INTO analytics_events ({all_columns}) VALUES ({marks})",
        values,
    )


def delete_missions(conn: sqlite3.Connection, ended_before: dt.datetime) -> int:
    """Delete finished missions that ended before ``ended_before``, with their child rows
    (the ``missions`` retention target); returns how many missions were deleted."""
    cutoff = format_timestamp(ended_before)
    doomed = f"SELECT mission_key FROM missions WHERE ended_at < ? AND status NOT IN {_ACTIVE_SQL}"
    for table in MISSION_TABLES[1:]:
        conn.execute(f"DELETE FROM {table} WHERE mission_key IN ({doomed})", (cutoff,))
    cursor = conn.execute(
        f"DELETE FROM missions WHERE ended_at < ? AND status NOT IN {_ACTIVE_SQL}",
        (cutoff,),
    )
    return cursor.rowcount


_READ_SQL: Final = """
SELECT mission_key, status, created_at, backend, model, session_id, user_id, started_at,
       ended_at, execution_time_ms, paused_ms, step_count, steps_completed, llm_calls,
       input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens,
       reasoning_tokens, total_tokens, total_cost, unpriced_llm_calls, tags, error_code,
       error_message, error_step_index, error_recoverable, error_type, retry_count
FROM missions WHERE mission_id = ?
"""


def read_mission(conn: sqlite3.Connection, mission_id: str) -> MissionAnalytics | None:
    """One stored mission with its per-tool usage, or None."""
    import sqlite3  # the caller's connection is proof it is loaded; this names its error

    try:
        row = conn.execute(_READ_SQL, (mission_id,)).fetchone()
    except sqlite3.OperationalError:  # no mission tables (migration 4 not applied)
        return None
    if row is None:
        return None
    (key, status, created, backend, model, session, user, started, ended, execution, paused,
     step_count, steps_ok, llm_calls, input_tokens, output_tokens, cache_read,
     cache_creation, reasoning, total_tokens, total_cost, unpriced, tags, error_code,
     error_message, error_step, recoverable, error_type, retries) = row  # fmt: skip
    tools = conn.execute(
        "SELECT tool_name, COUNT(*), SUM(duration_ms), SUM(success), SUM(success = 0) "
        "FROM mission_tool_calls WHERE mission_key = ? GROUP BY tool_name ORDER BY MIN(seq)",
        (key,),
    ).fetchall()
    error = None
    if error_code is not None:
        error = MissionError(
            code=error_code,
            message=error_message or "",
            step_index=error_step,
            recoverable=bool(recoverable),
            error_type=error_type,
        )
    return MissionAnalytics(
        mission_id=mission_id,
        status=MissionStatus(status),
        created_at=parse_timestamp(created),
        backend=backend or "",
        model=model or "",
        session_id=session,
        user_id=user,
        started_at=parse_timestamp(started) if started else None,
        completed_at=parse_timestamp(ended) if ended else None,
        execution_time_ms=execution,
        paused_ms=paused,
        step_count=step_count,
        steps_completed=steps_ok,
        tools_used=tuple(
            ToolUsage(
                tool_name=name,
                invocation_count=calls,
                total_time_ms=float(total_ms or 0.0),
                success_count=ok,
                failure_count=failed,
            )
            for name, calls, total_ms, ok, failed in tools
        ),
        llm_calls=llm_calls,
        token_usage=_usage(input_tokens, output_tokens, cache_read, cache_creation, reasoning),
        total_tokens=total_tokens,
        total_cost=total_cost,
        unpriced_llm_calls=unpriced,
        tags=tuple(_tags(_json_decode(tags))) if tags else (),
        error=error,
        retry_count=retries,
    )


def _usage(
    input_tokens: int, output_tokens: int, cache_read: int, cache_creation: int, reasoning: int
) -> TokenUsage:
    try:
        return TokenUsage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read_tokens=cache_read,
            cache_creation_tokens=cache_creation,
            reasoning_tokens=reasoning,
        )
    except ValueError:  # counts from a producer that broke the OpenTelemetry shape
        return TokenUsage(input_tokens=input_tokens, output_tokens=output_tokens)
