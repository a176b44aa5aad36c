"""Caller-thread cost of recording an event, end-to-end throughput, memory under overload.

Caller-thread cases (interleaved in one run, medians of repeats, after warm-up):

1. floor: build a 6-field dict and ``queue.SimpleQueue.put``;
2. ``tachimeter.track`` of a typical event (name, 3 properties, user id), sampling on
   (the default config: the usage category keeps everything, the sampler is consulted);
3. ``tachimeter.track`` of a sampled-out event (rate 0 after the window minimum);
4. posthog ``capture`` with the same payload (``send=False``: nothing leaves the process);
5. an OpenTelemetry span start/end with ``BatchSpanProcessor`` and a discarding exporter;
6. ``prometheus_client`` ``Counter.labels(...).inc()``.

Each library's background thread (our worker, posthog's consumer, OTel's batch processor)
is drained untimed after each timed run, so each run measures the caller's own work; the
queues are sized so that nothing is dropped.

End to end: events/s from ``track`` to a ``MemorySink`` and to a ``JsonlFileSink`` with
1 and 4 producer threads, and peak RSS under 10x overload (queue capacity 10 000).
"""

from __future__ import annotations

import gc
import os
import queue
import resource
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import posthog
import prometheus_client
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from bench.harness import compare, print_table, ratios, write_results
from tachimeter.collect.collector import EventCollector
from tachimeter.collect.sinks import JsonlFileSink, MemorySink
from tachimeter.config import load_config

PROPS = {"feature": "search", "results": 12, "cached": False}


def config(**settings: Any) -> Any:
    return load_config(env={}, cwd="/nonexistent-bench-dir", **settings)


def make_caller_cases() -> tuple[
    dict[str, Callable[[int], object]], dict[str, Callable[[], object]], Callable[[], None]
]:
    big = {"collection.queue_capacity": 5_000_000, "collection.buffer_size": 1000}
    tracked = EventCollector(config(**big), register_atexit=False)
    sampled = EventCollector(
        config(
            **big,
            sampling={"per_event_type": {"feature_used": {"rate": 0.0, "min_per_window": 0}}},
        ),
        register_atexit=False,
    )
    track, track_sampled = tracked.track, sampled.track
    floor_queue: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()

    def floor(n: int) -> None:
        put = floor_queue.put
        for i in range(n):
            put({"event": "feature_used", "feature": "search", "results": 12,
                 "cached": False, "user_id": "user-42", "i": i})  # fmt: skip
        while not floor_queue.empty():
            floor_queue.get_nowait()

    def tachimeter_track(n: int) -> None:
        for _ in range(n):
            track("feature_used", PROPS, user_id="user-42")

    def tachimeter_sampled_out(n: int) -> None:
        for _ in range(n):
            track_sampled("feature_used", PROPS, user_id="user-42")

    ph = posthog.Client("phc_bench", host="http://127.0.0.1:9", send=False, sync_mode=False,
                        max_queue_size=10_000_000, disable_geoip=True)  # fmt: skip

    def posthog_capture(n: int) -> None:
        for _ in range(n):
            ph.capture("feature_used", distinct_id="user-42", properties=PROPS)

    class Discard(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    processor = BatchSpanProcessor(Discard(), max_queue_size=1_000_000)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("bench")

    def otel_span(n: int) -> None:
        for _ in range(n):
            with tracer.start_as_current_span("feature_used", attributes=PROPS):
                pass

    registry = prometheus_client.CollectorRegistry()
    counter = prometheus_client.Counter("events", "events", ["name", "user"], registry=registry)

    def prometheus_inc(n: int) -> None:
        for _ in range(n):
            counter.labels("feature_used", "user-42").inc()

    def close() -> None:
        tracked.shutdown(timeout=30)
        sampled.shutdown(timeout=30)
        ph.shutdown()
        provider.shutdown()

    cases = {
        "floor_dict_simplequeue": floor,
        "tachimeter_track": tachimeter_track,
        "tachimeter_track_sampled_out": tachimeter_sampled_out,
        "posthog_capture": posthog_capture,
        "otel_span": otel_span,
        "prometheus_counter_inc": prometheus_inc,
    }
    settle = {
        "tachimeter_track": lambda: tracked.flush(timeout=600),
        "tachimeter_track_sampled_out": lambda: sampled.flush(timeout=600),
        "posthog_capture": ph.flush,
        "otel_span": lambda: processor.force_flush(600_000),
    }
    return cases, settle, close


class _GcTimer:
    """Seconds spent in garbage collections while installed (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.full_collections = 0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started
            self.full_collections += info["generation"] == 2


def throughput(sink_kind: str, threads: int, total: int) -> dict[str, float]:
    """Events/s from the first track() to the sink having everything (flush returned),
    with the process's CPU time per event and the time spent in garbage collections
    (the memory sink keeps every event, so full collections grow with the run)."""
    with tempfile.TemporaryDirectory() as tmp:
        sink: Any = MemorySink() if sink_kind == "memory" else JsonlFileSink(Path(tmp) / "e.jsonl")
        collector = EventCollector(
            config(**{"collection.queue_capacity": total, "collection.buffer_size": 1000}),
            sinks=[sink],
            register_atexit=False,
        )
        per_thread = total // threads
        track = collector.track
        barrier = threading.Barrier(threads + 1)

        def produce() -> None:
            barrier.wait()
            for _ in range(per_thread):
                track("feature_used", PROPS, user_id="user-42")

        workers = [threading.Thread(target=produce) for _ in range(threads)]
        for worker in workers:
            worker.start()
        gc_timer = _GcTimer()
        gc.callbacks.append(gc_timer)
        try:
            barrier.wait()
            started = time.perf_counter()
            cpu_started = time.process_time()
            for worker in workers:
                worker.join()
            produced = time.perf_counter() - started
            assert collector.flush(timeout=600)
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu_started
        finally:
            gc.callbacks.remove(gc_timer)
        stats = collector.stats()
        collector.shutdown(timeout=30)
        assert stats.events_processed == per_thread * threads, stats
    return {
        "events": per_thread * threads,
        "events_per_second": per_thread * threads / elapsed,
        "producer_seconds": produced,
        "total_seconds": elapsed,
        "cpu_us_per_event": cpu / (per_thread * threads) * 1e6,
        "gc_seconds": gc_timer.seconds,
        "gc_full_collections": gc_timer.full_collections,
    }


class _SlowDiscardSink:
    """A sink slower than the producers that keeps nothing: the queue must overflow."""

    name = "slow-discard"

    def process(self, batch: Any) -> None:
        time.sleep(0.01)

    def flush(self) -> None:
        pass


def rss_mib() -> float:
    """Resident set size now (Linux ``/proc``); elsewhere the peak so far (``ru_maxrss``)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def overload_rss(total: int = 500_000) -> dict[str, float]:
    """10x more events than the queue holds into a sink slower than the producers:
    the queue stays bounded, drops are counted, and memory stays flat.

    Memory is the resident set sampled during the run, not the process's peak RSS: the
    caller-thread cases before this one raise the peak (their queues hold millions of
    events), which would hide any growth here."""
    gc.collect()
    rss_before = rss_mib()
    collector = EventCollector(
        config(**{"collection.queue_capacity": 10_000}), sinks=[_SlowDiscardSink()],
        register_atexit=False,
    )  # fmt: skip
    samples: list[float] = []

    def produce() -> None:
        for i in range(total // 4):
            collector.track("feature_used", PROPS, user_id="user-42")
            if i % 10_000 == 0:
                samples.append(rss_mib())

    workers = [threading.Thread(target=produce) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    collector.flush(timeout=120)
    stats = collector.stats()
    collector.shutdown(timeout=30)
    return {
        "events_tracked": total,
        "queue_capacity": 10_000,
        "queue_high_water": stats.queue_high_water,
        "events_dropped": stats.events_dropped,
        "events_processed": stats.events_processed,
        "flush_errors": stats.flush_errors,
        "rss_mib_before": rss_before,
        "rss_mib_max_during": max(samples, default=rss_before),
        "rss_mib_after": rss_mib(),
    }


def main() -> None:
    cases, settle, close = make_caller_cases()
    try:
        results = compare(cases, n=20_000, repeats=15, settle=settle)
        cpu = compare(cases, n=20_000, repeats=9, settle=settle, clock=time.thread_time_ns)
    finally:
        close()
    cpu_rel = ratios(cpu, "floor_dict_simplequeue")
    print_table(
        "caller thread's own CPU time per event (median ns of 9 runs; excludes GIL waits)",
        [(name, f"{r['median_ns']:.0f}", f"{cpu_rel[name]:.2f}x") for name, r in cpu.items()],
        ("case", "median ns", "vs floor"),
    )
    gc.collect()
    rel = ratios(results, "floor_dict_simplequeue")
    track_ns = results["tachimeter_track"]["median_ns"]
    rows = [
        (name, f"{r['median_ns']:.0f}", f"{rel[name]:.2f}x", f"{r['median_ns'] / track_ns:.2f}x")
        for name, r in results.items()
    ]
    print_table(
        "caller-thread cost per event (median ns of 15 interleaved runs of 20 000)",
        rows,
        ("case", "median ns", "vs floor", "vs track"),
    )
    e2e = {
        f"{kind}_{threads}_threads": throughput(kind, threads, 200_000)
        for kind in ("memory", "jsonl")
        for threads in (1, 4)
    }
    print_table(
        "end to end, track() to sink, 200 000 events",
        [
            (
                name,
                f"{r['events_per_second']:,.0f}",
                f"{r['cpu_us_per_event']:.2f}",
                f"{r['gc_seconds'] * 1000:.0f}",
            )
            for name, r in e2e.items()
        ],
        ("case", "events/s", "CPU us/event", "GC ms"),
    )
    memory = overload_rss()
    print_table(
        "10x overload (500 000 events into a 10 000-event queue)",
        [(k, f"{v:,.1f}") for k, v in memory.items()],
        ("measure", "value"),
    )
    summary = {
        "track_vs_floor": rel["tachimeter_track"],
        "sampled_out_vs_floor": rel["tachimeter_track_sampled_out"],
        "track_vs_floor_caller_cpu": cpu_rel["tachimeter_track"],
        "sampled_out_vs_floor_caller_cpu": cpu_rel["tachimeter_track_sampled_out"],
        "posthog_vs_track": results["posthog_capture"]["median_ns"] / track_ns,
        "otel_span_vs_track": results["otel_span"]["median_ns"] / track_ns,
        "prometheus_inc_vs_track": results["prometheus_counter_inc"]["median_ns"] / track_ns,
    }
    for key, value in summary.items():
        print(f"{key}: {value:.2f}")
    path = write_results(
        "collector",
        {
            "unit": "ns per event on the caller thread",
            "results": results,
            "ratio_to_floor": rel,
            "caller_cpu_results": cpu,
            "caller_cpu_ratio_to_floor": cpu_rel,
            "summary": summary,
            "end_to_end": e2e,
            "overload": memory,
            "goals": {
                "track_vs_floor": "<= 3",
                "sampled_out_vs_floor": "<= 1.5",
                "posthog_vs_track": ">= 50",
                "otel_span_vs_track": ">= 20",
                "end_to_end_memory_events_per_second": ">= 200000",
            },
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
