"""Metrics hot paths and exposition: tachimeter.metrics against prometheus_client.

Each group runs its competitors interleaved in one process (``harness.compare``) and
reports medians of repeats; ratios are tachimeter / prometheus_client (below 1 means
tachimeter is faster). Goals: ``labels(...).inc()`` at least 2x faster, pre-bound
``inc()`` and ``observe()`` no slower. Run alone with ``python -m bench metrics``.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import prometheus_client
from prometheus_client.openmetrics.exposition import generate_latest as pc_openmetrics

from bench.harness import compare, print_table, write_results
from tachimeter.metrics import Registry, generate_latest

TM = "tachimeter"
PC = "prometheus_client"
SERIES = 1000  # 40 routes x 25 methods: one counter family, two labels


def _hot_path_groups() -> dict[str, dict[str, Callable[[int], object]]]:
    tm_registry = Registry()
    pc_registry = prometheus_client.CollectorRegistry()
    tm_counter = tm_registry.counter("requests", "Requests", ["route", "method"])
    pc_counter = prometheus_client.Counter(
        "requests", "Requests", ["route", "method"], registry=pc_registry
    )
    tm_histogram = tm_registry.histogram("latency_seconds", "Latency", ["route"])
    pc_histogram = prometheus_client.Histogram(
        "latency_seconds", "Latency", ["route"], registry=pc_registry
    )
    tm_summary = tm_registry.summary("latency_summary_seconds", "Latency", ["route"])
    pc_summary = prometheus_client.Summary(
        "latency_summary_seconds", "Latency", ["route"], registry=pc_registry
    )
    tm_child, pc_child = tm_counter.labels("a", "b"), pc_counter.labels("a", "b")
    tm_hchild, pc_hchild = tm_histogram.labels("a"), pc_histogram.labels("a")
    tm_schild, pc_schild = tm_summary.labels("a"), pc_summary.labels("a")

    def labels_inc(metric: Any) -> Callable[[int], None]:
        def run(n: int) -> None:
            for _ in range(n):
                metric.labels("a", "b").inc()

        return run

    def bound(method: Callable[..., None], *args: float) -> Callable[[int], None]:
        def run(n: int) -> None:
            for _ in range(n):
                method(*args)

        return run

    return {
        'labels("a", "b").inc()': {TM: labels_inc(tm_counter), PC: labels_inc(pc_counter)},
        "bound child inc()": {TM: bound(tm_child.inc), PC: bound(pc_child.inc)},
        "histogram bound observe()": {
            TM: bound(tm_hchild.observe, 0.3),
            PC: bound(pc_hchild.observe, 0.3),
        },
        # prometheus_client's Summary keeps count and sum only; ours also feeds the
        # sliding-window quantile sketch, so this shows the price of quantiles.
        "summary bound observe()": {
            TM: bound(tm_schild.observe, 0.3),
            PC: bound(pc_schild.observe, 0.3),
        },
    }


def _exposition_groups() -> dict[str, dict[str, Callable[[int], object]]]:
    tm_registry = Registry()
    pc_registry = prometheus_client.CollectorRegistry()
    tm_counter = tm_registry.counter("requests", "Requests", ["route", "method"])
    pc_counter = prometheus_client.Counter(
        "requests", "Requests", ["route", "method"], registry=pc_registry
    )
    for i in range(SERIES):
        route, method = f"/api/v1/resource/{i // 25}", f"M{i % 25}"
        tm_counter.labels(route, method).inc(i)
        pc_counter.labels(route, method).inc(i)

    def repeat(render: Callable[[], bytes]) -> Callable[[int], None]:
        def run(n: int) -> None:
            for _ in range(n):
                render()

        return run

    return {
        f"generate_latest, text, {SERIES} series": {
            TM: repeat(lambda: generate_latest(tm_registry)),
            PC: repeat(lambda: prometheus_client.generate_latest(pc_registry)),
        },
        f"generate_latest, OpenMetrics, {SERIES} series": {
            TM: repeat(lambda: generate_latest(tm_registry, openmetrics=True)),
            PC: repeat(lambda: pc_openmetrics(pc_registry)),
        },
    }


def _check_same_output() -> None:
    """Both libraries expose the same samples, so the exposition race is fair."""
    tm_registry = Registry()
    pc_registry = prometheus_client.CollectorRegistry()
    tm_registry.counter("x", "X", ["a"]).labels("1").inc(2)
    prometheus_client.Counter("x", "X", ["a"], registry=pc_registry).labels("1").inc(2)
    assert generate_latest(tm_registry) == prometheus_client.generate_latest(pc_registry)


def main() -> None:
    """Run every group, write bench/results/metrics.json and print a table."""
    # prometheus_client also writes a `_created` gauge per counter series in the text
    # format; ours leaves it to OpenMetrics. Turned off, both write the same lines.
    prometheus_client.disable_created_metrics()
    try:
        _check_same_output()
        groups: dict[str, dict[str, dict[str, float]]] = {}
        for name, cases in _hot_path_groups().items():
            groups[name] = compare(cases, n=20_000, repeats=25)
        for name, cases in _exposition_groups().items():
            groups[name] = compare(cases, n=5, repeats=15)
    finally:
        prometheus_client.enable_created_metrics()
    ratios = {name: r[TM]["median_ns"] / r[PC]["median_ns"] for name, r in groups.items()}
    write_results(
        "metrics",
        {
            "versions": {PC: version("prometheus-client")},
            "series": SERIES,
            "groups": groups,
            "ratio_tachimeter_over_prometheus_client": ratios,
        },
    )
    rows = [
        (
            name,
            f"{r[TM]['median_ns']:,.0f}",
            f"{r[PC]['median_ns']:,.0f}",
            f"{ratios[name]:.2f}",
            f"{1 / ratios[name]:.1f}x",
        )
        for name, r in groups.items()
    ]
    print_table(
        "tachimeter.metrics vs prometheus_client (ns/op, medians; ratio = tm / pc)",
        rows,
        ("case", "tachimeter", "prometheus_client", "ratio", "speed-up"),
    )


if __name__ == "__main__":
    main()
