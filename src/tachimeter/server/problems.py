"""Error answers: every 4xx and 5xx is an RFC 9457 ``application/problem+json`` body.

::

    {"type": "about:blank", "title": "invalid events", "status": 422,
     "detail": "1 of 2 events are invalid, nothing was stored: $.events[1].timestamp: ...",
     "errors": [{"path": "$.events[1].timestamp", "message": "Expected `datetime`, ..."}]}

``errors`` names each bad field by a JSON path into the request body, or ``query.<name>``
for a query parameter.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec

from tachimeter.errors import QueryError, StoreError, ValidationError
from tachimeter.server.ingest import FieldError, Problem

__all__ = ["PROBLEM_MEDIA_TYPE", "ProblemDetails", "exception_handlers", "problem_spec"]

PROBLEM_MEDIA_TYPE: Final = "application/problem+json"
_log = logging.getLogger("tachimeter.server")

_TITLES: Final = {
    400: "bad request",
    401: "unauthorized",
    403: "forbidden",
    404: "not found",
    405: "method not allowed",
    413: "payload too large",
    415: "unsupported media type",
    422: "unprocessable content",
    429: "too many requests",
    500: "internal server error",
    503: "service unavailable",
}


class ProblemDetails(msgspec.Struct, kw_only=True):
    """An RFC 9457 problem: what went wrong, and each bad field when there are some."""

    title: str
    status: int
    detail: str
    type: str = "about:blank"
    errors: list[FieldError] = msgspec.field(default_factory=list)


def problem_response(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[bytes]:
    """A problem+json response."""
    body = ProblemDetails(
        title=title or _TITLES.get(status, "error"),
        status=status,
        detail=detail,
        errors=errors or [],
    )
    return Response(
        content=msgspec.json.encode(body),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def _on_problem(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    assert isinstance(exc, Problem)
    return problem_response(
        exc.status, exc.detail, title=exc.title, errors=exc.errors, headers=exc.headers
    )


def _on_validation(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    assert isinstance(exc, ValidationException)
    errors: list[FieldError] = []
    if isinstance(exc.extra, list):
        for item in exc.extra:
            if isinstance(item, dict):
                source = item.get("source") or "query"
                where = str(getattr(source, "value", source)).lower()
                key = item.get("key") or ""
                errors.append(FieldError(f"{where}.{key}" if key else where, str(item["message"])))
    detail = "; ".join(f"{e.path}: {e.message}" for e in errors) or exc.detail
    return problem_response(400, detail, errors=errors)


def _on_http(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    assert isinstance(exc, HTTPException)
    return problem_response(exc.status_code, exc.detail, headers=exc.headers)


def _on_query(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    parameter = getattr(exc, "parameter", None)
    errors = [FieldError(f"query.{parameter}", str(exc))] if parameter else []
    return problem_response(400, str(exc), title="invalid query", errors=errors)


def _on_value(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    path = getattr(exc, "path", None)
    errors = [FieldError(path, str(exc))] if path else []
    return problem_response(422, str(exc), errors=errors)


def _on_store(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    _log.warning("store error answered with 503: %s", exc)
    return problem_response(503, str(exc), headers={"Retry-After": "5"})


def _on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    _log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(
        500, f"the server failed on this request ({type(exc).__name__}); see its log"
    )


def exception_handlers() -> dict[type[Exception] | int, Any]:
    """Litestar exception handlers mapping every error to a problem answer."""
    return {
        Problem: _on_problem,
        ValidationException: _on_validation,
        HTTPException: _on_http,
        QueryError: _on_query,
        ValidationError: _on_value,
        StoreError: _on_store,
        Exception: _on_unexpected,
    }


def problem_spec(description: str = "Additional response") -> ResponseSpec:
    """The OpenAPI response of a route's error status: a problem+json body
    (``description`` defaults to litestar's own)."""
    return ResponseSpec(
        data_container=ProblemDetails,
        media_type=PROBLEM_MEDIA_TYPE,
        description=description,
        generate_examples=False,
    )
