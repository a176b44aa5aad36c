"""The Pythonic mission API: ``with tachimeter.mission(...) as m`` and ``@tachimeter.tool``.

>>> from tachimeter.missions import MissionTracker
>>> from tachimeter.testing import MemorySink, collector_for_tests
>>> sink = MemorySink()
>>> with collector_for_tests(sink) as collector:
...     tracker = MissionTracker(collector)
...     @tool
...     def search(query: str) -> list[str]:
...         return [query]
...     with mission(backend="anthropic", model="claude-sonnet-4", tags=["docs"],
...                  tracker=tracker) as m:
...         hits = search("missions")
...         _ = m.step(success=True)
...         cost = m.llm_call(input_tokens=500, output_tokens=300)
...     collector.flush()
True
>>> [e.event_name for e in sink.events()]  # doctest: +NORMALIZE_WHITESPACE
['mission_created', 'mission_started', 'tool_invoked', 'mission_step_completed',
 'tokens_consumed', 'mission_completed']

The current mission travels in a :class:`contextvars.ContextVar`, so ``@tool`` calls
attach to the innermost ``mission()`` block of their thread or asyncio task, including
tasks created inside the block (they copy the context). Work handed to another thread
does not inherit it unless it runs in a copied context
(``contextvars.copy_context().run``), or the tool is given ``mission=m``.

These calls never raise into user code for telemetry reasons: a refused call (an invalid
transition, a bad value) is counted in ``tracker.rejected_calls`` and logged once,
unless the collector is in strict mode. Exceptions of user code always propagate.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from decimal import Decimal
from types import TracebackType
from typing import Any, Final, ParamSpec, TypeVar, cast, overload

from tachimeter.errors import ConfigError, TachimeterError
from tachimeter.missions.lifecycle import MissionStatus
from tachimeter.missions.records import MissionAnalytics, MissionError
from tachimeter.missions.tracker import MissionTracker
from tachimeter.model.ids import uuid7

__all__ = ["Mission", "ToolCall", "current_mission", "default_tracker", "mission", "tool"]

_log = logging.getLogger("tachimeter.missions")
_P = ParamSpec("_P")
_R = TypeVar("_R")

_current: Final[contextvars.ContextVar[Mission | None]] = contextvars.ContextVar(
    "tachimeter_mission", default=None
)
_perf_ns = time.perf_counter_ns
# Interrupts end a mission as cancelled, not failed: nobody's agent was at fault.
_CANCELLING: Final = (KeyboardInterrupt, SystemExit, GeneratorExit)


def _is_cancellation(exc: BaseException) -> bool:
    if isinstance(exc, _CANCELLING):
        return True
    # asyncio costs 20-40 ms to import; a program that never imported it cannot raise its
    # CancelledError, so it is looked up rather than imported.
    asyncio = sys.modules.get("asyncio")
    return asyncio is not None and isinstance(exc, asyncio.CancelledError)


_S = MissionStatus


def current_mission() -> Mission | None:
    """The innermost active ``mission()`` block of this thread or task, if any."""
    return _current.get()


class Mission:
    """One mission, tracked while its ``with`` (or ``async with``) block runs.

    Entering starts it (``executing``, or ``planning`` with ``plan=True``); leaving
    normally completes it; an exception fails it with the exception classified
    (:meth:`MissionError.from_exception`) and propagates; cancellation
    (``asyncio.CancelledError``, ``KeyboardInterrupt``, ``SystemExit``) cancels it. Calling
    ``complete``/``fail``/``cancel`` inside the block ends it early. The handle belongs to
    the code running the mission; steps recorded from several threads should give their
    ``index`` (the default, the next index, is not synchronised).

    >>> from tachimeter.testing import collector_for_tests
    >>> with collector_for_tests() as collector:
    ...     with Mission(MissionTracker(collector), "openai", "gpt-4o") as m:
    ...         m.tool("search", duration_ms=120, success=True)
    ...     m.record().status
    <MissionStatus.COMPLETED: 'completed'>
    """

    __slots__ = (
        "_next_step",
        "_plan",
        "_session_id",
        "_started",
        "_tags",
        "_token",
        "_tracker",
        "_user_id",
        "backend",
        "id",
        "model",
    )

    def __init__(
        self,
        tracker: MissionTracker,
        backend: str,
        model: str,
        tags: Iterable[str] = (),
        *,
        mission_id: str | uuid.UUID | None = None,
        session_id: str | None = None,
        user_id: str | None = None,
        plan: bool = False,
    ) -> None:
        self._tracker = tracker
        self.id = str(uuid7()) if mission_id is None else str(mission_id)
        self.backend = backend
        self.model = model
        self._tags = tuple(tags)
        self._session_id = session_id
        self._user_id = user_id
        self._plan = plan
        self._next_step = 0
        self._started = False
        self._token: contextvars.Token[Mission | None] | None = None

    @property
    def tracker(self) -> MissionTracker:
        """The tracker recording this mission."""
        return self._tracker

    def _refused(self, exc: TachimeterError) -> None:
        if self._tracker.strict:
            raise exc
        self._tracker.note_rejected(exc)

    # -- the block ----------------------------------------------------------------------------

    def __enter__(self) -> Mission:
        tracker = self._tracker
        try:
            tracker.start_mission(
                self.id,
                self.backend,
                self.model,
                self._tags,
                session_id=self._session_id,
                user_id=self._user_id,
            )
            self._started = True
            if self._plan:
                tracker.plan(self.id)
            else:
                tracker.mission_started(self.id)
        except TachimeterError as exc:
            self._refused(exc)
        self._token = _current.set(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        token, self._token = self._token, None
        if token is not None:
            # Exited in another context than it was entered in: nothing there to restore.
            with contextlib.suppress(ValueError):
                _current.reset(token)
        self._end(exc)

    async def __aenter__(self) -> Mission:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def _end(self, exc: BaseException | None) -> None:
        if not self._started:  # refused at the start (a duplicate id): not ours to end
            return
        tracker = self._tracker
        try:
            if exc is None:
                status = tracker.status(self.id)
                if status is None or status.is_terminal:
                    return
                if status is _S.PAUSED:
                    tracker.resume(self.id)
                    status = tracker.status(self.id)
                if status is _S.CREATED or status is _S.PLANNING:
                    # The block finished its work: whatever phase it last declared, it ran.
                    tracker.mission_started(self.id)
                tracker.mission_completed(self.id)
            elif _is_cancellation(exc):
                if tracker.is_active(self.id):
                    tracker.mission_cancelled(self.id, reason=type(exc).__name__)
            elif tracker.is_active(self.id):
                tracker.mission_failed(
                    self.id, MissionError.from_exception(exc, step_index=self._next_step)
                )
        except TachimeterError as refused:
            self._refused(refused)

    # -- lifecycle ----------------------------------------------------------------------------

    def _guarded(self, call: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        """Run a tracker call; a refused one (an invalid transition, an unknown mission) is
        counted and logged once by ``_refused``, never raised into the agent's code."""
        try:
            call(*args, **kwargs)
        except TachimeterError as exc:
            self._refused(exc)

    def plan(self) -> None:
        """Enter planning (from created, or re-plan while executing)."""
        self._guarded(self._tracker.plan, self.id)

    def start(self) -> None:
        """Enter executing (after planning)."""
        self._guarded(self._tracker.mission_started, self.id)

    def pause(self) -> None:
        """Pause the mission."""
        self._guarded(self._tracker.pause, self.id)

    def resume(self) -> None:
        """Resume a paused mission."""
        self._guarded(self._tracker.resume, self.id)

    def retry(self, error: MissionError | BaseException | None = None) -> None:
        """Start a new attempt after a recoverable error (counts a retry)."""
        if isinstance(error, BaseException):
            error = MissionError.from_exception(error, step_index=self._next_step)
        self._guarded(self._tracker.retry, self.id, error)

    def complete(self) -> None:
        """Complete the mission now."""
        self._guarded(self._tracker.mission_completed, self.id)

    def fail(self, error: MissionError | BaseException | str) -> None:
        """Fail the mission now; a string is used as the error code."""
        if isinstance(error, str):
            error = MissionError(code=error, message=error, step_index=self._next_step)
        self._guarded(self._tracker.mission_failed, self.id, error)

    def cancel(self, reason: str | None = None) -> None:
        """Cancel the mission now."""
        self._guarded(self._tracker.mission_cancelled, self.id, reason)

    # -- activity -----------------------------------------------------------------------------

    def step(
        self,
        index: int | None = None,
        *,
        success: bool = True,
        name: str | None = None,
        duration_ms: float | None = None,
    ) -> int:
        """Record a finished step (``index`` defaults to the next one); returns its index."""
        if index is None:
            index = self._next_step
        if type(index) is int and index >= self._next_step:
            self._next_step = index + 1
        self._guarded(
            self._tracker.step_completed,
            self.id,
            index,
            success,
            name=name,
            duration_ms=duration_ms,
        )
        return index

    def tool(
        self,
        name: str,
        duration_ms: float,
        success: bool = True,
        *,
        error_code: str | None = None,
    ) -> None:
        """Record a tool call that took ``duration_ms`` milliseconds."""
        # Inline rather than _guarded: the hot path, measured against a 5 us budget.
        try:
            self._tracker.tool_invoked(self.id, name, duration_ms, success, error_code=error_code)
        except TachimeterError as exc:
            self._refused(exc)

    def tool_call(self, name: str) -> ToolCall:
        """A context manager (or decorator) timing one call of tool ``name`` in this mission."""
        return ToolCall(name, mission=self)

    def llm_call(
        self,
        *,
        model: str | None = None,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cache_read_tokens: int = 0,
        cache_creation_tokens: int = 0,
        reasoning_tokens: int = 0,
        cost: float | Decimal | None = None,
        provider: str | None = None,
        duration_ms: float | None = None,
    ) -> Decimal | None:
        """Record one LLM call; returns its cost in USD (None when the model is unpriced).

        Tokens follow OpenTelemetry: cache tokens are part of ``input_tokens``, reasoning
        tokens part of ``output_tokens``. ``cost`` given here wins over the price table;
        ``model`` defaults to the mission's.
        """
        try:
            return self._tracker.tokens_consumed(
                self.id,
                input_tokens,
                output_tokens,
                cost,
                model=model,
                cache_read_tokens=cache_read_tokens,
                cache_creation_tokens=cache_creation_tokens,
                reasoning_tokens=reasoning_tokens,
                provider=provider,
                duration_ms=duration_ms,
            ).total
        except TachimeterError as exc:
            self._refused(exc)
            return None

    def record(self) -> MissionAnalytics | None:
        """The mission as the tracker knows it now."""
        return self._tracker.get_mission(self.id)

    def _record_tool(self, name: str, start_ns: int, exc: BaseException | None) -> None:
        duration_ms = (_perf_ns() - start_ns) / 1e6
        try:
            if exc is None:
                self._tracker.tool_invoked(self.id, name, duration_ms, True)
            else:
                code = MissionError.from_exception(exc).code
                self._tracker.tool_invoked(self.id, name, duration_ms, False, error_code=code)
        except TachimeterError as refused:
            self._refused(refused)


class ToolCall:
    """Times a tool call and records it in the current mission (or ``mission``).

    Use it as a decorator (each call is timed; sync and async functions) or as a context
    manager (one call at a time per object: ``with tool("search"): ...``). An exception
    marks the call failed, with its classified error code, and propagates. Outside any
    mission the function just runs.

    >>> @tool("web_search")
    ... def search(q: str) -> str:
    ...     return q
    >>> search("no mission: nothing recorded")
    'no mission: nothing recorded'
    """

    __slots__ = ("_mission", "_name", "_started")

    def __init__(self, name: str, *, mission: Mission | None = None) -> None:
        if type(name) is not str or not name:
            raise TypeError(f"tool name must be a non-empty string, got {name!r}")
        self._name = name
        self._mission = mission
        self._started: list[tuple[Mission | None, int]] = []

    @property
    def name(self) -> str:
        """The tool's name (``gen_ai.tool.name``)."""
        return self._name

    def __enter__(self) -> ToolCall:
        self._started.append((self._mission or _current.get(), _perf_ns()))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._started:
            return
        current, start = self._started.pop()
        if current is not None:
            current._record_tool(self._name, start, exc)

    async def __aenter__(self) -> ToolCall:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def __call__(self, func: Callable[_P, _R]) -> Callable[_P, _R]:
        """Decorate ``func`` so that each call is timed and recorded."""
        name = self._name
        bound = self._mission
        if inspect.iscoroutinefunction(func):
            async_func = cast(Callable[_P, Awaitable[Any]], func)

            @functools.wraps(func)
            async def timed_async(*args: _P.args, **kwargs: _P.kwargs) -> Any:
                current = bound or _current.get()
                if current is None:
                    return await async_func(*args, **kwargs)
                start = _perf_ns()
                try:
                    result = await async_func(*args, **kwargs)
                except BaseException as exc:
                    current._record_tool(name, start, exc)
                    raise
                current._record_tool(name, start, None)
                return result

            return cast(Callable[_P, _R], timed_async)

        @functools.wraps(func)
        def timed(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            current = bound or _current.get()
            if current is None:
                return func(*args, **kwargs)
            start = _perf_ns()
            try:
                result = func(*args, **kwargs)
            except BaseException as exc:
                current._record_tool(name, start, exc)
                raise
            current._record_tool(name, start, None)
            return result

        return timed


@overload
def tool(func: Callable[_P, _R], /) -> Callable[_P, _R]: ...
@overload
def tool(name: str, /, *, mission: Mission | None = None) -> ToolCall: ...
@overload
def tool(*, name: str, mission: Mission | None = None) -> ToolCall: ...
def tool(
    func_or_name: Callable[_P, _R] | str | None = None,
    /,
    *,
    name: str | None = None,
    mission: Mission | None = None,
) -> Callable[_P, _R] | ToolCall:
    """Time tool calls: ``@tool``, ``@tool("name")`` or ``with tool("name"):``.

    The bare decorator names the tool after the function (``__name__``).

    >>> @tool
    ... def read_file(path: str) -> str:
    ...     return path
    >>> read_file.__name__
    'read_file'
    """
    if callable(func_or_name):
        func = func_or_name
        return ToolCall(getattr(func, "__name__", "tool"), mission=mission)(func)
    chosen = func_or_name if func_or_name is not None else name
    if chosen is None:
        raise TypeError("tool() needs a function to decorate or a tool name")
    return ToolCall(chosen, mission=mission)


_default: MissionTracker | None = None
_default_lock = threading.Lock()


def _reset_after_fork() -> None:
    # Another thread may have held the lock at fork: the child's copy would never be freed.
    global _default_lock
    _default_lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)


def default_tracker() -> MissionTracker:
    """The tracker of the global collector (made on first use, remade after ``configure``).

    It records spec 023's agent metrics in the default metrics registry.
    """
    global _default
    from tachimeter.collect.api import current_collector

    collector = current_collector()  # made as a first track() makes it: default sinks
    tracker = _default
    if tracker is not None and tracker.collector is collector:
        return tracker
    with _default_lock:
        if _default is None or _default.collector is not collector:
            from tachimeter.metrics import REGISTRY

            try:
                _default = MissionTracker(collector, registry=REGISTRY)
            except ConfigError as exc:
                # The application registered its own metric under one of spec 023's
                # names: missions are still tracked, only those metrics are not recorded.
                _log.warning("mission metrics not recorded in the default registry: %s", exc)
                _default = MissionTracker(collector)
        return _default


def mission(
    backend: str,
    model: str,
    tags: Iterable[str] = (),
    *,
    mission_id: str | uuid.UUID | None = None,
    session_id: str | None = None,
    user_id: str | None = None,
    plan: bool = False,
    tracker: MissionTracker | None = None,
) -> Mission:
    """A mission to run in a ``with`` or ``async with`` block (see :class:`Mission`).

    ``tracker`` defaults to :func:`default_tracker` (the global collector's).
    """
    return Mission(
        tracker or default_tracker(),
        backend,
        model,
        tags,
        mission_id=mission_id,
        session_id=session_id,
        user_id=user_id,
        plan=plan,
    )
