"""The real Prometheus Alertmanager (Debian's prometheus-alertmanager) as a receiver: a
firing Tachimeter alert appears in its API, is routed to its webhook receiver, and
resolves when the condition clears."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
from alerting import Gauge

from tachimeter.alerts import AlertManager, AlertmanagerChannel, AlertRule, MetricThreshold

# Generous guards: Alertmanager starts in about a second and routes after group_wait.
GUARD_SECONDS = 30.0
T = TypeVar("T")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(what: str, probe: Callable[[], T | None], timeout: float = GUARD_SECONDS) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found is not None:
            return found
        time.sleep(0.1)
    raise AssertionError(f"waited {timeout:.0f} s for {what}")


class Hook:
    """Alertmanager's webhook receiver: keeps each posted group."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with hook.lock:
                    hook.posts.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/alerts"

    def find(self, status: str, alertname: str) -> dict[str, Any] | None:
        with self.lock:
            for post in self.posts:
                for alert in post.get("alerts", []):
                    if alert["status"] == status and alert["labels"]["alertname"] == alertname:
                        return dict(alert)
        return None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    server = Hook()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def alertmanager(alertmanager_binary: str, hook: Hook, tmp_path: Path) -> Iterator[str]:
    """A running Alertmanager on a free port, routing everything to ``hook``."""
    config = tmp_path / "alertmanager.yml"
    config.write_text(
        "route:\n"
        "  receiver: hook\n"
        "  group_by: ['alertname']\n"
        "  group_wait: 1s\n"
        "  group_interval: 1s\n"
        "  repeat_interval: 1h\n"
        "receivers:\n"
        "  - name: hook\n"
        "    webhook_configs:\n"
        f"      - url: {hook.url}\n"
        "        send_resolved: true\n"
    )
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "alertmanager.log").open("w")
    process = subprocess.Popen(
        [
            alertmanager_binary,
            f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            f"--storage.path={tmp_path / 'data'}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def ready() -> bool | None:
            if process.poll() is not None:
                raise AssertionError(
                    f"alertmanager exited with {process.returncode}: "
                    f"{(tmp_path / 'alertmanager.log').read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
                    return True if response.status == 200 else None
            except (urllib.error.URLError, OSError):
                return None

        _wait("alertmanager to be ready", ready)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        log.close()


def _active(url: str, alertname: str) -> list[dict[str, Any]]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{url}/api/v2/alerts", timeout=5) as response:
        alerts = json.loads(response.read())
    return [a for a in alerts if a["labels"].get("alertname") == alertname]


def test_a_firing_alert_reaches_alertmanager_is_routed_and_resolves(
    alertmanager: str, hook: Hook
) -> None:
    gauge = Gauge(250.0, {"queue": "events"})
    rule = AlertRule(
        "TachimeterQueueBacklog",
        MetricThreshold(gauge, ">", 100),
        severity="critical",
        labels={"team": "agents"},
        annotations={"summary": "{labels.queue} queue at {value:.0f}"},
    )
    channel = AlertmanagerChannel(alertmanager, resend_interval="10s")
    with AlertManager([rule], [channel], external_url="http://127.0.0.1:8000") as manager:
        manager.evaluate_rules()
        assert manager.flush(GUARD_SECONDS)
        assert manager.stats()["channels"]["alertmanager"]["sent"] == 1

        (active,) = _wait(
            "the alert in /api/v2/alerts",
            lambda: _active(alertmanager, "TachimeterQueueBacklog") or None,
        )
        assert active["labels"] == {
            "alertname": "TachimeterQueueBacklog",
            "severity": "critical",
            "team": "agents",
            "queue": "events",
        }
        assert active["annotations"] == {"summary": "events queue at 250"}
        assert active["generatorURL"] == "http://127.0.0.1:8000/alerts?rule=TachimeterQueueBacklog"
        assert active["status"]["state"] == "active"

        routed = _wait(
            "the firing alert at the webhook receiver",
            lambda: hook.find("firing", "TachimeterQueueBacklog"),
        )
        assert routed["labels"]["queue"] == "events"

        gauge.value = 20.0
        report = manager.evaluate_rules()
        assert [t.to_state.value for t in report.transitions] == ["resolved"]
        assert manager.flush(GUARD_SECONDS)

        _wait(
            "the alert to leave /api/v2/alerts",
            lambda: True if not _active(alertmanager, "TachimeterQueueBacklog") else None,
        )
        resolved = _wait(
            "the resolved alert at the webhook receiver",
            lambda: hook.find("resolved", "TachimeterQueueBacklog"),
        )
        assert resolved["endsAt"] >= resolved["startsAt"]
