"""Helpers of the alert tests: an injected clock, a recording channel, a settable query."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Sequence

from tachimeter.alerts import Notification, SeriesData

START = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


class FakeClock:
    """A clock tests move by hand: ``clock()`` is now, ``clock.advance(s)`` moves it."""

    def __init__(self, start: dt.datetime = START) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> dt.datetime:
        self.now += dt.timedelta(seconds=seconds)
        return self.now


class RecordingChannel:
    """A channel that keeps what it is sent."""

    def __init__(self, name: str = "record") -> None:
        self.name = name
        self.sent: list[Notification] = []
        self._lock = threading.Lock()

    def send(self, notifications: Sequence[Notification]) -> None:
        with self._lock:
            self.sent.extend(notifications)

    def close(self) -> None:
        pass

    def take(self) -> list[tuple[str, str]]:
        """(status, rule) of everything sent since the last take."""
        with self._lock:
            out = [(n.status, n.rule) for n in self.sent]
            self.sent.clear()
        return out


class Gauge:
    """A query function over a value tests set: ``gauge.value = 5``; None means no data."""

    def __init__(self, value: float | None = None, labels: dict[str, str] | None = None) -> None:
        self.value = value
        self.labels = labels or {}
        self.calls = 0

    def __call__(self, now: dt.datetime) -> list[SeriesData]:
        self.calls += 1
        if self.value is None:
            return []
        return [SeriesData.single(self.value, self.labels, at=now.timestamp())]
