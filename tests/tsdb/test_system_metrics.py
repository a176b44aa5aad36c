"""psutil system and process metrics as a registry collector."""

from __future__ import annotations

import gc
import os
import subprocess

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tachimeter.errors import ConfigError
from tachimeter.metrics import Registry, generate_latest
from tachimeter.metrics.system import SystemMetrics


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _values(registry: Registry) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            key = sample.name + "".join(f"|{k}={v}" for k, v in sorted(sample.labels.items()))
            out[key] = sample.value
    return out


def test_scrape_reports_this_process_and_machine(registry: Registry) -> None:
    """The figures are this process's and this machine's, as psutil reads them."""
    SystemMetrics(registry=registry)
    values = _values(registry)
    me = psutil.Process()
    assert values["system_cpus"] == psutil.cpu_count()
    assert values["system_memory_total_bytes"] == psutil.virtual_memory().total
    assert values["system_disk_total_bytes|mountpoint=/"] == psutil.disk_usage("/").total
    assert 0 < values["process_resident_memory_bytes"] <= values["process_virtual_memory_bytes"]
    assert abs(values["process_resident_memory_bytes"] - me.memory_info().rss) < 64 * 2**20
    assert values["process_open_fds"] >= 3
    assert values["process_threads"] >= 1
    assert values["process_cpu_seconds_total"] > 0
    assert values["process_start_time_seconds"] == pytest.approx(me.create_time())
    assert values["python_gc_collections_total|generation=0"] >= 0
    assert "python_info|implementation=CPython|major=3|minor=11" in " ".join(values) or any(
        k.startswith("python_info") for k in values
    )
    for name in ("system_load1", "system_swap_total_bytes", "system_network_received_bytes_total"):
        assert name in values


def test_samples_at_most_once_per_interval(registry: Registry) -> None:
    """Scrapes within the interval reuse the snapshot; the next one after it samples."""
    clock = FakeClock()
    system = SystemMetrics(interval=15, registry=registry, clock=clock)
    first = system()
    gc.collect()
    assert system() == first
    clock.now += 15
    second = system()
    assert second is not first
    gc_before = next(f for f in first if f.name == "python_gc_collections").samples
    gc_after = next(f for f in second if f.name == "python_gc_collections").samples
    assert gc_after[2].value > gc_before[2].value


def test_background_thread_samples_and_stops(registry: Registry) -> None:
    system = SystemMetrics(interval=0.05, registry=registry)
    system.start()
    system.start()
    try:
        taken = system()
        deadline = 200
        while system() == taken and deadline:
            deadline -= 1
            psutil.cpu_percent(interval=0.01)
        assert deadline, "the thread did not take a new sample within 2 s"
    finally:
        assert system.stop(timeout=5)


def test_output_passes_promtool_check_metrics(registry: Registry, promtool: str) -> None:
    """Names, types and units are valid for the real promtool linter."""
    SystemMetrics(registry=registry)
    done = subprocess.run(
        [promtool, "check", "metrics"],
        input=generate_latest(registry),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


def test_forked_child_reports_its_own_process(registry: Registry) -> None:
    system = SystemMetrics(registry=registry)
    system()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            families = system.sample()
            start = next(f for f in families if f.name == "process_start_time_seconds")
            os.write(write, repr(start.samples[0].value).encode())
        finally:
            os._exit(0)
    os.close(write)
    child_start = float(os.read(read, 100).decode())
    os.close(read)
    os.waitpid(pid, 0)
    assert child_start >= psutil.Process().create_time()


def test_bad_configuration_raises_at_construction() -> None:
    with pytest.raises(ConfigError, match="interval"):
        SystemMetrics(interval=0)
    with pytest.raises(ConfigError, match="paths"):
        SystemMetrics(paths="/")  # type: ignore[arg-type]


@pytest.fixture
def registry() -> Registry:
    return Registry()
