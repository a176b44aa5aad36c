"""HTTP clients and servers with API keys, for the tests of the ingest endpoints.

Imported by module name, as ``serving`` is (``from server_clients import http_client``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
from serving import ServerProcess


@contextlib.contextmanager
def http_client(process: ServerProcess) -> Iterator[httpx.Client]:
    """An ``httpx`` client of the server (30 s timeout), closed after the block."""
    with httpx.Client(base_url=process.url, timeout=30) as http:
        yield http


@contextlib.contextmanager
def keyed_server(
    db: Path, settings: Mapping[str, Any], keys: Mapping[str, str]
) -> Iterator[ServerProcess]:
    """A server on ``db`` that knows the API ``keys`` (key -> scope), stopped after the block."""
    scoped = ",".join(f"{key}:{scope}" for key, scope in keys.items())
    process = ServerProcess(db, settings, env={"TACHIMETER_API_KEY": scoped})
    try:
        yield process
    finally:
        process.stop()


def problem(answer: httpx.Response, status: int) -> dict[str, Any]:
    """The RFC 9457 problem of an answer that must have ``status``, with a detail."""
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = answer.json()
    assert body["status"] == status and body["detail"]
    return body
