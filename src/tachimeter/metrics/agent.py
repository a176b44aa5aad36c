"""Spec 023's agent-loop metrics, with Prometheus names, and ``classify_error``.

=====================================  =========  ===========================
exposed name                           type       labels
=====================================  =========  ===========================
``loop_execution_duration_seconds``    histogram  ``loop_type``, ``status``
``llm_tokens_used_total``              counter    ``loop_type``, ``token_type``
``tool_invocations_total``             counter    ``tool``, ``loop_type``
``loop_errors_total``                  counter    ``loop_type``, ``error_type``
``active_loops``                       gauge      (none)
=====================================  =========  ===========================

``token_type`` is ``input``, ``output``, ``cache_read``, ``cache_creation`` or
``reasoning``: the :class:`~tachimeter.model.tokens.TokenUsage` fields, with its
semantics (cache tokens are part of ``input``, reasoning tokens part of ``output``), so
the total is ``input + output``. ``error_type`` is one of :data:`ERROR_TYPES`, from
:func:`classify_error`.

>>> from tachimeter.metrics import Registry, generate_latest
>>> agent = AgentMetrics(Registry())
>>> agent.record_loop("planner", 2.5, tokens={"input": 1200, "output": 300},
...                   tool_invocations={"search": 2}, error=TimeoutError("slow"))
>>> agent.loop_errors.labels("planner", "timeout").value
1.0
>>> with agent.track_loop("coder"):
...     agent.active_loops.labels().value
1.0
"""

from __future__ import annotations

import errno
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Final, Literal, TypeAlias

from tachimeter.metrics.primitives import Counter, Gauge, Histogram
from tachimeter.metrics.registry import REGISTRY, Registry
from tachimeter.model.tokens import TokenUsage

__all__ = [
    "ERROR_TYPES",
    "LOOP_DURATION_BUCKETS",
    "TOKEN_TYPES",
    "AgentMetrics",
    "ErrorType",
    "classify_error",
]

ErrorType: TypeAlias = Literal[
    "timeout",
    "rate_limit",
    "auth",
    "validation",
    "tool_error",
    "model_error",
    "network",
    "other",
]
ERROR_TYPES: Final[tuple[ErrorType, ...]] = (
    "timeout",
    "rate_limit",
    "auth",
    "validation",
    "tool_error",
    "model_error",
    "network",
    "other",
)
TOKEN_TYPES: Final = ("input", "output", "cache_read", "cache_creation", "reasoning")
# Agent loops run from a fraction of a second (a cached tool call) to tens of minutes (a
# long coding task): 100 ms to 30 min, about 2.5x apart.
LOOP_DURATION_BUCKETS: Final = (
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    float("inf"),
)

_TOKEN_FIELDS: Final = (
    ("input", "input_tokens"),
    ("output", "output_tokens"),
    ("cache_read", "cache_read_tokens"),
    ("cache_creation", "cache_creation_tokens"),
    ("reasoning", "reasoning_tokens"),
)

# HTTP statuses as LLM and tool APIs use them (Anthropic's 529 is "overloaded").
_STATUS: Final[dict[int, ErrorType]] = {
    400: "validation",
    401: "auth",
    403: "auth",
    404: "model_error",
    407: "auth",
    408: "timeout",
    409: "validation",
    413: "validation",
    422: "validation",
    429: "rate_limit",
    504: "timeout",
    524: "timeout",
}
# Class names of provider SDK exceptions (openai, anthropic, httpx, requests, langchain...),
# matched without importing them; the first matching pattern wins, so timeouts come
# before connection errors (openai's APITimeoutError subclasses APIConnectionError).
_NAME_PATTERNS: Final[tuple[tuple[str, ErrorType], ...]] = (
    (r"timeout|timedout|deadline", "timeout"),
    (r"ratelimit|toomanyrequests|throttl|quota", "rate_limit"),
    (r"auth|permissiondenied|forbidden|unauthori[sz]ed|credential|apikey", "auth"),
    (r"tool", "tool_error"),
    (r"validation|schema|parse|decode|badrequest|unprocessable|invalid", "validation"),
    (r"connect|network|dns|socket|proxy|ssl|remoteprotocol|unreachable", "network"),
    (
        r"overload|internalserver|serviceunavailable|model|contentfilter|context(length|window)"
        r"|apistatus|apierror|server",
        "model_error",
    ),
)
_NAME_RULES: Final = tuple((re.compile(p, re.IGNORECASE), k) for p, k in _NAME_PATTERNS)
# The same ideas in error codes and messages (words, snake_case or kebab-case).
_TEXT_PATTERNS: Final[tuple[tuple[str, ErrorType], ...]] = (
    (r"time[ds]?[ _-]?out|deadline", "timeout"),
    (r"rate[ _-]?limit|too[ _-]many[ _-]requests|throttl|quota|\b429\b", "rate_limit"),
    (r"auth|unauthori[sz]ed|forbidden|permission|api[ _-]?key|credential|\b40[13]\b", "auth"),
    (r"tool", "tool_error"),
    (r"valid|schema|pars(e|ing)|malformed|bad[ _-]request|\b4(00|22)\b", "validation"),
    (r"connect|network|dns|unreachable|reset by peer|econn|socket|\bssl\b", "network"),
    (
        r"overload|model|context[ _-](length|window)|content[ _-]filter|server[ _-]error"
        r"|\b5\d\d\b",
        "model_error",
    ),
)
_TEXT_RULES: Final = tuple((re.compile(p, re.IGNORECASE), k) for p, k in _TEXT_PATTERNS)
_NETWORK_ERRNOS: Final = frozenset(
    getattr(errno, name)
    for name in (
        "ECONNREFUSED",
        "ECONNRESET",
        "ECONNABORTED",
        "ENETUNREACH",
        "ENETDOWN",
        "EHOSTUNREACH",
        "EHOSTDOWN",
        "EPIPE",
        "ENOTCONN",
    )
    if hasattr(errno, name)
)


def classify_error(error: BaseException | str | int | None) -> ErrorType:
    """Map an exception, an HTTP status or an error code/message to one of
    :data:`ERROR_TYPES`.

    Exceptions are classified by type (``TimeoutError``, ``ConnectionError``,
    ``ValueError``...), then by an HTTP status they carry (``status_code``, ``status``:
    429 is ``rate_limit``, 401/403 ``auth``, 5xx ``model_error``...), then by class name
    (provider SDKs: ``RateLimitError``, ``AuthenticationError``, ``APITimeoutError``...),
    then by their cause (``raise ... from``); anything else is ``other``.

    >>> classify_error(TimeoutError()), classify_error(429), classify_error("rate_limited")
    ('timeout', 'rate_limit', 'rate_limit')
    >>> class RateLimitError(Exception): ...
    >>> classify_error(RateLimitError("slow down")), classify_error(KeyError("x"))
    ('rate_limit', 'other')
    """
    if error is None:
        return "other"
    if isinstance(error, bool):
        return "other"
    if isinstance(error, int):
        return _classify_status(error) or "other"
    if isinstance(error, str):
        return _classify_text(error) or "other"
    return _classify_exception(error, depth=0)


def _classify_status(status: int) -> ErrorType | None:
    found = _STATUS.get(status)
    if found is not None:
        return found
    if 500 <= status <= 599:
        return "model_error"
    return None


def _classify_text(text: str) -> ErrorType | None:
    text = text.strip()
    if text.isdigit():
        return _classify_status(int(text))
    for pattern, kind in _TEXT_RULES:
        if pattern.search(text):
            return kind
    return None


def _classify_exception(error: BaseException, depth: int) -> ErrorType:
    if isinstance(error, TimeoutError):
        return "timeout"
    if isinstance(error, ConnectionError):
        return "network"
    if isinstance(error, OSError) and error.errno in _NETWORK_ERRNOS:
        return "network"
    for attribute in ("status_code", "status", "http_status"):
        value = getattr(error, attribute, None)
        if isinstance(value, int) and not isinstance(value, bool):
            found = _classify_status(value)
            if found is not None:
                return found
    for cls in type(error).__mro__:
        if cls in (BaseException, Exception, object):
            break
        for pattern, kind in _NAME_RULES:
            if pattern.search(cls.__name__):
                return kind
    if isinstance(error, ValueError | UnicodeError):
        return "validation"
    code = getattr(error, "code", None)
    if isinstance(code, str):
        found = _classify_text(code)
        if found is not None:
            return found
    cause = error.__cause__ or error.__context__
    if cause is not None and depth < 5:
        return _classify_exception(cause, depth + 1)
    return "other"


class AgentMetrics:
    """Spec 023's loop metrics, defined on a registry (the default one unless given).

    ``with_model=True`` adds a ``model`` label to ``llm_tokens_used_total``, which lets
    :func:`tachimeter.analyze.metrics.token_usage_report` price tokens per model.
    """

    __slots__ = (
        "active_loops",
        "loop_duration",
        "loop_errors",
        "tokens",
        "tool_invocations",
        "with_model",
    )

    def __init__(
        self,
        registry: Registry | None = None,
        *,
        buckets: tuple[float, ...] = LOOP_DURATION_BUCKETS,
        with_model: bool = False,
    ) -> None:
        target = REGISTRY if registry is None else registry
        self.with_model = with_model
        self.loop_duration: Histogram = target.histogram(
            "loop_execution_duration_seconds",
            "Duration of agent loop executions",
            ["loop_type", "status"],
            buckets=buckets,
        )
        self.tokens: Counter = target.counter(
            "llm_tokens_used",
            "LLM tokens used by agent loops (cache tokens are part of input)",
            ["loop_type", "token_type", "model"] if with_model else ["loop_type", "token_type"],
        )
        self.tool_invocations: Counter = target.counter(
            "tool_invocations", "Tool invocations by agent loops", ["tool", "loop_type"]
        )
        self.loop_errors: Counter = target.counter(
            "loop_errors", "Agent loop errors by classified type", ["loop_type", "error_type"]
        )
        self.active_loops: Gauge = target.gauge("active_loops", "Agent loops running now")

    def record_loop(
        self,
        loop_type: str,
        duration_seconds: float,
        *,
        status: str | None = None,
        tokens: TokenUsage | Mapping[str, int] | None = None,
        tool_invocations: Mapping[str, int] | None = None,
        error: BaseException | str | int | None = None,
        model: str = "",
    ) -> None:
        """Record one finished loop (spec 023's ``collect_loop_metrics``).

        ``status`` defaults to ``error`` when ``error`` is given, else ``success``;
        ``tokens`` is a ``TokenUsage`` or a mapping of token type to count.
        """
        chosen = status if status is not None else ("error" if error is not None else "success")
        self.loop_duration.labels(loop_type, chosen).observe(duration_seconds)
        if tokens is not None:
            self.record_tokens(loop_type, tokens, model=model)
        for tool, count in (tool_invocations or {}).items():
            if count:
                self.tool_invocations.labels(tool, loop_type).inc(count)
        if error is not None:
            self.loop_errors.labels(loop_type, classify_error(error)).inc()

    def record_tokens(
        self, loop_type: str, tokens: TokenUsage | Mapping[str, int], *, model: str = ""
    ) -> None:
        """Add token counts of one loop or call."""
        if isinstance(tokens, TokenUsage):
            counts = {kind: getattr(tokens, field) for kind, field in _TOKEN_FIELDS}
        else:
            counts = dict(tokens)
        for token_type, count in counts.items():
            if not count:
                continue
            if self.with_model:
                self.tokens.labels(loop_type, token_type, model).inc(count)
            else:
                self.tokens.labels(loop_type, token_type).inc(count)

    @contextmanager
    def track_loop(self, loop_type: str) -> Iterator[None]:
        """Time a loop: ``active_loops`` while it runs, then its duration with status
        ``success``, ``cancelled`` or ``error`` (the exception classified and re-raised)."""
        self.active_loops.inc()
        start = time.perf_counter()
        status = "success"
        error: BaseException | None = None
        try:
            yield
        except (KeyboardInterrupt, GeneratorExit) as exc:
            status = "cancelled"
            error = exc
            raise
        except BaseException as exc:
            status = "cancelled" if type(exc).__name__ == "CancelledError" else "error"
            error = exc
            raise
        finally:
            self.active_loops.dec()
            self.record_loop(
                loop_type,
                time.perf_counter() - start,
                status=status,
                error=error if status == "error" else None,
            )
