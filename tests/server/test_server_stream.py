"""GET /v1/stream: ingested events arrive live, filtered, with heartbeats, resumable."""

from __future__ import annotations

import contextlib
import http.client
import json
import queue
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from serving import ServerProcess, wire_events

# Generous guard for an event to travel ingest -> commit -> stream; never a measurement.
_WAIT = 10.0


class _Frame(dict[str, str]):
    """One server-sent event: its fields (id, event, data) or a comment."""


@contextmanager
def _stream(
    server: ServerProcess, path: str, headers: dict[str, str] | None = None
) -> Iterator[queue.Queue[_Frame]]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    assert response.status == 200, response.read()
    assert response.getheader("content-type", "").startswith("text/event-stream")
    frames: queue.Queue[_Frame] = queue.Queue()

    def read() -> None:
        frame = _Frame()
        try:
            for raw in response:
                line = raw.decode().rstrip("\n")
                if not line:
                    if frame:
                        frames.put(frame)
                    frame = _Frame()
                elif line.startswith(":"):
                    frames.put(_Frame(comment=line[1:].strip()))
                else:
                    key, _, value = line.partition(":")
                    frame[key] = value.strip()
        except (OSError, ValueError, AttributeError, http.client.HTTPException):
            # the test closed the connection under the reader
            return

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    try:
        yield frames
    finally:
        # Shut the socket down first: the reader blocked in recv() holds the response's
        # buffer lock, and closing the response would wait for the next heartbeat.
        if conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)
        thread.join(_WAIT)
        conn.close()


def _next_event(frames: queue.Queue[_Frame], kind: str = "event") -> _Frame:
    deadline = time.monotonic() + _WAIT
    while True:
        frame = frames.get(timeout=max(0.01, deadline - time.monotonic()))
        if frame.get("event") == kind:
            return frame


def _data(frame: _Frame) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(frame["data"])
    return loaded


def test_an_ingested_event_appears_on_the_stream(server: ServerProcess) -> None:
    with _stream(server, "/v1/stream") as frames:
        events = wire_events(2, "live_event")
        assert server.post_json("/v1/events", events).status == 200
        got = [_data(_next_event(frames)) for _ in range(2)]
    assert [g["id"] for g in got] == [e["id"] for e in events]
    assert got[0]["event_name"] == "live_event" and got[0]["properties"]["index"] == 0


def test_filters_by_name_and_category(server: ServerProcess) -> None:
    with _stream(server, "/v1/stream?event=feature_used,wanted_event&category=usage") as frames:
        server.post_json("/v1/events", wire_events(1, "wanted_event"))  # category custom
        server.post_json("/v1/events", wire_events(1, "unwanted_event"))
        (wanted,) = wire_events(1, "feature_used")
        server.post_json("/v1/events", [wanted])
        got = _data(_next_event(frames))
        assert (got["id"], got["category"]) == (wanted["id"], "usage")


def test_idle_streams_get_heartbeats(server: ServerProcess) -> None:
    with _stream(server, "/v1/stream?event=never_sent&heartbeat=0.5") as frames:
        deadline = time.monotonic() + _WAIT
        while True:
            frame = frames.get(timeout=max(0.01, deadline - time.monotonic()))
            if frame.get("comment", "").startswith("heartbeat"):
                break


def test_last_event_id_resumes_and_a_foreign_id_resets(server: ServerProcess) -> None:
    with _stream(server, "/v1/stream?event=resumed_event") as frames:
        first, second, third = wire_events(3, "resumed_event")
        server.post_json("/v1/events", [first])
        seen = _next_event(frames)
    server.post_json("/v1/events", [second, third])
    with _stream(server, "/v1/stream?event=resumed_event", {"Last-Event-ID": seen["id"]}) as frames:
        replayed = [_data(_next_event(frames))["id"] for _ in range(2)]
    assert replayed == [second["id"], third["id"]]
    with _stream(server, "/v1/stream", {"Last-Event-ID": "deadbeef-12"}) as frames:
        reset = _next_event(frames, "reset")
    assert "restarted" in _data(reset)["reason"]
