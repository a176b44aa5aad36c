"""Row writers: CSV, JSON lines and Parquet, each written chunk by chunk as rows arrive.

* **CSV** (RFC 4180, UTF-8): a header, then one line per row; NULL is an empty field,
  booleans ``true``/``false``, JSON columns as their JSON text. ``tachimeter ingest``
  reads a CSV of events back to the same rows (``tachimeter.cli.ingest``'s mapping).
* **JSON lines**: one object per line. Events are written in the wire shape of
  ``tachimeter.model.codec`` (what ``JsonlFileSink`` writes), so an export can be
  ingested again; other rows as ``{column: value}`` with JSON columns decoded.
* **Parquet**: one row group per chunk (``pyarrow``, imported on first use), typed
  columns: timestamps as ``timestamp[us, UTC]``, metric labels as ``map<string, string>``,
  JSON columns as their text.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO, Final, Protocol

import msgspec

from tachimeter.export.tables import ColumnKind, Row
from tachimeter.model.codec import event_to_builtins
from tachimeter.model.rows import row_to_event

__all__ = [
    "CsvWriter",
    "JsonlWriter",
    "ParquetWriter",
    "RowWriter",
    "event_record",
]

Columns = Sequence[tuple[str, ColumnKind]]

_json_decode: Final = msgspec.json.Decoder().decode
# What decoding a hand-written event row can raise (as tachimeter.store.backend skips).
_DECODE_ERRORS: Final = (ValueError, TypeError, KeyError, msgspec.MsgspecError)


class RowWriter(Protocol):
    """Writes chunks of rows to a binary stream; ``skipped`` counts rows left out."""

    skipped: int

    def write(self, rows: list[Row]) -> int:
        """Write a chunk; returns how many rows were written."""
        ...

    def close(self) -> None:
        """Finish the output (a Parquet footer); the stream itself stays open."""
        ...


class CsvWriter:
    """CSV with a header line.

    >>> out = io.BytesIO()
    >>> w = CsvWriter(out, [("name", "text"), ("ok", "boolean"), ("n", "real")])
    >>> w.write([("a,b", 1, 2.5), (None, None, None)])
    2
    >>> w.close()
    >>> out.getvalue().decode().splitlines()
    ['name,ok,n', '"a,b",true,2.5', ',,']
    """

    __slots__ = ("_booleans", "_text", "_writer", "skipped")

    def __init__(self, out: BinaryIO, columns: Columns) -> None:
        # newline="": the csv module writes its own \r\n line ends.
        self._text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
        self._writer = csv.writer(self._text)
        self._booleans = [i for i, (_, kind) in enumerate(columns) if kind == "boolean"]
        self._writer.writerow([name for name, _ in columns])
        self.skipped = 0

    def write(self, rows: list[Row]) -> int:
        """Write a chunk of rows."""
        if self._booleans:
            rows = [self._with_booleans(r) for r in rows]
        self._writer.writerows(rows)
        return len(rows)

    def _with_booleans(self, row: Row) -> Row:
        cells = list(row)
        for i in self._booleans:
            if cells[i] is not None:
                cells[i] = "true" if cells[i] else "false"
        return tuple(cells)

    def close(self) -> None:
        """Flush, and let go of the stream without closing it."""
        self._text.flush()
        self._text.detach()


def event_record(row: Row) -> Any:
    """The wire dict of a stored event row (its first ten columns)."""
    return event_to_builtins(row_to_event(tuple(row[:10])))


def _plain_record(columns: Columns) -> Callable[[Row], Any]:
    names = [name for name, _ in columns]
    decoded = [i for i, (_, kind) in enumerate(columns) if kind in ("json", "labels")]
    booleans = [i for i, (_, kind) in enumerate(columns) if kind == "boolean"]

    def record(row: Row) -> dict[str, Any]:
        values = list(row)
        for i in decoded:
            if values[i] is not None:
                values[i] = _json_decode(values[i])
        for i in booleans:
            if values[i] is not None:
                values[i] = bool(values[i])
        return dict(zip(names, values, strict=True))

    return record


class JsonlWriter:
    """One JSON object per line: ``record(row)``, or the row as ``{column: value}``.

    A row whose record cannot be built (an event row another tool wrote badly) is
    skipped and counted.

    >>> out = io.BytesIO()
    >>> w = JsonlWriter(out, [("tags", "json"), ("n", "integer")])
    >>> w.write([('["a"]', 3)])
    1
    >>> out.getvalue()
    b'{"tags":["a"],"n":3}\\n'
    """

    __slots__ = ("_encode", "_out", "_record", "skipped")

    def __init__(
        self, out: BinaryIO, columns: Columns, record: Callable[[Row], Any] | None = None
    ) -> None:
        self._out = out
        self._record = record if record is not None else _plain_record(columns)
        self._encode = msgspec.json.Encoder().encode
        self.skipped = 0

    def write(self, rows: list[Row]) -> int:
        """Write a chunk of rows."""
        lines: list[bytes] = []
        for row in rows:
            try:
                record = self._record(row)
            except _DECODE_ERRORS:
                self.skipped += 1
                continue
            lines.append(self._encode(record))
        if lines:
            self._out.write(b"\n".join(lines) + b"\n")
        return len(lines)

    def close(self) -> None:
        """Nothing to finish: every line is complete."""


class ParquetWriter:
    """Parquet, one row group per chunk (``pyarrow.parquet.ParquetWriter``)."""

    __slots__ = ("_columns", "_pa", "_schema", "_writer", "skipped")

    def __init__(self, out: BinaryIO, columns: Columns) -> None:
        try:
            import pyarrow as pa  # type: ignore[import-untyped]  # no stubs, no py.typed
            import pyarrow.parquet as pq  # type: ignore[import-untyped]
        except ImportError as exc:  # pragma: no cover - a dependency; a broken install
            raise RuntimeError(f"Parquet export needs pyarrow: {exc}") from exc
        self._pa = pa
        self._columns = list(columns)
        types = {
            "text": pa.string(),
            "json": pa.string(),
            "timestamp": pa.timestamp("us", tz="UTC"),
            "integer": pa.int64(),
            "real": pa.float64(),
            "boolean": pa.bool_(),
            "labels": pa.map_(pa.string(), pa.string()),
        }
        self._schema = pa.schema([(name, types[kind]) for name, kind in self._columns])
        self._writer = pq.ParquetWriter(out, self._schema, compression="zstd")
        self.skipped = 0

    def _special(self, kind: ColumnKind, values: list[Any]) -> Any:
        """Arrays of the kinds that need converting: timestamps, booleans, labels."""
        pa = self._pa
        if kind == "timestamp":
            # Fixed-width ISO text: Arrow parses it exactly, to the microsecond.
            return pa.array(values, pa.string()).cast(pa.timestamp("us", tz="UTC"))
        if kind == "boolean":
            return pa.array([None if v is None else bool(v) for v in values], pa.bool_())
        if kind == "labels":
            cache: dict[str, list[tuple[str, str]]] = {}
            pairs = [
                None if v is None else cache.setdefault(v, list(_json_decode(v).items()))
                for v in values
            ]
            return pa.array(pairs, pa.map_(pa.string(), pa.string()))
        raise ValueError(f"no conversion for column kind {kind!r}")

    def write(self, rows: list[Row]) -> int:
        """Write a chunk of rows as one row group."""
        pa = self._pa
        arrays = []
        for i, (_, kind) in enumerate(self._columns):
            values = [row[i] for row in rows]
            if kind in ("timestamp", "boolean", "labels"):
                arrays.append(self._special(kind, values))
            else:
                arrays.append(pa.array(values, self._schema.field(i).type))
        self._writer.write_table(pa.Table.from_arrays(arrays, schema=self._schema))
        return len(rows)

    def close(self) -> None:
        """Write the footer."""
        self._writer.close()
