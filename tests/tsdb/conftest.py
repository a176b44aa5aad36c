"""Fixtures for the time-series tests: fresh migrated databases, seeded series, binaries."""

from __future__ import annotations

import os
import shutil
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# bench/ (the scrape-shaped data generator) lives at the repository root, next to tests/.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tachimeter.store.migrator import Migrator  # noqa: E402
from tachimeter.store.timeseries import TimeSeriesStore  # noqa: E402


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """A migrated SQLite file of its own, autocommit mode (the store's convention)."""
    connection = sqlite3.connect(tmp_path / "tsdb.db", isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    Migrator(connection).up()
    yield connection
    connection.close()


@pytest.fixture
def tsdb(conn: sqlite3.Connection) -> TimeSeriesStore:
    """A time-series store on that database (2-hour windows, 5-minute grace)."""
    return TimeSeriesStore(conn)


def system_binary(name: str, package: str) -> str:
    """A binary from a Debian package the tests drive for real; missing, the test fails
    and says how to get it (TACHIMETER_NO_SYSTEM_DEPS=1 turns that into a skip)."""
    path = shutil.which(name)
    if path is not None:
        return path
    if os.environ.get("TACHIMETER_NO_SYSTEM_DEPS") == "1":
        pytest.skip(f"{name} (Debian package {package}) absent and TACHIMETER_NO_SYSTEM_DEPS=1")
    pytest.fail(
        f"{name} not found: this test runs the real {name} from Debian's {package!r} "
        f"package. Run `make test` (which installs it) or `apt-get install -y {package}`",
        pytrace=False,
    )


@pytest.fixture
def promtool() -> str:
    """The real promtool (Debian package prometheus)."""
    return system_binary("promtool", "prometheus")


@pytest.fixture
def prometheus_binary() -> str:
    """The real Prometheus server (Debian package prometheus)."""
    return system_binary("prometheus", "prometheus")
