"""SIGKILL in the middle of a store transaction loses no acknowledged event."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from tachimeter.collect.collector import EventCollector
from tachimeter.config import load_config
from tachimeter.store import SQLiteStore, StoreSink

GUARD = 120.0

CRASH_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from tachimeter.collect.collector import EventCollector
    from tachimeter.config import load_config
    from tachimeter.store import SQLiteStore, StoreSink

    db, acked = sys.argv[1], sys.argv[2]

    class DieWhenArmed:
        # Runs inside the write transaction, after the batch's rows are inserted and
        # before COMMIT: the kill lands in the middle of a transaction.
        name = "die_when_armed"
        armed = False

        def apply(self, conn, events, rows):
            if DieWhenArmed.armed:
                os.kill(os.getpid(), signal.SIGKILL)

        def rebuild(self, conn):
            pass

    config = load_config(env={}, cwd="/nonexistent", **{"storage.path": db, "sampling.seed": 0})
    store = SQLiteStore(None, config)
    collector = EventCollector(
        config, sinks=[StoreSink(store, [DieWhenArmed()])], register_atexit=False
    )
    ack = open(acked, "a")
    for i in range(100_000):
        collector.track("feature_used", {"seq": i})
        if i % 2000 == 1999 and collector.flush(timeout=60):
            assert collector.stats().events_dropped == 0
            ack.write(f"{i}\\n"); ack.flush(); os.fsync(ack.fileno())
        if i == 70_000:
            DieWhenArmed.armed = True
    ack.write("never-killed\\n"); ack.flush()
    """
)


def test_sigkill_mid_transaction_loses_no_acknowledged_event(tmp_path: Path) -> None:
    """A child tracks 100 000 events into the store at full speed and is SIGKILLed inside a
    write transaction. After restart every acknowledged event is stored exactly once and
    the database passes ``PRAGMA integrity_check``."""
    db, acked = tmp_path / "analytics.db", tmp_path / "acked"
    acked.touch()
    child = subprocess.run(
        [sys.executable, "-c", CRASH_CHILD, str(db), str(acked)],
        timeout=GUARD,
        capture_output=True,
        text=True,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    acks = acked.read_text().split()
    assert acks and "never-killed" not in acks
    last_acked = int(acks[-1])
    assert last_acked >= 69_999

    with SQLiteStore(db) as store:  # recovers the WAL the kill left behind
        assert store.check_integrity() == "ok"
        counts = dict(
            store.execute(
                "SELECT json_extract(properties, '$.seq'), count(*) FROM analytics_events "
                "GROUP BY 1"
            )
        )
        missing = set(range(last_acked + 1)) - set(counts)
        assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:5]}"
        assert set(counts.values()) == {1}, "an event is stored twice"
        # the transaction the kill interrupted left nothing: what is stored is a prefix
        assert sorted(counts) == list(range(len(counts)))
        stored = len(counts)
        assert stored < 100_000

        # writing resumes on the recovered file
        config = load_config(env={}, cwd="/nonexistent", **{"storage.path": str(db)})
        collector = EventCollector(config, sinks=[StoreSink(store)], register_atexit=False)
        try:
            for i in range(100_000, 100_500):
                collector.track("feature_used", {"seq": i})
            assert collector.flush(timeout=GUARD)
        finally:
            collector.shutdown(timeout=GUARD)
        assert store.event_count() == stored + 500
        assert store.check_integrity() == "ok"
