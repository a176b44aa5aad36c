"""Store ingest: raw ``executemany`` (the ceiling) against the collector and ``StoreSink``.

One deterministic stream of agent-product events (names, 1 000 users with a skewed
activity, sessions, properties, time-ordered UUIDv7 ids) is ingested into a fresh
database with every migration applied, in one process:

* ``raw``: rows built straight from the stream and inserted with ``executemany``, one
  transaction per 1 000 rows: what SQLite can take on this schema and these indexes;
* ``sink``: ``EventCollector.track`` with the collector's default 100-event batches into a
  :class:`~tachimeter.store.StoreSink`, which groups waiting batches into one
  transaction (the goal: ``sink / raw >= 0.7``);
* ``store_write_batch``: ``SQLiteStore.write_batch`` called directly with 1 000 events:
  the store's own cost without the collector's;
* ``sink_commit_per_batch``: the sink with one transaction per batch, which shows what
  grouping buys;
* ``sink_with_projections``: with every projection a default store keeps
  (``tachimeter.defaults.default_projections``: the summaries, missions, event metrics;
  named in the JSON): what keeping the derived tables costs on top.

The last three ingest at most 200 000 events and are compared with raw's rate over as
many events. Reported per way: events/s overall and over the last 10 % (indexes grow, so
late rows cost more), bytes of database per event, and the sink's transactions. The
caller flushes every 50 batches: a collector hands a sink at most 64 batches before it
drops them for that sink (``_SINK_INBOX``), and an ingest benchmark must not drop.

``TACHIMETER_BENCH_EVENTS`` scales the run down (default 1 000 000). Query latency over
the stored events belongs to the analytics benchmark: :func:`run_query_latency`.
Run alone with ``python -m bench.store`` (or ``python -m bench store`` once listed there).
"""

from __future__ import annotations

import datetime as dt
import importlib
import os
import random
import shutil
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Final, NamedTuple, TypeAlias

import msgspec

from bench.harness import print_table, write_results
from tachimeter.collect.collector import EventCollector
from tachimeter.config.settings import (
    AnalyticsConfig,
    CollectionSettings,
    SamplingSettings,
    StorageSettings,
)
from tachimeter.model.data import EventMetadata
from tachimeter.model.event_types import EventCategory, SamplingConfig, event_type_from_name
from tachimeter.model.events import AnalyticsEvent
from tachimeter.model.ids import uuid7_from_ns
from tachimeter.model.rows import event_to_row
from tachimeter.model.timestamps import format_timestamp, from_ns, utc_now
from tachimeter.store import Migrator, Projection, SQLiteStore, StoreSink
from tachimeter.store.sink import DEFAULT_TRANSACTION_EVENTS
from tachimeter.store.sqlite import _WRITER_CACHE_KIB

DEFAULT_EVENTS: Final = 1_000_000
RAW_TRANSACTION_ROWS: Final = 1_000
# The collector's default batch size: one StoreSink.process() per 100 events.
BUFFER_SIZE: Final = 100
# The two side runs (commit per batch, all projections) answer "how much slower" and need
# no million events: they ingest at most this many, compared with raw over as many.
SIDE_EVENTS: Final = 200_000
# Each way ingests its events in this many chunks, the ways taking turns.
CHUNKS: Final = 20
# Batches the caller lets the collector hand the sink between flushes: below the 64 a
# sink may have waiting before the collector drops batches for it.
FLUSH_EVERY_BATCHES: Final = 50
START: Final = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
# One event every 2.6 s on average: a million events span about 30 days.
MEAN_GAP_NS: Final = 2_600_000_000
USERS: Final = 1_000
CONCURRENT_SESSIONS: Final = 40

_NAMES: Final = (
    ("feature_used", 25),
    ("page_view", 14),
    ("tool_invoked", 15),
    ("tokens_consumed", 10),
    ("response_latency", 8),
    ("mission_step_completed", 8),
    ("search_performed", 6),
    ("command_executed", 5),
    ("cache_hit", 3),
    ("mission_started", 2),
    ("error_occurred", 2),
    ("mission_completed", 2),
)
_FEATURES: Final = ("search", "refactor", "explain", "test_gen", "review", "chat", "plan")
_TOOLS: Final = ("read_file", "grep", "run_tests", "edit_file", "web_search", "shell")
_MODELS: Final = ("claude-sonnet-4", "claude-haiku-4", "gpt-4o", "gpt-4o-mini")
_PATHS: Final = ("/", "/missions", "/missions/detail", "/settings", "/dashboard", "/docs")
_QUERIES: Final = ("flaky test", "rate limit", "migration", "auth token", "café crème")
_COMMANDS: Final = ("run", "status", "deploy", "rollback", "logs")
_COMPONENTS: Final = ("planner", "executor", "tool_runner", "llm_client")
_json: Final = msgspec.json.Encoder().encode


class Source(NamedTuple):
    """One generated event, before either ingest path turns it into a row."""

    ns: int
    name: str
    user_id: str
    session_id: str
    properties: dict[str, Any]


class _Session:
    __slots__ = ("id", "left", "mission_id", "step", "user_id")

    def __init__(self, rng: random.Random, user_id: str) -> None:
        self.id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        self.user_id = user_id
        self.left = rng.randint(5, 120)
        self.mission_id = f"m-{rng.getrandbits(48):012x}"
        self.step = 0


def generate(n: int, seed: int = 0) -> Iterator[Source]:
    """``n`` events in time order; the same ``n`` and ``seed`` give the same stream."""
    rng = random.Random(seed)
    users = [f"user-{rng.getrandbits(32):08x}" for _ in range(USERS)]
    # A few users are very active, most are not (Zipf-like, exponent 0.8).
    user_weights = list(_accumulate(1 / (rank + 1) ** 0.8 for rank in range(USERS)))
    names = [name for name, _ in _NAMES]
    name_weights = list(_accumulate(float(w) for _, w in _NAMES))

    def new_session() -> _Session:
        return _Session(rng, rng.choices(users, cum_weights=user_weights)[0])

    sessions = [new_session() for _ in range(CONCURRENT_SESSIONS)]
    ns = int((START - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)).total_seconds()) * 10**9
    for _ in range(n):
        ns += 1 + int(rng.expovariate(1.0) * MEAN_GAP_NS)
        slot = rng.randrange(CONCURRENT_SESSIONS)
        session = sessions[slot]
        name = rng.choices(names, cum_weights=name_weights)[0]
        yield Source(ns, name, session.user_id, session.id, _properties(rng, name, session))
        session.left -= 1
        if session.left <= 0:
            sessions[slot] = new_session()


def _accumulate(values: Iterable[float]) -> Iterator[float]:
    total = 0.0
    for value in values:
        total += value
        yield total


def _properties(rng: random.Random, name: str, session: _Session) -> dict[str, Any]:
    if name == "feature_used":
        return {
            "feature": rng.choice(_FEATURES),
            "duration_ms": rng.randint(20, 4000),
            "success": rng.random() < 0.93,
        }
    if name == "page_view":
        return {"path": rng.choice(_PATHS), "load_ms": rng.randint(50, 900)}
    if name == "tool_invoked":
        return {
            "gen_ai.tool.name": rng.choice(_TOOLS),
            "duration_ms": rng.randint(5, 15000),
            "success": rng.random() < 0.9,
            "mission_id": session.mission_id,
        }
    if name == "tokens_consumed":
        prompt = rng.randint(200, 30000)
        return {
            "gen_ai.request.model": rng.choice(_MODELS),
            "gen_ai.usage.input_tokens": prompt,
            "gen_ai.usage.output_tokens": rng.randint(20, 4000),
            "gen_ai.usage.cache_read.input_tokens": rng.randint(0, prompt),
            "mission_id": session.mission_id,
        }
    if name == "response_latency":
        return {"metric": "llm_latency", "value": round(rng.lognormvariate(6.5, 0.6), 3)}
    if name in ("mission_step_completed", "mission_started", "mission_completed"):
        session.step += 1
        return {"mission_id": session.mission_id, "step": session.step}
    if name == "search_performed":
        return {"query": rng.choice(_QUERIES), "result_count": rng.randint(0, 50)}
    if name == "command_executed":
        return {"command": rng.choice(_COMMANDS), "exit_code": int(rng.random() < 0.05)}
    if name == "error_occurred":
        return {
            "code": f"E{rng.randint(100, 140)}",
            "message": "tool call timed out",
            "component": rng.choice(_COMPONENTS),
        }
    return {"key": f"k{rng.randint(0, 99)}"}


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

    def rate_at(self, events: int) -> float:
        """Events/s over the first ``events`` (the first checkpoint at or past it)."""
        for done, seconds in self.progress:
            if done >= events:
                return done / seconds
        return self.events / self.seconds

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
            "events_per_s": round(self.events / self.seconds, 1),
            "last_10pct_events_per_s": round(self.last_tenth_rate(), 1),
            "db_bytes": self.db_bytes,
            "bytes_per_event": round(self.db_bytes / self.events, 1),
            "progress": [(done, round(seconds, 3)) for done, seconds in self.progress],
            **self.extra,
        }


def _db_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())


def _contexts() -> dict[str, tuple[str, str]]:
    """Per event name: the row's context JSON and category, exactly as the sink writes them."""
    metadata = EventMetadata.from_environment()
    out: dict[str, tuple[str, str]] = {}
    for name, _ in _NAMES:
        kind = event_type_from_name(name)
        event = AnalyticsEvent(
            id=uuid7_from_ns(0),
            category=kind.category(),
            event_type=kind,
            timestamp=from_ns(0),
            data={},
            metadata=metadata,
        )
        out[name] = (event_to_row(event).context or "", kind.category().value)
    return out


class RawRun:
    """The ceiling: plain ``executemany`` of rows built from the stream, same pragmas."""

    insert: Final = (
        "INSERT INTO analytics_events (id, event_type, event_name, timestamp, session_id, "
        "user_id, properties, context, page_url, referrer, category, priority, mission_id, "
        "received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )

    def __init__(self, path: Path, n: int) -> None:
        self.path, self.events = path, n
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = NORMAL")
        self.conn.execute(f"PRAGMA cache_size = -{_WRITER_CACHE_KIB}")
        Migrator(self.conn).up()
        self.contexts = _contexts()
        self.source = generate(n)
        self.done, self.seconds = 0, 0.0
        self.progress: list[tuple[int, float]] = []

    def step(self, count: int) -> None:
        """Ingest the next ``count`` events, committed in 1 000-row transactions."""
        started = time.perf_counter()
        contexts, conn = self.contexts, self.conn
        rows: list[tuple[Any, ...]] = []
        received_at = format_timestamp(utc_now())
        for i, (ns, name, user_id, session_id, props) in enumerate(self.source, start=1):
            context, category = contexts[name]
            rows.append(
                (
                    str(uuid7_from_ns(ns)),
                    "track",
                    name,
                    format_timestamp(from_ns(ns)),
                    session_id,
                    user_id,
                    _json(props).decode(),
                    context,
                    None,
                    None,
                    category,
                    "normal",
                    props.get("mission_id"),
                    received_at,
                )
            )
            if len(rows) == RAW_TRANSACTION_ROWS or i == count:
                conn.execute("BEGIN")
                conn.executemany(self.insert, rows)
                conn.execute("COMMIT")
                rows.clear()
                received_at = format_timestamp(utc_now())
            if i == count:
                break
        self.seconds += time.perf_counter() - started
        self.done += count
        self.progress.append((self.done, self.seconds))

    def finish(self) -> Ingest:
        self.conn.close()
        return Ingest(self.events, self.progress, _db_bytes(self.path), {})


class SinkRun:
    """Through ``EventCollector.track`` (default batches) and a ``StoreSink``."""

    def __init__(
        self,
        path: Path,
        n: int,
        projections: list[Projection],
        max_transaction_events: int = DEFAULT_TRANSACTION_EVENTS,
    ) -> None:
        self.path, self.events = path, n
        config = bench_config(path, BUFFER_SIZE)
        self.store = SQLiteStore(path, config)
        self.sink = StoreSink(
            self.store, projections, max_transaction_events=max_transaction_events
        )
        self.collector = EventCollector(config, sinks=[self.sink], register_atexit=False)
        self.source = generate(n)
        self.done, self.seconds = 0, 0.0
        self.progress: list[tuple[int, float]] = []

    def step(self, count: int) -> None:
        """Track the next ``count`` events; the step ends when they are committed."""
        flush_every = FLUSH_EVERY_BATCHES * BUFFER_SIZE
        collector = self.collector
        track = collector.track
        started = time.perf_counter()
        for i, (ns, name, user_id, session_id, props) in enumerate(self.source, start=1):
            track(name, props, user_id=user_id, session_id=session_id, timestamp=from_ns(ns))
            if (i % flush_every == 0 or i == count) and not collector.flush(timeout=300):
                raise RuntimeError(f"flush failed: {collector.stats()}")
            if i == count:
                break
        self.seconds += time.perf_counter() - started
        self.done += count
        self.progress.append((self.done, self.seconds))

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


class DirectRun:
    """``SQLiteStore.write_batch`` called directly, 1 000 events a call: the store's own
    cost (row encoding, de-duplication) without the collector's."""

    def __init__(self, path: Path, n: int) -> None:
        self.path, self.events = path, n
        self.store = SQLiteStore(path, bench_config(path, BUFFER_SIZE))
        self.metadata = EventMetadata.from_environment()
        self.source = generate(n)
        self.done, self.seconds = 0, 0.0
        self.progress: list[tuple[int, float]] = []

    def step(self, count: int) -> None:
        """Build the next ``count`` events and write them."""
        started = time.perf_counter()
        batch: list[AnalyticsEvent] = []
        for i, (ns, name, user_id, session_id, props) in enumerate(self.source, start=1):
            kind = event_type_from_name(name)
            batch.append(
                AnalyticsEvent(
                    id=uuid7_from_ns(ns),
                    category=kind.category(),
                    event_type=kind,
                    timestamp=from_ns(ns),
                    session_id=session_id,
                    data=props,
                    metadata=self.metadata,
                    user_id=user_id,
                )
            )
            if len(batch) == RAW_TRANSACTION_ROWS or i == count:
                self.store.write_batch(batch)
                batch = []
            if i == count:
                break
        self.seconds += time.perf_counter() - started
        self.done += count
        self.progress.append((self.done, self.seconds))

    def finish(self) -> Ingest:
        self.store.close()
        return Ingest(self.events, self.progress, _db_bytes(self.path), {})


Run: TypeAlias = RawRun | SinkRun | DirectRun


def interleave(runs: dict[str, Run], chunk: int, seed: int = 0) -> dict[str, Ingest]:
    """Run every way a chunk at a time, in a shuffled order each round (bench.harness's
    rule): load from other processes on a shared machine then hits all ways alike."""
    rng = random.Random(seed)
    active = dict(runs)
    while active:
        names = list(active)
        rng.shuffle(names)
        for name in names:
            run = active[name]
            run.step(min(chunk, run.events - run.done))
            if run.done >= run.events:
                del active[name]
    return {name: run.finish() for name, run in runs.items()}


def available_projections() -> tuple[list[Projection], list[str]]:
    """The projections a default store keeps (``tachimeter.defaults``: the summaries,
    missions, event metrics), and their names; the summaries alone on an older tree."""
    try:
        defaults = importlib.import_module("tachimeter.defaults")
        projections = list(defaults.default_projections())
    except (ImportError, AttributeError):
        try:
            module = importlib.import_module("tachimeter.store.summaries")
        except ImportError:
            return [], []
        factory = getattr(module, "summary_projections", None)
        if not callable(factory):
            return [], []
        projections = list(factory())
    projections = [p for p in projections if isinstance(p, Projection)]
    return projections, [p.name for p in projections]


def run_query_latency(db_path: Path) -> dict[str, Any]:
    """Read latencies over the stored events: owned by the analytics benchmark.

    Returns ``{}`` while ``tachimeter.analyze.events`` is not importable; otherwise the
    analytics benchmark's ``bench.queries.query_latency(db_path)`` when it exists.
    """
    try:
        importlib.import_module("tachimeter.analyze.events")
    except ImportError:
        return {}
    try:
        analytics = importlib.import_module("bench.queries")
    except ImportError:
        return {}
    query_latency = getattr(analytics, "query_latency", None)
    return dict(query_latency(db_path)) if callable(query_latency) else {}


def main() -> None:
    """Ingest the stream five ways, write bench/results/store.json and print a table."""
    n = int(os.environ.get("TACHIMETER_BENCH_EVENTS", DEFAULT_EVENTS))
    side = min(n, SIDE_EVENTS)
    projections, names = available_projections()
    workdir = Path(tempfile.mkdtemp(prefix="tachimeter-bench-store-"))
    try:
        plan: dict[str, Run] = {
            "raw": RawRun(workdir / "raw.db", n),
            "sink": SinkRun(workdir / "sink.db", n, []),
            "store_write_batch": DirectRun(workdir / "direct.db", side),
            "sink_commit_per_batch": SinkRun(
                workdir / "per_batch.db", side, [], max_transaction_events=BUFFER_SIZE
            ),
            "sink_with_projections": SinkRun(workdir / "projections.db", side, projections),
        }
        runs = interleave(plan, chunk=max(1, n // CHUNKS))
        latency = run_query_latency(workdir / "sink.db")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    raw = runs["raw"]
    # Runs of fewer events are compared with raw's rate over as many events.
    ratios = {
        way: round(run.events / run.seconds / raw.rate_at(run.events), 3)
        for way, run in runs.items()
        if way != "raw"
    }
    write_results(
        "store",
        {
            "events": n,
            "sqlite_version": sqlite3.sqlite_version,
            "projections": names,
            "collector_buffer_size": BUFFER_SIZE,
            "raw_transaction_rows": RAW_TRANSACTION_ROWS,
            "flush_every_batches": FLUSH_EVERY_BATCHES,
            "ingest": {way: run.summary() for way, run in runs.items()},
            "ratio_over_raw": ratios,
            "goal_ratio_sink_over_raw": 0.7,
            "query_latency": latency,
        },
    )
    rows: list[tuple[str, ...]] = [
        (
            way,
            f"{run.events:,}",
            f"{run.events / run.seconds:,.0f}",
            f"{run.last_tenth_rate():,.0f}",
            f"{run.db_bytes / run.events:.0f}",
            "1.00" if way == "raw" else f"{ratios[way]:.2f}",
        )
        for way, run in runs.items()
    ]
    print_table(
        f"store ingest (projections: {', '.join(names) or 'none'})",
        rows,
        ("way", "events", "events/s", "last 10% events/s", "bytes/event", "ratio to raw"),
    )


if __name__ == "__main__":
    main()
