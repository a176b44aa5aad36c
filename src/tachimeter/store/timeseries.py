"""The time-series store: series index, raw head, compressed chunks (migration 3).

Layout (docs/schema.md, "Migration 3"):

* ``metric_series`` names each series (metric name + labels) once;
* ``metric_points`` is the raw head: recent samples, one row each;
* ``compact`` moves every closed window (2 hours by default) of the head into
  ``metric_chunks`` frames (``tachimeter.store.chunks``: about 0.9 bytes per sample on
  scraped data, against about 50 in the head); a frame and the deletion of the head rows
  it holds commit together, so a crash leaves one or the other, and running it again
  continues where it stopped;
* ``tachimeter.store.rollups`` keeps ``metric_aggregates`` and applies retention.

Samples come from three places, all landing in the same series: ``write`` for spec 355
``MetricPoint``s (``MetricBuilder``), ``write_families`` for a registry snapshot (a
scrape of ``tachimeter.metrics``), and :class:`EventMetricsProjection` for
``Performance``/``Business`` events written through the store. Timestamps are integer
microseconds since the Unix epoch (the precision of the stored text timestamps).

One sample per series per microsecond: writing a gauge or observation again at the same
microsecond replaces it; for a delta counter (spec 355 counter points are increments)
the increments add up.

>>> import sqlite3
>>> from tachimeter.model.rows import MetricBuilder
>>> from tachimeter.store.migrator import Migrator
>>> conn = sqlite3.connect(":memory:", isolation_level=None)
>>> _ = Migrator(conn).up()
>>> tsdb = TimeSeriesStore(conn)
>>> tsdb.write([MetricBuilder.gauge("queue_depth", 3).tag("queue", "events").build()])
1
>>> [s.labels for s in tsdb.series(["queue_depth"])]
[{'queue': 'events'}]
"""

from __future__ import annotations

import datetime as dt
import math
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias

import msgspec
import numpy as np
import numpy.typing as npt

from tachimeter.errors import StoreError
from tachimeter.model.data import BusinessEventData, BusinessMetricType, PerformanceEventData
from tachimeter.model.events import AnalyticsEvent
from tachimeter.model.rows import EventRow, MetricPoint, MetricType, row_to_event
from tachimeter.model.timestamps import format_timestamp, from_ns, to_ns
from tachimeter.store.bulk import execute_rows
from tachimeter.store.chunks import DEFAULT_LEVEL, SeriesArrays, decode_chunk, encode_chunk

if TYPE_CHECKING:
    from tachimeter.metrics.family import MetricFamily

__all__ = [
    "DEFAULT_GRACE_SECONDS",
    "DEFAULT_WINDOW_SECONDS",
    "CompactionResult",
    "EventMetricsProjection",
    "ImportedSeries",
    "SeriesArrays",
    "SeriesInfo",
    "SeriesKind",
    "Temporality",
    "TimeSeriesStore",
    "canonical_labels",
    "find_series",
    "merge_parts",
    "point_kind",
    "read_samples",
    "resolve_series",
    "write_rows",
]

SeriesKind: TypeAlias = Literal["counter", "gauge", "histogram", "timer"]
"""Spec 355's metric types; ``histogram`` and ``timer`` series hold one observation per
sample (``MetricBuilder.histogram``), a scraped Prometheus histogram's ``_bucket``,
``_count`` and ``_sum`` series are cumulative counters."""

Temporality: TypeAlias = Literal["cumulative", "delta"]
"""Of a counter: ``cumulative`` (Prometheus: a running total that may reset) or
``delta`` (spec 355 counter points, event-derived counts: each sample is an increment)."""

# Two hours per chunk window, as Prometheus' head block: 480 samples per series at a
# 15 s interval, enough for zstd to find the patterns, small enough that a one-hour query
# decodes little it does not need.
DEFAULT_WINDOW_SECONDS: Final = 7200.0
# A window is compacted this long after it ends: scrapes arrive a few seconds late, and a
# sample arriving later still is not lost (it becomes a small extra chunk).
DEFAULT_GRACE_SECONDS: Final = 300.0
# Series compacted per transaction: bounds memory (1000 series x 2 h at 15 s is 480k
# samples, about 30 MB of Python rows) while keeping frames large.
_SERIES_PER_BATCH: Final = 1000
# Frames hold at most this many samples: larger ones would make a query on a few series
# decode far more than it reads.
_MAX_FRAME_SAMPLES: Final = 500_000
_US: Final = 1_000_000

_ROW_DTYPE: Final = np.dtype([("s", "<i8"), ("t", "<i8"), ("v", "<f8")])

_labels_encoder = msgspec.json.Encoder(order="sorted")
_labels_decoder = msgspec.json.Decoder(dict[str, str])

_UPSERT_SERIES: Final = (
    "INSERT INTO metric_series (name, metric_type, temporality, unit, labels, first_seen, "
    "last_seen) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name, labels) DO UPDATE SET "
    "first_seen = min(first_seen, excluded.first_seen), "
    "last_seen = max(last_seen, excluded.last_seen) RETURNING id"
)
_INSERT_REPLACE: Final = (
    "INSERT OR REPLACE INTO metric_points (series_id, ts, value) VALUES (?, ?, ?)"
)
_INSERT_ADD: Final = (
    "INSERT INTO metric_points (series_id, ts, value) VALUES (?, ?, ?) "
    "ON CONFLICT (series_id, ts) DO UPDATE SET value = value + excluded.value"
)
_SERIES_COLUMNS: Final = "id, name, metric_type, temporality, unit, labels, first_seen, last_seen"


def canonical_labels(labels: Mapping[str, str]) -> str:
    """Labels as stored: a JSON object with sorted keys, no spaces.

    >>> canonical_labels({"b": "2", "a": "1"})
    '{"a":"1","b":"2"}'
    """
    return _labels_encoder.encode(labels).decode()


class SeriesInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One row of ``metric_series``.

    >>> SeriesInfo(id=1, name="up", metric_type="gauge", labels={"job": "app"}).is_counter
    False
    """

    id: int
    name: str
    metric_type: SeriesKind
    temporality: Temporality = "cumulative"
    unit: str | None = None
    labels: dict[str, str] = {}
    first_seen: str = ""
    last_seen: str = ""

    @property
    def is_counter(self) -> bool:
        """True for counters (cumulative or delta)."""
        return self.metric_type == "counter"

    @property
    def is_delta(self) -> bool:
        """True when each sample is an increment (a delta counter)."""
        return self.metric_type == "counter" and self.temporality == "delta"

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> SeriesInfo:
        """From a ``SELECT id, name, metric_type, temporality, unit, labels, first_seen,
        last_seen`` row."""
        return cls(
            id=int(row[0]),
            name=str(row[1]),
            metric_type=row[2],
            temporality=row[3],
            unit=row[4],
            labels=_labels_decoder.decode(row[5]),
            first_seen=row[6],
            last_seen=row[7],
        )


class ImportedSeries(msgspec.Struct, frozen=True, kw_only=True):
    """One series for :meth:`TimeSeriesStore.import_series` (timestamps in microseconds).

    >>> ImportedSeries(name="up", labels={"job": "app"}, timestamps_us=[0], values=[1.0]).unit
    """

    name: str
    labels: dict[str, str]
    timestamps_us: Any
    values: Any
    metric_type: SeriesKind = "gauge"
    temporality: Temporality = "cumulative"
    unit: str | None = None


class CompactionResult(msgspec.Struct, frozen=True, kw_only=True):
    """What one :meth:`TimeSeriesStore.compact` did.

    >>> CompactionResult(chunks=2, samples=960, series=2, bytes=700).bytes_per_sample
    0.7291666666666666
    """

    chunks: int
    samples: int
    series: int
    bytes: int

    @property
    def bytes_per_sample(self) -> float:
        """Compressed bytes per sample of the chunks written (NaN when none)."""
        return self.bytes / self.samples if self.samples else math.nan


SeriesKey: TypeAlias = tuple[str, str]
"""``(name, canonical labels)``: what identifies a series."""


def resolve_series(
    conn: sqlite3.Connection,
    specs: Mapping[SeriesKey, tuple[SeriesKind, Temporality, str | None]],
    seen: Mapping[SeriesKey, tuple[int, int]],
) -> dict[SeriesKey, int]:
    """Ids of the series (created when new), widening their first/last seen to
    ``seen[key] = (min_us, max_us)``. Runs in the caller's transaction.

    A series keeps the type, temporality and unit it was created with.
    """
    ids: dict[SeriesKey, int] = {}
    for key, (kind, temporality, unit) in specs.items():
        low, high = seen[key]
        row = conn.execute(
            _UPSERT_SERIES,
            (key[0], kind, temporality, unit, key[1], _text(low), _text(high)),
        ).fetchone()
        ids[key] = int(row[0])
    return ids


def write_rows(
    conn: sqlite3.Connection,
    rows: Sequence[tuple[int, int, float]],
    delta_series: Iterable[int] = (),
) -> None:
    """Insert ``(series_id, ts_us, value)`` head rows in the caller's transaction.

    Rows of ``delta_series`` add to a sample already at that microsecond; others replace
    it. Samples older than the hourly rollups' high-water mark mark their hour dirty, so
    the next ``roll_up`` recomputes it.
    """
    if not rows:
        return
    delta = set(delta_series)
    if delta:
        execute_rows(conn, _INSERT_ADD, [r for r in rows if r[0] in delta])
        execute_rows(conn, _INSERT_REPLACE, [r for r in rows if r[0] not in delta])
    else:
        execute_rows(conn, _INSERT_REPLACE, rows)
    mark = conn.execute(
        "SELECT complete_until FROM metric_rollup_state WHERE period_type = 'hourly'"
    ).fetchone()
    if mark is not None:
        watermark = int(mark[0])
        hour = 3600 * _US
        late = {(sid, ts - ts % hour) for sid, ts, _ in rows if ts < watermark}
        if late:
            conn.executemany(
                "INSERT OR IGNORE INTO metric_rollup_dirty (series_id, hour_start) VALUES (?, ?)",
                sorted(late),
            )


class _Batch:
    """Rows for one write, grouped by series (resolved to ids at the end)."""

    __slots__ = ("keys", "rows", "seen", "specs")

    def __init__(self) -> None:
        self.specs: dict[SeriesKey, tuple[SeriesKind, Temporality, str | None]] = {}
        self.seen: dict[SeriesKey, tuple[int, int]] = {}
        self.rows: list[tuple[SeriesKey, int, float]] = []

    def add(
        self,
        name: str,
        labels: Mapping[str, str],
        kind: SeriesKind,
        temporality: Temporality,
        unit: str | None,
        ts: int,
        value: float,
    ) -> None:
        key = (name, canonical_labels(labels))
        if key not in self.specs:
            self.specs[key] = (kind, temporality, unit)
            self.seen[key] = (ts, ts)
        else:
            low, high = self.seen[key]
            if ts < low or ts > high:
                self.seen[key] = (min(low, ts), max(high, ts))
        self.rows.append((key, ts, float(value)))

    def flush(self, conn: sqlite3.Connection) -> int:
        if not self.rows:
            return 0
        ids = resolve_series(conn, self.specs, self.seen)
        delta = [
            ids[k] for k, spec in self.specs.items() if spec[0] == "counter" and spec[1] == "delta"
        ]
        write_rows(conn, [(ids[k], ts, v) for k, ts, v in self.rows], delta)
        return len(self.rows)


def point_kind(point: MetricPoint) -> tuple[SeriesKind, Temporality]:
    """Series type of a spec 355 point: its counters are increments (``delta``)."""
    kind: SeriesKind = point.metric_type.value
    return kind, "delta" if point.metric_type is MetricType.COUNTER else "cumulative"


class TimeSeriesStore:
    """Writes, compacts and reads time series in a Tachimeter SQLite database.

    ``target`` is a ``sqlite3.Connection`` in autocommit mode (``isolation_level=None``)
    on a migrated database, or a ``SQLiteStore`` (this store then opens its own
    connection to the same file: SQLite serializes it with the store's writer). Writes
    join a transaction the connection already has open, else commit their own.

    >>> import sqlite3
    >>> from tachimeter.store.migrator import Migrator
    >>> conn = sqlite3.connect(":memory:", isolation_level=None)
    >>> _ = Migrator(conn).up()
    >>> tsdb = TimeSeriesStore(conn, window_seconds=3600, grace_seconds=0)
    >>> t0 = 1_767_225_600 * 10**6
    >>> tsdb.write_samples("temp_celsius", {"room": "a"}, [t0, t0 + 15 * 10**6], [21.5, 21.75])
    2
    >>> tsdb.compact(now=dt.datetime(2026, 1, 1, 2, tzinfo=dt.UTC)).samples
    2
    >>> data = tsdb.read([1], t0, t0 + 3600 * 10**6)
    >>> data.values.tolist()
    [21.5, 21.75]
    """

    __slots__ = ("_closeable", "_conn", "_grace_us", "_level", "_lock", "_window_us")

    def __init__(
        self,
        target: sqlite3.Connection | Any,
        *,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
        grace_seconds: float = DEFAULT_GRACE_SECONDS,
        compression_level: int = DEFAULT_LEVEL,
    ) -> None:
        if not (window_seconds > 0 and (3600 % window_seconds == 0 or window_seconds % 3600 == 0)):
            raise StoreError(
                f"TimeSeriesStore window_seconds must divide an hour or be whole hours, "
                f"got {window_seconds!r}; 7200 (two hours) is the default"
            )
        if not grace_seconds >= 0:
            raise StoreError(f"TimeSeriesStore grace_seconds must be >= 0, got {grace_seconds!r}")
        if isinstance(target, sqlite3.Connection):
            self._conn = target
            self._closeable = False
        else:
            path = getattr(target, "path", None)
            if path is None:
                raise StoreError(
                    f"TimeSeriesStore needs a sqlite3.Connection or a SQLiteStore, got "
                    f"{type(target).__name__}"
                )
            self._conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            self._conn.execute("PRAGMA busy_timeout = 30000")
            self._closeable = True
        self._window_us = int(window_seconds * _US)
        self._grace_us = int(grace_seconds * _US)
        self._level = compression_level
        self._lock = threading.RLock()

    @property
    def connection(self) -> sqlite3.Connection:
        """The connection this store uses."""
        return self._conn

    @property
    def window_seconds(self) -> float:
        """Length of a compaction window."""
        return self._window_us / _US

    # -- writing ---------------------------------------------------------------------------

    def write(self, points: Iterable[MetricPoint]) -> int:
        """Store spec 355 points (``MetricBuilder(...).build()``); returns how many."""
        batch = _Batch()
        for point in points:
            kind, temporality = point_kind(point)
            batch.add(
                point.name,
                point.tags,
                kind,
                temporality,
                point.unit,
                _timestamp_us(point.timestamp),
                point.value,
            )
        return self._flush(batch)

    def write_samples(
        self,
        name: str,
        labels: Mapping[str, str],
        timestamps_us: npt.ArrayLike,
        values: npt.ArrayLike,
        *,
        metric_type: SeriesKind = "gauge",
        temporality: Temporality = "cumulative",
        unit: str | None = None,
    ) -> int:
        """Store many samples of one series (integer microsecond timestamps)."""
        ts = np.asarray(timestamps_us, dtype=np.int64)
        vals = np.asarray(values, dtype=np.float64)
        if ts.shape != vals.shape or ts.ndim != 1:
            raise StoreError(
                f"write_samples({name!r}): timestamps and values must be 1-d and of one "
                f"length, got shapes {ts.shape} and {vals.shape}"
            )
        if len(ts) == 0:
            return 0
        key = (name, canonical_labels(labels))
        with self._lock, self._transaction():
            ids = resolve_series(
                self._conn,
                {key: (metric_type, temporality, unit)},
                {key: (int(ts.min()), int(ts.max()))},
            )
            sid = ids[key]
            write_rows(
                self._conn,
                list(zip([sid] * len(ts), ts.tolist(), vals.tolist(), strict=True)),
                [sid] if metric_type == "counter" and temporality == "delta" else (),
            )
        return len(ts)

    def write_families(
        self, families: Iterable[MetricFamily], at: dt.datetime | None = None
    ) -> int:
        """Store a scrape of metric families (``Registry.collect()``) taken at ``at``.

        Counters and a histogram's or summary's ``_bucket``/``_count``/``_sum`` become
        cumulative counters; gauges, summary quantiles and untyped samples gauges;
        ``_created`` samples are left out (they are start times, not measurements).
        """
        ts = _timestamp_us(at if at is not None else dt.datetime.now(dt.UTC))
        batch = _Batch()
        for family in families:
            for sample in family.samples:
                if sample.name.endswith("_created") and sample.name != family.name:
                    continue
                kind: SeriesKind = "gauge"
                if family.kind == "counter" or (
                    family.kind in ("histogram", "summary") and sample.name != family.name
                ):
                    kind = "counter"
                batch.add(
                    sample.name,
                    dict(sample.labels),
                    kind,
                    "cumulative",
                    family.unit or None,
                    ts,
                    sample.value,
                )
        return self._flush(batch)

    def _flush(self, batch: _Batch) -> int:
        with self._lock, self._transaction():
            return batch.flush(self._conn)

    def _transaction(self, immediate: bool = True) -> _Transaction:
        return _Transaction(self._conn, immediate)

    # -- reading ---------------------------------------------------------------------------

    def series(
        self, names: Sequence[str] | None = None, *, ids: Sequence[int] | None = None
    ) -> list[SeriesInfo]:
        """Series by name (all when ``names`` is None) or by id, ordered by id."""
        return find_series(self._conn, names, ids=ids)

    def read(
        self, series_ids: Sequence[int] | npt.ArrayLike, start_us: int, end_us: int
    ) -> SeriesArrays:
        """Samples of the series with ``start_us <= ts <= end_us``, chunks and head merged."""
        ids = np.unique(np.asarray(series_ids, dtype=np.int64))
        infos = find_series(self._conn, None, ids=ids.tolist())
        return read_samples(self._conn, infos, start_us, end_us)

    # -- compaction ------------------------------------------------------------------------

    def compact(self, now: dt.datetime | None = None) -> CompactionResult:
        """Move every closed window of the head into chunks (incremental, idempotent).

        A window is closed ``grace_seconds`` after it ends. Each batch of series commits
        its chunks together with the deletion of their head rows.
        """
        now_us = _timestamp_us(now if now is not None else dt.datetime.now(dt.UTC))
        cutoff = (now_us - self._grace_us) // self._window_us * self._window_us
        chunks = samples = nbytes = 0
        series_done: set[int] = set()
        with self._lock:
            row = self._conn.execute("SELECT max(id) FROM metric_series").fetchone()
            top = int(row[0]) if row and row[0] is not None else 0
            for low in range(0, top + 1, _SERIES_PER_BATCH):
                high = low + _SERIES_PER_BATCH
                with self._transaction(immediate=True):
                    result = self._compact_batch(low, high, cutoff)
                chunks += result[0]
                samples += result[1]
                nbytes += result[2]
                series_done.update(result[3])
        return CompactionResult(
            chunks=chunks, samples=samples, series=len(series_done), bytes=nbytes
        )

    def _compact_batch(self, low: int, high: int, cutoff: int) -> tuple[int, int, int, set[int]]:
        conn = self._conn
        cursor = conn.execute(
            "SELECT series_id, ts, value FROM metric_points "
            "WHERE series_id >= ? AND series_id < ? AND ts < ?",
            (low, high, cutoff),
        )
        # Rows arrive in primary-key order (series, time), straight into one array.
        table = np.fromiter(cursor, dtype=_ROW_DTYPE)
        if len(table) == 0:
            return 0, 0, 0, set()
        sids, ts, values = table["s"].copy(), table["t"].copy(), table["v"].copy()
        del table
        bounds = np.concatenate([[0], np.flatnonzero(sids[1:] != sids[:-1]) + 1, [len(sids)]])
        series = [
            (int(sids[a]), ts[a:b], values[a:b])
            for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)
        ]
        chunks, nbytes = self._write_frames(series)
        conn.execute(
            "DELETE FROM metric_points WHERE series_id >= ? AND series_id < ? AND ts < ?",
            (low, high, cutoff),
        )
        return chunks, len(sids), nbytes, {sid for sid, _, _ in series}

    def _write_frames(
        self,
        series: Sequence[tuple[int, npt.NDArray[np.int64], npt.NDArray[np.float64]]],
    ) -> tuple[int, int]:
        """Write series (id, sorted timestamps, values) as one frame per (name, window).

        Each series is cut at the window edges with a binary search, and each frame is
        the concatenation of its members' slices: no sort of the samples themselves.
        """
        names = dict(
            self._conn.execute(
                "SELECT id, name FROM metric_series WHERE id IN (SELECT value FROM json_each(?))",
                (msgspec.json.encode([sid for sid, _, _ in series]).decode(),),
            ).fetchall()
        )
        frames: dict[tuple[str, int], list[tuple[int, Any, Any]]] = {}
        window = self._window_us
        for sid, ts, values in sorted(series, key=lambda item: item[0]):
            if not len(ts):
                continue
            first, last = int(ts[0]) // window, int(ts[-1]) // window
            cuts = np.searchsorted(ts, np.arange(first, last + 2, dtype=np.int64) * window)
            for w, (a, b) in enumerate(zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True)):
                if b > a:
                    frames.setdefault((names[sid], first + w), []).append(
                        (sid, ts[a:b], values[a:b])
                    )
        written = nbytes = 0
        for (name, w), members in sorted(frames.items()):
            for part in _split_members(members):
                sids = np.array([m[0] for m in part], dtype=np.int64)
                lengths = [len(m[1]) for m in part]
                nbytes += self._write_chunk(
                    name,
                    w * window,
                    sids,
                    np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                    np.concatenate([m[1] for m in part]),
                    np.concatenate([m[2] for m in part]),
                )
                written += 1
        return written, nbytes

    def import_series(
        self, series: Iterable[ImportedSeries], *, now: dt.datetime | None = None
    ) -> CompactionResult:
        """Backfill many series at once (like ``promtool tsdb create-blocks-from``).

        Samples in windows that are already closed go straight into chunks, without the
        head; the rest go to the head like any write. Hours already rolled up are marked
        for the next ``roll_up``. Within a series, a later duplicate timestamp wins.
        """
        now_us = _timestamp_us(now if now is not None else dt.datetime.now(dt.UTC))
        cutoff = (now_us - self._grace_us) // self._window_us * self._window_us
        specs: dict[SeriesKey, tuple[SeriesKind, Temporality, str | None]] = {}
        seen: dict[SeriesKey, tuple[int, int]] = {}
        arrays: dict[SeriesKey, tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]] = {}
        for item in series:
            ts = np.asarray(item.timestamps_us, dtype=np.int64)
            vals = np.asarray(item.values, dtype=np.float64)
            if ts.shape != vals.shape or ts.ndim != 1:
                raise StoreError(
                    f"import_series({item.name!r}): timestamps and values must be 1-d and "
                    f"of one length, got shapes {ts.shape} and {vals.shape}"
                )
            if len(ts) == 0:
                continue
            if len(ts) > 1 and not (ts[1:] > ts[:-1]).all():
                order = np.argsort(ts, kind="stable")
                ts, vals = ts[order], vals[order]
                last = np.ones(len(ts), dtype=bool)
                last[:-1] = ts[1:] != ts[:-1]
                ts, vals = ts[last], vals[last]
            key = (item.name, canonical_labels(item.labels))
            specs[key] = (item.metric_type, item.temporality, item.unit)
            seen[key] = (int(ts[0]), int(ts[-1]))
            arrays[key] = (ts, vals)
        if not arrays:
            return CompactionResult(chunks=0, samples=0, series=0, bytes=0)
        with self._lock, self._transaction():
            ids = resolve_series(self._conn, specs, seen)
            closed: list[tuple[int, npt.NDArray[np.int64], npt.NDArray[np.float64]]] = []
            rest: list[tuple[int, int, float]] = []
            for key, (ts, vals) in arrays.items():
                split = int(np.searchsorted(ts, cutoff))
                if split:
                    closed.append((ids[key], ts[:split], vals[:split]))
                if split < len(ts):
                    sid = ids[key]
                    rest.extend(
                        zip(
                            [sid] * (len(ts) - split),
                            ts[split:].tolist(),
                            vals[split:].tolist(),
                            strict=True,
                        )
                    )
            chunks, nbytes = self._write_frames(closed) if closed else (0, 0)
            self._mark_rolled_hours(closed)
            if rest:
                delta = [ids[k] for k, spec in specs.items() if spec[:2] == ("counter", "delta")]
                write_rows(self._conn, rest, delta)
        return CompactionResult(
            chunks=chunks,
            samples=sum(len(ts) for _, ts, _ in closed),
            series=len(arrays),
            bytes=nbytes,
        )

    def _mark_rolled_hours(
        self, series: Sequence[tuple[int, npt.NDArray[np.int64], npt.NDArray[np.float64]]]
    ) -> None:
        """Mark the hours of backfilled samples that hourly rollups already covered."""
        mark = self._conn.execute(
            "SELECT complete_until FROM metric_rollup_state WHERE period_type = 'hourly'"
        ).fetchone()
        if mark is None:
            return
        hour = 3600 * _US
        dirty: list[tuple[int, int]] = []
        for sid, ts, _ in series:
            late = ts[: int(np.searchsorted(ts, int(mark[0])))]
            if len(late):
                dirty.extend((sid, h) for h in np.unique(late - late % hour).tolist())
        self._conn.executemany(
            "INSERT OR IGNORE INTO metric_rollup_dirty (series_id, hour_start) VALUES (?, ?)",
            dirty,
        )

    def _write_chunk(
        self,
        name: str,
        window_start: int,
        sids: npt.NDArray[np.int64],
        offsets: npt.NDArray[np.int64],
        ts: npt.NDArray[np.int64],
        values: npt.NDArray[np.float64],
    ) -> int:
        blob = encode_chunk(sids, offsets, ts, values, level=self._level)
        self._conn.execute(
            "INSERT INTO metric_chunks (name, window_start, window_end, min_ts, max_ts, "
            "min_series_id, max_series_id, series_count, sample_count, data) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                name,
                window_start,
                window_start + self._window_us,
                int(ts.min()),
                int(ts.max()),
                int(sids[0]),
                int(sids[-1]),
                len(sids),
                len(ts),
                blob,
            ),
        )
        return len(blob)

    # -- statistics and closing ----------------------------------------------------------

    def storage_stats(self) -> dict[str, int]:
        """Counts and sizes: head points, chunks, chunk samples and bytes, series."""
        conn = self._conn
        head = conn.execute("SELECT count(*) FROM metric_points").fetchone()[0]
        chunks, samples, nbytes = conn.execute(
            "SELECT count(*), coalesce(sum(sample_count), 0), coalesce(sum(length(data)), 0) "
            "FROM metric_chunks"
        ).fetchone()
        series = conn.execute("SELECT count(*) FROM metric_series").fetchone()[0]
        return {
            "series": int(series),
            "head_points": int(head),
            "chunks": int(chunks),
            "chunk_samples": int(samples),
            "chunk_bytes": int(nbytes),
        }

    def close(self) -> None:
        """Close the connection if this store opened it."""
        if self._closeable:
            self._conn.close()


class _Transaction:
    """Joins the connection's open transaction, else runs its own (BEGIN ... COMMIT)."""

    __slots__ = ("_conn", "_immediate", "_own")

    def __init__(self, conn: sqlite3.Connection, immediate: bool = True) -> None:
        self._conn = conn
        self._immediate = immediate
        self._own = False

    def __enter__(self) -> None:
        if not self._conn.in_transaction:
            self._conn.execute("BEGIN IMMEDIATE" if self._immediate else "BEGIN")
            self._own = True

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self._own:
            return
        if exc_type is None:
            self._conn.execute("COMMIT")
        elif self._conn.in_transaction:
            self._conn.execute("ROLLBACK")


def _split_members(
    members: list[tuple[int, Any, Any]],
) -> list[list[tuple[int, Any, Any]]]:
    """Cut a frame's series into frames of at most ``_MAX_FRAME_SAMPLES`` samples, never
    splitting a series."""
    parts: list[list[tuple[int, Any, Any]]] = [[]]
    size = 0
    for member in members:
        if parts[-1] and size + len(member[1]) > _MAX_FRAME_SAMPLES:
            parts.append([])
            size = 0
        parts[-1].append(member)
        size += len(member[1])
    return parts


def find_series(
    conn: sqlite3.Connection,
    names: Sequence[str] | None,
    *,
    ids: Sequence[int] | None = None,
) -> list[SeriesInfo]:
    """Rows of ``metric_series`` by names and/or ids (all when both are None)."""
    clauses: list[str] = []
    params: list[Any] = []
    if names is not None:
        clauses.append("name IN (SELECT value FROM json_each(?))")
        params.append(msgspec.json.encode(list(names)).decode())
    if ids is not None:
        clauses.append("id IN (SELECT value FROM json_each(?))")
        params.append(msgspec.json.encode([int(i) for i in ids]).decode())
    where = " WHERE " + " AND ".join(clauses) if clauses else ""
    rows = conn.execute(f"SELECT {_SERIES_COLUMNS} FROM metric_series{where} ORDER BY id", params)
    return [SeriesInfo.from_row(r) for r in rows]


def read_samples(
    conn: sqlite3.Connection, series: Sequence[SeriesInfo], start_us: int, end_us: int
) -> SeriesArrays:
    """Samples of ``series`` with ``start_us <= ts <= end_us`` from chunks and head.

    Where two sources hold the same (series, timestamp) (a late sample written again), the
    newest chunk wins and the head wins over chunks. Series without samples are left out.
    """
    if not series:
        return _empty()
    wanted = np.array(sorted({s.id for s in series}), dtype=np.int64)
    names = sorted({s.name for s in series})
    parts: list[SeriesArrays] = []
    rows = conn.execute(
        "SELECT data, min_ts, max_ts FROM metric_chunks "
        "WHERE name IN (SELECT value FROM json_each(?)) AND window_start <= ? "
        "AND window_end > ? AND max_ts >= ? AND min_ts <= ? "
        "AND max_series_id >= ? AND min_series_id <= ? ORDER BY window_start, id",
        (
            msgspec.json.encode(names).decode(),
            end_us,
            start_us,
            start_us,
            end_us,
            int(wanted[0]),
            int(wanted[-1]),
        ),
    ).fetchall()
    for blob, min_ts, max_ts in rows:
        chunk = decode_chunk(blob)
        wanted_series = np.isin(chunk.series_ids, wanted)
        if wanted_series.all() and min_ts >= start_us and max_ts <= end_us:
            parts.append(chunk)
            continue
        # An edge window or a frame shared with unwanted series: filter its samples.
        lengths = np.diff(chunk.offsets)
        keep = np.repeat(wanted_series, lengths)
        keep &= (chunk.timestamps >= start_us) & (chunk.timestamps <= end_us)
        if keep.any():
            parts.append(
                _segments(
                    np.repeat(chunk.series_ids, lengths)[keep],
                    chunk.timestamps[keep],
                    chunk.values[keep],
                )
            )
    head = np.fromiter(
        conn.execute(
            "SELECT series_id, ts, value FROM metric_points "
            "WHERE series_id IN (SELECT value FROM json_each(?)) AND ts >= ? AND ts <= ? "
            "ORDER BY series_id, ts",
            (msgspec.json.encode(wanted.tolist()).decode(), start_us, end_us),
        ),
        dtype=_ROW_DTYPE,
    )
    if len(head):
        parts.append(_segments(head["s"].copy(), head["t"].copy(), head["v"].copy()))
    if not parts:
        return _empty()
    return merge_parts(parts)


def _segments(
    sid: npt.NDArray[np.int64], ts: npt.NDArray[np.int64], values: npt.NDArray[np.float64]
) -> SeriesArrays:
    """``SeriesArrays`` of samples sorted by series then time, one entry per sample."""
    starts = np.flatnonzero(sid[1:] != sid[:-1]) + 1
    offsets = np.concatenate([[0], starts, [len(sid)]]).astype(np.int64)
    return SeriesArrays(sid[offsets[:-1]], offsets, ts, values)


def merge_parts(parts: Sequence[SeriesArrays]) -> SeriesArrays:
    """Merge sample parts (each sorted by series then time; a later part wins on an equal
    timestamp) into one ``SeriesArrays`` sorted by series id and time.

    Each part's series blocks are copied straight to their place (series by series, and
    within a series part by part), which is linear. Parts come in time order, so the
    result is sorted unless two parts overlap in time (late samples): only the junctions
    between blocks are checked, and only then is anything sorted.
    """
    if len(parts) == 1:
        return parts[0]
    ids = np.unique(np.concatenate([p.series_ids for p in parts]))
    n, p_count = len(ids), len(parts)
    counts = np.zeros((n, p_count), dtype=np.int64)
    rows = []
    for j, part in enumerate(parts):
        index = np.searchsorted(ids, part.series_ids)
        counts[index, j] = np.diff(part.offsets)
        rows.append(index)
    flat = counts.ravel()
    block_start = (np.cumsum(flat) - flat).reshape(n, p_count)
    total = int(flat.sum())
    ts = np.empty(total, dtype=np.int64)
    values = np.empty(total, dtype=np.float64)
    for j, part in enumerate(parts):
        lengths = np.diff(part.offsets)
        dest = np.arange(len(part.timestamps), dtype=np.int64)
        dest += np.repeat(block_start[rows[j], j] - part.offsets[:-1], lengths)
        ts[dest] = part.timestamps
        values[dest] = part.values
    per_series = counts.sum(axis=1)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(per_series, out=offsets[1:])
    # Junctions: the first sample of each non-empty block against the sample before it
    # in the same series.
    starts = block_start.ravel()[flat > 0]
    inner = starts[np.isin(starts, offsets[:-1], invert=True)]
    if len(inner) and (ts[inner] <= ts[inner - 1]).any():
        sid = np.repeat(ids, per_series)
        priority = np.repeat(np.tile(np.arange(p_count), n), flat)
        order = np.lexsort((priority, ts, sid))
        sid, ts, values = sid[order], ts[order], values[order]
        last = np.ones(len(sid), dtype=bool)
        last[:-1] = (sid[1:] != sid[:-1]) | (ts[1:] != ts[:-1])
        sid, ts, values = sid[last], ts[last], values[last]
        return _segments(sid, ts, values)
    return SeriesArrays(ids, offsets, ts, values)


def _empty() -> SeriesArrays:
    return SeriesArrays(
        np.zeros(0, np.int64),
        np.zeros(1, np.int64),
        np.zeros(0, np.int64),
        np.zeros(0, np.float64),
    )


def _timestamp_us(value: Any) -> int:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return to_ns(value) // 1000
    if isinstance(value, int | float) and not isinstance(value, bool):
        return round(value * _US)
    raise StoreError(f"a metric timestamp must be a datetime or epoch seconds, got {value!r}")


def _text(us: int) -> str:
    return format_timestamp(from_ns(us * 1000))


# -- events -> metric points ---------------------------------------------------------------

_TIME_UNITS: Final = frozenset({"ns", "us", "ms", "s", "seconds", "milliseconds"})
_BUSINESS_GAUGES: Final = frozenset(
    {BusinessMetricType.QUOTA_USED, BusinessMetricType.QUOTA_REMAINING}
)
# Distinct event series remembered by an EventMetricsProjection: metric names times label
# sets in use, bounded in case a producer puts ids in tags (past it, keys are rebuilt).
_EVENT_SERIES_CACHED: Final = 10_000

_EventSeries: TypeAlias = tuple[str, str, SeriesKind, Temporality, "str | None"]
"""(name, canonical labels, type, temporality, unit) of an event-derived series."""


class EventMetricsProjection:
    """Turns ``Performance`` and ``Business`` events into time-series samples.

    Give it to the ``StoreSink`` (``StoreSink(store, projections=[EventMetricsProjection()])``)
    and the samples are written in the events' own transaction:

    * a performance event's ``metric`` becomes a series of that name, labelled with its
      ``tags``, unit kept; a ``timer`` when the unit is a time unit, else a ``gauge``;
    * a business event becomes ``business_<metric_type>`` (``business_input_tokens``,
      ``business_cost_usd``, ...) labelled ``model`` and ``backend`` when known: delta
      counters (each event adds its value), except the quota figures, which are gauges.

    >>> from tachimeter.model.data import PerformanceEventData
    >>> from tachimeter.model.events import AnalyticsEvent
    >>> e = AnalyticsEvent.new("response_latency", PerformanceEventData(metric="latency",
    ...     value=12.5, unit="ms", tags={"endpoint": "/run"}))
    >>> EventMetricsProjection().points(e)
    [('latency', {'endpoint': '/run'}, 'timer', 'cumulative', 'ms', 12.5)]
    """

    __slots__ = ("_keys",)

    def __init__(self) -> None:
        # (metric, unit, tags...) or (metric type, unit, model, backend) -> its series:
        # saves building and encoding the labels of every event.
        self._keys: dict[Any, _EventSeries] = {}

    @property
    def name(self) -> str:
        """``event_metrics``."""
        return "event_metrics"

    def points(
        self, event: AnalyticsEvent
    ) -> list[tuple[str, dict[str, str], SeriesKind, Temporality, str | None, float]]:
        """The samples an event yields: ``(name, labels, type, temporality, unit, value)``."""
        data = event.data
        if isinstance(data, PerformanceEventData):
            kind: SeriesKind = "timer" if data.unit in _TIME_UNITS else "gauge"
            return [
                (data.metric, dict(data.tags), kind, "cumulative", data.unit, float(data.value))
            ]
        if isinstance(data, BusinessEventData):
            labels = {}
            if data.model:
                labels["model"] = data.model
            if data.backend:
                labels["backend"] = data.backend
            if data.metric_type in _BUSINESS_GAUGES:
                return [
                    (
                        f"business_{data.metric_type.value}",
                        labels,
                        "gauge",
                        "cumulative",
                        data.unit,
                        float(data.value),
                    )
                ]
            return [
                (
                    f"business_{data.metric_type.value}",
                    labels,
                    "counter",
                    "delta",
                    data.unit,
                    float(data.value),
                )
            ]
        return []

    def apply(
        self,
        conn: sqlite3.Connection,
        events: Sequence[AnalyticsEvent],
        rows: Sequence[EventRow],
    ) -> None:
        """Write the samples of newly stored events (inside the store's transaction)."""
        series: dict[_EventSeries, list[tuple[int, float]]] = {}
        keys = self._keys
        for event in events:
            data = event.data
            cls = type(data)
            if cls is dict or data is None:  # most events: properties, not a metric
                continue
            if cls is PerformanceEventData:
                value = float(data.value)
                token: Any = (data.metric, data.unit, *data.tags.items())
            elif cls is BusinessEventData:
                value = float(data.value)
                token = (data.metric_type, data.unit, data.model, data.backend)
            elif isinstance(data, PerformanceEventData | BusinessEventData):
                value = float(data.value)
                token = None  # a subclass: not cached
            else:
                continue
            if not math.isfinite(value):
                continue
            key = None if token is None else keys.get(token)
            if key is None:
                ((name, labels, kind, temporality, unit, _),) = self.points(event)
                key = (name, canonical_labels(labels), kind, temporality, unit)
                if token is not None and len(keys) < _EVENT_SERIES_CACHED:
                    keys[token] = key
            points = series.get(key)
            if points is None:
                points = series[key] = []
            points.append((_timestamp_us(event.timestamp), value))
        if not series:
            return
        specs: dict[SeriesKey, tuple[SeriesKind, Temporality, str | None]] = {}
        seen: dict[SeriesKey, tuple[int, int]] = {}
        for (name, label_text, kind, temporality, unit), points in series.items():
            series_key = (name, label_text)
            stamps = [ts for ts, _ in points]
            low, high = min(stamps), max(stamps)
            if series_key in specs:  # one name and labels, two kinds: the first one stays
                old_low, old_high = seen[series_key]
                low, high = min(low, old_low), max(high, old_high)
            else:
                specs[series_key] = (kind, temporality, unit)
            seen[series_key] = (low, high)
        ids = resolve_series(conn, specs, seen)
        delta = [ids[k] for k, spec in specs.items() if spec[0] == "counter" and spec[1] == "delta"]
        out: list[tuple[int, int, float]] = []
        for (name, label_text, *_), points in series.items():
            series_id = ids[(name, label_text)]
            out.extend([(series_id, ts, value) for ts, value in points])
        write_rows(conn, out, delta)

    def rebuild(self, conn: sqlite3.Connection) -> None:
        """Derive the samples again from every stored performance and business event.

        Samples are keyed by (series, microsecond), so re-deriving replaces gauges and
        observations in place; delta counters are cleared from the head first so their
        increments are not added twice (compacted chunks are kept: a rebuild repairs the
        head, it does not rewrite history).
        """
        conn.execute(
            "DELETE FROM metric_points WHERE series_id IN (SELECT id FROM metric_series "
            "WHERE name LIKE 'business\\_%' ESCAPE '\\' AND temporality = 'delta')"
        )
        cursor = conn.execute(
            "SELECT id, event_type, event_name, timestamp, session_id, user_id, properties, "
            "context, page_url, referrer FROM analytics_events "
            'WHERE context LIKE \'%"data_kind":"performance"%\' '
            'OR context LIKE \'%"data_kind":"business"%\''
        )
        while True:
            chunk = cursor.fetchmany(5000)
            if not chunk:
                break
            events = []
            for row in chunk:
                try:
                    events.append(row_to_event(tuple(row)))
                except (ValueError, TypeError, KeyError, msgspec.MsgspecError):
                    continue
            self.apply(conn, events, ())
