"""One export: a table of the store, a time range and filters, to one format, streamed."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Sequence
from typing import BinaryIO, Final, Literal, TypeAlias, get_args

import msgspec

from tachimeter.analyze.connection import ReadSource, read_connection
from tachimeter.errors import QueryError
from tachimeter.export.openmetrics import OpenMetricsWriter, check_families, family_of
from tachimeter.export.tables import (
    ExportTable,
    events_table,
    metric_range,
    metrics_table,
    missions_table,
    select_series,
    series_blocks,
)
from tachimeter.export.writers import (
    CsvWriter,
    JsonlWriter,
    ParquetWriter,
    RowWriter,
    event_record,
)
from tachimeter.store.timeseries import canonical_labels

__all__ = ["ExportFormat", "ExportResult", "ExportWhat", "export"]

ExportWhat: TypeAlias = Literal["events", "metrics", "missions"]
ExportFormat: TypeAlias = Literal["csv", "jsonl", "parquet", "openmetrics"]

# 5 000 rows per chunk: a few MB of Python rows at most (events with large properties
# included), and Parquet row groups large enough to compress well.
DEFAULT_CHUNK_ROWS: Final = 5000
_TABLES: Final = {"events": "analytics_events", "metrics": "metric_series", "missions": "missions"}


class ExportResult(msgspec.Struct, frozen=True, kw_only=True):
    """What an export wrote: ``rows`` (samples for metrics), and ``skipped`` rows that
    could not be written in the format (an event row another tool wrote badly; a
    non-finite counter sample in OpenMetrics)."""

    what: str
    format: str
    rows: int
    skipped: int = 0


def _check(
    what: str,
    format: str,
    since: dt.datetime | None,
    until: dt.datetime | None,
    events: Sequence[str],
    metrics: Sequence[str],
    chunk_rows: int,
) -> None:
    if what not in get_args(ExportWhat):
        raise QueryError(f"cannot export {what!r}: choose events, metrics or missions")
    if format not in get_args(ExportFormat):
        raise QueryError(
            f"unknown export format {format!r}: choose csv, jsonl, parquet or openmetrics"
        )
    if format == "openmetrics" and what != "metrics":
        raise QueryError(
            f"OpenMetrics holds metric samples, not {what}: use --what metrics, or "
            "--format csv, jsonl or parquet"
        )
    if events and what != "events":
        raise QueryError(f"--event filters events; it does not apply to {what}")
    if metrics and what != "metrics":
        raise QueryError(f"--metric filters metrics; it does not apply to {what}")
    for value in (since, until):
        if value is not None and value.tzinfo is None:
            raise QueryError("export times must be timezone-aware (UTC); got a naive datetime")
    if since is not None and until is not None and until < since:
        raise QueryError(
            f"the export range ends ({until.isoformat()}) before it starts "
            f"({since.isoformat()}); swap --since and --until"
        )
    if not isinstance(chunk_rows, int) or isinstance(chunk_rows, bool) or chunk_rows < 1:
        raise QueryError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type IN ('table', 'view') AND name = ?", (name,)
    ).fetchone()
    return row is not None


def _writer(format: str, out: BinaryIO, table: ExportTable) -> RowWriter:
    if format == "csv":
        return CsvWriter(out, table.columns)
    if format == "jsonl":
        return JsonlWriter(
            out, table.columns, record=event_record if table.what == "events" else None
        )
    return ParquetWriter(out, table.columns)


def export(
    source: ReadSource,
    out: BinaryIO,
    *,
    what: ExportWhat,
    format: ExportFormat,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    events: Sequence[str] = (),
    metrics: Sequence[str] = (),
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> ExportResult:
    """Write ``what`` with ``since <= t < until`` to the binary stream ``out`` as
    ``format``, ``chunk_rows`` rows at a time (memory does not grow with the range).

    ``events`` keeps only events of those names, ``metrics`` only metrics of those names.
    Times: events by ``timestamp``, missions by ``created_at``, metrics by sample time.
    Everything is checked before the first byte is written.

    >>> import io, sqlite3
    >>> from tachimeter.store.migrations import all_migrations
    >>> conn = sqlite3.connect(":memory:")
    >>> for migration in all_migrations():
    ...     _ = conn.executescript(migration.up)
    >>> out = io.BytesIO()
    >>> export(conn, out, what="metrics", format="openmetrics").rows, out.getvalue()
    (0, b'# EOF\\n')
    """
    _check(what, format, since, until, events, metrics, chunk_rows)
    with read_connection(source) as conn:
        if not _has_table(conn, _TABLES[what]):
            raise QueryError(
                f"this database has no {_TABLES[what]} table: it is not a Tachimeter store, "
                "or an older one (run: tachimeter migrate up)"
            )
        if what == "metrics":
            series = select_series(conn, metrics)
            series.sort(key=lambda s: (family_of(s).family, s.name, canonical_labels(s.labels)))
            if format == "openmetrics":
                check_families(series)
                writer = OpenMetricsWriter(out)
                lo, hi = metric_range(since, until)
                rows = sum(
                    writer.write(block)
                    for block in series_blocks(conn, series, lo, hi, series_major=True)
                )
                writer.close()
                return ExportResult(what=what, format=format, rows=rows, skipped=writer.skipped)
            table = metrics_table(conn, series, since=since, until=until, chunk_rows=chunk_rows)
        elif what == "events":
            table = events_table(
                conn, since=since, until=until, names=events, chunk_rows=chunk_rows
            )
        else:
            table = missions_table(conn, since=since, until=until, chunk_rows=chunk_rows)
        row_writer = _writer(format, out, table)
        rows = 0
        try:
            for chunk in table.chunks:
                rows += row_writer.write(chunk)
        finally:
            table.chunks.close()
        row_writer.close()
        return ExportResult(what=what, format=format, rows=rows, skipped=row_writer.skipped)
