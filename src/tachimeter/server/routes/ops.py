"""Operations: ``/healthz``, ``/readyz``, ``/metrics``, ``/openapi.json``, ``/v1/stream``."""

from __future__ import annotations

import functools
import gzip
import os
from typing import Annotated, Any, Final

import msgspec
from litestar import Request, Response, get
from litestar.params import HeaderParameter, Parameter
from litestar.response import Stream

from tachimeter.metrics.exposition import choose_encoder, gzip_accepted
from tachimeter.server.problems import ProblemDetails, problem_response
from tachimeter.server.state import server_state
from tachimeter.server.stream import StreamFilter

__all__ = ["healthz", "metrics", "openapi_json", "readyz", "stream_events"]


class Health(msgspec.Struct, kw_only=True):
    """``/healthz``: the process answers."""

    status: str


class Readiness(msgspec.Struct, kw_only=True):
    """``/readyz``: whether the store takes writes, and why not."""

    status: str
    store: str
    schema_version: int | None
    pending_events: int
    problems: list[str]


@get("/healthz", summary="Liveness: the process answers", tags=["operations"], sync_to_thread=False)
def healthz() -> Health:
    """Always 200 while the process serves requests."""
    return Health(status="ok")


@get(
    "/readyz",
    summary="Readiness: the store is writable",
    description=(
        "200 when the writer thread runs, its last write succeeded, the database file and "
        "its directory are writable and a reader sees the schema; 503 otherwise, listing "
        "the problems."
    ),
    tags=["operations"],
    sync_to_thread=True,
)
def readyz(request: Request[Any, Any, Any]) -> Response[Readiness]:
    """Whether the store takes writes now."""
    state = server_state(request)
    problems: list[str] = []
    path = state.store.path
    if not state.writer.alive:
        problems.append("the writer thread is not running (the server is shutting down)")
    if state.writer.last_error:
        problems.append(f"the last write failed: {state.writer.last_error}")
    if not os.access(path, os.W_OK):
        problems.append(f"{path} is not writable")
    if not os.access(path.parent, os.W_OK):
        problems.append(f"{path.parent} is not writable (WAL files are created there)")
    version: int | None = None
    try:
        rows = state.store.execute("SELECT max(version) FROM schema_migrations")
        version = int(rows[0][0]) if rows and rows[0][0] is not None else None
    except Exception as exc:  # any failure to read is a readiness problem, not a crash
        problems.append(f"the store cannot be read: {exc}")
    body = Readiness(
        status="ok" if not problems else "unavailable",
        store=str(path),
        schema_version=version,
        pending_events=state.writer.pending_events,
        problems=problems,
    )
    return Response(body, status_code=200 if not problems else 503)


@get(
    "/metrics",
    summary="Prometheus metrics (text 0.0.4 or OpenMetrics by Accept)",
    description=(
        "The server's tachimeter_server_* metrics and the process collector's "
        "tachimeter_collector_* counters. `Accept: application/openmetrics-text` selects "
        "OpenMetrics 1.0; anything else gets the text format 0.0.4."
    ),
    tags=["operations"],
    opt={"scope": "read"},
    sync_to_thread=False,
    media_type="text/plain",
)
def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The exposition, negotiated by ``Accept`` (gzip when accepted)."""
    state = server_state(request)
    state.instruments.stream_subscribers.set(state.hub.subscribers)
    state.instruments.writer_pending.set(state.writer.pending_events)
    encoder, content_type = choose_encoder(request.headers.get("accept"))
    body = encoder(state.instruments.registry)
    # Given whole as a header: Litestar would append its own "; charset=utf-8" to a text/
    # media type that already names its charset (a duplicate parameter, which Go's
    # mime.ParseMediaType, and so a Prometheus 3 scrape, refuses).
    headers = {"Vary": "Accept, Accept-Encoding", "Content-Type": content_type}
    if gzip_accepted(request.headers.get("accept-encoding")) and len(body) > 1024:
        body = gzip.compress(body, compresslevel=6, mtime=0)
        headers["Content-Encoding"] = "gzip"
    return Response(body, media_type=content_type, headers=headers)


# Every error answer is a problem+json body (problems.py), whatever the operation.
_ERROR_STATUSES: Final = {
    "400": "Malformed request or invalid parameter",
    "401": "Missing or unknown API key",
    "403": "The key lacks the scope the operation needs",
    "404": "Not found",
    "405": "Method not allowed",
    "413": "Payload too large",
    "415": "Unsupported media type",
    "422": "Invalid content",
    "429": "Rate limit reached (see Retry-After)",
    "500": "Unexpected server error",
    "503": "The store cannot take the request now (see Retry-After)",
}


@functools.cache
def _problem_components() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        [ProblemDetails], ref_template="#/components/schemas/{name}"
    )
    return components


def document_problems(schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document with every operation's errors as problem+json answers."""
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(_problem_components())
    problem = {
        "application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}
    }
    for item in schema.get("paths", {}).values():
        for method, operation in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            responses = operation.setdefault("responses", {})
            for status, description in _ERROR_STATUSES.items():
                responses[status] = {"description": description, "content": problem}
    return schema


@get("/openapi.json", include_in_schema=False, sync_to_thread=False)
def openapi_json(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The OpenAPI 3.1 document of this server."""
    schema = document_problems(request.app.openapi_schema.to_schema())
    return Response(msgspec.json.encode(schema), media_type="application/json")


def _names(value: str | None) -> frozenset[str]:
    return frozenset(v.strip() for v in (value or "").split(",") if v.strip())


@get(
    "/v1/stream",
    summary="Live stream of ingested events (server-sent events)",
    description=(
        "Each committed event as `event: event` with its stream id, JSON data shaped as "
        "the events search returns them. A comment heartbeat every `heartbeat` seconds. "
        "Reconnect with `Last-Event-ID` to get what was missed (the last "
        "stream_replay_events events are kept); `event: reset` says events were missed "
        "and the client should reload."
    ),
    tags=["stream"],
    opt={"scope": "read"},
    media_type="text/event-stream",
    sync_to_thread=False,
    responses={},
)
def stream_events(
    request: Request[Any, Any, Any],
    event: Annotated[
        str | None,
        Parameter(description="Comma-separated event names to keep (default: all)."),
    ] = None,
    category: Annotated[
        str | None,
        Parameter(description="Comma-separated categories to keep (usage, error, ...)."),
    ] = None,
    heartbeat: Annotated[
        float | None,
        Parameter(description="Seconds between heartbeats, 0.5 to 60 (default 15).", ge=0.5, le=60),
    ] = None,
    last_event_id: Annotated[
        str | None,
        HeaderParameter(
            name="Last-Event-ID", description="Resume after this stream id.", max_length=64
        ),
    ] = None,
) -> Response[Any]:
    """Server-sent events of ingested events."""
    state = server_state(request)
    if state.hub.closing:
        return problem_response(503, "the server is shutting down", headers={"Retry-After": "2"})
    frames = state.hub.frames(
        StreamFilter(_names(event), _names(category)),
        last_event_id=last_event_id or request.query_params.get("last_event_id"),
        heartbeat=heartbeat or state.settings.stream_heartbeat_seconds,
    )
    return Stream(
        frames,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
