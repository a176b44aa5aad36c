"""StoreSink: acknowledged means committed, group commit, replays, failures and recovery."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import sqlite3
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from test_store_sqlite import RecordingProjection, seeded_events

from tachimeter.collect.collector import EventCollector
from tachimeter.config import load_config
from tachimeter.errors import ConfigError, SinkError
from tachimeter.model.events import AnalyticsEvent, EventBatch
from tachimeter.model.rows import EventRow
from tachimeter.store import EventStore, Projection, SQLiteStore, StoreSink, WriteResult
from tachimeter.testing import collector_for_tests

GUARD = 30.0


def batches(events: list[AnalyticsEvent], size: int) -> list[EventBatch]:
    return [
        EventBatch.new(events[i : i + size], sequence=i // size + 1)
        for i in range(0, len(events), size)
    ]


def fill_disk(store: SQLiteStore) -> None:
    """Simulate a full disk: the file may not grow past its current page count."""
    conn = store._writer()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")


def free_disk(store: SQLiteStore) -> None:
    store._writer().execute("PRAGMA max_page_count = 1073741823")


class GatedStore:
    """Delegates to a store; the first write waits for the test to open the gate."""

    def __init__(self, store: SQLiteStore) -> None:
        self.inner = store
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.writes: list[int] = []

    def write_batch(
        self, events: Sequence[AnalyticsEvent], *, projections: Sequence[Projection] = ()
    ) -> WriteResult:
        self.entered.set()
        self.gate.wait(GUARD)
        self.writes.append(len(events))
        return self.inner.write_batch(events, projections=projections)

    def close(self) -> None:
        self.inner.close()


class PoisonProjection(RecordingProjection):
    """Fails on any batch holding an event whose data has ``poison``."""

    name = "poison"

    def apply(
        self, conn: sqlite3.Connection, events: Sequence[AnalyticsEvent], rows: Sequence[EventRow]
    ) -> None:
        if any(isinstance(e.data, dict) and e.data.get("poison") for e in events):
            raise RuntimeError("poisoned")
        super().apply(conn, events, rows)


@pytest.fixture
def store(tmp_path: Path) -> Any:
    with SQLiteStore(tmp_path / "analytics.db") as opened:
        yield opened


def test_collector_flush_true_means_every_event_is_committed(store: SQLiteStore) -> None:
    events = seeded_events(1000, seed=11)
    sink = StoreSink(store)
    with collector_for_tests(sink) as collector:
        collector.collect_batch(events)
        assert collector.flush(timeout=GUARD)
        # committed: visible to a brand-new connection of another "process"
        other = sqlite3.connect(store.path)
        counted = dict(
            other.execute("SELECT event_name, count(*) FROM analytics_events GROUP BY 1")
        )
        other.close()
    assert counted == Counter(e.event_name for e in events)
    stats = sink.stats()
    assert stats["inserted"] == 1000 and stats["lost"] == 0 and stats["pending"] == 0


def test_replayed_batches_are_stored_once_and_projected_once(store: SQLiteStore) -> None:
    events = seeded_events(300, seed=12)
    projection = RecordingProjection()
    sink = StoreSink(store, [projection])
    for batch in batches(events, 100) + batches(events[50:250], 100):
        sink.process(batch)
    sink.flush()
    assert store.event_count() == 300
    assert sorted(projection.seen) == sorted(str(e.id) for e in events)
    assert sink.stats()["duplicates"] == 200
    assert dict(store.execute("SELECT name, n FROM seen")) == Counter(e.event_name for e in events)
    sink.close()


def test_batches_that_wait_for_the_writer_share_one_transaction(store: SQLiteStore) -> None:
    gated = GatedStore(store)
    sink = StoreSink(gated)
    pieces = batches(seeded_events(1000, seed=13), 100)
    sink.process(pieces[0])
    assert gated.entered.wait(GUARD)  # the writer is busy with the first batch
    for batch in pieces[1:]:
        sink.process(batch)
    gated.gate.set()
    sink.flush()
    assert gated.writes == [100, 900]
    assert sink.stats()["transactions"] == 2
    assert store.event_count() == 1000


def test_one_failing_batch_in_a_group_fails_alone(store: SQLiteStore) -> None:
    events = seeded_events(500, seed=14)
    poisoned = AnalyticsEvent.new("feature_used", {"poison": True})
    gated = GatedStore(store)
    sink = StoreSink(gated, [PoisonProjection()])
    pieces = batches(events, 100)
    pieces.insert(3, EventBatch.new([*seeded_events(5, seed=99), poisoned], sequence=99))
    for batch in pieces:
        sink.process(batch)
    gated.gate.set()
    with pytest.raises(SinkError, match="6 were neither stored nor spooled and 0 went"):
        sink.flush()
    sink.flush()  # reported once
    assert store.event_count() == 500
    stats = sink.stats()
    assert (stats["lost"], stats["failures"], stats["inserted"]) == (6, 1, 500)


def test_a_full_disk_is_reported_not_acknowledged_and_writing_resumes(
    store: SQLiteStore,
) -> None:
    events = seeded_events(900, seed=15)
    sink = StoreSink(store)
    with collector_for_tests(sink) as collector:
        collector.collect_batch(events[:300])
        assert collector.flush(timeout=GUARD)
        fill_disk(store)
        collector.collect_batch(events[300:600])
        assert not collector.flush(timeout=GUARD)  # those events are not acknowledged
        assert collector.stats().flush_errors >= 1
        assert sink.stats()["lost"] == 300
        free_disk(store)
        collector.collect_batch(events[600:])
        assert collector.flush(timeout=GUARD)
    stored = {r[0] for r in store.execute("SELECT id FROM analytics_events")}
    assert stored == {str(e.id) for e in events[:300] + events[600:]}
    assert store.check_integrity() == "ok"


def test_a_read_only_database_is_reported_and_writing_resumes(store: SQLiteStore) -> None:
    events = seeded_events(200, seed=16)
    sink = StoreSink(store)
    store._writer().execute("PRAGMA query_only = ON")  # as if the file became read-only
    sink.process(batches(events, 100)[0])
    with pytest.raises(SinkError, match="100 were neither stored"):
        sink.flush()
    store._writer().execute("PRAGMA query_only = OFF")
    sink.process(batches(events, 100)[1])
    sink.flush()
    assert store.event_count() == 100


def test_with_spill_refused_batches_go_to_the_spool_and_arrive_exactly_once(
    tmp_path: Path,
) -> None:
    events = seeded_events(600, seed=17)
    settings = {
        "collection.backpressure": "spill",
        "collection.spool_dir": str(tmp_path / "spool"),
        "storage.path": str(tmp_path / "analytics.db"),
        "sampling.seed": 0,
    }
    config = load_config(env={}, cwd="/nonexistent-tachimeter-test-dir", **settings)
    store = SQLiteStore(None, config)
    sink = StoreSink(store)
    collector = EventCollector(config, sinks=[sink], register_atexit=False)
    try:
        collector.collect_batch(events[:200])
        assert collector.flush(timeout=GUARD)
        fill_disk(store)
        collector.collect_batch(events[200:])
        assert not collector.flush(timeout=GUARD)  # parked in the retry spool
        assert sink.stats()["spilled"] == 400 and sink.stats()["lost"] == 0
        free_disk(store)
    finally:
        collector.shutdown(timeout=GUARD)
    assert store.event_count() == 200
    # the next start replays the retry spool into the store
    sink = StoreSink(store)
    collector = EventCollector(config, sinks=[sink], register_atexit=False)
    try:
        assert collector.flush(timeout=GUARD)
        assert collector.stats().balanced()
    finally:
        collector.shutdown(timeout=GUARD)
    ids = [r[0] for r in store.execute("SELECT id FROM analytics_events")]
    assert sorted(ids) == sorted(str(e.id) for e in events)
    store.close()


def test_close_commits_what_is_pending_and_closes_an_owned_store(tmp_path: Path) -> None:
    sink = StoreSink.open(tmp_path / "analytics.db")
    assert isinstance(sink.store, EventStore)
    for batch in batches(seeded_events(250, seed=18), 50):
        sink.process(batch)
    sink.close()
    with pytest.raises(SinkError, match="is closed"):
        sink.process(batches(seeded_events(1, seed=19), 1)[0])
    with SQLiteStore(tmp_path / "analytics.db") as again:
        assert again.event_count() == 250


def test_a_slow_store_holds_process_back_at_the_pending_bound(store: SQLiteStore) -> None:
    gated = GatedStore(store)
    sink = StoreSink(gated, max_pending_events=200, max_transaction_events=100)
    pieces = batches(seeded_events(400, seed=20), 100)
    sink.process(pieces[0])
    assert gated.entered.wait(GUARD)
    sink.process(pieces[1])  # 200 pending now: the next process() waits
    blocked = threading.Thread(target=sink.process, args=(pieces[2],))
    blocked.start()
    blocked.join(0.2)
    assert blocked.is_alive()
    gated.gate.set()
    blocked.join(GUARD)
    sink.process(pieces[3])
    sink.flush()
    assert store.event_count() == 400
    assert gated.writes == [100, 100, 100, 100]


def test_bad_sink_configuration_fails_at_construction(store: SQLiteStore) -> None:
    with pytest.raises(ConfigError, match="two projections named 'recording'"):
        StoreSink(store, [RecordingProjection(), RecordingProjection()])
    with pytest.raises(ConfigError, match="must implement Projection"):
        StoreSink(store, [object()])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="must be > 0"):
        StoreSink(store, max_transaction_events=0)


def test_events_arrive_in_the_store_within_the_flush_interval(store: SQLiteStore) -> None:
    """Without an explicit flush: a trickle is committed by the collector's timed flush."""
    sink = StoreSink(store)
    with collector_for_tests(sink, **{"collection.flush_interval": 0.05}) as collector:
        collector.track("feature_used", {"feature": "search"})
        deadline = dt.datetime.now() + dt.timedelta(seconds=GUARD)
        while store.event_count() == 0 and dt.datetime.now() < deadline:
            threading.Event().wait(0.01)
        assert store.event_count() == 1


def _child_writes(sink: StoreSink, batch: EventBatch) -> None:
    sink.process(batch)
    sink.flush()


def test_a_forked_child_gets_its_own_writer(store: SQLiteStore) -> None:
    events = seeded_events(300, seed=21)
    sink = StoreSink(store)
    sink.process(batches(events, 100)[0])
    sink.flush()  # the parent's writer thread is running now
    child = multiprocessing.get_context("fork").Process(
        target=_child_writes, args=(sink, batches(events, 100)[1])
    )
    child.start()
    child.join(GUARD)
    assert child.exitcode == 0
    sink.process(batches(events, 100)[2])
    sink.flush()
    assert store.event_count() == 300
    assert store.check_integrity() == "ok"


def test_encoded_batches_sharing_ids_in_one_transaction_store_each_event_once(
    store: SQLiteStore,
) -> None:
    events = seeded_events(300, seed=21)
    projection = RecordingProjection()
    first, second = store.encode_batch(events[:200]), store.encode_batch(events[100:] * 2)
    assert second.duplicates == 200  # repeated within the batch: dropped while encoding
    result = store.write_encoded([first, second], projections=[projection])
    assert (result.inserted, result.duplicates, result.rejected) == (300, 300, 0)
    assert sorted(projection.seen) == sorted(str(e.id) for e in events)
    assert store.event_count() == 300


def test_a_batch_the_delivery_thread_cannot_encode_is_written_by_the_writer(
    tmp_path: Path,
) -> None:
    class FlakyEncoder(SQLiteStore):
        failures = 1

        def encode_batch(self, events: Sequence[AnalyticsEvent]) -> Any:
            if FlakyEncoder.failures:
                FlakyEncoder.failures -= 1
                raise RuntimeError("encoder down")
            return super().encode_batch(events)

    with FlakyEncoder(tmp_path / "flaky.db") as store:
        sink = StoreSink(store)
        for batch in batches(seeded_events(250, seed=22), 100):
            sink.process(batch)
        sink.flush()
        assert store.event_count() == 250
        assert sink.stats()["inserted"] == 250
        assert FlakyEncoder.failures == 0
        sink.close()
