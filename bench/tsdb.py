"""The time-series store: bytes per sample against Prometheus, codec speed, query latency,
and long-range percentiles from rollups.

One run, on data from ``bench/tsgen.py`` (deterministic):

1. **Size.** 1 000 series x 24 h at 15 s with scrape jitter, stored as Tachimeter chunks
   (2-hour frames per metric name, as compaction writes them) and, from the same samples
   as OpenMetrics text, as Prometheus TSDB blocks by ``promtool tsdb create-blocks-from
   openmetrics`` (Debian's ``prometheus``); bytes of chunk data per sample for both.
2. **Codec.** Encode and decode rates of those frames, samples per second.
3. **Head.** Writing points into spec 355's ``metrics`` table (UUID keys, text
   timestamps and tags, four B-trees) against the lean ``metric_points`` head.
4. **Queries.** Median latency of ``sum by (label)``, ``sum by (label) (rate(...[5m]))``
   and a p99 over 1 h and 24 h of the 1 000-series data (raw samples; 24 h also at the
   hourly resolution ``auto`` picks for a one-hour step), and over 30 days of a
   100-series x 30-day data set (daily rollups, which ``auto`` picks for a one-day step).
5. **Percentiles.** p99 of 10 000 000 observations from merged rollup sketches against
   numpy over the raw values.

Run with ``python -m bench tsdb``; results in ``bench/results/tsdb.json``. Goals: fewer
bytes per sample than Prometheus (under 1.0), decoding at 20M samples/s or more, and every
query under 100 ms median.
"""

from __future__ import annotations

import datetime as dt
import gc
import os
import shutil
import sqlite3
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness import print_table, write_results
from bench.tsgen import Dataset, generate, write_openmetrics
from tachimeter.analyze.metrics import MetricQuery, MetricsEngine
from tachimeter.store.chunks import decode_chunk, encode_chunk
from tachimeter.store.migrator import Migrator
from tachimeter.store.rollups import roll_up
from tachimeter.store.timeseries import ImportedSeries, TimeSeriesStore

US = 1_000_000
WINDOW_US = 7200 * US
REPEATS = 9
LATER = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)  # every generated window is closed by then


def _imported(data: Dataset) -> list[ImportedSeries]:
    return [
        ImportedSeries(
            name=s.name,
            labels=s.labels,
            timestamps_us=s.timestamps_ms * 1000,
            values=s.values,
            metric_type="gauge" if s.kind == "gauge" else "counter",
        )
        for s in data.series
    ]


def _open_store(path: Path) -> tuple[sqlite3.Connection, TimeSeriesStore]:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    Migrator(conn).up()
    return conn, TimeSeriesStore(conn)


def _start_promtool(om: Path, out: Path) -> subprocess.Popen[bytes] | None:
    promtool = shutil.which("promtool")
    if promtool is None:
        print("promtool not found (Debian package prometheus): Prometheus column left empty")
        return None
    return subprocess.Popen(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(om), str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _prometheus_size(process: subprocess.Popen[bytes] | None, out: Path) -> dict[str, Any]:
    if process is None:
        return {}
    _, err = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"promtool failed: {err.decode()[-2000:]}")
    chunk_bytes = sum(p.stat().st_size for p in out.glob("*/chunks/*"))
    total_bytes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    version = subprocess.run(
        ["promtool", "--version"], capture_output=True, text=True, check=False
    ).stdout.split("\n")[0]
    return {"chunk_bytes": chunk_bytes, "block_bytes": total_bytes, "version": version}


def _frames(data: Dataset) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """The 2-hour frames per metric name compaction writes, as encoder inputs."""
    groups: dict[tuple[str, int], list[tuple[int, np.ndarray, np.ndarray]]] = {}
    for sid, s in enumerate(data.series, start=1):
        ts = s.timestamps_ms * 1000
        window = ts // WINDOW_US
        for w in np.unique(window):
            mask = window == w
            groups.setdefault((s.name, int(w)), []).append((sid, ts[mask], s.values[mask]))
    frames = []
    for members in groups.values():
        ids = np.array([m[0] for m in members], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum([len(m[1]) for m in members])])
        frames.append(
            (
                ids,
                offsets,
                np.concatenate([m[1] for m in members]),
                np.concatenate([m[2] for m in members]),
            )
        )
    return frames


def _codec_rates(data: Dataset) -> dict[str, float]:
    frames = _frames(data)
    samples = sum(len(f[2]) for f in frames)
    encode_times, decode_times = [], []
    blobs: list[bytes] = []
    for _ in range(3):
        gc.collect()
        t0 = time.perf_counter()
        blobs = [encode_chunk(*f) for f in frames]
        encode_times.append(time.perf_counter() - t0)
    for _ in range(7):
        gc.collect()
        t0 = time.perf_counter()
        for blob in blobs:
            decode_chunk(blob)
        decode_times.append(time.perf_counter() - t0)
    return {
        "samples": samples,
        "frames": len(frames),
        "encode_samples_per_s": samples / statistics.median(encode_times),
        "decode_samples_per_s": samples / statistics.median(decode_times),
    }


def _head_comparison(tmp: Path) -> dict[str, dict[str, float]]:
    """Spec 355's ``metrics`` table (as migration 1 creates it) against ``metric_points``."""
    n = 200_000
    rng = np.random.default_rng(1)
    base = 1_767_225_600 * US
    ts = base + np.arange(n) * 15 * US // 100
    values = np.round(rng.normal(100, 5, n), 2).tolist()
    series = [f'{{"host":"h{i % 100}","route":"r{i % 7}"}}' for i in range(n)]
    out: dict[str, dict[str, float]] = {}

    spec = sqlite3.connect(tmp / "spec355.db", isolation_level=None)
    spec.execute("PRAGMA journal_mode = WAL")
    Migrator(spec).up(1)
    stamps = [
        dt.datetime.fromtimestamp(t / US, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        for t in ts.tolist()
    ]
    rows = [
        (str(uuid.uuid4()), "latency", "gauge", v, s, tags, "ms")
        for v, s, tags in zip(values, stamps, series, strict=True)
    ]
    t0 = time.perf_counter()
    spec.execute("BEGIN")
    spec.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    spec.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    spec.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = (tmp / "spec355.db").stat().st_size
    out["spec 355 metrics table"] = {"points_per_s": n / elapsed, "bytes_per_point": size / n}
    spec.close()

    conn, tsdb = _open_store(tmp / "head.db")
    empty = (tmp / "head.db").stat().st_size
    by_series: dict[str, list[int]] = {}
    for i, tags in enumerate(series):
        by_series.setdefault(tags, []).append(i)
    t0 = time.perf_counter()
    conn.execute("BEGIN")
    for tags, index in by_series.items():
        labels = dict(pair.split(":") for pair in tags.strip("{}").replace('"', "").split(","))
        tsdb.write_samples("latency", labels, ts[index], [values[i] for i in index], unit="ms")
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = (tmp / "head.db").stat().st_size - empty
    out["metric_points head"] = {"points_per_s": n / elapsed, "bytes_per_point": size / n}
    conn.close()
    return out


def _median_ms(run: Callable[[], object]) -> float:
    run()
    times = []
    for _ in range(REPEATS):
        gc.collect()
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def _queries(
    engine: MetricsEngine, end: float, span: float, step: float, resolution: str, window: float
) -> dict[str, float]:
    start = end - span
    common: dict[str, Any] = {"start": start, "end": end, "step": step, "resolution": resolution}
    specs = {
        "sum by (key)": MetricQuery(
            names=["app_temperature_celsius"], aggregation="sum", group_by=["key"], **common
        ),
        "sum by (route) (rate[5m])": MetricQuery(
            names=["app_requests_total"],
            aggregation="rate",
            window=window,
            group_by=["route"],
            **common,
        ),
        "p99": MetricQuery(
            names=["app_heap_used_megabytes"],
            aggregation="percentiles",
            quantiles=[0.99],
            window=window if resolution == "raw" else None,
            **common,
        ),
    }
    return {name: _median_ms(lambda q=q: engine.query(q)) for name, q in specs.items()}


def _percentiles_10m(tmp: Path) -> dict[str, float]:
    """p99 of 10M lognormal observations over a week: merged hourly/daily sketches vs numpy."""
    rng = np.random.default_rng(3)
    n = 10_000_000
    start = 1_767_225_600 * US
    # Distinct, increasing microsecond timestamps spread over a week.
    ts = start + np.cumsum(rng.integers(1, 2 * 7 * 86400 * US // n, n))
    values = np.round(rng.lognormal(np.log(0.2), 0.9, n), 6)
    conn, tsdb = _open_store(tmp / "observations.db")
    tsdb.import_series(
        [
            ImportedSeries(
                name="request_duration_seconds",
                labels={},
                timestamps_us=ts,
                values=values,
                metric_type="histogram",
            )
        ],
        now=LATER,
    )
    t0 = time.perf_counter()
    roll_up(conn, now=LATER)
    rollup_s = time.perf_counter() - t0
    engine = MetricsEngine(conn)
    query = MetricQuery(
        names=["request_duration_seconds"],
        start=(start + 7 * 86400 * US) / US,
        end=(start + 7 * 86400 * US) / US,
        step=7 * 86400,
        window=7 * 86400,
        aggregation="percentiles",
        quantiles=[0.99],
        resolution="daily",
    )
    from_rollups = engine.query(query).series[0].values[0]
    rollup_ms = _median_ms(lambda: engine.query(query))
    exact_lower = float(np.quantile(values, 0.99, method="lower"))
    exact_linear = float(np.quantile(values, 0.99))
    numpy_ms = _median_ms(lambda: np.quantile(values, 0.99))
    conn.close()
    return {
        "observations": n,
        "p99_from_rollups": float(from_rollups),
        "p99_exact_numpy": exact_linear,
        "relative_error": abs(from_rollups - exact_lower) / exact_lower,
        "rollup_query_ms": rollup_ms,
        "numpy_ms": numpy_ms,
        "roll_up_seconds": rollup_s,
    }


def main() -> None:
    """Run every part, write bench/results/tsdb.json and print the tables."""
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="tachimeter-bench-tsdb-"))
    try:
        data = generate()
        om = tmp / "data.om"
        write_openmetrics(data, om)
        promtool = _start_promtool(om, tmp / "prometheus")

        stages: dict[str, float] = {"generate and write OpenMetrics": time.perf_counter() - started}
        clock = time.perf_counter()
        conn, tsdb = _open_store(tmp / "tsdb.db")
        imported = tsdb.import_series(_imported(data), now=LATER)
        stats = tsdb.storage_stats()
        conn.execute("VACUUM")
        file_bytes = (tmp / "tsdb.db").stat().st_size
        stages["import 24 h"] = time.perf_counter() - clock
        clock = time.perf_counter()
        roll_up(conn, now=LATER)
        conn.execute("VACUUM")
        file_bytes_rollups = (tmp / "tsdb.db").stat().st_size
        stages["roll up 24 h"] = time.perf_counter() - clock

        clock = time.perf_counter()
        month = generate(n_series=100, hours=30 * 24, seed=1)
        month_conn, month_tsdb = _open_store(tmp / "month.db")
        month_tsdb.import_series(_imported(month), now=LATER)
        roll_up(month_conn, now=LATER)
        stages["generate, import and roll up 30 d"] = time.perf_counter() - clock

        clock = time.perf_counter()
        prometheus = _prometheus_size(promtool, tmp / "prometheus")
        om.unlink()
        stages["wait for promtool"] = time.perf_counter() - clock

        clock = time.perf_counter()
        codec = _codec_rates(data)
        head = _head_comparison(tmp)
        stages["codec and head"] = time.perf_counter() - clock
        clock = time.perf_counter()
        end = data.end_ms / 1000
        engine = MetricsEngine(tsdb)
        latency = {
            "1h raw (step 15s)": _queries(engine, end, 3600, 15, "raw", 300),
            "24h raw (step 5m)": _queries(engine, end, 86400, 300, "raw", 300),
            "24h auto (step 1h: hourly)": _queries(engine, end, 86400, 3600, "auto", 3600),
            "30d auto (step 1d: daily), 100 series": _queries(
                MetricsEngine(month_tsdb),
                month.end_ms / 1000 - (month.end_ms / 1000) % 86400,
                30 * 86400,
                86400,
                "auto",
                86400,
            ),
        }
        stages["queries"] = time.perf_counter() - clock
        clock = time.perf_counter()
        percentiles = _percentiles_10m(tmp)
        stages["10M observations"] = time.perf_counter() - clock
        conn.close()
        month_conn.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    samples = data.samples
    ours = {
        "chunk_bytes": imported.bytes,
        "chunk_bytes_per_sample": imported.bytes / samples,
        "file_bytes_per_sample": file_bytes / samples,
        "file_bytes_per_sample_with_rollups": file_bytes_rollups / samples,
        "chunks": stats["chunks"],
    }
    if prometheus:
        prometheus["chunk_bytes_per_sample"] = prometheus["chunk_bytes"] / samples
        prometheus["block_bytes_per_sample"] = prometheus["block_bytes"] / samples
    write_results(
        "tsdb",
        {
            "dataset": {
                "series": len(data.series),
                "samples": samples,
                "hours": 24,
                "interval_s": 15,
            },
            "size": {"tachimeter": ours, "prometheus": prometheus},
            "codec": codec,
            "head": head,
            "query_latency_ms": latency,
            "percentiles_10m": percentiles,
            "stages_s": stages,
            "runtime_s": time.perf_counter() - started,
        },
    )
    size_rows = [
        (
            "Tachimeter",
            f"{ours['chunk_bytes_per_sample']:.3f}",
            f"{ours['file_bytes_per_sample']:.3f} (SQLite file; "
            f"{ours['file_bytes_per_sample_with_rollups']:.3f} with rollups)",
        )
    ]
    if prometheus:
        size_rows.append(
            (
                prometheus["version"].split(" (")[0],
                f"{prometheus['chunk_bytes_per_sample']:.3f}",
                f"{prometheus['block_bytes_per_sample']:.3f} (whole blocks)",
            )
        )
    print_table(
        f"Bytes per sample, {len(data.series)} series x 24 h at 15 s ({samples:,} samples)",
        size_rows,
        ("store", "chunk data", "on disk"),
    )
    print_table(
        "Codec (samples/s)",
        [
            ("encode", f"{codec['encode_samples_per_s'] / 1e6:.1f}M"),
            ("decode", f"{codec['decode_samples_per_s'] / 1e6:.1f}M"),
        ],
        ("", "rate"),
    )
    print_table(
        "Raw head: 200k points",
        [
            (name, f"{v['points_per_s']:,.0f}", f"{v['bytes_per_point']:.1f}")
            for name, v in head.items()
        ],
        ("table", "points/s", "bytes/point"),
    )
    print_table(
        "Query latency, median ms",
        [(span, *(f"{v:.1f}" for v in values.values())) for span, values in latency.items()],
        ("range", *next(iter(latency.values())).keys()),
    )
    print_table(
        "p99 of 10M observations",
        [
            (
                "from rollups (merged sketches)",
                f"{percentiles['p99_from_rollups']:.6f}",
                f"{percentiles['rollup_query_ms']:.1f} ms",
            ),
            (
                "numpy over raw values",
                f"{percentiles['p99_exact_numpy']:.6f}",
                f"{percentiles['numpy_ms']:.1f} ms",
            ),
            ("relative error", f"{percentiles['relative_error']:.4%}", ""),
        ],
        ("", "p99", "time"),
    )
    print_table("Stages", [(k, f"{v:.1f} s") for k, v in stages.items()], ("stage", "time"))
    print(f"\nruntime {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
