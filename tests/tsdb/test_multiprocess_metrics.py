"""Metrics of several worker processes, aggregated without stale-file problems."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tachimeter.errors import ConfigError
from tachimeter.metrics import Registry, generate_latest
from tachimeter.metrics.multiprocess import MultiprocessCollector, MultiprocessWriter


def _scrape(directory: Path, gauge_mode: str = "sum") -> dict[str, float]:
    served = Registry()
    served.register_collector(MultiprocessCollector(directory, gauge_mode=gauge_mode))  # type: ignore[arg-type]
    out = {}
    for family in text_string_to_metric_families(generate_latest(served).decode()):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}"] = sample.value
    return out


def _worker(directory: Path, work: Callable[[Registry], None], *, then: str) -> int:
    """Fork a worker that records, publishes, then exits cleanly, or waits to be killed."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            registry = Registry()
            writer = MultiprocessWriter(directory, registry, interval=None)
            work(registry)
            writer.flush()
            if then == "exit":
                writer.close()
            os.write(ready_w, b"x")
            if then == "wait":
                time.sleep(60)
        finally:
            os._exit(0)
    os.close(ready_w)
    assert os.read(ready_r, 1) == b"x"
    os.close(ready_r)
    return pid


def _jobs(n: float, depth: float) -> Callable[[Registry], None]:
    def work(registry: Registry) -> None:
        registry.counter("jobs", "Jobs done", ["queue"]).labels("q").inc(n)
        registry.gauge("depth", "Queue depth").set(depth)
        registry.histogram("latency_seconds", "Latency", buckets=[1.0]).observe(n)

    return work


def test_live_workers_are_summed_and_gauges_combined(tmp_path: Path) -> None:
    pids = [_worker(tmp_path, _jobs(n, n * 10), then="wait") for n in (1, 2, 4)]
    try:
        values = _scrape(tmp_path)
        assert values["jobs_total{queue=q}"] == 7
        assert values["depth{}"] == 70
        assert values["latency_seconds_count{}"] == 3
        assert values["latency_seconds_bucket{le=1.0}"] == 1
        assert _scrape(tmp_path, "max")["depth{}"] == 40
        assert _scrape(tmp_path, "min")["depth{}"] == 10
        per_pid = _scrape(tmp_path, "all")
        assert {v for k, v in per_pid.items() if k.startswith("depth{")} == {10, 20, 40}
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def test_killed_workers_keep_their_counts_and_leave_no_files(tmp_path: Path) -> None:
    """A SIGKILLed worker's counters stay in the totals (they never go backwards), its
    gauge goes, and its files are folded away (prometheus_client #115, #495)."""
    pid = _worker(tmp_path, _jobs(5, 50), then="wait")
    alive = _worker(tmp_path, _jobs(1, 10), then="wait")
    assert _scrape(tmp_path)["jobs_total{queue=q}"] == 6
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    for _ in range(3):  # every later scrape, from any collector, agrees
        values = _scrape(tmp_path)
        assert values["jobs_total{queue=q}"] == 6
        assert values["depth{}"] == 10
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == sorted(
        ["archive.lock", "archive.snap", *(f for f in files if f.startswith(f"{alive}-"))]
    )
    assert len(files) == 4
    os.kill(alive, signal.SIGKILL)
    os.waitpid(alive, 0)
    assert _scrape(tmp_path)["jobs_total{queue=q}"] == 6
    assert "depth{}" not in _scrape(tmp_path)


def test_many_worker_generations_do_not_grow_the_directory(tmp_path: Path) -> None:
    for n in range(20):
        pid = _worker(tmp_path, _jobs(1, n), then="exit")
        os.waitpid(pid, 0)
        _scrape(tmp_path)
    assert _scrape(tmp_path)["jobs_total{queue=q}"] == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["archive.lock", "archive.snap"]


def test_a_reused_pid_starts_a_new_file(tmp_path: Path) -> None:
    """Files are per process incarnation, not per pid (prometheus_client #568): a second
    writer in the same process (as after pid reuse) never continues the first one's."""
    first_registry = Registry()
    first = MultiprocessWriter(tmp_path, first_registry, interval=None)
    first_registry.counter("jobs", "Jobs").inc(5)
    first.close()
    second_registry = Registry()
    second = MultiprocessWriter(tmp_path, second_registry, interval=None)
    second_registry.counter("jobs", "Jobs").inc(1)
    second.flush()
    assert first.token != second.token
    assert first.token.split("-")[0] == second.token.split("-")[0] == str(os.getpid())
    assert _scrape(tmp_path)["jobs_total{}"] == 6
    second.close()


def test_a_forked_child_publishes_only_what_it_counted(tmp_path: Path) -> None:
    registry = Registry()
    jobs = registry.counter("jobs", "Jobs")
    writer = MultiprocessWriter(tmp_path, registry, interval=None)
    jobs.inc(10)
    writer.flush()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            jobs.inc(2)
            writer.flush()
            writer.close()
            os.write(done_w, b"x")
        finally:
            os._exit(0)
    os.close(done_w)
    assert os.read(done_r, 1) == b"x"
    os.close(done_r)
    os.waitpid(pid, 0)
    assert _scrape(tmp_path)["jobs_total{}"] == 12
    writer.close()


def test_background_thread_publishes_periodically(tmp_path: Path) -> None:
    registry = Registry()
    jobs = registry.counter("jobs", "Jobs")
    writer = MultiprocessWriter(tmp_path, registry, interval=0.02)
    try:
        jobs.inc(3)
        deadline = time.monotonic() + 10
        while _scrape(tmp_path).get("jobs_total{}") != 3:
            assert time.monotonic() < deadline, "no snapshot within 10 s"
            time.sleep(0.02)
    finally:
        writer.close()


def test_bad_configuration_raises(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        MultiprocessWriter(tmp_path / "missing")
    with pytest.raises(ConfigError, match="interval"):
        MultiprocessWriter(tmp_path, interval=0)
    with pytest.raises(ConfigError, match="gauge_mode"):
        MultiprocessCollector(tmp_path, gauge_mode="avg")  # type: ignore[arg-type]
