"""Mission lifecycle calls over HTTP: the events the in-process tracker would emit.

Internal to the server (the routes are in ``routes/mission_ingest.py``). An agent
written in another language drives a mission through ``POST /v1/missions`` and
``POST /v1/missions/{id}/...``; :class:`MissionRecorder` turns each call into exactly the
events :class:`~tachimeter.missions.tracker.MissionTracker` records for the same call
(same event types, priorities and properties, :mod:`tachimeter.missions.properties`), so
the mission tables, ``GET /v1/missions...`` and the dashboard cannot tell them apart.

The server keeps no mission in memory: the tracker's state is read back from the store
(``missions``, and the mission's pause and resume events for the paused time), on the
writer thread, right before the events are written (:meth:`IngestWriter.call_and_write`).
So ``seq`` numbers follow each other whatever the concurrency, a restart loses nothing,
and several server processes on one store stay consistent. Calls on a mission that is
not stored get 404; calls the lifecycle forbids (completing a mission that is not
executing, anything on a finished one) get 409 naming the mission and its status.

Times are the server's: each event is stamped when it is written, as the tracker stamps
its events when they happen; durations (``duration_ms`` of tools, steps and LLM calls)
are the caller's.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Annotated, Any, Final, Literal, TypeAlias

import msgspec
from msgspec import Meta

from tachimeter.errors import ValidationError
from tachimeter.missions import properties as p
from tachimeter.missions.lifecycle import TRANSITIONS, MissionStatus
from tachimeter.missions.records import MissionError
from tachimeter.missions.tracker import (
    MissionState,
    add_end_properties,
    add_llm_properties,
    add_move_properties,
    add_retry_properties,
    add_step_properties,
)
from tachimeter.model.event_types import EventPriority, EventType
from tachimeter.model.events import AnalyticsEvent
from tachimeter.model.ids import uuid7, uuid7_from_ns
from tachimeter.model.prices import PriceTable
from tachimeter.model.timestamps import from_ns, parse_timestamp, to_ns
from tachimeter.model.tokens import TokenUsage
from tachimeter.model.validation import ValidationLimits, validate_event
from tachimeter.privacy import Scrubber
from tachimeter.server.ingest import FieldError, Problem

__all__ = [
    "CancelBody",
    "EmptyBody",
    "FailBody",
    "LlmCallBody",
    "MissionAck",
    "MissionCall",
    "MissionRecorder",
    "RetryBody",
    "StartBody",
    "StepBody",
    "ToolCallBody",
]

_S = MissionStatus
# As the tracker: lifecycle events outrank activity under queue pressure.
_LIFECYCLE: Final = EventPriority.HIGH
_ACTIVITY: Final = EventPriority.NORMAL

Text = Annotated[str, Meta(min_length=1, max_length=200)]
Message = Annotated[str, Meta(max_length=4096)]
Milliseconds = Annotated[float, Meta(ge=0, le=1e12, description="Milliseconds, >= 0.")]
Tokens = Annotated[int, Meta(ge=0, le=10**12)]
MissionId = Annotated[
    str,
    Meta(
        pattern="^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$",
        description="A mission id of your own (letters, digits, . _ : -; at most 128).",
    ),
]


class StartBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/missions``: create a mission, and start it unless ``status`` says not."""

    backend: Text
    model: Text
    mission_id: MissionId | None = None
    tags: Annotated[list[Text], Meta(max_length=64)] = []
    session_id: Text | None = None
    user_id: Text | None = None
    status: Annotated[
        Literal["executing", "planning", "created"],
        Meta(
            description="Where the mission starts: executing (default, as "
            "tachimeter.mission()), planning (mission(plan=True)) or created."
        ),
    ] = "executing"


class EmptyBody(msgspec.Struct, forbid_unknown_fields=True):
    """A call without parameters (``plan``, ``start``, ``pause``, ``resume``, ``complete``)."""


class RetryBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST .../retry``: a new attempt after a recoverable error (``code`` names it;
    ``message`` is kept with a code only)."""

    code: Text | None = None
    message: Message | None = None


class FailBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST .../fail``: the error that ended the mission (``MissionError``)."""

    code: Text
    message: Message = ""
    error_type: Text | None = None
    step_index: Annotated[int, Meta(ge=0)] | None = None
    recoverable: bool = False


class CancelBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST .../cancel``: why."""

    reason: Message | None = None


class StepBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST .../steps``: a finished step; ``index`` defaults to the next one."""

    index: Annotated[int, Meta(ge=0, le=10**9)] | None = None
    success: bool = True
    name: Text | None = None
    duration_ms: Milliseconds | None = None


class ToolCallBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST .../tools``: one tool call."""

    name: Text
    duration_ms: Milliseconds
    success: bool = True
    error_code: Text | None = None
    step_index: Annotated[int, Meta(ge=0, le=10**9)] | None = None


class LlmCallBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST .../llm``: one LLM call's tokens (OpenTelemetry semantics: cache tokens are
    part of ``input_tokens``, reasoning tokens part of ``output_tokens``); ``cost_usd``
    given wins over the price table; ``model`` defaults to the mission's."""

    input_tokens: Tokens = 0
    output_tokens: Tokens = 0
    cache_read_tokens: Tokens = 0
    cache_creation_tokens: Tokens = 0
    reasoning_tokens: Tokens = 0
    model: Text | None = None
    provider: Text | None = None
    cost_usd: Annotated[float, Meta(ge=0, le=1e9)] | None = None
    duration_ms: Milliseconds | None = None


MissionCall: TypeAlias = (
    EmptyBody | RetryBody | FailBody | CancelBody | StepBody | ToolCallBody | LlmCallBody
)
Action: TypeAlias = Literal[
    "plan", "start", "pause", "resume", "retry", "complete", "fail", "cancel", "step", "tool", "llm"
]


class MissionAck(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What was recorded: the mission's status after the call and the ``seq`` of its last
    event, with the call's own figures where it has some (the others are left out)."""

    mission_id: str
    status: str
    seq: int
    step_index: int | None = None
    retry_count: int | None = None
    cost_usd: float | None = None
    cost_source: str | None = None
    execution_time_ms: float | None = None
    paused_ms: float | None = None
    total_tokens: int | None = None
    total_cost: float | None = None


class _Stored(MissionState):
    """A stored mission, as much of it as the tracker holds in memory for the next call."""

    __slots__ = ("step_count", "total_cost", "total_tokens", "unpriced")

    def __init__(
        self,
        mission_id: str,
        backend: str,
        model: str,
        tags: list[str],
        session_id: str | None,
        user_id: str | None,
        *,
        status: MissionStatus = _S.CREATED,
        last_seq: int = -1,
        retry_count: int = 0,
        started_ns: int = 0,
        step_count: int = 0,
        total_tokens: int = 0,
        total_cost: float = 0.0,
        unpriced: int = 0,
    ) -> None:
        super().__init__(mission_id, backend, model, tags, session_id, user_id)
        self.status = status
        self.seq = last_seq + 1
        self.retry_count = retry_count
        self.started_ns = started_ns
        self.step_count = step_count
        self.total_tokens = total_tokens
        self.total_cost = total_cost
        self.unpriced = unpriced

    @classmethod
    def from_row(cls, mission_id: str, row: Sequence[Any]) -> _Stored:
        """From a ``_READ_SQL`` row of ``missions``."""
        (status, last_seq, backend, model, tags, session, user, retries, started, steps,
         total_tokens, total_cost, unpriced) = row  # fmt: skip
        decoded = msgspec.json.decode(tags) if tags else []
        return cls(
            mission_id,
            backend or "",
            model or "",
            [t for t in decoded if type(t) is str] if type(decoded) is list else [],
            session,
            user,
            status=MissionStatus(status),
            last_seq=int(last_seq),
            retry_count=int(retries),
            started_ns=to_ns(parse_timestamp(started)) if started else 0,
            step_count=int(steps),
            total_tokens=int(total_tokens),
            total_cost=float(total_cost),
            unpriced=int(unpriced),
        )


_READ_SQL: Final = (
    "SELECT status, last_seq, backend, model, tags, session_id, user_id, retry_count, "
    "started_at, step_count, total_tokens, total_cost, unpriced_llm_calls "
    "FROM missions WHERE mission_id = ?"
)
# The events that enter or leave a pause (the status-changing ones short of the end).
_PAUSE_EVENTS: Final = tuple(
    t.event_name
    for t in (
        EventType.MISSION_STARTED,
        EventType.MISSION_PAUSED,
        EventType.MISSION_RESUMED,
        EventType.RETRY_ATTEMPTED,
    )
)
_PAUSE_SQL: Final = (
    "SELECT event_name, timestamp, properties FROM analytics_events "
    f"WHERE mission_id = ? AND event_name IN ({', '.join('?' * len(_PAUSE_EVENTS))})"
)
_PAUSED: Final = EventType.MISSION_PAUSED.event_name


def read_stored(conn: sqlite3.Connection, mission_id: str) -> _Stored | None:
    """The stored mission with its paused time so far, or None when there is none."""
    row = conn.execute(_READ_SQL, (mission_id,)).fetchone()
    if row is None:
        return None
    stored = _Stored.from_row(mission_id, row)
    events = []
    for name, ts, text in conn.execute(_PAUSE_SQL, (mission_id, *_PAUSE_EVENTS)).fetchall():
        props = msgspec.json.decode(text) if text else None
        if type(props) is dict and type(props.get(p.SEQ)) is int:
            events.append((props[p.SEQ], name, to_ns(parse_timestamp(ts)), props))
    events.sort(key=lambda e: e[0])
    paused_at = 0
    for _, name, ns, props in events:
        if props.get(p.FROM_STATUS) == _S.PAUSED.value and paused_at:
            stored.paused_total_ns += ns - paused_at
            paused_at = 0
        if name == _PAUSED:
            paused_at = ns
            came_from = props.get(p.FROM_STATUS)
            stored.paused_from = (
                MissionStatus(came_from) if came_from in ("planning", "executing") else None
            )
    if stored.status is _S.PAUSED:
        stored.paused_ns = paused_at
        if stored.paused_from is None:  # the pause event is gone (retention): resume runs
            stored.paused_from = _S.EXECUTING if stored.started_ns else _S.PLANNING
    else:
        stored.paused_from = None
    return stored


class MissionRecorder:
    """Builds the tracker's events for REST mission calls, from the stored state.

    Methods run on the writer thread with its connection and return the events to
    commit and the answer; they raise :class:`~tachimeter.server.ingest.Problem` (404,
    409, 422) when the call cannot be recorded, before anything is written.

    >>> import sqlite3
    >>> from tachimeter.store.migrator import Migrator
    >>> conn = sqlite3.connect(":memory:", isolation_level=None)
    >>> _ = Migrator(conn).up()
    >>> recorder = MissionRecorder(Scrubber(), ValidationLimits(), PriceTable())
    >>> events, ack = recorder.start(conn, StartBody(backend="openai", model="gpt-4o"))
    >>> [e.event_name for e in events], ack.status, ack.seq
    (['mission_created', 'mission_started'], 'executing', 1)
    """

    __slots__ = ("_clock", "_limits", "_prices", "_scrubber")

    def __init__(
        self,
        scrubber: Scrubber,
        limits: ValidationLimits,
        prices: PriceTable,
        *,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._scrubber = scrubber
        self._limits = limits
        self._prices = prices
        self._clock = clock

    # -- creating ------------------------------------------------------------------------------

    def start(
        self, conn: sqlite3.Connection, body: StartBody
    ) -> tuple[list[AnalyticsEvent], MissionAck]:
        """``start_mission``, then ``mission_started`` or ``plan`` as ``body.status`` says."""
        mission_id = body.mission_id or str(uuid7())
        found = conn.execute(
            "SELECT status FROM missions WHERE mission_id = ?", (mission_id,)
        ).fetchone()
        if found is not None:
            raise Problem(
                409,
                "mission exists",
                f"mission {mission_id!r} already exists (status {found[0]}); a mission id "
                "names one mission: start a new mission with another id, or leave "
                "mission_id out to get a fresh one",
            )
        now = self._clock()
        stored = _Stored(
            mission_id, body.backend, body.model, list(body.tags), body.session_id, body.user_id
        )
        props = stored.props()
        props[p.STATUS] = _S.CREATED.value
        events = [self._event(stored, EventType.MISSION_CREATED, props, _LIFECYCLE, now)]
        if body.status != "created":
            target = MissionStatus(body.status)
            old = stored.enter(target, now)
            props = stored.props()
            add_move_properties(props, target, old)
            events.append(self._event(stored, EventType.MISSION_STARTED, props, _LIFECYCLE, now))
        return events, self._ack(stored)

    # -- lifecycle -----------------------------------------------------------------------------

    def record(
        self, conn: sqlite3.Connection, mission_id: str, action: Action, body: MissionCall
    ) -> tuple[list[AnalyticsEvent], MissionAck]:
        """Record ``action`` on the stored mission ``mission_id``."""
        stored = read_stored(conn, mission_id)
        if stored is None:
            raise Problem(
                404,
                "mission not found",
                f"no mission {mission_id!r} is stored: start it with POST /v1/missions "
                "first (its id is in the answer)",
            )
        if stored.status.is_terminal:
            raise Problem(
                409,
                "mission finished",
                f"mission {mission_id!r} is {stored.status.value}: a finished mission "
                f"cannot {_VERBS[action]}",
            )
        now = self._clock()
        if action in ("plan", "start", "pause", "resume"):
            return self._move(stored, action, now)
        if action == "retry":
            assert isinstance(body, RetryBody)
            return self._retry(stored, body, now)
        if action in ("complete", "fail", "cancel"):
            return self._finish(stored, action, body, now)
        if action == "step":
            assert isinstance(body, StepBody)
            return self._step(stored, body, now)
        if action == "tool":
            assert isinstance(body, ToolCallBody)
            return self._tool(stored, body, now)
        assert isinstance(body, LlmCallBody)
        return self._llm(stored, body, now)

    def _check(self, stored: _Stored, target: MissionStatus, action: Action) -> None:
        if target not in TRANSITIONS[stored.status]:
            raise Problem(
                409,
                "invalid mission transition",
                f"mission {stored.mission_id!r} is {stored.status.value}: it cannot "
                f"{_VERBS[action]} ({stored.status.value} -> {target.value} is not allowed"
                f"{_HINTS.get((stored.status, target), '')})",
            )

    def _move(
        self, stored: _Stored, action: Action, now: int
    ) -> tuple[list[AnalyticsEvent], MissionAck]:
        kind = EventType.MISSION_STARTED
        if action == "plan":
            target = _S.PLANNING
        elif action == "start":
            target = _S.EXECUTING
            if stored.status is _S.EXECUTING:
                # The lifecycle's executing -> executing is a retry, which counts itself.
                raise Problem(
                    409,
                    "invalid mission transition",
                    f"mission {stored.mission_id!r} is already executing; POST .../retry "
                    "starts a new attempt",
                )
        elif action == "pause":
            target, kind = _S.PAUSED, EventType.MISSION_PAUSED
        else:
            kind = EventType.MISSION_RESUMED
            if stored.status is not _S.PAUSED or stored.paused_from is None:
                raise Problem(
                    409,
                    "invalid mission transition",
                    f"mission {stored.mission_id!r} is {stored.status.value}: only a paused "
                    "mission can resume",
                )
            target = stored.paused_from
        self._check(stored, target, action)
        old = stored.enter(target, now)
        props = stored.props()
        add_move_properties(
            props, target, old, stored.paused_total_ns / 1e6 if old is _S.PAUSED else None
        )
        return [self._event(stored, kind, props, _LIFECYCLE, now)], self._ack(stored)

    def _retry(
        self, stored: _Stored, body: RetryBody, now: int
    ) -> tuple[list[AnalyticsEvent], MissionAck]:
        if stored.status is not _S.EXECUTING and stored.status is not _S.PAUSED:
            raise Problem(
                409,
                "invalid mission transition",
                f"mission {stored.mission_id!r} is {stored.status.value}: a retry needs an "
                "executing or paused mission (start it first)",
            )
        old = stored.enter(_S.EXECUTING, now)
        stored.retry_count += 1
        props = stored.props()
        error = (
            None if body.code is None else MissionError(code=body.code, message=body.message or "")
        )
        add_retry_properties(props, old, error)
        event = self._event(stored, EventType.RETRY_ATTEMPTED, props, _LIFECYCLE, now)
        ack = self._ack(stored)
        ack.retry_count = stored.retry_count
        return [event], ack

    def _finish(
        self, stored: _Stored, action: Action, body: MissionCall, now: int
    ) -> tuple[list[AnalyticsEvent], MissionAck]:
        status, kind = _ENDINGS[action]
        self._check(stored, status, action)
        from_status = stored.status
        execution_ms = stored.stop(now)
        paused_ms = stored.paused_total_ns / 1e6
        stored.status = status
        props = stored.props()
        add_end_properties(
            props,
            status,
            from_status,
            execution_ms=execution_ms,
            paused_ms=paused_ms,
            total_tokens=stored.total_tokens,
            total_cost=stored.total_cost,
            unpriced=stored.unpriced,
            error=_error_of(body),
            reason=body.reason if isinstance(body, CancelBody) else None,
        )
        event = self._event(stored, kind, props, _LIFECYCLE, now)
        ack = self._ack(stored)
        ack.execution_time_ms = execution_ms
        ack.paused_ms = paused_ms
        ack.total_tokens = stored.total_tokens
        ack.total_cost = stored.total_cost
        return [event], ack

    # -- activity ------------------------------------------------------------------------------

    def _step(
        self, stored: _Stored, body: StepBody, now: int
    ) -> tuple[list[AnalyticsEvent], MissionAck]:
        index = stored.step_count if body.index is None else body.index
        props = stored.props()
        add_step_properties(props, index, body.success, body.name, body.duration_ms)
        event = self._event(stored, EventType.MISSION_STEP_COMPLETED, props, _ACTIVITY, now)
        ack = self._ack(stored)
        ack.step_index = index
        return [event], ack

    def _tool(
        self, stored: _Stored, body: ToolCallBody, now: int
    ) -> tuple[list[AnalyticsEvent], MissionAck]:
        props = stored.props()
        props[p.TOOL_NAME] = body.name
        props[p.DURATION_MS] = body.duration_ms
        props[p.SUCCESS] = body.success
        if body.error_code is not None:
            props[p.ERROR_CODE] = body.error_code
        if body.step_index is not None:
            props[p.STEP_INDEX] = body.step_index
        return [self._event(stored, EventType.TOOL_INVOKED, props, _ACTIVITY, now)], self._ack(
            stored
        )

    def _llm(
        self, stored: _Stored, body: LlmCallBody, now: int
    ) -> tuple[list[AnalyticsEvent], MissionAck]:
        try:
            usage = TokenUsage(
                input_tokens=body.input_tokens,
                output_tokens=body.output_tokens,
                cache_read_tokens=body.cache_read_tokens,
                cache_creation_tokens=body.cache_creation_tokens,
                reasoning_tokens=body.reasoning_tokens,
            )
        except ValidationError as exc:
            path = f"$.{exc.path}" if getattr(exc, "path", None) else "$"
            raise Problem(
                422, "invalid LLM call", f"{path}: {exc}", [FieldError(path, str(exc))]
            ) from None
        model = body.model or stored.model
        cost = None if body.cost_usd is None else Decimal(repr(body.cost_usd))
        estimate = self._prices.estimate(model, usage, provider=body.provider, cost=cost)
        props = stored.props()
        add_llm_properties(props, model, body.provider, usage, estimate, body.duration_ms)
        event = self._event(stored, EventType.TOKENS_CONSUMED, props, _ACTIVITY, now)
        ack = self._ack(stored)
        ack.cost_usd = props[p.COST_USD]
        ack.cost_source = estimate.source
        return [event], ack

    # -- events --------------------------------------------------------------------------------

    def _event(
        self,
        stored: _Stored,
        kind: EventType,
        props: dict[str, Any],
        priority: EventPriority,
        now: int,
    ) -> AnalyticsEvent:
        event = AnalyticsEvent(
            id=uuid7_from_ns(now),
            category=kind.category(),
            event_type=kind,
            timestamp=from_ns(now),
            session_id=stored.session_id,
            priority=priority,
            data=props,
            user_id=stored.user_id,
        )
        result = validate_event(event, limits=self._limits)
        if not result.valid:
            errors = [FieldError("$", message) for message in result.errors]
            raise Problem(
                422,
                "invalid mission call",
                f"the {kind.event_name} event would be invalid: {'; '.join(result.errors)}",
                errors,
            )
        return self._scrubber.sanitize_event(event)

    @staticmethod
    def _ack(stored: _Stored) -> MissionAck:
        return MissionAck(
            mission_id=stored.mission_id, status=stored.status.value, seq=stored.seq - 1
        )


def _error_of(body: MissionCall) -> MissionError | None:
    """The ``MissionError`` a ``fail`` body describes (None for other calls)."""
    if not isinstance(body, FailBody):
        return None
    return MissionError(
        code=body.code,
        message=body.message,
        step_index=body.step_index,
        recoverable=body.recoverable,
        error_type=body.error_type,
    )


_ENDINGS: Final[dict[str, tuple[MissionStatus, EventType]]] = {
    "complete": (_S.COMPLETED, EventType.MISSION_COMPLETED),
    "fail": (_S.FAILED, EventType.MISSION_FAILED),
    "cancel": (_S.CANCELLED, EventType.MISSION_CANCELLED),
}
_VERBS: Final[dict[str, str]] = {
    "plan": "plan",
    "start": "start executing",
    "pause": "pause",
    "resume": "resume",
    "retry": "retry",
    "complete": "complete",
    "fail": "fail",
    "cancel": "be cancelled",
    "step": "record steps",
    "tool": "record tool calls",
    "llm": "record LLM calls",
}
_HINTS: Final[dict[tuple[MissionStatus, MissionStatus], str]] = {
    (_S.CREATED, _S.COMPLETED): "; start it first, or cancel it if it did no work",
    (_S.PLANNING, _S.COMPLETED): "; start it first",
    (_S.PAUSED, _S.COMPLETED): "; resume it first",
}
