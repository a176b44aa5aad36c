"""``POST /v1/missions`` and ``POST /v1/missions/{id}/...``: the mission API over HTTP.

Each call records the events :class:`~tachimeter.missions.tracker.MissionTracker` records
for the same call (see :mod:`tachimeter.server.ingest_missions`), committed before the
answer. Scope ``ingest``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import Annotated, Any, Final

from litestar import Request, Response, post
from litestar.params import HeaderParameter, PathParameter

from tachimeter.errors import StoreError
from tachimeter.model.events import AnalyticsEvent
from tachimeter.model.prices import PriceTable
from tachimeter.server.ingest import Problem
from tachimeter.server.ingest_bodies import (
    BodyDecoder,
    app_singleton,
    body_operation,
    server_scrubber,
)
from tachimeter.server.ingest_missions import (
    Action,
    CancelBody,
    EmptyBody,
    FailBody,
    LlmCallBody,
    MissionAck,
    MissionCall,
    MissionRecorder,
    RetryBody,
    StartBody,
    StepBody,
    ToolCallBody,
)
from tachimeter.server.problems import problem_spec
from tachimeter.server.state import ServerState, principal_of, server_state

__all__ = ["MISSION_INGEST_HANDLERS"]

_RECORDER_KEY: Final = "tachimeter.mission_recorder"
_INGEST: Final[dict[str, Any]] = {"scope": "ingest"}
_TAGS: Final = ["missions", "ingest"]


_RESPONSES: Final = {
    400: problem_spec("Malformed body, or a mission id over 128 characters"),
    404: problem_spec("No mission with this id is stored"),
    409: problem_spec("The lifecycle does not allow the call in the mission's status"),
    413: problem_spec("Body over the limit"),
    415: problem_spec("Content-Type or Content-Encoding not accepted"),
    422: problem_spec("Invalid body; errors name the bad field path"),
    429: problem_spec("Rate limit reached (Retry-After)"),
    503: problem_spec("The store cannot write (Retry-After)"),
}

MissionId = Annotated[
    str, PathParameter(description="The mission's id (from POST /v1/missions).", max_length=128)
]
IdempotencyKey = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        description="A retry with the same key gets the first answer and records nothing.",
        max_length=200,
    ),
]


def _recorder(request: Request[Any, Any, Any], state: ServerState) -> MissionRecorder:
    return app_singleton(
        request.app.state,
        _RECORDER_KEY,
        lambda: MissionRecorder(
            server_scrubber(state.config),
            state.config.validation,
            PriceTable(state.config.prices.overrides),
        ),
    )


async def _record(
    request: Request[Any, Any, Any],
    idempotency_key: str | None,
    decoder: BodyDecoder[Any],
    build: Callable[
        [MissionRecorder, Any],
        Callable[[sqlite3.Connection], tuple[list[AnalyticsEvent], MissionAck]],
    ],
    status_code: int = 200,
) -> Response[MissionAck]:
    """Decode the body, record the call on the writer thread, answer once committed."""
    state = server_state(request)
    principal = principal_of(request).name
    remembered_as = f"missions:{request.url.path}:{idempotency_key}" if idempotency_key else None
    body = await request.body()
    if remembered_as:
        earlier = state.remembered(principal, remembered_as, body)
        if earlier is not None:
            return Response(earlier, status_code=status_code)
    call = decoder.decode(
        body,
        request.headers.get("content-type"),
        request.headers.get("content-encoding"),
        state.settings.max_body_bytes,
    )
    recorder = _recorder(request, state)
    try:
        ack: MissionAck = await asyncio.wrap_future(
            state.writer.call_and_write(build(recorder, call))
        )
    except StoreError as exc:
        raise Problem(
            503,
            "service unavailable",
            f"the mission call could not be stored, nothing was recorded: {exc}",
            headers={"Retry-After": "5"},
        ) from None
    if remembered_as:
        state.remember(principal, remembered_as, body, ack)
    return Response(ack, status_code=status_code)


def _action(mission_id: str, action: Action) -> Callable[[MissionRecorder, MissionCall], Any]:
    def build(recorder: MissionRecorder, call: MissionCall) -> Any:
        return lambda conn: recorder.record(conn, mission_id, action, call)

    return build


_START: Final[BodyDecoder[StartBody]] = BodyDecoder(StartBody, what="mission")
_EMPTY: Final[BodyDecoder[EmptyBody]] = BodyDecoder(
    EmptyBody, what="mission call", empty=EmptyBody()
)
_RETRY: Final[BodyDecoder[RetryBody]] = BodyDecoder(
    RetryBody, what="mission call", empty=RetryBody()
)
_CANCEL: Final[BodyDecoder[CancelBody]] = BodyDecoder(
    CancelBody, what="mission call", empty=CancelBody()
)
_FAIL: Final[BodyDecoder[FailBody]] = BodyDecoder(FailBody, what="mission call")
_STEP: Final[BodyDecoder[StepBody]] = BodyDecoder(StepBody, what="mission call", empty=StepBody())
_TOOL: Final[BodyDecoder[ToolCallBody]] = BodyDecoder(ToolCallBody, what="tool call")
_LLM: Final[BodyDecoder[LlmCallBody]] = BodyDecoder(LlmCallBody, what="LLM call")
_NO_BODY: Final = "No parameters: an empty body, or `{}`."


@post(
    "/v1/missions",
    opt=_INGEST,
    status_code=201,
    summary="Start a mission",
    description=(
        "Creates a mission and, unless `status` says `created`, starts it (executing, or "
        "planning): the events `tachimeter.mission(...)` records on entering its block. "
        "The answer carries the mission id (yours, or a new UUIDv7). 409 when the id is "
        "taken."
    ),
    tags=_TAGS,
    operation_class=body_operation(StartBody, "The mission: backend, model, tags, ..."),
    responses=_RESPONSES,
)
async def mission_start(
    request: Request[Any, Any, Any], idempotency_key: IdempotencyKey = None
) -> Response[MissionAck]:
    """Start a mission (see the description)."""
    return await _record(
        request,
        idempotency_key,
        _START,
        lambda recorder, body: lambda conn: recorder.start(conn, body),
        201,
    )


def _lifecycle(
    action: Action,
    path: str,
    summary: str,
    description: str,
    decoder: BodyDecoder[Any],
    body_type: Any,
    body_help: str,
    required: bool,
) -> Any:
    """A ``POST /v1/missions/{id}/<path>`` handler recording ``action``."""

    async def handler(
        request: Request[Any, Any, Any],
        mission_id: MissionId,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[MissionAck]:
        return await _record(request, idempotency_key, decoder, _action(mission_id, action))

    # The name Litestar derives the OpenAPI operationId from (MissionTools, ...).
    handler.__name__ = handler.__qualname__ = f"mission_{path}"
    handler.__doc__ = summary
    return post(
        f"/v1/missions/{{mission_id:str}}/{path}",
        opt=_INGEST,
        status_code=200,
        summary=summary,
        description=description,
        tags=_TAGS,
        operation_class=body_operation(body_type, body_help, required=required),
        responses=_RESPONSES,
    )(handler)


MISSION_INGEST_HANDLERS: Final[tuple[Any, ...]] = (
    mission_start,
    _lifecycle(
        "plan",
        "plan",
        "Move a mission to planning",
        "From created, or re-planning from executing (the tracker's `plan`).",
        _EMPTY,
        EmptyBody,
        _NO_BODY,
        False,
    ),
    _lifecycle(
        "start",
        "start",
        "Move a mission to executing",
        "From created, planning or paused (the tracker's `mission_started`); an executing "
        "mission gets 409: a new attempt is a `retry`.",
        _EMPTY,
        EmptyBody,
        _NO_BODY,
        False,
    ),
    _lifecycle(
        "pause",
        "pause",
        "Pause a mission",
        "From planning or executing. Execution time runs on while paused; the paused time "
        "is reported apart, as `paused_ms`.",
        _EMPTY,
        EmptyBody,
        _NO_BODY,
        False,
    ),
    _lifecycle(
        "resume",
        "resume",
        "Resume a paused mission",
        "Back to the status it was paused from.",
        _EMPTY,
        EmptyBody,
        _NO_BODY,
        False,
    ),
    _lifecycle(
        "retry",
        "retry",
        "Start a new attempt",
        "From executing or paused: counts a retry (`retry_count`), with the error that "
        "caused it when given.",
        _RETRY,
        RetryBody,
        "Optional: the error code and message that caused the retry.",
        False,
    ),
    _lifecycle(
        "step",
        "steps",
        "Record a finished step",
        "A step's index (default: the next one), success, name and duration.",
        _STEP,
        StepBody,
        "The step; every field is optional.",
        False,
    ),
    _lifecycle(
        "tool",
        "tools",
        "Record a tool call",
        "One tool call: name, duration in milliseconds, success, error code.",
        _TOOL,
        ToolCallBody,
        "The tool call.",
        True,
    ),
    _lifecycle(
        "llm",
        "llm",
        "Record an LLM call",
        "Tokens (OpenTelemetry semantics: cache tokens inside input, reasoning inside "
        "output), model (default: the mission's), provider, duration; priced from the "
        "price table unless `cost_usd` is given. The answer carries the cost.",
        _LLM,
        LlmCallBody,
        "The LLM call's usage.",
        True,
    ),
    _lifecycle(
        "complete",
        "complete",
        "Complete a mission",
        "From executing only; the answer carries the execution time and totals.",
        _EMPTY,
        EmptyBody,
        _NO_BODY,
        False,
    ),
    _lifecycle(
        "fail",
        "fail",
        "Fail a mission",
        "From any active status, with the error (a code and a message).",
        _FAIL,
        FailBody,
        "The error that ended the mission.",
        True,
    ),
    _lifecycle(
        "cancel",
        "cancel",
        "Cancel a mission",
        "From any active status, with an optional reason.",
        _CANCEL,
        CancelBody,
        "Optional: why.",
        False,
    ),
)
