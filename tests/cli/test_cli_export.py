"""``tachimeter export``: round trips against the stored rows (CSV, JSON lines, Parquet),
OpenMetrics checked by prometheus_client's parser (and promtool when installed), time
ranges and filters, and memory that does not grow with the number of rows."""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import shutil
import sqlite3
import subprocess
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from report_world import START, fill_store
from typer.testing import CliRunner

from tachimeter.cli import app
from tachimeter.collect.sinks import JsonlFileSink
from tachimeter.export import export
from tachimeter.export.tables import metrics_table, select_series, series_blocks
from tachimeter.model.codec import decode_event
from tachimeter.model.data import UsageEventData
from tachimeter.model.event_types import EventType
from tachimeter.model.events import AnalyticsEvent, EventBatch
from tachimeter.model.ids import uuid7_from_ns
from tachimeter.model.rows import event_to_row
from tachimeter.model.timestamps import format_timestamp, from_ns, to_ns
from tachimeter.store.sqlite import SQLiteStore
from tachimeter.store.timeseries import find_series, read_samples

runner = CliRunner()

EVENT_COLUMNS = (
    "id, event_type, event_name, timestamp, session_id, user_id, properties, context, "
    "page_url, referrer, category, priority, mission_id"
)
SINCE = START + dt.timedelta(days=3, hours=7)
UNTIL = START + dt.timedelta(days=8, hours=1)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fill_store(tmp_path_factory.mktemp("export") / "world.db")


def _cli(*args: str) -> Any:
    return runner.invoke(app, ["export", *args])


def _ok(*args: str) -> Any:
    done = _cli(*args)
    assert done.exit_code == 0, done.output
    return done


def _export_range(world: Path, what: str, fmt: str, out: Path) -> None:
    """Export ``what`` of ``[SINCE, UNTIL)`` from the world store to ``out`` as ``fmt``."""
    rng = ["--since", SINCE.isoformat(), "--until", UNTIL.isoformat()]
    _ok("--store", str(world), "--what", what, *rng, "-f", fmt, "-o", str(out))


def _when(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _stored_events(world: Path) -> list[tuple[Any, ...]]:
    """Every event row, in time order (ties by name, then insertion)."""
    conn = sqlite3.connect(world)
    rows = conn.execute(f"SELECT rowid, {EVENT_COLUMNS} FROM analytics_events").fetchall()
    conn.close()
    rows.sort(key=lambda r: (r[4], r[3], r[0]))
    return [r[1:] for r in rows]


def _csv_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        lines = list(csv.reader(f))
    return lines[0], lines[1:]


def _as_csv(row: tuple[Any, ...]) -> list[str]:
    return ["" if v is None else str(v) for v in row]


@pytest.mark.parametrize(
    ("filters", "keep"),
    [
        ([], lambda r: True),
        (
            ["--since", SINCE.isoformat(), "--until", UNTIL.isoformat()],
            lambda r: SINCE <= _when(r[3]) < UNTIL,
        ),
        (["--event", "error_occurred"], lambda r: r[2] == "error_occurred"),
        (
            ["--event", "tool_invoked", "--event", "feature_used", "--since", SINCE.isoformat()],
            lambda r: r[2] in ("tool_invoked", "feature_used") and _when(r[3]) >= SINCE,
        ),
    ],
)
def test_csv_of_events_equals_the_stored_rows(
    world: Path, tmp_path: Path, filters: list[str], keep: Any
) -> None:
    out = tmp_path / "events.csv"
    done = _ok("--store", str(world), "--what", "events", *filters, "--out", str(out))
    header, rows = _csv_rows(out)
    assert header == [c.strip() for c in EVENT_COLUMNS.split(",")]
    expected = [_as_csv(r) for r in _stored_events(world) if keep(r)]
    assert rows == expected and len(rows) > 50
    assert f"exported {len(rows):,} events" in done.stderr


def test_jsonl_events_are_the_sink_shape_and_ingest_back_to_the_same_rows(
    world: Path, tmp_path: Path
) -> None:
    out = tmp_path / "events.jsonl"
    _ok("--store", str(world), "--what", "events", "--since", SINCE.isoformat(), "-o", str(out))
    lines = out.read_bytes().splitlines()
    events = [decode_event(line) for line in lines]
    # The JSONL sink's shape: the same fields, and the sink's lines of these events decode
    # to the same events.
    sink = JsonlFileSink(tmp_path / "sink.jsonl")
    sink.process(EventBatch.new(events, 0))
    sink.close()
    sunk = (tmp_path / "sink.jsonl").read_bytes().splitlines()
    assert [decode_event(line) for line in sunk] == events
    wire = set().union(*(json.loads(line) for line in sunk)) | {"call", "priority"}
    assert all(set(json.loads(line)) <= wire for line in lines)
    # Ingested into a new store they are the same rows.
    with SQLiteStore(tmp_path / "again.db") as again:
        assert again.write_batch(events).inserted == len(events)
    spec = "id, event_type, event_name, timestamp, session_id, user_id, properties, context, "
    spec += "page_url, referrer"
    query = f"SELECT {spec} FROM analytics_events WHERE timestamp >= ? ORDER BY id"
    original = sqlite3.connect(world).execute(query, (format_timestamp(SINCE),)).fetchall()
    copied = sqlite3.connect(tmp_path / "again.db").execute(query, ("",)).fetchall()

    def parsed(row: tuple[Any, ...]) -> tuple[Any, ...]:
        # JSON compared as values: a stored 3616 comes back as the model's float 3616.0.
        return (*row[:6], json.loads(row[6] or "null"), json.loads(row[7]), *row[8:])

    assert [parsed(r) for r in copied] == [parsed(r) for r in original]
    assert len(copied) == len(lines) > 100


def test_parquet_holds_the_rows_typed(world: Path, tmp_path: Path) -> None:
    out = tmp_path / "events.parquet"
    _ok("--store", str(world), "--what", "events", "--format", "parquet", "-o", str(out))
    table = pq.read_table(out)
    assert str(table.schema.field("timestamp").type) == "timestamp[us, tz=UTC]"
    got = table.to_pylist()
    expected = _stored_events(world)
    assert len(got) == len(expected)
    names = [c.strip() for c in EVENT_COLUMNS.split(",")]
    for row, stored in zip(got, expected, strict=True):
        row["timestamp"] = format_timestamp(row["timestamp"])
        assert tuple(row[n] for n in names) == stored
    assert pq.ParquetFile(out).metadata.num_row_groups == -(-len(expected) // 5000)


def _missions(world: Path) -> tuple[list[str], list[tuple[Any, ...]]]:
    conn = sqlite3.connect(world)
    cursor = conn.execute("SELECT * FROM missions ORDER BY created_at, mission_key")
    names = [d[0] for d in cursor.description]
    rows = cursor.fetchall()
    conn.close()
    return names, rows


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_missions_of_a_range_equal_the_missions_table(
    world: Path, tmp_path: Path, fmt: str
) -> None:
    out = tmp_path / f"missions.{fmt}"
    _export_range(world, "missions", fmt, out)
    names, rows = _missions(world)
    created = names.index("created_at")
    wanted = [dict(zip(names, r, strict=True)) for r in rows if SINCE <= _when(r[created]) < UNTIL]
    assert len(wanted) > 20
    if fmt == "csv":
        header, got_csv = _csv_rows(out)
        expected_csv = []
        for w in wanted:
            cells = []
            for c in header:
                v = w[c]
                if c == "error_recoverable" and v is not None:
                    v = "true" if v else "false"
                cells.append("" if v is None else str(v))
            expected_csv.append(cells)
        assert got_csv == expected_csv
        assert "mission_key" not in header and "status_seq" not in header
        return
    if fmt == "jsonl":
        got = [json.loads(line) for line in out.read_text().splitlines()]
    else:
        got = pq.read_table(out).to_pylist()
    assert len(got) == len(wanted)
    for g, w in zip(got, wanted, strict=True):
        for column, value in g.items():
            stored = w[column]
            if column == "tags":  # JSON: decoded in JSON lines, its text in Parquet
                assert value == (json.loads(stored) if fmt == "jsonl" else stored)
            elif isinstance(value, dt.datetime):
                assert format_timestamp(value) == stored
            elif column == "error_recoverable" and stored is not None:
                assert value is bool(stored)
            else:
                assert value == stored, column


def _stored_samples(world: Path, lo: int, hi: int) -> list[tuple[str, str, int, float]]:
    """(name, labels, ts_us, value) of every stored sample in [lo, hi], from the store's
    own reader over chunks and head."""
    conn = sqlite3.connect(world)
    series = {s.id: s for s in find_series(conn, None)}
    arrays = read_samples(conn, list(series.values()), lo, hi)
    conn.close()
    out = []
    for i, sid in enumerate(arrays.series_ids.tolist()):
        s = series[sid]
        a, b = arrays.offsets[i], arrays.offsets[i + 1]
        labels = json.dumps(s.labels, sort_keys=True, separators=(",", ":"))
        for ts, v in zip(arrays.timestamps[a:b].tolist(), arrays.values[a:b].tolist(), strict=True):
            out.append((s.name, labels, ts, v))
    return sorted(out)


def _us(value: dt.datetime) -> int:
    return to_ns(value) // 1000


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_metric_samples_of_a_range_equal_the_stored_samples(
    world: Path, tmp_path: Path, fmt: str
) -> None:
    out = tmp_path / f"metrics.{fmt}"
    _export_range(world, "metrics", fmt, out)
    if fmt == "csv":
        header, rows = _csv_rows(out)
        records = [dict(zip(header, r, strict=True)) for r in rows]
        got = [
            (r["name"], r["labels"], _us(_when(r["timestamp"])), float(r["value"])) for r in records
        ]
    elif fmt == "jsonl":
        records = [json.loads(line) for line in out.read_text().splitlines()]
        got = [
            (r["name"], json.dumps(r["labels"], sort_keys=True, separators=(",", ":")),
             _us(_when(r["timestamp"])), r["value"])
            for r in records
        ]  # fmt: skip
    else:
        records = pq.read_table(out).to_pylist()
        got = [
            (r["name"], json.dumps(dict(r["labels"]), sort_keys=True, separators=(",", ":")),
             _us(r["timestamp"]), r["value"])
            for r in records
        ]  # fmt: skip
    expected = _stored_samples(world, _us(SINCE), _us(UNTIL) - 1)
    assert sorted(got) == expected and len(got) > 1000
    assert {r["temporality"] for r in records} == {"delta", "cumulative"}
    # In the exported order, each series' samples are in time order.
    last: dict[tuple[str, str], int] = {}
    for name, labels, ts, _ in got:
        assert ts > last.get((name, labels), -1)
        last[(name, labels)] = ts


def test_small_budgets_and_chunks_give_the_same_samples(world: Path) -> None:
    conn = sqlite3.connect(world)
    series = select_series(conn, [])
    lo, hi = _us(SINCE), _us(UNTIL) - 1
    big = [
        r for chunk in metrics_table(conn, series, since=SINCE, until=UNTIL).chunks for r in chunk
    ]
    small = metrics_table(conn, series, since=SINCE, until=UNTIL, chunk_rows=7, sample_budget=40)
    chunks = list(small.chunks)
    assert max(len(c) for c in chunks) == 7
    assert sorted(r for c in chunks for r in c) == sorted(big)
    # Series-major (OpenMetrics): one run per series, in time order, whatever the budget.
    for budget in (30, 10**6):
        runs: list[int] = []
        stamps: dict[int, list[int]] = {}
        for block in series_blocks(conn, series, lo, hi, series_major=True, sample_budget=budget):
            if not runs or runs[-1] != block.series.id:
                runs.append(block.series.id)
            stamps.setdefault(block.series.id, []).extend(block.timestamps.tolist())
        assert len(runs) == len(set(runs))
        assert all(s == sorted(s) and len(s) == len(set(s)) for s in stamps.values())
        assert sum(len(s) for s in stamps.values()) == len(big)
    conn.close()


def test_openmetrics_parses_and_carries_every_sample_with_its_time(
    world: Path, tmp_path: Path
) -> None:
    out = tmp_path / "metrics.om"
    _export_range(world, "metrics", "openmetrics", out)
    text = out.read_text()
    assert text.endswith("# EOF\n")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert {n: f.type for n, f in families.items()} == {
        "api_queue_depth": "gauge",  # stored as api.queue-depth
        "business_total_tokens": "counter",  # a delta counter, summed
        "http_requests": "counter",  # stored as http_requests_total (cumulative)
        "llm_latency": "unknown",  # a spec 355 timer: observations
    }
    assert families["business_total_tokens"].unit == "tokens"
    stored = _stored_samples(world, _us(SINCE), _us(UNTIL) - 1)
    by_series: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for name, labels, ts, value in stored:
        by_series.setdefault((name, labels), []).append((ts, value))
    renamed = {
        "api.queue-depth": "api_queue_depth",
        "business_total_tokens": "business_total_tokens_total",
        "http_requests_total": "http_requests_total",
        "llm.latency": "llm_latency",
    }
    parsed: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for family in families.values():
        for s in family.samples:
            key = (s.name, json.dumps(s.labels, sort_keys=True))
            ts = s.timestamp.sec * 10**6 + s.timestamp.nsec // 1000
            parsed.setdefault(key, []).append((ts, s.value))
    assert sum(map(len, parsed.values())) == len(stored)
    for (name, labels), samples in by_series.items():
        label_names = {k.replace(".", "_"): v for k, v in json.loads(labels).items()}
        got = parsed[(renamed[name], json.dumps(label_names, sort_keys=True))]
        assert [ts for ts, _ in got] == [ts for ts, _ in samples]
        values = [v for _, v in samples]
        if name == "business_total_tokens":  # increments: a running total from the start
            values = np.cumsum(values).tolist()
        assert [v for _, v in got] == pytest.approx(values)
    assert ("http_requests_total", '{"route": "/odd \\"route\\""}') in parsed


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_openmetrics_export_backfills_prometheus_blocks(world: Path, tmp_path: Path) -> None:
    out = tmp_path / "metrics.om"
    _ok("--store", str(world), "--what", "metrics", "-f", "openmetrics", "-o", str(out))
    done = subprocess.run(
        ["promtool", "tsdb", "create-blocks-from", "openmetrics", str(out), str(tmp_path / "tsdb")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert any((tmp_path / "tsdb").iterdir())


def test_metric_filter_and_stdout(world: Path) -> None:
    done = _ok("--store", str(world), "--what", "metrics", "--metric", "http_requests_total")
    header, *rows = list(csv.reader(done.stdout.splitlines()))
    assert header[:2] == ["timestamp", "name"] and rows
    assert {r[1] for r in rows} == {"http_requests_total"}
    assert len(rows) == sum(
        1 for s in _stored_samples(world, -(2**62), 2**62) if s[0] == "http_requests_total"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--what", "events", "-f", "openmetrics"], "OpenMetrics holds metric samples"),
        (["--what", "metrics", "--event", "x"], "--event filters events"),
        (["--what", "events", "--metric", "x"], "--metric filters metrics"),
        (["--what", "metrics", "--metric", "nope"], "no metric named 'nope'"),
        (["--what", "events", "--since", "last week"], "--since 'last week' is not a time"),
        (["--what", "events", "--since", "1d", "--until", "2d"], "the export range ends"),
    ],
)
def test_bad_requests_print_one_error_line_and_write_nothing(
    world: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    done = _cli("--store", str(world), *args, "--out", str(tmp_path / "out.csv"))
    assert done.exit_code == 2
    assert done.stderr.startswith("error: ") and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_missing_store_is_an_error(tmp_path: Path) -> None:
    done = _cli("--store", str(tmp_path / "none.db"), "--what", "events")
    assert done.exit_code == 2 and done.stderr.startswith("error: no store at")


# -- memory ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bulk(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A store of 100 000 events and their timestamps."""
    path = tmp_path_factory.mktemp("bulk") / "big.db"
    return path, _bulk_store(path, 100_000)


def _bulk_store(path: Path, count: int) -> list[str]:
    """``count`` tool events one second apart, written straight into the table (fast);
    returns their timestamps."""
    with SQLiteStore(path):
        pass
    base = to_ns(START)
    rows = []
    for i in range(count):
        ns = base + i * 10**9
        event = AnalyticsEvent(
            id=uuid7_from_ns(ns),
            category=EventType.TOOL_INVOKED.category(),
            event_type=EventType.TOOL_INVOKED,
            timestamp=from_ns(ns),
            data=UsageEventData(
                feature="tool",
                action="shell",
                success=i % 13 != 0,
                duration_ms=i % 1000,
                extra={"step": i % 7, "note": "x" * (i % 50)},
            ),
            user_id=f"user-{i % 300}",
            session_id=f"s-{i % 900}",
        )
        rows.append(event_to_row(event).astuple())
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany(
            "INSERT INTO analytics_events (id, event_type, event_name, timestamp, session_id, "
            "user_id, properties, context, page_url, referrer) VALUES (?,?,?,?,?,?,?,?,?,?)",
            rows,
        )
    conn.close()
    return [r[3] for r in rows]


def _peak(path: Path, out: Path, fmt: str, until: dt.datetime | None) -> tuple[int, int]:
    conn = sqlite3.connect(path)
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    with open(out, "wb") as stream:
        result = export(conn, stream, what="events", format=fmt, until=until)  # type: ignore[arg-type]
    peak = tracemalloc.get_traced_memory()[1] - before
    conn.close()
    return result.rows, peak


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_export_memory_does_not_grow_with_the_number_of_rows(
    bulk: tuple[Path, list[str]], tmp_path: Path, fmt: str, record_property: Any
) -> None:
    """Exporting 100 000 events peaks at about what 20 000 do: rows are streamed."""
    path, stamps = bulk
    cut = _when(stamps[20_000])
    tracemalloc.start()
    try:
        small_rows, small = _peak(path, tmp_path / f"a.{fmt}", fmt, cut)
        large_rows, large = _peak(path, tmp_path / f"b.{fmt}", fmt, None)
    finally:
        tracemalloc.stop()
    assert (small_rows, large_rows) == (20_000, 100_000)
    record_property("peak_bytes", {"20k": small, "100k": large})
    print(
        f"{fmt}: peak traced memory 20k rows {small / 2**20:.2f} MiB, 100k {large / 2**20:.2f} MiB"
    )
    # Five times the rows, not five times the memory: at most 25 % (and 1 MiB) more.
    assert large <= small * 1.25 + 2**20, (small, large)
    assert os.path.getsize(tmp_path / f"b.{fmt}") > 4 * os.path.getsize(tmp_path / f"a.{fmt}")
