"""Rollups equal a recomputation from the raw samples; sketches stay within 1%; late
samples are folded in; retention deletes each tier at its age."""

from __future__ import annotations

import calendar
import datetime as dt
import math
import sqlite3

import numpy as np
import pytest
from tsdb_reference import T0, US, Series, exact_increase, seeded_series, write_all

from tachimeter.metrics import QuantileSketch
from tachimeter.store.rollups import period_end, period_start, roll_up, run_timeseries_retention
from tachimeter.store.timeseries import TimeSeriesStore

UTC = dt.UTC
HOUR = 3600 * US
DAY = 24 * HOUR


def _rows(conn: sqlite3.Connection, period_type: str) -> dict[tuple[str, str, int], tuple]:
    out = {}
    for row in conn.execute(
        "SELECT name, tags, period_start_us, count, sum, min, max, avg, last, last_ts_us, p50, "
        "p90, p99, sketch FROM metric_aggregates WHERE period_type = ?",
        (period_type,),
    ):
        out[(row[0], row[1], row[2])] = row[3:]
    return out


def _key(s: Series) -> tuple[str, str]:
    import json

    return s.name, json.dumps(s.labels, sort_keys=True, separators=(",", ":"))


def _expected(s: Series, start: int, end: int) -> tuple | None:
    """count, sum (increase for counters), min, max, avg, last, last_ts of [start, end)."""
    mask = (s.ts >= start) & (s.ts < end)
    if not mask.any():
        return None
    values = s.values[mask]
    if s.kind == "counter":
        total = exact_increase(s.ts, s.values, start, end)
    else:
        total = float(values.sum())
    return (
        int(mask.sum()),
        total,
        float(values.min()),
        float(values.max()),
        float(values.mean()),
        float(values[-1]),
        int(s.ts[mask][-1]),
    )


def _check(rows: dict, series: list[Series], period_type: str, starts: list[int]) -> int:
    checked = 0
    for s in series:
        name, tags = _key(s)
        for start in starts:
            want = _expected(s, start, period_end(start, period_type))  # type: ignore[arg-type]
            got = rows.get((name, tags, start))
            if want is None:
                assert got is None
                continue
            assert got is not None, (name, tags, start)
            assert got[0] == want[0]
            assert got[1] == pytest.approx(want[1], rel=1e-12, abs=1e-9)
            assert got[2:4] == want[2:4]
            assert got[4] == pytest.approx(want[4], rel=1e-12)
            assert got[5:7] == want[5:7]
            checked += 1
    return checked


def test_hourly_rows_equal_a_recomputation_from_raw_samples(tsdb: TimeSeriesStore) -> None:
    """Per series and hour: count, min, max, avg and last exactly; sum is the
    reset-aware increase for counters (a sample's rise from the one before it, across
    hour boundaries), the plain sum for gauges, observations and delta counters."""
    series = seeded_series(seed=11, hours=6)
    write_all(tsdb, series)
    tsdb.compact(now=dt.datetime(2026, 1, 1, 3, tzinfo=UTC))  # chunks and head mixed
    result = roll_up(tsdb.connection, now=dt.datetime(2026, 1, 2, tzinfo=UTC))
    assert result.complete_until == dt.datetime(2026, 1, 1, 23, 55, tzinfo=UTC).replace(minute=0)
    hours = [T0 + h * HOUR for h in range(7)]
    assert _check(_rows(tsdb.connection, "hourly"), series, "hourly", hours) > 100
    assert _check(_rows(tsdb.connection, "daily"), series, "daily", [T0]) == len(series)


def test_coarse_rows_merge_exactly_across_days_weeks_and_months() -> None:
    """Daily, weekly (Monday 00:00 UTC) and monthly rows equal the direct computation over
    their whole period, across a month boundary."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    from tachimeter.store.migrator import Migrator

    Migrator(conn).up()
    tsdb = TimeSeriesStore(conn)
    rng = np.random.default_rng(5)
    start = int(dt.datetime(2026, 1, 26, tzinfo=UTC).timestamp()) * US  # a Monday
    ts = start + np.arange(0, 14 * 288) * 300 * US + rng.integers(0, 5000, 14 * 288) * 1000
    counter = np.cumsum(rng.poisson(7, len(ts))).astype(float)
    counter[2000:] -= counter[1999]
    gauge = np.round(rng.normal(50, 10, len(ts)), 2)
    series = [
        Series("c_total", {}, "counter", ts, counter),
        Series("g", {"k": "v"}, "gauge", ts, gauge),
    ]
    write_all(tsdb, series)
    roll_up(conn, now=dt.datetime(2026, 3, 1, tzinfo=UTC))
    days = [start + d * DAY for d in range(14)]
    weeks = [start, start + 7 * DAY]
    months = [period_start(start, "monthly"), period_start(start + 10 * DAY, "monthly")]
    assert months[1] == int(dt.datetime(2026, 2, 1, tzinfo=UTC).timestamp()) * US
    assert period_end(months[0], "monthly") == months[1]
    assert calendar.monthrange(2026, 1)[1] == 31
    assert _check(_rows(conn, "daily"), series, "daily", days) == 28
    assert _check(_rows(conn, "weekly"), series, "weekly", weeks) == 4
    assert _check(_rows(conn, "monthly"), series, "monthly", months) == 4


def test_sketch_percentiles_are_within_one_percent_of_exact(tsdb: TimeSeriesStore) -> None:
    """p50/p90/p99 of observation series from hourly, daily and merged sketches are within
    1% of the exact sample quantile (the sketch answers the sample of rank q * (n - 1))."""
    series = [s for s in seeded_series(seed=12, hours=6) if s.kind in ("histogram", "gauge")]
    write_all(tsdb, series)
    roll_up(tsdb.connection, now=dt.datetime(2026, 1, 2, tzinfo=UTC))
    conn = tsdb.connection
    checked = 0
    for period_type, length in (("hourly", HOUR), ("daily", DAY)):
        for (name, tags, start), row in _rows(conn, period_type).items():
            s = next(x for x in series if _key(x) == (name, tags))
            values = s.values[(s.ts >= start) & (s.ts < start + length)]
            exact = np.quantile(values, [0.5, 0.9, 0.99], method="lower")
            for got, want in zip(row[7:10], exact, strict=True):
                assert abs(got - want) <= 0.01 * abs(want) + 1e-12
            checked += 1
    merged = QuantileSketch()
    latency = [s for s in series if s.name == "tool_latency_seconds"]
    for (name, _tags, _start), row in _rows(conn, "hourly").items():
        if name == "tool_latency_seconds":
            merged.merge(QuantileSketch.from_bytes(row[10]))
    allv = np.concatenate([s.values for s in latency])
    for q in (0.5, 0.9, 0.99, 0.999):
        want = np.quantile(allv, q, method="lower")
        assert abs(merged.quantile(q) - want) <= 0.01 * want
    assert merged.count == len(allv) and merged.max == allv.max() and merged.min == allv.min()
    assert checked > 40


def test_incremental_and_late_samples_give_the_same_rows_as_one_pass(tsdb: TimeSeriesStore) -> None:
    """Rolling up as time passes, with samples arriving late into hours already rolled up
    (including one that changes the next hour's first increase), ends with the rows one
    roll-up over all the data computes."""
    series = seeded_series(seed=13, hours=6)
    late: list[tuple[Series, np.ndarray]] = []
    rng = np.random.default_rng(0)
    for s in series:
        held = rng.random(len(s.ts)) < 0.02
        held[0] = False
        late.append((s, held))
        tsdb.write_samples(
            s.name,
            s.labels,
            s.ts[~held],
            s.values[~held],
            metric_type=s.metric_type,
            temporality=s.temporality,
        )  # type: ignore[arg-type]
        if s.name == "http_requests_total":
            break
    for hour in (2, 4):
        roll_up(tsdb.connection, now=dt.datetime(2026, 1, 1, hour, 10, tzinfo=UTC))
    for s, held in late:
        tsdb.write_samples(
            s.name,
            s.labels,
            s.ts[held],
            s.values[held],
            metric_type=s.metric_type,
            temporality=s.temporality,
        )  # type: ignore[arg-type]
    for s in series[len(late) :]:
        write_all(tsdb, [s])
    assert tsdb.connection.execute("SELECT count(*) FROM metric_rollup_dirty").fetchone()[0] > 0
    roll_up(tsdb.connection, now=dt.datetime(2026, 1, 2, tzinfo=UTC))
    assert tsdb.connection.execute("SELECT count(*) FROM metric_rollup_dirty").fetchone()[0] == 0
    hours = [T0 + h * HOUR for h in range(7)]
    _check(_rows(tsdb.connection, "hourly"), series, "hourly", hours)
    _check(_rows(tsdb.connection, "daily"), series, "daily", [T0])
    again = roll_up(tsdb.connection, now=dt.datetime(2026, 1, 2, tzinfo=UTC))
    assert again.hourly_rows == 0


def test_retention_deletes_each_tier_at_its_age(tsdb: TimeSeriesStore) -> None:
    """Raw data goes by whole windows after ``metrics`` days; a rollup row goes once its
    whole period is older than its tier's retention; nothing younger is touched."""
    conn = tsdb.connection
    ts = T0 + np.arange(0, 40 * 24) * HOUR  # hourly samples for 40 days
    tsdb.write_samples("g", {}, ts, np.arange(len(ts), dtype=float))
    now = dt.datetime(2026, 2, 10, tzinfo=UTC)
    tsdb.compact(now=now)
    roll_up(conn, now=now)
    days = {
        "metrics": 3,
        "metric_aggregates_hourly": 10,
        "metric_aggregates_daily": 20,
        "metric_aggregates_weekly": 30,
        "metric_aggregates_monthly": 30,
    }
    result = run_timeseries_retention(conn, days, now=now)
    now_us = int(now.timestamp()) * US
    oldest_raw = tsdb.read([1], -(2**62), 2**62).timestamps.min()
    assert now_us - 3 * DAY - 2 * HOUR <= oldest_raw <= now_us - 3 * DAY
    for period_type, keep in (("hourly", 10), ("daily", 20), ("weekly", 30)):
        starts = [
            r[0]
            for r in conn.execute(
                "SELECT period_start_us FROM metric_aggregates WHERE period_type = ?",
                (period_type,),
            )
        ]
        ends = [period_end(s, period_type) for s in starts]  # type: ignore[arg-type]
        assert min(ends) > now_us - keep * DAY
        assert min(starts) <= now_us - keep * DAY  # the period straddling the cutoff stays
    months = [
        r[0]
        for r in conn.execute(
            "SELECT period_start FROM metric_aggregates WHERE period_type = 'monthly'"
        )
    ]
    assert months == ["2026-01-01T00:00:00.000000Z", "2026-02-01T00:00:00.000000Z"]
    assert result.chunks > 0 and result.aggregates["hourly"] > 0
    assert run_timeseries_retention(conn, days, now=now).chunks == 0


def test_retention_settings_are_validated() -> None:
    from tachimeter.errors import StoreError

    conn = sqlite3.connect(":memory:")
    with pytest.raises(StoreError, match="retention"):
        run_timeseries_retention(conn, {"metrics": 0})
    with pytest.raises(StoreError, match="retention"):
        run_timeseries_retention(conn, {"nope": 3})
    assert math.isfinite(1.0)
