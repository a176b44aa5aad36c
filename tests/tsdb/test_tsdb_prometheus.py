"""rate, increase, aggregations and histogram_quantile against the real Prometheus engine.

The same scrape-shaped data (counters with resets, jittered and missed scrapes, histogram
buckets, gauges) is turned into TSDB blocks by ``promtool tsdb create-blocks-from
openmetrics`` and served by a real ``prometheus`` on 127.0.0.1; its ``query_range``
answers must equal ours, evaluated on the same data after compaction.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from bench.tsgen import Dataset, generate, write_openmetrics

from tachimeter.analyze.metrics import MetricQuery, MetricsEngine
from tachimeter.store.timeseries import ImportedSeries, TimeSeriesStore

# (PromQL, our query); every one is evaluated from 30 minutes in to the end, each minute.
CASES = [
    (
        "rate(app_requests_total[5m])",
        {"names": ["app_requests_total"], "aggregation": "rate", "window": 300},
    ),
    (
        "increase(app_jobs_processed_total[1m])",
        {"names": ["app_jobs_processed_total"], "aggregation": "increase", "window": 60},
    ),
    (
        "increase(app_requests_total[37s])",
        {"names": ["app_requests_total"], "aggregation": "increase", "window": 37},
    ),
    (
        "sum by (route) (rate(app_cache_lookups_total[10m]))",
        {
            "names": ["app_cache_lookups_total"],
            "aggregation": "rate",
            "window": 600,
            "group_by": ["route"],
        },
    ),
    (
        "histogram_quantile(0.9, sum by (le) (rate(app_request_duration_seconds_bucket[5m])))",
        {
            "names": ["app_request_duration_seconds_bucket"],
            "aggregation": "histogram_quantile",
            "window": 300,
            "group_by": [],
            "quantiles": [0.9],
        },
    ),
    (
        "histogram_quantile(0.5, rate(app_request_duration_seconds_bucket[2m]))",
        {
            "names": ["app_request_duration_seconds_bucket"],
            "aggregation": "histogram_quantile",
            "window": 120,
            "quantiles": [0.5],
        },
    ),
    (
        "sum by (key) (app_temperature_celsius)",
        {"names": ["app_temperature_celsius"], "aggregation": "sum", "group_by": ["key"]},
    ),
    (
        "avg by (instance) (app_queue_depth_ratio)",
        {"names": ["app_queue_depth_ratio"], "aggregation": "avg", "group_by": ["instance"]},
    ),
    ("min(app_heap_used_megabytes)", {"names": ["app_heap_used_megabytes"], "aggregation": "min"}),
    ("max(app_heap_used_megabytes)", {"names": ["app_heap_used_megabytes"], "aggregation": "max"}),
    ("count(app_max_connections)", {"names": ["app_max_connections"], "aggregation": "count"}),
    (
        'app_config_generation{instance=~"10.0.0.[01]:9100"}',
        {"names": ["app_config_generation"], "matchers": ['instance=~"10.0.0.[01]:9100"']},
    ),
]


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return generate(n_series=60, hours=3, seed=7)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _prometheus(binary: str, promtool: str, data: Dataset, root: Path) -> Iterator[str]:
    write_openmetrics(data, root / "data.om")
    subprocess.run(
        [
            promtool,
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            str(root / "data.om"),
            str(root / "tsdb"),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (root / "prometheus.yml").write_text("global:\n  scrape_interval: 15s\n")
    port = _free_port()
    log = (root / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=100y",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"prometheus did not start: {(root / 'prometheus.log').read_text()[-2000:]}"
                )
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _query_range(url: str, promql: str, start: float, end: float, step: float) -> dict:
    params = urllib.parse.urlencode({"query": promql, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{url}/api/v1/query_range?{params}", timeout=30) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return {
        tuple(sorted((k, v) for k, v in r["metric"].items() if k != "__name__")): {
            float(t): float(v) for t, v in r["values"]
        }
        for r in body["data"]["result"]
    }


def test_queries_match_the_real_prometheus_engine(
    dataset: Dataset,
    tsdb: TimeSeriesStore,
    prometheus_binary: str,
    promtool: str,
    tmp_path: Path,
) -> None:
    # The first window goes to chunks, the rest stays in the head: the answers must not
    # depend on where samples are.
    backfilled = tsdb.import_series(
        (
            ImportedSeries(
                name=s.name,
                labels=s.labels,
                timestamps_us=s.timestamps_ms * 1000,
                values=s.values,
                metric_type="gauge" if s.kind == "gauge" else "counter",
            )
            for s in dataset.series
        ),
        now=dt.datetime(2026, 1, 1, 2, 10, tzinfo=dt.UTC),
    )
    assert 0 < backfilled.samples < dataset.samples
    assert tsdb.storage_stats()["head_points"] == dataset.samples - backfilled.samples
    engine = MetricsEngine(tsdb)
    start = dataset.start_ms / 1000 + 1800
    end = dataset.end_ms / 1000 - 60
    compared = 0
    with _prometheus(prometheus_binary, promtool, dataset, tmp_path) as url:
        for promql, spec in CASES:
            theirs = _query_range(url, promql, start, end, 60)
            result = engine.query(
                MetricQuery(start=start, end=end, step=60, resolution="raw", **spec)
            )
            ours = {
                tuple(sorted((k, v) for k, v in s.labels.items() if k != "quantile")): dict(
                    zip(s.timestamps.tolist(), s.values.tolist(), strict=True)
                )
                for s in result.series
            }
            assert set(ours) == set(theirs), promql
            for key, points in theirs.items():
                finite = {t: v for t, v in points.items() if not math.isnan(v)}
                assert set(ours[key]) == set(finite), (promql, key)
                for t, v in finite.items():
                    assert ours[key][t] == pytest.approx(v, rel=1e-9, abs=1e-12), (promql, key, t)
                    compared += 1
    assert compared > 5000
