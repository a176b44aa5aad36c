"""A real ``tachimeter`` server in a subprocess on 127.0.0.1, and a small HTTP client.

The server runs as its own process (as ``tachimeter serve`` does) on an ephemeral port,
so tests can kill it (SIGKILL included) and talk to it from other processes. Its
settings are passed as JSON, its store is a file in the test's temporary directory.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from tachimeter.model.codec import event_to_builtins
from tachimeter.model.events import AnalyticsEvent

_LAUNCHER = """
import json, sys
from tachimeter.server.runner import run_server
from tachimeter.server.settings import load_server_settings
settings = load_server_settings(**json.loads(sys.argv[2]))
run_server(store_path=sys.argv[1], settings=settings, log_level="warning")
"""

# Starting the interpreter, importing the server and migrating a new store: seconds at
# most; a generous guard, never a measurement.
_START_SECONDS = 60.0


class Answer(NamedTuple):
    """One HTTP answer."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class ServerProcess:
    """A server subprocess; ``url`` once started. Stop it with :meth:`stop` or :meth:`kill`."""

    def __init__(
        self,
        db: Path,
        settings: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.db = db
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("TACHIMETER_")}
        child_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _LAUNCHER, str(db), json.dumps({"port": 0, **(settings or {})})],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env,
            cwd=db.parent,
        )
        self.stderr_lines: list[str] = []
        self.stdout_lines: list[str] = []
        self.url = self._wait_for_url()
        parts = urllib.parse.urlsplit(self.url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        threading.Thread(target=self._drain, daemon=True).start()

    def _wait_for_url(self) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + _START_SECONDS
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.startswith("tachimeter server listening on "):
                return line.rsplit(" ", 1)[1].strip()
        self.proc.kill()
        _, err = self.proc.communicate(timeout=10)
        raise RuntimeError(f"the server did not start: {err[-2000:]}")

    def _drain(self) -> None:
        assert self.proc.stdout is not None and self.proc.stderr is not None
        stdout = self.proc.stdout
        threading.Thread(
            target=lambda: self.stdout_lines.extend(iter(stdout.readline, "")), daemon=True
        ).start()
        for line in self.proc.stderr:
            self.stderr_lines.append(line)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> Answer:
        """One request on a fresh connection."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=dict(headers or {}))
            response = conn.getresponse()
            return Answer(
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                response.read(),
            )
        finally:
            conn.close()

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> Answer:
        return self.request("GET", path, headers=headers)

    def post_json(
        self, path: str, payload: Any, headers: Mapping[str, str] | None = None
    ) -> Answer:
        return self.request(
            "POST",
            path,
            json.dumps(payload).encode(),
            {"Content-Type": "application/json", **(headers or {})},
        )

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: the graceful shutdown. The exit status (-SIGTERM after a
        complete shutdown: uvicorn re-raises the signal)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def stopped_cleanly(self) -> bool:
        """Whether the server said it stopped with every accepted event committed."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if any("every accepted event committed" in line for line in self.stdout_lines):
                return True
            time.sleep(0.05)
        return False

    def kill(self) -> None:
        """SIGKILL: no shutdown at all."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


def wire_events(count: int, name: str = "feature_used", **properties: Any) -> list[dict[str, Any]]:
    """``count`` valid events in their wire shape, timestamped now."""
    out = []
    for index in range(count):
        event = AnalyticsEvent.new(name, {"feature": "search", "index": index, **properties})
        out.append(event_to_builtins(event))
    return out


def stored_ids(path: Path) -> set[str]:
    """Every event id in a store file (read with plain sqlite3, independent of the server)."""
    import sqlite3

    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        return {row[0] for row in conn.execute("SELECT id FROM analytics_events")}
    finally:
        conn.close()


def now_text() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
