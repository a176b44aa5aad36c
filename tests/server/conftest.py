"""Fixtures for the server tests: a real server subprocess per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from serving import ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the module, default settings, rate limiting off, fresh store."""
    db = tmp_path_factory.mktemp("server") / "analytics.db"
    process = ServerProcess(db, {"rate_limit_per_second": 0})
    try:
        yield process
    finally:
        process.stop()
