"""HTTP ingest throughput of ``tachimeter serve`` and latency of its main queries.

One stream of agent-product events (``bench.store.agent_stream``: ``bench.datagen``'s
realistic product, 30 days that end at today's midnight UTC, 100 events per user) is
ingested three ways into fresh databases, in one run:

* ``raw``: ``bench/store.py``'s ceiling, plain ``executemany`` in 1 000-row transactions;
* ``http_100`` and ``http_1000``: ``POST /v1/events`` to a ``tachimeter serve``
  subprocess on 127.0.0.1, from a client in another process, in batches of 100 and
  1 000 events (JSON, gzip as the ``HttpSink`` sends them, bodies encoded before the
  clock starts), one request at a time on a keep-alive connection, as an ``HttpSink``
  does. The events are the ones raw stores (same ids, timestamps, data, the collector's
  metadata). The server runs every projection it runs by default (summaries, missions,
  event metrics), so these figures include them; ``raw`` has none.

The data are dated as a live product's are, over the last 30 days: most events are more
than 7 days old, so the server validates them with its age warning, as it would a
backfill (a live ``HttpSink`` sends events seconds old).

The three ways take turns, a twentieth of the stream at a time in a shuffled order
(``bench.store.interleave``), so load from other processes on a shared machine hits them
alike. Reported per way: events/s overall and over the last 10 %, database bytes per
event. Then, on the 1 000-batch database, p50/p99 latency of the main query endpoints
(30 calls each). The goal: ``http_1000 / raw >= 0.7``.

``TACHIMETER_BENCH_EVENTS`` sets the number of events (default 100 000).
Run alone with ``python -m bench server``.
"""

from __future__ import annotations

import datetime as dt
import gzip
import http.client
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any, Final

import msgspec

from bench.harness import print_table, write_results
from bench.store import (
    DAYS,
    Ingest,
    RawRun,
    Source,
    _db_bytes,
    _Run,
    agent_stream,
    data_start,
    interleave,
    source_event,
)

DEFAULT_EVENTS: Final = 100_000
QUERY_CALLS: Final = 30
_START_SECONDS: Final = 60.0


def _batches(stream: list[Source], size: int) -> list[bytes]:
    """The stream as gzip'd HttpSink envelopes of ``size`` events."""
    from tachimeter.model.codec import event_to_builtins
    from tachimeter.model.data import EventMetadata

    metadata = EventMetadata.from_environment()
    encode = msgspec.json.Encoder().encode
    bodies: list[bytes] = []
    for start in range(0, len(stream), size):
        batch = [event_to_builtins(source_event(s, metadata)) for s in stream[start : start + size]]
        body = encode({"batch_id": str(start), "sequence": start // size, "events": batch})
        bodies.append(gzip.compress(body, compresslevel=6, mtime=0))
    return bodies


def _client(url: str, size: int, n: int, conn_out: Any) -> None:
    """Runs in its own process: encode the bodies, then post the next ``k`` of them each
    time it is sent ``k`` (0 ends), answering with the seconds they took."""
    bodies = _batches(agent_stream(n), size)
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=300)
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    conn_out.send(len(bodies))
    position = 0
    while True:
        count = int(conn_out.recv())
        if count <= 0:
            return
        # The server closes a keep-alive connection idle for a few seconds (while the
        # other ways take their turn): each chunk starts on a fresh one.
        conn.close()
        conn.connect()
        started = time.perf_counter()
        for body in bodies[position : position + count]:
            conn.request("POST", "/v1/events", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"ingest answered {response.status}")
        position += count
        conn_out.send(time.perf_counter() - started)


class _Server:
    def __init__(self, db: Path) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tachimeter.cli",
                "serve",
                "--db",
                str(db),
                "--port",
                "0",
                "--log-level",
                "warning",
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=db.parent,
            env={k: v for k, v in os.environ.items() if not k.startswith("TACHIMETER_")},
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + _START_SECONDS
        self.url = ""
        while time.monotonic() < deadline and not self.url:
            line = self.proc.stdout.readline()
            if line.startswith("tachimeter server listening on "):
                self.url = line.rsplit(" ", 1)[1].strip()
        if not self.url:
            self.proc.kill()
            raise RuntimeError("the server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


class HttpRun(_Run):
    """A server and a client process that posts the stream in batches of ``size``."""

    def __init__(self, path: Path, stream: list[Source], size: int) -> None:
        super().__init__(path, stream)
        self.size = size
        self.server = _Server(path)
        self.pipe, child = multiprocessing.Pipe()
        self.client = multiprocessing.get_context("spawn").Process(
            target=_client, args=(self.server.url, size, self.events, child)
        )
        self.client.start()
        self.bodies = int(self.pipe.recv())  # the client encoded its bodies
        self.sent = 0

    def step(self, count: int) -> None:
        """Post the bodies that hold the next ``count`` events."""
        target = min(self.bodies, -(-(self.done + count) // self.size))
        if target > self.sent:  # a chunk smaller than a body may find it already sent
            self.pipe.send(target - self.sent)
            self.seconds += float(self.pipe.recv())
            self.sent = target
        self.done = min(self.events, self.done + count)
        self.progress.append((self.done, self.seconds))

    def finish(self) -> Ingest:
        """End the client; the server keeps serving (queries, then :meth:`stop`)."""
        self.pipe.send(0)
        self.client.join()
        return Ingest(self.events, self.progress, _db_bytes(self.path), {})


def query_latency(url: str) -> dict[str, dict[str, float]]:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    start = data_start()
    end = start + dt.timedelta(days=DAYS)
    span = f"start={start:%Y-%m-%d}&end={end:%Y-%m-%d}"
    paths = {
        "overview": "/v1/overview",
        "search": "/v1/events/search?limit=50",
        "trend_day": f"/v1/trends?interval=day&{span}",
        "trend_hour_breakdown": f"/v1/trends?event=tool_called&interval=hour&{span}&breakdown=tool",
        "event_names": f"/v1/events/names?{span}",
        "missions_metrics": f"/v1/missions/metrics?{span}",
    }
    out: dict[str, dict[str, float]] = {}
    for name, path in paths.items():
        times = []
        for _ in range(QUERY_CALLS):
            started = time.perf_counter()
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            times.append((time.perf_counter() - started) * 1000)
            if response.status != 200:
                raise RuntimeError(f"{path} answered {response.status}")
        times.sort()
        out[name] = {
            "p50_ms": round(statistics.median(times), 2),
            "p99_ms": round(times[min(len(times) - 1, int(0.99 * len(times)))], 2),
        }
    return out


def main() -> None:
    n = int(os.environ.get("TACHIMETER_BENCH_EVENTS", DEFAULT_EVENTS))
    stream = agent_stream(n)
    old = sum(s.timestamp < dt.datetime.now(dt.UTC) - dt.timedelta(days=7) for s in stream)
    with tempfile.TemporaryDirectory() as tmp:
        http_runs = {
            f"http_{size}": HttpRun(Path(tmp) / f"http_{size}.db", stream, size)
            for size in (100, 1000)
        }
        try:
            runs = interleave({"raw": RawRun(Path(tmp) / "raw.db", stream), **http_runs})
            latency = query_latency(http_runs["http_1000"].server.url)
        finally:
            for run in http_runs.values():
                run.server.stop()
    raw = runs["raw"]
    results: dict[str, Any] = {
        "events": n,
        "events_older_than_7_days": old,
        "ingest": {way: run.summary() for way, run in runs.items()},
        "ratio_over_raw": {
            way: round(run.rate / raw.rate, 3) for way, run in runs.items() if way != "raw"
        },
        "goal_ratio_http_1000_over_raw": 0.7,
        "query_latency_ms": latency,
    }
    print_table(
        f"HTTP ingest, {n} events ({old} older than 7 days)",
        [
            (
                way,
                f"{run.rate:.0f}",
                f"{run.rate / raw.rate:.2f}",
                f"{run.last_tenth_rate() / raw.last_tenth_rate():.2f}",
                f"{run.db_bytes / run.events:.0f}",
            )
            for way, run in runs.items()
        ],
        ("way", "events/s", "ratio to raw", "ratio last 10%", "bytes/event"),
    )
    print_table(
        "query latency (1000-batch database)",
        [(k, f"{v['p50_ms']:.1f}", f"{v['p99_ms']:.1f}") for k, v in latency.items()],
        ("endpoint", "p50 ms", "p99 ms"),
    )
    print(f"results: {write_results('server', results)}")


if __name__ == "__main__":
    main()
