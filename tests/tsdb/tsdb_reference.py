"""Independent truth for the time-series tests: seeded data and plain-Python recomputations.

Nothing here shares code with ``tachimeter.analyze.metrics`` or the store: rates follow
Prometheus 2.x's ``extrapolatedRate`` line by line, one series and one time at a time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

US = 1_000_000
T0 = 1_767_225_600 * US  # 2026-01-01T00:00:00Z


@dataclass
class Series:
    """One seeded series: name, labels, kind and samples (us timestamps)."""

    name: str
    labels: dict[str, str]
    kind: str  # counter | gauge | histogram (observations) | delta
    ts: np.ndarray
    values: np.ndarray
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def metric_type(self) -> str:
        return {"delta": "counter", "histogram": "histogram"}.get(self.kind, self.kind)

    @property
    def temporality(self) -> str:
        return "delta" if self.kind == "delta" else "cumulative"


def seeded_series(seed: int, hours: float = 6.0, start: int = T0) -> list[Series]:
    """Counters with resets and gaps, 2-decimal gauges, observation series, delta counters,
    irregular timestamps (jitter, missed samples) and a late-starting series."""
    rng = np.random.default_rng(seed)
    out: list[Series] = []
    n = int(hours * 240)

    def stamps(
        interval_s: float, jitter_ms: float, count: int, offset_s: float = 0.0
    ) -> np.ndarray:
        base = start + int(offset_s * US) + np.arange(count, dtype=np.int64) * int(interval_s * US)
        jitter = np.round(rng.normal(0, jitter_ms, count)).astype(np.int64) * 1000
        ts = base + np.abs(jitter)
        keep = rng.random(count) > 0.01
        return np.unique(ts[keep])

    for route in ("api", "web", "admin"):
        for code in ("200", "500"):
            ts = stamps(15, 40, n, rng.uniform(0, 15))
            inc = rng.poisson(rng.uniform(1, 50), len(ts)).astype(float)
            values = np.cumsum(inc)
            for r in rng.choice(np.arange(10, len(ts)), size=3, replace=False):
                values[r:] -= values[r - 1]  # a restart: counting from zero again
            out.append(
                Series("http_requests_total", {"route": route, "code": code}, "counter", ts, values)
            )
    for key in ("a", "b", "c", "d"):
        ts = stamps(15, 25, n, rng.uniform(0, 15))
        walk = np.round(rng.uniform(10, 100) + np.cumsum(rng.normal(0, 0.3, len(ts))), 2)
        out.append(
            Series(
                "queue_depth",
                {"queue": key, "zone": "eu" if key in "ab" else "us"},
                "gauge",
                ts,
                walk,
            )
        )
    ts = stamps(60, 500, int(hours * 60), 3600.0)  # starts an hour late, scraped each minute
    out.append(
        Series(
            "queue_depth",
            {"queue": "late", "zone": "us"},
            "gauge",
            ts,
            np.round(rng.uniform(0, 5, len(ts)), 2),
        )
    )
    for kind in ("fast", "slow"):
        count = int(hours * 3600 * 2)
        ts = np.unique(start + np.sort(rng.integers(0, int(hours * 3600 * US), count)))
        scale = 0.05 if kind == "fast" else 2.0
        out.append(
            Series(
                "tool_latency_seconds",
                {"tool": kind},
                "histogram",
                ts,
                rng.lognormal(np.log(scale), 0.6, len(ts)),
            )
        )
    for model in ("m1", "m2"):
        ts = np.unique(start + np.sort(rng.integers(0, int(hours * 3600 * US), 500)))
        out.append(
            Series(
                "tokens",
                {"model": model},
                "delta",
                ts,
                rng.integers(1, 2000, len(ts)).astype(float),
            )
        )
    buckets = (0.1, 0.5, 1.0, 5.0, math.inf)
    ts = stamps(15, 30, n, 7.0)
    obs = rng.poisson(20, (len(ts), len(buckets)))
    cumulative = np.cumsum(np.cumsum(obs, axis=1), axis=0).astype(float)
    for i, le in enumerate(buckets):
        out.append(
            Series(
                "job_duration_seconds_bucket",
                {"le": "+Inf" if math.isinf(le) else str(le)},
                "counter",
                ts,
                cumulative[:, i].copy(),
            )
        )
    return out


def write_all(tsdb: object, series: Sequence[Series]) -> None:
    """Store every series through ``write_samples``."""
    for s in series:
        tsdb.write_samples(  # type: ignore[attr-defined]
            s.name,
            s.labels,
            s.ts,
            s.values,
            metric_type=s.metric_type,
            temporality=s.temporality,
        )


def prometheus_rate(
    ts: np.ndarray, values: np.ndarray, t: int, window: int, is_rate: bool
) -> float | None:
    """Prometheus 2.x ``extrapolatedRate`` for a counter at time ``t`` (us), range
    ``[t - window, t]``; None when fewer than two samples."""
    lo, hi = t - window, t
    points = [(int(a), float(b)) for a, b in zip(ts, values, strict=True) if lo <= a <= hi]
    if len(points) < 2:
        return None
    result = points[-1][1] - points[0][1]
    prev = points[0][1]
    for _, v in points[1:]:
        if v < prev:
            result += prev
        prev = v
    to_start = (points[0][0] - lo) / US
    to_end = (hi - points[-1][0]) / US
    sampled = (points[-1][0] - points[0][0]) / US
    average = sampled / (len(points) - 1)
    if result > 0 and points[0][1] >= 0:
        to_zero = sampled * (points[0][1] / result)
        if to_zero < to_start:
            to_start = to_zero
    threshold = average * 1.1
    interval = sampled
    interval += to_start if to_start < threshold else average / 2
    interval += to_end if to_end < threshold else average / 2
    result *= interval / sampled
    if is_rate:
        result /= window / US
    return result


def instant_value(ts: np.ndarray, values: np.ndarray, t: int, lookback: int) -> float | None:
    """The last sample in ``[t - lookback, t]``."""
    hit = np.flatnonzero((ts >= t - lookback) & (ts <= t))
    return float(values[hit[-1]]) if len(hit) else None


def exact_increase(ts: np.ndarray, values: np.ndarray, start: int, end: int) -> float:
    """Reset-aware increase of a cumulative counter over ``[start, end)``: each sample in
    the range adds its rise from the sample before it (its own value after a reset)."""
    total = 0.0
    for i in range(1, len(ts)):
        if start <= ts[i] < end:
            rise = values[i] - values[i - 1]
            total += rise if rise >= 0 else values[i]
    return total


def bucket_quantile_reference(q: float, bounds: Sequence[float], counts: Sequence[float]) -> float:
    """Prometheus' histogram_quantile on cumulative counts (inputs already by bound)."""
    pairs = sorted(zip(bounds, counts, strict=True))
    running = -math.inf
    fixed = []
    for b, c in pairs:
        running = max(running, c)
        fixed.append((b, running))
    total = fixed[-1][1]
    if total == 0:
        return math.nan
    rank = q * total
    for i, (b, c) in enumerate(fixed[:-1]):
        if c >= rank:
            low = 0.0 if i == 0 else fixed[i - 1][0]
            below = 0.0 if i == 0 else fixed[i - 1][1]
            if i == 0 and b <= 0:
                return b
            return low + (b - low) * ((rank - below) / (c - below))
    return fixed[-2][0]
