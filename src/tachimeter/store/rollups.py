"""Rollups of time series into ``metric_aggregates``, and time-series retention.

Hourly rows are computed from the raw samples (chunks and head); daily, weekly (ISO
weeks, from Monday 00:00 UTC) and monthly rows merge the finer rows exactly: counts and
sums add, extremes combine, and the serialized :class:`QuantileSketch` of each row merges
bucket by bucket, so a 90-day p99 reads 90 daily sketches instead of raw data, within
the sketch's 1% relative error.

What a row holds, per series and period (only finite samples count):

===========  ==================================================================
``count``    samples in the period
``sum``      counters: the *increase* in the period (reset-aware, below); others:
             the sum of the values
``min/max``  smallest and largest value
``avg``      mean of the values
``p50..p99`` quantiles of the values from the sketch (not for counters: NULL)
``last``     the period's last sample and its time (``last_ts_us``)
``sketch``   the serialized sketch of the values (not for counters: NULL)
===========  ==================================================================

Counter increase: each sample of a cumulative counter contributes ``v - previous`` (or
``v`` when the counter went down: a reset), and belongs to the period it falls in; the
first sample ever seen of a series contributes 0, as in Prometheus. The increase over a
range is therefore the sum of its periods' increases, exactly. A delta counter's samples
are increments and simply add up.

Hourly rollups advance a high-water mark (``metric_rollup_state``) up to the last hour
that ended ``grace_seconds`` ago; samples written later for an hour already rolled up
mark it dirty (``metric_rollup_dirty``) and the next run recomputes it and the periods
above it.

>>> import sqlite3, datetime as dt
>>> from tachimeter.store.migrator import Migrator
>>> from tachimeter.store.timeseries import TimeSeriesStore
>>> conn = sqlite3.connect(":memory:", isolation_level=None)
>>> _ = Migrator(conn).up()
>>> tsdb = TimeSeriesStore(conn)
>>> t0 = 1_767_225_600 * 10**6
>>> _ = tsdb.write_samples("jobs_total", {}, [t0 + i * 10**6 for i in range(0, 3600, 15)],
...                        [float(i) for i in range(240)], metric_type="counter")
>>> roll_up(conn, now=dt.datetime(2026, 1, 1, 2, tzinfo=dt.UTC)).hourly_rows
1
>>> conn.execute("SELECT count, sum FROM metric_aggregates WHERE period_type = 'hourly'").fetchall()
[(240, 239.0)]
"""

from __future__ import annotations

import calendar
import datetime as dt
import functools
import math
import sqlite3
import struct
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Literal, NamedTuple, TypeAlias

import msgspec
import numpy as np
import numpy.typing as npt

from tachimeter.config.settings import DEFAULT_RETENTION_DAYS, AnalyticsConfig, RetentionSettings
from tachimeter.errors import StoreError
from tachimeter.metrics.sketch import QuantileSketch
from tachimeter.model.timestamps import format_timestamp, from_ns, to_ns
from tachimeter.store.bulk import execute_rows
from tachimeter.store.chunks import SeriesArrays
from tachimeter.store.timeseries import SeriesInfo, canonical_labels, find_series, read_samples

__all__ = [
    "PERIOD_TYPES",
    "ROW_COLUMNS",
    "PeriodType",
    "RetentionResult",
    "RollupResult",
    "SketchBins",
    "compute_hourly_rows",
    "counter_increments",
    "decode_sketches",
    "merge_rows",
    "merged_quantiles",
    "period_end",
    "period_start",
    "previous_samples",
    "roll_up",
    "run_timeseries_retention",
]

PeriodType: TypeAlias = Literal["hourly", "daily", "weekly", "monthly"]
PERIOD_TYPES: Final[tuple[PeriodType, ...]] = ("hourly", "daily", "weekly", "monthly")

_US: Final = 1_000_000
_HOUR: Final = 3600 * _US
_DAY: Final = 24 * _HOUR
# Samples computed per pass, about: 1000 series x 6 h at 15 s, 1.4M samples (some 100 MB
# of arrays while a pass runs). Fewer series get longer passes, up to two days.
_SAMPLES_PER_PASS: Final = 1_500_000
_MAX_HOURS_PER_PASS: Final = 48
_SERIES_PER_PASS: Final = 1000
# 1970-01-01 was a Thursday: day d (since the epoch) is weekday (d + 3) % 7, Monday 0.
_EPOCH_WEEKDAY: Final = 3
_SKETCH = QuantileSketch()
_ACCURACY: Final = _SKETCH.relative_accuracy
_GAMMA: Final = (1 + _ACCURACY) / (1 - _ACCURACY)
_INV_LOG_GAMMA: Final = 1.0 / math.log(_GAMMA)
_QUANTILES: Final = (0.5, 0.9, 0.99)

_UPSERT: Final = (
    "INSERT OR REPLACE INTO metric_aggregates (id, name, period_start, period_type, count, "
    "sum, min, max, avg, p50, p90, p99, tags, series_id, period_start_us, last, last_ts_us, "
    "sketch) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
ROW_COLUMNS: Final = (
    "series_id, period_start_us, count, sum, min, max, avg, last, last_ts_us, sketch"
)
"""The ``metric_aggregates`` columns :func:`merge_rows` reads, in its order."""


def period_start(us: int, period_type: PeriodType) -> int:
    """Start (microseconds, UTC) of the period containing ``us``.

    >>> period_start(1_767_312_000 * 10**6 + 5, "weekly") // 10**6  # Fri 2026-01-02
    1766966400
    """
    if period_type == "hourly":
        return us - us % _HOUR
    day = us - us % _DAY
    if period_type == "daily":
        return day
    if period_type == "weekly":
        days = day // _DAY
        return (days - (days + _EPOCH_WEEKDAY) % 7) * _DAY
    moment = from_ns(us * 1000)
    return to_ns(dt.datetime(moment.year, moment.month, 1, tzinfo=dt.UTC)) // 1000


def period_end(start_us: int, period_type: PeriodType) -> int:
    """End (exclusive) of the period starting at ``start_us``."""
    if period_type == "hourly":
        return start_us + _HOUR
    if period_type == "daily":
        return start_us + _DAY
    if period_type == "weekly":
        return start_us + 7 * _DAY
    moment = from_ns(start_us * 1000)
    days = calendar.monthrange(moment.year, moment.month)[1]
    return start_us + days * _DAY


class RollupResult(msgspec.Struct, frozen=True, kw_only=True):
    """What one :func:`roll_up` wrote, and the hourly high-water mark after it.

    >>> RollupResult(hourly_rows=24, coarse_rows=3, complete_until=None).hourly_rows
    24
    """

    hourly_rows: int
    coarse_rows: int
    complete_until: dt.datetime | None


class RetentionResult(msgspec.Struct, frozen=True, kw_only=True):
    """Rows and chunks :func:`run_timeseries_retention` deleted.

    >>> RetentionResult(chunks=12, head_points=0, aggregates={"hourly": 24}, series=0).chunks
    12
    """

    chunks: int
    head_points: int
    aggregates: dict[str, int]
    series: int


def counter_increments(
    data: SeriesArrays,
    delta: npt.NDArray[np.bool_],
    previous: Mapping[int, float],
) -> npt.NDArray[np.float64]:
    """Per sample, what it adds to its counter (see the module docstring).

    ``delta[i]`` says whether series ``data.series_ids[i]`` is a delta counter;
    ``previous[series_id]`` is the value of the sample before each series' first one
    (absent: none, its first sample adds 0).
    """
    values = data.values
    out = np.empty_like(values)
    if len(values) == 0:
        return out
    out[1:] = values[1:] - values[:-1]
    resets = out < 0
    out[resets] = values[resets]
    starts = data.offsets[:-1]
    first_values = values[starts]
    prev = np.array([previous.get(int(s), math.nan) for s in data.series_ids])
    first_inc = np.where(first_values >= prev, first_values - prev, first_values)
    out[starts] = np.where(np.isnan(prev), 0.0, first_inc)
    is_delta = np.repeat(delta, np.diff(data.offsets))
    out[is_delta] = values[is_delta]
    return out


def previous_samples(
    conn: sqlite3.Connection, data: SeriesArrays, before_us: int, counters: Iterable[int]
) -> dict[int, float]:
    """For counter series whose first sample in ``data`` is at or after ``before_us``: the
    value of their last sample before it, from the hourly rollups (whose ``last`` is the
    last sample of each hour). Series with samples before ``before_us`` in ``data`` need
    none."""
    wanted = set(counters)
    found: dict[int, float] = {}
    starts = data.offsets[:-1]
    for sid, first_ts in zip(
        data.series_ids.tolist(), data.timestamps[starts].tolist(), strict=True
    ):
        if sid not in wanted or first_ts < before_us:
            continue
        row = conn.execute(
            "SELECT last FROM metric_aggregates WHERE series_id = ? AND period_type = 'hourly' "
            "AND period_start_us < ? AND last_ts_us < ? ORDER BY period_start_us DESC LIMIT 1",
            (sid, before_us, first_ts),
        ).fetchone()
        if row is not None and row[0] is not None:
            found[sid] = float(row[0])
    return found


class _HourRows:
    """Hourly rows of a block of samples, computed with array operations."""

    __slots__ = ("rows",)

    def __init__(
        self,
        data: SeriesArrays,
        infos: Mapping[int, SeriesInfo],
        increments: npt.NDArray[np.float64],
        hours: tuple[int, int],
    ) -> None:
        self.rows: list[tuple[Any, ...]] = []
        lengths = np.diff(data.offsets)
        sid = np.repeat(data.series_ids, lengths)
        ts = data.timestamps
        values = data.values
        keep = (ts >= hours[0]) & (ts < hours[1]) & np.isfinite(values)
        if not keep.any():
            return
        sid, ts, values, increments = sid[keep], ts[keep], values[keep], increments[keep]
        hour = ts - ts % _HOUR
        boundary = np.flatnonzero((sid[1:] != sid[:-1]) | (hour[1:] != hour[:-1])) + 1
        starts = np.concatenate([[0], boundary])
        ends = np.concatenate([boundary, [len(ts)]])
        counts = ends - starts
        sums_values = np.add.reduceat(values, starts)
        sums_inc = np.add.reduceat(increments, starts)
        mins = np.minimum.reduceat(values, starts)
        maxs = np.maximum.reduceat(values, starts)
        group_sid = sid[starts]
        is_counter = np.array([infos[int(s)].is_counter for s in group_sid], dtype=bool)
        sketches = _group_sketches(values, starts, ends, ~is_counter)
        for g in range(len(starts)):
            info = infos[int(group_sid[g])]
            start_us = int(hour[starts[g]])
            count = int(counts[g])
            sketch = sketches.get(g)
            quantiles: Sequence[float | None] = (None, None, None)
            blob = None
            if sketch is not None:
                quantiles = sketch.quantiles(_QUANTILES)
                blob = sketch.to_bytes()
            self.rows.append(
                _row(
                    info,
                    "hourly",
                    start_us,
                    count,
                    float(sums_inc[g] if info.is_counter else sums_values[g]),
                    float(mins[g]),
                    float(maxs[g]),
                    float(sums_values[g]) / count,
                    quantiles,
                    float(values[ends[g] - 1]),
                    int(ts[ends[g] - 1]),
                    blob,
                )
            )


def _row(
    info: SeriesInfo,
    period_type: PeriodType,
    start_us: int,
    count: int,
    total: float,
    low: float,
    high: float,
    mean: float,
    quantiles: Sequence[float | None],
    last: float,
    last_ts: int,
    sketch: bytes | None,
) -> tuple[Any, ...]:
    return (
        f"{info.id}:{period_type}:{start_us}",
        info.name,
        format_timestamp(from_ns(start_us * 1000)),
        period_type,
        count,
        total,
        low,
        high,
        mean,
        quantiles[0],
        quantiles[1],
        quantiles[2],
        canonical_labels(info.labels),
        info.id,
        start_us,
        last,
        last_ts,
        sketch,
    )


def _group_sketches(
    values: npt.NDArray[np.float64],
    starts: npt.NDArray[np.int64],
    ends: npt.NDArray[np.int64],
    wanted: npt.NDArray[np.bool_],
) -> dict[int, QuantileSketch]:
    """One sketch per wanted group, built from bucket counts computed with numpy.

    Each bucket is added once, with its count, as its smallest value; in the bucket of
    the group's maximum, the maximum itself is added once more instead. The sketch then
    has the same buckets, minimum and maximum (and so the same quantiles) as if every
    value had been added one by one, at a fraction of the cost; only its ``sum`` is
    approximate, and the rollup row keeps the exact one.
    """
    out: dict[int, QuantileSketch] = {}
    if not wanted.any():
        return out
    sizes = ends - starts
    group = np.repeat(np.arange(len(starts)), sizes)
    mask = wanted[group]
    g, v = group[mask], values[mask]
    sign, key = _buckets(v)
    order = np.lexsort((v, key, sign, g))
    g, v, sign, key = g[order], v[order], sign[order], key[order]
    run = np.flatnonzero((g[1:] != g[:-1]) | (sign[1:] != sign[:-1]) | (key[1:] != key[:-1]))
    run_starts = np.concatenate([[0], run + 1])
    counts = np.diff(np.concatenate([run_starts, [len(v)]]))
    highs = np.maximum.reduceat(values, starts)
    high_sign, high_key = _buckets(highs)
    for index, count in zip(run_starts.tolist(), counts.tolist(), strict=True):
        gi = int(g[index])
        sketch = out.get(gi)
        if sketch is None:
            sketch = out[gi] = QuantileSketch()
        smallest = float(v[index])
        if sign[index] == high_sign[gi] and key[index] == high_key[gi]:
            if count > 1:
                sketch.add(smallest, count - 1)
            sketch.add(float(highs[gi]))
        else:
            sketch.add(smallest, count)
    return out


def _buckets(
    values: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Sign and sketch bucket key of each value (the sketch's own formula)."""
    sign = np.sign(values).astype(np.int64)
    with np.errstate(divide="ignore"):
        scaled = np.log(np.abs(values)) * _INV_LOG_GAMMA
    key = np.where(sign != 0, np.ceil(np.where(sign != 0, scaled, 0.0)), 0).astype(np.int64)
    return sign, key


def _merge_rows(
    info: SeriesInfo, period_type: PeriodType, start_us: int, parts: Sequence[Sequence[Any]]
) -> tuple[Any, ...]:
    """One coarse row from finer rows (``ROW_COLUMNS`` order), merged exactly."""
    count = sum(int(p[2]) for p in parts)
    total = math.fsum(float(p[3]) for p in parts)
    low = min(float(p[4]) for p in parts)
    high = max(float(p[5]) for p in parts)
    mean = math.fsum(float(p[6]) * int(p[2]) for p in parts) / count
    latest = max(parts, key=lambda p: int(p[8]))
    sketch: QuantileSketch | None = None
    for p in parts:
        if p[9] is not None:
            piece = QuantileSketch.from_bytes(p[9])
            if sketch is None:
                sketch = piece
            else:
                sketch.merge(piece)
    quantiles: Sequence[float | None] = (None, None, None)
    blob = None
    if sketch is not None:
        quantiles = sketch.quantiles(_QUANTILES)
        blob = sketch.to_bytes()
    return _row(
        info,
        period_type,
        start_us,
        count,
        total,
        low,
        high,
        mean,
        quantiles,
        float(latest[7]),
        int(latest[8]),
        blob,
    )


def roll_up(
    conn: sqlite3.Connection,
    now: dt.datetime | None = None,
    *,
    grace_seconds: float = 300.0,
) -> RollupResult:
    """Compute the hourly rollups of every hour that ended ``grace_seconds`` before
    ``now`` and is not rolled up yet (and of dirty hours), and the coarser rows above
    them. Each pass commits on its own; running it again continues where it stopped."""
    now_us = _to_us(now if now is not None else dt.datetime.now(dt.UTC))
    target = period_start(now_us - int(grace_seconds * _US), "hourly")
    hourly = coarse = 0
    state = conn.execute(
        "SELECT complete_until FROM metric_rollup_state WHERE period_type = 'hourly'"
    ).fetchone()
    if state is not None:
        mark = int(state[0])
    else:
        first = conn.execute("SELECT min(first_seen) FROM metric_series").fetchone()[0]
        if first is None:
            return RollupResult(hourly_rows=0, coarse_rows=0, complete_until=None)
        mark = period_start(_text_to_us(first), "hourly")
    h, c = _roll_up_dirty(conn, min(mark, target))
    hourly += h
    coarse += c
    # Coarse periods are recomputed once, when the pass that completes them (or the last
    # pass) runs; after a crash the next run's passes touch any period left open again.
    pending = _Pending()
    hours_per_pass = _hours_per_pass(conn)
    while mark < target:
        upto = min(target, mark + hours_per_pass * _HOUR)
        if not _any_series_active(conn, mark, upto):
            # Nothing was seen in these hours: jump to the next hour any series starts in.
            upto = _next_start(conn, upto, target)
        with _transaction(conn):
            hourly += _roll_up_hours(conn, mark, upto, None, pending)
            coarse += _roll_up_coarse(conn, pending, None if upto >= target else upto)
            conn.execute(
                "INSERT OR REPLACE INTO metric_rollup_state (period_type, complete_until) "
                "VALUES ('hourly', ?)",
                (upto,),
            )
        mark = upto
    until = from_ns(mark * 1000) if mark else None
    return RollupResult(hourly_rows=hourly, coarse_rows=coarse, complete_until=until)


def _hours_per_pass(conn: sqlite3.Connection) -> int:
    """Hours per pass that keep a pass near ``_SAMPLES_PER_PASS`` at 15 s per sample."""
    series = conn.execute("SELECT count(*) FROM metric_series").fetchone()[0] or 1
    return max(1, min(_MAX_HOURS_PER_PASS, _SAMPLES_PER_PASS // (240 * int(series))))


def _any_series_active(conn: sqlite3.Connection, start: int, end: int) -> bool:
    row = conn.execute(
        "SELECT 1 FROM metric_series WHERE last_seen >= ? AND first_seen < ? LIMIT 1",
        (_us_to_text(start - _HOUR), _us_to_text(end)),
    ).fetchone()
    return row is not None


def _next_start(conn: sqlite3.Connection, after: int, target: int) -> int:
    """The hour of the first series starting at or after ``after`` (at most ``target``)."""
    row = conn.execute(
        "SELECT min(first_seen) FROM metric_series WHERE first_seen >= ?", (_us_to_text(after),)
    ).fetchone()
    if row is None or row[0] is None:
        return target
    return max(after, min(target, period_start(_text_to_us(row[0]), "hourly")))


def _roll_up_dirty(conn: sqlite3.Connection, mark: int) -> tuple[int, int]:
    dirty = conn.execute(
        "SELECT series_id, hour_start FROM metric_rollup_dirty WHERE hour_start < ? "
        "ORDER BY hour_start",
        (mark,),
    ).fetchall()
    if not dirty:
        return 0, 0
    by_hour: dict[int, set[int]] = defaultdict(set)
    for sid, hour in dirty:
        by_hour[int(hour)].add(int(sid))
        # The series' next hour with samples too: the increase of its first sample is
        # counted from the last sample before it, which may be the late one.
        following = conn.execute(
            "SELECT min(period_start_us) FROM metric_aggregates WHERE series_id = ? "
            "AND period_type = 'hourly' AND period_start_us > ?",
            (sid, hour),
        ).fetchone()[0]
        if following is not None and int(following) < mark:
            by_hour[int(following)].add(int(sid))
    hourly = 0
    pending = _Pending()
    with _transaction(conn):
        for hour, sids in sorted(by_hour.items()):
            hourly += _roll_up_hours(conn, hour, hour + _HOUR, sorted(sids), pending)
        coarse = _roll_up_coarse(conn, pending, None)
        conn.executemany(
            "DELETE FROM metric_rollup_dirty WHERE series_id = ? AND hour_start = ?", dirty
        )
    return hourly, coarse


def compute_hourly_rows(
    conn: sqlite3.Connection, infos: Sequence[SeriesInfo], start: int, end: int
) -> list[tuple[Any, ...]]:
    """Hourly ``metric_aggregates`` rows of ``infos`` for the hours in ``[start, end)``,
    computed from raw samples without writing them (``roll_up`` writes them; queries
    use this for the hours not rolled up yet)."""
    out: list[tuple[Any, ...]] = []
    for i in range(0, len(infos), _SERIES_PER_PASS):
        block = infos[i : i + _SERIES_PER_PASS]
        by_id = {s.id: s for s in block}
        data = read_samples(conn, block, start - _HOUR, end - 1)
        if len(data.series_ids) == 0:
            continue
        delta = np.array([by_id[int(s)].is_delta for s in data.series_ids], dtype=bool)
        counters = [s.id for s in block if s.is_counter and not s.is_delta]
        previous = previous_samples(conn, data, start, counters)
        increments = counter_increments(data, delta, previous)
        out.extend(_HourRows(data, by_id, increments, (start, end)).rows)
    return out


def merge_rows(
    info: SeriesInfo, period_type: PeriodType, start_us: int, parts: Sequence[Sequence[Any]]
) -> tuple[Any, ...]:
    """A coarse row from finer ones given as ``(series_id, period_start_us, count, sum,
    min, max, avg, last, last_ts_us, sketch)``; the result is a full row (``_UPSERT``
    order: ``count`` at 4, ``sum`` 5, ..., ``last`` 15, ``sketch`` 17)."""
    return _merge_rows(info, period_type, start_us, parts)


class _Pending:
    """Coarse periods whose finer rows changed, per period type and series."""

    __slots__ = ("infos", "periods")

    def __init__(self) -> None:
        self.infos: dict[int, SeriesInfo] = {}
        self.periods: dict[PeriodType, dict[int, set[int]]] = {
            "daily": defaultdict(set),
            "weekly": defaultdict(set),
            "monthly": defaultdict(set),
        }

    def add(self, info: SeriesInfo, hour: int) -> None:
        self.infos[info.id] = info
        for (_, periods), start in zip(self.periods.items(), _coarse_starts(hour), strict=True):
            periods[info.id].add(start)


@functools.lru_cache(maxsize=4096)
def _coarse_starts(hour: int) -> tuple[int, int, int]:
    """Starts of the day, week and month containing an hour (many series share hours)."""
    return (
        period_start(hour, "daily"),
        period_start(hour, "weekly"),
        period_start(hour, "monthly"),
    )


def _roll_up_hours(
    conn: sqlite3.Connection,
    start: int,
    end: int,
    only: Sequence[int] | None,
    pending: _Pending,
) -> int:
    """Write the hourly rows for ``[start, end)``; note the coarse periods they touch."""
    if only is None:
        infos = [
            SeriesInfo.from_row(r)
            for r in conn.execute(
                "SELECT id, name, metric_type, temporality, unit, labels, first_seen, last_seen "
                "FROM metric_series WHERE last_seen >= ? AND first_seen < ? ORDER BY id",
                (_us_to_text(start - _HOUR), _us_to_text(end)),
            )
        ]
    else:
        infos = find_series(conn, None, ids=only)
    rows = compute_hourly_rows(conn, infos, start, end)
    execute_rows(conn, _UPSERT, rows)
    by_id = {s.id: s for s in infos}
    for row in rows:
        pending.add(by_id[int(row[13])], int(row[14]))
    return len(rows)


def _roll_up_coarse(conn: sqlite3.Connection, pending: _Pending, complete_by: int | None) -> int:
    """Recompute the pending daily, weekly and monthly rows: those that ended by
    ``complete_by``, or all of them when it is None. Done ones leave ``pending``."""
    written = 0
    sources: dict[PeriodType, PeriodType] = {
        "daily": "hourly",
        "weekly": "daily",
        "monthly": "daily",
    }
    for period_type, source in sources.items():
        starts: dict[int, set[int]] = {}
        for sid, periods in pending.periods[period_type].items():
            due = {
                p
                for p in periods
                if complete_by is None or period_end(p, period_type) <= complete_by
            }
            if due:
                starts[sid] = due
                periods -= due
        if not starts:
            continue
        low = min(min(s) for s in starts.values())
        high = max(period_end(max(s), period_type) for s in starts.values())
        fetched: dict[tuple[int, int], list[tuple[Any, ...]]] = defaultdict(list)
        rows = conn.execute(
            f"SELECT {ROW_COLUMNS} FROM metric_aggregates WHERE period_type = ? "
            "AND period_start_us >= ? AND period_start_us < ? "
            "AND series_id IN (SELECT value FROM json_each(?))",
            (source, low, high, msgspec.json.encode(sorted(starts)).decode()),
        )
        for row in rows:
            fetched[(int(row[0]), period_start(int(row[1]), period_type))].append(row)
        out: list[tuple[Any, ...]] = []
        for sid, period_starts in starts.items():
            for p in sorted(period_starts):
                parts = fetched.get((sid, p))
                if parts:
                    out.append(_merge_rows(pending.infos[sid], period_type, p, parts))
        execute_rows(conn, _UPSERT, out)
        written += len(out)
    return written


class _transaction:
    __slots__ = ("_conn", "_own")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._own = False

    def __enter__(self) -> None:
        if not self._conn.in_transaction:
            self._conn.execute("BEGIN IMMEDIATE")
            self._own = True

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._own:
            if exc_type is None:
                self._conn.execute("COMMIT")
            elif self._conn.in_transaction:
                self._conn.execute("ROLLBACK")


def run_timeseries_retention(
    target: sqlite3.Connection | Any,
    retention: RetentionSettings | AnalyticsConfig | Mapping[str, int] | None = None,
    now: dt.datetime | None = None,
) -> RetentionResult:
    """Delete time-series data older than the retention of each tier, in one transaction.

    Raw data (``retention.days["metrics"]``, 15 days by default) goes by whole chunk
    windows, so at least that many days stay; a rollup row goes when its whole period is
    older than its tier's retention (``metric_aggregates_hourly`` 90 days,
    ``_daily`` 730, ``_weekly`` 1825, ``_monthly`` 3650). Series seen by none of the kept
    data are forgotten. ``target`` is a connection or a ``SQLiteStore``.
    """
    days = _retention_days(retention)
    now_us = _to_us(now if now is not None else dt.datetime.now(dt.UTC))
    own = not isinstance(target, sqlite3.Connection)
    conn: sqlite3.Connection
    if own:
        path = getattr(target, "path", None)
        if path is None:
            raise StoreError(
                "run_timeseries_retention needs a sqlite3.Connection or a SQLiteStore, got "
                f"{type(target).__name__}"
            )
        conn = sqlite3.connect(path, isolation_level=None, timeout=30.0)
    else:
        conn = target
    try:
        with _transaction(conn):
            raw_cutoff = now_us - days["metrics"] * _DAY
            chunks = conn.execute(
                "DELETE FROM metric_chunks WHERE window_end <= ?", (raw_cutoff,)
            ).rowcount
            head = conn.execute("DELETE FROM metric_points WHERE ts < ?", (raw_cutoff,)).rowcount
            deleted: dict[str, int] = {}
            for period_type in PERIOD_TYPES:
                cutoff = now_us - days[f"metric_aggregates_{period_type}"] * _DAY
                deleted[period_type] = _delete_periods(conn, period_type, cutoff)
            conn.execute(
                "DELETE FROM metric_rollup_dirty WHERE hour_start < ?",
                (now_us - days["metric_aggregates_hourly"] * _DAY,),
            )
            keep_from = (
                now_us
                - max(days[k] for k in days if k == "metrics" or k.startswith("metric_aggregates"))
                * _DAY
            )
            series = conn.execute(
                "DELETE FROM metric_series WHERE last_seen < ? AND id NOT IN "
                "(SELECT series_id FROM metric_aggregates WHERE series_id IS NOT NULL) "
                "AND id NOT IN (SELECT series_id FROM metric_points)",
                (_us_to_text(keep_from),),
            ).rowcount
    finally:
        if own:
            conn.close()
    return RetentionResult(chunks=chunks, head_points=head, aggregates=deleted, series=series)


def _delete_periods(conn: sqlite3.Connection, period_type: PeriodType, cutoff: int) -> int:
    """Delete the rows of a tier whose period ended at or before ``cutoff``.

    Compares the text ``period_start`` (fixed-width, so text order is time order), which
    rows written by other tools have too.
    """
    if period_type == "monthly":
        # A month ends at or before the cutoff exactly when it starts before the month
        # containing the cutoff.
        bound = _us_to_text(period_start(cutoff, "monthly"))
        sql = "DELETE FROM metric_aggregates WHERE period_type = ? AND period_start < ?"
    else:
        length = {"hourly": _HOUR, "daily": _DAY, "weekly": 7 * _DAY}[period_type]
        bound = _us_to_text(cutoff - length)
        sql = "DELETE FROM metric_aggregates WHERE period_type = ? AND period_start <= ?"
    return int(conn.execute(sql, (period_type, bound)).rowcount)


def _retention_days(
    retention: RetentionSettings | AnalyticsConfig | Mapping[str, int] | None,
) -> dict[str, int]:
    if retention is None:
        return {str(k): v for k, v in DEFAULT_RETENTION_DAYS.items()}
    if isinstance(retention, AnalyticsConfig):
        retention = retention.retention
    if not isinstance(retention, RetentionSettings):
        try:
            retention = msgspec.convert({"days": dict(retention)}, RetentionSettings)
        except (msgspec.ValidationError, ValueError) as exc:
            raise StoreError(
                f"run_timeseries_retention: bad retention {retention!r}: {exc}"
            ) from exc
    return {str(k): v for k, v in retention.days.items()}


def _to_us(value: dt.datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return to_ns(value) // 1000


def _us_to_text(us: int) -> str:
    return format_timestamp(from_ns(us * 1000))


def _text_to_us(text: str) -> int:
    from tachimeter.model.timestamps import parse_timestamp

    return to_ns(parse_timestamp(text)) // 1000


# -- reading many sketches at once ---------------------------------------------------------

# QuantileSketch.to_bytes: magic, version, relative accuracy, max bins, sum, min, max,
# then varints: zero count, and per sign (positive, negative) the number of buckets, the
# first key zigzag-coded, the other keys as deltas, and the counts.
_SKETCH_HEADER: Final = struct.Struct("<3sBdIddd")
_SKETCH_MAGIC: Final = b"TQS"
_SKETCH_VERSION: Final = 1


class SketchBins(NamedTuple):
    """The buckets of many serialized sketches as flat arrays, one entry per bucket.

    Bucket ``i`` belongs to sketch ``sketch[i]``; ``sign`` is +1, -1, or 0 for the zero
    bucket; values in bucket ``(sign, key)`` are ``sign * gamma**key`` give or take 1%.

    >>> one = QuantileSketch()
    >>> one.add(2.0)
    >>> bins = decode_sketches([one.to_bytes(), one.to_bytes()])
    >>> bins.sketch.tolist(), bins.counts.tolist()
    ([0, 1], [1, 1])
    >>> merged_quantiles(bins, [np.array([0, 1])], [0.5]).tolist()
    [[2.0]]
    """

    sketch: npt.NDArray[np.int64]
    sign: npt.NDArray[np.int64]
    key: npt.NDArray[np.int64]
    counts: npt.NDArray[np.int64]
    minimum: npt.NDArray[np.float64]
    maximum: npt.NDArray[np.float64]
    relative_accuracy: float
    max_bins: int


def decode_sketches(blobs: Sequence[bytes]) -> SketchBins:
    """Decode ``QuantileSketch.to_bytes`` blobs together, varints decoded with numpy.

    Equivalent to ``QuantileSketch.from_bytes`` on each (tests compare them), at a small
    fraction of the cost when a query merges thousands of rollup sketches.
    """
    n = len(blobs)
    minimum = np.empty(n)
    maximum = np.empty(n)
    streams: list[bytes] = []
    accuracy: float | None = None
    max_bins = 0
    for i, blob in enumerate(blobs):
        magic, version, acc, bins, _, low, high = _SKETCH_HEADER.unpack_from(blob)
        if magic != _SKETCH_MAGIC or version != _SKETCH_VERSION:
            raise StoreError(
                f"rollup sketch {i} has magic {magic!r} version {version}; this version of "
                f"Tachimeter reads {_SKETCH_MAGIC!r} version {_SKETCH_VERSION}"
            )
        if accuracy is None:
            accuracy, max_bins = acc, bins
        elif acc != accuracy:
            raise StoreError(
                f"rollup sketches of relative accuracy {accuracy} and {acc} cannot be merged"
            )
        minimum[i], maximum[i] = low, high
        streams.append(blob[_SKETCH_HEADER.size :])
    raw = np.frombuffer(b"".join(streams), dtype=np.uint8)
    ends = np.flatnonzero(raw < 0x80)
    starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
    position = np.arange(len(raw), dtype=np.int64) - np.repeat(starts, ends - starts + 1)
    parts = (raw & 0x7F).astype(np.uint64) << (7 * position).astype(np.uint64)
    varints = (np.add.reduceat(parts, starts) if len(starts) else parts).astype(np.int64)
    stream_starts = np.cumsum([0, *(len(s) for s in streams)])[:-1]
    first_varint = np.searchsorted(starts, stream_starts).tolist()
    # Walk the structure with plain ints (a few per sketch); the buckets are built below
    # with array operations.
    values = varints.tolist()
    zero_owner: list[int] = []
    zero_count: list[int] = []
    seg_owner: list[int] = []
    seg_sign: list[int] = []
    seg_at: list[int] = []
    seg_size: list[int] = []
    for i, at in enumerate(first_varint):
        if values[at]:
            zero_owner.append(i)
            zero_count.append(values[at])
        at += 1
        for sign in (1, -1):
            size = values[at]
            at += 1
            if size:
                seg_owner.append(i)
                seg_sign.append(sign)
                seg_at.append(at)
                seg_size.append(size)
                at += 2 * size
    sizes = np.array(seg_size, dtype=np.int64)
    seg_first = np.array(seg_at, dtype=np.int64)
    total = int(sizes.sum())
    seg_start = np.zeros(len(sizes), dtype=np.int64)
    np.cumsum(sizes[:-1], out=seg_start[1:])
    position = np.arange(total, dtype=np.int64) + np.repeat(seg_first - seg_start, sizes)
    steps = varints[position]
    zigzag = varints[seg_first]
    steps[seg_start] = (zigzag >> 1) ^ -(zigzag & 1)
    # Keys are running sums of the steps within each run: subtracting the previous run's
    # total at each run's start makes one cumulative sum restart there.
    if len(seg_start) > 1:
        run_sums = np.add.reduceat(steps, seg_start)
        steps[seg_start[1:]] -= run_sums[:-1]
    keys = np.cumsum(steps)
    owner = np.concatenate(
        [
            np.repeat(np.array(seg_owner, dtype=np.int64), sizes),
            np.array(zero_owner, dtype=np.int64),
        ]
    )
    order = np.argsort(owner, kind="stable")
    return SketchBins(
        owner[order],
        np.concatenate(
            [
                np.repeat(np.array(seg_sign, dtype=np.int64), sizes),
                np.zeros(len(zero_owner), dtype=np.int64),
            ]
        )[order],
        np.concatenate([keys, np.zeros(len(zero_owner), dtype=np.int64)])[order],
        np.concatenate(
            [varints[position + np.repeat(sizes, sizes)], np.array(zero_count, dtype=np.int64)]
        )[order],
        minimum,
        maximum,
        accuracy if accuracy is not None else 0.01,
        max_bins,
    )


def merged_quantiles(
    bins: SketchBins,
    cell_sketches: Sequence[npt.NDArray[np.int64]],
    qs: Sequence[float],
) -> npt.NDArray[np.float64]:
    """Quantiles of the merge of the sketches listed for each cell: ``out[q, cell]``, as
    ``QuantileSketch.merge`` then ``quantiles`` would give (NaN for an empty cell)."""
    cells = len(cell_sketches)
    out = np.full((len(qs), cells), np.nan)
    if not cells or not len(bins.sketch):
        return out
    per_sketch = np.bincount(bins.sketch, minlength=len(bins.minimum))
    sketch_start = np.concatenate([[0], np.cumsum(per_sketch)[:-1]])
    member_cell = np.repeat(np.arange(cells), [len(m) for m in cell_sketches])
    members = np.concatenate(cell_sketches).astype(np.int64)
    sizes = per_sketch[members]
    bucket = np.arange(int(sizes.sum()), dtype=np.int64) + np.repeat(
        sketch_start[members] - np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes
    )
    cell = np.repeat(member_cell, sizes)
    sign, key, count = bins.sign[bucket], bins.key[bucket], bins.counts[bucket]
    key = _fold(cell, sign, key, bins.max_bins)
    order = np.lexsort((sign * key, sign, cell))
    cell, sign, key, count = cell[order], sign[order], key[order], count[order]
    new = np.ones(len(cell), dtype=bool)
    new[1:] = (cell[1:] != cell[:-1]) | (sign[1:] != sign[:-1]) | (key[1:] != key[:-1])
    runs = np.flatnonzero(new)
    cell, sign, key = cell[runs], sign[runs], key[runs]
    count = np.add.reduceat(count, runs)
    total = np.bincount(cell, weights=count, minlength=cells)
    low = np.full(cells, np.inf)
    high = np.full(cells, -np.inf)
    np.minimum.at(low, member_cell, bins.minimum[members])
    np.maximum.at(high, member_cell, bins.maximum[members])
    log_gamma = math.log((1 + bins.relative_accuracy) / (1 - bins.relative_accuracy))
    value = np.where(sign == 0, 0.0, sign * np.exp(key * log_gamma) * (1 - bins.relative_accuracy))
    cumulative = np.cumsum(count)
    before = np.concatenate([[0.0], np.bincount(cell, weights=count, minlength=cells).cumsum()])
    for qi, q in enumerate(qs):
        if q == 0.0:
            out[qi] = low
        elif q == 1.0:
            out[qi] = high
        else:
            # The first bucket whose cumulative count passes rank q * (count - 1).
            target = before[:-1] + q * (total - 1)
            index = np.searchsorted(cumulative, target, side="right").clip(0, len(value) - 1)
            out[qi] = np.minimum(np.maximum(value[index], low), high)
    out[:, total == 0] = np.nan
    return out


def _fold(
    cell: npt.NDArray[np.int64],
    sign: npt.NDArray[np.int64],
    key: npt.NDArray[np.int64],
    max_bins: int,
) -> npt.NDArray[np.int64]:
    """Fold the lowest keys of a (cell, sign) past ``max_bins`` distinct ones into the
    lowest kept key, as the sketch's bounded store does."""
    if not max_bins or len(key) <= max_bins:
        return key
    order = np.lexsort((key, sign, cell))
    c, s, k = cell[order], sign[order], key[order]
    group_change = np.ones(len(k), dtype=bool)
    group_change[1:] = (c[1:] != c[:-1]) | (s[1:] != s[:-1])
    distinct = np.ones(len(k), dtype=bool)
    distinct[1:] = group_change[1:] | (k[1:] != k[:-1])
    group = np.cumsum(group_change) - 1
    rank = np.cumsum(distinct) - 1
    rank -= rank[np.flatnonzero(group_change)][group]
    size = np.bincount(group, weights=distinct).astype(np.int64)
    excess = size[group] - max_bins
    if (excess <= 0).all():
        return key
    floor_rank = np.maximum(excess, 0)
    folded = k.copy()
    # The kept floor key of each group: the key of distinct rank ``excess`` in it.
    floor_key = np.zeros(len(size), dtype=np.int64)
    at_floor = distinct & (rank == floor_rank)
    floor_key[group[at_floor]] = k[at_floor]
    fold = rank < floor_rank
    folded[fold] = floor_key[group[fold]]
    out = np.empty_like(key)
    out[order] = folded
    return out
