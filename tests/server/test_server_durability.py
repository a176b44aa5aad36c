"""Acknowledged means stored: across SIGKILL during ingest, and across a graceful stop."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

from serving import ServerProcess, stored_ids, wire_events

# Generous guards (never measurements): for enough batches to be acknowledged, and for
# the clients to notice the server is gone.
_WAIT = 60.0


def _ingest_until_stopped(
    server: ServerProcess, acked: list[str], failures: list[str], stop: threading.Event
) -> None:
    while not stop.is_set():
        events = wire_events(200, "durable_event")
        try:
            answer = server.request(
                "POST",
                "/v1/events",
                json.dumps(events).encode(),
                {"Content-Type": "application/json"},
                timeout=10,
            )
        except OSError as exc:  # the server went away mid-request: not acknowledged
            failures.append(type(exc).__name__)
            return
        if answer.status == 200:
            acked.extend(e["id"] for e in events)
        else:
            failures.append(str(answer.status))


def _run_clients(server: ServerProcess, stop_server: str) -> tuple[list[str], list[str]]:
    acked: list[str] = []
    failures: list[str] = []
    stop = threading.Event()
    clients = [
        threading.Thread(target=_ingest_until_stopped, args=(server, acked, failures, stop))
        for _ in range(3)
    ]
    for client in clients:
        client.start()
    deadline = time.monotonic() + _WAIT
    while len(acked) < 3_000 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(acked) >= 3_000, failures[:5]
    if stop_server == "kill":
        server.kill()
    else:
        assert server.stop() == -signal.SIGTERM, "".join(server.stderr_lines)[-2000:]
        assert server.stopped_cleanly(), server.stdout_lines
    stop.set()
    for client in clients:
        client.join(_WAIT)
    return list(acked), failures


def test_every_acknowledged_event_survives_sigkill_during_ingest(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "analytics.db", {"rate_limit_per_second": 0})
    try:
        acked, _ = _run_clients(server, "kill")
    finally:
        server.kill()
    stored = stored_ids(server.db)
    missing = set(acked) - stored
    assert not missing, f"{len(missing)} acknowledged events lost of {len(acked)}"
    restarted = ServerProcess(server.db, {"rate_limit_per_second": 0})
    try:
        assert restarted.get("/readyz").status == 200
        answer = restarted.get("/v1/events/search?event=durable_event&limit=1")
        assert answer.status == 200 and answer.json()["events"]
    finally:
        restarted.stop()


def test_a_graceful_stop_commits_everything_acknowledged(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "analytics.db", {"rate_limit_per_second": 0})
    try:
        acked, _ = _run_clients(server, "term")
    finally:
        server.kill()
    assert set(acked) <= stored_ids(server.db)
