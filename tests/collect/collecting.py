"""Helpers for the collector tests: isolated configs, a fake clock, stuck and failing sinks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from tachimeter.collect.sinks import MemorySink
from tachimeter.config import load_config
from tachimeter.config.settings import AnalyticsConfig
from tachimeter.model.events import EventBatch

GUARD_SECONDS = 10.0


def make_config(tmp_path: Any = None, **settings: Any) -> AnalyticsConfig:
    """A config isolated from files and the environment (seeded sampling)."""
    settings.setdefault("sampling.seed", 0)
    if tmp_path is not None:
        settings.setdefault("storage.path", str(tmp_path / "analytics.db"))
    return load_config(env={}, cwd="/nonexistent-tachimeter-test-dir", **settings)


def wait_for(condition: Callable[[], bool], guard: float = GUARD_SECONDS) -> bool:
    """Poll ``condition`` until it holds, at most ``guard`` seconds (a hang guard, not a timing)."""
    deadline = time.monotonic() + guard
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return condition()


class FakeClock:
    """An injected monotonic clock the test advances by hand."""

    def __init__(self) -> None:
        self.ns = 1_000_000_000

    def __call__(self) -> int:
        return self.ns

    def advance(self, seconds: float) -> None:
        self.ns += int(seconds * 1e9)


class GateSink(MemorySink):
    """A sink whose ``process`` blocks until the test opens the gate (a stuck/slow sink)."""

    def __init__(self, name: str = "gate") -> None:
        super().__init__(name)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def process(self, batch: EventBatch) -> None:
        self.entered.set()
        self.gate.wait()
        super().process(batch)


class FailingSink(MemorySink):
    """A sink that always raises."""

    def __init__(self, name: str = "failing") -> None:
        super().__init__(name)
        self.calls = 0

    def process(self, batch: EventBatch) -> None:
        self.calls += 1
        raise RuntimeError("disk on fire")

    def flush(self) -> None:
        raise RuntimeError("still on fire")
