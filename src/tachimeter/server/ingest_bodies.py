"""Request bodies of the ingest routes beyond ``/v1/events``: decoding and OpenAPI schemas.

Internal to the server. ``POST /v1/metrics`` and the mission calls accept what
``POST /v1/events`` accepts: JSON (the default) or MessagePack, optionally gzip, at most
``max_body_bytes`` before and after inflating; the same answers for the same faults
(400 malformed, 413 too large, 415 another media type or encoding, 422 a body of the
wrong shape, naming the field path).

Their request-body schemas are written once, as msgspec types, and turned into the
OpenAPI document's schemas here (:func:`body_operation`), so the document describes
exactly the types the bodies are decoded with.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

import msgspec
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIType

from tachimeter.config.settings import AnalyticsConfig
from tachimeter.privacy import Scrubber
from tachimeter.server.ingest import (
    Problem,
    check_utf8,
    field_error,
    inflate,
    syntax_problem,
    wire_format,
)

__all__ = [
    "INLINE_BODY_BYTES",
    "BodyDecoder",
    "app_singleton",
    "body_operation",
    "field_error",
    "openapi_schema",
    "server_scrubber",
]

_T = TypeVar("_T")

# Ingest bodies up to this size are decoded on the event loop; larger ones on a worker
# thread, so a 10 MB batch never stalls the stream and health checks (and so decoding
# overlaps with SQLite writing, which releases the GIL).
INLINE_BODY_BYTES: Final = 64 * 1024


class BodyDecoder(Generic[_T]):
    """Decodes one kind of request body (JSON or MessagePack, gzip) into ``type`` (a
    msgspec-decodable type: a Struct, or a union such as ``Envelope | list[Any]``).

    ``empty`` is what an empty body stands for (None: an empty body is refused).

    >>> class Body(msgspec.Struct):
    ...     name: str
    >>> BodyDecoder(Body).decode(b'{"name": "x"}', "application/json", None, 1024)
    Body(name='x')
    >>> try:
    ...     BodyDecoder(Body).decode(b'{"name": 1}', None, None, 1024)
    ... except Problem as exc:
    ...     print(exc.status, exc.errors[0].path)
    422 $.name
    """

    __slots__ = ("_empty", "_json", "_msgpack", "_what")

    def __init__(self, type: Any, *, what: str = "body", empty: _T | None = None) -> None:
        self._json = msgspec.json.Decoder(type)
        self._msgpack = msgspec.msgpack.Decoder(type)
        self._what = what
        self._empty = empty

    def decode(
        self,
        body: bytes,
        content_type: str | None,
        content_encoding: str | None,
        max_bytes: int,
    ) -> _T:
        """The decoded body, or :class:`Problem` (400, 413, 415 or 422)."""
        if not body and self._empty is not None:
            return self._empty
        fmt = wire_format(content_type)
        raw = inflate(body, content_encoding, max_bytes)
        if not raw and self._empty is not None:
            return self._empty
        if fmt == "json":
            check_utf8(raw)
        try:
            if fmt == "json":
                decoded: _T = self._json.decode(raw)
            else:
                decoded = self._msgpack.decode(raw)
        except msgspec.ValidationError as exc:
            error = field_error(str(exc))
            raise Problem(
                422,
                f"invalid {self._what}",
                f"{error.path}: {error.message}",
                [error],
            ) from None
        except (msgspec.DecodeError, RecursionError) as exc:
            raise syntax_problem(fmt, exc) from None
        except UnicodeDecodeError as exc:  # a MessagePack str that is not UTF-8
            raise Problem(
                400, "malformed body", f"a string of the body is not valid UTF-8: {exc.reason}"
            ) from None
        return decoded


# JSON Schema keywords msgspec writes, by the name of Litestar's Schema field.
_KEYWORDS: Final = {
    "anyOf": "any_of",
    "oneOf": "one_of",
    "allOf": "all_of",
    "additionalProperties": "additional_properties",
    "minLength": "min_length",
    "maxLength": "max_length",
    "minItems": "min_items",
    "maxItems": "max_items",
    "minProperties": "min_properties",
    "maxProperties": "max_properties",
    "exclusiveMinimum": "exclusive_minimum",
    "exclusiveMaximum": "exclusive_maximum",
    "multipleOf": "multiple_of",
    "uniqueItems": "unique_items",
    "prefixItems": "prefix_items",
}
_PLAIN: Final = frozenset(
    {
        "type",
        "enum",
        "const",
        "minimum",
        "maximum",
        "pattern",
        "format",
        "title",
        "description",
        "default",
        "examples",
        "required",
        "properties",
        "items",
    }
)


def openapi_schema(type: Any) -> Schema:
    """The OpenAPI schema of a msgspec-decodable type (references resolved inline)."""
    document = msgspec.json.schema(type)
    defs: dict[str, Any] = document.pop("$defs", {})
    return _convert(document, defs, 0)


def _convert(node: Any, defs: dict[str, Any], depth: int) -> Schema:
    if depth > 20:  # the body types are not recursive; this guards against a mistake
        raise ValueError("openapi_schema: the type is nested too deeply (recursive?)")
    ref = node.get("$ref")
    if ref is not None:
        return _convert(defs[ref.rsplit("/", 1)[1]], defs, depth + 1)
    fields: dict[str, Any] = {}
    for key, value in node.items():
        name = _KEYWORDS.get(key, key if key in _PLAIN else None)
        if name is None:
            continue
        if key == "type":
            value = (
                [OpenAPIType(v) for v in value] if isinstance(value, list) else OpenAPIType(value)
            )
        elif key == "properties":
            value = {k: _convert(v, defs, depth + 1) for k, v in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            value = _convert(value, defs, depth + 1)
        elif key in ("anyOf", "oneOf", "allOf", "prefixItems"):
            value = [_convert(v, defs, depth + 1) for v in value]
        elif key == "description":  # docstrings: one paragraph, no reST literals
            value = " ".join(value.split()).replace("``", "`")
        fields[name] = value
    return Schema(**fields)


def body_operation(type: Any, description: str, *, required: bool = True) -> type[Operation]:
    """An OpenAPI ``Operation`` class documenting a request body of ``type`` (JSON or
    MessagePack), for a handler that reads its body itself (``operation_class=``)."""
    schema = openapi_schema(type)
    body = RequestBody(
        required=required,
        description=description,
        content={
            "application/json": OpenAPIMediaType(schema=schema),
            "application/msgpack": OpenAPIMediaType(schema=schema),
        },
    )

    @dataclass
    class _BodyOperation(Operation):
        def __post_init__(self) -> None:
            self.request_body = body

    return _BodyOperation


def server_scrubber(config: AnalyticsConfig) -> Scrubber:
    """The scrubber the server applies to what it ingests (``create_app``'s settings:
    user ids are not hashed, a collector hashed them by its own settings)."""
    privacy = config.privacy
    return Scrubber(
        extra_patterns=privacy.extra_patterns,
        drop_keys=privacy.drop_keys,
        sensitive_key_action=privacy.sensitive_key_action,
    )


def app_singleton(app_state: Any, key: str, build: Callable[[], _T]) -> _T:
    """``app_state[key]``, built by ``build`` on first use (per app: its settings).

    Two first requests at once may both build it; one of the two is kept, and either
    serves the same.
    """
    found = app_state.get(key)
    if found is None:
        found = build()
        app_state[key] = found
    return found  # type: ignore[no-any-return]
