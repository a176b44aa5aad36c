"""The time-series store: series index, head, spec 355's metrics view, compaction,
backfill, registry snapshots and the event projection."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from tsdb_reference import T0, US, seeded_series, write_all

from tachimeter.errors import StoreError
from tachimeter.metrics import Registry
from tachimeter.model.data import BusinessEventData, BusinessMetricType, PerformanceEventData
from tachimeter.model.events import AnalyticsEvent
from tachimeter.model.rows import MetricBuilder, MetricType
from tachimeter.model.timestamps import from_ns
from tachimeter.store import SQLiteStore, StoreSink
from tachimeter.store import chunks as chunk_codec
from tachimeter.store.migrator import Migrator
from tachimeter.store.timeseries import (
    EventMetricsProjection,
    ImportedSeries,
    TimeSeriesStore,
    canonical_labels,
)
from tachimeter.testing import collector_for_tests

UTC = dt.UTC
DAY_AFTER = dt.datetime(2026, 1, 2, tzinfo=UTC)


def _all_samples(tsdb: TimeSeriesStore) -> dict[int, list[tuple[int, float]]]:
    ids = [s.id for s in tsdb.series()]
    data = tsdb.read(ids, -(2**62), 2**62)
    out: dict[int, list[tuple[int, float]]] = {}
    for i, sid in enumerate(data.series_ids.tolist()):
        a, b = int(data.offsets[i]), int(data.offsets[i + 1])
        out[sid] = list(zip(data.timestamps[a:b].tolist(), data.values[a:b].tolist(), strict=True))
    return out


def test_metric_points_land_in_series_with_canonical_labels(tsdb: TimeSeriesStore) -> None:
    """MetricBuilder points (spec 355) become series keyed by name + sorted-label JSON; a
    counter point is an increment (delta temporality); first/last seen widen."""
    a = (
        MetricBuilder.timer("api.request.duration", 12.5)
        .tag("status", 200)
        .tag("endpoint", "/run")
        .build()
    )
    b = MetricBuilder.counter("missions.created", 1).build()
    assert tsdb.write([a, b]) == 2
    series = {s.name: s for s in tsdb.series()}
    timer = series["api.request.duration"]
    assert timer.labels == {"endpoint": "/run", "status": "200"}
    assert (timer.metric_type, timer.unit) == ("timer", "ms")
    assert series["missions.created"].is_delta
    row = tsdb.connection.execute(
        "SELECT labels FROM metric_series WHERE name = 'api.request.duration'"
    ).fetchone()
    assert (
        row[0]
        == canonical_labels({"status": "200", "endpoint": "/run"})
        == ('{"endpoint":"/run","status":"200"}')
    )
    early = (
        MetricBuilder.timer("api.request.duration", 3.0).tag("endpoint", "/run").tag("status", 200)
    )
    point = early.build()
    older = type(point)(
        **{
            **{f: getattr(point, f) for f in point.__struct_fields__},
            "timestamp": from_ns(T0 * 1000),
        }
    )
    tsdb.write([older])
    refreshed = tsdb.series(["api.request.duration"])[0]
    assert refreshed.first_seen == "2026-01-01T00:00:00.000000Z"
    assert refreshed.last_seen == timer.last_seen


def test_spec_355_metrics_table_stays_readable_and_writable(tsdb: TimeSeriesStore) -> None:
    """``metrics`` is a view with spec 355's columns over the head, and a spec-shaped
    INSERT (positional, as MetricPoint.to_row gives it) files the point into the series."""
    conn = tsdb.connection
    point = MetricBuilder.gauge("users.active", 7).tag("plan", "pro").build()
    conn.execute("INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?, ?)", point.to_row())
    conn.execute(
        "INSERT INTO metrics (id, name, metric_type, value, timestamp) "
        "VALUES ('x', 'missions.created', 'counter', 2, '2026-01-01 00:00:05')"
    )
    conn.execute(
        "INSERT INTO metrics (id, name, metric_type, value, timestamp) "
        "VALUES ('y', 'missions.created', 'counter', 3, '2026-01-01T00:00:05.000000Z')"
    )
    rows = conn.execute(
        "SELECT name, metric_type, value, timestamp, tags, unit FROM metrics ORDER BY name"
    ).fetchall()
    assert rows[0] == (
        "missions.created",
        "counter",
        5.0,
        "2026-01-01T00:00:05.000000Z",
        None,
        None,
    )
    assert rows[1][:3] == ("users.active", "gauge", 7.0)
    assert rows[1][3] == point.to_row()[4]
    assert rows[1][4] == '{"plan":"pro"}'
    assert [s.name for s in tsdb.series()] == ["users.active", "missions.created"]


def test_existing_spec_355_rows_move_into_the_series_store(tmp_path: Path) -> None:
    """Points written to spec 355's table before migration 3 are kept, and migration 3
    reverts to the table with the head's points."""
    conn = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    migrator = Migrator(conn)
    migrator.up(2)
    conn.execute(
        "INSERT INTO metrics VALUES ('a', 'cpu', 'gauge', 0.5, '2026-01-01T00:00:00.250000Z', "
        "'{\"host\":\"h1\"}', '%')"
    )
    migrator.up()
    assert conn.execute("SELECT name, value, timestamp, tags FROM metrics").fetchall() == [
        ("cpu", 0.5, "2026-01-01T00:00:00.250000Z", '{"host":"h1"}')
    ]
    migrator.down(2)
    assert conn.execute("SELECT name, value, tags, unit FROM metrics").fetchall() == [
        ("cpu", 0.5, '{"host":"h1"}', "%")
    ]
    assert conn.execute("SELECT type FROM sqlite_master WHERE name = 'metrics'").fetchone() == (
        "table",
    )


def test_same_microsecond_gauges_replace_and_delta_counters_add(tsdb: TimeSeriesStore) -> None:
    tsdb.write_samples("g", {}, [T0, T0], [1.0, 2.0])
    tsdb.write_samples("d", {}, [T0], [1.0], metric_type="counter", temporality="delta")
    tsdb.write_samples("d", {}, [T0], [4.0], metric_type="counter", temporality="delta")
    values = {s.name: v for s, v in zip(tsdb.series(), _all_samples(tsdb).values(), strict=True)}
    assert values == {"g": [(T0, 2.0)], "d": [(T0, 5.0)]}


def test_compaction_moves_closed_windows_and_reads_are_unchanged(tsdb: TimeSeriesStore) -> None:
    """Compacting changes where samples live, never what a read returns; it is
    incremental (open windows stay in the head) and running it twice changes nothing."""
    series = seeded_series(seed=1, hours=6)
    write_all(tsdb, series)
    before = _all_samples(tsdb)
    now = dt.datetime(2026, 1, 1, 4, 3, tzinfo=UTC)  # windows 00-02 closed, 02-04 in grace
    first = tsdb.compact(now=now)
    assert first.chunks > 0 and first.samples > 0
    stats = tsdb.storage_stats()
    head_ts = tsdb.connection.execute("SELECT min(ts) FROM metric_points").fetchone()[0]
    assert head_ts >= T0 + 2 * 3600 * US
    assert stats["chunk_samples"] == first.samples
    assert _all_samples(tsdb) == before
    assert tsdb.compact(now=now).chunks == 0
    tsdb.compact(now=DAY_AFTER)
    assert tsdb.storage_stats()["head_points"] == 0
    assert _all_samples(tsdb) == before


def test_a_failed_compaction_leaves_head_and_chunks_as_they_were(
    tsdb: TimeSeriesStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk and the deletion of its head rows commit together: a crash half-way (here
    an error on the third frame) rolls back the frames already written too."""
    write_all(tsdb, seeded_series(seed=2, hours=4))
    before = _all_samples(tsdb)
    real = chunk_codec.encode_chunk
    calls = {"n": 0}

    def failing(*args: object, **kwargs: object) -> bytes:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("tachimeter.store.timeseries.encode_chunk", failing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        tsdb.compact(now=DAY_AFTER)
    assert tsdb.storage_stats()["chunks"] == 0
    assert _all_samples(tsdb) == before
    monkeypatch.setattr("tachimeter.store.timeseries.encode_chunk", real)
    tsdb.compact(now=DAY_AFTER)
    assert _all_samples(tsdb) == before


def test_late_samples_after_compaction_are_merged_and_win(tsdb: TimeSeriesStore) -> None:
    """A sample arriving after its window was compacted lands in the head, then in an
    extra chunk; reads merge both, and a rewrite of an existing timestamp wins."""
    ts = T0 + np.arange(100) * 15 * US
    tsdb.write_samples("g", {"k": "v"}, ts, np.arange(100.0))
    tsdb.compact(now=DAY_AFTER)
    tsdb.write_samples("g", {"k": "v"}, [int(ts[10]) + 1, int(ts[20])], [-1.0, -2.0])
    expected = [(int(t), float(v)) for t, v in zip(ts, np.arange(100.0), strict=True)]
    expected[20] = (int(ts[20]), -2.0)
    expected.insert(11, (int(ts[10]) + 1, -1.0))
    (got,) = _all_samples(tsdb).values()
    assert got == expected
    tsdb.compact(now=DAY_AFTER)
    assert tsdb.storage_stats()["chunks"] == 2
    (got,) = _all_samples(tsdb).values()
    assert got == expected


def test_backfill_writes_chunks_directly_and_reads_back(tsdb: TimeSeriesStore) -> None:
    series = seeded_series(seed=3, hours=5)
    now = dt.datetime(2026, 1, 1, 4, 30, tzinfo=UTC)
    result = tsdb.import_series(
        ImportedSeries(
            name=s.name,
            labels=s.labels,
            timestamps_us=s.ts,
            values=s.values,
            metric_type=s.metric_type,
            temporality=s.temporality,
        )  # type: ignore[arg-type]
        for s in series
    )
    assert result.chunks > 0
    other = TimeSeriesStore(sqlite3.connect(":memory:", isolation_level=None))
    Migrator(other.connection).up()
    write_all(other, series)
    assert _all_samples(tsdb) == _all_samples(other)
    assert tsdb.storage_stats()["head_points"] == 0
    del now


def test_write_families_stores_a_registry_scrape(tsdb: TimeSeriesStore) -> None:
    """Counters and histogram parts become cumulative counters named as exposed
    (``_total``, ``_bucket``...), gauges stay gauges, ``_created`` is left out."""
    registry = Registry()
    registry.counter("jobs", "Jobs", ["queue"]).labels("q1").inc(3)
    registry.gauge("depth", "Depth").set(4)
    registry.histogram("latency_seconds", "Latency", buckets=[0.1, 1.0]).observe(0.5)
    at = dt.datetime(2026, 1, 1, tzinfo=UTC)
    tsdb.write_families(registry.collect(), at=at)
    kinds = {s.name: (s.metric_type, s.temporality, s.labels) for s in tsdb.series()}
    assert kinds["jobs_total"] == ("counter", "cumulative", {"queue": "q1"})
    assert kinds["depth"][0] == "gauge"
    assert kinds["latency_seconds_bucket"][0] == "counter"
    assert {"latency_seconds_count", "latency_seconds_sum"} <= set(kinds)
    assert not any(name.endswith("_created") for name in kinds)
    buckets = {s.labels["le"]: s.id for s in tsdb.series(["latency_seconds_bucket"])}
    data = tsdb.read([buckets["0.1"], buckets["1.0"], buckets["+Inf"]], T0, T0)
    assert data.values.tolist() == [0.0, 1.0, 1.0]


def test_event_projection_writes_points_in_the_event_transaction(tmp_path: Path) -> None:
    """Performance and business events written through the store become samples in the
    same transaction; replayed events (same ids) are not counted twice."""
    events = [
        AnalyticsEvent.new(
            "response_latency",
            PerformanceEventData(
                metric="latency", value=12.5, unit="ms", tags={"endpoint": "/run"}
            ),
        ),
        AnalyticsEvent.new(
            "tokens_consumed",
            BusinessEventData(
                metric_type=BusinessMetricType.INPUT_TOKENS,
                value=1500,
                unit="tokens",
                model="claude-sonnet-4",
            ),
        ),
        AnalyticsEvent.new(
            "quota_checked",
            BusinessEventData(
                metric_type=BusinessMetricType.QUOTA_REMAINING, value=10, unit="requests"
            ),
        ),
        AnalyticsEvent.new("feature_used", {"feature": "search"}),
    ]
    projection = EventMetricsProjection()
    with SQLiteStore(tmp_path / "a.db") as store:
        store.write_batch(events, projections=[projection])
        store.write_batch(events, projections=[projection])
        tsdb = TimeSeriesStore(store)
        try:
            series = {s.name: s for s in tsdb.series()}
            assert set(series) == {"latency", "business_input_tokens", "business_quota_remaining"}
            assert series["latency"].metric_type == "timer"
            assert series["business_input_tokens"].labels == {"model": "claude-sonnet-4"}
            assert series["business_input_tokens"].is_delta
            assert series["business_quota_remaining"].metric_type == "gauge"
            values = _all_samples(tsdb)
            assert values[series["business_input_tokens"].id][0][1] == 1500.0
            before = _all_samples(tsdb)
            conn = tsdb.connection
            conn.execute("BEGIN IMMEDIATE")
            projection.rebuild(conn)
            conn.execute("COMMIT")
            assert _all_samples(tsdb) == before
        finally:
            tsdb.close()


def test_store_sink_with_the_projection_charts_tracked_tokens(tmp_path: Path) -> None:
    """Through the collector: a token count tracked as an event can be read as a metric."""
    sink = StoreSink.open(tmp_path / "b.db", projections=[EventMetricsProjection()])
    with collector_for_tests(sink) as collector:
        for value in (100, 250):
            collector.track(
                "tokens_consumed",
                BusinessEventData(
                    metric_type=BusinessMetricType.OUTPUT_TOKENS,
                    value=value,
                    unit="tokens",
                    model="m",
                ),
            )
        assert collector.flush()
        tsdb = TimeSeriesStore(sink.store)
        try:
            (info,) = tsdb.series(["business_output_tokens"])
            data = tsdb.read([info.id], -(2**62), 2**62)
            assert sorted(data.values.tolist()) == [100.0, 250.0]
        finally:
            tsdb.close()


def test_bad_arguments_raise_store_errors(tsdb: TimeSeriesStore) -> None:
    with pytest.raises(StoreError, match="window_seconds"):
        TimeSeriesStore(tsdb.connection, window_seconds=7000)
    with pytest.raises(StoreError, match="one length"):
        tsdb.write_samples("x", {}, [1, 2], [1.0])
    with pytest.raises(StoreError, match=r"sqlite3\.Connection or a SQLiteStore"):
        TimeSeriesStore(object())
    assert MetricType.GAUGE.value == "gauge"
