"""The mission records of spec 414: one mission, its tool usage, its error, the aggregate.

All are frozen msgspec Structs: snapshots, safe to hand across threads and to encode
(``msgspec.json.encode(mission)``).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Final

import msgspec

from tachimeter.missions.lifecycle import MissionStatus
from tachimeter.model.tokens import TokenUsage

__all__ = [
    "PERCENTILE_METHOD",
    "MissionAnalytics",
    "MissionError",
    "MissionMetrics",
    "ToolUsage",
]

PERCENTILE_METHOD: Final = "linear interpolation between order statistics (Hyndman-Fan type 7)"
"""How every percentile in mission analysis is computed: numpy's ``method="linear"``."""

# Messages are scrubbed by the collector; this bound keeps one traceback-sized message from
# dominating a row (a message is for recognising the error, the code is for counting it).
_MAX_MESSAGE: Final = 1_000
_CAMEL_BOUNDARY: Final = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
# Error codes by words of the exception's class names (its MRO), checked in order: SDKs
# (httpx, openai, anthropic, requests) name their exceptions this way without sharing
# base classes with the builtins. (code, recoverable)
_NAME_RULES: Final[tuple[tuple[str, str, bool], ...]] = (
    ("RateLimit", "RATE_LIMITED", True),
    ("Timeout", "TIMEOUT", True),
    ("TimedOut", "TIMEOUT", True),
    ("Connection", "CONNECTION_ERROR", True),
    ("Permission", "PERMISSION_DENIED", False),
    ("Authentication", "AUTHENTICATION_ERROR", False),
    ("NotFound", "NOT_FOUND", False),
)
_BUILTIN_RULES: Final[tuple[tuple[type[BaseException], str, bool], ...]] = (
    (TimeoutError, "TIMEOUT", True),
    (ConnectionError, "CONNECTION_ERROR", True),
    (PermissionError, "PERMISSION_DENIED", False),
    (FileNotFoundError, "NOT_FOUND", False),
    (MemoryError, "OUT_OF_MEMORY", False),
    (RecursionError, "RECURSION_LIMIT", False),
)


class ToolUsage(msgspec.Struct, frozen=True, kw_only=True):
    """How one mission used one tool (spec 414); times in milliseconds.

    >>> ToolUsage(tool_name="search", invocation_count=2, total_time_ms=240.0,
    ...           success_count=2, failure_count=0).success_rate
    1.0
    """

    tool_name: str
    invocation_count: int
    total_time_ms: float
    success_count: int
    failure_count: int

    @property
    def success_rate(self) -> float | None:
        """Successful invocations over all, None when never invoked."""
        if self.invocation_count == 0:
            return None
        return self.success_count / self.invocation_count


class MissionError(msgspec.Struct, frozen=True, kw_only=True):
    """Why a mission (or a tool call) failed: a countable ``code`` and a readable message.

    ``error_type`` is the exception's qualified class name when the error came from one.

    >>> MissionError.from_exception(TimeoutError("no answer in 30 s")).code
    'TIMEOUT'
    >>> e = MissionError.from_exception(KeyError("x"), step_index=2); (e.code, e.step_index)
    ('KEY_ERROR', 2)
    """

    code: str
    message: str
    step_index: int | None = None
    recoverable: bool = False
    error_type: str | None = None

    @classmethod
    def from_exception(cls, exc: BaseException, step_index: int | None = None) -> MissionError:
        """Classify an exception: builtin kinds, HTTP status, SDK naming, else its class name.

        Timeouts, connection errors, rate limits (429) and server errors (5xx) are marked
        recoverable: retrying the same thing may succeed.
        """
        code, recoverable = _classify(exc)
        kind = type(exc)
        message = str(exc) or kind.__name__
        return cls(
            code=code,
            message=message[:_MAX_MESSAGE],
            step_index=step_index,
            recoverable=recoverable,
            error_type=f"{kind.__module__}.{kind.__qualname__}",
        )


def _classify(exc: BaseException) -> tuple[str, bool]:
    for kind, code, recoverable in _BUILTIN_RULES:
        if isinstance(exc, kind):
            return code, recoverable
    status = getattr(exc, "status_code", None)
    if status is None:
        status = getattr(exc, "status", None)
    if type(status) is int and 400 <= status <= 599:
        return _http_code(status)
    names = [k.__name__ for k in type(exc).__mro__]
    for word, code, recoverable in _NAME_RULES:
        if any(word in name for name in names):
            return code, recoverable
    given = getattr(exc, "code", None)
    if isinstance(given, str) and given.strip():
        return given.strip().upper(), False
    return _CAMEL_BOUNDARY.sub("_", type(exc).__name__).upper(), False


def _http_code(status: int) -> tuple[str, bool]:
    if status == 429:
        return "RATE_LIMITED", True
    if status == 408:
        return "TIMEOUT", True
    if status == 401:
        return "AUTHENTICATION_ERROR", False
    if status == 403:
        return "PERMISSION_DENIED", False
    if status == 404:
        return "NOT_FOUND", False
    if status >= 500:
        return "SERVER_ERROR", True
    return "CLIENT_ERROR", False


class MissionAnalytics(msgspec.Struct, frozen=True, kw_only=True):
    """One mission as the tracker or the store sees it (spec 414's ``MissionAnalytics``).

    Durations are milliseconds. ``execution_time_ms`` runs from the first start (planning
    or executing) to the end, pauses included (``paused_ms`` says how much of it was
    paused); a mission that ended without starting has none. ``total_cost`` is the sum of
    the priced LLM calls in USD; when ``unpriced_llm_calls`` is not zero some calls had no
    known price and the total is a lower bound (``cost_complete`` is False).

    >>> import datetime as dt
    >>> t0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    >>> m = MissionAnalytics(mission_id="m1", status=MissionStatus.COMPLETED, created_at=t0,
    ...     started_at=t0, completed_at=t0 + dt.timedelta(seconds=2), backend="anthropic",
    ...     model="claude-sonnet-4", step_count=4, steps_completed=3)
    >>> m.duration(), m.success_rate()
    (datetime.timedelta(seconds=2), 0.75)
    """

    mission_id: str
    status: MissionStatus
    created_at: dt.datetime
    backend: str
    model: str
    session_id: str | None = None
    user_id: str | None = None
    started_at: dt.datetime | None = None
    completed_at: dt.datetime | None = None
    execution_time_ms: float | None = None
    paused_ms: float = 0.0
    step_count: int = 0
    steps_completed: int = 0
    tools_used: tuple[ToolUsage, ...] = ()
    llm_calls: int = 0
    token_usage: TokenUsage = TokenUsage()
    total_tokens: int = 0
    total_cost: float = 0.0
    unpriced_llm_calls: int = 0
    tags: tuple[str, ...] = ()
    error: MissionError | None = None
    retry_count: int = 0

    def duration(self, now: dt.datetime | None = None) -> dt.timedelta | None:
        """Start to end; start to ``now`` while running; None before the start."""
        if self.started_at is None:
            return None
        end = self.completed_at
        if end is None:
            end = now if now is not None else dt.datetime.now(dt.UTC)
        return end - self.started_at

    def success_rate(self) -> float | None:
        """Steps completed over steps seen, None when no step was recorded."""
        if self.step_count == 0:
            return None
        return self.steps_completed / self.step_count

    @property
    def tool_calls(self) -> int:
        """Tool invocations over all tools."""
        return sum(t.invocation_count for t in self.tools_used)

    @property
    def cost_complete(self) -> bool:
        """False when some LLM call had no known price (``total_cost`` is a lower bound)."""
        return self.unpriced_llm_calls == 0


class MissionMetrics(msgspec.Struct, frozen=True, kw_only=True):
    """Aggregate of many missions (spec 414's ``MissionMetrics`` plus what it lacks).

    Counts by status include active missions in ``total_missions``; ``success_rate`` is
    completed over *finished* missions (completed, failed, cancelled, abandoned), so
    missions still running do not count as failures. Execution-time statistics are over
    finished missions that started, in milliseconds, with percentiles computed by
    :data:`PERCENTILE_METHOD`. ``total_cost`` sums priced calls only;
    ``missions_with_unpriced_calls`` says how many missions it undercounts.
    ``cost_per_successful_mission`` is the total cost over completed missions (what one
    success costs, failures included); ``tokens_per_step`` is total tokens over total steps.

    >>> MissionMetrics().success_rate
    0.0
    """

    total_missions: int = 0
    completed_missions: int = 0
    failed_missions: int = 0
    cancelled_missions: int = 0
    abandoned_missions: int = 0
    active_missions: int = 0
    success_rate: float = 0.0
    avg_execution_time_ms: float = 0.0
    median_execution_time_ms: float = 0.0
    p90_execution_time_ms: float = 0.0
    p95_execution_time_ms: float = 0.0
    p99_execution_time_ms: float = 0.0
    avg_steps: float = 0.0
    total_tokens: int = 0
    total_cost: float = 0.0
    missions_with_unpriced_calls: int = 0
    cost_per_successful_mission: float | None = None
    tokens_per_step: float | None = None
    top_tools: list[tuple[str, int]] = []
    top_errors: list[tuple[str, int]] = []
    by_status: dict[MissionStatus, int] = {}
    by_backend: dict[str, int] = {}
    by_model: dict[str, int] = {}
    percentile_method: str = PERCENTILE_METHOD
