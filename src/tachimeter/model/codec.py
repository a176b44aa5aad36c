"""JSON and MessagePack encoding of events and batches, exact round trips.

Wire shape: spec 406's serde shape (snake_case enum values, ``{"custom": name}`` for a
custom type, untagged data with ``UsageEventData.extra`` and ``EventMetadata.custom``
flattened into their parent objects), plus optional fields of ours: ``data_kind``,
``user_id``, ``call``, ``page_url``, ``referrer``, ``session_assigned``.

Decoding untrusted input never raises anything but :class:`~tachimeter.errors.ValidationError`,
whose message and ``path`` name the bad field (``$.events[3].data.severity``).

Untagged data without ``data_kind`` is classified by shape: an object with exactly the
fields of a business, error or performance payload is that payload; an object with
``feature``, ``action`` (and a boolean ``success``, if present) is a usage payload whose
other keys are its ``extra``; any other object is key-value data; any other non-null
value is custom data.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
import uuid
from typing import Any, Final, TypeVar

import msgspec

from tachimeter.errors import ValidationError
from tachimeter.model.data import (
    BusinessEventData,
    CustomData,
    DataKind,
    ErrorEventData,
    EventMetadata,
    PerformanceEventData,
    UsageEventData,
    data_kind,
)
from tachimeter.model.event_types import Custom, EventCategory, EventPriority, EventType
from tachimeter.model.events import _EMPTY_METADATA, AnalyticsEvent, CallKind, EventBatch

__all__ = [
    "data_from_builtins",
    "data_to_builtins",
    "decode_batch",
    "decode_event",
    "encode_batch",
    "encode_event",
    "event_from_builtins",
    "event_to_builtins",
]

_T = TypeVar("_T")


class _WireEvent(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    event_type: EventType | Custom
    timestamp: dt.datetime
    category: EventCategory | None = None
    session_id: str | None = None
    priority: EventPriority = EventPriority.NORMAL
    data: Any = None
    data_kind: DataKind | None = None
    metadata: dict[str, Any] = {}
    user_id: str | None = None
    call: CallKind = "track"
    page_url: str | None = None
    referrer: str | None = None
    session_assigned: bool = False


class _StrictWireEvent(_WireEvent, forbid_unknown_fields=True):
    """The wire event that refuses fields it does not know (ingest: ``userid`` for
    ``user_id`` would otherwise lose the user silently)."""


WIRE_EVENT_FIELDS: Final = frozenset(_WireEvent.__struct_fields__)


class _WireBatch(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    events: list[_WireEvent]
    created_at: dt.datetime
    sequence: int


_json_encoder: Final = msgspec.json.Encoder()
_msgpack_encoder: Final = msgspec.msgpack.Encoder()
_json_event = msgspec.json.Decoder(_WireEvent)
_msgpack_event = msgspec.msgpack.Decoder(_WireEvent)
_json_strict_event = msgspec.json.Decoder(_StrictWireEvent)
_msgpack_strict_event = msgspec.msgpack.Decoder(_StrictWireEvent)
_json_batch = msgspec.json.Decoder(_WireBatch)
_msgpack_batch = msgspec.msgpack.Decoder(_WireBatch)

_USAGE_FIELDS: Final = frozenset(UsageEventData.__struct_fields__) - {"extra"}
_METADATA_FIELDS: Final = frozenset(EventMetadata.__struct_fields__) - {"custom"}
_SHAPE_CLASSES: Final[dict[DataKind, type[Any]]] = {
    "business": BusinessEventData,
    "error": ErrorEventData,
    "performance": PerformanceEventData,
}
_STRICT_SHAPES: Final[tuple[tuple[DataKind, type[Any], frozenset[str]], ...]] = tuple(
    (kind, cls, frozenset(cls.__struct_fields__)) for kind, cls in _SHAPE_CLASSES.items()
)
_REQUIRED: Final[dict[type[Any], frozenset[str]]] = {
    cls: frozenset(
        name
        for name, default in zip(
            cls.__struct_fields__,
            (msgspec.NODEFAULT,) * (len(cls.__struct_fields__) - len(cls.__struct_defaults__))
            + cls.__struct_defaults__,
            strict=True,
        )
        if default is msgspec.NODEFAULT
    )
    for _, cls, _ in _STRICT_SHAPES
}
_PATH_RE: Final = re.compile(r"- at `(\$[^`]*)`$")
_UNKNOWN_ENUM_RE: Final = re.compile(r"Invalid enum value '([^']*)' ")
_UNKNOWN_FIELD_RE: Final = re.compile(r"Object contains unknown field `([^`]*)`")


# -- data payloads ----------------------------------------------------------------------


def data_to_builtins(data: Any) -> Any:
    """The untagged wire value of an ``EventData`` (extras flattened, custom unwrapped)."""
    if data is None or type(data) is dict:
        return data
    if type(data) is CustomData:
        return data.value
    out = msgspec.to_builtins(data)
    if type(data) is UsageEventData:
        extra = out.pop("extra", None)
        if extra:
            for key, value in extra.items():
                out.setdefault(key, value)
    return out


def _convert(obj: Any, cls: type[_T], prefix: str) -> _T:
    try:
        return msgspec.convert(obj, cls)
    except msgspec.ValidationError as exc:
        raise _with_prefix(exc, prefix) from None


def _usage_from(obj: dict[str, Any], prefix: str) -> UsageEventData:
    known = {k: v for k, v in obj.items() if k in _USAGE_FIELDS}
    extra = {k: v for k, v in obj.items() if k not in _USAGE_FIELDS}
    known["extra"] = extra
    return _convert(known, UsageEventData, prefix)


def _infer_kind(obj: Any) -> DataKind:
    if obj is None:
        return "empty"
    if not isinstance(obj, dict):
        return "custom"
    keys = obj.keys()
    for kind, cls, fields in _STRICT_SHAPES:
        if keys <= fields and _REQUIRED[cls] <= keys:
            try:
                msgspec.convert(obj, cls)
            except msgspec.ValidationError:
                continue
            return kind
    if "feature" in keys and "action" in keys:
        try:
            _usage_from(obj, "$")
        except ValidationError:
            return "key_value"
        return "usage"
    return "key_value"


def data_from_builtins(obj: Any, kind: DataKind | None = None, *, path: str = "$.data") -> Any:
    """The ``EventData`` for a wire value; ``kind`` None means classify by shape."""
    if kind is None:
        kind = _infer_kind(obj)
    if kind == "empty":
        if obj is not None:
            raise ValidationError(
                f"data_kind 'empty' needs null data, got {type(obj).__name__} - at `{path}`",
                path=path,
            )
        return None
    if kind == "custom":
        return CustomData(obj)
    if not isinstance(obj, dict):
        raise ValidationError(
            f"data_kind {kind!r} needs an object, got {type(obj).__name__} - at `{path}`",
            path=path,
        )
    if kind == "key_value":
        return obj
    if kind == "usage":
        return _usage_from(obj, path)
    cls = _SHAPE_CLASSES[kind]
    unknown = obj.keys() - cls.__struct_fields__
    if unknown:
        raise ValidationError(
            f"unknown field {sorted(unknown)[0]!r} for {kind} data - at `{path}`", path=path
        )
    return _convert(obj, cls, path)


# -- events -----------------------------------------------------------------------------


def event_to_builtins(event: AnalyticsEvent) -> dict[str, Any]:
    """The wire dict of an event (only JSON types: str, int, float, bool, None, list, dict)."""
    out: dict[str, Any] = msgspec.to_builtins(event)
    data = event.data
    if data is not None:
        out["data"] = data_to_builtins(data)
        out["data_kind"] = data_kind(data)
    metadata = out.get("metadata")
    if metadata is not None:
        custom = metadata.pop("custom", None)
        if custom:
            for key, value in custom.items():
                metadata.setdefault(key, value)
    return out


def _event_from_wire(wire: _WireEvent, path: str) -> AnalyticsEvent:
    data = data_from_builtins(wire.data, wire.data_kind, path=f"{path}.data")
    md = wire.metadata
    if md:
        known = {k: v for k, v in md.items() if k in _METADATA_FIELDS}
        known["custom"] = {k: v for k, v in md.items() if k not in _METADATA_FIELDS}
        metadata = _convert(known, EventMetadata, f"{path}.metadata")
    else:
        metadata = EventMetadata()
    return assemble_event(wire, data, metadata)


def assemble_event(wire: _WireEvent, data: Any, metadata: EventMetadata) -> AnalyticsEvent:
    """The event of a decoded wire struct, given its data and metadata as built from it
    (internal: the server's whole-body decoder builds those its own way)."""
    timestamp = wire.timestamp
    if timestamp.tzinfo is None:
        timestamp = timestamp.replace(tzinfo=dt.UTC)
    elif timestamp.utcoffset():
        timestamp = timestamp.astimezone(dt.UTC)
    return AnalyticsEvent(
        id=wire.id,
        category=wire.category or wire.event_type.category(),
        event_type=wire.event_type,
        timestamp=timestamp,
        session_id=wire.session_id,
        priority=wire.priority,
        data=data,
        metadata=metadata,
        user_id=wire.user_id,
        call=wire.call,
        page_url=wire.page_url,
        referrer=wire.referrer,
        session_assigned=wire.session_assigned,
    )


def event_from_builtins(obj: Any) -> AnalyticsEvent:
    """An event from its wire dict; raises ``ValidationError`` naming the bad field."""
    try:
        wire = msgspec.convert(obj, _WireEvent)
    except msgspec.ValidationError as exc:
        raise _with_prefix(exc, "$") from None
    return _event_from_wire(wire, "$")


# The JSON of an event whose data is key-value (or absent) and whose metadata has no
# custom entries is the event's own msgspec encoding with two edits: the metadata's empty
# `custom` goes and `data_kind` is appended. That skips building the wire dict, which is
# two thirds of the cost. The edits are safe byte surgery: the metadata is the last
# object-valued field, and `,"` never occurs inside a JSON string (a quote there is `\"`).
_EMPTY_CUSTOM: Final = b',"custom":{}}'
_KEY_VALUE_KIND: Final = b',"data_kind":"key_value"}'
_CUSTOM_CUT: Final = len(_EMPTY_CUSTOM) - 1  # all but the metadata's closing brace


def _encode_json(event: AnalyticsEvent) -> bytes:
    """``encode_event(event)`` as JSON, by the fast path when the event allows it."""
    data = event.data
    kind = type(data)
    if kind is dict or data is None:
        metadata = event.metadata
        custom = metadata.custom if type(metadata) is EventMetadata else None
        if type(custom) is dict and not custom:
            try:
                raw = _json_encoder.encode(event)
            except Exception:  # let the general path raise its own error
                return _json_encoder.encode(event_to_builtins(event))
            if metadata is _EMPTY_METADATA:  # omitted (by identity) when the default
                return raw if data is None else raw[:-1] + _KEY_VALUE_KIND
            cut = raw.rfind(_EMPTY_CUSTOM)
            if cut < 0:  # pragma: no cover - the metadata always ends so
                return _json_encoder.encode(event_to_builtins(event))
            if data is None:
                return raw[:cut] + raw[cut + _CUSTOM_CUT :]
            return raw[:cut] + raw[cut + _CUSTOM_CUT : -1] + _KEY_VALUE_KIND
    return _json_encoder.encode(event_to_builtins(event))


def encode_event(event: AnalyticsEvent, *, format: str = "json") -> bytes:
    """Encode an event as JSON (default) or MessagePack (``format="msgpack"``)."""
    if format == "json":
        return _encode_json(event)
    if format != "msgpack":
        raise ValueError(f"format must be 'json' or 'msgpack', got {format!r}")
    return _msgpack_encoder.encode(event_to_builtins(event))


def decode_event(
    payload: bytes | str, *, format: str = "json", strict: bool = False
) -> AnalyticsEvent:
    """Decode one event; any problem raises ``ValidationError`` with the field path.

    ``strict`` refuses a field the wire format does not have (ingest does); otherwise it
    is skipped, as events from a newer version may carry one.
    """
    if strict:
        decoder = _decoder(format, _json_strict_event, _msgpack_strict_event)
    else:
        decoder = _decoder(format, _json_event, _msgpack_event)
    try:
        wire = decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise _with_prefix(exc, "$") from None
    except UnicodeDecodeError as exc:  # msgspec raises it for bad UTF-8 inside a string
        raise _bad_utf8(exc) from None
    return _event_from_wire(wire, "$")


def encode_batch(batch: EventBatch, *, format: str = "json") -> bytes:
    """Encode a batch as JSON or MessagePack."""
    encoder = _msgpack_encoder if format == "msgpack" else _json_encoder
    if format not in ("json", "msgpack"):
        raise ValueError(f"format must be 'json' or 'msgpack', got {format!r}")
    events: list[Any]
    if format == "json":
        events = [msgspec.Raw(_encode_json(e)) for e in batch.events]
    else:
        events = [event_to_builtins(e) for e in batch.events]
    return encoder.encode(
        {
            "id": str(batch.id),
            "events": events,
            "created_at": batch.created_at.isoformat().replace("+00:00", "Z"),
            "sequence": batch.sequence,
        }
    )


def decode_batch(payload: bytes | str, *, format: str = "json") -> EventBatch:
    """Decode a batch; any problem raises ``ValidationError`` with the field path."""
    decoder = _decoder(format, _json_batch, _msgpack_batch)
    try:
        wire = decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise _with_prefix(exc, "$") from None
    except UnicodeDecodeError as exc:
        raise _bad_utf8(exc) from None
    events = [_event_from_wire(w, f"$.events[{i}]") for i, w in enumerate(wire.events)]
    created = wire.created_at
    if created.tzinfo is None:
        created = created.replace(tzinfo=dt.UTC)
    return EventBatch(id=wire.id, events=events, created_at=created, sequence=wire.sequence)


def _decoder(format: str, json_decoder: Any, msgpack_decoder: Any) -> Any:
    if format == "json":
        return json_decoder
    if format == "msgpack":
        return msgpack_decoder
    raise ValueError(f"format must be 'json' or 'msgpack', got {format!r}")


def _bad_utf8(exc: UnicodeDecodeError) -> ValidationError:
    return ValidationError(
        f"a string is not valid UTF-8 ({exc.reason} at byte {exc.start} of the string); "
        "send UTF-8 text - at `$`",
        path="$",
    )


def _with_prefix(exc: Exception, prefix: str) -> ValidationError:
    """Re-root a msgspec error path (``$.x``) under ``prefix`` (``$.data.x``)."""
    message = str(exc)
    match = _PATH_RE.search(message)
    if match is None:  # at the root of what was decoded: an event, when a field is unknown
        text = f"{message} - at `{prefix}`"
        field = _UNKNOWN_FIELD_RE.match(message)
        if field is not None:
            close = difflib.get_close_matches(field.group(1), sorted(WIRE_EVENT_FIELDS), n=1)
            text += f"; did you mean `{close[0]}`?" if close else "; properties go in `data`"
        return ValidationError(text, path=prefix)
    path = prefix + match.group(1)[1:]
    text = f"{message[: match.start()]}- at `{path}`"
    unknown = _UNKNOWN_ENUM_RE.match(message)
    if unknown is not None and path.endswith(".event_type"):
        text += f'; a custom event type is written {{"custom": "{unknown.group(1)}"}}'
    return ValidationError(text, path=path)
