"""``POST /v1/metrics``: metric points, acknowledged once committed."""

from __future__ import annotations

import asyncio
import functools
from typing import Annotated, Any, Final

import anyio.to_thread
from litestar import Request, Response, post
from litestar.params import HeaderParameter

from tachimeter.errors import StoreError
from tachimeter.model.rows import MetricPoint
from tachimeter.server.ingest import Problem
from tachimeter.server.ingest_bodies import (
    INLINE_BODY_BYTES,
    app_singleton,
    body_operation,
    server_scrubber,
)
from tachimeter.server.ingest_metrics import (
    MetricAck,
    MetricBatch,
    MetricPointBody,
    MetricPointDecoder,
    write_points,
)
from tachimeter.server.problems import problem_spec
from tachimeter.server.state import principal_of, server_state
from tachimeter.server.writer import DEFAULT_PENDING_EVENTS

__all__ = ["ingest_metrics"]

_DECODER_KEY: Final = "tachimeter.metric_decoder"


@post(
    "/v1/metrics",
    opt={"scope": "ingest"},
    status_code=200,
    summary="Ingest a batch of metric points",
    description=(
        "Metric points (spec 355's counter, gauge, histogram and timer points: name, kind, "
        "value, optional timestamp, labels, unit), JSON or MessagePack, optionally gzip. "
        "Every point is checked (Prometheus naming, finite values, string label values) and "
        "its label values scrubbed of secrets; a batch with an invalid point is refused "
        "whole (422, each bad field listed). The points are committed to the time-series "
        "store before the answer, and read back by `GET /v1/metrics/query`. A repeated "
        "`Idempotency-Key` gets the first answer (counter points are increments: retry "
        "with the key)."
    ),
    tags=["ingest", "metrics"],
    operation_class=body_operation(
        MetricBatch | list[MetricPointBody],
        '`{"points": [...]}` or a bare array of points.',
    ),
    responses={
        400: problem_spec("Malformed body (not JSON/MessagePack, truncated, bad gzip)"),
        413: problem_spec("Body, inflated body or point count over the limit"),
        415: problem_spec("Content-Type or Content-Encoding not accepted"),
        422: problem_spec("Invalid points; errors name each bad field path"),
        429: problem_spec("Rate limit reached (Retry-After)"),
        503: problem_spec("The writer is saturated or the store cannot write (Retry-After)"),
    },
)
async def ingest_metrics(
    request: Request[Any, Any, Any],
    idempotency_key: Annotated[
        str | None,
        HeaderParameter(
            name="Idempotency-Key",
            description="A retry with the same key gets the first answer, stored once.",
            max_length=200,
        ),
    ] = None,
) -> Response[MetricAck]:
    """Ingest metric points (see the description)."""
    state = server_state(request)
    remembered_as = f"metrics:{idempotency_key}" if idempotency_key else None
    principal = principal_of(request).name
    body = await request.body()
    if remembered_as:
        earlier = state.remembered(principal, remembered_as, body)
        if earlier is not None:
            return Response(earlier, status_code=200)
    state.instruments.ingest_bytes.inc(len(body))
    decoder = app_singleton(
        request.app.state,
        _DECODER_KEY,
        lambda: MetricPointDecoder(
            server_scrubber(state.config),
            state.config.validation,
            max_body_bytes=state.settings.max_body_bytes,
        ),
    )
    content_type = request.headers.get("content-type")
    encoding = request.headers.get("content-encoding")
    if len(body) <= INLINE_BODY_BYTES:
        points = decoder.decode(body, content_type, encoding)
    else:
        points = await anyio.to_thread.run_sync(
            functools.partial(decoder.decode, body, content_type, encoding)
        )
    if points:
        await _commit(state, points)
    ack = MetricAck(
        received=len(points),
        accepted=len(points),
        series=len({(p.name, tuple(sorted(p.tags.items()))) for p in points}),
    )
    if remembered_as:
        state.remember(principal, remembered_as, body, ack)
    return Response(ack, status_code=200)


async def _commit(state: Any, points: list[MetricPoint]) -> None:
    # Points are written by calls on the writer thread, outside its event accounting:
    # refuse them while the events it holds are already at its bound.
    if state.writer.pending_events + len(points) > DEFAULT_PENDING_EVENTS:
        raise Problem(
            503,
            "service unavailable",
            f"{state.writer.pending_events} events are waiting to be written; retry shortly",
            headers={"Retry-After": "1"},
        )
    try:
        future = state.writer.call(functools.partial(write_points, points=points))
        await asyncio.wrap_future(future)
    except StoreError as exc:
        raise Problem(
            503,
            "service unavailable",
            f"the points could not be stored, nothing was acknowledged: {exc}",
            headers={"Retry-After": "5"},
        ) from None
