"""``POST /v1/metrics`` bodies: metric points checked, scrubbed and turned into
:class:`~tachimeter.model.rows.MetricPoint`\\ s, or a refusal naming every bad field.

Internal to the server. A body is ``{"points": [<point>, ...]}`` or a bare array of
points, JSON or MessagePack, optionally gzip; a point is::

    {"name": "tool_latency_seconds", "kind": "histogram", "value": 0.42,
     "timestamp": "2026-01-05T10:00:00Z", "labels": {"tool": "search"}, "unit": "seconds"}

``kind`` is one of spec 355's metric types (``MetricBuilder``): a ``counter`` point is
an increment (stored as a delta counter: increments at one microsecond add up), a
``gauge`` a reading, a ``histogram`` or ``timer`` one observation (a timer's unit is
``ms`` unless given). ``timestamp`` is ISO-8601 or Unix seconds, default the time of
arrival, never more than ``validation.clock_skew_seconds`` ahead. ``tags`` is accepted
for ``labels`` (spec 355's word). Names follow the Prometheus rule
(:mod:`tachimeter.metrics.naming`), label names too (``__`` is reserved), label values
are strings and are scrubbed of secrets (a value under a sensitive label name such as
``api_key`` is masked) before anything is stored.

The points land in the time-series store (``metric_series``/``metric_points``), where
``GET /v1/metrics/names``, ``GET /v1/metrics/query`` and the dashboard read them.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import sqlite3
import time
from collections.abc import Sequence
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta

from tachimeter.errors import StoreError
from tachimeter.metrics.naming import is_valid_label_name, is_valid_metric_name
from tachimeter.model.ids import uuid7_from_ns
from tachimeter.model.rows import MetricPoint, MetricType
from tachimeter.model.timestamps import from_ns, parse_timestamp, to_ns
from tachimeter.server.ingest import FieldError, Problem, ScrubbingDecoder
from tachimeter.server.ingest_bodies import BodyDecoder

__all__ = [
    "MAX_LABELS",
    "MAX_LABEL_VALUE_LENGTH",
    "MAX_NAME_LENGTH",
    "MetricAck",
    "MetricBatch",
    "MetricPointBody",
    "MetricPointDecoder",
    "write_points",
]

# A series is its name and labels: each distinct label set is stored and indexed for
# good. 64 labels is far more than a sensible series has (Prometheus exporters use a
# handful), and bounds what one point can cost.
MAX_LABELS: Final = 64
# Label values identify series, they are not payloads: 1 KiB holds a URL or a path.
MAX_LABEL_VALUE_LENGTH: Final = 1024
MAX_NAME_LENGTH: Final = 200
_MAX_UNIT_LENGTH: Final = 32
# Field errors listed in one answer, as for events: enough to fix a producer, bounded.
_MAX_FIELD_ERRORS: Final = 100
_KINDS: Final = {t.value: t for t in MetricType}
_FIELDS: Final = ("name", "kind", "value", "timestamp", "labels", "tags", "unit")
_UNIT: Final = re.compile(r"[A-Za-z0-9_%/.\-]+")
_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAME_RULE: Final = (
    "[a-zA-Z_:][a-zA-Z0-9_:]* (letters, digits, '_' and ':', not starting with a digit)"
)
_LABEL_RULE: Final = "[a-zA-Z_][a-zA-Z0-9_]* (letters, digits and '_', not starting with a digit)"

_Labels = Annotated[
    dict[
        Annotated[str, Meta(pattern="^[a-zA-Z_][a-zA-Z0-9_]*$")],
        Annotated[str, Meta(max_length=MAX_LABEL_VALUE_LENGTH)],
    ],
    Meta(max_length=MAX_LABELS, description="Label names and their (string) values."),
]


class MetricPointBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One posted metric point (the documented shape; see the module docstring)."""

    name: Annotated[
        str,
        Meta(
            pattern="^[a-zA-Z_:][a-zA-Z0-9_:]*$",
            max_length=MAX_NAME_LENGTH,
            description="The metric name (Prometheus rule): tool_latency_seconds.",
        ),
    ]
    kind: Annotated[
        Literal["counter", "gauge", "histogram", "timer"],
        Meta(
            description="counter: an increment (>= 0); gauge: a reading; histogram, timer: "
            "one observation (timer: >= 0, unit ms unless given)."
        ),
    ]
    value: Annotated[float, Meta(description="A finite number.")]
    timestamp: Annotated[
        str | float | None,
        Meta(description="ISO-8601 or Unix seconds; default: when the server receives it."),
    ] = None
    labels: _Labels | None = None
    tags: Annotated[_Labels | None, Meta(description="Another name for labels.")] = None
    unit: (
        Annotated[
            str,
            Meta(
                max_length=_MAX_UNIT_LENGTH,
                pattern="^[A-Za-z0-9_%/.\\-]+$",
                description="seconds, ms, bytes, ... (a timer's default: ms).",
            ),
        ]
        | None
    ) = None


class MetricBatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A batch of posted metric points."""

    points: list[MetricPointBody]


class MetricAck(msgspec.Struct, kw_only=True):
    """The answer to an accepted batch: every point is committed.

    ``series`` counts the distinct series (name and labels) the points belong to.
    """

    received: int
    accepted: int
    series: int


class _Envelope(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    points: list[Any]


_BODY: Final[BodyDecoder[_Envelope | list[Any]]] = BodyDecoder(
    _Envelope | list[Any], what="metric batch"
)


def _label_path(root: str, key: str) -> str:
    if _IDENTIFIER.fullmatch(key):
        return f"{root}.{key}"
    return f"{root}[{msgspec.json.encode(key).decode()}]"


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class MetricPointDecoder(ScrubbingDecoder):
    """Turns a ``POST /v1/metrics`` body into scrubbed :class:`MetricPoint`\\ s.

    Refuses the whole batch (:class:`~tachimeter.server.ingest.Problem`, 422) when a
    point is invalid, listing every bad field.

    >>> from tachimeter.privacy import Scrubber
    >>> decoder = MetricPointDecoder(Scrubber())
    >>> points = decoder.decode(
    ...     b'[{"name": "queue_depth", "kind": "gauge", "value": 3, "labels": {"q": "a"}}]',
    ...     "application/json", None)
    >>> points[0].name, points[0].value, points[0].tags
    ('queue_depth', 3.0, {'q': 'a'})
    >>> try:
    ...     decoder.decode(b'[{"name": "9x", "kind": "gauge", "value": "NaN"}]', None, None)
    ... except Problem as exc:
    ...     print([e.path for e in exc.errors])
    ['$[0].name', '$[0].value']
    """

    __slots__ = ()

    def decode(
        self,
        body: bytes,
        content_type: str | None,
        content_encoding: str | None,
        *,
        now: dt.datetime | None = None,
    ) -> list[MetricPoint]:
        """The body's points, checked and scrubbed; :class:`Problem` to refuse it."""
        parsed = _BODY.decode(body, content_type, content_encoding, self._max_body)
        if isinstance(parsed, _Envelope):
            items, root = parsed.points, "$.points"
        else:
            items, root = parsed, "$"
        limit = self._limits.max_batch_events
        if len(items) > limit:
            raise Problem(
                413,
                "payload too large",
                f"the batch has {len(items)} points, more than {limit} "
                "(validation.max_batch_events); send smaller batches",
            )
        now_ns = time.time_ns() if now is None else to_ns(now)
        horizon_ns = now_ns + int(self._limits.clock_skew_seconds * 1e9)
        points: list[MetricPoint] = []
        errors: list[FieldError] = []
        rejected = 0
        for index, item in enumerate(items):
            found: list[FieldError] = []
            point = self._point(item, f"{root}[{index}]", now_ns, horizon_ns, found)
            if point is None:
                rejected += 1
                errors.extend(found[: max(0, _MAX_FIELD_ERRORS - len(errors))])
            else:
                points.append(point)
        if rejected:
            shown = "" if len(errors) <= 3 else f" (and {len(errors) - 3} more, listed in errors)"
            first = "; ".join(f"{e.path}: {e.message}" for e in errors[:3])
            raise Problem(
                422,
                "invalid metric points",
                f"{rejected} of {len(items)} points are invalid, nothing was stored: "
                f"{first}{shown}",
                errors,
            )
        return points

    def _point(
        self,
        item: Any,
        path: str,
        now_ns: int,
        horizon_ns: int,
        errors: list[FieldError],
    ) -> MetricPoint | None:
        if type(item) is not dict:
            errors.append(FieldError(path, f"a point must be an object, got {_show(item)}"))
            return None
        for key in item:
            if key not in _FIELDS:
                errors.append(
                    FieldError(
                        _label_path(path, str(key)),
                        "unknown field; a point has name, kind, value, timestamp, labels "
                        "(or tags) and unit",
                    )
                )
        name = _name(item, path, errors)
        kind = _kind(item, path, errors)
        value = _value(item, path, kind, errors)
        ns = _timestamp(item.get("timestamp"), f"{path}.timestamp", now_ns, horizon_ns, errors)
        labels = self._labels(item, path, errors)
        unit = _unit(item.get("unit"), f"{path}.unit", errors)
        if errors or name is None or kind is None or value is None or labels is None:
            return None
        if unit is None and kind is MetricType.TIMER:
            unit = "ms"  # MetricBuilder.timer's unit
        return MetricPoint(
            id=uuid7_from_ns(ns),
            name=name,
            metric_type=kind,
            value=value,
            timestamp=from_ns(ns),
            tags=labels,
            unit=unit,
        )

    def _labels(
        self, item: dict[str, Any], path: str, errors: list[FieldError]
    ) -> dict[str, str] | None:
        labels = item.get("labels")
        key = "labels"
        if "tags" in item:
            if "labels" in item:
                errors.append(FieldError(f"{path}.tags", "give labels or tags, not both"))
                return None
            labels, key = item["tags"], "tags"
        where = f"{path}.{key}"
        if labels is None:
            return {}
        if type(labels) is not dict:
            errors.append(
                FieldError(
                    where, f"must be an object of label names to strings, got {_show(labels)}"
                )
            )
            return None
        if len(labels) > MAX_LABELS:
            errors.append(
                FieldError(
                    where,
                    f"{len(labels)} labels, more than {MAX_LABELS}: each label set is a series",
                )
            )
            return None
        ok = True
        for name, value in labels.items():
            at = _label_path(where, str(name))
            if type(name) is not str or not is_valid_label_name(name):
                errors.append(
                    FieldError(
                        at,
                        f"label name {_show(name)} is invalid: label names must match "
                        f"{_LABEL_RULE}",
                    )
                )
                ok = False
            elif name.startswith("__"):
                errors.append(
                    FieldError(
                        at,
                        f"label name {name!r} is reserved: names starting with '__' are "
                        "for internal use",
                    )
                )
                ok = False
            if type(value) is not str:
                errors.append(FieldError(at, f"label values must be strings, got {_show(value)}"))
                ok = False
            elif len(value) > MAX_LABEL_VALUE_LENGTH:
                errors.append(
                    FieldError(
                        at,
                        f"the value has {len(value)} characters, more than "
                        f"{MAX_LABEL_VALUE_LENGTH}",
                    )
                )
                ok = False
        if not ok:
            return None
        scrubbed: dict[str, str] = self._scrubber.scrub_value(labels)
        return scrubbed


def _name(item: dict[str, Any], path: str, errors: list[FieldError]) -> str | None:
    name = item.get("name")
    where = f"{path}.name"
    if name is None:
        errors.append(FieldError(where, "required: the metric name"))
    elif type(name) is not str:
        errors.append(FieldError(where, f"must be a string, got {_show(name)}"))
    elif len(name) > MAX_NAME_LENGTH:
        errors.append(FieldError(where, f"{len(name)} characters, more than {MAX_NAME_LENGTH}"))
    elif not is_valid_metric_name(name):
        errors.append(
            FieldError(where, f"metric name {name!r} is invalid: names must match {_NAME_RULE}")
        )
    else:
        return name
    return None


def _kind(item: dict[str, Any], path: str, errors: list[FieldError]) -> MetricType | None:
    kind = item.get("kind")
    found = _KINDS.get(kind) if type(kind) is str else None
    if found is None:
        errors.append(
            FieldError(
                f"{path}.kind",
                f"must be one of counter, gauge, histogram, timer, got {_show(kind)}",
            )
        )
    return found


def _value(
    item: dict[str, Any], path: str, kind: MetricType | None, errors: list[FieldError]
) -> float | None:
    where = f"{path}.value"
    if "value" not in item:
        errors.append(FieldError(where, "required: a finite number"))
        return None
    raw = item["value"]
    value: float | None = None
    if type(raw) is int or type(raw) is float:
        try:
            value = float(raw)
        except OverflowError:
            value = None
    if value is None or not math.isfinite(value):
        errors.append(FieldError(where, f"must be a finite number, got {_show(raw)}"))
        return None
    if value < 0 and kind is MetricType.COUNTER:
        errors.append(
            FieldError(where, f"a counter point is an increment and must be >= 0, got {raw!r}")
        )
        return None
    if value < 0 and kind is MetricType.TIMER:
        errors.append(
            FieldError(where, f"a timer point is a duration and must be >= 0, got {raw!r}")
        )
        return None
    return value


def _timestamp(raw: Any, where: str, now_ns: int, horizon_ns: int, errors: list[FieldError]) -> int:
    if raw is None:
        return now_ns
    ns: int | None = None
    if type(raw) is str:
        try:
            ns = to_ns(parse_timestamp(raw))
        except (ValueError, OverflowError):
            errors.append(
                FieldError(
                    where,
                    f"must be ISO-8601 (2026-01-05T10:00:00Z) or Unix seconds, got {_show(raw)}",
                )
            )
            return now_ns
    elif type(raw) is int or type(raw) is float:
        try:
            seconds = float(raw)
        except OverflowError:
            seconds = math.inf
        if not math.isfinite(seconds) or not 0 <= seconds < 1e11:
            errors.append(
                FieldError(
                    where, f"Unix seconds must be a finite number from 0 to 1e11, got {_show(raw)}"
                )
            )
            return now_ns
        ns = round(seconds * 1e6) * 1000
    else:
        errors.append(
            FieldError(where, f"must be an ISO-8601 string or Unix seconds, got {_show(raw)}")
        )
        return now_ns
    if ns < 0:
        errors.append(FieldError(where, f"{_show(raw)} is before 1970"))
    elif ns > horizon_ns:
        errors.append(
            FieldError(
                where,
                f"{_show(raw)} is {(ns - now_ns) / 1e9:.1f} s in the future, more than the "
                "allowed clock skew (validation.clock_skew_seconds); check the sender's clock",
            )
        )
    return ns


def _unit(raw: Any, where: str, errors: list[FieldError]) -> str | None:
    if raw is None:
        return None
    if type(raw) is not str or not raw or len(raw) > _MAX_UNIT_LENGTH or not _UNIT.fullmatch(raw):
        errors.append(
            FieldError(
                where,
                "must be a short unit such as 'seconds', 'ms' or 'bytes' (letters, digits "
                f"and _ % / . -, at most {_MAX_UNIT_LENGTH}), got {_show(raw)}",
            )
        )
        return None
    return raw


def write_points(conn: sqlite3.Connection, points: Sequence[MetricPoint]) -> int:
    """Store points through ``conn`` (the writer thread's connection) in one transaction;
    :class:`~tachimeter.errors.StoreError` when SQLite refuses (nothing is stored)."""
    from tachimeter.store.timeseries import TimeSeriesStore

    try:
        return TimeSeriesStore(conn).write(points)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot write {len(points)} metric points: {exc}") from exc
