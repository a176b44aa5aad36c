"""The manager's background evaluation: interval, per-rule intervals, stop with a
deadline, and evaluation that never blocks ingest."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from alerting import Gauge, RecordingChannel

from tachimeter.alerts import (
    AlertManager,
    AlertRule,
    Custom,
    MetricThreshold,
    Notification,
    SeriesData,
)
from tachimeter.model.events import EventBuilder
from tachimeter.store.sqlite import SQLiteStore


def _wait_for(predicate: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def test_background_evaluation_runs_every_interval_and_stops_within_its_deadline() -> None:
    gauge = Gauge(50.0)
    channel = RecordingChannel()
    rule = AlertRule("Backlog", MetricThreshold(gauge, ">", 100))
    manager = AlertManager([rule], [channel], interval=0.05)
    try:
        manager.start()
        manager.start()  # idempotent
        assert manager.running
        assert _wait_for(lambda: gauge.calls >= 3)
        gauge.value = 150.0
        assert _wait_for(lambda: channel.sent), "the firing alert was never notified"
        started = time.monotonic()
        assert manager.stop(timeout=5)
        assert time.monotonic() - started < 5
        assert not manager.running
        calls = gauge.calls
        time.sleep(0.2)
        assert gauge.calls == calls, "evaluation continued after stop()"
    finally:
        manager.close()


def test_rules_with_their_own_interval_are_evaluated_less_often() -> None:
    fast, slow = Gauge(1.0), Gauge(1.0)
    rules = [
        AlertRule("Fast", MetricThreshold(fast, ">", 100)),
        AlertRule("Slow", MetricThreshold(slow, ">", 100), interval="1h"),
    ]
    with AlertManager(rules, interval=0.02) as manager:
        manager.start()
        assert _wait_for(lambda: fast.calls >= 5)
        assert manager.stop(5)
    assert slow.calls == 1
    # On demand, every rule is evaluated.
    with AlertManager(rules) as manager:
        manager.evaluate_rules()
    assert slow.calls == 2


def test_stop_returns_false_at_its_deadline_when_a_channel_hangs() -> None:
    release = threading.Event()

    class Stuck(RecordingChannel):
        def send(self, notifications: Sequence[Notification]) -> None:
            release.wait(30)

    rule = AlertRule("Backlog", MetricThreshold(Gauge(150.0), ">", 100))
    manager = AlertManager([rule], [Stuck("stuck")])
    try:
        manager.evaluate_rules()
        started = time.monotonic()
        assert manager.stop(timeout=0.3) is False
        assert time.monotonic() - started < 3
    finally:
        release.set()
        manager.close()


def test_a_full_channel_queue_drops_the_oldest_batches_and_counts_them() -> None:
    release = threading.Event()

    class Slow(RecordingChannel):
        def send(self, notifications: Sequence[Notification]) -> None:
            release.wait(30)
            super().send(notifications)

    series = [SeriesData.single(150.0)]
    rules = [AlertRule(f"R{i}", MetricThreshold(lambda now: series, ">", 100)) for i in range(6)]
    channel = Slow("slow")
    manager = AlertManager([], [channel], queue_capacity=2)
    try:
        for rule in rules:  # one evaluation, one batch each
            manager.add_rule(rule)
            manager.evaluate_rules()
        release.set()
        assert manager.flush(10)
        stats = manager.stats()["channels"]["slow"]
        assert stats["dropped"] + stats["sent"] == 6 and stats["dropped"] >= 3
    finally:
        release.set()
        manager.close()


def test_evaluation_reads_through_its_own_connection_and_never_blocks_ingest(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "analytics.db")
    reading = threading.Event()
    release = threading.Event()

    def slow_query(now: dt.datetime) -> list[SeriesData]:
        with store.reader() as conn:
            conn.execute("BEGIN")
            (count,) = conn.execute("SELECT count(*) FROM analytics_events").fetchone()
            reading.set()
            release.wait(30)  # an evaluation stuck in the middle of a read
            conn.execute("COMMIT")
        return [SeriesData.single(float(count))]

    rule = AlertRule("Events", Custom(lambda s: s[0].values[-1] > 0, slow_query))
    manager = AlertManager([rule], store=store)
    evaluation = threading.Thread(target=manager.evaluate_rules)
    try:
        evaluation.start()
        assert reading.wait(10)
        started = time.monotonic()
        result = store.write_batch([EventBuilder.track("feature_used").build() for _ in range(100)])
        assert result.inserted == 100
        assert time.monotonic() - started < 5, "ingest waited for the evaluation"
        assert evaluation.is_alive()  # the evaluation was still holding its read
    finally:
        release.set()
        evaluation.join(10)
        manager.close()
        store.close()
