"""What an export reads: events, missions or metric samples, streamed in chunks of rows.

Each table names its columns (with a kind that tells writers how to encode them) and
yields lists of at most ``chunk_rows`` row tuples, so memory stays flat however many
rows the range holds. Events and missions are read by one statement whose cursor is
drained ``fetchmany(chunk_rows)`` at a time, in index order (no sort): one statement is
one read snapshot, so an export is consistent even while the store is being written.
Metric samples are read series batch by series batch (or time slab by time slab) from
the compressed chunks and the raw head, at most ``sample_budget`` samples at a time.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import sqlite3
from collections.abc import Generator, Iterator, Sequence
from typing import Any, Final, Literal, NamedTuple, TypeAlias

import numpy as np
import numpy.typing as npt

from tachimeter.errors import QueryError
from tachimeter.model.timestamps import format_timestamp, parse_timestamp, to_ns
from tachimeter.store.timeseries import SeriesInfo, canonical_labels, find_series, read_samples

__all__ = [
    "ColumnKind",
    "ExportTable",
    "Row",
    "SeriesBlock",
    "events_table",
    "metric_range",
    "metrics_table",
    "missions_table",
    "select_series",
    "series_blocks",
]

ColumnKind: TypeAlias = Literal["text", "timestamp", "integer", "real", "boolean", "json", "labels"]
"""How a column's values are held in a row: ``text``; ``timestamp`` (fixed-width UTC
text); ``integer``; ``real``; ``boolean``; ``json`` (JSON text, decoded in JSON lines);
``labels`` (a JSON object of strings, a map in Parquet)."""

Row: TypeAlias = tuple[Any, ...]

# Metric samples held at once: two numpy arrays of 8 bytes each per sample, about 3 MB,
# plus the decoded chunks they come from.
DEFAULT_SAMPLE_BUDGET: Final = 200_000
_US: Final = 1_000_000
_EARLIEST_US: Final = -(2**62)
_LATEST_US: Final = 2**62


class ExportTable(NamedTuple):
    """Columns, and the rows in chunks (a generator: it reads as it is iterated)."""

    what: str
    columns: tuple[tuple[str, ColumnKind], ...]
    chunks: Generator[list[Row], None, None]


class SeriesBlock(NamedTuple):
    """Consecutive samples of one series, in time order (timestamps in microseconds)."""

    series: SeriesInfo
    timestamps: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]


def _time_clauses(
    column: str, since: dt.datetime | None, until: dt.datetime | None
) -> tuple[list[str], list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if since is not None:
        clauses.append(f"{column} >= ?")
        params.append(format_timestamp(since))
    if until is not None:
        clauses.append(f"{column} < ?")
        params.append(format_timestamp(until))
    return clauses, params


def _drain(cursor: sqlite3.Cursor, chunk_rows: int) -> Generator[list[Row], None, None]:
    try:
        while True:
            rows = cursor.fetchmany(chunk_rows)
            if not rows:
                return
            yield rows
    finally:
        cursor.close()


# -- events --------------------------------------------------------------------------------

EVENT_COLUMNS: Final[tuple[tuple[str, ColumnKind], ...]] = (
    ("id", "text"),
    ("event_type", "text"),
    ("event_name", "text"),
    ("timestamp", "timestamp"),
    ("session_id", "text"),
    ("user_id", "text"),
    ("properties", "json"),
    ("context", "json"),
    ("page_url", "text"),
    ("referrer", "text"),
    ("category", "text"),
    ("priority", "text"),
    ("mission_id", "text"),
)


def events_table(
    conn: sqlite3.Connection,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    names: Sequence[str] = (),
    chunk_rows: int = 5000,
) -> ExportTable:
    """``analytics_events`` rows with ``since <= timestamp < until`` (of ``names`` if
    given), in time order: spec 355's ten columns, then ``category``, ``priority``,
    ``mission_id``."""
    clauses, params = _time_clauses("timestamp", since, until)
    if len(names) == 1:
        clauses.append("event_name = ?")
        params.append(names[0])
    elif names:
        # "+": filter inside the (timestamp, event_name) index scan, which is already in
        # the order wanted, rather than merge several name ranges and sort them.
        clauses.append(f"+event_name IN ({', '.join('?' * len(names))})")
        params.extend(names)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    columns = ", ".join(name for name, _ in EVENT_COLUMNS)
    # (timestamp, event_name, rowid) is the order of idx_events_time_name: no sort step.
    cursor = conn.execute(
        f"SELECT {columns} FROM analytics_events{where} ORDER BY timestamp, event_name, rowid",
        params,
    )
    return ExportTable("events", EVENT_COLUMNS, _drain(cursor, chunk_rows))


# -- missions ------------------------------------------------------------------------------

MISSION_COLUMNS: Final[tuple[tuple[str, ColumnKind], ...]] = (
    ("mission_id", "text"),
    ("backend", "text"),
    ("model", "text"),
    ("tags", "json"),
    ("session_id", "text"),
    ("user_id", "text"),
    ("status", "text"),
    ("created_at", "timestamp"),
    ("started_at", "timestamp"),
    ("ended_at", "timestamp"),
    ("last_event_at", "timestamp"),
    ("execution_time_ms", "real"),
    ("paused_ms", "real"),
    ("retry_count", "integer"),
    ("step_count", "integer"),
    ("steps_completed", "integer"),
    ("steps_failed", "integer"),
    ("tool_calls", "integer"),
    ("tool_failures", "integer"),
    ("tool_time_ms", "real"),
    ("distinct_tools", "integer"),
    ("llm_calls", "integer"),
    ("input_tokens", "integer"),
    ("output_tokens", "integer"),
    ("cache_read_tokens", "integer"),
    ("cache_creation_tokens", "integer"),
    ("reasoning_tokens", "integer"),
    ("total_tokens", "integer"),
    ("total_cost", "real"),
    ("unpriced_llm_calls", "integer"),
    ("error_code", "text"),
    ("error_message", "text"),
    ("error_type", "text"),
    ("error_step_index", "integer"),
    ("error_recoverable", "boolean"),
    ("end_reason", "text"),
)


def missions_table(
    conn: sqlite3.Connection,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    chunk_rows: int = 5000,
) -> ExportTable:
    """``missions`` rows created in ``[since, until)``, in creation order (the store's
    internal keys and sequence numbers left out)."""
    clauses, params = _time_clauses("created_at", since, until)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    columns = ", ".join(name for name, _ in MISSION_COLUMNS)
    # mission_key is the rowid: (created_at, mission_key) is idx_missions_created's order.
    cursor = conn.execute(
        f"SELECT {columns} FROM missions{where} ORDER BY created_at, mission_key", params
    )
    return ExportTable("missions", MISSION_COLUMNS, _drain(cursor, chunk_rows))


# -- metrics -------------------------------------------------------------------------------

METRIC_COLUMNS: Final[tuple[tuple[str, ColumnKind], ...]] = (
    ("timestamp", "timestamp"),
    ("name", "text"),
    ("labels", "labels"),
    ("value", "real"),
    ("metric_type", "text"),
    ("temporality", "text"),
    ("unit", "text"),
)


def _us(value: dt.datetime | None, default: int) -> int:
    return default if value is None else to_ns(value.astimezone(dt.UTC)) // 1000


def _text_us(text: str) -> int:
    return to_ns(parse_timestamp(text)) // 1000


def _estimate(conn: sqlite3.Connection, name: str, ids: list[int], lo: int, hi: int) -> int:
    """An upper estimate of the samples of series ``ids`` (all of metric ``name``) in
    ``[lo, hi]``: whole chunks that overlap the range plus head rows in it."""
    in_chunks = conn.execute(
        "SELECT coalesce(sum(sample_count), 0) FROM metric_chunks WHERE name = ? "
        "AND window_start <= ? AND window_end > ? AND min_series_id <= ? AND max_series_id >= ?",
        (name, hi, lo, max(ids), min(ids)),
    ).fetchone()[0]
    in_head = conn.execute(
        "SELECT count(*) FROM metric_points WHERE series_id IN (SELECT value FROM json_each(?)) "
        "AND ts >= ? AND ts <= ?",
        (json.dumps(ids), lo, hi),
    ).fetchone()[0]
    return int(in_chunks) + int(in_head)


def _blocks(
    conn: sqlite3.Connection, members: Sequence[SeriesInfo], lo: int, hi: int
) -> Iterator[SeriesBlock]:
    """Samples of ``members`` in ``[lo, hi]``, one block per series with samples, in the
    order of ``members``."""
    arrays = read_samples(conn, members, lo, hi)
    where = {int(sid): i for i, sid in enumerate(arrays.series_ids)}
    for s in members:
        i = where.get(s.id)
        if i is None:
            continue
        a, b = int(arrays.offsets[i]), int(arrays.offsets[i + 1])
        yield SeriesBlock(s, arrays.timestamps[a:b], arrays.values[a:b])


def _slabs(lo: int, hi: int, count: int) -> Iterator[tuple[int, int]]:
    """``[lo, hi]`` cut into ``count`` consecutive closed intervals."""
    width = max(1, math.ceil((hi - lo + 1) / count))
    start = lo
    while start <= hi:
        yield start, min(hi, start + width - 1)
        start += width


def series_blocks(
    conn: sqlite3.Connection,
    series: Sequence[SeriesInfo],
    lo: int,
    hi: int,
    *,
    series_major: bool,
    sample_budget: int = DEFAULT_SAMPLE_BUDGET,
) -> Iterator[SeriesBlock]:
    """Samples of ``series`` (grouped by name, in the given order) with ``lo <= ts <= hi``.

    ``series_major``: every series' samples come in one run (OpenMetrics needs that), read
    in batches of series that fit ``sample_budget``, a series that alone does not fit in
    time slabs. Otherwise each name is read in time slabs of about ``sample_budget``
    samples across all its series, which decodes each compressed chunk about once.
    """
    start = 0
    while start < len(series):
        name = series[start].name
        end = start
        while end < len(series) and series[end].name == name:
            end += 1
        members = list(series[start:end])
        start = end
        first = max(lo, min(_text_us(s.first_seen) for s in members))
        last = min(hi, max(_text_us(s.last_seen) for s in members))
        if first > last:
            continue
        estimate = _estimate(conn, name, [s.id for s in members], first, last)
        if estimate == 0:
            continue
        if not series_major:
            for a, b in _slabs(first, last, math.ceil(estimate / sample_budget)):
                yield from _blocks(conn, members, a, b)
            continue
        per_series = estimate / len(members)
        if per_series <= sample_budget:
            size = max(1, int(sample_budget // max(per_series, 1.0)))
            for i in range(0, len(members), size):
                yield from _blocks(conn, members[i : i + size], first, last)
            continue
        for s in members:
            slabs = _slabs(first, last, math.ceil(per_series / sample_budget))
            for a, b in slabs:
                yield from _blocks(conn, [s], a, b)


def _stamps(us: npt.NDArray[np.int64]) -> list[str]:
    """Fixed-width UTC text of microsecond timestamps (vectorized)."""
    text = np.datetime_as_string(us.astype("datetime64[us]"), unit="us")
    return [t + "Z" for t in text.tolist()]


def _metric_rows(
    blocks: Iterator[SeriesBlock], chunk_rows: int
) -> Generator[list[Row], None, None]:
    pending: list[Row] = []
    for block in blocks:
        s = block.series
        labels = canonical_labels(s.labels)
        for i in range(0, len(block.timestamps), chunk_rows):
            stamps = _stamps(block.timestamps[i : i + chunk_rows])
            values = block.values[i : i + chunk_rows].tolist()
            pending.extend(
                (t, s.name, labels, v, s.metric_type, s.temporality, s.unit)
                for t, v in zip(stamps, values, strict=True)
            )
            while len(pending) >= chunk_rows:
                yield pending[:chunk_rows]
                del pending[:chunk_rows]
    if pending:
        yield pending


def select_series(conn: sqlite3.Connection, names: Sequence[str]) -> list[SeriesInfo]:
    """Series of ``names`` (all when empty), by name then labels; ``QueryError`` if a
    name asked for has none."""
    series = find_series(conn, list(names) if names else None)
    if names and not series:
        known = [r[0] for r in conn.execute("SELECT DISTINCT name FROM metric_series LIMIT 11")]
        shown = ", ".join(known[:10]) + (", ..." if len(known) > 10 else "")
        raise QueryError(
            f"no metric named {', '.join(repr(n) for n in names)} in this store; "
            f"it has: {shown or 'no metrics at all'}"
        )
    return sorted(series, key=lambda s: (s.name, canonical_labels(s.labels)))


def metric_range(since: dt.datetime | None, until: dt.datetime | None) -> tuple[int, int]:
    """``[since, until)`` as inclusive microsecond bounds ``(lo, hi)``."""
    return _us(since, _EARLIEST_US), _us(until, _LATEST_US) - 1


def metrics_table(
    conn: sqlite3.Connection,
    series: Sequence[SeriesInfo],
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    chunk_rows: int = 5000,
    sample_budget: int = DEFAULT_SAMPLE_BUDGET,
) -> ExportTable:
    """Samples of ``series`` (grouped by name, in that order) with ``since <= t < until``,
    one row per sample; counters as stored (a delta counter's rows are increments)."""
    lo, hi = metric_range(since, until)
    blocks = series_blocks(conn, series, lo, hi, series_major=False, sample_budget=sample_budget)
    return ExportTable("metrics", METRIC_COLUMNS, _metric_rows(blocks, chunk_rows))
