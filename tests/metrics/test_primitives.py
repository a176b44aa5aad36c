"""Counter, Gauge, Histogram, Summary and Timer: behaviour, validation, concurrency."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import threading
import time

import numpy as np
import pytest

from tachimeter.errors import ConfigError
from tachimeter.metrics import (
    DEFAULT_BUCKETS,
    OVERFLOW_LABEL_VALUE,
    Counter,
    Gauge,
    Histogram,
    Registry,
    Summary,
    exponential_buckets,
    linear_buckets,
)

LOGGER = "tachimeter.metrics"


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


# Counter


def test_counter_adds_increments() -> None:
    """inc() adds 1, inc(x) adds x, and the total is a float."""
    c = Counter("jobs", "Jobs run")
    c.inc()
    c.inc(2.5)
    assert c.labels().value == 3.5


def test_counter_labels_positional_and_named_share_one_child() -> None:
    """labels("a", "b") and labels(x="a", y="b") return the same cached child."""
    c = Counter("req", "Requests", ["route", "method"])
    child = c.labels("/run", "GET")
    assert c.labels(route="/run", method="GET") is child
    assert c.labels(method="GET", route="/run") is child
    child.inc()
    assert child.label_values == ("/run", "GET")


def test_label_values_are_converted_with_str() -> None:
    """Non-str label values name the same series as their str()."""
    c = Counter("codes", "Responses", ["code"])
    c.labels(200).inc()
    c.labels("200").inc()
    c.labels(code=200).inc()
    assert [child.label_values for child in c.children()] == [("200",)]
    assert c.labels("200").value == 3.0


@pytest.mark.parametrize("bad", [-1, -0.5, math.nan, math.inf, -math.inf, "3", None, 10**400])
def test_invalid_counter_increment_is_counted_not_raised(
    bad: object, caplog: pytest.LogCaptureFixture
) -> None:
    """A negative, non-finite or non-numeric increment leaves the total unchanged,
    is counted in invalid_observations and logged once."""
    c = Counter("jobs", "Jobs run")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        c.inc(bad)  # type: ignore[arg-type]
        c.inc(bad)  # type: ignore[arg-type]
    assert c.labels().value == 0.0
    assert c.invalid_observations == 2
    records = _warnings(caplog)
    assert len(records) == 1
    assert "'jobs'" in records[0].getMessage()
    assert "counter increments must be finite numbers >= 0" in records[0].getMessage()


def test_recording_without_labels_on_a_labelled_metric_is_counted() -> None:
    """inc() on a metric that has label names is counted as invalid, not raised."""
    c = Counter("req", "Requests", ["route"])
    c.inc()
    assert c.invalid_observations == 1
    assert c.children() == []


def test_wrong_label_count_or_names_is_counted_and_exposes_nothing() -> None:
    """Wrong arity or names return a child that is never exposed; each is counted."""
    c = Counter("req", "Requests", ["route", "method"])
    c.labels("/only-one").inc()
    c.labels("a", "b", "c").inc()
    c.labels(route="/x").inc()
    c.labels(route="/x", verb="GET").inc()
    c.labels("/x", method="GET").inc()
    assert c.invalid_observations == 5
    assert c.children() == []
    assert c.collect().samples == ()


def test_label_value_whose_str_fails_is_counted() -> None:
    """A label value that cannot become a str is bad data: counted, not raised."""

    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no text")

    c = Counter("req", "Requests", ["k"])
    c.labels(Unprintable()).inc()
    c.labels([1, 2]).inc()  # unhashable: converted with str(), so a normal series
    assert c.invalid_observations == 1
    assert [child.label_values for child in c.children()] == [("[1, 2]",)]


def test_remove_and_clear_drop_series() -> None:
    """remove() drops one label set; clear() drops all, and a label-less metric
    starts from zero."""
    c = Counter("req", "Requests", ["route"])
    for route in ("/a", "/b", "/c"):
        c.labels(route).inc()
    c.remove("/b")
    c.remove("/missing")
    assert [child.label_values for child in c.children()] == [("/a",), ("/c",)]
    c.clear()
    assert c.children() == []
    solo = Counter("total", "Total")
    solo.inc(5)
    solo.clear()
    assert solo.labels().value == 0.0


def test_remove_with_wrong_arity_raises_config_error() -> None:
    """remove() is not a recording call: a wrong number of values is a bug, raised."""
    c = Counter("req", "Requests", ["route"])
    with pytest.raises(ConfigError, match=r"'req'.*remove\(\) got 2 values"):
        c.remove("/a", "/b")


def test_counter_name_drops_total_and_gains_unit() -> None:
    """A counter given '..._total' is named without it; a unit suffix is added once."""
    assert Counter("requests_total", "x").name == "requests"
    assert Counter("sent", "x", unit="bytes").name == "sent_bytes"
    assert Counter("sent_bytes_total", "x", unit="bytes").name == "sent_bytes"
    assert Histogram("latency", "x", unit="seconds").name == "latency_seconds"
    assert Histogram("latency_seconds", "x", unit="seconds").name == "latency_seconds"


# Cardinality cap


def test_max_series_folds_new_label_sets_into_overflow() -> None:
    """Past max_series, new label sets share one __overflow__ series; memory stays
    bounded and every folded lookup is counted."""
    c = Counter("req", "Requests", ["user", "route"], max_series=3)
    for i in range(1000):
        c.labels(f"u{i}", "/run").inc()
    children = c.children()
    assert len(children) == 4
    assert [child.label_values for child in children[:3]] == [
        ("u0", "/run"),
        ("u1", "/run"),
        ("u2", "/run"),
    ]
    overflow = c.labels(OVERFLOW_LABEL_VALUE, OVERFLOW_LABEL_VALUE)
    assert children[3] is overflow
    assert overflow.value == 997.0
    assert c.series_overflow == 997
    # Existing series keep working after the cap is reached.
    c.labels("u1", "/run").inc()
    assert c.labels("u1", "/run").value == 2.0


def test_removing_series_makes_room_under_the_cap() -> None:
    """After remove(), a new label set gets its own series again."""
    c = Gauge("g", "Gauge", ["k"], max_series=2)
    c.labels("a").set(1)
    c.labels("b").set(2)
    c.labels("c").set(3)
    c.remove(OVERFLOW_LABEL_VALUE)
    c.remove("a")
    c.labels("d").set(4)
    assert [child.label_values for child in c.children()] == [("b",), ("d",)]


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "3"])
def test_bad_max_series_raises(bad: object) -> None:
    """max_series must be a positive integer."""
    with pytest.raises(ConfigError, match="max_series of metric 'req'"):
        Counter("req", "Requests", ["route"], max_series=bad)  # type: ignore[arg-type]


def test_max_series_without_labels_raises() -> None:
    """A cap on a metric with one series is a mistake, refused at definition."""
    with pytest.raises(ConfigError, match="needs label names"):
        Counter("req", "Requests", max_series=5)


# Gauge


def test_gauge_goes_up_down_and_is_set() -> None:
    """inc, dec and set move the value; invalid ones are counted."""
    g = Gauge("queue_depth", "Queued events")
    g.inc(5)
    g.dec(2)
    assert g.labels().value == 3.0
    g.set(42)
    assert g.labels().value == 42.0
    g.set(math.nan)
    g.inc(math.inf)
    g.dec("x")  # type: ignore[arg-type]
    assert g.labels().value == 42.0
    assert g.invalid_observations == 3


def test_track_inprogress_counts_running_blocks_and_calls() -> None:
    """The gauge is one higher while a block or decorated call runs, sync or async."""
    g = Gauge("active_loops", "Loops running", ["kind"])
    child = g.labels("agent")
    seen: list[float] = []

    @child.track_inprogress()
    def work() -> None:
        seen.append(child.value)

    @child.track_inprogress()
    async def awork() -> None:
        seen.append(child.value)

    with child.track_inprogress():
        seen.append(child.value)
        work()
    asyncio.run(awork())
    assert seen == [1.0, 2.0, 1.0]
    assert child.value == 0.0


# Histogram


def test_histogram_bucket_counts_match_independent_count() -> None:
    """Cumulative bucket counts, count and sum equal a plain recount of the data."""
    rng = random.Random(7)
    values = [rng.lognormvariate(-3, 1.5) for _ in range(5000)]
    values += [0.005, 0.01, 10.0, 0.0]  # exactly on bounds: counted as <= bound
    h = Histogram("latency", "Latency", unit="seconds")
    for v in values:
        h.observe(v)
    child = h.labels()
    expected = [(bound, sum(1 for v in values if v <= bound)) for bound in DEFAULT_BUCKETS]
    assert child.bucket_counts() == expected
    assert child.count == len(values)
    assert child.sum == pytest.approx(math.fsum(values), rel=1e-12)


def test_histogram_rejects_non_finite_observations() -> None:
    """NaN and infinities are counted as invalid and leave buckets and sum alone."""
    h = Histogram("h", "H")
    for bad in (math.nan, math.inf, -math.inf, "1"):
        h.observe(bad)  # type: ignore[arg-type]
    assert h.labels().count == 0
    assert h.labels().sum == 0.0
    assert h.invalid_observations == 4


@pytest.mark.parametrize(
    ("buckets", "message"),
    [
        ([1.0, 0.5], "not in strictly increasing order: 1.0 is followed by 0.5"),
        ([1.0, 1.0], "not in strictly increasing order"),
        ([0.1, math.nan], "is not a number"),
        (["0.1"], "is not a number"),
        ([], "at least one finite bucket bound"),
        ([math.inf], "at least one finite bucket bound"),
        ([-math.inf, 1.0], "must not contain -Inf"),
        ("0.1,0.2", "must be a sequence of numbers"),
    ],
)
def test_bad_buckets_raise_at_definition(buckets: object, message: str) -> None:
    """Bucket lists are checked when the histogram is defined, with a precise message."""
    with pytest.raises(ConfigError, match="histogram 'h'") as info:
        Histogram("h", "H", buckets=buckets)  # type: ignore[arg-type]
    assert message in str(info.value)


def test_histogram_adds_inf_bucket_and_keeps_given_one() -> None:
    """+Inf is appended when missing and not duplicated when given."""
    assert Histogram("a", "x", buckets=[1, 2]).buckets == (1.0, 2.0, math.inf)
    assert Histogram("b", "x", buckets=[1, math.inf]).buckets == (1.0, math.inf)


def test_bucket_helpers() -> None:
    """exponential_buckets and linear_buckets give clean, increasing bounds."""
    assert exponential_buckets(0.001, 2, 4) == (0.001, 0.002, 0.004, 0.008)
    assert exponential_buckets(1, 10, 3) == (1.0, 10.0, 100.0)
    assert linear_buckets(0.1, 0.1, 5) == (0.1, 0.2, 0.3, 0.4, 0.5)
    assert linear_buckets(-1, 1, 3) == (-1.0, 0.0, 1.0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: exponential_buckets(0, 2, 3), "start must be a finite number > 0"),
        (lambda: exponential_buckets(1, 1, 3), "factor must be a finite number > 1"),
        (lambda: exponential_buckets(1, 2, 0), "count must be an integer >= 1"),
        (lambda: exponential_buckets(1, 10, 400), "exceeds the float range"),
        (lambda: linear_buckets(0, 0, 3), "width must be a finite number > 0"),
        (lambda: linear_buckets(math.nan, 1, 3), "start must be a finite number"),
        (lambda: linear_buckets(1e20, 1, 3), "not increasing"),
    ],
)
def test_bucket_helpers_refuse_bad_arguments(call: object, message: str) -> None:
    """Bad helper arguments raise ConfigError saying which one and why."""
    assert callable(call)
    with pytest.raises(ConfigError, match=message):
        call()


def test_negative_buckets_drop_the_sum_sample() -> None:
    """With negative bounds the sum is not a counter, so it is not exposed."""
    h = Histogram("temp", "Temperature", buckets=[-10, 0, 10])
    h.observe(-5)
    names = {s.name for s in h.collect().samples}
    assert "temp_sum" not in names
    assert "temp_count" in names


# Summary


def test_summary_quantiles_are_within_one_percent_bracket() -> None:
    """Summary quantiles lie in numpy's [lower, higher] bracket widened by 1%."""
    rng = np.random.default_rng(3)
    data = rng.lognormal(0.0, 1.0, size=5000)
    s = Summary("tokens", "Tokens", quantiles=(0.5, 0.9, 0.99), clock=FakeClock())
    for v in data:
        s.observe(float(v))
    for q in (0.5, 0.9, 0.99):
        lower = float(np.quantile(data, q, method="lower"))
        higher = float(np.quantile(data, q, method="higher"))
        assert lower * (1 - 0.01) <= s.labels().quantile(q) <= higher * (1 + 0.01)
    assert s.labels().count == 5000
    assert s.labels().sum == pytest.approx(float(np.sum(data)), rel=1e-9)


def test_summary_window_rotates_with_the_clock() -> None:
    """An observation stays in the window for between 4/5 and all of max_age, then
    leaves it; count and sum keep it forever."""
    clock = FakeClock()
    s = Summary("lat", "Latency", max_age=10.0, age_buckets=5, clock=clock)
    child = s.labels()
    child.observe(100.0)
    clock.now += 5.0
    child.observe(1.0)
    assert child.quantile(1.0) == 100.0
    clock.now += 4.9  # 9.9 s after the first observation
    assert child.quantile(1.0) == 100.0
    clock.now += 0.1  # 10 s: the first age bucket is recycled
    assert child.quantile(1.0) == 1.0
    assert child.quantile(0.0) == 1.0
    clock.now += 10.0
    assert math.isnan(child.quantile(0.5))
    assert (child.count, child.sum) == (2, 101.0)


def test_summary_window_survives_long_idle_periods() -> None:
    """After hours without observations the ring is empty and works normally again."""
    clock = FakeClock()
    s = Summary("lat", "Latency", max_age=600.0, clock=clock)
    s.observe(3.0)
    clock.now += 7 * 3600.0
    assert math.isnan(s.labels().quantile(0.5))
    s.observe(7.0)
    assert s.labels().quantile(0.5) == 7.0


def test_summary_exposes_nan_quantiles_when_window_is_empty() -> None:
    """An empty window gives NaN quantile samples, as the Go client does."""
    s = Summary("lat", "Latency", quantiles=(0.5,))
    samples = s.collect().samples
    assert samples[0].name == "lat"
    assert samples[0].labels == (("quantile", "0.5"),)
    assert math.isnan(samples[0].value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"quantiles": (0.5, 1.5)}, "quantile 1.5 of summary 's' must be a number in [0, 1]"),
        ({"quantiles": (0.9, 0.5)}, "distinct and in increasing order"),
        ({"quantiles": (0.5, 0.5)}, "distinct and in increasing order"),
        ({"max_age": 0}, "max_age of summary 's' must be > 0 seconds"),
        ({"age_buckets": 0}, "age_buckets of summary 's' must be an integer >= 1"),
    ],
)
def test_bad_summary_options_raise(kwargs: dict[str, object], message: str) -> None:
    """Summary options are checked at definition."""
    with pytest.raises(ConfigError) as info:
        Summary("s", "S", **kwargs)  # type: ignore[arg-type]
    assert message in str(info.value)


def test_summary_reserves_the_quantile_label() -> None:
    """'quantile' is added by the exposition, so users cannot name a label so."""
    with pytest.raises(ConfigError, match="'quantile' of summary 's' is reserved"):
        Summary("s", "S", ["quantile"])


# Timer


def test_timer_context_manager_observes_elapsed_seconds() -> None:
    """The block's duration is observed (at least the time slept) and kept in elapsed."""
    h = Histogram("step", "Step time", unit="seconds")
    with h.time() as timer:
        time.sleep(0.01)
    assert timer.elapsed is not None and timer.elapsed >= 0.01
    assert h.labels().count == 1
    assert h.labels().sum == timer.elapsed


def test_timer_observes_even_when_the_block_raises() -> None:
    """A failing block is still timed, and the exception propagates unchanged."""
    h = Histogram("step", "Step time")
    with pytest.raises(KeyError), h.time():
        raise KeyError("boom")
    assert h.labels().count == 1


def test_timer_decorates_sync_and_async_functions() -> None:
    """Each call of a decorated function is one observation; results pass through."""
    s = Summary("call", "Call time", ["fn"])

    @s.labels("sync").time()
    def add(a: int, b: int) -> int:
        return a + b

    @s.labels("async").time()
    async def aadd(a: int, b: int) -> int:
        await asyncio.sleep(0)
        return a + b

    assert [add(1, 2) for _ in range(3)] == [3, 3, 3]
    assert asyncio.run(aadd(2, 2)) == 4
    assert add.__name__ == "add"
    assert s.labels("sync").count == 3
    assert s.labels("async").count == 1


def test_timer_decorator_is_safe_across_threads() -> None:
    """Concurrent calls of one decorated function each get their own start time."""
    h = Histogram("work", "Work", buckets=[0.05, 10])

    @h.time()
    def work() -> None:
        time.sleep(0.06)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts = dict(h.labels().bucket_counts())
    assert counts[0.05] == 0
    assert counts[10.0] == 4


# Concurrency and fork safety


def test_concurrent_increments_are_never_lost() -> None:
    """8 threads x 10 000 inc() on one child end at exactly 80 000."""
    c = Counter("hits", "Hits", ["k"])
    child = c.labels("x")
    barrier = threading.Barrier(8)

    def run() -> None:
        barrier.wait()
        for _ in range(10_000):
            child.inc()

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert child.value == 80_000.0


def test_concurrent_labels_create_one_child_per_label_set() -> None:
    """Threads racing on labels(...).inc() share children and lose no update."""
    c = Counter("hits", "Hits", ["k"])
    h = Histogram("sizes", "Sizes", ["k"])
    barrier = threading.Barrier(8)

    def run(seed: int) -> None:
        barrier.wait()
        for i in range(2000):
            key = str((i + seed) % 10)
            c.labels(key).inc()
            h.labels(key).observe(i)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(c.children()) == 10
    assert sum(child.value for child in c.children()) == 16_000.0
    assert sum(child.count for child in h.children()) == 16_000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_can_record_when_a_lock_was_held_at_fork(registry: Registry) -> None:
    """A lock held by another thread at fork time is re-created in the child process,
    so the child's first inc() does not deadlock."""
    child = registry.counter("forked", "Forked", ["k"]).labels("x")
    child._lock.acquire()  # as if a parent thread were inside inc() at fork time
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child process
        child.inc()
        os._exit(0 if child.value == 1.0 else 1)
    child._lock.release()
    deadline = time.monotonic() + 10.0
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child deadlocked on a lock held at fork time")
        time.sleep(0.01)
    assert os.waitstatus_to_exitcode(status) == 0
