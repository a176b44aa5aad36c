"""The mission tracker (spec 414): lifecycle state in memory, every fact as an event.

The tracker holds only *active* missions (plus a bounded cache of recently finished
ones, so ``get_mission`` answers right after completion, before the store has written
it). Every transition, step, tool call and LLM call is emitted through the collector as
an event (see :mod:`tachimeter.missions.properties`); the store's
:class:`~tachimeter.missions.projection.MissionProjection` folds those events into the
mission tables, which is where history lives, survives restarts and is queried. Spec
414's sketch kept history in an unbounded in-memory list; this one does not.

Concurrency: one lock guards the active missions; it is held for a few dictionary
updates, never across I/O or user code, so the tracker is safe from any thread and from
asyncio tasks (it never awaits while holding it). Events are handed to the collector
after the lock is released; their ``seq`` property keeps the mission's order.

Errors: the tracker is the state-machine API of spec 414 and raises
:class:`~tachimeter.missions.errors.MissionNotFound`,
:class:`~tachimeter.errors.InvalidStateTransition` and
:class:`~tachimeter.errors.ValidationError` for a bad value. The ``mission()`` API built on
it does not raise into user code unless strict mode is on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from tachimeter.collect.collector import EventCollector
from tachimeter.errors import (
    CollectorError,
    InvalidStateTransition,
    QueryError,
    ValidationError,
)
from tachimeter.missions import properties as p
from tachimeter.missions.errors import CollectionFailed, MissionNotFound
from tachimeter.missions.lifecycle import MissionStatus, check_transition
from tachimeter.missions.records import MissionAnalytics, MissionError, MissionMetrics, ToolUsage
from tachimeter.model.event_types import EventPriority, EventType
from tachimeter.model.ids import uuid7
from tachimeter.model.prices import CostEstimate, PriceTable
from tachimeter.model.timestamps import from_ns
from tachimeter.model.tokens import TokenUsage

if TYPE_CHECKING:
    import sqlite3

    from tachimeter.analyze.missions import MissionFilter
    from tachimeter.metrics import Registry

__all__ = [
    "DEFAULT_RECENT_MISSIONS",
    "MissionState",
    "MissionTracker",
    "add_end_properties",
    "add_llm_properties",
    "add_move_properties",
    "add_retry_properties",
    "add_step_properties",
]

_log = logging.getLogger("tachimeter.missions")

DEFAULT_RECENT_MISSIONS: Final = 1_000
"""Finished missions kept in memory for ``get_mission``: about 1-2 MB, and enough to
cover the store's flush interval at any realistic mission rate; older ones are read
from the store."""

# Lifecycle events are rarer and matter more than tool and token events: under queue
# pressure the collector drops lower priorities first.
_LIFECYCLE: Final = EventPriority.HIGH
_ACTIVITY: Final = EventPriority.NORMAL
_S = MissionStatus
_ZERO: Final = Decimal(0)
_NUMBER: Final = (int, float)
_INF: Final = float("inf")
# Agent missions run from seconds to hours (Prometheus histogram bounds, seconds).
_MISSION_BUCKETS: Final = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0,
                           1800.0, 3600.0, 7200.0)  # fmt: skip


class _ToolTally:
    __slots__ = ("calls", "failed", "ok", "time_ms")

    def __init__(self) -> None:
        self.calls = 0
        self.ok = 0
        self.failed = 0
        self.time_ms = 0.0


class MissionState:
    """What every event of one mission is built from: ids, status, timing and ``seq``.

    Internal to the mission layer and the server: the tracker's active missions are
    these, and the server's REST recorder rebuilds one from the store for each call, so
    both number, time and label the events of a mission alike. ``seq`` is the next
    event's; ``paused_ns`` is 0 when the mission is not paused (or the time of its pause
    is unknown: the event is gone).

    >>> m = MissionState("m1", "openai", "gpt-4o", [], None, None)
    >>> m.enter(MissionStatus.EXECUTING, 1_000), m.props()[p.SEQ], m.stop(3_001_000)
    (<MissionStatus.CREATED: 'created'>, 0, 3.0)
    """

    __slots__ = (
        "backend",
        "mission_id",
        "model",
        "paused_from",
        "paused_ns",
        "paused_total_ns",
        "retry_count",
        "seq",
        "session_id",
        "started_ns",
        "status",
        "tags",
        "user_id",
    )

    def __init__(
        self,
        mission_id: str,
        backend: str,
        model: str,
        tags: list[str],
        session_id: str | None,
        user_id: str | None,
    ) -> None:
        self.mission_id = mission_id
        self.backend = backend
        self.model = model
        self.tags = tags  # never mutated: shared by every event of the mission
        self.session_id = session_id
        self.user_id = user_id
        self.status = _S.CREATED
        self.started_ns = 0
        self.paused_ns = 0
        self.paused_total_ns = 0
        self.paused_from: MissionStatus | None = None
        self.seq = 0
        self.retry_count = 0

    def props(self) -> dict[str, Any]:
        """The properties every event of this mission carries; takes the next ``seq``."""
        seq = self.seq
        self.seq = seq + 1
        return {
            p.MISSION_ID: self.mission_id,
            p.BACKEND: self.backend,
            p.MODEL: self.model,
            p.TAGS: self.tags,
            p.SEQ: seq,
            p.RETRY_COUNT: self.retry_count,
        }

    def enter(self, target: MissionStatus, now: int) -> MissionStatus:
        """Apply a checked move to a non-terminal status; returns the old one."""
        old = self.status
        if old is _S.PAUSED:
            if self.paused_ns:
                self.paused_total_ns += now - self.paused_ns
            self.paused_ns = 0
            self.paused_from = None
        if target is _S.PAUSED:
            self.paused_ns = now
            self.paused_from = old
        if not self.started_ns and target in (_S.PLANNING, _S.EXECUTING):
            self.started_ns = now
        self.status = target
        return old

    def stop(self, now: int) -> float | None:
        """Close an open pause at ``now``; the execution time in milliseconds until
        ``now`` (None when the mission never started)."""
        if self.paused_ns:
            self.paused_total_ns += now - self.paused_ns
            self.paused_ns = 0
        return (now - self.started_ns) / 1e6 if self.started_ns else None


def add_move_properties(
    props: dict[str, Any],
    target: MissionStatus,
    old: MissionStatus,
    paused_ms: float | None = None,
) -> None:
    """Properties of a move between non-terminal statuses; ``paused_ms`` on leaving a pause."""
    props[p.STATUS] = target.value
    props[p.FROM_STATUS] = old.value
    if paused_ms is not None:
        # Cumulative, not this pause alone: the store keeps the maximum it has seen,
        # which is right in any order and when an event is applied twice.
        props[p.PAUSED_MS] = paused_ms


def add_retry_properties(
    props: dict[str, Any], old: MissionStatus, error: MissionError | None
) -> None:
    """Properties of a retry (back to executing), with the error that caused it if known."""
    props[p.STATUS] = _S.EXECUTING.value
    props[p.FROM_STATUS] = old.value
    if error is not None:
        props[p.ERROR_CODE] = error.code
        props[p.ERROR_MESSAGE] = error.message


def add_end_properties(
    props: dict[str, Any],
    status: MissionStatus,
    old: MissionStatus,
    *,
    execution_ms: float | None,
    paused_ms: float,
    total_tokens: int,
    total_cost: float,
    unpriced: int,
    error: MissionError | None = None,
    reason: str | None = None,
) -> None:
    """Properties of a mission's end: its totals, and its error or the reason given."""
    props[p.STATUS] = status.value
    props[p.FROM_STATUS] = old.value
    props[p.EXECUTION_TIME_MS] = execution_ms
    props[p.PAUSED_MS] = paused_ms
    props[p.TOTAL_TOKENS] = total_tokens
    props[p.TOTAL_COST] = total_cost
    props[p.UNPRICED_LLM_CALLS] = unpriced
    if error is not None:
        props[p.ERROR_CODE] = error.code
        props[p.ERROR_MESSAGE] = error.message
        props[p.ERROR_TYPE] = error.error_type
        props[p.ERROR_STEP_INDEX] = error.step_index
        props[p.ERROR_RECOVERABLE] = error.recoverable
    if reason is not None:
        props[p.REASON] = reason


def add_step_properties(
    props: dict[str, Any],
    step_index: int,
    success: bool,
    name: str | None,
    duration_ms: float | None,
) -> None:
    """Properties of a finished step."""
    props[p.STEP_INDEX] = step_index
    props[p.SUCCESS] = bool(success)
    if name is not None:
        props[p.STEP_NAME] = name
    if duration_ms is not None:
        props[p.DURATION_MS] = duration_ms


def add_llm_properties(
    props: dict[str, Any],
    model: str,
    provider: str | None,
    usage: TokenUsage,
    estimate: CostEstimate,
    duration_ms: float | None,
) -> None:
    """Properties of one LLM call: the model, its tokens (``gen_ai.*``) and its price."""
    props[p.REQUEST_MODEL] = model
    if provider is not None:
        props[p.PROVIDER] = provider
    props.update(usage.to_gen_ai_attributes())
    total = estimate.total
    props[p.COST_USD] = None if total is None else float(total)
    props[p.COST_SOURCE] = estimate.source
    if duration_ms is not None:
        props[p.DURATION_MS] = duration_ms


class _ActiveMission(MissionState):
    """Mutable state of one active mission (guarded by the tracker's lock)."""

    __slots__ = (
        "anonymous",
        "cache_creation_tokens",
        "cache_read_tokens",
        "cost",
        "created_ns",
        "input_tokens",
        "llm_calls",
        "output_tokens",
        "reasoning_tokens",
        "step_count",
        "steps_ok",
        "tools",
        "unpriced",
    )

    def __init__(
        self,
        mission_id: str,
        backend: str,
        model: str,
        tags: list[str],
        session_id: str | None,
        user_id: str | None,
        now_ns: int,
    ) -> None:
        super().__init__(mission_id, backend, model, tags, session_id, user_id)
        self.anonymous = session_id is None and user_id is None
        self.created_ns = now_ns
        self.step_count = 0
        self.steps_ok: set[int] = set()
        self.tools: dict[str, _ToolTally] = {}
        self.llm_calls = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cache_read_tokens = 0
        self.cache_creation_tokens = 0
        self.reasoning_tokens = 0
        self.cost = _ZERO
        self.unpriced = 0

    def snapshot(
        self,
        status: MissionStatus,
        session_id: str | None,
        end_ns: int = 0,
        execution_ms: float | None = None,
        error: MissionError | None = None,
    ) -> MissionAnalytics:
        total_input = self.input_tokens
        total_output = self.output_tokens
        paused_ns = self.paused_total_ns
        if self.paused_ns:
            paused_ns += (end_ns or time.time_ns()) - self.paused_ns
        return MissionAnalytics(
            mission_id=self.mission_id,
            status=status,
            created_at=from_ns(self.created_ns),
            backend=self.backend,
            model=self.model,
            session_id=self.session_id or session_id,
            user_id=self.user_id,
            started_at=from_ns(self.started_ns) if self.started_ns else None,
            completed_at=from_ns(end_ns) if end_ns else None,
            execution_time_ms=execution_ms,
            paused_ms=paused_ns / 1e6,
            step_count=self.step_count,
            steps_completed=len(self.steps_ok),
            tools_used=tuple(
                ToolUsage(
                    tool_name=name,
                    invocation_count=t.calls,
                    total_time_ms=t.time_ms,
                    success_count=t.ok,
                    failure_count=t.failed,
                )
                for name, t in self.tools.items()
            ),
            llm_calls=self.llm_calls,
            token_usage=TokenUsage(
                input_tokens=total_input,
                output_tokens=total_output,
                cache_read_tokens=self.cache_read_tokens,
                cache_creation_tokens=self.cache_creation_tokens,
                reasoning_tokens=self.reasoning_tokens,
            ),
            total_tokens=total_input + total_output,
            total_cost=float(self.cost),
            unpriced_llm_calls=self.unpriced,
            tags=tuple(self.tags),
            error=error,
            retry_count=self.retry_count,
        )


class _AgentMetrics:
    """Spec 023's agent metrics, named by Prometheus conventions (DESIGN.md)."""

    __slots__ = ("active", "duration", "errors", "tokens", "tools")

    def __init__(self, registry: Registry) -> None:
        self.tools = registry.counter(
            "tool_invocations", "Tool calls made by agent missions", ["tool", "status"]
        )
        self.tokens = registry.counter(
            "llm_tokens_used",
            "LLM tokens used by agent missions (cache tokens are part of input)",
            ["model", "token_type"],
        )
        self.duration = registry.histogram(
            "loop_execution_duration_seconds",
            "Execution time of finished agent missions",
            ["backend", "status"],
            buckets=_MISSION_BUCKETS,
        )
        self.errors = registry.counter(
            "loop_errors", "Failed agent missions by error code", ["backend", "error_type"]
        )
        self.active = registry.gauge("active_loops", "Agent missions in progress")


_trackers: weakref.WeakSet[MissionTracker] = weakref.WeakSet()


def _reset_trackers_after_fork() -> None:
    for tracker in list(_trackers):
        tracker._after_fork_in_child()


os.register_at_fork(after_in_child=_reset_trackers_after_fork)

_preloaded = False
_preload_lock = threading.Lock()


def _preload_prices(table: PriceTable) -> None:
    """Load the price snapshot on a daemon thread: the first LLM call must not pay the
    0.3-0.5 s import of genai-prices on the caller's thread."""
    global _preloaded
    with _preload_lock:
        if _preloaded:
            return
        _preloaded = True
    threading.Thread(target=table.preload, name="tachimeter-prices", daemon=True).start()


class MissionTracker:
    """Tracks agent missions through their lifecycle and emits an event for every fact.

    ``collector`` receives the events (the global collector when None); ``prices``
    prices LLM calls (default: the bundled snapshot with the collector's configured
    overrides); ``database`` is the SQLite file the store writes the mission tables to,
    read by ``get_mission`` for missions no longer in memory and by
    ``calculate_metrics`` (default: the collector's ``storage.path``); ``registry``
    records spec 023's agent metrics (``tool_invocations_total``,
    ``llm_tokens_used_total``, ``loop_execution_duration_seconds``, ``loop_errors_total``,
    ``active_loops``) when given; ``clock`` is ``time.time_ns`` unless a test injects one.

    >>> from tachimeter.testing import MemorySink, collector_for_tests
    >>> sink = MemorySink()
    >>> with collector_for_tests(sink) as collector:
    ...     tracker = MissionTracker(collector)
    ...     mid = tracker.start_mission(None, "anthropic", "claude-sonnet-4", ["docs"])
    ...     tracker.mission_started(mid)
    ...     tracker.tool_invoked(mid, "search", 120.0, True)
    ...     cost = tracker.tokens_consumed(mid, 500, 300, model="claude-sonnet-4")
    ...     record = tracker.mission_completed(mid)
    ...     tracker.get_mission(mid).status, tracker.active_count()
    ...     collector.flush()
    (<MissionStatus.COMPLETED: 'completed'>, 0)
    True
    >>> [e.event_name for e in sink.events()]  # doctest: +NORMALIZE_WHITESPACE
    ['mission_created', 'mission_started', 'tool_invoked', 'tokens_consumed',
     'mission_completed']
    """

    def __init__(
        self,
        collector: EventCollector | None = None,
        *,
        prices: PriceTable | None = None,
        database: str | os.PathLike[str] | None = None,
        registry: Registry | None = None,
        recent: int = DEFAULT_RECENT_MISSIONS,
        clock: Callable[[], int] | None = None,
    ) -> None:
        if collector is None:
            from tachimeter.collect.api import init_global_collector

            collector = init_global_collector()
        if recent < 0:
            raise ValueError(f"MissionTracker recent must be >= 0, got {recent}")
        self._collector = collector
        self._track = collector.track
        self._prices = prices or PriceTable(collector.config.prices.overrides)
        self._database = None if database is None else Path(database).expanduser()
        self._metrics = None if registry is None else _AgentMetrics(registry)
        self._recent_limit = recent
        self._clock: Callable[[], int] = clock or time.time_ns
        # With an injected clock every event is stamped by it, so tests see one timeline;
        # with the real one the collector stamps activity events itself (cheaper).
        self._injected_clock = clock is not None
        self._lock = threading.Lock()
        self._active: dict[str, _ActiveMission] = {}
        self._recent: OrderedDict[str, MissionAnalytics] = OrderedDict()
        self._rejected = 0
        self._logged: set[type[BaseException]] = set()
        _trackers.add(self)
        _preload_prices(self._prices)

    def _after_fork_in_child(self) -> None:
        # A forked child must not continue its parent's missions: both would number their
        # events with the same seq. It starts with none (and a lock nobody holds).
        self._lock = threading.Lock()
        self._active = {}
        self._recent = OrderedDict()

    @property
    def collector(self) -> EventCollector:
        """The collector the events go to."""
        return self._collector

    @property
    def prices(self) -> PriceTable:
        """The price table LLM calls are priced with (its ``unknown_models`` counts)."""
        return self._prices

    @property
    def strict(self) -> bool:
        """The collector's strict (debug) mode: the ``mission()`` API raises instead of
        counting rejected calls."""
        return self._collector.config.strict

    @property
    def rejected_calls(self) -> int:
        """Calls of the ``mission()`` API that were refused (invalid transition, unknown
        mission, bad value) and counted instead of raised."""
        return self._rejected

    def note_rejected(self, exc: BaseException) -> None:
        """Count a refused call; log the first of each kind (internal to the mission API)."""
        with self._lock:
            self._rejected += 1
            first = type(exc) not in self._logged
            self._logged.add(type(exc))
        if first:
            _log.warning("mission call refused (further ones are counted, not logged): %s", exc)

    # -- emitting -----------------------------------------------------------------------------

    def _emit(
        self,
        kind: EventType,
        props: dict[str, Any],
        m: _ActiveMission,
        priority: EventPriority = _ACTIVITY,
        at_ns: int = 0,
    ) -> None:
        if not at_ns and self._injected_clock:
            at_ns = self._clock()
        try:
            self._track(
                kind,
                props,
                user_id=m.user_id,
                session_id=m.session_id,
                priority=priority,
                timestamp=from_ns(at_ns) if at_ns else None,
            )
        except CollectorError as exc:  # strict mode only: a full queue
            raise CollectionFailed(f"{kind.event_name} for mission {m.mission_id}: {exc}") from exc

    def _get(
        self, mission_id: str | uuid.UUID, target: MissionStatus | None = None
    ) -> _ActiveMission:
        """The active mission (lock held). Moving a recently finished mission to ``target``
        raises ``InvalidStateTransition`` (naming its final status), anything else on a
        mission not active ``MissionNotFound``."""
        key = mission_id if type(mission_id) is str else str(mission_id)
        m = self._active.get(key)
        if m is None:
            finished = self._recent.get(key)
            if finished is not None and target is not None:
                raise InvalidStateTransition(finished.status.value, target.value, key)
            raise MissionNotFound(key)
        return m

    # -- lifecycle ----------------------------------------------------------------------------

    def start_mission(
        self,
        mission_id: str | uuid.UUID | None,
        backend: str,
        model: str,
        tags: Iterable[str] = (),
        *,
        session_id: str | None = None,
        user_id: str | None = None,
    ) -> str:
        """Create a mission (status ``created``) and return its id (a new UUIDv7 if None)."""
        key = str(uuid7()) if mission_id is None else str(mission_id)
        _check_text("backend", backend)
        _check_text("model", model)
        tag_list = list(tags)
        for tag in tag_list:
            _check_text("tag", tag)
        now = self._clock()
        m = _ActiveMission(key, backend, model, tag_list, session_id, user_id, now)
        with self._lock:
            existing = self._active.get(key)
            if existing is None:
                finished = self._recent.get(key)
                existing_status = None if finished is None else finished.status
            else:
                existing_status = existing.status
            if existing_status is not None:
                # Re-creating a known mission would overwrite its history.
                check_transition(existing_status, _S.CREATED, key)
            self._active[key] = m
            props = m.props()
            active = len(self._active)
        props[p.STATUS] = _S.CREATED.value
        self._emit(EventType.MISSION_CREATED, props, m, _LIFECYCLE, now)
        if self._metrics is not None:
            self._metrics.active.set(active)
        return key

    def plan(self, mission_id: str | uuid.UUID) -> None:
        """Move to ``planning`` (from created, or re-planning from executing)."""
        self._move(mission_id, _S.PLANNING, EventType.MISSION_STARTED)

    def mission_started(self, mission_id: str | uuid.UUID) -> None:
        """Move to ``executing`` (from created or planning)."""
        self._move(mission_id, _S.EXECUTING, EventType.MISSION_STARTED)

    def pause(self, mission_id: str | uuid.UUID) -> None:
        """Pause a planning or executing mission."""
        self._move(mission_id, _S.PAUSED, EventType.MISSION_PAUSED)

    def resume(self, mission_id: str | uuid.UUID) -> None:
        """Resume a paused mission in the status it was paused from."""
        self._move(mission_id, None, EventType.MISSION_RESUMED)

    def retry(self, mission_id: str | uuid.UUID, error: MissionError | None = None) -> int:
        """Start a new attempt (executing or paused -> executing); returns the retry count."""
        with self._lock:
            m = self._get(mission_id, _S.EXECUTING)
            if m.status is not _S.EXECUTING and m.status is not _S.PAUSED:
                raise InvalidStateTransition(
                    m.status.value,
                    "executing (retry needs an executing or paused mission)",
                    m.mission_id,
                )
            now = self._clock()
            from_status = m.enter(_S.EXECUTING, now)
            m.retry_count += 1
            count = m.retry_count
            props = m.props()
        add_retry_properties(props, from_status, error)
        self._emit(EventType.RETRY_ATTEMPTED, props, m, _LIFECYCLE, now)
        return count

    def _move(
        self, mission_id: str | uuid.UUID, target: MissionStatus | None, kind: EventType
    ) -> None:
        with self._lock:
            m = self._get(mission_id, target or _S.EXECUTING)
            if target is None:  # resume: back to where the pause came from
                if m.status is not _S.PAUSED or m.paused_from is None:
                    raise InvalidStateTransition(
                        m.status.value, "executing (resume needs a paused mission)", m.mission_id
                    )
                target = m.paused_from
            check_transition(m.status, target, m.mission_id)
            now = self._clock()
            old = m.enter(target, now)
            paused_ms = m.paused_total_ns / 1e6 if old is _S.PAUSED else None
            props = m.props()
        add_move_properties(props, target, old, paused_ms)
        self._emit(kind, props, m, _LIFECYCLE, now)

    def mission_completed(self, mission_id: str | uuid.UUID) -> MissionAnalytics:
        """Complete an executing mission; returns its final record."""
        return self._finish(mission_id, _S.COMPLETED, EventType.MISSION_COMPLETED, None, None)

    def mission_failed(
        self, mission_id: str | uuid.UUID, error: MissionError | BaseException
    ) -> MissionAnalytics:
        """Fail a mission with an error (an exception is classified into one)."""
        if isinstance(error, BaseException):
            error = MissionError.from_exception(error)
        elif not isinstance(error, MissionError):
            raise ValidationError(
                f"mission_failed needs a MissionError or an exception, got {type(error).__name__}",
                path="error",
            )
        return self._finish(mission_id, _S.FAILED, EventType.MISSION_FAILED, error, None)

    def mission_cancelled(
        self, mission_id: str | uuid.UUID, reason: str | None = None
    ) -> MissionAnalytics:
        """Cancel a mission; its execution time is set like any other ending's."""
        return self._finish(mission_id, _S.CANCELLED, EventType.MISSION_CANCELLED, None, reason)

    def _finish(
        self,
        mission_id: str | uuid.UUID,
        status: MissionStatus,
        kind: EventType,
        error: MissionError | None,
        reason: str | None,
    ) -> MissionAnalytics:
        with self._lock:
            m = self._get(mission_id, status)
            check_transition(m.status, status, m.mission_id)
            now = self._clock()
            from_status = m.status
            execution_ms = m.stop(now)
            record = m.snapshot(status, self._collector.session_id, now, execution_ms, error)
            del self._active[m.mission_id]
            self._remember(record)
            props = m.props()
            active = len(self._active)
        add_end_properties(
            props,
            status,
            from_status,
            execution_ms=execution_ms,
            paused_ms=record.paused_ms,
            total_tokens=record.total_tokens,
            total_cost=record.total_cost,
            unpriced=record.unpriced_llm_calls,
            error=error,
            reason=reason,
        )
        self._emit(kind, props, m, _LIFECYCLE, now)
        metrics = self._metrics
        if metrics is not None:
            metrics.active.set(active)
            if execution_ms is not None:
                metrics.duration.labels(m.backend, status.value).observe(execution_ms / 1e3)
            if error is not None:
                metrics.errors.labels(m.backend, error.code).inc()
        return record

    def _remember(self, record: MissionAnalytics) -> None:
        """Keep a finished mission in the bounded recent cache (lock held)."""
        if self._recent_limit == 0:
            return
        recent = self._recent
        recent[record.mission_id] = record
        if len(recent) > self._recent_limit:
            recent.popitem(last=False)

    # -- activity -----------------------------------------------------------------------------

    def step_completed(
        self,
        mission_id: str | uuid.UUID,
        step_index: int,
        success: bool,
        *,
        name: str | None = None,
        duration_ms: float | None = None,
    ) -> None:
        """Record that step ``step_index`` (0-based) finished, successfully or not."""
        if type(step_index) is not int or step_index < 0:
            raise ValidationError(f"step_index must be an int >= 0, got {step_index!r}")
        if duration_ms is not None:
            _check_duration(duration_ms)
        with self._lock:
            m = self._get(mission_id)
            if step_index >= m.step_count:
                m.step_count = step_index + 1
            if success:
                m.steps_ok.add(step_index)
            props = m.props()
        add_step_properties(props, step_index, success, name, duration_ms)
        self._emit(EventType.MISSION_STEP_COMPLETED, props, m)

    def tool_invoked(
        self,
        mission_id: str | uuid.UUID,
        tool_name: str,
        duration_ms: float,
        success: bool = True,
        *,
        error_code: str | None = None,
        step_index: int | None = None,
    ) -> None:
        """Record one tool call (the hot path: a few dict updates and one enqueue)."""
        if type(duration_ms) not in _NUMBER or not 0 <= duration_ms < _INF:
            _check_duration(duration_ms)
        with self._lock:
            m = self._active.get(mission_id)  # type: ignore[arg-type]
            if m is None:
                m = self._get(mission_id)
            tally = m.tools.get(tool_name)
            if tally is None:
                _check_text("tool_name", tool_name)
                tally = m.tools[tool_name] = _ToolTally()
            tally.calls += 1
            tally.time_ms += duration_ms
            if success:
                tally.ok += 1
            else:
                tally.failed += 1
            seq = m.seq
            m.seq = seq + 1
            retries = m.retry_count
        props = {
            p.MISSION_ID: m.mission_id,
            p.BACKEND: m.backend,
            p.MODEL: m.model,
            p.TAGS: m.tags,
            p.SEQ: seq,
            p.RETRY_COUNT: retries,
            p.TOOL_NAME: tool_name,
            p.DURATION_MS: duration_ms,
            p.SUCCESS: success,
        }
        if error_code is not None:
            props[p.ERROR_CODE] = error_code
        if step_index is not None:
            props[p.STEP_INDEX] = step_index
        if self._injected_clock:
            self._emit(EventType.TOOL_INVOKED, props, m)
        else:
            # The hot path: the collector stamps the event itself, and keyword arguments
            # are only built when the mission has a user or session of its own.
            try:
                if m.anonymous:
                    self._track(EventType.TOOL_INVOKED, props)
                else:
                    self._track(
                        EventType.TOOL_INVOKED, props, user_id=m.user_id, session_id=m.session_id
                    )
            except CollectorError as exc:
                raise CollectionFailed(f"tool_invoked for mission {m.mission_id}: {exc}") from exc
        if self._metrics is not None:
            self._metrics.tools.labels(tool_name, "success" if success else "error").inc()

    def tokens_consumed(
        self,
        mission_id: str | uuid.UUID,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost: float | Decimal | None = None,
        *,
        model: str | None = None,
        cache_read_tokens: int = 0,
        cache_creation_tokens: int = 0,
        reasoning_tokens: int = 0,
        provider: str | None = None,
        duration_ms: float | None = None,
    ) -> CostEstimate:
        """Record one LLM call's tokens and price it; returns the cost estimate.

        Token semantics are OpenTelemetry's: cache tokens are part of ``input_tokens`` and
        reasoning tokens part of ``output_tokens``. ``cost`` (USD) given by the caller
        wins; otherwise the price table prices ``model`` (the mission's model when None);
        an unknown model gets no cost (``total`` None), never zero, and is counted.
        """
        usage = TokenUsage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read_tokens=cache_read_tokens,
            cache_creation_tokens=cache_creation_tokens,
            reasoning_tokens=reasoning_tokens,
        )
        if duration_ms is not None:
            _check_duration(duration_ms)
        if model is None:
            # A lock-free read of an immutable field: the mission is re-checked below.
            known = self._active.get(str(mission_id))
            if known is None:
                raise MissionNotFound(str(mission_id))
            call_model = known.model
        else:
            call_model = model
        estimate = self._prices.estimate(call_model, usage, provider=provider, cost=cost)
        total = estimate.total
        with self._lock:
            m = self._get(mission_id)
            m.llm_calls += 1
            m.input_tokens += usage.input_tokens
            m.output_tokens += usage.output_tokens
            m.cache_read_tokens += usage.cache_read_tokens
            m.cache_creation_tokens += usage.cache_creation_tokens
            m.reasoning_tokens += usage.reasoning_tokens
            if total is None:
                m.unpriced += 1
            else:
                m.cost += total
            props = m.props()
        add_llm_properties(props, call_model, provider, usage, estimate, duration_ms)
        self._emit(EventType.TOKENS_CONSUMED, props, m)
        metrics = self._metrics
        if metrics is not None:
            metrics.tokens.labels(call_model, "input").inc(usage.input_tokens)
            metrics.tokens.labels(call_model, "output").inc(usage.output_tokens)
        return estimate

    # -- reading ------------------------------------------------------------------------------

    def active_count(self) -> int:
        """Missions not yet finished."""
        return len(self._active)

    def is_active(self, mission_id: str | uuid.UUID) -> bool:
        """Whether the mission is being tracked and not finished."""
        return str(mission_id) in self._active

    def status(self, mission_id: str | uuid.UUID) -> MissionStatus | None:
        """The status of an active or recently finished mission, None if not in memory."""
        key = str(mission_id)
        with self._lock:
            m = self._active.get(key)
            if m is not None:
                return m.status
            recent = self._recent.get(key)
        return None if recent is None else recent.status

    def active_missions(self) -> list[MissionAnalytics]:
        """Snapshots of the active missions."""
        with self._lock:
            session = self._collector.session_id
            return [m.snapshot(m.status, session) for m in self._active.values()]

    def get_mission(self, mission_id: str | uuid.UUID) -> MissionAnalytics | None:
        """An active or finished mission: memory first, then the store; None if unknown."""
        key = str(mission_id)
        with self._lock:
            m = self._active.get(key)
            if m is not None:
                return m.snapshot(m.status, self._collector.session_id)
            recent = self._recent.get(key)
        if recent is not None:
            return recent
        path = self._database_path()
        if not path.exists():
            return None
        from tachimeter.missions.projection import read_mission

        try:
            with self._history() as conn:
                return read_mission(conn, key)
        except QueryError:
            return None

    def calculate_metrics(
        self, filter: MissionFilter | None = None, *, flush_timeout: float = 5.0
    ) -> MissionMetrics:
        """Aggregate metrics over stored missions (see ``tachimeter.analyze.missions``).

        Flushes the collector first (up to ``flush_timeout`` seconds) so that missions
        tracked so far are in the store. Raises :class:`~tachimeter.errors.QueryError`
        when there is no mission store.
        """
        # Lazy: analyze is a lower layer than missions and is only needed here.
        from tachimeter.analyze.missions import calculate_metrics

        if not self._collector.flush(flush_timeout):
            _log.warning(
                "calculate_metrics: the collector did not finish flushing in %s s; "
                "the newest missions may be missing",
                flush_timeout,
            )
        with self._history() as conn:
            return calculate_metrics(conn, filter)

    def _database_path(self) -> Path:
        if self._database is not None:
            return self._database
        return Path(self._collector.config.storage.path).expanduser()

    @contextlib.contextmanager
    def _history(self) -> Iterator[sqlite3.Connection]:
        """A read-only connection to the mission store."""
        path = self._database_path()
        if not path.exists():
            raise QueryError(
                f"no mission store at {str(path)!r}: register a StoreSink with "
                "MissionProjection() on the collector, or pass MissionTracker(database=...)"
            )
        import sqlite3  # only for history: programs that only track never load it

        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            yield conn
        finally:
            conn.close()


def _check_text(what: str, value: object) -> None:
    if type(value) is not str or not value:
        raise ValidationError(
            f"mission {what} must be a non-empty string, got {value!r}", path=what
        )


def _check_duration(value: object) -> None:
    if type(value) not in _NUMBER or not 0 <= value < _INF:  # type: ignore[operator]
        raise ValidationError(
            f"duration_ms must be a finite number >= 0 (milliseconds), got {value!r}",
            path="duration_ms",
        )
