"""Store ingest and query latency (issue #5): raw ``executemany`` against the whole write path.

One stream of agent-product events from :mod:`bench.datagen` (sessions, sign-ups and
churn, page views, missions ``created -> started -> step* -> completed`` with drop-offs,
tool calls with durations, tokens and cost, late arrivals), timestamps over the 30 whole
days that end at today's midnight UTC, 100 events per user (10 000 users at 1M), is
ingested into two fresh databases with every migration applied, in one process:

* ``raw`` (the ceiling): rows built from the stream and inserted with ``executemany``,
  one transaction per 1 000 rows, same schema, indexes and pragmas;
* ``sink_with_projections`` (the headline): ``EventCollector.track`` with the collector's
  default 100-event batches into a :class:`~tachimeter.store.StoreSink` keeping every
  projection a default store keeps (``tachimeter.defaults.default_projections``: daily
  rollups, user activity, feature usage, sessions, funnel conversions of the benchmark's
  3-step funnel, defined before the first event, missions, event metrics). Everything the
  store maintains on write is in its time. Goal: at least 0.7 of raw's events/s.

The two take turns, in chunks of a twentieth of the stream (the order shuffled each
round), into their own files; the sink's collector keeps running across chunks. Load from
other processes on a shared machine then hits both alike. Reported: events/s overall and
over the last 10 % (indexes grow, late rows cost more), database bytes per event.

``store_with_projections``, also over the whole stream: the same projections and
transaction size as the sink's, through ``SQLiteStore.write_batch`` on the caller's
thread, with no collector threads beside it: the store's own cost, so the headline's gap
to it is what the collector's threads cost the writer (they share one GIL).

Secondary rows, at most 200 000 events, interleaved in the same rounds and compared with
a raw run of their own size: the sink without projections, the sink committing every
batch (what grouping buys) and ``SQLiteStore.write_batch`` called directly (the store's
cost without the collector's).

Then, on the ``sink_with_projections`` database as ingest left it, the dashboard
questions of the issue, measured by :func:`bench.queries.run_query_latency` (median and
p95 of 25 interleaved rounds each; goal: each under 200 ms median at 1M events).

``TACHIMETER_BENCH_EVENTS`` scales the run down (default 1 000 000). Run alone with
``python -m bench.store`` or ``python -m bench store``.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import shutil
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Final, NamedTuple, TypeAlias

import msgspec

from bench import datagen
from bench.harness import print_table, write_results
from bench.queries import FUNNEL, run_query_latency
from tachimeter import analyze as ta
from tachimeter.collect.collector import EventCollector
from tachimeter.config.settings import (
    AnalyticsConfig,
    CollectionSettings,
    SamplingSettings,
    StorageSettings,
)
from tachimeter.defaults import default_projections
from tachimeter.missions.properties import MISSION_ID, SEQ, STATUS, STEP_INDEX
from tachimeter.model.codec import data_to_builtins
from tachimeter.model.data import EventMetadata
from tachimeter.model.event_types import EventCategory, EventPriority, SamplingConfig
from tachimeter.model.events import AnalyticsEvent, CallKind
from tachimeter.model.ids import uuid7_from_ns
from tachimeter.model.rows import event_to_row
from tachimeter.model.timestamps import format_timestamp, utc_now
from tachimeter.store import Migrator, Projection, SQLiteStore, StoreSink
from tachimeter.store.sink import DEFAULT_TRANSACTION_EVENTS
from tachimeter.store.sqlite import _WAL_AUTOCHECKPOINT_PAGES, _WRITER_CACHE_KIB

DEFAULT_EVENTS: Final = 1_000_000
DAYS: Final = 30
EVENTS_PER_USER: Final = 100  # 1M events: 10 000 users, as bench/queries.py
SEED: Final = 0
RAW_TRANSACTION_ROWS: Final = 1_000
# The collector's default batch size: one StoreSink.process() per 100 events.
BUFFER_SIZE: Final = 100
# The secondary rows answer "how much does this part cost" and need no million events.
SIDE_EVENTS: Final = 200_000
# Every way ingests its events in this many chunks, the ways taking turns; a multiple of
# 10, so a checkpoint falls at 90 % and the last-10 % rate is over exactly the last tenth.
CHUNKS: Final = 20
GOAL_RATIO: Final = 0.7
_SESSIONS: Final = uuid.UUID("6f1c1a3e-55b2-4b7e-9a59-3c1d2f0e8b11")
_STATUS: Final = {
    "mission_created": "created",
    "mission_started": "executing",
    "mission_completed": "completed",
    "mission_failed": "failed",
}
_json: Final = msgspec.json.Encoder().encode


class Source(NamedTuple):
    """One generated event as a caller hands it over (``data``, typed or a dict) and, for
    the raw ceiling, the parts of its row that are constant or known up front."""

    ns: int
    timestamp: dt.datetime
    kind: Any  # EventType | Custom: what track() takes
    name: str
    data: Any
    properties: Any  # data as the row's JSON value: what raw encodes
    user_id: str | None
    session_id: str
    call: CallKind
    page_url: str | None
    referrer: str | None
    priority: EventPriority
    context: str
    category: str


def data_start(today: dt.date | None = None) -> dt.datetime:
    """Midnight UTC ``DAYS`` days before today's: the data ends at today's midnight."""
    day = today or utc_now().date()
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC) - dt.timedelta(days=DAYS)


def agent_stream(n: int, seed: int = SEED) -> list[Source]:
    """The first ``n`` events (in arrival order) of ``bench.datagen``'s agent product.

    Through the library every event has a session: the generator's events without one
    (meant for the server's inactivity split) get one per user and day. Mission events
    get what ``MissionTracker`` adds (``seq``, ``status``, ``step_index``), so the mission
    tables are kept as for an agent using ``tachimeter.mission()``.
    """
    data = datagen.generate(
        seed=seed, events=n, users=max(1, n // EVENTS_PER_USER), days=DAYS, start=data_start()
    )
    events = data.events[:n]
    tracked = _as_tracked(events)
    metadata = EventMetadata.from_environment()
    contexts: dict[tuple[Any, ...], tuple[str, str]] = {}
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    out: list[Source] = []
    for event in events:
        key = (event.event_type, event.priority, event.call, type(event.data))
        if key not in contexts:
            # The context the collector writes: this process's metadata, not the user's.
            probe = AnalyticsEvent(
                id=uuid7_from_ns(0),
                category=event.category,
                event_type=event.event_type,
                timestamp=event.timestamp,
                data=event.data,
                metadata=metadata,
                priority=event.priority,
                call=event.call,
            )
            contexts[key] = (event_to_row(probe).context or "", event.category.value)
        context, category = contexts[key]
        payload = tracked.get(id(event), event.data)
        session_id = event.session_id or str(
            uuid.uuid5(_SESSIONS, f"{event.user_id}/{event.timestamp.date()}")
        )
        out.append(
            Source(
                (event.timestamp - epoch) // dt.timedelta(microseconds=1) * 1000,
                event.timestamp,
                event.event_type,
                event.event_type.event_name,
                payload,
                data_to_builtins(payload),
                event.user_id,
                session_id,
                event.call,
                event.page_url,
                event.referrer,
                event.priority,
                context,
                category,
            )
        )
    return out


def _as_tracked(events: list[AnalyticsEvent]) -> dict[int, dict[str, Any]]:
    """Per ``id(event)`` of a mission event: its properties as the tracker writes them,
    ``seq`` numbering each mission's events in the order they happened."""
    seqs: dict[str, int] = {}
    out: dict[int, dict[str, Any]] = {}
    for event in sorted(events, key=lambda e: e.timestamp):
        data = event.data
        if type(data) is not dict or type(data.get(MISSION_ID)) is not str:
            continue
        seq = seqs.get(data[MISSION_ID], 0)
        seqs[data[MISSION_ID]] = seq + 1
        props = {**data, SEQ: seq}
        name = event.event_type.event_name
        if name in _STATUS:
            props[STATUS] = _STATUS[name]
        if "step" in data:
            props[STEP_INDEX] = data["step"]
        out[id(event)] = props
    return out


def bench_config(path: Path, buffer_size: int) -> AnalyticsConfig:
    """The collector and store settings of the ``sink`` runs: no sampling, blocking queue."""
    return AnalyticsConfig(
        storage=StorageSettings(path=str(path)),
        # Every generated event must arrive: performance events are sampled at 0.1 by
        # default, and a full queue blocks the caller rather than dropping.
        sampling=SamplingSettings(
            per_category={c: SamplingConfig(rate=1.0) for c in EventCategory}, seed=0
        ),
        collection=CollectionSettings(
            buffer_size=buffer_size, backpressure="block", block_timeout=120.0
        ),
    )


class Ingest(NamedTuple):
    """One finished ingest run: ``progress`` holds (events committed, seconds) per chunk."""

    events: int
    progress: list[tuple[int, float]]
    db_bytes: int
    extra: dict[str, Any]

    @property
    def seconds(self) -> float:
        return self.progress[-1][1]

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    def rate_at(self, events: int) -> float:
        """Events/s over the first ``events`` (the first checkpoint at or past it)."""
        for done, seconds in self.progress:
            if done >= events:
                return done / seconds
        return self.rate

    def last_tenth_rate(self) -> float:
        """Events/s over the rows after the last checkpoint at or before 90 %."""
        done, seconds = max(
            ((d, s) for d, s in self.progress if d <= self.events * 9 // 10), default=(0, 0.0)
        )
        return (self.events - done) / (self.seconds - seconds)

    def summary(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "seconds": round(self.seconds, 3),
            "events_per_s": round(self.rate, 1),
            "last_10pct_events_per_s": round(self.last_tenth_rate(), 1),
            "db_bytes": self.db_bytes,
            "bytes_per_event": round(self.db_bytes / self.events, 1),
            "progress": [(done, round(seconds, 3)) for done, seconds in self.progress],
            **self.extra,
        }


def _db_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())


class _Run:
    """Shared state of a way: its share of the stream and its (events, seconds) checkpoints."""

    def __init__(self, path: Path, source: list[Source]) -> None:
        self.path, self.source, self.events = path, source, len(source)
        self.done, self.seconds = 0, 0.0
        self.progress: list[tuple[int, float]] = []

    def _checkpoint(self, count: int, started: float) -> None:
        self.seconds += time.perf_counter() - started
        self.done += count
        self.progress.append((self.done, self.seconds))


class RawRun(_Run):
    """The ceiling: plain ``executemany`` of rows built from the stream, same pragmas."""

    insert: Final = (
        "INSERT INTO analytics_events (id, event_type, event_name, timestamp, session_id, "
        "user_id, properties, context, page_url, referrer, category, priority, mission_id, "
        "received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )

    def __init__(self, path: Path, source: list[Source]) -> None:
        super().__init__(path, source)
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = NORMAL")
        self.conn.execute(f"PRAGMA cache_size = -{_WRITER_CACHE_KIB}")
        self.conn.execute(f"PRAGMA wal_autocheckpoint = {_WAL_AUTOCHECKPOINT_PAGES}")
        Migrator(self.conn).up()

    def step(self, count: int) -> None:
        """Ingest the next ``count`` events, committed in 1 000-row transactions."""
        conn, insert = self.conn, self.insert
        started = time.perf_counter()
        chunk = self.source[self.done : self.done + count]
        for at in range(0, len(chunk), RAW_TRANSACTION_ROWS):
            received_at = format_timestamp(utc_now())
            rows = [
                (
                    str(uuid7_from_ns(s.ns)),
                    s.call,
                    s.name,
                    format_timestamp(s.timestamp),
                    s.session_id,
                    s.user_id,
                    None if s.properties is None else _json(s.properties).decode(),
                    s.context,
                    s.page_url,
                    s.referrer,
                    s.category,
                    s.priority.value,
                    s.properties.get("mission_id") if type(s.properties) is dict else None,
                    received_at,
                )
                for s in chunk[at : at + RAW_TRANSACTION_ROWS]
            ]
            conn.execute("BEGIN")
            conn.executemany(insert, rows)
            conn.execute("COMMIT")
        self._checkpoint(count, started)

    def finish(self) -> Ingest:
        self.conn.close()
        return Ingest(self.events, self.progress, _db_bytes(self.path), {})


class SinkRun(_Run):
    """Through ``EventCollector.track`` (default batches) and a ``StoreSink``."""

    def __init__(
        self,
        path: Path,
        source: list[Source],
        projections: list[Projection],
        max_transaction_events: int = DEFAULT_TRANSACTION_EVENTS,
    ) -> None:
        super().__init__(path, source)
        config = bench_config(path, BUFFER_SIZE)
        self.store = SQLiteStore(path, config)
        if projections:
            # Defined before the first event, so FunnelConversions keeps it during ingest.
            ta.define_funnel(self.store, FUNNEL)
        self.sink = StoreSink(
            self.store, projections, max_transaction_events=max_transaction_events
        )
        self.collector = EventCollector(config, sinks=[self.sink], register_atexit=False)

    def step(self, count: int) -> None:
        """Track the next ``count`` events; the step ends when they are committed.

        The caller flushes once, at the end of the step, as an application tracks
        events without waiting for them: the collector's blocking queue and the sink's
        bounded pending events pace it to the rate the store writes.
        """
        collector = self.collector
        track = collector.track
        started = time.perf_counter()
        chunk = self.source[self.done : self.done + count]
        for s in chunk:
            track(
                s.kind,
                None,
                data=s.data,
                user_id=s.user_id,
                session_id=s.session_id,
                priority=s.priority,
                call=s.call,
                page_url=s.page_url,
                referrer=s.referrer,
                timestamp=s.timestamp,
            )
        if not collector.flush(timeout=300):
            raise RuntimeError(f"flush failed: {collector.stats()}")
        self._checkpoint(count, started)

    def finish(self) -> Ingest:
        stats = self.collector.stats()
        counts = self.sink.stats()
        self.collector.shutdown(timeout=60)
        self.store.close()
        if counts["inserted"] != self.events or stats.events_dropped or stats.flush_errors:
            raise RuntimeError(f"not every event was stored: {counts} {stats}")
        extra = {
            "transactions": counts["transactions"],
            "events_per_transaction": round(self.events / counts["transactions"], 1),
        }
        return Ingest(self.events, self.progress, _db_bytes(self.path), extra)


def source_event(s: Source, metadata: EventMetadata) -> AnalyticsEvent:
    """The event a stream row stands for, with ``metadata`` as its collector's."""
    return AnalyticsEvent(
        id=uuid7_from_ns(s.ns),
        category=EventCategory(s.category),
        event_type=s.kind,
        timestamp=s.timestamp,
        session_id=s.session_id,
        priority=s.priority,
        data=s.data,
        metadata=metadata,
        user_id=s.user_id,
        call=s.call,
        page_url=s.page_url,
        referrer=s.referrer,
    )


class DirectRun(_Run):
    """``SQLiteStore.write_batch`` called directly, ``per_call`` events a call: the
    store's own cost (row encoding, de-duplication, the projections given) without the
    collector's threads beside it."""

    def __init__(
        self,
        path: Path,
        source: list[Source],
        projections: list[Projection] | None = None,
        per_call: int = RAW_TRANSACTION_ROWS,
    ) -> None:
        super().__init__(path, source)
        self.store = SQLiteStore(path, bench_config(path, BUFFER_SIZE))
        self.metadata = EventMetadata.from_environment()
        self.projections = projections or []
        self.per_call = per_call
        if self.projections:
            ta.define_funnel(self.store, FUNNEL)

    def step(self, count: int) -> None:
        """Build the next ``count`` events and write them."""
        metadata, write_batch = self.metadata, self.store.write_batch
        started = time.perf_counter()
        chunk = self.source[self.done : self.done + count]
        for at in range(0, len(chunk), self.per_call):
            write_batch(
                [source_event(s, metadata) for s in chunk[at : at + self.per_call]],
                projections=self.projections,
            )
        self._checkpoint(count, started)

    def finish(self) -> Ingest:
        self.store.close()
        return Ingest(self.events, self.progress, _db_bytes(self.path), {})


Run: TypeAlias = RawRun | SinkRun | DirectRun


def interleave(runs: dict[str, Run], chunks: int = CHUNKS, seed: int = 0) -> dict[str, Ingest]:
    """Run every way a chunk (``1/chunks`` of its events) at a time, in a shuffled order
    each round (bench.harness's rule): load from other processes hits all ways alike."""
    rng = random.Random(seed)
    sizes = {name: -(-run.events // chunks) for name, run in runs.items()}
    active = dict(runs)
    while active:
        names = list(active)
        rng.shuffle(names)
        for name in names:
            run = active[name]
            run.step(min(sizes[name], run.events - run.done))
            if run.done >= run.events:
                del active[name]
    return {name: run.finish() for name, run in runs.items()}


def _ratio(way: Ingest, raw: Ingest) -> dict[str, float]:
    return {
        "events_per_s": round(way.rate / raw.rate, 3),
        "last_10pct_events_per_s": round(way.last_tenth_rate() / raw.last_tenth_rate(), 3),
    }


def main() -> None:
    """Ingest, measure the queries, write bench/results/store.json and print tables."""
    n = int(os.environ.get("TACHIMETER_BENCH_EVENTS", DEFAULT_EVENTS))
    side = min(n, SIDE_EVENTS)
    projections = default_projections()
    started = time.perf_counter()
    stream = agent_stream(n)
    generate_seconds = time.perf_counter() - started
    workdir = Path(tempfile.mkdtemp(prefix="tachimeter-bench-store-"))
    try:
        head = stream[:side]
        plan: dict[str, Run] = {
            "raw": RawRun(workdir / "raw.db", stream),
            "sink_with_projections": SinkRun(workdir / "sink.db", stream, projections),
            # The sink's transactions and projections without the collector's threads:
            # what the store costs alone, against what the headline's sink costs.
            "store_with_projections": DirectRun(
                workdir / "direct.db",
                stream,
                default_projections(),
                per_call=DEFAULT_TRANSACTION_EVENTS,
            ),
            "side_raw": RawRun(workdir / "side_raw.db", head),
            "side_sink_no_projections": SinkRun(workdir / "side_sink.db", head, []),
            "side_sink_commit_per_batch": SinkRun(
                workdir / "side_per_batch.db", head, [], max_transaction_events=BUFFER_SIZE
            ),
            "side_store_write_batch": DirectRun(workdir / "side_direct.db", head),
        }
        del stream, head
        runs = interleave(plan)
        del plan
        latency = run_query_latency(workdir / "sink.db")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    raw, sink = runs["raw"], runs["sink_with_projections"]
    headline = {
        "ratio": _ratio(sink, raw),
        "store_alone_ratio": _ratio(runs["store_with_projections"], raw),
        "ratio_over_first_side_events": round(sink.rate_at(side) / raw.rate_at(side), 3),
        "goal_ratio": GOAL_RATIO,
    }
    side_ratios = {
        way: _ratio(run, runs["side_raw"])
        for way, run in runs.items()
        if way.startswith("side_") and way != "side_raw"
    }
    write_results(
        "store",
        {
            "events": n,
            "side_events": side,
            "days": DAYS,
            "users": max(1, n // EVENTS_PER_USER),
            "generate_seconds": round(generate_seconds, 1),
            "sqlite_version": sqlite3.sqlite_version,
            "projections": [p.name for p in projections],
            "funnel": [step.event for step in FUNNEL.steps],
            "collector_buffer_size": BUFFER_SIZE,
            "raw_transaction_rows": RAW_TRANSACTION_ROWS,
            "caller_flushes": "once per chunk",
            "chunks": CHUNKS,
            "ingest": {way: run.summary() for way, run in runs.items()},
            "headline": headline,
            "side_ratio_over_side_raw": side_ratios,
            "query_latency": latency,
        },
    )
    rows: list[tuple[str, ...]] = []
    for way, run in runs.items():
        base = raw if not way.startswith("side_") else runs["side_raw"]
        rows.append(
            (
                way,
                f"{run.events:,}",
                f"{run.rate:,.0f}",
                f"{run.last_tenth_rate():,.0f}",
                f"{run.db_bytes / run.events:.0f}",
                f"{run.rate / base.rate:.2f}",
                f"{run.last_tenth_rate() / base.last_tenth_rate():.2f}",
            )
        )
    print_table(
        f"store ingest, {n:,} events (projections: {', '.join(p.name for p in projections)})",
        rows,
        ("way", "events", "events/s", "last 10% ev/s", "bytes/event", "ratio", "ratio last 10%"),
    )
    queries = latency["queries"]
    print_table(
        f"queries on the sink_with_projections database ({latency['events']:,} events)",
        [
            (name, f"{r['median_ms']:.1f}", f"{r['p95_ms']:.1f}", str(r["runs"]))
            for name, r in queries.items()
        ],
        ("query", "median ms", "p95 ms", "runs"),
    )


if __name__ == "__main__":
    main()
