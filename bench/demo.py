"""``make demo`` from a built venv to the printed URL: how long a first look takes.

Runs what ``make demo`` runs, ``tachimeter demo --events 20000 --store <tmp>/analytics.db
--serve``, on a free port, as a subprocess of the venv's console script; times from the
start to the line printing the dashboard's URL, and to the first 200 from ``/readyz``;
then stops it (SIGTERM). ``RUNS`` runs, median reported. Goal: under 60 s.

Run alone with ``python -m bench.demo``.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Final

from bench.harness import print_table, write_results

__all__ = ["main", "time_demo"]

EVENTS: Final = 20_000
RUNS: Final = 3
GOAL_SECONDS: Final = 60.0
# A guard, far above the goal: a demo that never prints its URL fails the benchmark.
_TIMEOUT_SECONDS: Final = 600.0
_URL_LINE: Final = "tachimeter server listening on "


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/readyz")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def time_demo(folder: Path) -> dict[str, Any]:
    """One ``make demo`` equivalent in ``folder``: seconds to the URL line and to ready."""
    tachimeter = Path(sys.executable).with_name("tachimeter")
    port = _free_port()
    lines: list[tuple[float, str]] = []
    started = time.perf_counter()
    proc = subprocess.Popen(
        [
            str(tachimeter),
            "demo",
            "--events",
            str(EVENTS),
            "--store",
            str(folder / "analytics.db"),
            "--serve",
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=folder,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("TACHIMETER_")},
            "COLUMNS": "100",
        },
    )
    assert proc.stdout is not None
    stdout = proc.stdout
    seen_url = threading.Event()

    def read() -> None:
        for line in stdout:
            lines.append((time.perf_counter() - started, line.rstrip("\n")))
            if line.startswith(_URL_LINE):
                seen_url.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if not seen_url.wait(_TIMEOUT_SECONDS):
            raise RuntimeError(
                "the demo never printed its URL:\n" + "\n".join(t for _, t in lines[-30:])
            )
        url_seconds = next(t for t, text in lines if text.startswith(_URL_LINE))
        while not _ready(port):
            if time.perf_counter() - started > _TIMEOUT_SECONDS:
                raise RuntimeError("the demo's server never became ready")
            time.sleep(0.05)
        ready_seconds = time.perf_counter() - started
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        reader.join(timeout=5)
    phases = {
        text.split(":")[0]: round(t, 2) for t, text in lines if text.startswith("store filled")
    }
    return {
        "url_seconds": round(url_seconds, 2),
        "ready_seconds": round(ready_seconds, 2),
        "milestones": phases,
        "store_bytes": sum(p.stat().st_size for p in folder.glob("analytics.db*")),
    }


def main() -> None:
    runs = []
    for _ in range(RUNS):
        with tempfile.TemporaryDirectory(prefix="tachimeter-demo-") as tmp:
            runs.append(time_demo(Path(tmp)))
    results = {
        "events": EVENTS,
        "goal_seconds": GOAL_SECONDS,
        "runs": runs,
        "median_url_seconds": round(statistics.median(r["url_seconds"] for r in runs), 2),
        "median_ready_seconds": round(statistics.median(r["ready_seconds"] for r in runs), 2),
    }
    print_table(
        f"make demo ({EVENTS} events), seconds from start",
        [
            (str(i + 1), f"{r['url_seconds']:.1f}", f"{r['ready_seconds']:.1f}")
            for i, r in enumerate(runs)
        ]
        + [
            (
                "median",
                f"{results['median_url_seconds']:.1f}",
                f"{results['median_ready_seconds']:.1f}",
            )
        ],
        ("run", "URL printed", "/readyz 200"),
    )
    print(f"results: {write_results('demo', results)}")


if __name__ == "__main__":
    main()
