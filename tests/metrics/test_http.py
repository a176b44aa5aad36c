"""Serving /metrics: the stdlib server over real sockets, WSGI through wsgiref, ASGI
called directly, and a real Prometheus server scraping us."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from tachimeter.metrics import (
    CONTENT_TYPE_OPENMETRICS,
    CONTENT_TYPE_TEXT,
    Registry,
    make_asgi_app,
    make_wsgi_app,
    start_http_server,
)

OPENMETRICS_ACCEPT = "application/openmetrics-text; version=1.0.0"


@pytest.fixture
def filled(registry: Registry) -> Registry:
    """A registry with one series of each kind and a label value needing escapes."""
    registry.counter("tool_invocations", "Tool calls", ["tool"]).labels('say "hi"').inc(7)
    registry.gauge("active_loops", "Loops running").set(3)
    loop_time = registry.timer("loop_execution_duration", "Loop time", ["loop_type"])
    loop_time.labels("plan").observe(0.2)
    registry.summary("llm_prompt_tokens", "Prompt tokens").observe(512)
    return registry


def _get(
    url: str, accept: str | None = None, encoding: str | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method)
    if accept is not None:
        request.add_header("Accept", accept)
    if encoding is not None:
        request.add_header("Accept-Encoding", encoding)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def _values(text: str, openmetrics: bool) -> dict[str, float]:
    parse = parse_openmetrics if openmetrics else parse_text
    return {s.name + str(sorted(s.labels.items())): s.value for f in parse(text) for s in f.samples}


@pytest.fixture
def server(filled: Registry) -> Iterator[str]:
    """start_http_server on an ephemeral port; yields the /metrics URL."""
    httpd, thread = start_http_server(0, registry=filled)
    host, port = httpd.server_address[:2]
    assert host == "127.0.0.1"
    yield f"http://127.0.0.1:{port}/metrics"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_server_serves_text_by_default(server: str) -> None:
    """Without Accept, the text format 0.0.4 comes back, parseable."""
    status, headers, body = _get(server)
    assert status == 200
    assert headers["Content-Type"] == CONTENT_TYPE_TEXT
    assert int(headers["Content-Length"]) == len(body)
    values = _values(body.decode(), openmetrics=False)
    assert values["tool_invocations_total[('tool', 'say \"hi\"')]"] == 7.0
    assert values["active_loops[]"] == 3.0


def test_server_serves_openmetrics_when_asked(server: str) -> None:
    """An OpenMetrics Accept header gets OpenMetrics, with # EOF."""
    status, headers, body = _get(server, accept=OPENMETRICS_ACCEPT)
    assert status == 200
    assert headers["Content-Type"] == CONTENT_TYPE_OPENMETRICS
    assert body.endswith(b"# EOF\n")
    assert _values(body.decode(), openmetrics=True)["llm_prompt_tokens_count[]"] == 1.0


@pytest.mark.parametrize("accept", [None, OPENMETRICS_ACCEPT])
def test_server_gzips_when_allowed(server: str, accept: str | None) -> None:
    """Accept-Encoding: gzip gets a gzip body equal to the plain one once inflated."""
    _, _, plain = _get(server, accept=accept)
    status, headers, body = _get(server, accept=accept, encoding="gzip")
    assert status == 200
    assert headers["Content-Encoding"] == "gzip"
    assert int(headers["Content-Length"]) == len(body)
    assert gzip.decompress(body) == plain


def test_server_head_and_unknown_paths(server: str) -> None:
    """HEAD gives headers only; other paths are 404 with a pointer to /metrics."""
    status, headers, body = _get(server, method="HEAD")
    assert (status, body) == (200, b"")
    assert int(headers["Content-Length"]) > 0
    status, _, body = _get(server.replace("/metrics", "/other"))
    assert status == 404
    assert b"/metrics" in body


def test_server_binds_localhost_by_default(registry: Registry) -> None:
    """The default address is 127.0.0.1, not every interface."""
    httpd, thread = start_http_server(0, registry=registry)
    try:
        assert httpd.server_address[0] == "127.0.0.1"
        assert thread.daemon
    finally:
        httpd.shutdown()
        httpd.server_close()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No request log in test output."""


def test_wsgi_app_under_wsgiref(filled: Registry) -> None:
    """The WSGI app negotiates format and gzip behind a real wsgiref server."""
    httpd = make_server("127.0.0.1", 0, make_wsgi_app(filled), handler_class=_QuietHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{httpd.server_port}/anything"
    try:
        status, headers, body = _get(url)
        assert (status, headers["Content-Type"]) == (200, CONTENT_TYPE_TEXT)
        assert _values(body.decode(), openmetrics=False)["active_loops[]"] == 3.0
        status, headers, body = _get(url, accept=OPENMETRICS_ACCEPT, encoding="gzip")
        assert headers["Content-Type"] == CONTENT_TYPE_OPENMETRICS
        assert headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(body).endswith(b"# EOF\n")
        status, headers, _ = _get(url, method="POST")
        assert status == 405
        assert headers["Allow"] == "GET, HEAD"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _call_asgi(
    registry: Registry, headers: list[tuple[bytes, bytes]], method: str = "GET"
) -> tuple[int, dict[bytes, bytes], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": "/metrics", "headers": headers}
    asyncio.run(make_asgi_app(registry)(scope, receive, send))
    start, body = sent
    assert start["type"] == "http.response.start"
    assert body["type"] == "http.response.body"
    return start["status"], dict(start["headers"]), body["body"]


def test_asgi_app_negotiates_format_and_gzip(filled: Registry) -> None:
    """The ASGI app answers http scopes like the server does."""
    status, headers, body = _call_asgi(filled, [])
    assert (status, headers[b"content-type"]) == (200, CONTENT_TYPE_TEXT.encode())
    assert _values(body.decode(), openmetrics=False)["active_loops[]"] == 3.0
    status, headers, body = _call_asgi(
        filled,
        [(b"Accept", OPENMETRICS_ACCEPT.encode()), (b"accept-encoding", b"gzip, deflate")],
    )
    assert headers[b"content-type"] == CONTENT_TYPE_OPENMETRICS.encode()
    assert headers[b"content-encoding"] == b"gzip"
    assert int(headers[b"content-length"]) == len(body)
    text = gzip.decompress(body).decode()
    assert _values(text, openmetrics=True)["active_loops[]"] == 3.0


def test_asgi_app_head_and_other_methods(filled: Registry) -> None:
    """HEAD has an empty body; POST is 405 with Allow."""
    status, headers, body = _call_asgi(filled, [], method="HEAD")
    assert (status, body) == (200, b"")
    assert int(headers[b"content-length"]) > 0
    status, headers, _ = _call_asgi(filled, [], method="POST")
    assert status == 405
    assert headers[b"allow"] == b"GET, HEAD"


def test_asgi_app_answers_lifespan(registry: Registry) -> None:
    """Startup and shutdown are acknowledged, so a server can run the app alone."""
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(make_asgi_app(registry)({"type": "lifespan"}, receive, send))
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _query(prometheus_url: str, promql: str) -> list[dict[str, Any]]:
    url = f"{prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as response:
        payload = json.loads(response.read())
    result: list[dict[str, Any]] = payload["data"]["result"]
    return result


@pytest.mark.slow
def test_real_prometheus_scrapes_our_openmetrics(
    server: str, prometheus_server_binary: str, tmp_path: Path
) -> None:
    """Prometheus 2.42 (Debian) scrapes /metrics, negotiating OpenMetrics, and stores
    our values: the _created series prove the OpenMetrics path was taken."""
    target = urllib.parse.urlsplit(server).netloc
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: tachimeter\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )
    web = f"127.0.0.1:{_free_port()}"
    process = subprocess.Popen(
        [
            prometheus_server_binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address={web}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    prometheus_url = f"http://{web}"
    try:
        deadline = time.monotonic() + 30.0
        found: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not found:
            time.sleep(0.5)
            if process.poll() is not None:
                break
            try:
                found = _query(prometheus_url, "tool_invocations_created")
            except (urllib.error.URLError, ConnectionError):
                continue
        assert found, "Prometheus did not ingest a scrape within 30 s"
        up = _query(prometheus_url, 'up{job="tachimeter"}')
        assert up[0]["value"][1] == "1"
        total = _query(prometheus_url, "tool_invocations_total")
        assert total[0]["metric"]["tool"] == 'say "hi"'
        assert float(total[0]["value"][1]) == 7.0
        bucket = _query(prometheus_url, 'loop_execution_duration_seconds_bucket{le="0.25"}')
        assert float(bucket[0]["value"][1]) == 1.0
        tokens = _query(prometheus_url, "llm_prompt_tokens_sum")
        assert float(tokens[0]["value"][1]) == 512.0
    finally:
        process.terminate()
        try:
            _, stderr = process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
    assert process.returncode in (0, -15), stderr.decode()
