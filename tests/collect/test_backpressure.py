"""Back-pressure policies: drop_lowest_priority, block, spill; every drop counted."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from collecting import make_config, wait_for

from tachimeter.collect.collector import EventCollector
from tachimeter.collect.sinks import MemorySink
from tachimeter.model import EventPriority

LOW, NORMAL, HIGH, CRITICAL = (
    EventPriority.LOW,
    EventPriority.NORMAL,
    EventPriority.HIGH,
    EventPriority.CRITICAL,
)


def small(tmp_path: Path | None = None, **settings: Any) -> Any:
    settings.setdefault("collection.queue_capacity", 10)
    settings.setdefault("collection.buffer_size", 5)
    return make_config(tmp_path, **settings)


def test_drop_lowest_priority_evicts_low_then_normal(collectors: Any) -> None:
    sink = MemorySink()
    collector = collectors(small(), sinks=[sink], autostart=False)
    for i in range(5):
        collector.track("feature_used", {"i": f"low{i}"}, priority=LOW)
    for i in range(5):
        collector.track("feature_used", {"i": f"normal{i}"}, priority=NORMAL)
    for i in range(7):
        collector.track("feature_used", {"i": f"high{i}"}, priority=HIGH)
    # full with 5 low + 5 normal: 7 high events evict the 5 low, then the 2 oldest normal
    assert collector.dropped() == {("queue_full", "low"): 5, ("queue_full", "normal"): 2}
    for i in range(4):
        collector.track("feature_used", {"i": f"critical{i}"}, priority=CRITICAL)
    # 3 normal left to evict, then nothing lower: the 4th critical evicts... nothing lower
    # than critical but high; high is lower than critical, so a high event goes.
    assert collector.dropped()[("queue_full", "normal")] == 5
    assert collector.dropped()[("queue_full", "high")] == 1
    collector.track("feature_used", {"i": "low-late"}, priority=LOW)  # nothing lower: dropped
    assert collector.dropped()[("queue_full", "low")] == 6
    collector.start()
    assert collector.flush(timeout=10)
    kept = sorted(e.data["i"] for e in sink.events())
    assert kept == sorted([f"high{i}" for i in range(1, 7)] + [f"critical{i}" for i in range(4)])
    stats = collector.stats()
    assert stats.events_dropped == 12 and stats.dropped_by_reason == {"queue_full": 12}
    assert stats.dropped_by_priority == {"low": 6, "normal": 5, "high": 1}
    assert stats.balanced()


def test_high_and_critical_are_never_dropped_while_lower_ones_are_queued(collectors: Any) -> None:
    collector = collectors(small(), autostart=False)
    for _ in range(9):
        collector.track("feature_used", priority=LOW)
    collector.track("feature_used", priority=HIGH)
    for _ in range(9):
        collector.track("feature_used", priority=CRITICAL)
    assert collector.dropped() == {("queue_full", "low"): 9}


def test_block_waits_then_drops(collectors: Any) -> None:
    config = small(**{"collection.backpressure": "block", "collection.block_timeout": 0.05})
    collector = collectors(config, autostart=False)
    for _ in range(10):
        collector.track("feature_used")
    started = time.monotonic()
    collector.track("feature_used")
    waited = time.monotonic() - started
    assert waited >= 0.04  # it did block (bounded by block_timeout, not asserted above)
    assert collector.dropped() == {("queue_full", "normal"): 1}


def test_block_lets_events_through_when_the_worker_drains(collectors: Any) -> None:
    config = small(**{"collection.backpressure": "block", "collection.block_timeout": 5.0})
    sink = MemorySink()
    collector = collectors(config, sinks=[sink], autostart=False)
    for i in range(10):
        collector.track("feature_used", {"i": i})
    done = threading.Event()

    def producer() -> None:
        collector.track("feature_used", {"i": 10})
        done.set()

    thread = threading.Thread(target=producer)
    thread.start()
    assert not done.wait(0.1)  # blocked: the queue is full and the worker is not running
    collector.start()
    assert done.wait(10)
    thread.join(10)
    assert collector.flush(timeout=10)
    assert sorted(e.data["i"] for e in sink.events()) == list(range(11))
    assert collector.stats().events_dropped == 0


def spill_config(tmp_path: Path, **settings: Any) -> Any:
    return small(
        tmp_path,
        **{"collection.backpressure": "spill", "collection.spool_dir": str(tmp_path / "spool")},
        **settings,
    )


def test_spill_overflow_goes_to_disk_and_comes_back(collectors: Any, tmp_path: Path) -> None:
    sink = MemorySink()
    collector = collectors(spill_config(tmp_path), sinks=[sink], autostart=False)
    for i in range(60):  # 10 queued, 40 in the spill inbox (4x capacity), 10 dropped
        collector.track("feature_used", {"i": i})
    assert collector.dropped() == {("spill_backlog_full", "normal"): 10}
    collector.start()
    assert collector.flush(timeout=10)
    assert sorted(e.data["i"] for e in sink.events()) == list(range(50))
    stats = collector.stats()
    assert stats.events_spooled == 40 and stats.events_pending == 0
    assert stats.balanced()
    assert not (tmp_path / "spool" / "spool.bin").stat().st_size  # drained spool is empty


def test_spill_keeps_undelivered_events_for_the_next_start(tmp_path: Path) -> None:
    config = spill_config(tmp_path)
    first = EventCollector(config, register_atexit=False, autostart=False)
    for i in range(15):
        first.track("feature_used", {"i": i})
    assert not first.shutdown(timeout=5)  # no sink ever ran: nothing was delivered
    assert first.stats().events_spooled == 15

    sink = MemorySink()
    second = EventCollector(config, sinks=[sink], register_atexit=False)
    try:
        assert wait_for(lambda: len(sink.events()) == 15)
        assert second.flush(timeout=10)
        assert [e.data["i"] for e in sink.events()] == list(range(15))  # in order
        stats = second.stats()
        assert stats.events_replayed == 15 and stats.events_received == 15
        assert stats.balanced()
    finally:
        second.shutdown(timeout=5)


def test_corrupt_spool_tail_is_skipped_and_counted(tmp_path: Path) -> None:
    config = spill_config(tmp_path)
    first = EventCollector(config, register_atexit=False, autostart=False)
    for i in range(3):
        first.track("feature_used", {"i": i})
    first.shutdown(timeout=5)
    with open(tmp_path / "spool" / "spool.bin", "ab") as spool:
        spool.write(b"\x40\x00\x00\x00garbage")  # a torn record
    sink = MemorySink()
    second = EventCollector(config, sinks=[sink], register_atexit=False)
    try:
        assert wait_for(lambda: len(sink.events()) == 3)
        assert second.stats().spool_corrupt_records == 1
    finally:
        second.shutdown(timeout=5)


def test_overload_never_exceeds_capacity_and_counts_are_exact(collectors: Any) -> None:
    """8 threads at 10x the queue's capacity: bounded queue, exact accounting."""
    capacity = 2_000
    sink = MemorySink()
    config = make_config(**{"collection.queue_capacity": capacity,
                            "collection.buffer_size": 500})  # fmt: skip
    collector = collectors(config, sinks=[sink])
    per_thread = 2_500  # 8 x 2 500 = 20 000 = 10x capacity, as fast as the threads go
    priorities = [LOW, NORMAL, HIGH, CRITICAL]

    def produce(t: int) -> None:
        for i in range(per_thread):
            collector.track("feature_used", {"t": t, "i": i}, priority=priorities[i % 4])

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert collector.flush(timeout=30)
    stats = collector.stats()
    assert stats.queue_high_water <= capacity
    assert stats.events_received == 8 * per_thread
    assert stats.balanced()
    assert stats.events_pending == 0
    assert len(sink.events()) == stats.events_processed
    assert stats.events_dropped == stats.events_received - stats.events_processed
    assert sum(stats.dropped_by_priority.values()) == stats.events_dropped
    delivered = {(e.data["t"], e.data["i"]) for e in sink.events()}
    assert len(delivered) == stats.events_processed  # no duplicates


def test_queue_capacity_changes_at_runtime(collectors: Any) -> None:
    """update_config resizes the queue: smaller takes effect as events leave, larger at once."""
    collector = collectors(small(**{"collection.queue_capacity": 10}), autostart=False)
    for i in range(10):
        collector.track("feature_used", {"i": i})
    collector.update_config(small(**{"collection.queue_capacity": 4}))
    collector.track("feature_used", {"i": "over"})  # still 10 queued: no room
    assert collector.stats().events_dropped == 1
    collector.update_config(small(**{"collection.queue_capacity": 12}))
    for i in range(3):
        collector.track("feature_used", {"i": f"grown{i}"})  # room for 2 more
    stats = collector.stats()
    assert stats.events_pending == 12 and stats.events_dropped == 2
    assert stats.queue_high_water == 12 and stats.balanced()

    shrunk = collectors(small(**{"collection.queue_capacity": 10}), autostart=False)
    shrunk.update_config(small(**{"collection.queue_capacity": 4}))
    for i in range(6):
        shrunk.track("feature_used", {"i": i})
    stats = shrunk.stats()
    assert stats.events_pending == 4 and stats.events_dropped == 2
    assert stats.queue_high_water == 4 and stats.balanced()


class _GatedSink:
    """Holds its first batch until ``gate`` is set: one long write, then quick ones."""

    def __init__(self) -> None:
        self.name = "gated"
        self.gate = threading.Event()
        self.events = 0

    def process(self, batch: Any) -> None:
        self.gate.wait(30)
        self.events += len(batch.events)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_under_block_a_slow_sink_is_waited_for_up_to_block_timeout(
    collectors: Any, monkeypatch: Any
) -> None:
    # The first batch takes longer than the stall wait (a store writing a big
    # transaction) while the inbox (64 batches) is full: under block, the worker keeps
    # waiting, as the caller would, instead of dropping batches.
    monkeypatch.setattr("tachimeter.collect.collector._SINK_WAIT_SECONDS", 0.05)
    sink = _GatedSink()
    config = make_config(
        **{
            "collection.buffer_size": 1,
            "collection.backpressure": "block",
            "collection.block_timeout": 30.0,
        }
    )
    collector = collectors(config, sinks=[sink])
    for i in range(80):
        collector.track("feature_used", {"i": i})
    threading.Timer(0.3, sink.gate.set).start()
    assert collector.flush(timeout=30)
    assert sink.events == 80
    assert collector.stats().flush_errors == 0


def test_without_block_a_sink_stuck_past_the_wait_is_stalled_and_counted(
    collectors: Any, monkeypatch: Any
) -> None:
    monkeypatch.setattr("tachimeter.collect.collector._SINK_WAIT_SECONDS", 0.05)
    sink = _GatedSink()
    config = make_config(
        **{"collection.buffer_size": 1, "collection.backpressure": "drop_lowest_priority"}
    )
    collector = collectors(config, sinks=[sink])
    for i in range(80):
        collector.track("feature_used", {"i": i})
    assert wait_for(lambda: collector.stats().flush_errors > 0)
    sink.gate.set()
    assert not collector.flush(timeout=30)  # dropped batches are never acknowledged
    assert sink.events < 80
