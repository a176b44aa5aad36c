"""Turning an ingest request body into validated, sanitized events, or a precise refusal.

Accepted bodies (``POST /v1/events``), JSON (``Content-Type: application/json``, the
default) or MessagePack (``application/msgpack``, also ``application/x-msgpack`` and
``application/vnd.msgpack``), optionally ``Content-Encoding: gzip``:

* the ``HttpSink`` envelope ``{"batch_id": "...", "sequence": 3, "events": [...]}``,
  also the ``encode_batch`` shape (``id``, ``created_at``, ``sequence``, ``events``);
* a bare array of events.

Each event is the wire dict of :func:`tachimeter.model.codec.event_to_builtins`. The
steps, each with its own answer:

1. size: a body (or its inflated gzip) over the limit, or more events than
   ``validation.max_batch_events``: 413;
2. syntax: not JSON / MessagePack, truncated, invalid UTF-8, nested beyond the decoder's
   depth: 400;
3. shape and values: each event decoded against the model, then checked by
   :func:`tachimeter.model.validation.validate_event` (clock skew, depth, sizes, reserved
   keys): 422 listing *every* bad field as ``{"path": "$.events[3].timestamp",
   "message": "..."}``, unless partial batches are allowed, when the valid events are
   stored and the bad ones listed;
4. sanitizing: secrets are scrubbed (:meth:`tachimeter.privacy.Scrubber.sanitize_event`)
   before anything is stored or streamed.

A valid body takes a fast path: one msgspec call decodes it against the event model,
equal metadata becomes one object, and each event is validated and scrubbed in one pass
(:meth:`tachimeter.privacy.Scrubber.prepare_events`). Any error sends it down the
per-event path above, which names every bad field.

The server never assigns a session id: events without one are stored without one (the
session projection derives sessions from a 30-minute inactivity split).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from typing import Any, Final, Literal

import msgspec

from tachimeter.errors import TachimeterError, ValidationError
from tachimeter.model.codec import (
    _StrictWireEvent,
    _WireEvent,
    assemble_event,
    data_from_builtins,
    decode_event,
)
from tachimeter.model.data import EventMetadata
from tachimeter.model.events import AnalyticsEvent
from tachimeter.model.validation import ValidationLimits, validate_event
from tachimeter.privacy import Scrubber

__all__ = [
    "DecodedBatch",
    "FieldError",
    "IngestDecoder",
    "Problem",
    "ScrubbingDecoder",
    "check_utf8",
    "field_error",
    "syntax_problem",
]

WireFormat = Literal["json", "msgpack"]

_MSGPACK_TYPES: Final = frozenset(
    {"application/msgpack", "application/x-msgpack", "application/vnd.msgpack"}
)
_JSON_TYPES: Final = frozenset({"application/json", "text/json", ""})
# Field errors listed in one answer: enough to fix a producer, bounded for a body of a
# million bad events.
_MAX_FIELD_ERRORS: Final = 100
_FORMAT_NAMES: Final[dict[str, str]] = {"json": "JSON", "msgpack": "MessagePack"}
_AT_PATH: Final = re.compile(r"\s*-\s*at `(\$[^`]*)`\s*$")


class FieldError(msgspec.Struct, frozen=True):
    """One bad field: where (a JSON path into the request body) and why."""

    path: str
    message: str


class Problem(TachimeterError):
    """A request that cannot be served as sent; becomes an RFC 9457 problem answer.

    >>> Problem(413, "payload too large", "the body is over 10485760 bytes").status
    413
    """

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        errors: Sequence[FieldError] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = list(errors)
        self.headers = headers or {}


class DecodedBatch(msgspec.Struct, frozen=True, kw_only=True):
    """The sanitized events of a request, the rejected ones' errors, and its batch id."""

    events: list[AnalyticsEvent]
    rejected: list[FieldError]
    rejected_events: int
    batch_id: str | None
    received: int


class _Envelope(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    events: list[msgspec.Raw]
    batch_id: str | None = None
    id: str | None = None
    sequence: int | None = None
    created_at: str | None = None


_Body = _Envelope | list[msgspec.Raw]
_DECODERS: Final[dict[str, Any]] = {
    "json": msgspec.json.Decoder(_Body),
    "msgpack": msgspec.msgpack.Decoder(_Body),
}


class _WireEnvelope(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    events: list[_StrictWireEvent]
    batch_id: str | None = None
    id: str | None = None
    sequence: int | None = None
    created_at: str | None = None


# The fast path: the whole body decoded against the event model by one call (C code).
# The codec's wire struct is reused so both paths accept exactly the same events; any
# error sends the body down the per-event path, which says which event and field is bad.
_WireBody = _WireEnvelope | list[_StrictWireEvent]
_WIRE_DECODERS: Final[dict[str, Any]] = {
    "json": msgspec.json.Decoder(_WireBody),
    "msgpack": msgspec.msgpack.Decoder(_WireBody),
}
_METADATA_FIELDS: Final = frozenset(EventMetadata.__struct_fields__) - {"custom"}
_encode_key: Final = msgspec.msgpack.Encoder().encode
# Distinct metadata objects kept per body: a producer stamps one on all its events.
_METADATA_PER_BODY: Final = 64


def wire_format(content_type: str | None) -> WireFormat:
    """The body format named by a ``Content-Type`` header; 415 for anything else."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media in _JSON_TYPES:
        return "json"
    if media in _MSGPACK_TYPES:
        return "msgpack"
    raise Problem(
        415,
        "unsupported media type",
        f"Content-Type {media!r} is not accepted; send application/json or application/msgpack",
    )


def inflate(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """The body without its ``Content-Encoding`` (gzip or identity), at most ``limit`` bytes."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("identity", ""):
        return body
    if encoding not in ("gzip", "x-gzip"):
        raise Problem(
            415,
            "unsupported content encoding",
            f"Content-Encoding {encoding!r} is not accepted; send gzip or no encoding",
        )
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise Problem(400, "malformed body", f"the gzip body does not inflate: {exc}") from None
    if len(out) > limit:
        raise Problem(
            413,
            "payload too large",
            f"the gzip body inflates past {limit} bytes; send smaller batches",
        )
    if not inflater.eof:
        raise Problem(400, "malformed body", "the gzip body is truncated")
    return out


def field_error(message: str, root: str = "$") -> FieldError:
    """A FieldError from a msgspec or codec message ``"... - at `$.x`"``, its path under
    ``root``.

    >>> field_error("Expected `int`, got `str` - at `$.seq`", "$.points[2]")
    FieldError(path='$.points[2].seq', message='Expected `int`, got `str`')
    """
    match = _AT_PATH.search(message)
    if match is None:
        return FieldError(root, message)
    return FieldError(root + match.group(1)[1:], message[: match.start()])


def syntax_problem(fmt: WireFormat, exc: msgspec.DecodeError | RecursionError) -> Problem:
    """The 400 answer to a body that does not parse as ``fmt``."""
    if isinstance(exc, RecursionError):
        return Problem(
            400, "malformed body", f"the body's {_FORMAT_NAMES[fmt]} is nested too deeply"
        )
    return Problem(400, "malformed body", f"the body is not valid {_FORMAT_NAMES[fmt]}: {exc}")


def check_utf8(raw: bytes) -> None:
    """Refuse (400) a JSON body that is not UTF-8.

    msgspec's ``Raw`` skips string contents unchecked, so a decode that stops at ``Raw``
    would let invalid UTF-8 through, or fail later with a bare ``UnicodeDecodeError``.
    """
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Problem(
            400,
            "malformed body",
            f"the body is not valid UTF-8 (byte {exc.start}: {exc.reason}); JSON must be UTF-8",
        ) from None


def _validation_errors(problems: Sequence[str], prefix: str) -> list[FieldError]:
    out: list[FieldError] = []
    for problem in problems:
        path, sep, message = problem.partition(": ")
        if sep and path.startswith("$"):
            out.append(FieldError(prefix + path[1:], message))
        else:
            out.append(FieldError(prefix, problem))
    return out


class ScrubbingDecoder:
    """What the server's body decoders share: the scrubber applied to what they accept,
    the validation limits and the body size limit (internal to the server)."""

    __slots__ = ("_limits", "_max_body", "_scrubber")

    def __init__(
        self,
        scrubber: Scrubber,
        limits: ValidationLimits | None = None,
        *,
        max_body_bytes: int = 10 * 1024 * 1024,
    ) -> None:
        self._scrubber = scrubber
        self._limits = limits or ValidationLimits()
        self._max_body = max_body_bytes

    @property
    def max_body_bytes(self) -> int:
        """The largest body, before or after inflating, that is read."""
        return self._max_body


class IngestDecoder(ScrubbingDecoder):
    """Decodes, validates and sanitizes ingest bodies; raises :class:`Problem` to refuse.

    >>> decoder = IngestDecoder(Scrubber())
    >>> decoder.decode(b"[]", "application/json", None).received
    0
    >>> try:
    ...     decoder.decode(b"[{", "application/json", None)
    ... except Problem as exc:
    ...     print(exc.status, exc.detail)
    400 the body is not valid JSON: Input data was truncated
    """

    __slots__ = ()

    def decode(
        self,
        body: bytes,
        content_type: str | None,
        content_encoding: str | None,
        *,
        partial: bool = False,
    ) -> DecodedBatch:
        """The request's events; :class:`Problem` when it must be refused as a whole."""
        fmt = wire_format(content_type)
        raw = inflate(body, content_encoding, self._max_body)
        if fmt == "json":
            check_utf8(raw)
        fast = self._decode_whole(raw, fmt)
        if fast is not None:
            return fast
        try:
            parsed = _DECODERS[fmt].decode(raw)
        except msgspec.ValidationError as exc:
            error = field_error(str(exc))
            raise Problem(
                422,
                "invalid batch",
                f"the body is not a batch: {error.message}; send an array of events or "
                '{"events": [...]}',
                [error],
            ) from None
        except (msgspec.DecodeError, RecursionError) as exc:
            raise syntax_problem(fmt, exc) from None
        if isinstance(parsed, _Envelope):
            items, root, batch_id = parsed.events, "$.events", parsed.batch_id or parsed.id
        else:
            items, root, batch_id = parsed, "$", None
        if len(items) > self._limits.max_batch_events:
            raise Problem(
                413,
                "payload too large",
                f"the batch has {len(items)} events, more than {self._limits.max_batch_events} "
                "(validation.max_batch_events); send smaller batches",
            )
        events: list[AnalyticsEvent] = []
        errors: list[FieldError] = []
        rejected = 0
        limits = self._limits
        sanitize = self._scrubber.sanitize_event
        for index, item in enumerate(items):
            prefix = f"{root}[{index}]"
            try:
                event = decode_event(item, format=fmt, strict=True)
            except ValidationError as exc:
                rejected += 1
                if len(errors) < _MAX_FIELD_ERRORS:
                    errors.append(field_error(str(exc), prefix))
                continue
            except RecursionError:
                rejected += 1
                if len(errors) < _MAX_FIELD_ERRORS:
                    errors.append(FieldError(prefix, "nested too deeply"))
                continue
            except UnicodeDecodeError as exc:  # a MessagePack str that is not UTF-8
                rejected += 1
                if len(errors) < _MAX_FIELD_ERRORS:
                    errors.append(FieldError(prefix, f"a string is not valid UTF-8: {exc.reason}"))
                continue
            result = validate_event(event, limits=limits)
            if not result.valid:
                rejected += 1
                if len(errors) < _MAX_FIELD_ERRORS:
                    errors.extend(_validation_errors(result.errors, prefix))
                continue
            events.append(sanitize(event))
        if rejected and not partial:
            shown = "" if len(errors) <= 3 else f" (and {len(errors) - 3} more, listed in errors)"
            first = "; ".join(f"{e.path}: {e.message}" for e in errors[:3])
            raise Problem(
                422,
                "invalid events",
                f"{rejected} of {len(items)} events are invalid, nothing was stored: "
                f"{first}{shown}",
                errors,
            )
        return DecodedBatch(
            events=events,
            rejected=errors,
            rejected_events=rejected,
            batch_id=batch_id,
            received=len(items),
        )

    def _decode_whole(self, raw: bytes, fmt: WireFormat) -> DecodedBatch | None:
        """The batch when the body and every event in it are valid, else None (the
        per-event path then finds and names what is wrong)."""
        try:
            parsed = _WIRE_DECODERS[fmt].decode(raw)
        except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError):
            return None
        if isinstance(parsed, _WireEnvelope):
            items, batch_id = parsed.events, parsed.batch_id or parsed.id
        else:
            items, batch_id = parsed, None
        limits = self._limits
        if len(items) > limits.max_batch_events:
            return None
        metadatas: dict[bytes, EventMetadata] = {}
        try:
            events = [_event_of(wire, metadatas) for wire in items]
        except (ValidationError, msgspec.MsgspecError, RecursionError, ValueError, TypeError):
            return None
        prepared = self._scrubber.prepare_events(events, limits=limits)
        for _, result in prepared:
            if result is not None and not result.valid:
                return None
        return DecodedBatch(
            events=[event for event, _ in prepared],
            rejected=[],
            rejected_events=0,
            batch_id=batch_id,
            received=len(items),
        )


def _event_of(wire: _WireEvent, metadatas: dict[bytes, EventMetadata]) -> AnalyticsEvent:
    """``codec.decode_event``'s event of a decoded wire struct; equal metadata in one body
    becomes one object (the store builds a row context once per metadata object)."""
    data = data_from_builtins(wire.data, wire.data_kind)
    md = wire.metadata
    if md:
        key = _encode_key(md)
        metadata = metadatas.get(key)
        if metadata is None:
            known = {k: v for k, v in md.items() if k in _METADATA_FIELDS}
            known["custom"] = {k: v for k, v in md.items() if k not in _METADATA_FIELDS}
            metadata = msgspec.convert(known, EventMetadata)
            if len(metadatas) < _METADATA_PER_BODY:
                metadatas[key] = metadata
    else:
        metadata = _NO_METADATA
    return assemble_event(wire, data, metadata)


_NO_METADATA: Final = EventMetadata()
