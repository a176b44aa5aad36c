"""``POST /v1/events``: batch ingest, acknowledged once committed."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated, Any

import anyio.to_thread
import msgspec
from litestar import Request, Response, post
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody, Schema
from litestar.params import HeaderParameter, Parameter

from tachimeter.errors import StoreError
from tachimeter.server.ingest import DecodedBatch, FieldError, Problem
from tachimeter.server.ingest_bodies import INLINE_BODY_BYTES
from tachimeter.server.problems import problem_spec
from tachimeter.server.state import principal_of, server_state
from tachimeter.server.writer import WriterBusy
from tachimeter.store.sqlite import EncodedBatch

__all__ = ["IngestAck", "ingest_events"]


class IngestAck(msgspec.Struct, kw_only=True):
    """The answer to an accepted batch: every accepted event is committed.

    ``duplicates`` (events already stored, skipped) is None when the batch was committed
    together with other requests and its share cannot be told apart.
    """

    batch_id: str | None
    received: int
    accepted: int
    duplicates: int | None
    rejected: int
    errors: list[FieldError]


def _event_schema() -> Schema:
    from litestar.openapi.spec.enums import OpenAPIType

    return Schema(
        type=OpenAPIType.OBJECT,
        description=(
            "An event as tachimeter.model.codec.event_to_builtins writes it (see docs/server.md)."
        ),
        required=["id", "event_type", "timestamp"],
        properties={
            "id": Schema(type=OpenAPIType.STRING, format="uuid"),  # type: ignore[arg-type]
            "event_type": Schema(
                one_of=[
                    Schema(type=OpenAPIType.STRING),
                    Schema(
                        type=OpenAPIType.OBJECT,
                        required=["custom"],
                        properties={"custom": Schema(type=OpenAPIType.STRING)},
                    ),
                ]
            ),
            "timestamp": Schema(type=OpenAPIType.STRING, format="date-time"),  # type: ignore[arg-type]
            "category": Schema(type=OpenAPIType.STRING),
            "session_id": Schema(type=[OpenAPIType.STRING, OpenAPIType.NULL]),
            "user_id": Schema(type=[OpenAPIType.STRING, OpenAPIType.NULL]),
            "priority": Schema(type=OpenAPIType.STRING),
            "data": Schema(description="The event's payload (any JSON value)."),
            "data_kind": Schema(type=OpenAPIType.STRING),
            "metadata": Schema(type=OpenAPIType.OBJECT),
            "call": Schema(type=OpenAPIType.STRING, enum=["track", "page", "identify"]),
        },
    )


def _batch_schema() -> Schema:
    from litestar.openapi.spec.enums import OpenAPIType

    events = Schema(type=OpenAPIType.ARRAY, items=_event_schema())
    return Schema(
        one_of=[
            events,
            Schema(
                type=OpenAPIType.OBJECT,
                required=["events"],
                properties={
                    "batch_id": Schema(type=OpenAPIType.STRING),
                    "sequence": Schema(type=OpenAPIType.INTEGER),
                    "events": events,
                },
            ),
        ]
    )


@dataclass
class _IngestOperation(Operation):
    """The OpenAPI operation with the body the handler reads itself (JSON or msgpack)."""

    def __post_init__(self) -> None:
        schema = _batch_schema()
        self.request_body = RequestBody(
            required=True,
            description=(
                "A batch: the HttpSink envelope or a bare array of events, JSON or "
                "MessagePack, optionally gzip (Content-Encoding)."
            ),
            content={
                "application/json": OpenAPIMediaType(schema=schema),
                "application/msgpack": OpenAPIMediaType(schema=schema),
            },
        )


@post(
    "/v1/events",
    opt={"scope": "ingest"},
    status_code=200,
    summary="Ingest a batch of events",
    description=(
        "Decodes the batch against the event model, validates and sanitizes every event "
        "and commits them in one transaction before answering: a 2xx means every accepted "
        "event is durably stored. A batch with an invalid event is refused whole (422, "
        "each bad field listed) unless `partial=true`, when the valid events are stored "
        "and the invalid listed. Events whose id is already stored are skipped, so a "
        "retried batch is stored once; a repeated `Idempotency-Key` gets the first answer."
    ),
    tags=["ingest"],
    operation_class=_IngestOperation,
    responses={
        400: problem_spec("Malformed body (not JSON/MessagePack, truncated, bad gzip)"),
        413: problem_spec("Body, inflated body or event count over the limit"),
        415: problem_spec("Content-Type or Content-Encoding not accepted"),
        422: problem_spec("Invalid events; errors name each bad field path"),
        429: problem_spec(),
        503: problem_spec(),
    },
)
async def ingest_events(
    request: Request[Any, Any, Any],
    partial: Annotated[
        bool | None,
        Parameter(
            description="Store the valid events of a batch that has invalid ones (default: "
            "the server's partial_batches setting, false)."
        ),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        HeaderParameter(
            name="Idempotency-Key",
            description="The batch id; a retry with the same key and body gets the first "
            "answer, the same key with another body 422.",
            max_length=200,
        ),
    ] = None,
) -> Response[IngestAck]:
    """Ingest a batch of events (see the description)."""
    state = server_state(request)
    principal = principal_of(request)
    body = await request.body()
    if idempotency_key:
        earlier = state.remembered(principal.name, idempotency_key, body)
        if earlier is not None:
            return Response(earlier, status_code=200)
    state.instruments.ingest_bytes.inc(len(body))
    allow_partial = state.settings.partial_batches if partial is None else partial
    headers = request.headers
    try:
        encoded: EncodedBatch | None = None
        if len(body) <= INLINE_BODY_BYTES:
            decoded = state.decoder.decode(
                body,
                headers.get("content-type"),
                headers.get("content-encoding"),
                partial=allow_partial,
            )
        else:
            decoded, encoded = await anyio.to_thread.run_sync(
                _decode,
                state,
                body,
                headers.get("content-type"),
                headers.get("content-encoding"),
                allow_partial,
            )
    except Problem as exc:
        state.instruments.events_rejected.labels(reason=str(exc.status)).inc()
        raise
    if decoded.rejected_events:
        state.instruments.events_rejected.labels(reason="422").inc(decoded.rejected_events)
    duplicates: int | None = 0
    if decoded.events:
        try:
            future = state.writer.submit(decoded.events, encoded=encoded)
        except WriterBusy as exc:
            raise Problem(
                503, "service unavailable", str(exc), headers={"Retry-After": "1"}
            ) from None
        try:
            result = await asyncio.wrap_future(future)
        except StoreError as exc:
            raise Problem(
                503,
                "service unavailable",
                f"the events could not be stored, nothing was acknowledged: {exc}",
                headers={"Retry-After": "5"},
            ) from None
        if result is None:
            duplicates = None
            state.instruments.events_ingested.inc(len(decoded.events))
        else:
            duplicates = result.duplicates
            state.instruments.events_ingested.inc(result.inserted)
            state.instruments.events_duplicate.inc(result.duplicates)
    ack = IngestAck(
        batch_id=decoded.batch_id or idempotency_key,
        received=decoded.received,
        accepted=len(decoded.events),
        duplicates=duplicates,
        rejected=decoded.rejected_events,
        errors=decoded.rejected,
    )
    if idempotency_key:
        state.remember(principal.name, idempotency_key, body, ack)
    return Response(ack, status_code=200)


def _decode(
    state: Any, body: bytes, content_type: str | None, encoding: str | None, partial: bool
) -> tuple[DecodedBatch, EncodedBatch | None]:
    """Decode a large body and encode its events as rows, off the event loop and off the
    writer thread (which then only writes)."""
    decoded: DecodedBatch = state.decoder.decode(body, content_type, encoding, partial=partial)
    encoded = state.writer.encode(decoded.events) if decoded.events else None
    return decoded, encoded
