"""Flush by size, by time (injected clock), on demand, and shutdown with a stuck sink."""

from __future__ import annotations

import time
from typing import Any

from collecting import FakeClock, GateSink, make_config, wait_for

from tachimeter.collect.sinks import MemorySink


def test_flush_by_size(collectors: Any) -> None:
    sink = MemorySink()
    config = make_config(**{"collection.buffer_size": 10, "collection.flush_interval": 3600})
    collector = collectors(config, sinks=[sink])
    for _ in range(10):
        collector.track("feature_used")
    assert wait_for(lambda: len(sink.events()) == 10)
    assert len(sink.get_events()) == 1


def test_flush_by_time_with_an_injected_clock(collectors: Any) -> None:
    clock = FakeClock()
    sink = MemorySink()
    config = make_config(**{"collection.buffer_size": 100, "collection.flush_interval": 5})
    collector = collectors(config, sinks=[sink], clock=clock)
    collector.track("feature_used")
    time.sleep(0.2)  # several worker passes: nothing is due yet on the injected clock
    assert sink.events() == []
    clock.advance(4.9)
    time.sleep(0.2)
    assert sink.events() == []
    clock.advance(0.2)
    assert wait_for(lambda: len(sink.events()) == 1)


def test_flush_returns_whether_everything_was_acknowledged(collectors: Any) -> None:
    stuck = GateSink()
    collector = collectors(sinks=[stuck])
    try:
        collector.track("feature_used")
        assert collector.flush(timeout=0.3) is False
    finally:
        stuck.gate.set()
    assert collector.flush(timeout=10) is True


def test_shutdown_with_a_stuck_sink_returns_and_reports(collectors: Any) -> None:
    stuck, good = GateSink(), MemorySink("good")
    collector = collectors(sinks=[stuck, good])
    for _ in range(3):
        collector.track("feature_used")
    started = time.monotonic()
    try:
        assert collector.shutdown(timeout=0.5) is False
        assert time.monotonic() - started < 10  # a hang guard, not a timing assertion
        stats = collector.stats()
        assert stats.undelivered_by_sink == {"gate": 3, "good": 0}
        assert len(good.events()) == 3
    finally:
        stuck.gate.set()


def test_flush_with_nothing_queued_is_immediate_and_true(collectors: Any) -> None:
    assert collectors(sinks=[MemorySink()]).flush(timeout=10)


def test_flush_is_false_when_a_sink_refused_a_batch(collectors: Any) -> None:
    """A sink whose inbox overflowed never saw some events: they are not acknowledged."""
    from tachimeter.collect import collector as collector_module

    stuck = GateSink()
    config = make_config(**{"collection.buffer_size": 1})
    collector = collectors(config, sinks=[stuck])
    try:
        for _ in range(collector_module._SINK_INBOX + 5):
            collector.track("feature_used", priority=collector_module.EventPriority.CRITICAL)
        assert wait_for(lambda: collector.stats().flush_errors > 0)
    finally:
        stuck.gate.set()
    assert collector.flush(timeout=10) is False  # the refused batches are lost to this sink
    assert collector.flush(timeout=10) is True  # and the next flush is clean again
