"""A deterministic generator of scraped time series, shaped like a Prometheus server's data.

Series come in *instances* (scrape targets) of 20: every series of an instance shares the
instance's scrape timestamps, as series scraped together do in Prometheus. Per instance:

* 8 counters (40%): 4 names x 2 routes; increments are Poisson, and a restart of the
  instance (about once a day, at random) resets all of its counters together;
* 6 gauges (30%): 3 names x 2 keys; random walks rounded to 2 decimals;
* 4 histogram bucket counters (20%): one ``app_request_duration_seconds_bucket`` with
  ``le`` 0.1, 0.5, 2.5, +Inf, fed by lognormal latencies, reset with the instance;
* 2 nearly constant series (10%): a value that changes about twice a day.

Timestamps are integer milliseconds (Prometheus' precision): a fixed per-instance offset
within the interval, per-scrape scheduling jitter (|N(0, 3 ms)|, plus a delay of up to
500 ms on 0.5% of scrapes) and 0.05% missed scrapes. Everything derives from one
``numpy.random.Generator`` seed, so two runs give identical data.

>>> data = generate(n_series=40, hours=1, seed=1)
>>> len(data.series), data.samples == sum(len(s.values) for s in data.series)
(40, True)
>>> generate(n_series=40, hours=1, seed=1).series[5].values[-1] == data.series[5].values[-1]
True
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["SERIES_PER_INSTANCE", "Dataset", "GeneratedSeries", "generate", "write_openmetrics"]

SERIES_PER_INSTANCE = 20
# 2026-01-01T00:00:00Z: a round start keeps 2-hour windows aligned with the data.
DEFAULT_START_MS = 1_767_225_600_000

_COUNTERS = ("app_requests", "app_responses_bytes", "app_cache_lookups", "app_jobs_processed")
_ROUTES = ("api", "web")
_GAUGES = ("app_queue_depth_ratio", "app_temperature_celsius", "app_heap_used_megabytes")
_GAUGE_KEYS = ("a", "b")
_BUCKETS = (0.1, 0.5, 2.5, math.inf)
_CONSTANTS = ("app_max_connections", "app_config_generation")

# Per-scrape probabilities (15 s scrapes: 5760 a day).
_RESTART_P = 1 / 5000  # about one restart per instance per day
_MISSED_P = 0.0005
_DELAY_P = 0.005
_CONSTANT_CHANGE_P = 1 / 3000


@dataclass(frozen=True, slots=True)
class GeneratedSeries:
    """One series: Prometheus sample name, labels, ms timestamps and float values."""

    name: str
    family: str
    kind: str
    labels: dict[str, str]
    timestamps_ms: np.ndarray
    values: np.ndarray


@dataclass(frozen=True, slots=True)
class Dataset:
    """The generated series and the range they cover."""

    series: list[GeneratedSeries]
    start_ms: int
    end_ms: int
    interval_ms: int

    @property
    def samples(self) -> int:
        """Total number of samples."""
        return sum(len(s.values) for s in self.series)


def generate(
    n_series: int = 1000,
    hours: float = 24.0,
    interval_s: float = 15.0,
    seed: int = 0,
    start_ms: int = DEFAULT_START_MS,
) -> Dataset:
    """``n_series`` series (a multiple of 20) over ``hours`` hours at ``interval_s``."""
    if n_series % SERIES_PER_INSTANCE:
        raise ValueError(f"n_series must be a multiple of {SERIES_PER_INSTANCE}, got {n_series}")
    rng = np.random.default_rng(seed)
    interval_ms = round(interval_s * 1000)
    scrapes = int(hours * 3600 * 1000 // interval_ms)
    series: list[GeneratedSeries] = []
    for index in range(n_series // SERIES_PER_INSTANCE):
        series.extend(
            _instance(
                rng, f"10.0.{index // 250}.{index % 250}:9100", start_ms, interval_ms, scrapes
            )
        )
    return Dataset(series, start_ms, start_ms + scrapes * interval_ms, interval_ms)


def _instance(
    rng: np.random.Generator, instance: str, start_ms: int, interval_ms: int, scrapes: int
) -> Iterator[GeneratedSeries]:
    offset = int(rng.integers(0, interval_ms))
    jitter = np.abs(rng.normal(0.0, 3.0, scrapes))
    delayed = rng.random(scrapes) < _DELAY_P
    jitter[delayed] += rng.uniform(0, 500, int(delayed.sum()))
    grid = start_ms + offset + np.arange(scrapes, dtype=np.int64) * interval_ms
    kept = rng.random(scrapes) >= _MISSED_P
    ts = (grid + np.round(jitter).astype(np.int64))[kept]
    n = len(ts)
    # Index of the last restart at or before each scrape (0: none yet).
    restarts = rng.random(n) < _RESTART_P
    restarts[0] = False
    epoch = np.maximum.accumulate(np.where(restarts, np.arange(n), 0))

    def cumulative(increments: np.ndarray) -> np.ndarray:
        total = np.cumsum(increments, axis=0)
        before = np.concatenate([np.zeros((1, *total.shape[1:])), total[:-1]])
        # A restarted process counts from zero: subtract what was counted before it.
        return total - np.where(
            (epoch > 0).reshape(-1, *([1] * (total.ndim - 1))), before[epoch], 0
        )

    base = {"instance": instance, "job": "app"}
    for name in _COUNTERS:
        for route in _ROUTES:
            rate = rng.lognormal(1.0, 1.2)  # per second: 0.3 .. 20 typically
            increments = rng.poisson(rate * interval_ms / 1000, n).astype(np.float64)
            if name == "app_responses_bytes":
                increments *= 512.0
            yield GeneratedSeries(
                f"{name}_total",
                name,
                "counter",
                {**base, "route": route},
                ts,
                cumulative(increments),
            )
    for name in _GAUGES:
        for key in _GAUGE_KEYS:
            level = rng.uniform(10, 1000)
            walk = level + np.cumsum(rng.normal(0.0, 0.05, n))
            yield GeneratedSeries(name, name, "gauge", {**base, "key": key}, ts, np.round(walk, 2))
    observations = rng.poisson(rng.lognormal(1.5, 0.8) * interval_ms / 1000, n)
    mu = rng.normal(-1.0, 0.4)
    cdf = np.array([_lognormal_cdf(le, mu, 1.0) for le in _BUCKETS])
    probabilities = np.diff(np.concatenate([[0.0], cdf]))
    per_bucket = rng.multinomial(observations, probabilities).astype(np.float64)
    counts = cumulative(np.cumsum(per_bucket, axis=1))
    for column, le in enumerate(_BUCKETS):
        yield GeneratedSeries(
            "app_request_duration_seconds_bucket",
            "app_request_duration_seconds",
            "histogram",
            {**base, "le": _format_le(le)},
            ts,
            counts[:, column].copy(),
        )
    for name in _CONSTANTS:
        changes = rng.random(n) < _CONSTANT_CHANGE_P
        levels = rng.integers(1, 4096, n).astype(np.float64)
        first = float(rng.integers(1, 4096))
        change_at = np.maximum.accumulate(np.where(changes, np.arange(n), -1))
        values = np.where(change_at >= 0, levels[np.maximum(change_at, 0)], first)
        yield GeneratedSeries(name, name, "gauge", dict(base), ts, values)


def _lognormal_cdf(x: float, mu: float, sigma: float) -> float:
    if math.isinf(x):
        return 1.0
    return 0.5 * (1.0 + math.erf((math.log(x) - mu) / (sigma * math.sqrt(2.0))))


def _format_le(le: float) -> str:
    return "+Inf" if math.isinf(le) else repr(le)


def write_openmetrics(data: Dataset, path: Path) -> int:
    """Write ``data`` as OpenMetrics text for ``promtool tsdb create-blocks-from
    openmetrics`` (families contiguous, samples in time order, ``# EOF``); returns bytes.

    Integral values are written as integers, others with ``repr`` (exact); timestamps as
    seconds with milliseconds. Series of one instance share their timestamp strings.
    """
    by_family: dict[str, list[GeneratedSeries]] = {}
    for s in data.series:
        by_family.setdefault(s.family, []).append(s)
    stamps: dict[int, list[str]] = {}
    written = 0
    with path.open("w", encoding="ascii") as out:
        for family, members in by_family.items():
            header = f"# TYPE {family} {members[0].kind}\n"
            out.write(header)
            written += len(header)
            for s in members:
                times = stamps.get(id(s.timestamps_ms))
                if times is None:
                    ms = s.timestamps_ms
                    times = [
                        f" {a}.{b:03d}\n"
                        for a, b in zip((ms // 1000).tolist(), (ms % 1000).tolist(), strict=True)
                    ]
                    stamps[id(s.timestamps_ms)] = times
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                prefix = f"{s.name}{{{labels}}} "
                values = s.values
                if np.all(values == np.round(values)) and np.abs(values).max() < 1e15:
                    texts = map(str, values.astype(np.int64).tolist())
                else:
                    texts = map(repr, values.tolist())
                lines = "".join([prefix + v + t for v, t in zip(texts, times, strict=True)])
                out.write(lines)
                written += len(lines)
        out.write("# EOF\n")
    return written + 6
