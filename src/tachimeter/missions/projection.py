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
import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

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
from tachimeter.store.bulk import execute_rows
from tachimeter.store.projection import RowCache

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

_ACTIVE_SET: Final = frozenset(_ACTIVE)
_FINAL: Final = frozenset({"completed", "failed", "cancelled"})
# Missions kept in memory between batches, each with the (seq, step, tool, tokens) of its
# child rows: a busy server's active missions, a few KB each, so tens of MB at most.
_MISSIONS_CACHED: Final = 10_000

# The columns of ``missions`` besides its keys: the header, folded from the events by
# the rules of _fold_common and _fold_status, then the counters, computed from the child rows.
_HEADER_COLUMNS: Final = (
    "backend",
    "model",
    "tags",
    "session_id",
    "user_id",
    "status",
    "status_seq",
    "created_at",
    "started_at",
    "ended_at",
    "last_event_at",
    "last_seq",
    "execution_time_ms",
    "paused_ms",
    "retry_count",
    "error_code",
    "error_message",
    "error_type",
    "error_step_index",
    "error_recoverable",
    "end_reason",
)
_COLUMNS: Final = (
    *_HEADER_COLUMNS,
    "step_count",
    "steps_completed",
    "steps_failed",
    "tool_calls",
    "tool_failures",
    "tool_time_ms",
    "distinct_tools",
    "llm_calls",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "reasoning_tokens",
    "total_tokens",
    "total_cost",
    "unpriced_llm_calls",
)
# A new mission's row before its first events are folded in: the table's defaults.
_NEW_ROW: Final[dict[str, Any]] = {
    **dict.fromkeys(_COLUMNS, 0),
    **dict.fromkeys(_HEADER_COLUMNS, None),
    "tags": "[]",
    "status": MissionStatus.CREATED.value,
    "status_seq": -1,
    "last_seq": -1,
    "paused_ms": 0.0,
    "retry_count": 0,
    "tool_time_ms": 0.0,
    "total_cost": 0.0,
}
_INSERT_MISSION_SQL: Final = (
    f"INSERT INTO missions (mission_key, mission_id, {', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join('?' * (len(_COLUMNS) + 2))})"
)
_INSERT_TAG_SQL: Final = "INSERT OR IGNORE INTO mission_tags (tag, mission_key) VALUES (?, ?)"
_INSERT_STEP_SQL: Final = (
    "INSERT OR IGNORE INTO mission_steps (mission_key, seq, step_index, name, success, "
    "duration_ms, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_TOOL_SQL: Final = (
    "INSERT OR IGNORE INTO mission_tool_calls (mission_key, seq, tool_name, duration_ms, "
    "success, error_code, step_index, called_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_LLM_SQL: Final = (
    "INSERT OR IGNORE INTO mission_llm_calls (mission_key, seq, model, provider, "
    "input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, "
    "reasoning_tokens, cost, cost_source, duration_ms, called_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_TOOL_USAGE_SQL: Final = (
    "INSERT OR REPLACE INTO mission_tool_usage (tool_name, mission_key, invocations, "
    "failures, total_ms) VALUES (?, ?, ?, ?, ?)"
)

_Fact = tuple[str, str, "str | None", "str | None", dict[str, Any]]
"""(event name, timestamp text, session id, user id, properties) of one mission event."""
_StatusFact = tuple[int, str, str, dict[str, Any]]
"""(seq, event name, timestamp text, properties) of a status-changing event."""


@functools.cache
def _update_sql(columns: tuple[str, ...]) -> str:
    """Sets ``columns`` from each row's values, the row's ``mission_key`` last: one
    statement for many missions (``execute_rows``)."""
    sets = ", ".join(f"{c} = v.column{i}" for i, c in enumerate(columns, start=1))
    marks = ", ".join("?" * (len(columns) + 1))
    return (
        f"UPDATE missions SET {sets} FROM (VALUES ({marks})) AS v "
        f"WHERE missions.mission_key = v.column{len(columns) + 1}"
    )


class _Mission:
    """A mission's row as it will be stored, and the child rows its counters come from:
    ``steps[seq] = (step_index, success)``, ``tools[seq] = (tool_name, success,
    duration_ms)``, ``llms[seq] = (five token counts, cost)``; ``tags``: those known to
    be in ``mission_tags``."""

    __slots__ = (
        "_llm_acc",
        "_step_acc",
        "_tool_acc",
        "key",
        "llms",
        "new",
        "row",
        "steps",
        "tags",
        "tools",
    )

    def __init__(self, key: int, row: dict[str, Any], *, new: bool) -> None:
        self.key = key
        self.row = row
        self.new = new
        self.steps: dict[int, tuple[int, int]] = {}
        self.tools: dict[int, tuple[str, int, float]] = {}
        self.llms: dict[int, tuple[Any, ...]] = {}
        self.tags: set[str] = set()
        # Running totals of the child rows counted so far, so a long mission's batch
        # costs its new rows, not all of them. Sums of floats are added in seq order
        # (as a rebuild adds them): a row older than the last one counted restarts them.
        self._step_acc: _StepTotals | None = None
        self._tool_acc: _ToolTotals | None = None
        self._llm_acc: _LlmTotals | None = None

    def count_steps(self, new: Sequence[int]) -> None:
        """step_count (highest index + 1), distinct steps that succeeded, failures;
        ``new``: the seqs of the steps added since the last count."""
        acc = self._step_acc
        if acc is None:
            acc = self._step_acc = _StepTotals()
            new = list(self.steps)
        for seq in new:
            index, ok = self.steps[seq]
            acc.add(index, ok)
        row = self.row
        row["step_count"] = acc.highest + 1
        row["steps_completed"] = len(acc.succeeded)
        row["steps_failed"] = acc.failed

    def count_tools(self, new: Sequence[int]) -> None:
        """Calls, failures, total time (summed in seq order, as any rebuild does), tools;
        ``new``: the seqs of the calls added since the last count."""
        acc = self._tool_acc = _in_seq_order(self._tool_acc, _ToolTotals, new, self.tools)
        row = self.row
        row["tool_calls"] = len(self.tools)
        row["tool_failures"] = acc.failures
        row["tool_time_ms"] = acc.time_ms
        row["distinct_tools"] = len(acc.per_tool)

    def tool_usage(self, tool: str) -> tuple[str, int, int, int, float]:
        """The ``mission_tool_usage`` row of one of its tools (after ``count_tools``)."""
        assert self._tool_acc is not None
        calls, failures, ms = self._tool_acc.per_tool[tool]
        return (tool, self.key, calls, failures, ms)

    def count_llm_calls(self, new: Sequence[int]) -> None:
        """Calls, the five token sums, total tokens, cost (seq order), unpriced calls;
        ``new``: the seqs of the calls added since the last count."""
        acc = self._llm_acc = _in_seq_order(self._llm_acc, _LlmTotals, new, self.llms)
        row = self.row
        sums = acc.tokens
        row["llm_calls"] = len(self.llms)
        row["input_tokens"] = sums[0]
        row["output_tokens"] = sums[1]
        row["cache_read_tokens"] = sums[2]
        row["cache_creation_tokens"] = sums[3]
        row["reasoning_tokens"] = sums[4]
        row["total_tokens"] = sums[0] + sums[1]
        row["total_cost"] = acc.cost
        row["unpriced_llm_calls"] = acc.unpriced


_Totals = TypeVar("_Totals", "_ToolTotals", "_LlmTotals")


def _in_seq_order(
    acc: _Totals | None, fresh: Callable[[], _Totals], new: Sequence[int], rows: dict[int, Any]
) -> _Totals:
    """``acc`` with the rows of seqs ``new`` added in seq order; recounted from every row
    when there is no ``acc`` yet or a new row is older than the last one counted (float
    sums must add in seq order to equal a rebuild's)."""
    if acc is None or min(new) <= acc.last_seq:
        acc, new = fresh(), list(rows)
    for seq in sorted(new):
        acc.add(seq, rows[seq])
    return acc


class _StepTotals:
    __slots__ = ("failed", "highest", "succeeded")

    def __init__(self) -> None:
        self.highest = -1
        self.succeeded: set[int] = set()
        self.failed = 0

    def add(self, index: int, ok: int) -> None:
        if index > self.highest:
            self.highest = index
        if ok:
            self.succeeded.add(index)
        else:
            self.failed += 1


class _ToolTotals:
    __slots__ = ("failures", "last_seq", "per_tool", "time_ms")

    def __init__(self) -> None:
        self.last_seq = -1
        self.failures = 0
        self.time_ms = 0.0
        # tool name -> [calls, failures, total ms]
        self.per_tool: dict[str, list[Any]] = {}

    def add(self, seq: int, call: tuple[str, int, float]) -> None:
        name, ok, ms = call
        self.last_seq = seq
        self.time_ms += ms
        usage = self.per_tool.get(name)
        if usage is None:
            usage = self.per_tool[name] = [0, 0, 0.0]
        usage[0] += 1
        usage[2] += ms
        if not ok:
            self.failures += 1
            usage[1] += 1


class _LlmTotals:
    __slots__ = ("cost", "last_seq", "tokens", "unpriced")

    def __init__(self) -> None:
        self.last_seq = -1
        self.tokens = [0, 0, 0, 0, 0]
        self.cost = 0.0
        self.unpriced = 0

    def add(self, seq: int, call: tuple[Any, ...]) -> None:
        self.last_seq = seq
        tokens = self.tokens
        for i in range(5):
            tokens[i] += call[i]
        if call[5] is None:
            self.unpriced += 1
        else:
            self.cost += call[5]


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

    __slots__ = ("_missions", "_prices")

    def __init__(self, prices: PriceTable | None = None) -> None:
        self._prices = DEFAULT_PRICE_TABLE if prices is None else prices
        self._missions: RowCache[str, _Mission] = RowCache(_MISSIONS_CACHED)

    @property
    def name(self) -> str:
        """``missions``."""
        return "missions"

    def discard(self) -> None:
        """Forget the cached missions (the store rolled back)."""
        self._missions.clear()

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
        self._missions.clear()
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
        cache = self._missions
        cache.check(conn)
        missions = self._missions_of(conn, by_mission)
        inserts: list[tuple[Any, ...]] = []
        updates: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        tags: list[tuple[str, int]] = []
        steps: list[tuple[Any, ...]] = []
        tools: list[tuple[Any, ...]] = []
        llms: list[tuple[Any, ...]] = []
        usage: list[tuple[Any, ...]] = []
        for mission_id, mission_facts in by_mission.items():
            mission = missions[mission_id]
            key = mission.key
            row = mission.row
            before = None if mission.new else dict(row)
            first_ts = last_ts = mission_facts[0][1]
            tag_list = _tags(mission_facts[0][4].get(p.TAGS))
            for tag in tag_list:
                if tag not in mission.tags:
                    mission.tags.add(tag)
                    tags.append((tag, key))
            # One pass: the header's reductions (earliest and latest times, highest seq,
            # the winning status changes) and the new child rows.
            start_ts: str | None = None
            last_seq = retries = 0
            paused_so_far = 0.0
            session = user = backend = model = None
            real: _StatusFact | None = None
            inferred: _StatusFact | None = None
            step_rows = len(steps)
            tool_rows = len(tools)
            llm_rows = len(llms)
            used: set[str] = set()
            for name, ts, fact_session, fact_user, props in mission_facts:
                seq = props[p.SEQ]
                if ts < first_ts:
                    first_ts = ts
                elif ts > last_ts:
                    last_ts = ts
                if seq > last_seq:
                    last_seq = seq
                count = props.get(p.RETRY_COUNT)
                if type(count) is int and count > retries:
                    retries = count
                session = session or fact_session
                user = user or fact_user
                backend = backend or _text(props.get(p.BACKEND))
                model = model or _text(props.get(p.MODEL))
                # A seq already stored is a replay: the child tables keep the first.
                if name == _TOOL:
                    if seq not in mission.tools:
                        tool = _tool_row(key, seq, ts, props)
                        if tool is not None:
                            tools.append(tool)
                            mission.tools[seq] = (tool[2], tool[4], tool[3])
                            used.add(tool[2])
                elif name == _LLM:
                    if seq not in mission.llms:
                        llm = self._llm_row(key, seq, ts, props)
                        if llm is not None:
                            llms.append(llm)
                            mission.llms[seq] = llm[4:10]
                elif name == _STEP:
                    if seq not in mission.steps:
                        step = _step_row(key, seq, ts, props)
                        if step is not None:
                            steps.append(step)
                            mission.steps[seq] = (step[2], step[4])
                elif name in _STARTS:
                    start_ts = ts if start_ts is None else min(start_ts, ts)
                elif name == _ABANDONED:
                    if inferred is None or seq > inferred[0]:
                        inferred = (seq, name, ts, props)
                    continue
                if name not in _ENDS:
                    paused = props.get(p.PAUSED_MS)
                    if paused is not None:
                        paused = _number(paused)
                        if paused is not None and paused > paused_so_far:
                            paused_so_far = paused
                if props.get(p.STATUS) in _STATUS_VALUES and (real is None or seq > real[0]):
                    real = (seq, name, ts, props)
            _fold_common(row, first_ts, last_ts, last_seq, retries, start_ts)
            for column, value in (
                ("backend", backend),
                ("model", model),
                ("session_id", session),
                ("user_id", user),
            ):
                if row[column] is None:
                    row[column] = value
            if tag_list and row["tags"] == "[]":
                row["tags"] = _json_encode(tag_list).decode()
            _fold_status(row, real, paused_so_far, inferred=False)
            if inferred is not None:
                _fold_status(row, inferred, paused_so_far, inferred=True)
            if len(steps) > step_rows:
                mission.count_steps([r[1] for r in steps[step_rows:]])
            if used:
                mission.count_tools([r[1] for r in tools[tool_rows:]])
                usage.extend(mission.tool_usage(tool) for tool in sorted(used))
            if len(llms) > llm_rows:
                mission.count_llm_calls([r[1] for r in llms[llm_rows:]])
            if before is None:
                inserts.append((key, mission_id, *[row[c] for c in _COLUMNS]))
                mission.new = False
            else:
                changed = tuple(c for c in _COLUMNS if row[c] != before[c])
                if changed:
                    updates.setdefault(changed, []).append((*[row[c] for c in changed], key))
            cache.put(mission_id, mission)
        execute_rows(conn, _INSERT_MISSION_SQL, inserts)
        for columns, values in updates.items():
            execute_rows(conn, _update_sql(columns), values)
        execute_rows(conn, _INSERT_TAG_SQL, tags)
        execute_rows(conn, _INSERT_STEP_SQL, steps)
        execute_rows(conn, _INSERT_TOOL_SQL, tools)
        execute_rows(conn, _INSERT_LLM_SQL, llms)
        execute_rows(conn, _TOOL_USAGE_SQL, usage)

    def _missions_of(
        self, conn: sqlite3.Connection, by_mission: dict[str, list[_Fact]]
    ) -> dict[str, _Mission]:
        """The batch's missions: cached, else read back, else new (keys in batch order,
        as SQLite would give them)."""
        cache = self._missions
        missions: dict[str, _Mission] = {}
        missing: list[str] = []
        for mission_id in by_mission:
            mission = cache.get(mission_id)
            if mission is None:
                missing.append(mission_id)
            else:
                missions[mission_id] = mission
        if not missing:
            return missions
        stored = _read_missions(conn, missing)
        last_key: int | None = None
        for mission_id in missing:
            mission = stored.get(mission_id)
            if mission is None:
                if last_key is None:
                    last_key = conn.execute(
                        "SELECT COALESCE(MAX(mission_key), 0) FROM missions"
                    ).fetchone()[0]
                    assert last_key is not None
                last_key += 1
                ts = by_mission[mission_id][0][1]
                mission = _Mission(
                    last_key, {**_NEW_ROW, "created_at": ts, "last_event_at": ts}, new=True
                )
            missions[mission_id] = mission
        return missions

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


def _read_missions(conn: sqlite3.Connection, mission_ids: list[str]) -> dict[str, _Mission]:
    """Stored missions with their child rows, by id (absent ids are not stored)."""
    out: dict[str, _Mission] = {}
    by_key: dict[int, _Mission] = {}
    for start in range(0, len(mission_ids), _IDS_PER_QUERY):
        chunk = mission_ids[start : start + _IDS_PER_QUERY]
        marks = ", ".join("?" * len(chunk))
        for mission_id, key, *values in conn.execute(
            f"SELECT mission_id, mission_key, {', '.join(_COLUMNS)} FROM missions "
            f"WHERE mission_id IN ({marks})",
            chunk,
        ):
            out[mission_id] = by_key[key] = _Mission(
                key, dict(zip(_COLUMNS, values, strict=True)), new=False
            )
    keys = list(by_key)
    for start in range(0, len(keys), _IDS_PER_QUERY):
        chunk_keys = keys[start : start + _IDS_PER_QUERY]
        marks = ", ".join("?" * len(chunk_keys))
        for key, seq, index, ok in conn.execute(
            "SELECT mission_key, seq, step_index, success FROM mission_steps "
            f"WHERE mission_key IN ({marks})",
            chunk_keys,
        ):
            by_key[key].steps[seq] = (index, ok)
        for key, seq, name, ok, ms in conn.execute(
            "SELECT mission_key, seq, tool_name, success, duration_ms FROM mission_tool_calls "
            f"WHERE mission_key IN ({marks})",
            chunk_keys,
        ):
            by_key[key].tools[seq] = (name, ok, ms)
        for key, seq, *counts in conn.execute(
            "SELECT mission_key, seq, input_tokens, output_tokens, cache_read_tokens, "
            "cache_creation_tokens, reasoning_tokens, cost FROM mission_llm_calls "
            f"WHERE mission_key IN ({marks})",
            chunk_keys,
        ):
            by_key[key].llms[seq] = tuple(counts)
    return out


def _fold_common(
    row: dict[str, Any],
    first_ts: str,
    last_ts: str,
    last_seq: int,
    retries: int,
    start_ts: str | None,
) -> None:
    """Widen a mission's times and counts by a batch's: creation is its earliest event,
    start its earliest start, last activity its latest event."""
    if first_ts < row["created_at"]:
        row["created_at"] = first_ts
    if last_ts > row["last_event_at"]:
        row["last_event_at"] = last_ts
    if last_seq > row["last_seq"]:
        row["last_seq"] = last_seq
    if retries > row["retry_count"]:
        row["retry_count"] = retries
    if start_ts is not None:
        started = row["started_at"]
        if started is None or start_ts < started:
            row["started_at"] = start_ts


def _fold_status(
    row: dict[str, Any],
    fact: _StatusFact | None,
    paused_so_far: float,
    *,
    inferred: bool,
) -> None:
    """Fold a batch's newest status change (None: none) into a mission's row.

    It wins when it is newer than the status in force; an inferred abandonment wins over
    the newest status seen so far, but only while the mission is still active. Pauses
    only grow until a final status, whose total then stands.
    """
    current = row["status"]
    wins = final = False
    if fact is not None:
        seq, name, ts, props = fact
        if inferred:
            wins = seq >= row["status_seq"] and current in _ACTIVE_SET
        else:
            wins = seq > row["status_seq"]
        final = name in _ENDS
    if final and wins:
        total = _number(props.get(p.PAUSED_MS))
        if total is not None:
            row["paused_ms"] = total
    elif current not in _FINAL and paused_so_far > row["paused_ms"]:
        row["paused_ms"] = paused_so_far
    if not wins:
        return
    ending = final or inferred
    error_step = props.get(p.ERROR_STEP_INDEX)
    recoverable = props.get(p.ERROR_RECOVERABLE)
    row["status"] = MissionStatus.ABANDONED.value if inferred else props[p.STATUS]
    row["status_seq"] = seq
    row["ended_at"] = ts if ending else None
    row["execution_time_ms"] = _number(props.get(p.EXECUTION_TIME_MS)) if final else None
    row["error_code"] = _text(props.get(p.ERROR_CODE)) if ending else None
    row["error_message"] = _text(props.get(p.ERROR_MESSAGE)) if ending else None
    row["error_type"] = _text(props.get(p.ERROR_TYPE)) if ending else None
    row["error_step_index"] = error_step if ending and type(error_step) is int else None
    row["error_recoverable"] = int(recoverable) if ending and type(recoverable) is bool else None
    row["end_reason"] = _text(props.get(p.REASON)) if ending else None


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
