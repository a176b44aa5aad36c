"""Serving ``/metrics``: an ASGI app, a WSGI app, and a stdlib HTTP server thread.

All three negotiate the format from ``Accept`` (OpenMetrics or text 0.0.4) and gzip the
body when ``Accept-Encoding`` allows it. The apps answer GET and HEAD on any path, so
they can be mounted anywhere; the standalone server answers on ``/metrics`` only and
binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import gzip
import socket
import threading
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from tachimeter.metrics.exposition import choose_encoder, gzip_accepted
from tachimeter.metrics.registry import REGISTRY, Registry

__all__ = ["ASGIApp", "make_asgi_app", "make_wsgi_app", "start_http_server"]

ASGIScope = MutableMapping[str, Any]
ASGIMessage = MutableMapping[str, Any]
ASGIReceive = Callable[[], Awaitable[ASGIMessage]]
ASGISend = Callable[[ASGIMessage], Awaitable[None]]
ASGIApp = Callable[[ASGIScope, ASGIReceive, ASGISend], Awaitable[None]]

# zlib's default level: close to level 9's size for metrics text at a third of its CPU.
_GZIP_LEVEL = 6
_ALLOWED = "GET, HEAD"


def _respond(
    registry: Registry, method: str, accept: str | None, accept_encoding: str | None
) -> tuple[HTTPStatus, list[tuple[str, str]], bytes]:
    """Status, headers and body for one request for the metrics."""
    if method not in ("GET", "HEAD"):
        body = f"method {method} not allowed; use GET or HEAD\n".encode()
        return (
            HTTPStatus.METHOD_NOT_ALLOWED,
            [
                ("Allow", _ALLOWED),
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(body))),
            ],
            body,
        )
    encoder, content_type = choose_encoder(accept)
    body = encoder(registry)
    headers = [("Content-Type", content_type), ("Vary", "Accept, Accept-Encoding")]
    if gzip_accepted(accept_encoding):
        body = gzip.compress(body, compresslevel=_GZIP_LEVEL)
        headers.append(("Content-Encoding", "gzip"))
    headers.append(("Content-Length", str(len(body))))
    return HTTPStatus.OK, headers, b"" if method == "HEAD" else body


def make_wsgi_app(registry: Registry | None = None) -> WSGIApplication:
    """A WSGI app serving the metrics of ``registry`` (default: ``REGISTRY``).

    >>> registry = Registry()
    >>> registry.counter("jobs", "Jobs run").inc()
    >>> app = make_wsgi_app(registry)
    >>> body = b"".join(app({"REQUEST_METHOD": "GET"}, lambda status, headers: None))
    >>> body.splitlines()[-1]
    b'jobs_total 1.0'
    """
    target = REGISTRY if registry is None else registry

    def metrics_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        status, headers, body = _respond(
            target,
            environ.get("REQUEST_METHOD", "GET"),
            environ.get("HTTP_ACCEPT"),
            environ.get("HTTP_ACCEPT_ENCODING"),
        )
        start_response(f"{status.value} {status.phrase}", headers)
        return [body]

    return metrics_app


def make_asgi_app(registry: Registry | None = None) -> ASGIApp:
    """An ASGI app serving the metrics of ``registry`` (default: ``REGISTRY``).

    It also answers the lifespan protocol, so ``uvicorn`` can run it on its own.

    >>> import asyncio
    >>> sent = []
    >>> async def receive(): return {"type": "http.request", "body": b""}
    >>> async def send(message): sent.append(message)
    >>> registry = Registry()
    >>> registry.gauge("active_loops", "Loops running").set(2)
    >>> scope = {"type": "http", "method": "GET", "path": "/metrics", "headers": []}
    >>> asyncio.run(make_asgi_app(registry)(scope, receive, send))
    >>> sent[0]["status"], sent[1]["body"].splitlines()[-1]
    (200, b'active_loops 2.0')
    """
    target = REGISTRY if registry is None else registry

    async def metrics_app(scope: ASGIScope, receive: ASGIReceive, send: ASGISend) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        accept: list[str] = []
        accept_encoding: list[str] = []
        for raw_name, raw_value in scope.get("headers", ()):
            header = raw_name.decode("latin-1").lower()
            if header == "accept":
                accept.append(raw_value.decode("latin-1"))
            elif header == "accept-encoding":
                accept_encoding.append(raw_value.decode("latin-1"))
        # Rendering is CPU-bound and short (about 1 ms per 1000 series), so it runs on
        # the event loop rather than paying a thread hand-off per scrape.
        status, headers, body = _respond(
            target, scope.get("method", "GET"), ",".join(accept), ",".join(accept_encoding)
        )
        await send(
            {
                "type": "http.response.start",
                "status": status.value,
                "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return metrics_app


class _MetricsServer(ThreadingHTTPServer):
    # Request threads must not keep the process alive, nor pile up to be joined.
    daemon_threads = True

    def __init__(self, address: tuple[str, int], registry: Registry) -> None:
        self.registry = registry
        super().__init__(address, _MetricsHandler)


class _MetricsServer6(_MetricsServer):
    address_family = socket.AF_INET6


class _MetricsHandler(BaseHTTPRequestHandler):
    server: _MetricsServer

    def _serve(self, method: str) -> None:
        if urlsplit(self.path).path != "/metrics":
            body = b"not found; the metrics are at /metrics\n"
            status = HTTPStatus.NOT_FOUND
            headers = [
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(body))),
            ]
        else:
            status, headers, body = _respond(
                self.server.registry,
                method,
                self.headers.get("Accept"),
                self.headers.get("Accept-Encoding"),
            )
        self.send_response(status.value)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would flood stderr: log nothing."""


def start_http_server(
    port: int, addr: str = "127.0.0.1", registry: Registry | None = None
) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """Serve ``/metrics`` on ``addr:port`` from a daemon thread (port 0: any free one).

    Returns the server and its thread; ``server.shutdown(); server.server_close()``
    stops it. ``server.server_address[1]`` is the port actually bound.

    >>> server, thread = start_http_server(0)
    >>> server.server_address[0]
    '127.0.0.1'
    >>> server.shutdown(); server.server_close()
    """
    target = REGISTRY if registry is None else registry
    server_class = _MetricsServer6 if ":" in addr else _MetricsServer
    server = server_class((addr, port), target)
    thread = threading.Thread(
        target=server.serve_forever,
        name=f"tachimeter-metrics-http-{server.server_address[1]}",
        daemon=True,
    )
    thread.start()
    return server, thread
