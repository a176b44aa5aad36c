"""Channels: the webhook against a real local HTTP server (retries, backoff, signature,
timeouts), the log and console channels, and Alertmanager's payload."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import io
import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from alerting import START, FakeClock, Gauge, RecordingChannel

from tachimeter.alerts import (
    SIGNATURE_HEADER,
    AlertManager,
    AlertmanagerChannel,
    AlertRule,
    ConsoleChannel,
    LogChannel,
    MetricThreshold,
    Notification,
    RetryPolicy,
    WebhookChannel,
    sign_body,
)
from tachimeter.errors import SinkError


class Receiver:
    """A local HTTP server answering with the statuses of ``script``, then 200."""

    def __init__(self, script: list[int] | None = None, delay: float = 0.0) -> None:
        self.script = list(script or [])
        self.delay = delay
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.times: list[float] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.requests.append((dict(self.headers.items()), body))
                    receiver.times.append(time.monotonic())
                    status = receiver.script.pop(0) if receiver.script else 200
                if receiver.delay:
                    time.sleep(receiver.delay)
                self.send_response(status)
                if status == 503:
                    self.send_header("Retry-After", "0")
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
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver([500, 502])
    try:
        yield server
    finally:
        server.close()


def _notification(status: str = "firing") -> Notification:
    return Notification(
        status=status,  # type: ignore[arg-type]
        rule="HighErrorRate",
        fingerprint="0123456789abcdef",
        severity="critical",
        labels={"alertname": "HighErrorRate", "severity": "critical", "tool": "search"},
        annotations={"summary": "error rate 12 %"},
        value=0.12,
        threshold=0.05,
        starts_at=START,
        ends_at=START + dt.timedelta(minutes=5) if status == "resolved" else None,
        at=START + dt.timedelta(minutes=5),
    )


def test_webhook_retries_with_backoff_until_the_receiver_recovers(receiver: Receiver) -> None:
    delays: list[float] = []
    channel = WebhookChannel(
        "ops",
        receiver.url,
        secret="s3cret",
        retry=RetryPolicy(max_attempts=4, initial_backoff=0.05, max_backoff=1.0),
        sleep=lambda s: (delays.append(s), time.sleep(s)),  # type: ignore[func-returns-value]
    )
    channel.send([_notification()])
    assert len(receiver.requests) == 3  # 500, 502, then 200
    bodies = {body for _, body in receiver.requests}
    assert len(bodies) == 1, "a retry sends the same body"
    # Jittered exponential backoff: each wait in [nominal / 2, nominal].
    assert 0.025 <= delays[0] <= 0.05 and 0.05 <= delays[1] <= 0.1
    assert receiver.times[2] - receiver.times[1] >= 0.05 - 0.005
    headers, body = receiver.requests[-1]
    expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers[SIGNATURE_HEADER], expected)
    assert headers["Content-Type"] == "application/json"
    payload = json.loads(body)
    assert payload["version"] == "1" and payload["sender"] == "tachimeter"
    assert payload["notifications"] == [
        {
            "status": "firing",
            "rule": "HighErrorRate",
            "fingerprint": "0123456789abcdef",
            "severity": "critical",
            "labels": {"alertname": "HighErrorRate", "severity": "critical", "tool": "search"},
            "annotations": {"summary": "error rate 12 %"},
            "value": 0.12,
            "threshold": 0.05,
            "starts_at": "2026-03-02T09:00:00.000000Z",
            "ends_at": None,
            "at": "2026-03-02T09:05:00.000000Z",
            "generator_url": None,
            "repeat": False,
        }
    ]


def test_webhook_without_a_secret_sends_no_signature() -> None:
    server = Receiver()
    try:
        WebhookChannel("ops", server.url).send([_notification()])
        headers, _ = server.requests[0]
        assert SIGNATURE_HEADER not in headers
    finally:
        server.close()


def test_webhook_gives_up_after_max_attempts() -> None:
    server = Receiver([503] * 10)
    try:
        channel = WebhookChannel(
            "ops",
            server.url,
            retry=RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.02),
        )
        with pytest.raises(SinkError, match="delivery failed after 3 attempts"):
            channel.send([_notification()])
        assert len(server.requests) == 3
    finally:
        server.close()


def test_webhook_does_not_retry_a_refusal() -> None:
    server = Receiver([400])
    try:
        channel = WebhookChannel("ops", server.url, retry=RetryPolicy(initial_backoff=0.01))
        with pytest.raises(SinkError, match="HTTP 400"):
            channel.send([_notification()])
        assert len(server.requests) == 1
    finally:
        server.close()


def test_webhook_times_out_a_slow_receiver_and_retries() -> None:
    server = Receiver(delay=1.0)
    try:
        channel = WebhookChannel(
            "ops",
            server.url,
            timeout=0.2,
            retry=RetryPolicy(max_attempts=2, initial_backoff=0.01),
        )
        started = time.monotonic()
        with pytest.raises(SinkError, match="after 2 attempts"):
            channel.send([_notification()])
        assert time.monotonic() - started < 5.0
        assert len(server.requests) == 2
    finally:
        server.close()


def test_signature_helper_matches_hmac_sha256() -> None:
    body = b'{"version":"1"}'
    assert sign_body(body, "k") == "sha256=" + hmac.new(b"k", body, hashlib.sha256).hexdigest()


def test_manager_delivers_through_a_failing_webhook_without_stopping_others(
    clock: FakeClock,
) -> None:
    server = Receiver([500, 500])
    dead = Receiver([400])
    other = RecordingChannel("other")
    try:
        retry = RetryPolicy(max_attempts=3, initial_backoff=0.01)
        channels = [
            WebhookChannel("ok", server.url, retry=retry),
            WebhookChannel("dead", dead.url, retry=retry),
            other,
        ]
        rule = AlertRule("Backlog", MetricThreshold(Gauge(150.0), ">", 100))
        with AlertManager([rule], channels, clock=clock) as manager:
            manager.evaluate_rules()
            assert manager.flush(10)
            stats = manager.stats()["channels"]
        assert stats["ok"] == {"sent": 1, "failed": 0, "dropped": 0, "queued": 0}
        assert stats["dead"]["failed"] == 1
        assert other.take() == [("firing", "Backlog")]
        assert len(server.requests) == 3
    finally:
        server.close()
        dead.close()


def test_log_channel_writes_logfmt_and_the_alert_as_a_record_field(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="tachimeter.alerts"):
        LogChannel().send([_notification(), _notification("resolved")])
    firing, resolved = caplog.records
    assert firing.levelno == logging.ERROR and resolved.levelno == logging.INFO
    message = firing.getMessage()
    assert message.startswith("alert firing rule=HighErrorRate severity=critical ")
    assert "label.tool=search" in message and 'annotation.summary="error rate 12 %"' in message
    assert firing.alert["labels"]["tool"] == "search"  # type: ignore[attr-defined]
    assert resolved.alert["ends_at"] == "2026-03-02T09:05:00.000000Z"  # type: ignore[attr-defined]


def test_console_channel_prints_one_line_per_notification() -> None:
    out = io.StringIO()
    ConsoleChannel(stream=out).send([_notification(), _notification("resolved")])
    assert out.getvalue().splitlines() == [
        "[FIRING] HighErrorRate (critical) tool=search value=0.12 - error rate 12 %",
        "[RESOLVED] HighErrorRate (critical) tool=search value=0.12 - error rate 12 %",
    ]


def test_alertmanager_payload_follows_the_v2_api() -> None:
    channel = AlertmanagerChannel("http://127.0.0.1:9093/", resend_interval="1m")
    firing = _notification()
    resolved = _notification("resolved")
    odd = Notification(
        **{**{f: getattr(firing, f) for f in firing.__struct_fields__}, "labels": {"a.b": "1"}}
    )
    assert channel.url == "http://127.0.0.1:9093/api/v2/alerts"
    assert channel.payload([firing, resolved, odd]) == [
        {
            "labels": {"alertname": "HighErrorRate", "severity": "critical", "tool": "search"},
            "annotations": {"summary": "error rate 12 %"},
            "startsAt": "2026-03-02T09:00:00.000000Z",
            # Firing: four resend intervals after the evaluation that sent it.
            "endsAt": "2026-03-02T09:09:00.000000Z",
        },
        {
            "labels": {"alertname": "HighErrorRate", "severity": "critical", "tool": "search"},
            "annotations": {"summary": "error rate 12 %"},
            "startsAt": "2026-03-02T09:00:00.000000Z",
            "endsAt": "2026-03-02T09:05:00.000000Z",
        },
        {
            "labels": {"a_b": "1"},
            "annotations": {"summary": "error rate 12 %"},
            "startsAt": "2026-03-02T09:00:00.000000Z",
            "endsAt": "2026-03-02T09:09:00.000000Z",
        },
    ]


def test_resending_channels_get_firing_alerts_again_each_interval(clock: FakeClock) -> None:
    class Resending(RecordingChannel):
        resend_interval = 60.0

    am = Resending("am")
    rule = AlertRule("Backlog", MetricThreshold(Gauge(150.0), ">", 100), cooldown="1h")
    with AlertManager([rule], [am], clock=clock) as manager:
        for _ in range(5):  # every 15 s for a minute
            manager.evaluate_rules()
            clock.advance(15)
        manager.evaluate_rules()
        assert manager.flush(10)
    assert [n.repeat for n in am.sent] == [False, True]
