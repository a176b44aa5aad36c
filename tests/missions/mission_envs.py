"""Helpers and fixtures of the mission tests (imported by conftest.py and the tests)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tachimeter.collect.collector import EventCollector
from tachimeter.collect.sinks import MemorySink
from tachimeter.config.sources import load_config
from tachimeter.missions import MissionProjection, MissionTracker
from tachimeter.store.migrations import all_migrations
from tachimeter.store.sink import StoreSink


class MissionEnv:
    """A collector (memory sink + store sink), a tracker on it, and the store's path."""

    def __init__(self, path: Path, clock: Any = None, **settings: Any) -> None:
        settings.setdefault("sampling.seed", 0)
        # Bursts of thousands of events must not be shed by back-pressure in a test, and
        # the store sink's inbox (64 batches) must hold a burst: batches of 1 000 events.
        settings.setdefault("collection.queue_capacity", 1_000_000)
        settings.setdefault("collection.buffer_size", 1_000)
        config = load_config(env={}, cwd="/nonexistent-tachimeter-test-dir", **settings)
        self.path = path
        self.memory = MemorySink()
        self.store_sink = StoreSink.open(path, projections=[MissionProjection()])
        self.collector = EventCollector(
            config, sinks=[self.memory, self.store_sink], register_atexit=False
        )
        self.tracker = MissionTracker(self.collector, database=path, clock=clock)

    def flush(self) -> None:
        assert self.collector.flush(timeout=60), self.collector.stats()
        # flush() is True even when a sink's inbox overflowed; a lost batch must fail loudly.
        assert self.collector.stats().flush_errors == 0, self.collector.stats()

    def connect(self) -> sqlite3.Connection:
        self.flush()
        return sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)

    def close(self) -> None:
        self.collector.shutdown(timeout=30)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[MissionEnv]:
    """A fresh collector, store and tracker for one test."""
    made = MissionEnv(tmp_path / "analytics.db")
    yield made
    made.close()


class LightEnv:
    """A collector with a memory sink only, and a tracker on it (no store)."""

    def __init__(self, **settings: Any) -> None:
        settings.setdefault("sampling.seed", 0)
        settings.setdefault("collection.queue_capacity", 1_000_000)
        config = load_config(env={}, cwd="/nonexistent-tachimeter-test-dir", **settings)
        self.memory = MemorySink()
        self.collector = EventCollector(config, sinks=[self.memory], register_atexit=False)
        self.tracker = MissionTracker(
            self.collector, database="/nonexistent-tachimeter-test-dir/none.db"
        )

    def events(self) -> list[Any]:
        assert self.collector.flush(timeout=60)
        return self.memory.events()

    def close(self) -> None:
        self.collector.shutdown(timeout=30)


@pytest.fixture
def light() -> Iterator[LightEnv]:
    """A fresh collector (memory sink only) and tracker for one test."""
    made = LightEnv()
    yield made
    made.close()


@pytest.fixture
def make_env(tmp_path: Path) -> Iterator[Any]:
    """Build environments with settings (an injected clock, strict mode); all closed after."""
    made: list[MissionEnv] = []

    def make(name: str = "analytics.db", **settings: Any) -> MissionEnv:
        created = MissionEnv(tmp_path / name, **settings)
        made.append(created)
        return created

    yield make
    for created in made:
        created.close()


@pytest.fixture
def bare_db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """An empty store schema (every migration applied) on a plain connection."""
    conn = sqlite3.connect(tmp_path / "bare.db")
    for migration in all_migrations():
        conn.executescript(migration.up)
    yield conn
    conn.close()
