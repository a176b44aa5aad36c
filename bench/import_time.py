"""What ``import X`` adds to interpreter start-up, tachimeter against its neighbours.

Each run is a fresh interpreter (``python -c "import X"``), bytecode caches warm; runs are
interleaved across modules and the median of a bare ``python -c pass`` is subtracted.
DESIGN.md's budget: tachimeter adds at most 60 ms (prometheus_client adds about 60 ms,
the OpenTelemetry SDK about 130 ms, posthog about 230 ms on the reference machine).
"""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
import time

from bench.harness import print_table, write_results

MODULES = {
    "baseline": "pass",
    "tachimeter": "import tachimeter",
    "prometheus_client": "import prometheus_client",
    "opentelemetry_sdk": "import opentelemetry.sdk.trace",
    "posthog": "import posthog",
}


def main(repeats: int = 15) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    for code in MODULES.values():  # write bytecode caches first
        subprocess.run([sys.executable, "-c", code], env=env, check=True)
    samples: dict[str, list[float]] = {name: [] for name in MODULES}
    rng = random.Random(0)
    names = list(MODULES)
    for _ in range(repeats):
        rng.shuffle(names)
        for name in names:
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", MODULES[name]], env=env, check=True)
            samples[name].append((time.perf_counter() - started) * 1000)
    base = statistics.median(samples["baseline"])
    added = {name: statistics.median(v) - base for name, v in samples.items() if name != "baseline"}
    ratio = {name: added[name] / added["prometheus_client"] for name in added}
    print_table(
        f"import cost added to start-up (ms, median of {repeats}, baseline {base:.1f} ms)",
        [(name, f"{ms:.1f}", f"{ratio[name]:.2f}x") for name, ms in added.items()],
        ("module", "added ms", "vs prometheus_client"),
    )
    path = write_results(
        "import_time",
        {
            "unit": "milliseconds added over `python -c pass`",
            "baseline_ms": base,
            "added_ms": added,
            "ratio_to_prometheus_client": ratio,
            "goal": "tachimeter adds at most 60 ms (about prometheus_client's cost)",
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
