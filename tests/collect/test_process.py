"""Process-level behaviour: fork safety, SIGKILL crash recovery, the exit hook."""

from __future__ import annotations

import json
import multiprocessing
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from collecting import make_config

from tachimeter.collect.collector import EventCollector
from tachimeter.collect.sinks import JsonlFileSink, MemorySink

GUARD = 60.0


def _child_tracks(collector: EventCollector, out: str) -> None:
    sink = JsonlFileSink(out, name="child")
    collector.register_sink(sink)
    collector.start()
    collector.track("feature_used", {"who": "child"})
    ok = collector.flush(timeout=10)
    stats = collector.stats()
    with open(out + ".stats", "w") as handle:
        json.dump({"ok": ok, "received": stats.events_received}, handle)


def test_forked_child_gets_a_fresh_queue_not_the_parents(tmp_path: Path) -> None:
    parent_sink = MemorySink("parent")
    collector = EventCollector(
        make_config(tmp_path), sinks=[parent_sink], register_atexit=False, autostart=False
    )
    try:
        for i in range(5):
            collector.track("feature_used", {"who": "parent", "i": i})  # queued, not delivered
        out = str(tmp_path / "child.jsonl")
        process = multiprocessing.get_context("fork").Process(
            target=_child_tracks, args=(collector, out)
        )
        process.start()
        process.join(GUARD)
        assert process.exitcode == 0
        lines = [json.loads(line) for line in Path(out).read_text().splitlines()]
        assert [line["data"] for line in lines] == [{"who": "child"}]
        stats = json.loads(Path(out + ".stats").read_text())
        assert stats == {"ok": True, "received": 1}
        collector.start()
        assert collector.flush(timeout=10)
        assert [e.data["i"] for e in parent_sink.events()] == list(range(5))
    finally:
        collector.shutdown(timeout=5)


CRASH_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from tachimeter.collect import spool as spool_module
    from tachimeter.collect.collector import EventCollector
    from tachimeter.collect.sinks import JsonlFileSink
    from tachimeter.config import load_config

    out, spool_dir, acked = sys.argv[1], sys.argv[2], sys.argv[3]
    armed = False
    append = spool_module.Spool.append

    def append_then_maybe_die(self, payloads):
        append(self, payloads)
        if armed:  # die right after an overflow burst reached the disk
            os.kill(os.getpid(), signal.SIGKILL)

    spool_module.Spool.append = append_then_maybe_die
    config = load_config(env={}, cwd="/nonexistent", **{
        "collection.backpressure": "spill", "collection.spool_dir": spool_dir,
        "collection.queue_capacity": 500, "collection.buffer_size": 250,
        "sampling.seed": 0})
    collector = EventCollector(config, sinks=[JsonlFileSink(out)], register_atexit=False)
    ack = open(acked, "a")
    for i in range(100_000):
        collector.track("feature_used", {"seq": i})
        if i % 2000 == 1999 and collector.flush(timeout=30):
            assert collector.stats().events_dropped == 0
            ack.write(f"{i}\\n"); ack.flush(); os.fsync(ack.fileno())
        armed = i > 50_000
    ack.write("never-killed\\n"); ack.flush()
    """
)


def test_sigkill_loses_no_acknowledged_event(tmp_path: Path) -> None:
    """A child tracks 100 000 events with spill into a JSONL sink and is SIGKILLed mid-burst.

    Afterwards a new collector replays the spool: every event acknowledged by a flush before
    the kill is present at least once, and everything the spool held is recovered.
    """
    out, spool, acked = tmp_path / "events.jsonl", tmp_path / "spool", tmp_path / "acked"
    acked.touch()
    child = subprocess.run(
        [sys.executable, "-c", CRASH_CHILD, str(out), str(spool), str(acked)],
        timeout=GUARD,
        capture_output=True,
        text=True,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    acks = acked.read_text().split()
    assert acks and "never-killed" not in acks
    last_acked = int(acks[-1])
    spooled_before = _spool_pending(spool)
    assert spooled_before > 0

    # restart: a new collector on the same spool and file replays what was left
    config = make_config(**{"collection.backpressure": "spill", "collection.spool_dir": str(spool)})
    collector = EventCollector(config, sinks=[JsonlFileSink(out)], register_atexit=False)
    try:
        assert collector.flush(timeout=30)
        stats = collector.stats()
        assert stats.events_replayed == spooled_before
        assert stats.balanced()
    finally:
        collector.shutdown(timeout=10)
    seqs = []
    for line in out.read_text().splitlines():
        try:
            seqs.append(json.loads(line)["data"]["seq"])
        except ValueError:
            continue  # the line the kill cut short (written, never acknowledged)
    unique = set(seqs)
    missing = set(range(last_acked + 1)) - unique
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:5]}"
    assert len(unique) >= last_acked + 1 + spooled_before


def _spool_pending(directory: Path) -> int:
    from tachimeter.collect.spool import Spool

    if not directory.exists():
        return 0
    spool = Spool(directory)
    try:
        return spool.pending
    finally:
        spool.close()


EXIT_CHILD = textwrap.dedent(
    """
    import threading, tachimeter as tm
    from tachimeter.collect.sinks import MemorySink

    class Stuck(MemorySink):
        def process(self, batch):
            threading.Event().wait()  # never returns

    tm.configure(sinks=[Stuck("stuck")], env={})
    for i in range(10):
        tm.track("feature_used", {"i": i})
    print("tracked", flush=True)
    """
)


def test_exit_hook_never_hangs_the_process_even_with_a_stuck_sink() -> None:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", EXIT_CHILD], capture_output=True, text=True, timeout=GUARD
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "tracked" in result.stdout
    assert "undelivered" in result.stderr  # the exit hook says what it could not deliver
    assert elapsed < GUARD


EXIT_FLUSH_CHILD = textwrap.dedent(
    """
    import sys, tachimeter as tm
    from tachimeter.collect.sinks import JsonlFileSink
    tm.configure(sinks=[JsonlFileSink(sys.argv[1])], env={}, flush_interval=3600)
    for i in range(7):
        tm.track("feature_used", {"i": i})
    """
)


def test_exit_hook_flushes_pending_events(tmp_path: Path) -> None:
    out = tmp_path / "exit.jsonl"
    subprocess.run([sys.executable, "-c", EXIT_FLUSH_CHILD, str(out)], check=True, timeout=GUARD)
    assert len(out.read_text().splitlines()) == 7


def test_jsonl_sink_rotates_by_size(tmp_path: Path, collectors: Any) -> None:
    path = tmp_path / "rot.jsonl"
    sink = JsonlFileSink(path, max_bytes=4_000, backups=2)
    collector = collectors(sinks=[sink])
    for i in range(60):
        collector.track("feature_used", {"i": i})
        if i % 10 == 9:
            assert collector.flush(timeout=10)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["rot.jsonl", "rot.jsonl.1", "rot.jsonl.2"]
    assert all(p.stat().st_size <= 4_000 for p in tmp_path.iterdir())
    last = [json.loads(x)["data"]["i"] for x in path.read_text().splitlines()]
    assert last[-1] == 59
