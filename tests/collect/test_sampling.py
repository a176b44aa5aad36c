"""Sampling: the kept fraction matches the rate; min-per-window is exact; windows reset."""

from __future__ import annotations

import math
import threading
from typing import Any

import pytest
from collecting import FakeClock, make_config

from tachimeter.collect.sampling import Sampler
from tachimeter.collect.sinks import MemorySink
from tachimeter.model import SamplingConfig

Z_999 = 3.2905  # two-sided 99.9% normal quantile


def binomial_interval(n: int, p: float) -> tuple[float, float]:
    """99.9% interval of the kept count for n Bernoulli(p) trials (normal approximation)."""
    sd = math.sqrt(n * p * (1 - p))
    return n * p - Z_999 * sd, n * p + Z_999 * sd


@pytest.mark.parametrize("rate", [0.01, 0.1, 0.5, 0.9])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kept_fraction_matches_the_rate(rate: float, seed: int) -> None:
    sampler = Sampler(SamplingConfig(rate=rate, min_per_window=0, window_seconds=60), seed=seed)
    n = 50_000
    kept = sum(sampler.keep(0) for _ in range(n))
    low, high = binomial_interval(n, rate)
    assert low <= kept <= high


def test_min_per_window_is_honoured_exactly() -> None:
    sampler = Sampler(SamplingConfig(rate=0.0, min_per_window=7, window_seconds=10), seed=0)
    second = 1_000_000_000
    kept_first = sum(sampler.keep(t * 1000) for t in range(1000))
    assert kept_first == 7
    kept_second = sum(sampler.keep(10 * second + t) for t in range(1000))
    assert kept_second == 7  # the window reset
    assert sampler.keep(10 * second + 9 * second) is False  # same window still


def test_min_then_rate_in_one_window() -> None:
    sampler = Sampler(SamplingConfig(rate=0.5, min_per_window=100, window_seconds=60), seed=4)
    n = 20_000
    kept = sum(sampler.keep(0) for _ in range(n))
    low, high = binomial_interval(n - 100, 0.5)
    assert 100 + low <= kept <= 100 + high


def test_rate_one_skips_the_sampler() -> None:
    assert Sampler(SamplingConfig(rate=1.0)).always_keeps
    assert not Sampler(SamplingConfig(rate=0.99)).always_keeps


def test_seeded_sampling_is_deterministic() -> None:
    config = SamplingConfig(rate=0.3, min_per_window=0)
    first = [Sampler(config, seed=9).keep(0) for _ in range(1)]
    a, b = Sampler(config, seed=9), Sampler(config, seed=9)
    assert [a.keep(0) for _ in range(500)] == [b.keep(0) for _ in range(500)]
    assert first


def test_collector_applies_spec_defaults_and_overrides(collectors: Any) -> None:
    clock = FakeClock()
    sink = MemorySink()
    config = make_config(
        sampling={"per_event_type": {"feature_used": {"rate": 0.0, "min_per_window": 3}}}
    )
    collector = collectors(config, sinks=[sink], clock=clock)
    for _ in range(50):
        collector.track("feature_used")
        collector.track("cpu_usage")  # performance: rate 0.1, min 10 per 60 s
        collector.track("error_occurred")  # error: rate 1.0
    clock.advance(61)
    for _ in range(5):
        collector.track("feature_used")
    assert collector.flush(timeout=10)
    names = [e.event_name for e in sink.events()]
    assert names.count("feature_used") == 3 + 3
    assert names.count("error_occurred") == 50
    assert 10 <= names.count("cpu_usage") <= 50
    stats = collector.stats()
    assert stats.events_sampled_out == 55 - 6 + 50 - names.count("cpu_usage")
    assert stats.balanced()


def test_min_per_window_is_exact_with_threads_deciding_at_once() -> None:
    """Decisions take no collector lock: the window's minimum still holds exactly."""
    sampler = Sampler(SamplingConfig(rate=0.0, min_per_window=37, window_seconds=60), seed=0)
    kept: list[int] = []
    barrier = threading.Barrier(8)

    def decide() -> None:
        barrier.wait()
        kept.append(sum(sampler.keep(5) for _ in range(2_000)))

    threads = [threading.Thread(target=decide) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sum(kept) == 37
    assert sampler.keep(60 * 10**9 + 5) is True  # the next window starts with the next event


def test_a_sampler_without_minimum_is_a_single_draw() -> None:
    """The collector inlines draw() < rate; with a minimum it must call keep()."""
    plain = Sampler(SamplingConfig(rate=0.25, min_per_window=0), seed=3)
    single = plain.single_draw
    assert single is not None and single[1] == 0.25
    twin = Sampler(SamplingConfig(rate=0.25, min_per_window=0), seed=3)
    draw, rate = single
    assert [draw() < rate for _ in range(200)] == [twin.keep(0) for _ in range(200)]
    assert Sampler(SamplingConfig(rate=0.25, min_per_window=1)).single_draw is None
