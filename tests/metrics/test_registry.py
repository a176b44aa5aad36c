"""Registry: get-or-create, conflicts, collectors, and the registry's own counters."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import pytest

from tachimeter.errors import ConfigError
from tachimeter.metrics import (
    REGISTRY,
    Counter,
    Histogram,
    MetricFamily,
    Registry,
    Sample,
    counter,
    gauge,
    histogram,
    summary,
    timer,
)


def test_identical_redefinition_returns_the_existing_metric(registry: Registry) -> None:
    """Defining the same metric twice (as import-time code may) gives one object."""
    first = registry.counter("jobs", "Jobs run", ["queue"])
    assert registry.counter("jobs", "Jobs run", ["queue"]) is first
    assert registry.counter("jobs_total", "Jobs run", ("queue",)) is first
    h = registry.histogram("lat", "Latency", unit="seconds", buckets=[0.1, 1])
    assert registry.histogram("lat_seconds", "Latency", unit="seconds", buckets=[0.1, 1.0]) is h
    s = registry.summary("size", "Size", quantiles=(0.5,))
    assert registry.summary("size", "Size", quantiles=[0.5]) is s
    t = registry.timer("step", "Step")
    assert registry.histogram("step_seconds", "Step", unit="seconds") is t


@pytest.mark.parametrize(
    ("second", "difference"),
    [
        (lambda r: r.gauge("jobs", "Jobs run", ["queue"]), "type 'counter' (now 'gauge')"),
        (
            lambda r: r.counter("jobs", "Jobs run", ["queue", "host"]),
            "labels ('queue',) (now ('queue', 'host'))",
        ),
        (lambda r: r.counter("jobs", "Other help", ["queue"]), "documentation 'Jobs run'"),
        (lambda r: r.counter("jobs", "Jobs run", ["queue"], max_series=5), "max_series None"),
    ],
)
def test_conflicting_redefinition_raises_naming_the_difference(
    registry: Registry, second: object, difference: str
) -> None:
    """A different kind, label set, help or cap under one name is refused."""
    registry.counter("jobs", "Jobs run", ["queue"])
    assert callable(second)
    with pytest.raises(ConfigError, match="metric 'jobs' is already defined with") as info:
        second(registry)
    assert difference in str(info.value)


def test_conflicting_buckets_raise(registry: Registry) -> None:
    """Same histogram name with other buckets is a conflict."""
    registry.histogram("lat", "Latency", buckets=[1, 2])
    with pytest.raises(ConfigError, match="options"):
        registry.histogram("lat", "Latency", buckets=[1, 3])


@pytest.mark.parametrize(
    ("first", "second", "clash"),
    [
        (lambda r: r.counter("x", "d"), lambda r: r.gauge("x_total", "d"), "'x_total'"),
        (lambda r: r.counter("x", "d"), lambda r: r.gauge("x_created", "d"), "'x_created'"),
        (lambda r: r.histogram("h", "d"), lambda r: r.gauge("h_bucket", "d"), "'h_bucket'"),
        (lambda r: r.gauge("s_count", "d"), lambda r: r.summary("s", "d"), "'s_count'"),
    ],
)
def test_sample_name_collisions_across_families_raise(
    registry: Registry, first: object, second: object, clash: str
) -> None:
    """Two families may not expose the same sample name."""
    assert callable(first) and callable(second)
    first(registry)
    with pytest.raises(ConfigError, match=f"would expose the name {clash}"):
        second(registry)


def test_own_counter_names_are_reserved(registry: Registry) -> None:
    """User metrics cannot take the names of the registry's own counters."""
    with pytest.raises(ConfigError, match="the registry's own counter"):
        registry.counter("tachimeter_metric_invalid_observations", "mine")


def test_register_adds_built_metric_once(registry: Registry) -> None:
    """register() takes a metric built directly; the same object twice is a no-op, a
    second object with the same name is refused with a hint."""
    c = Counter("built", "Built directly")
    assert registry.register(c) is c
    assert registry.register(c) is c
    with pytest.raises(ConfigError, match=r"registry.counter\(\.\.\.\)"):
        registry.register(Counter("built", "Built directly"))
    assert registry.get("built") is c


def test_unregister_frees_the_name(registry: Registry) -> None:
    """After unregister, the name and its sample names can be defined again."""
    c = registry.counter("x", "d")
    registry.unregister(c)
    assert registry.get("x") is None
    assert registry.gauge("x_total", "d").name == "x_total"


def test_module_functions_define_on_the_given_registry(registry: Registry) -> None:
    """counter/gauge/histogram/summary/timer(registry=r) define in r, not REGISTRY."""
    c = counter("c", "d", ["a"], registry=registry, max_series=10)
    g = gauge("g", "d", registry=registry, unit="bytes")
    h = histogram("h", "d", registry=registry, buckets=[1, 2])
    s = summary("s", "d", registry=registry)
    t = timer("t", "d", ["tool"], registry=registry)
    assert registry.metrics() == [c, g, h, s, t]
    assert isinstance(t, Histogram) and t.name == "t_seconds" and t.unit == "seconds"
    assert REGISTRY.get("c") is None


def test_module_functions_default_to_the_default_registry() -> None:
    """Without registry=, definitions land in REGISTRY."""
    name = "tachimeter_test_default_registry_probe"
    c = counter(name, "probe")
    try:
        assert REGISTRY.get(name) is c
        assert counter(name, "probe") is c
    finally:
        REGISTRY.unregister(c)


def test_collect_lists_metrics_then_collectors(registry: Registry) -> None:
    """collect() yields families in registration order, collectors after metrics."""
    registry.gauge("b", "d")
    registry.counter("a", "d")

    @registry.register_collector
    def queue_stats() -> Iterable[MetricFamily]:
        return [
            MetricFamily(
                "tachimeter_collector_queue_depth",
                "gauge",
                "Events queued",
                (Sample("tachimeter_collector_queue_depth", (), 7.0),),
            )
        ]

    assert [f.name for f in registry.collect()] == ["b", "a", "tachimeter_collector_queue_depth"]
    registry.unregister_collector(queue_stats)
    assert [f.name for f in registry.collect()] == ["b", "a"]


def _failures(registry: Registry) -> dict[str, float]:
    for family in registry.collect():
        if family.name == "tachimeter_metric_collector_failures":
            return {s.labels[0][1]: s.value for s in family.samples}
    return {}


@pytest.mark.parametrize(
    ("families", "problem"),
    [
        ([MetricFamily("bad-name", "gauge", "d")], "invalid name 'bad-name'"),
        ([MetricFamily("taken", "gauge", "d")], "already in use"),
        (
            [MetricFamily("c", "counter", "d", (Sample("c", (), 1.0),))],
            "sample 'c', which a counter 'c' cannot have",
        ),
        (
            [MetricFamily("g", "gauge", "d", (Sample("g", (("1x", "v"),), 1.0),))],
            "bad label '1x'",
        ),
        ([MetricFamily("g", "gauge", "d", unit="bytes")], "no '_bytes' suffix"),
        (["not a family"], "not a MetricFamily"),
        (
            [MetricFamily("dup", "gauge", "d"), MetricFamily("dup", "gauge", "d")],
            "already in use",
        ),
    ],
)
def test_invalid_collector_output_is_dropped_and_counted(
    registry: Registry,
    families: list[object],
    problem: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A collector's bad family never reaches the exposition: the scrape goes on
    without it, the failure is logged once and counted per collector."""
    registry.gauge("taken", "d")

    def broken() -> list[object]:
        return families

    registry.register_collector(broken)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="tachimeter.metrics"):
        names = [f.name for f in registry.collect()]
        registry.collect()
    assert names == ["taken", "tachimeter_metric_collector_failures"]
    assert _failures(registry) == {
        "test_invalid_collector_output_is_dropped_and_counted.<locals>.broken": 3.0
    }
    messages = [r.getMessage() for r in caplog.records if r.name == "tachimeter.metrics"]
    assert len(messages) == 1 and problem in messages[0]


def test_raising_collector_is_counted_and_others_still_collected(registry: Registry) -> None:
    """An exception in one collector costs only its own families."""

    def explodes() -> list[MetricFamily]:
        raise RuntimeError("disk gone")

    def fine() -> list[MetricFamily]:
        return [MetricFamily("ok", "gauge", "d", (Sample("ok", (), 1.0),))]

    registry.register_collector(explodes)
    registry.register_collector(fine)
    assert [f.name for f in registry.collect()] == ["ok", "tachimeter_metric_collector_failures"]


def test_non_callable_collector_is_refused(registry: Registry) -> None:
    """register_collector checks its argument at registration."""
    with pytest.raises(ConfigError, match="a collector must be callable"):
        registry.register_collector(42)  # type: ignore[arg-type]


def test_own_counters_appear_only_when_non_zero(registry: Registry) -> None:
    """Overflow and invalid-observation counts are exposed per metric once they occur."""
    c = registry.counter("req", "d", ["user"], max_series=1)
    g = registry.gauge("g", "d")
    assert [f.name for f in registry.collect()] == ["req", "g"]
    c.labels("a").inc()
    c.labels("b").inc()
    c.labels("c").inc()
    g.set(float("nan"))
    own = {f.name: f for f in registry.collect() if f.name.startswith("tachimeter_metric_")}
    assert set(own) == {
        "tachimeter_metric_series_overflow",
        "tachimeter_metric_invalid_observations",
    }
    overflow = own["tachimeter_metric_series_overflow"]
    assert overflow.kind == "counter"
    assert overflow.samples == (
        Sample("tachimeter_metric_series_overflow_total", (("metric", "req"),), 2.0),
    )
    assert own["tachimeter_metric_invalid_observations"].samples == (
        Sample("tachimeter_metric_invalid_observations_total", (("metric", "g"),), 1.0),
    )
