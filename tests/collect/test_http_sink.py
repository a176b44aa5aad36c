"""HttpSink against a real HTTP server on 127.0.0.1 (no mocked HTTP).

Time is faked where retries would wait: the sink's injected ``sleep`` advances its
injected ``clock``, so backoff and deadlines are exact and the tests are fast.
"""

from __future__ import annotations

import email.utils
import gzip
import http.server
import logging
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

import msgspec
import pytest

from tachimeter.collect.collector import EventCollector
from tachimeter.collect.http_sink import HttpSink
from tachimeter.collect.sinks import MemorySink
from tachimeter.collect.spool import Spool
from tachimeter.config.sources import load_config
from tachimeter.errors import ConfigError, SinkError
from tachimeter.model.codec import decode_event, event_from_builtins
from tachimeter.model.event_types import EventType
from tachimeter.model.events import AnalyticsEvent, EventBatch

API_KEY = "tk_test_5f1d0c9a"
WAIT = 5.0  # upper bound on any real wait in these tests


class Received(NamedTuple):
    path: str
    headers: dict[str, str]
    raw: bytes

    def payload(self) -> Any:
        body = self.raw
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        return msgspec.json.decode(body)


class Reply(NamedTuple):
    status: int
    headers: Mapping[str, str] = MappingProxyType({})
    body: bytes = b""


class Server:
    """A scripted endpoint: answers ``replies`` in order, then ``default``."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.replies: deque[Reply] = deque()
        self.default = Reply(200, {"Content-Type": "application/json"}, b'{"accepted": true}')
        self.delay = 0.0
        self.release = threading.Event()  # cuts a delayed reply short at teardown
        self.got_request = threading.Event()
        self._lock = threading.Lock()
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1/events"

    def events(self) -> list[dict[str, Any]]:
        """Every event of every 2xx-answered request."""
        with self._lock:
            return [
                e for r in self.received if r.path == "/v1/events" for e in r.payload()["events"]
            ]

    def _answer(self, received: Received) -> Reply:
        with self._lock:
            self.received.append(received)
            reply = self.replies.popleft() if self.replies else self.default
        self.got_request.set()
        if self.delay:
            self.release.wait(self.delay)
        return reply

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                reply = server._answer(Received(self.path, headers, raw))
                try:
                    self.send_response(reply.status)
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except OSError:
                    pass  # the client timed out and left

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def __enter__(self) -> Server:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(WAIT)


class FakeTime:
    """A monotonic clock that only the sink's sleeps advance."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


class TopOfRange(random.Random):
    """A jitter source that always draws the top of its range."""

    def uniform(self, a: float, b: float) -> float:
        return b


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy from the environment must not sit between the sink and 127.0.0.1."""
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def server() -> Iterator[Server]:
    with Server() as s:
        yield s


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    """The sink's spool; tests read it back through a second Spool once the sink is done."""
    spool = Spool(tmp_path)
    yield spool
    spool.close()


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


@pytest.fixture
def closed_url() -> str:
    """A URL on a port nothing listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1/events"


def make_batch(n: int, sequence: int = 1) -> EventBatch:
    events = [
        AnalyticsEvent.new(EventType.FEATURE_USED, {"feature": "search", "i": i}) for i in range(n)
    ]
    return EventBatch.new(events, sequence=sequence)


def make_sink(url: str, fake: FakeTime, **kwargs: Any) -> HttpSink:
    kwargs.setdefault("rng", random.Random(7))
    return HttpSink(url, sleep=fake.sleep, clock=fake.clock, **kwargs)


def spool_pending(spool: Spool) -> int:
    """Records in the sink's spool file, as the collector's next start would find them."""
    reader = Spool(spool.path.parent)
    try:
        return reader.pending
    finally:
        reader.close()


def spooled_ids(spool: Spool) -> list[str]:
    """Ids of the events in the sink's spool file, in write order."""
    reader = Spool(spool.path.parent)
    try:
        return [str(decode_event(p, format="msgpack").id) for p in reader.read(10_000)]
    finally:
        reader.close()


# -- delivery ---------------------------------------------------------------------------


def test_batch_arrives_with_contract_headers_and_round_trips(
    server: Server, fake: FakeTime
) -> None:
    """The body is the documented JSON (gzipped when large); events decode unchanged."""
    sink = make_sink(server.url, fake, api_key=API_KEY)
    batch = make_batch(50, sequence=7)

    sink.process(batch)
    sink.flush()

    [request] = server.received
    headers = request.headers
    assert headers["authorization"] == f"Bearer {API_KEY}"
    assert headers["idempotency-key"] == str(batch.id)
    assert headers["content-type"] == "application/json"
    assert headers["content-encoding"] == "gzip"
    assert headers["user-agent"].startswith("tachimeter/")
    payload = request.payload()
    assert payload["batch_id"] == str(batch.id)
    assert payload["sequence"] == 7
    assert [event_from_builtins(e) for e in payload["events"]] == batch.events
    assert sink.stats() == {
        "requests": 1,
        "retries": 0,
        "failures": 0,
        "sent_events": 50,
        "spooled_events": 0,
        "rejected_events": 0,
        "bytes_sent": len(request.raw),
    }


def test_no_authorization_header_without_api_key(server: Server, fake: FakeTime) -> None:
    make_sink(server.url, fake).process(make_batch(1))
    assert "authorization" not in server.received[0].headers


def test_gzip_threshold_is_inclusive_on_the_uncompressed_size(
    server: Server, fake: FakeTime
) -> None:
    """Bodies below gzip_min_bytes go as plain JSON; at the threshold they are gzipped."""
    batch = make_batch(3)
    make_sink(server.url, fake, gzip_min_bytes=1 << 30).process(batch)
    size = len(server.received[0].raw)
    assert "content-encoding" not in server.received[0].headers

    make_sink(server.url, fake, gzip_min_bytes=size + 1).process(batch)
    make_sink(server.url, fake, gzip_min_bytes=size).process(batch)

    assert "content-encoding" not in server.received[1].headers
    assert server.received[1].raw == server.received[0].raw
    assert server.received[2].headers["content-encoding"] == "gzip"
    assert gzip.decompress(server.received[2].raw) == server.received[0].raw


def test_empty_batch_sends_nothing(server: Server, fake: FakeTime) -> None:
    make_sink(server.url, fake).process(EventBatch.new([], sequence=1))
    assert server.received == []


# -- retries ----------------------------------------------------------------------------


def test_503_twice_then_200_retries_with_full_jitter_backoff(
    server: Server, fake: FakeTime
) -> None:
    """Two retries with the same idempotency key; each wait within [0, min(cap, base*2^n)]."""
    server.replies.extend([Reply(503), Reply(503)])
    sink = make_sink(server.url, fake, backoff_initial=0.5, backoff_max=0.75)
    batch = make_batch(4)

    sink.process(batch)

    assert len(server.received) == 3
    assert {r.headers["idempotency-key"] for r in server.received} == {str(batch.id)}
    stats = sink.stats()
    assert (stats["requests"], stats["retries"], stats["sent_events"]) == (3, 2, 4)
    assert stats["failures"] == 0
    assert len(fake.sleeps) == 2
    assert 0 <= fake.sleeps[0] <= 0.5
    assert 0 <= fake.sleeps[1] <= 0.75  # 0.5 * 2 = 1.0, capped by backoff_max


def test_backoff_ceiling_doubles_until_the_cap(closed_url: str, fake: FakeTime) -> None:
    """The n-th wait is drawn from [0, min(cap, base * 2**n)]; the last stops at the deadline."""
    # A jitter source pinned to the top of its range shows the ceilings themselves.
    sink = make_sink(
        closed_url,
        fake,
        backoff_initial=0.5,
        backoff_max=4.0,
        max_retry_seconds=20.0,
        rng=TopOfRange(),
    )
    with pytest.raises(SinkError):
        sink.process(make_batch(1))
    assert fake.sleeps[:5] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert sum(fake.sleeps) == pytest.approx(20.0)  # the last wait is cut at the deadline


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_transient_statuses_are_retried(server: Server, fake: FakeTime, status: int) -> None:
    server.replies.append(Reply(status))
    sink = make_sink(server.url, fake)
    sink.process(make_batch(2))
    assert len(server.received) == 2
    assert sink.stats()["sent_events"] == 2


def test_429_retry_after_seconds_is_a_lower_bound(server: Server, fake: FakeTime) -> None:
    server.replies.append(Reply(429, {"Retry-After": "2"}))
    sink = make_sink(server.url, fake, backoff_initial=0.1)
    sink.process(make_batch(1))
    assert len(fake.sleeps) == 1
    assert fake.sleeps[0] >= 2
    assert sink.stats()["sent_events"] == 1


def test_503_retry_after_http_date(server: Server, fake: FakeTime) -> None:
    when = email.utils.formatdate(time.time() + 5, usegmt=True)
    server.replies.append(Reply(503, {"Retry-After": when}))
    sink = make_sink(server.url, fake, backoff_initial=0.1)
    sink.process(make_batch(1))
    # The date has whole seconds, so the wait is 4 to 5 s (plus a little test slowness).
    assert 3.5 <= fake.sleeps[0] <= 5.5


def test_retry_after_past_the_deadline_gives_up_at_once(
    server: Server, fake: FakeTime, spool: Spool
) -> None:
    """Waiting less would be refused again; waiting more would pass the deadline."""
    server.replies.append(Reply(503, {"Retry-After": "120"}))
    sink = make_sink(server.url, fake, max_retry_seconds=30, spool=spool)
    batch = make_batch(3)

    sink.process(batch)

    assert len(server.received) == 1
    assert fake.sleeps == []
    assert spooled_ids(spool) == [str(e.id) for e in batch.events]


def test_a_slow_server_times_out_as_a_transient_failure(
    server: Server, fake: FakeTime, spool: Spool
) -> None:
    server.delay = WAIT
    sink = make_sink(server.url, fake, timeout=0.2, max_retry_seconds=0, spool=spool)
    started = time.monotonic()

    sink.process(make_batch(2))

    assert time.monotonic() - started < WAIT / 2
    assert sink.stats()["spooled_events"] == 2


# -- permanent failures -----------------------------------------------------------------


def test_400_is_rejected_without_retry_or_spool(
    server: Server, fake: FakeTime, spool: Spool
) -> None:
    body = b'{"error": "events[0].timestamp is in the future", "path": "$.events[0]"}'
    server.replies.append(Reply(400, {"Content-Type": "application/json"}, body))
    sink = make_sink(server.url, fake, spool=spool)

    with pytest.raises(SinkError, match="400") as info:
        sink.process(make_batch(5))

    assert "events[0].timestamp is in the future" in str(info.value)
    assert len(server.received) == 1
    assert fake.sleeps == []
    assert spooled_ids(spool) == []
    stats = sink.stats()
    assert (stats["rejected_events"], stats["failures"], stats["spooled_events"]) == (5, 1, 0)


def test_rejection_quotes_at_most_200_characters_of_the_body(
    server: Server, fake: FakeTime
) -> None:
    server.replies.append(Reply(422, {}, b"x" * 199 + b"YZ" + b"!" * 5000))
    with pytest.raises(SinkError, match="422") as info:
        make_sink(server.url, fake).process(make_batch(1))
    message = str(info.value)
    assert "x" * 199 + "Y" in message
    assert "YZ" not in message


@pytest.mark.parametrize("status", [401, 403, 413])
def test_other_4xx_are_permanent(server: Server, fake: FakeTime, status: int) -> None:
    server.replies.append(Reply(status))
    with pytest.raises(SinkError, match=str(status)):
        make_sink(server.url, fake).process(make_batch(1))
    assert len(server.received) == 1


def test_401_error_and_log_never_show_the_api_key(
    server: Server, fake: FakeTime, caplog: pytest.LogCaptureFixture
) -> None:
    server.replies.append(Reply(401, {}, b"invalid token"))
    sink = make_sink(server.url, fake, api_key=API_KEY)
    with caplog.at_level(logging.WARNING, "tachimeter.collect"), pytest.raises(SinkError) as info:
        sink.process(make_batch(1))
    assert "api_key" in str(info.value)
    assert API_KEY not in str(info.value)
    assert caplog.records
    assert API_KEY not in caplog.text


def test_redirects_are_not_followed(server: Server, fake: FakeTime) -> None:
    """Following would resend the body as a GET, or the token to another host."""
    server.replies.append(Reply(307, {"Location": "/elsewhere"}))
    with pytest.raises(SinkError, match="307"):
        make_sink(server.url, fake, api_key=API_KEY).process(make_batch(1))
    assert [r.path for r in server.received] == ["/v1/events"]


def test_non_transient_5xx_is_given_up_into_the_spool(
    server: Server, fake: FakeTime, spool: Spool
) -> None:
    server.replies.append(Reply(501))
    sink = make_sink(server.url, fake, spool=spool)
    sink.process(make_batch(2))
    assert len(server.received) == 1
    assert len(spooled_ids(spool)) == 2


# -- giving up --------------------------------------------------------------------------


def test_server_down_gives_up_at_the_deadline_into_the_spool(
    closed_url: str, fake: FakeTime, spool: Spool
) -> None:
    sink = make_sink(closed_url, fake, max_retry_seconds=5.0, spool=spool)
    batch = make_batch(6)
    started = fake.now

    sink.process(batch)  # returns: the events are kept, not lost
    sink.flush()

    assert fake.now - started == pytest.approx(5.0)
    assert spool_pending(spool) == 6
    assert spooled_ids(spool) == [str(e.id) for e in batch.events]
    stats = sink.stats()
    assert stats["requests"] == stats["retries"] + 1 >= 2
    assert (stats["spooled_events"], stats["failures"], stats["sent_events"]) == (6, 1, 0)
    assert stats["bytes_sent"] == 0  # nothing reached a server


def test_server_down_without_spool_raises_sink_error(closed_url: str, fake: FakeTime) -> None:
    sink = make_sink(closed_url, fake, max_retry_seconds=5.0)
    with pytest.raises(SinkError, match="gave up") as info:
        sink.process(make_batch(2))
    assert "spool" in str(info.value)
    assert sum(fake.sleeps) == pytest.approx(5.0)
    assert sink.stats()["failures"] == 1


def test_flush_reports_lost_events_once(closed_url: str, fake: FakeTime) -> None:
    """Lost events make the next flush fail, so the collector never calls them acknowledged."""
    sink = make_sink(closed_url, fake, max_retry_seconds=0)
    sink.flush()
    with pytest.raises(SinkError):
        sink.process(make_batch(2))
    with pytest.raises(SinkError, match="2 events"):
        sink.flush()
    sink.flush()


def test_zero_retry_budget_makes_one_attempt(closed_url: str, fake: FakeTime) -> None:
    sink = make_sink(closed_url, fake, max_retry_seconds=0)
    with pytest.raises(SinkError):
        sink.process(make_batch(1))
    assert (sink.stats()["requests"], fake.sleeps) == (1, [])


def test_failures_are_logged_at_most_once_a_minute(
    closed_url: str, fake: FakeTime, caplog: pytest.LogCaptureFixture
) -> None:
    sink = make_sink(closed_url, fake, max_retry_seconds=0)
    with caplog.at_level(logging.WARNING, "tachimeter.collect"):
        for _ in range(3):
            with pytest.raises(SinkError):
                sink.process(make_batch(1))
            fake.now += 10
        fake.now += 60
        with pytest.raises(SinkError):
            sink.process(make_batch(1))
    assert len(caplog.records) == 2
    assert sink.stats()["failures"] == 4


def test_close_cuts_a_backoff_wait_short_and_spools(server: Server, spool: Spool) -> None:
    """With the default (interruptible) sleep, close() ends a long Retry-After wait."""
    server.default = Reply(503, {"Retry-After": "20"})
    sink = HttpSink(server.url, max_retry_seconds=30, spool=spool)
    worker = threading.Thread(target=sink.process, args=(make_batch(3),), daemon=True)
    worker.start()
    assert server.got_request.wait(WAIT)
    time.sleep(0.1)  # most likely in its 20 s wait by now; either way it must end promptly

    sink.close()
    worker.join(WAIT)

    assert not worker.is_alive()
    assert sink.stats()["spooled_events"] == 3
    assert len(server.received) == 1


# -- configuration ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["ftp://example.com/v1/events", "example.com/v1/events", "file:///etc/passwd", ""]
)
def test_only_http_and_https_urls_are_accepted(url: str) -> None:
    with pytest.raises(ConfigError, match="http:// or https://") as info:
        HttpSink(url)
    assert repr(url) in str(info.value)


def test_credentials_in_the_url_are_refused_without_repeating_them() -> None:
    with pytest.raises(ConfigError, match="api_key") as info:
        HttpSink("https://user:hunter2@example.com/v1/events")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timeout": 0}, "timeout"),
        ({"max_retry_seconds": -1}, "max_retry_seconds"),
        ({"backoff_initial": 0}, "backoff_initial"),
        ({"backoff_max": 0.1}, "backoff_max"),
        ({"gzip_min_bytes": -1}, "gzip_min_bytes"),
        ({"api_key": "abc\r\nX-Injected: 1"}, "api_key"),
    ],
)
def test_bad_settings_fail_at_construction(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        HttpSink("https://example.com/v1/events", **kwargs)


# -- with the collector -----------------------------------------------------------------


def test_collector_delivers_every_event_exactly_once(server: Server, tmp_path: Path) -> None:
    config = load_config(env={}, cwd=str(tmp_path))
    sink = HttpSink(server.url, api_key=API_KEY)
    collector = EventCollector(config, sinks=[sink], register_atexit=False)
    try:
        for i in range(250):
            collector.track("feature_used", {"feature": "search", "i": i})
        assert collector.flush(timeout=10)
    finally:
        collector.shutdown(timeout=WAIT)

    events = server.events()
    assert len(events) == 250
    assert len({e["id"] for e in events}) == 250
    assert sorted(e["data"]["i"] for e in events) == list(range(250))
    assert sink.stats()["sent_events"] == 250


def test_a_failing_http_sink_does_not_hold_up_other_sinks(closed_url: str, tmp_path: Path) -> None:
    config = load_config(env={}, cwd=str(tmp_path))
    memory = MemorySink()
    http_sink = HttpSink(closed_url, max_retry_seconds=0)
    collector = EventCollector(config, sinks=[http_sink, memory], register_atexit=False)
    try:
        for i in range(120):
            collector.track("feature_used", {"feature": "search", "i": i})
        assert not collector.flush(timeout=10)  # the HTTP sink failed: not acknowledged
        assert len(memory.events()) == 120
        assert collector.stats().flush_errors >= 1
        assert http_sink.stats()["failures"] >= 1
    finally:
        collector.shutdown(timeout=WAIT)


def test_collector_with_spill_takes_back_what_the_server_never_accepted(
    tmp_path: Path, closed_url: str
) -> None:
    """Given up batches go to the collector's own spool and come back on the next start."""
    from collecting import make_config

    config = make_config(
        **{"collection.backpressure": "spill", "collection.spool_dir": str(tmp_path / "spool")}
    )
    sink = HttpSink(closed_url, max_retry_seconds=0, timeout=0.5)
    collector = EventCollector(config, sinks=[sink], register_atexit=False)
    for i in range(5):
        collector.track("feature_used", {"i": i})
    collector.flush(timeout=10)
    collector.shutdown(timeout=10)
    assert sink.stats()["spooled_events"] == 5
    later = MemorySink()
    again = EventCollector(config, sinks=[later], register_atexit=False)
    try:
        assert again.flush(timeout=10)
        assert sorted(e.data["i"] for e in later.events()) == list(range(5))
    finally:
        again.shutdown(timeout=10)
