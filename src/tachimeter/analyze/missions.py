"""Mission analysis (spec 414) over the stored mission tables: SQL and numpy, no per-mission
Python objects.

Every function takes a read connection to the store's SQLite file and an optional
:class:`MissionFilter`, and returns frozen msgspec Structs:

* :func:`calculate_metrics`: spec 414's ``MissionMetrics`` plus p95/p99, by model, cost
  per successful mission and tokens per step;
* :func:`tool_usage`: per tool invocations, success rate, latency percentiles, share of
  mission time, and which tools co-occur;
* :func:`complexity`: a complexity score per mission, buckets, success and cost per bucket;
* :func:`detect_patterns`: frequent tool sequences (n-grams and gapped), the patterns
  associated with failure, repeated-tool loops, where failures concentrate, recurring
  error codes;
* :func:`efficiency`: a 0-100 efficiency score per mission and per group, with its parts;
* :func:`compare`: groups compared as an A/B test with intervals and a verdict.

Percentiles: numpy ``method="linear"`` (Hyndman-Fan type 7, the default of numpy and R):
the p-th percentile of n sorted values interpolates between the values at ranks
``floor(h)`` and ``ceil(h)`` with ``h = (n - 1) * p / 100`` (0-based). Spec 414's
sketch indexed ``len/2`` and ``len*9/10``, which is biased and off by one.

Formulas (complexity, efficiency, tests) are in each function's docstring and in
docs/schema.md ("Migration 4: missions").

>>> import sqlite3
>>> from tachimeter.missions import MissionProjection, MissionTracker
>>> from tachimeter.model.rows import event_to_row
>>> from tachimeter.store.migrations import all_migrations
>>> from tachimeter.testing import MemorySink, collector_for_tests
>>> sink = MemorySink()
>>> with collector_for_tests(sink) as collector:
...     tracker = MissionTracker(collector)
...     for model in ("gpt-4o", "gpt-4o", "o3"):
...         mid = tracker.start_mission(None, "openai", model)
...         tracker.mission_started(mid)
...         tracker.tool_invoked(mid, "search", 40.0, True)
...         _ = tracker.mission_completed(mid)
...     collector.flush()
True
>>> conn = sqlite3.connect(":memory:")
>>> for migration in all_migrations():
...     _ = conn.executescript(migration.up)
>>> events = sink.events()
>>> MissionProjection().apply(conn, events, [event_to_row(e) for e in events])
>>> metrics = calculate_metrics(conn)
>>> metrics.total_missions, metrics.by_model, metrics.top_tools
(3, {'gpt-4o': 2, 'o3': 1}, [('search', 3)])
"""

from __future__ import annotations

import datetime as dt
import math
import sqlite3
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Literal, TypeAlias

import msgspec
import numpy as np
import numpy.typing as npt

from tachimeter.analyze.connection import ReadSource, read_connection
from tachimeter.errors import QueryError
from tachimeter.missions.lifecycle import MissionStatus
from tachimeter.missions.records import PERCENTILE_METHOD, MissionMetrics
from tachimeter.model.timestamps import format_timestamp, parse_timestamp

__all__ = [
    "COMPLEXITY_BUCKETS",
    "COMPLEXITY_WEIGHTS",
    "EFFICIENCY_WEIGHTS",
    "Comparison",
    "ComplexityBucket",
    "ComplexityReport",
    "EfficiencyReport",
    "GroupEfficiency",
    "GroupSummary",
    "LoopStats",
    "MissionEfficiency",
    "MissionFilter",
    "MissionSummary",
    "PairComparison",
    "PatternReport",
    "RecurringError",
    "SequencePattern",
    "StepFailures",
    "ToolPair",
    "ToolStats",
    "ToolUsageReport",
    "bootstrap_medians",
    "calculate_metrics",
    "compare",
    "complexity",
    "detect_patterns",
    "efficiency",
    "list_missions",
    "tool_usage",
    "two_proportion_p_value",
    "wilson_interval",
]

FloatArray: TypeAlias = npt.NDArray[np.float64]
IntArray: TypeAlias = npt.NDArray[np.int64]
BoolArray: TypeAlias = npt.NDArray[np.bool_]

_METHOD: Final = "linear"
_TERMINAL_SQL: Final = "('completed', 'failed', 'cancelled', 'abandoned')"
_TOP: Final = 10
# group_concat separator for tool names: the ASCII unit separator cannot appear in a tool
# name anyone would choose, and splitting on it runs at C speed.
_SEP: Final = "\x1f"


# -- filters -----------------------------------------------------------------------------------


def _as_tuple(value: str | Iterable[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


class MissionFilter(msgspec.Struct, frozen=True, kw_only=True):
    """Which missions to analyse. Fields combine with AND; a field given several values
    matches any of them (``model=("gpt-4o", "o3")``). Times bound ``created_at``
    (``since`` inclusive, ``until`` exclusive; naive datetimes are UTC).

    >>> MissionFilter(backend="anthropic", tag=("docs", "refactor")).tag
    ('docs', 'refactor')
    """

    since: dt.datetime | None = None
    until: dt.datetime | None = None
    backend: str | tuple[str, ...] | None = None
    model: str | tuple[str, ...] | None = None
    tag: str | tuple[str, ...] | None = None
    without_tag: str | tuple[str, ...] | None = None
    status: MissionStatus | str | tuple[MissionStatus | str, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("backend", "model", "tag", "without_tag"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                msgspec.structs.force_setattr(self, name, tuple(value))
        status = self.status
        if status is not None:
            items = (status,) if isinstance(status, (str, MissionStatus)) else tuple(status)
            try:
                values = tuple(MissionStatus(s).value for s in items)
            except ValueError as exc:
                raise QueryError(
                    f"MissionFilter.status: {exc}; use one of "
                    f"{', '.join(s.value for s in MissionStatus)}"
                ) from None
            msgspec.structs.force_setattr(self, "status", values)

    def where(self, alias: str = "m") -> tuple[str, list[Any]]:
        """A SQL condition on ``missions AS <alias>`` and its parameters."""
        clauses: list[str] = []
        params: list[Any] = []
        if self.since is not None:
            clauses.append(f"{alias}.created_at >= ?")
            params.append(format_timestamp(self.since))
        if self.until is not None:
            clauses.append(f"{alias}.created_at < ?")
            params.append(format_timestamp(self.until))
        for column in ("backend", "model"):
            values = _as_tuple(getattr(self, column))
            if values:
                clauses.append(f"{alias}.{column} IN ({', '.join('?' * len(values))})")
                params.extend(values)
        statuses = _as_tuple(self.status)  # type: ignore[arg-type]
        if statuses:
            clauses.append(f"{alias}.status IN ({', '.join('?' * len(statuses))})")
            params.extend(statuses)
        tags = _as_tuple(self.tag)
        if tags:
            clauses.append(
                f"{alias}.mission_key IN (SELECT mission_key FROM mission_tags "
                f"WHERE tag IN ({', '.join('?' * len(tags))}))"
            )
            params.extend(tags)
        excluded = _as_tuple(self.without_tag)
        if excluded:
            clauses.append(
                f"{alias}.mission_key NOT IN (SELECT mission_key FROM mission_tags "
                f"WHERE tag IN ({', '.join('?' * len(excluded))}))"
            )
            params.extend(excluded)
        return (" AND ".join(clauses) or "1"), params


_ALL: Final = MissionFilter()


def _in_scope(filter: MissionFilter | None, column: str = "mission_key") -> tuple[str, list[Any]]:
    """A condition selecting child rows of the filtered missions ("1" when unfiltered, so
    SQLite scans the child table without a membership test per row)."""
    if filter is None or filter == _ALL:
        return "1", []
    where, params = filter.where("m")
    return f"{column} IN (SELECT mission_key FROM missions m WHERE {where})", params


def _where(filter: MissionFilter | None, alias: str = "m") -> tuple[str, list[Any]]:
    return (filter or _ALL).where(alias)


def _query(conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> list[Any]:
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            raise QueryError(
                f"the store has no mission tables ({exc}); apply migration 4 "
                "(open it with the SQLite store) and register MissionProjection"
            ) from None
        raise QueryError(f"mission query failed: {exc}") from exc


def _percentiles(values: FloatArray, qs: Sequence[float]) -> list[float]:
    if values.size == 0:
        return [0.0] * len(qs)
    return [float(v) for v in np.percentile(values, qs, method=_METHOD)]


def _distinct(values: IntArray) -> IntArray:
    """Sorted distinct values (a sort and a mask: numpy's hash-based ``unique`` is several
    times slower on millions of int64)."""
    if values.size == 0:
        return values
    ordered = np.sort(values)
    keep = np.empty(ordered.size, dtype=bool)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def _floats(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> FloatArray:
    """One numeric column as an array (the row tuples are unpacked at C speed)."""
    rows = _query(conn, sql, params)
    if not rows:
        return np.empty(0, dtype=np.float64)
    return np.fromiter((r[0] for r in rows), dtype=np.float64, count=len(rows))


# -- metrics -----------------------------------------------------------------------------------


def calculate_metrics(source: ReadSource, filter: MissionFilter | None = None) -> MissionMetrics:
    """All of spec 414's ``MissionMetrics`` for the missions matching ``filter``.

    See :class:`~tachimeter.missions.records.MissionMetrics` for the definitions; the
    execution-time statistics are over finished missions with a known execution time.

    >>> from tachimeter.store.migrations import all_migrations
    >>> conn = sqlite3.connect(":memory:")
    >>> for migration in all_migrations():
    ...     _ = conn.executescript(migration.up)
    >>> calculate_metrics(conn).total_missions
    0
    """
    with read_connection(source) as conn:
        where, params = _where(filter)
        groups = _query(
            conn,
            "SELECT status, backend, model, COUNT(*), SUM(step_count), SUM(total_tokens), "
            "SUM(total_cost), SUM(unpriced_llm_calls > 0) FROM missions m "
            f"WHERE {where} GROUP BY status, backend, model",
            params,
        )
        by_status: dict[MissionStatus, int] = {}
        by_backend: dict[str, int] = {}
        by_model: dict[str, int] = {}
        total = steps = tokens = unpriced = 0
        cost = 0.0
        for status, backend, model, count, step_sum, token_sum, cost_sum, unpriced_sum in groups:
            key = MissionStatus(status)
            by_status[key] = by_status.get(key, 0) + count
            backend = backend or ""
            model = model or ""
            by_backend[backend] = by_backend.get(backend, 0) + count
            by_model[model] = by_model.get(model, 0) + count
            total += count
            steps += step_sum
            tokens += token_sum
            cost += cost_sum
            unpriced += unpriced_sum
        if total == 0:
            return MissionMetrics()
        completed = by_status.get(MissionStatus.COMPLETED, 0)
        failed = by_status.get(MissionStatus.FAILED, 0)
        cancelled = by_status.get(MissionStatus.CANCELLED, 0)
        abandoned = by_status.get(MissionStatus.ABANDONED, 0)
        finished = completed + failed + cancelled + abandoned
        durations = _floats(
            conn,
            f"SELECT execution_time_ms FROM missions m WHERE {where} "
            f"AND m.status IN {_TERMINAL_SQL} AND m.execution_time_ms IS NOT NULL",
            params,
        )
        p50, p90, p95, p99 = _percentiles(durations, (50, 90, 95, 99))
        if filter is None:
            tools = _query(
                conn,
                "SELECT tool_name, SUM(invocations) FROM mission_tool_usage "
                f"GROUP BY tool_name ORDER BY 2 DESC, 1 LIMIT {_TOP}",
            )
        else:
            tools = _query(
                conn,
                "SELECT tool_name, SUM(invocations) FROM mission_tool_usage WHERE mission_key IN "
                f"(SELECT mission_key FROM missions m WHERE {where}) "
                f"GROUP BY tool_name ORDER BY 2 DESC, 1 LIMIT {_TOP}",
                params,
            )
        errors = _query(
            conn,
            f"SELECT error_code, COUNT(*) FROM missions m WHERE {where} "
            "AND m.error_code IS NOT NULL AND m.status = 'failed' "
            f"GROUP BY error_code ORDER BY 2 DESC, 1 LIMIT {_TOP}",
            params,
        )
        return MissionMetrics(
            total_missions=total,
            completed_missions=completed,
            failed_missions=failed,
            cancelled_missions=cancelled,
            abandoned_missions=abandoned,
            active_missions=total - finished,
            success_rate=completed / finished if finished else 0.0,
            avg_execution_time_ms=float(durations.mean()) if durations.size else 0.0,
            median_execution_time_ms=p50,
            p90_execution_time_ms=p90,
            p95_execution_time_ms=p95,
            p99_execution_time_ms=p99,
            avg_steps=steps / total,
            total_tokens=tokens,
            total_cost=cost,
            missions_with_unpriced_calls=unpriced,
            cost_per_successful_mission=cost / completed if completed else None,
            tokens_per_step=tokens / steps if steps else None,
            top_tools=[(name, int(n)) for name, n in tools],
            top_errors=[(code, int(n)) for code, n in errors],
            by_status=by_status,
            by_backend=by_backend,
            by_model=by_model,
        )


# -- the mission frame: per-mission columns as arrays ------------------------------------------

_FRAME_COLUMNS: Final = (
    "mission_key",
    "status",
    "backend",
    "model",
    "created_at",
    "execution_time_ms",
    "step_count",
    "distinct_tools",
    "tool_calls",
    "llm_calls",
    "retry_count",
    "total_tokens",
    "total_cost",
    "unpriced_llm_calls",
)


class _Frame:
    """Columns of the filtered missions (one row per mission, ordered by mission_key)."""

    __slots__ = (
        "backend",
        "completed",
        "cost",
        "created_at",
        "distinct_tools",
        "duration",
        "failed",
        "finished",
        "key",
        "llm_calls",
        "model",
        "retries",
        "status",
        "steps",
        "tokens",
        "tool_calls",
        "unpriced",
    )

    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        n = len(rows)
        cols = list(zip(*rows, strict=True)) if rows else [()] * len(_FRAME_COLUMNS)
        self.key = np.array(cols[0], dtype=np.int64).reshape(n)
        self.status = np.array(cols[1], dtype=object).reshape(n)
        self.backend = np.array([b or "" for b in cols[2]], dtype=object).reshape(n)
        self.model = np.array([m or "" for m in cols[3]], dtype=object).reshape(n)
        self.created_at = np.array(cols[4], dtype=object).reshape(n)
        self.duration = np.array(
            [np.nan if d is None else d for d in cols[5]], dtype=np.float64
        ).reshape(n)
        self.steps = np.array(cols[6], dtype=np.float64).reshape(n)
        self.distinct_tools = np.array(cols[7], dtype=np.float64).reshape(n)
        self.tool_calls = np.array(cols[8], dtype=np.float64).reshape(n)
        self.llm_calls = np.array(cols[9], dtype=np.float64).reshape(n)
        self.retries = np.array(cols[10], dtype=np.float64).reshape(n)
        self.tokens = np.array(cols[11], dtype=np.float64).reshape(n)
        self.cost = np.array(cols[12], dtype=np.float64).reshape(n)
        self.unpriced = np.array(cols[13], dtype=np.int64).reshape(n) > 0
        self.completed = self.status == "completed"
        self.failed = self.status == "failed"
        self.finished = np.isin(self.status, ["completed", "failed", "cancelled", "abandoned"])

    def __len__(self) -> int:
        return int(self.key.size)


def _frame(conn: sqlite3.Connection, filter: MissionFilter | None) -> _Frame:
    where, params = _where(filter)
    rows = _query(
        conn,
        f"SELECT {', '.join('m.' + c for c in _FRAME_COLUMNS)} FROM missions m "
        f"WHERE {where} ORDER BY m.mission_key",
        params,
    )
    return _Frame(rows)


# -- tool usage --------------------------------------------------------------------------------


class ToolStats(msgspec.Struct, frozen=True, kw_only=True):
    """One tool across the analysed missions; latencies in milliseconds (percentiles are
    of the calls' durations read at microsecond precision).

    ``share_of_mission_time`` is the time spent in this tool over the total execution time
    of the finished missions (with a known execution time) that were analysed, both read at
    microsecond precision.
    """

    tool_name: str
    invocations: int
    missions: int
    successes: int
    failures: int
    success_rate: float
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    total_ms: float
    share_of_mission_time: float


class ToolPair(msgspec.Struct, frozen=True, kw_only=True):
    """Two tools used in the same mission: how often, and how much more than by chance
    (``lift`` = P(both) / (P(first) P(second)); 1 means independent)."""

    first: str
    second: str
    missions: int
    support: float
    lift: float


class ToolUsageReport(msgspec.Struct, frozen=True, kw_only=True):
    """Per-tool statistics (most invoked first) and the most frequent co-occurring pairs."""

    missions: int
    tools: list[ToolStats]
    co_occurrence: list[ToolPair]
    percentile_method: str = PERCENTILE_METHOD


def tool_usage(
    source: ReadSource,
    filter: MissionFilter | None = None,
    *,
    top_pairs: int = 20,
) -> ToolUsageReport:
    """Invocations, success rate, latency percentiles, time share and co-occurrence per tool."""
    with read_connection(source) as conn:
        where, params = _where(filter)
        mission_count = _query(conn, f"SELECT COUNT(*) FROM missions m WHERE {where}", params)[0][0]
        timed_keys, mission_time = _query(
            conn,
            "SELECT group_concat(mission_key), COALESCE(SUM(execution_time_ms), 0) "
            f"FROM missions m WHERE {where} AND m.status IN {_TERMINAL_SQL} "
            "AND m.execution_time_ms IS NOT NULL",
            params,
        )[0]
        in_scope, scope_params = _in_scope(filter)
        calls = _query(
            conn,
            # Whole microseconds: integers format and parse about twice as fast as floats.
            "SELECT group_concat(tool_name, char(31)), "
            "group_concat(CAST(ROUND(duration_ms * 1000) AS INTEGER)) "
            f"FROM mission_tool_calls WHERE {in_scope}",
            scope_params,
        )[0]
        totals = _query(
            conn,
            "SELECT tool_name, COUNT(*), SUM(invocations), SUM(failures), SUM(total_ms) "
            f"FROM mission_tool_usage WHERE {in_scope} GROUP BY tool_name",
            scope_params,
        )
        # Per mission and tool (spec 414's ToolUsage): the time share and co-occurrence
        # come from these rows in numpy rather than from a join per question.
        usage = _query(
            conn,
            "SELECT group_concat(mission_key), group_concat(tool_name, char(31)), "
            "group_concat(CAST(ROUND(total_ms * 1000) AS INTEGER)) "
            f"FROM mission_tool_usage WHERE {in_scope}",
            scope_params,
        )[0]
    if usage[0] is None:
        return ToolUsageReport(missions=mission_count, tools=[], co_occurrence=[])
    keys = np.fromstring(usage[0], dtype=np.int64, sep=",")
    vocabulary, tool = _tool_ids(usage[1].split(_SEP))
    total_us = np.fromstring(usage[2], dtype=np.int64, sep=",")
    timed = (
        np.isin(keys, np.fromstring(timed_keys, dtype=np.int64, sep=","))
        if timed_keys
        else np.zeros(keys.size, dtype=bool)
    )
    finished_ms = (
        np.bincount(tool[timed], weights=total_us[timed], minlength=len(vocabulary)) / 1000.0
    )
    latencies = _latencies(calls, vocabulary)
    position = {name: i for i, name in enumerate(vocabulary)}
    stats: list[ToolStats] = []
    for name, missions_using, n, failed, spent in totals:
        i = position[name]
        p50, p90, p95, p99 = _percentiles(latencies[i], (50, 90, 95, 99))
        stats.append(
            ToolStats(
                tool_name=name,
                invocations=int(n),
                missions=int(missions_using),
                successes=int(n - failed),
                failures=int(failed),
                success_rate=(n - failed) / n if n else 0.0,
                mean_ms=float(spent) / n if n else 0.0,
                p50_ms=p50,
                p90_ms=p90,
                p95_ms=p95,
                p99_ms=p99,
                total_ms=float(spent),
                share_of_mission_time=(
                    float(finished_ms[i]) / mission_time if mission_time else 0.0
                ),
            )
        )
    stats.sort(key=lambda s: (-s.invocations, s.tool_name))
    pairs = _co_occurrence(keys, tool, vocabulary, mission_count, top_pairs)
    return ToolUsageReport(missions=mission_count, tools=stats, co_occurrence=pairs)


def _tool_ids(names: list[str]) -> tuple[list[str], IntArray]:
    """The sorted distinct names and each name's index among them."""
    vocabulary = sorted(set(names))
    index = {name: i for i, name in enumerate(vocabulary)}
    return vocabulary, np.fromiter(map(index.__getitem__, names), dtype=np.int64, count=len(names))


def _latencies(row: tuple[Any, ...], vocabulary: list[str]) -> list[FloatArray]:
    """Each tool's call durations (ms), from concatenated names and microseconds."""
    out = [np.empty(0) for _ in vocabulary]
    if row[0] is None:
        return out
    names = row[0].split(_SEP)
    durations = np.fromstring(row[1], dtype=np.int64, sep=",") / 1000.0
    index = {name: i for i, name in enumerate(vocabulary)}
    tool = np.fromiter(map(index.__getitem__, names), dtype=np.int64, count=len(names))
    order = np.argsort(tool, kind="stable")
    bounds = np.searchsorted(tool[order], np.arange(len(vocabulary) + 1))
    ordered = durations[order]
    return [ordered[bounds[i] : bounds[i + 1]] for i in range(len(vocabulary))]


def _co_occurrence(
    keys: IntArray, tool: IntArray, vocabulary: list[str], missions: int, top: int
) -> list[ToolPair]:
    if not missions or keys.size == 0:
        return []
    row = np.searchsorted(_distinct(keys), keys)
    incidence = np.zeros((int(row.max()) + 1, len(vocabulary)), dtype=np.float32)
    incidence[row, tool] = 1.0
    # Missions x tools incidence: the tool-by-tool co-occurrence counts are one matrix product.
    together = incidence.T @ incidence
    alone = np.diag(together)
    first, second = np.triu_indices(len(vocabulary), k=1)
    counts = together[first, second]
    order = np.lexsort((second, first, -counts))
    pairs: list[ToolPair] = []
    for i in order[:top]:
        both = float(counts[i])
        if both == 0:
            break
        a, b = int(first[i]), int(second[i])
        expected = float(alone[a]) * float(alone[b]) / missions
        pairs.append(
            ToolPair(
                first=vocabulary[a],
                second=vocabulary[b],
                missions=int(both),
                support=both / missions,
                lift=both / expected if expected else 0.0,
            )
        )
    return pairs


# -- complexity --------------------------------------------------------------------------------

COMPLEXITY_WEIGHTS: Final[Mapping[str, tuple[float, float]]] = {
    # input: (weight, reference). Weights sum to 100; the structural inputs (the first
    # five) sum to 70 and alone define the peers of the efficiency score.
    "steps": (20.0, 20.0),
    "distinct_tools": (15.0, 10.0),
    "tool_calls": (15.0, 60.0),
    "llm_calls": (10.0, 30.0),
    "retries": (10.0, 3.0),
    "tokens": (15.0, 200_000.0),
    "duration_ms": (15.0, 1_800_000.0),
}
"""Complexity inputs: ``(weight, reference)``. Each part is
``weight * min(1, sqrt(value / reference))``: zero for nothing, the full weight at the
reference (a mission of 20 steps, 10 distinct tools, 60 tool calls, 30 LLM calls, 3
retries, 200 000 tokens and 30 minutes scores 100), with diminishing increments so that
one huge input cannot hide the others."""

COMPLEXITY_BUCKETS: Final = (("simple", 0.0, 30.0), ("moderate", 30.0, 60.0),
                             ("complex", 60.0, 100.0))  # fmt: skip
"""(name, lower bound inclusive, upper bound exclusive; the last includes 100)."""

_STRUCTURAL: Final = ("steps", "distinct_tools", "tool_calls", "llm_calls", "retries")


def _inputs(frame: _Frame) -> dict[str, FloatArray]:
    return {
        "steps": frame.steps,
        "distinct_tools": frame.distinct_tools,
        "tool_calls": frame.tool_calls,
        "llm_calls": frame.llm_calls,
        "retries": frame.retries,
        "tokens": frame.tokens,
        "duration_ms": np.nan_to_num(frame.duration, nan=0.0),
    }


def _complexity_parts(frame: _Frame) -> dict[str, FloatArray]:
    parts: dict[str, FloatArray] = {}
    for name, values in _inputs(frame).items():
        weight, reference = COMPLEXITY_WEIGHTS[name]
        parts[name] = weight * np.minimum(1.0, np.sqrt(np.maximum(values, 0.0) / reference))
    return parts


def _bucket_of(scores: FloatArray) -> IntArray:
    edges = np.array([upper for _, _, upper in COMPLEXITY_BUCKETS[:-1]])
    return np.searchsorted(edges, scores, side="right").astype(np.int64)


class ComplexityBucket(msgspec.Struct, frozen=True, kw_only=True):
    """Missions in one complexity bucket: how many, how often they succeed, what they cost.

    ``success_rate`` is over finished missions; ``median_cost``/``mean_cost`` are over
    missions whose every LLM call was priced.
    """

    name: str
    lower: float
    upper: float
    missions: int
    finished: int
    success_rate: float | None
    median_duration_ms: float | None
    median_cost: float | None
    mean_cost: float | None
    mean_parts: dict[str, float]


class ComplexityReport(msgspec.Struct, frozen=True, kw_only=True):
    """Complexity buckets; ``scores`` maps mission id to score when asked for."""

    missions: int
    buckets: list[ComplexityBucket]
    weights: dict[str, tuple[float, float]]
    mean_score: float
    scores: dict[str, float] | None = None


def complexity(
    source: ReadSource,
    filter: MissionFilter | None = None,
    *,
    include_scores: bool = False,
) -> ComplexityReport:
    """Complexity score (0-100) of each mission, bucketed, with success and cost per bucket.

    ``score = sum(weight_i * min(1, sqrt(x_i / reference_i)))`` over steps, distinct tools,
    tool calls, LLM calls, retries, tokens and duration (:data:`COMPLEXITY_WEIGHTS`);
    buckets are :data:`COMPLEXITY_BUCKETS`. The references are fixed, so a score means the
    same thing in every store and every filter.
    """
    with read_connection(source) as conn:
        frame = _frame(conn, filter)
        parts = _complexity_parts(frame)
        scores = np.sum(list(parts.values()), axis=0) if len(frame) else np.empty(0)
        bucket = _bucket_of(scores)
        priced = ~frame.unpriced
        buckets: list[ComplexityBucket] = []
        for i, (name, lower, upper) in enumerate(COMPLEXITY_BUCKETS):
            inside = bucket == i
            finished = inside & frame.finished
            costed = inside & priced
            durations = frame.duration[finished & ~np.isnan(frame.duration)]
            n_finished = int(finished.sum())
            buckets.append(
                ComplexityBucket(
                    name=name,
                    lower=lower,
                    upper=upper,
                    missions=int(inside.sum()),
                    finished=n_finished,
                    success_rate=(
                        float((frame.completed & inside).sum()) / n_finished if n_finished else None
                    ),
                    median_duration_ms=_percentiles(durations, (50,))[0]
                    if durations.size
                    else None,
                    median_cost=(
                        float(np.percentile(frame.cost[costed], 50, method=_METHOD))
                        if costed.any()
                        else None
                    ),
                    mean_cost=float(frame.cost[costed].mean()) if costed.any() else None,
                    mean_parts={
                        k: float(v[inside].mean()) if inside.any() else 0.0
                        for k, v in parts.items()
                    },
                )
            )
        ids = _mission_ids(conn, frame.key) if include_scores else None
        return ComplexityReport(
            missions=len(frame),
            buckets=buckets,
            weights=dict(COMPLEXITY_WEIGHTS),
            mean_score=float(scores.mean()) if scores.size else 0.0,
            scores=(
                {mid: float(s) for mid, s in zip(ids, scores.tolist(), strict=True)}
                if ids is not None
                else None
            ),
        )


def _mission_ids(conn: sqlite3.Connection, keys: IntArray) -> list[str]:
    if keys.size == 0:
        return []
    found = dict(_query(conn, "SELECT mission_key, mission_id FROM missions"))
    return [found[int(k)] for k in keys]


# -- efficiency --------------------------------------------------------------------------------

EFFICIENCY_WEIGHTS: Final[Mapping[str, float]] = {
    "outcome": 40.0,
    "time": 20.0,
    "tokens": 20.0,
    "cost": 20.0,
}
"""Parts of the efficiency score and their maximum points (sum 100)."""


class MissionEfficiency(msgspec.Struct, frozen=True, kw_only=True):
    """One mission's efficiency: the score and the points of each part (None: unknown, and
    the score is rescaled over the known parts)."""

    mission_id: str
    score: float
    complexity_bucket: str
    outcome: float
    time: float | None
    tokens: float | None
    cost: float | None


class GroupEfficiency(msgspec.Struct, frozen=True, kw_only=True):
    """Mean efficiency of a group of finished missions, and the mean of each part."""

    group: str
    missions: int
    score: float
    outcome: float
    time: float | None
    tokens: float | None
    cost: float | None


class EfficiencyReport(msgspec.Struct, frozen=True, kw_only=True):
    """Efficiency per group (best first), the overall mean, and per mission when asked."""

    missions: int
    score: float
    groups: list[GroupEfficiency]
    weights: dict[str, float]
    formula: str
    by_mission: list[MissionEfficiency] | None = None


_EFFICIENCY_FORMULA: Final = (
    "score = 100 * (sum of known parts) / (sum of their maximum points); "
    "outcome = 40 if completed else 0; time, tokens and cost = 20 * min(1, peer median / "
    "value) (20 when the value is 0), where peers are the completed missions of the same "
    "structural complexity bucket (steps, distinct tools, tool calls, LLM calls, retries); "
    "a part is unknown when the value is (no execution time, an unpriced LLM call)"
)

GroupBy: TypeAlias = Literal["backend", "model", "tag", "status", "day", "week", "month"]


def _efficiency_parts(
    frame: _Frame,
) -> tuple[BoolArray, dict[str, FloatArray], FloatArray, IntArray]:
    """(finished mask, parts with NaN for unknown, scores, structural bucket) per mission."""
    parts = _complexity_parts(frame)
    structural = sum((parts[k] for k in _STRUCTURAL), np.zeros(len(frame)))
    weight = sum(COMPLEXITY_WEIGHTS[k][0] for k in _STRUCTURAL)
    bucket = _bucket_of(structural * (100.0 / weight))
    finished = frame.finished
    out: dict[str, FloatArray] = {
        "outcome": np.where(frame.completed, EFFICIENCY_WEIGHTS["outcome"], 0.0)
    }
    cost = np.where(frame.unpriced, np.nan, frame.cost)
    for name, values in (("time", frame.duration), ("tokens", frame.tokens), ("cost", cost)):
        points = np.full(len(frame), np.nan)
        for b in range(len(COMPLEXITY_BUCKETS)):
            members = finished & (bucket == b)
            peers = members & frame.completed & ~np.isnan(values)
            if not peers.any():
                peers = members & ~np.isnan(values)
            if not peers.any():
                continue
            median = float(np.percentile(values[peers], 50, method=_METHOD))
            v = values[members]
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where(np.isnan(v), np.nan, np.where(v > 0, median / v, 1.0))
            points[members] = EFFICIENCY_WEIGHTS[name] * np.minimum(1.0, ratio)
        out[name] = points
    known_points = np.zeros(len(frame))
    known_weight = np.zeros(len(frame))
    for name, points in out.items():
        known = ~np.isnan(points)
        known_points += np.where(known, points, 0.0)
        known_weight += np.where(known, EFFICIENCY_WEIGHTS[name], 0.0)
    scores = 100.0 * known_points / np.maximum(known_weight, 1e-12)
    return finished, out, scores, bucket


def efficiency(
    source: ReadSource,
    filter: MissionFilter | None = None,
    *,
    group_by: GroupBy | None = "model",
    include_missions: bool = False,
) -> EfficiencyReport:
    """Efficiency score (0-100) of finished missions, per group, with its parts.

    Rewards success and penalises time, tokens and cost relative to completed missions
    of similar *structural* complexity (see :data:`EFFICIENCY_WEIGHTS` and
    ``EfficiencyReport.formula``). Peers are grouped by the structural part of the
    complexity score only: grading a slow mission against a yardstick that itself grows
    with duration would excuse its slowness.
    """
    with read_connection(source) as conn:
        frame = _frame(conn, filter)
        finished, parts, scores, bucket = _efficiency_parts(frame)
        groups: list[GroupEfficiency] = []
        if group_by is not None:
            for name, member_mask in _groups(conn, frame, group_by).items():
                mask = member_mask & finished
                if not mask.any():
                    continue
                groups.append(_group_efficiency(name, mask, parts, scores))
            groups.sort(key=lambda g: (-g.score, g.group))
        by_mission = None
        if include_missions:
            ids = _mission_ids(conn, frame.key)
            names = [b[0] for b in COMPLEXITY_BUCKETS]
            by_mission = [
                MissionEfficiency(
                    mission_id=ids[i],
                    score=float(scores[i]),
                    complexity_bucket=names[int(bucket[i])],
                    outcome=float(parts["outcome"][i]),
                    time=_maybe(parts["time"][i]),
                    tokens=_maybe(parts["tokens"][i]),
                    cost=_maybe(parts["cost"][i]),
                )
                for i in np.flatnonzero(finished)
            ]
        n = int(finished.sum())
        return EfficiencyReport(
            missions=n,
            score=float(scores[finished].mean()) if n else 0.0,
            groups=groups,
            weights=dict(EFFICIENCY_WEIGHTS),
            formula=_EFFICIENCY_FORMULA,
            by_mission=by_mission,
        )


def _maybe(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _nanmean(values: FloatArray) -> float | None:
    known = values[~np.isnan(values)]
    return float(known.mean()) if known.size else None


def _group_efficiency(
    name: str, mask: BoolArray, parts: dict[str, FloatArray], scores: FloatArray
) -> GroupEfficiency:
    return GroupEfficiency(
        group=name,
        missions=int(mask.sum()),
        score=float(scores[mask].mean()),
        outcome=float(parts["outcome"][mask].mean()),
        time=_nanmean(parts["time"][mask]),
        tokens=_nanmean(parts["tokens"][mask]),
        cost=_nanmean(parts["cost"][mask]),
    )


def _groups(conn: sqlite3.Connection, frame: _Frame, by: str) -> dict[str, BoolArray]:
    """Member masks over the frame's missions for each value of ``by``."""
    if by in ("backend", "model", "status"):
        column = getattr(frame, by)
        return {str(v): column == v for v in sorted(set(column.tolist()))}
    if by in ("day", "week", "month"):
        labels = np.array([_period(str(c), by) for c in frame.created_at], dtype=object)
        return {v: labels == v for v in sorted(set(labels.tolist()))}
    if by == "tag":
        rows = _query(conn, "SELECT tag, mission_key FROM mission_tags ORDER BY tag")
        by_tag: dict[str, list[int]] = {}
        for tag, key in rows:
            by_tag.setdefault(tag, []).append(key)
        return {
            tag: np.isin(frame.key, np.array(keys, dtype=np.int64)) for tag, keys in by_tag.items()
        }
    raise QueryError(
        f"cannot group missions by {by!r}; use backend, model, tag, status, day, week or month"
    )


def _period(created_at: str, by: str) -> str:
    if by == "day":
        return created_at[:10]
    if by == "month":
        return created_at[:7]
    year, week, _ = dt.date.fromisoformat(created_at[:10]).isocalendar()
    return f"{year}-W{week:02d}"


# -- patterns ----------------------------------------------------------------------------------


class SequencePattern(msgspec.Struct, frozen=True, kw_only=True):
    """A tool-call pattern: ``kind`` is ``ngram`` (consecutive calls) or ``gapped`` (in this
    order, other calls allowed between). Support counts missions, not occurrences.

    ``failure_rate`` is over finished missions containing the pattern; ``lift`` is that
    rate over the failure rate of all finished missions; ``p_value`` is the one-sided
    two-proportion z-test of failure with versus without the pattern, and ``q_value`` its
    Benjamini-Hochberg adjustment over every pattern tested.
    """

    tools: tuple[str, ...]
    kind: Literal["ngram", "gapped"]
    missions: int
    support: float
    failures: int
    failure_rate: float
    lift: float
    p_value: float
    q_value: float


class LoopStats(msgspec.Struct, frozen=True, kw_only=True):
    """Repeated-tool loops of one tool: runs of at least ``min_repeats`` consecutive calls
    of it with no step completed in between (no progress)."""

    tool_name: str
    loops: int
    missions: int
    longest_run: int
    failure_rate_with_loop: float | None
    failure_rate_without_loop: float | None


class StepFailures(msgspec.Struct, frozen=True, kw_only=True):
    """Failures at one step index: missions whose error names this step, and the step's
    own failed completions."""

    step_index: int
    failed_missions: int
    share_of_failed_missions: float
    step_records: int
    step_failures: int
    step_failure_rate: float


class RecurringError(msgspec.Struct, frozen=True, kw_only=True):
    """An error code seen in at least two failed missions or tool calls."""

    code: str
    failed_missions: int
    share_of_failed_missions: float
    recoverable_share: float | None
    tool_call_failures: int
    first_seen: str | None
    last_seen: str | None


class PatternReport(msgspec.Struct, frozen=True, kw_only=True):
    """Everything :func:`detect_patterns` found."""

    missions: int
    failed_missions: int
    frequent: list[SequencePattern]
    failure_associated: list[SequencePattern]
    loops: list[LoopStats]
    missions_with_loops: int
    failure_steps: list[StepFailures]
    recurring_errors: list[RecurringError]
    min_support: float
    min_missions: int
    alpha: float


class _Sequences:
    """Tool calls of the finished missions, in order, as parallel arrays."""

    __slots__ = ("failed", "mission", "missions", "names", "position", "seq", "starts", "tool")

    def __init__(
        self,
        mission: IntArray,
        tool: IntArray,
        seq: IntArray,
        names: list[str],
        failed: BoolArray,
    ) -> None:
        self.mission = mission
        self.tool = tool
        self.seq = seq
        self.names = names
        self.failed = failed
        self.missions = int(failed.size)
        counts = np.bincount(mission, minlength=self.missions)
        self.starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
        self.position = np.arange(mission.size, dtype=np.int64) - self.starts[mission]


def _sequences(
    conn: sqlite3.Connection, filter: MissionFilter | None
) -> tuple[_Sequences, IntArray]:
    """The tool calls of the finished missions in scope, and those missions' keys."""
    where, params = _where(filter)
    rows = _query(
        conn,
        "SELECT group_concat(m.mission_key), group_concat(m.status), "
        "group_concat(m.tool_calls) FROM (SELECT mission_key, "
        f"(status IN {_TERMINAL_SQL}) + (status = 'failed') AS status, tool_calls "
        f"FROM missions m WHERE {where} ORDER BY mission_key) m",
        params,
    )
    empty = np.empty(0, dtype=np.int64)
    if not rows or rows[0][0] is None:
        return _Sequences(empty, empty, empty, [], np.empty(0, dtype=bool)), empty
    scope_keys = np.fromstring(rows[0][0], dtype=np.int64, sep=",")
    state = np.fromstring(rows[0][1], dtype=np.int64, sep=",")  # 0 active, 1 ended, 2 failed
    counts = np.fromstring(rows[0][2], dtype=np.int64, sep=",")
    finished = state > 0
    keys = scope_keys[finished]
    failed = state[finished] == 2
    # Unfiltered, one scan in primary-key order beats a membership test per row in SQL;
    # filtered, the IN list usually selects far fewer rows.
    in_scope, scope_params = _in_scope(filter)
    calls = _query(
        conn,
        "SELECT group_concat(seq), group_concat(tool_name, char(31)) FROM (SELECT seq, "
        f"tool_name FROM mission_tool_calls WHERE {in_scope} ORDER BY mission_key, seq)",
        scope_params,
    )[0]
    if calls[0] is None or not keys.size:
        return _Sequences(empty, empty, empty, [], failed), keys
    seq = np.fromstring(calls[0], dtype=np.int64, sep=",")
    vocabulary, tool = _tool_ids(calls[1].split(_SEP))
    if int(counts.sum()) == tool.size:
        # missions.tool_calls (kept equal to the child rows by the projection) says which
        # mission each call belongs to, without sending two million keys through SQL.
        owner = np.repeat(np.arange(scope_keys.size), counts)
    else:  # the tables were edited by hand: ask for the keys
        call_keys = np.fromstring(
            _query(
                conn,
                "SELECT group_concat(mission_key) FROM (SELECT mission_key FROM "
                f"mission_tool_calls WHERE {in_scope} ORDER BY mission_key, seq)",
                scope_params,
            )[0][0],
            dtype=np.int64,
            sep=",",
        )
        owner = np.searchsorted(scope_keys, call_keys)
    keep = finished[owner]
    if not keep.all():  # calls of missions still active
        seq, tool, owner = seq[keep], tool[keep], owner[keep]
        present = _distinct(tool)
        vocabulary = [vocabulary[i] for i in present.tolist()]
        tool = np.searchsorted(present, tool).astype(np.int64)
    # Index among the finished missions: how many finished missions precede the owner.
    rank = np.cumsum(finished) - 1
    return _Sequences(rank[owner].astype(np.int64), tool, seq, vocabulary, failed), keys


class _Candidates:
    """Patterns being scored: tools, kind, and per pattern the missions containing it."""

    __slots__ = ("failures", "kind", "missions", "tools")

    def __init__(self) -> None:
        self.tools: list[tuple[int, ...]] = []
        self.kind: list[Literal["ngram", "gapped"]] = []
        self.missions: list[int] = []
        self.failures: list[int] = []

    def add(
        self, tools: tuple[int, ...], kind: Literal["ngram", "gapped"], n: int, failed: int
    ) -> None:
        self.tools.append(tools)
        self.kind.append(kind)
        self.missions.append(n)
        self.failures.append(failed)


def _ngrams(data: _Sequences, max_n: int, min_count: int, out: _Candidates) -> None:
    """Consecutive tool sequences of length 1..max_n, counted once per mission."""
    vocab = max(len(data.names), 1)
    for n in range(1, max_n + 1):
        if data.tool.size < n or vocab**n >= 2**62 // max(data.missions, 1):
            break
        last = data.tool.size - n + 1
        same = data.mission[:last] == data.mission[n - 1 :]
        code = np.zeros(last, dtype=np.int64)
        for j in range(n):
            code = code * vocab + data.tool[j : j + last]
        code = code[same]
        mission = data.mission[:last][same]
        present = _distinct(mission * vocab**n + code)
        pattern_code = present % vocab**n
        pattern_mission = present // vocab**n
        codes = _distinct(pattern_code)
        inverse = np.searchsorted(codes, pattern_code)
        support = np.bincount(inverse, minlength=codes.size)
        fails = np.bincount(inverse, weights=data.failed[pattern_mission], minlength=codes.size)
        for i in np.flatnonzero(support >= min_count):
            c = int(codes[i])
            tools = []
            for _ in range(n):
                tools.append(c % vocab)
                c //= vocab
            out.add(tuple(reversed(tools)), "ngram", int(support[i]), int(fails[i]))


def _gapped(data: _Sequences, min_count: int, max_tools: int, out: _Candidates) -> None:
    """Gapped sequential patterns a..b and a..b..c (other calls allowed between), Apriori-
    pruned: only tools, and pairs, that reach the minimum support are extended."""
    if data.tool.size == 0:
        return
    m = data.missions
    present = _distinct(data.mission * len(data.names) + data.tool)
    tool_support = np.bincount(present % len(data.names), minlength=len(data.names))
    frequent = [
        int(t) for t in np.argsort(-tool_support, kind="stable") if tool_support[t] >= min_count
    ]
    frequent = frequent[:max_tools]
    if not frequent:
        return
    f = len(frequent)
    longest = int(data.position.max())
    big = np.int64(longest + 2)
    # Positions are compared (missions x tools) once per pattern extended: the narrowest
    # type that holds them halves the memory those comparisons stream through.
    narrow = np.int16 if longest < np.iinfo(np.int16).max - 1 else np.int32
    never = np.iinfo(narrow).max
    first = np.full((m, f), never, dtype=narrow)
    last = np.full((m, f), -1, dtype=narrow)
    occurrences: list[IntArray] = []  # mission * big + position of each call of the tool
    occurrence_missions: list[IntArray] = []
    for j, t in enumerate(frequent):
        at = data.tool == t
        mission, pos = data.mission[at], data.position[at]
        # Calls are sorted by mission then position: a mission's first occurrence of the
        # tool starts its run in this subset, its last ends it.
        starts = np.flatnonzero(np.diff(mission, prepend=-1))
        ends = np.append(starts[1:], mission.size) - 1
        first[mission[starts], j] = pos[starts]
        last[mission[ends], j] = pos[ends]
        occurrences.append(mission * big + pos)
        occurrence_missions.append(mission)
    failed = data.failed
    for a in range(f):
        rows = np.flatnonzero(first[:, a] != never)  # missions that call a
        first_a = first[rows, a]
        last_a = last[rows]
        failed_a = failed[rows]
        # a..b: a's first call comes before b's last call.
        follows = first_a[:, None] < last_a
        counts = np.count_nonzero(follows, axis=0)
        fails = np.count_nonzero(follows[failed_a], axis=0)
        extend = np.flatnonzero(counts >= min_count).tolist()
        for b in extend:
            out.add((frequent[a], frequent[b]), "gapped", int(counts[b]), int(fails[b]))
        base = rows.astype(np.int64) * big
        queries = base + first_a
        for b in extend:
            # a..b..c: some c after the first b that follows a's first call.
            occurrence = occurrences[b]
            found = np.searchsorted(occurrence, queries, side="right")
            inside = np.minimum(found, occurrence.size - 1)
            hit = (found < occurrence.size) & (occurrence_missions[b][inside] == rows)
            next_b = np.where(hit, occurrence[inside] - base, never).astype(narrow)
            follows = next_b[:, None] < last_a
            counts = np.count_nonzero(follows, axis=0)
            fails = np.count_nonzero(follows[failed_a], axis=0)
            for c in np.flatnonzero(counts >= min_count).tolist():
                out.add(
                    (frequent[a], frequent[b], frequent[c]), "gapped", int(counts[c]), int(fails[c])
                )


def _association(
    candidates: _Candidates, data: _Sequences, names: list[str]
) -> list[SequencePattern]:
    """Score every candidate: failure rate, lift and a one-sided two-proportion z-test."""
    total = data.missions
    total_failed = int(data.failed.sum())
    base = total_failed / total if total else 0.0
    n1 = np.array(candidates.missions, dtype=np.float64)
    f1 = np.array(candidates.failures, dtype=np.float64)
    n0 = total - n1
    f0 = total_failed - f1
    with np.errstate(divide="ignore", invalid="ignore"):
        rate1 = np.where(n1 > 0, f1 / n1, 0.0)
        rate0 = np.where(n0 > 0, f0 / n0, 0.0)
        pooled = (f1 + f0) / total if total else np.zeros(n1.size)
        se = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / np.where(n0 > 0, n0, np.inf)))
        z = np.where((se > 0) & (n0 > 0), (rate1 - rate0) / se, 0.0)
    p_values = np.array([0.5 * math.erfc(v / math.sqrt(2)) for v in z.tolist()])
    q_values = _benjamini_hochberg(p_values)
    out: list[SequencePattern] = []
    for i, tools in enumerate(candidates.tools):
        out.append(
            SequencePattern(
                tools=tuple(names[t] for t in tools),
                kind=candidates.kind[i],
                missions=int(n1[i]),
                support=float(n1[i]) / total if total else 0.0,
                failures=int(f1[i]),
                failure_rate=float(rate1[i]),
                lift=float(rate1[i] / base) if base else 0.0,
                p_value=float(p_values[i]),
                q_value=float(q_values[i]),
            )
        )
    return out


def _benjamini_hochberg(p: FloatArray) -> FloatArray:
    if p.size == 0:
        return p
    order = np.argsort(p)
    ranked = p[order] * p.size / np.arange(1, p.size + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty_like(p)
    out[order] = np.minimum(adjusted, 1.0)
    return out


def _loops(
    conn: sqlite3.Connection, data: _Sequences, keys: IntArray, min_repeats: int
) -> tuple[list[LoopStats], int]:
    """Runs of the same tool with no successful step completed between the calls."""
    if data.tool.size < 2:
        return [], 0
    steps = _query(
        conn,
        "SELECT group_concat(mission_key), group_concat(seq) FROM (SELECT mission_key, seq "
        "FROM mission_steps WHERE success = 1 ORDER BY mission_key, seq)",
    )
    big = np.int64(int(max(data.seq.max(), 0)) + 2)
    if steps and steps[0][0] is not None:
        step_keys = np.fromstring(steps[0][0], dtype=np.int64, sep=",")
        step_seq = np.fromstring(steps[0][1], dtype=np.int64, sep=",")
        big = np.int64(max(int(big), int(step_seq.max()) + 2))
        known = np.isin(step_keys, keys)
        step_mission = np.searchsorted(keys, step_keys[known])
        progress = np.sort(step_mission * big + step_seq[known])
    else:
        progress = np.empty(0, dtype=np.int64)
    here = data.mission * big + data.seq
    between = np.searchsorted(progress, here[1:]) - np.searchsorted(progress, here[:-1], "right")
    link = (
        (data.mission[1:] == data.mission[:-1]) & (data.tool[1:] == data.tool[:-1]) & (between == 0)
    )
    # Runs of consecutive links: k links join k + 1 calls.
    padded = np.concatenate(([False], link, [False]))
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    run_start, run_end = edges[::2], edges[1::2]
    calls = run_end - run_start + 1
    keep = calls >= min_repeats
    run_start, calls = run_start[keep], calls[keep]
    run_tool = data.tool[run_start]
    run_mission = data.mission[run_start]
    looped = np.zeros(data.missions, dtype=bool)
    looped[run_mission] = True
    stats: list[LoopStats] = []
    for t in _distinct(run_tool).tolist():
        mine = run_tool == t
        missions = np.zeros(data.missions, dtype=bool)
        missions[run_mission[mine]] = True
        without = ~missions
        stats.append(
            LoopStats(
                tool_name=data.names[t],
                loops=int(mine.sum()),
                missions=int(missions.sum()),
                longest_run=int(calls[mine].max()),
                failure_rate_with_loop=float(data.failed[missions].mean()),
                failure_rate_without_loop=(
                    float(data.failed[without].mean()) if without.any() else None
                ),
            )
        )
    stats.sort(key=lambda s: (-s.loops, s.tool_name))
    return stats, int(looped.sum())


def _failure_steps(
    conn: sqlite3.Connection, filter: MissionFilter | None, failed_total: int
) -> list[StepFailures]:
    where, params = _where(filter)
    in_scope, scope_params = _in_scope(filter)
    by_error = dict(
        _query(
            conn,
            "SELECT error_step_index, COUNT(*) FROM missions m WHERE "
            f"{where} AND m.status = 'failed' AND m.error_step_index IS NOT NULL "
            "GROUP BY error_step_index",
            params,
        )
    )
    records = {
        index: (n, failures)
        for index, n, failures in _query(
            conn,
            "SELECT step_index, COUNT(*), SUM(success = 0) FROM mission_steps "
            f"WHERE {in_scope} GROUP BY step_index",
            scope_params,
        )
    }
    out: list[StepFailures] = []
    for index in sorted(set(by_error) | set(records)):
        failed = int(by_error.get(index, 0))
        n, failures = records.get(index, (0, 0))
        if failed == 0 and not failures:
            continue
        out.append(
            StepFailures(
                step_index=int(index),
                failed_missions=failed,
                share_of_failed_missions=failed / failed_total if failed_total else 0.0,
                step_records=int(n),
                step_failures=int(failures or 0),
                step_failure_rate=float(failures or 0) / n if n else 0.0,
            )
        )
    out.sort(key=lambda s: (-s.failed_missions, -s.step_failures, s.step_index))
    return out


def _recurring_errors(
    conn: sqlite3.Connection, filter: MissionFilter | None, failed_total: int
) -> list[RecurringError]:
    where, params = _where(filter)
    in_scope, scope_params = _in_scope(filter)
    missions = {
        code: (n, recoverable, first, last)
        for code, n, recoverable, first, last in _query(
            conn,
            "SELECT error_code, COUNT(*), AVG(error_recoverable), MIN(ended_at), MAX(ended_at) "
            f"FROM missions m WHERE {where} AND m.status = 'failed' AND m.error_code IS NOT NULL "
            "GROUP BY error_code",
            params,
        )
    }
    tools = {
        code: (n, first, last)
        for code, n, first, last in _query(
            conn,
            "SELECT error_code, COUNT(*), MIN(called_at), MAX(called_at) FROM mission_tool_calls "
            f"WHERE error_code IS NOT NULL AND {in_scope} GROUP BY error_code",
            scope_params,
        )
    }
    out: list[RecurringError] = []
    for code in set(missions) | set(tools):
        n, recoverable, first, last = missions.get(code, (0, None, None, None))
        calls, tool_first, tool_last = tools.get(code, (0, None, None))
        if n + calls < 2:
            continue
        seen = [s for s in (first, last, tool_first, tool_last) if s is not None]
        out.append(
            RecurringError(
                code=code,
                failed_missions=int(n),
                share_of_failed_missions=n / failed_total if failed_total else 0.0,
                recoverable_share=None if recoverable is None else float(recoverable),
                tool_call_failures=int(calls),
                first_seen=min(seen) if seen else None,
                last_seen=max(seen) if seen else None,
            )
        )
    out.sort(key=lambda e: (-e.failed_missions, -e.tool_call_failures, e.code))
    return out


def detect_patterns(
    source: ReadSource,
    filter: MissionFilter | None = None,
    *,
    max_length: int = 4,
    min_support: float = 0.01,
    min_missions: int = 20,
    alpha: float = 0.05,
    min_repeats: int = 3,
    max_gapped_tools: int = 32,
    top: int = 20,
) -> PatternReport:
    """Tool-call patterns of finished missions, and the ones associated with failure.

    * ``frequent``: n-grams of 1..``max_length`` consecutive calls and gapped patterns
      ``a..b`` and ``a..b..c`` (in order, other calls allowed between; the most frequent
      ``max_gapped_tools`` tools), each contained in at least ``min_missions`` missions
      and a ``min_support`` share of them; the ``top`` by support.
    * ``failure_associated``: those whose failure rate is significantly higher with the
      pattern than without (one-sided two-proportion z-test, Benjamini-Hochberg false
      discovery rate ``alpha`` over every pattern tested), highest lift first.
    * ``loops``: runs of at least ``min_repeats`` calls of one tool with no successful
      step completed between them (AgentOps' recursive-thought detection), per tool.
    * ``failure_steps``: step indexes where missions failed (``error_step_index``) and
      where step completions failed.
    * ``recurring_errors``: error codes of failed missions and failed tool calls seen at
      least twice.
    """
    with read_connection(source) as conn:
        if not 0 <= min_support <= 1:
            raise QueryError(f"min_support must be in [0, 1], got {min_support}")
        if max_length < 1:
            raise QueryError(f"max_length must be >= 1, got {max_length}")
        data, keys = _sequences(conn, filter)
        min_count = max(min_missions, math.ceil(min_support * data.missions), 1)
        candidates = _Candidates()
        _ngrams(data, max_length, min_count, candidates)
        _gapped(data, min_count, max_gapped_tools, candidates)
        scored = _association(candidates, data, data.names)
        frequent = sorted(scored, key=lambda s: (-s.missions, len(s.tools), s.kind, s.tools))
        associated = sorted(
            (s for s in scored if s.q_value <= alpha and s.lift > 1.0),
            key=lambda s: (-s.lift, s.q_value, -s.missions, s.tools),
        )
        loops, looped = _loops(conn, data, keys, min_repeats)
        failed_total = int(data.failed.sum())
        return PatternReport(
            missions=data.missions,
            failed_missions=failed_total,
            frequent=frequent[:top],
            failure_associated=associated[:top],
            loops=loops,
            missions_with_loops=looped,
            failure_steps=_failure_steps(conn, filter, failed_total),
            recurring_errors=_recurring_errors(conn, filter, failed_total),
            min_support=min_support,
            min_missions=min_missions,
            alpha=alpha,
        )


# -- comparisons -------------------------------------------------------------------------------


class GroupSummary(msgspec.Struct, frozen=True, kw_only=True):
    """One compared group: finished missions, successes, the success rate with its Wilson
    interval, and median duration and cost (cost over fully priced missions)."""

    group: str
    missions: int
    successes: int
    success_rate: float | None
    success_interval: tuple[float, float] | None
    median_duration_ms: float | None
    median_cost: float | None


class PairComparison(msgspec.Struct, frozen=True, kw_only=True):
    """Group ``b`` against group ``a``: differences are ``b - a``.

    ``success_p_value`` is the two-sided two-proportion z-test; ``success_significant``
    applies Holm's correction over every pair compared. Duration and cost intervals are
    percentile-bootstrap intervals of the difference of medians.
    """

    a: str
    b: str
    success_rate_difference: float | None
    success_p_value: float | None
    success_significant: bool
    duration_median_difference_ms: float | None
    duration_interval: tuple[float, float] | None
    cost_median_difference: float | None
    cost_interval: tuple[float, float] | None
    verdict: str


class Comparison(msgspec.Struct, frozen=True, kw_only=True):
    """Groups and every pair of them compared."""

    groups: list[GroupSummary]
    pairs: list[PairComparison]
    confidence: float
    resamples: int
    min_missions: int


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion.

    >>> tuple(round(x, 4) for x in wilson_interval(8, 10))
    (0.4902, 0.9433)
    """
    if n <= 0:
        return (0.0, 1.0)
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
    phat = successes / n
    denominator = 1 + z * z / n
    centre = (phat + z * z / (2 * n)) / denominator
    half = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def two_proportion_p_value(s1: int, n1: int, s2: int, n2: int) -> float:
    """Two-sided p-value of the pooled two-proportion z-test.

    >>> round(two_proportion_p_value(80, 100, 60, 100), 4)
    0.002
    """
    if n1 <= 0 or n2 <= 0:
        return 1.0
    pooled = (s1 + s2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0
    z = (s1 / n1 - s2 / n2) / se
    return math.erfc(abs(z) / math.sqrt(2))


def bootstrap_medians(values: FloatArray, resamples: int, rng: np.random.Generator) -> FloatArray:
    """Medians of ``resamples`` bootstrap resamples of ``values``, without building them.

    A resample is n indices drawn uniformly with replacement, ``floor(n * U)`` for n
    uniform U; its median is set by the middle order statistics of those U, and the k-th
    smallest of n uniforms is Beta(k, n - k + 1)-distributed, the next one above it
    ``u + (1 - u) * Beta(1, n - k)``. Drawing those directly gives medians with exactly
    the distribution of materialised resamples, in O(1) instead of O(n) per resample
    (a comparison of 25 000-mission groups takes milliseconds, not seconds).
    """
    ordered = np.sort(values)
    n = ordered.size
    if n == 0:
        return np.full(resamples, np.nan)
    if n % 2:
        k = (n + 1) // 2
        middle = rng.beta(k, n - k + 1, resamples)
        return ordered[np.minimum((middle * n).astype(np.int64), n - 1)]
    k = n // 2
    lower = rng.beta(k, n - k + 1, resamples)
    upper = lower + (1 - lower) * rng.beta(1, n - k, resamples)
    low_i = np.minimum((lower * n).astype(np.int64), n - 1)
    high_i = np.minimum((upper * n).astype(np.int64), n - 1)
    return (ordered[low_i] + ordered[high_i]) / 2


def _interval(difference: FloatArray, confidence: float) -> tuple[float, float]:
    """Percentile interval of bootstrap differences."""
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(difference, [tail, 100 - tail], method=_METHOD)
    return float(low), float(high)


class _GroupData:
    __slots__ = ("boot_cost", "boot_duration", "cost", "duration", "name", "successes", "total")

    def __init__(self, name: str, frame: _Frame, mask: BoolArray) -> None:
        finished = mask & frame.finished
        self.name = name
        self.total = int(finished.sum())
        self.successes = int((finished & frame.completed).sum())
        duration = frame.duration[finished]
        self.duration = duration[~np.isnan(duration)]
        self.cost = frame.cost[finished & ~frame.unpriced]
        self.boot_duration: FloatArray | None = None
        self.boot_cost: FloatArray | None = None

    def bootstrap(self, resamples: int, rng: np.random.Generator) -> None:
        """Draw this group's bootstrap medians once; every pair it is in reuses them."""
        self.boot_duration = bootstrap_medians(self.duration, resamples, rng)
        self.boot_cost = bootstrap_medians(self.cost, resamples, rng)


def compare(
    source: ReadSource,
    groups: Mapping[str, MissionFilter] | None = None,
    *,
    by: GroupBy | None = None,
    filter: MissionFilter | None = None,
    confidence: float = 0.95,
    resamples: int = 2_000,
    min_missions: int = 20,
    seed: int | None = 0,
) -> Comparison:
    """Compare groups of finished missions, as an A/B test.

    Give ``groups`` (name to filter: any mission property, any time period) or ``by``
    (backend, model, tag, day, week or month, within ``filter``). For each group: success
    rate with a Wilson interval; for each pair: the two-proportion z-test of success
    (Holm-corrected across pairs), bootstrap intervals (``resamples``, seeded) of the
    difference of median duration and median cost, and a plain-language verdict, which
    says "too small to tell" when a group has fewer than ``min_missions`` finished
    missions or when an interval is too wide to decide.
    """
    with read_connection(source) as conn:
        if not 0 < confidence < 1:
            raise QueryError(f"confidence must be in (0, 1), got {confidence}")
        if (groups is None) == (by is None):
            raise QueryError("compare() needs either groups={name: MissionFilter} or by=...")
        data: list[_GroupData] = []
        if groups is not None:
            for name, group_filter in groups.items():
                frame = _frame(conn, _merge(filter, group_filter))
                data.append(_GroupData(name, frame, np.ones(len(frame), dtype=bool)))
        else:
            frame = _frame(conn, filter)
            for name, mask in _groups(conn, frame, str(by)).items():
                data.append(_GroupData(name, frame, mask))
        if resamples < 100:
            raise QueryError(f"resamples must be >= 100 for a percentile interval, got {resamples}")
        rng = np.random.default_rng(seed)
        for group in data:
            group.bootstrap(resamples, rng)
        summaries = [_summary(g, confidence) for g in data]
        raw: list[tuple[_GroupData, _GroupData, float | None]] = []
        for i in range(len(data)):
            for j in range(i + 1, len(data)):
                a, b = data[i], data[j]
                p = (
                    two_proportion_p_value(b.successes, b.total, a.successes, a.total)
                    if a.total and b.total
                    else None
                )
                raw.append((a, b, p))
        significant = _holm([p for _, _, p in raw], 1 - confidence)
        pairs = [
            _pair(a, b, p, sig, confidence, min_missions)
            for (a, b, p), sig in zip(raw, significant, strict=True)
        ]
        return Comparison(
            groups=summaries,
            pairs=pairs,
            confidence=confidence,
            resamples=resamples,
            min_missions=min_missions,
        )


def _merge(base: MissionFilter | None, group: MissionFilter) -> MissionFilter:
    if base is None:
        return group
    fields = {}
    for name in MissionFilter.__struct_fields__:
        mine, theirs = getattr(group, name), getattr(base, name)
        if mine is not None and theirs is not None and mine != theirs:
            raise QueryError(
                f"compare(): filter.{name}={theirs!r} conflicts with a group's {name}={mine!r}"
            )
        fields[name] = mine if mine is not None else theirs
    return MissionFilter(**fields)


def _holm(p_values: list[float | None], alpha: float) -> list[bool]:
    indexed = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    out = [False] * len(p_values)
    m = len(indexed)
    for rank, (p, i) in enumerate(indexed):
        if p > alpha / (m - rank):
            break
        out[i] = True
    return out


def _summary(g: _GroupData, confidence: float) -> GroupSummary:
    return GroupSummary(
        group=g.name,
        missions=g.total,
        successes=g.successes,
        success_rate=g.successes / g.total if g.total else None,
        success_interval=wilson_interval(g.successes, g.total, confidence) if g.total else None,
        median_duration_ms=_median(g.duration),
        median_cost=_median(g.cost),
    )


def _median(values: FloatArray) -> float | None:
    return float(np.percentile(values, 50, method=_METHOD)) if values.size else None


# Below this many finished missions in either group a verdict is not attempted.
# An interval of a success rate this wide (half-width) is too wide to call "no difference".
_WIDE_RATE: Final = 0.10


def _pair(
    a: _GroupData,
    b: _GroupData,
    p: float | None,
    significant: bool,
    confidence: float,
    min_missions: int,
) -> PairComparison:
    rate_a = a.successes / a.total if a.total else None
    rate_b = b.successes / b.total if b.total else None
    enough = min(a.total, b.total) >= min_missions
    duration = cost = None
    if enough and a.duration.size >= 2 and b.duration.size >= 2:
        assert a.boot_duration is not None and b.boot_duration is not None
        duration = _interval(b.boot_duration - a.boot_duration, confidence)
    if enough and a.cost.size >= 2 and b.cost.size >= 2:
        assert a.boot_cost is not None and b.boot_cost is not None
        cost = _interval(b.boot_cost - a.boot_cost, confidence)
    d_duration = _difference(a.duration, b.duration)
    d_cost = _difference(a.cost, b.cost)
    level = f"{confidence:.0%}"
    if not enough:
        verdict = (
            f"too small to tell: {a.name} has {a.total} finished missions and {b.name} "
            f"{b.total}; at least {min_missions} each are needed"
        )
    else:
        assert rate_a is not None and rate_b is not None
        parts = [_rate_verdict(a, b, rate_a, rate_b, p, significant, confidence)]
        parts.append(_median_verdict("duration", a.name, b.name, d_duration, duration, level,
                                     ("slower", "faster"), _ms))  # fmt: skip
        parts.append(_median_verdict("cost", a.name, b.name, d_cost, cost, level,
                                     ("more expensive", "cheaper"), _usd))  # fmt: skip
        verdict = "; ".join(parts)
    return PairComparison(
        a=a.name,
        b=b.name,
        success_rate_difference=(
            rate_b - rate_a if rate_a is not None and rate_b is not None else None
        ),
        success_p_value=p,
        success_significant=significant,
        duration_median_difference_ms=d_duration,
        duration_interval=duration,
        cost_median_difference=d_cost,
        cost_interval=cost,
        verdict=verdict,
    )


def _difference(a: FloatArray, b: FloatArray) -> float | None:
    ma, mb = _median(a), _median(b)
    return None if ma is None or mb is None else mb - ma


def _rate_verdict(
    a: _GroupData,
    b: _GroupData,
    rate_a: float,
    rate_b: float,
    p: float | None,
    significant: bool,
    confidence: float,
) -> str:
    rates = f"{rate_b:.1%} vs {rate_a:.1%}"
    if significant and p is not None:
        direction = "more" if rate_b > rate_a else "less"
        return f"{b.name} succeeds {direction} often than {a.name} ({rates}, p={p:.2g})"
    widths = [
        (hi - lo) / 2
        for lo, hi in (
            wilson_interval(a.successes, a.total, confidence),
            wilson_interval(b.successes, b.total, confidence),
        )
    ]
    if max(widths) > _WIDE_RATE:
        return f"too small to tell whether success rates differ ({rates})"
    return f"no detectable difference in success rate ({rates})"


def _median_verdict(
    what: str,
    a: str,
    b: str,
    difference: float | None,
    interval: tuple[float, float] | None,
    level: str,
    words: tuple[str, str],
    show: Any,
) -> str:
    if difference is None or interval is None:
        return f"no {what} data to compare"
    low, high = interval
    if low > 0 or high < 0:
        word = words[0] if difference > 0 else words[1]
        return (
            f"{b} is {word} than {a} (median {what} difference {show(difference)}, "
            f"{level} CI [{show(low)}, {show(high)}])"
        )
    return f"no clear difference in {what} ({level} CI [{show(low)}, {show(high)}])"


def _ms(value: float) -> str:
    return f"{value:+,.0f} ms"


def _usd(value: float) -> str:
    return f"{value:+.4g} USD"


# -- listing -----------------------------------------------------------------------------------

# One page of missions is shown by a CLI table or returned by one HTTP response.
MAX_LISTED: Final = 10_000


class MissionSummary(msgspec.Struct, frozen=True, kw_only=True):
    """One mission as :func:`list_missions` returns it: the ``missions`` row, without its
    steps and calls (:func:`tachimeter.missions.read_mission` has those)."""

    mission_id: str
    status: MissionStatus
    backend: str
    model: str
    tags: tuple[str, ...]
    created_at: dt.datetime
    ended_at: dt.datetime | None
    execution_time_ms: float | None
    step_count: int
    tool_calls: int
    llm_calls: int
    total_tokens: int
    total_cost: float
    error_code: str | None
    error_message: str | None = None


def list_missions(
    source: ReadSource, filter: MissionFilter | None = None, *, limit: int = 100
) -> list[MissionSummary]:
    """The missions matching ``filter``, newest first (by creation), at most ``limit``.

    >>> from tachimeter.store.migrations import all_migrations
    >>> conn = sqlite3.connect(":memory:")
    >>> for migration in all_migrations():
    ...     _ = conn.executescript(migration.up)
    >>> list_missions(conn, MissionFilter(status="failed"), limit=10)
    []
    """
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LISTED:
        raise QueryError(f"limit must be an integer in [1, {MAX_LISTED}], got {limit!r}")
    with read_connection(source) as conn:
        where, params = _where(filter)
        rows = _query(
            conn,
            "SELECT mission_id, status, backend, model, tags, created_at, ended_at, "
            "execution_time_ms, step_count, tool_calls, llm_calls, total_tokens, total_cost, "
            f"error_code, error_message FROM missions m WHERE {where} "
            "ORDER BY m.created_at DESC, m.mission_key DESC LIMIT ?",
            [*params, limit],
        )
    return [
        MissionSummary(
            mission_id=mission_id,
            status=MissionStatus(status),
            backend=backend or "",
            model=model or "",
            tags=tuple(t for t in msgspec.json.decode(tags or "[]") if isinstance(t, str)),
            created_at=parse_timestamp(created),
            ended_at=parse_timestamp(ended) if ended else None,
            execution_time_ms=execution,
            step_count=steps,
            tool_calls=tools,
            llm_calls=llm,
            total_tokens=tokens,
            total_cost=cost,
            error_code=error_code,
            error_message=error_message,
        )
        for (mission_id, status, backend, model, tags, created, ended, execution, steps, tools,
             llm, tokens, cost, error_code, error_message) in rows
    ]  # fmt: skip
