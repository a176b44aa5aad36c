"""Shared benchmark harness: competitors run interleaved in one process, medians of repeats.

Each case is a callable ``run(n) -> None`` that performs ``n`` operations. ``compare``
warms every case up, then runs rounds in which every case runs once in a shuffled
order, so drift on a shared, noisy machine hits all competitors alike.
"""

from __future__ import annotations

import gc
import json
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).parent / "results"


def compare(
    cases: Mapping[str, Callable[[int], object]],
    *,
    n: int,
    repeats: int = 15,
    warmup: int = 2,
    seed: int = 0,
    settle: Mapping[str, Callable[[], object]] | None = None,
    clock: Callable[[], int] = time.perf_counter_ns,
) -> dict[str, dict[str, float]]:
    """ns per operation for each case: median, p25, p75 and min over ``repeats`` rounds.

    ``settle[name]``, when given, runs untimed right after each timed run of that case:
    it drains the case's background work (a worker thread's queue) so that work is
    neither charged to this case nor left to steal time from the next one.
    ``clock=time.thread_time_ns`` measures the calling thread's own CPU time instead of
    wall time (which also counts waiting for the GIL while background threads work).
    """
    settle = settle or {}
    rng = random.Random(seed)
    names = list(cases)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(warmup):
        for name in names:
            cases[name](n)
            if name in settle:
                settle[name]()
    for _ in range(repeats):
        rng.shuffle(names)
        for name in names:
            gc.collect()
            t0 = clock()
            cases[name](n)
            samples[name].append((clock() - t0) / n)
            if name in settle:
                settle[name]()
    out: dict[str, dict[str, float]] = {}
    for name, values in samples.items():
        q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
        out[name] = {
            "median_ns": statistics.median(values),
            "p25_ns": q[0],
            "p75_ns": q[2],
            "min_ns": min(values),
            "repeats": len(values),
        }
    return out


def ratios(results: Mapping[str, Mapping[str, float]], base: str) -> dict[str, float]:
    """Median of each case divided by the median of ``base``."""
    ref = results[base]["median_ns"]
    return {name: r["median_ns"] / ref for name, r in results.items()}


def environment() -> dict[str, Any]:
    """What the figures were measured on."""
    import os

    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_results(name: str, payload: Mapping[str, Any]) -> Path:
    """Write ``bench/results/<name>.json`` and return its path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    body = {"benchmark": name, "environment": environment(), **payload}
    path.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
    return path


def print_table(title: str, rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
    """A plain aligned table on stdout (rich is not needed to read a benchmark)."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
