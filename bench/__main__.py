"""Run every benchmark: ``python -m bench [name ...]``; results in bench/results/*.json."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = [
    "model",
    "collector",
    "metrics",
    "import_time",
    "store",
    "queries",
    "missions",
    "tsdb",
    "anomalies",
    "server",
    "dashboard",
    "demo",
]


def main(argv: list[str]) -> int:
    selected = argv or BENCHMARKS
    for name in selected:
        if name not in BENCHMARKS:
            print(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
            return 2
    for name in selected:
        print(f"== bench/{name}.py")
        importlib.import_module(f"bench.{name}").main()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
