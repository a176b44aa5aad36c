"""A seeded store for the report and export tests: product events over two weeks, missions
through the real tracker (injected clock), metric series in chunks and head, and alert
history, all around a fixed calendar so ranges have data on both sides.
"""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

from tachimeter.defaults import default_projections
from tachimeter.missions import MissionError, MissionTracker
from tachimeter.model.data import (
    BusinessEventData,
    BusinessMetricType,
    ErrorEventData,
    ErrorSeverity,
    PerformanceEventData,
    UsageEventData,
)
from tachimeter.model.event_types import EventType
from tachimeter.model.events import AnalyticsEvent
from tachimeter.model.ids import uuid7_from_ns
from tachimeter.model.timestamps import format_timestamp, from_ns, to_ns
from tachimeter.store.sqlite import SQLiteStore
from tachimeter.store.timeseries import TimeSeriesStore
from tachimeter.testing import MemorySink, collector_for_tests

START = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)
DAYS = 14
DAY_NS = 86_400 * 10**9
START_NS = to_ns(START)
BACKENDS = {
    "anthropic": ["claude-sonnet-4", "claude-3-5-haiku"],
    "openai": ["gpt-4o", "in-house-llm"],
}
NAMES = [
    EventType.FEATURE_USED,
    EventType.SESSION_STARTED,
    EventType.TOOL_INVOKED,
    EventType.TOKENS_CONSUMED,
    EventType.RESPONSE_LATENCY,
    EventType.ERROR_OCCURRED,
]
WEIGHTS = [5, 2, 6, 4, 2, 1]
ERROR_CODES = ["AUTH", "RATE_LIMIT", "TOOL", "TIMEOUT"]
# A property value every text format must carry unharmed.
AWKWARD = 'comma, "quote", new\nline, tab\t, é ✓'


def _product_event(rng: random.Random, ns: int) -> AnalyticsEvent:
    kind = rng.choices(NAMES, WEIGHTS)[0]
    backend = rng.choice(list(BACKENDS))
    model = rng.choice(BACKENDS[backend])
    if kind is EventType.ERROR_OCCURRED:
        data = ErrorEventData(
            code=rng.choice(ERROR_CODES),
            message=rng.choice(["provider said 429", "tool failed: " + AWKWARD, "timeout"]),
            severity=ErrorSeverity.ERROR,
            component=rng.choice(["agent", "llm_client"]),
        )
    elif kind is EventType.TOKENS_CONSUMED:
        data = BusinessEventData(
            metric_type=BusinessMetricType.TOTAL_TOKENS,
            value=rng.randint(10, 5000),
            unit="tokens",
            backend=backend,
            model=model,
        )
    elif kind is EventType.RESPONSE_LATENCY:
        data = PerformanceEventData(
            metric="llm.latency", value=round(rng.uniform(50, 900), 1), unit="ms",
            tags={"gen_ai.request.model": model},
        )  # fmt: skip
    else:
        data = UsageEventData(
            feature=rng.choice(["chat", "search", "review"]),
            action=rng.choice(["open", "run"]),
            success=rng.random() > 0.1,
            extra={"note": AWKWARD} if rng.random() < 0.05 else {},
        )
    user = None if rng.random() < 0.1 else f"user-{rng.randrange(40):03d}"
    session = None if rng.random() < 0.2 else f"s-{rng.randrange(120):04d}"
    return AnalyticsEvent(
        id=uuid7_from_ns(ns),
        category=kind.category(),
        event_type=kind,
        timestamp=from_ns(ns),
        data=data,
        user_id=user,
        session_id=session,
    )


def _run_missions(rng: random.Random, count: int) -> list[AnalyticsEvent]:
    clock = [START_NS]

    def now() -> int:
        return clock[0]

    def advance(ms: float) -> None:
        clock[0] += int(ms * 1e6)

    sink = MemorySink()
    with collector_for_tests(sink, **{"collection.queue_capacity": 100_000}) as collector:
        tracker = MissionTracker(collector, clock=now)
        for _ in range(count):
            clock[0] = START_NS - DAY_NS + rng.randrange((DAYS + 1) * DAY_NS)
            backend = rng.choice(list(BACKENDS))
            model = rng.choice(BACKENDS[backend])
            mid = tracker.start_mission(None, backend, model, [rng.choice(["docs", "tests"])])
            outcome = rng.choices(["completed", "failed", "cancelled", "active", "created"],
                                  [12, 4, 1, 1, 1])[0]  # fmt: skip
            if outcome == "created":
                continue
            advance(rng.uniform(10, 500))
            tracker.mission_started(mid)
            for step in range(rng.randint(1, 5)):
                advance(rng.uniform(100, 20_000))
                tracker.tool_invoked(mid, rng.choice(["read_file", "shell"]), rng.uniform(5, 900))
                advance(rng.uniform(100, 5_000))
                cost = round(rng.uniform(0.001, 0.05), 6) if rng.random() < 0.2 else None
                tracker.tokens_consumed(
                    mid,
                    input_tokens=rng.randint(100, 4000),
                    output_tokens=rng.randint(10, 800),
                    cost=cost,
                    cache_read_tokens=rng.choice([0, 0, 50]),
                    reasoning_tokens=rng.choice([0, 5]),
                )
                tracker.step_completed(mid, step, True)
            advance(rng.uniform(10, 1000))
            if outcome == "completed":
                tracker.mission_completed(mid)
            elif outcome == "failed":
                tracker.mission_failed(mid, MissionError(code=rng.choice(ERROR_CODES), message="x"))
            elif outcome == "cancelled":
                tracker.mission_cancelled(mid, "user stopped it")
        assert collector.flush(timeout=60)
    return sink.events()


def _alerts(path: Path, rng: random.Random) -> None:
    import sqlite3

    conn = sqlite3.connect(path, isolation_level=None)
    rows = []
    for i in range(40):
        at = format_timestamp(from_ns(START_NS - DAY_NS + rng.randrange((DAYS + 2) * DAY_NS)))
        rule = rng.choice(["HighErrorRate", "TokenBurn", "SlowTools"])
        states = rng.choice(
            [("inactive", "pending"), ("pending", "firing"), ("firing", "resolved")]
        )
        labels = '{"model":"gpt-4o"}' if rule == "TokenBurn" else "{}"
        rows.append((i + 1, at, rule, f"fp-{rule}", labels, *states, rng.uniform(0, 10), "m"))
    conn.executemany(
        "INSERT INTO alert_events (id, at, rule, fingerprint, labels, from_state, to_state, "
        "value, message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    stamp = format_timestamp(START)
    conn.executemany(
        "INSERT INTO alert_state (fingerprint, rule, labels, state, updated_at) "
        "VALUES (?, ?, ?, ?, ?)",
        [
            ("fp-HighErrorRate", "HighErrorRate", "{}", "firing", stamp),
            ("fp-TokenBurn", "TokenBurn", '{"model":"gpt-4o"}', "pending", stamp),
            ("fp-TokenBurn-2", "TokenBurn", '{"model":"o3"}', "firing", stamp),
        ],
    )
    conn.executemany(
        "INSERT INTO alert_rule_health (rule, health, last_error, evaluations_total, "
        "errors_total, last_evaluated_at) VALUES (?, ?, ?, ?, ?, ?)",
        [
            ("HighErrorRate", "ok", None, 500, 0, stamp),
            ("SlowTools", "error", "no such metric", 500, 3, stamp),
            ("Quiet", "ok", None, 500, 0, stamp),
        ],
    )
    conn.close()


def _metrics(path: Path, rng: random.Random) -> None:
    """Series the exposition must rename and type: a dotted gauge, a cumulative counter;
    most windows compacted into chunks, late samples left in the head."""
    import sqlite3

    conn = sqlite3.connect(path, isolation_level=None)
    tsdb = TimeSeriesStore(conn)
    step = 15 * 60 * 10**6
    start_us = START_NS // 1000 - 86_400 * 10**6
    stamps = [start_us + i * step for i in range((DAYS + 2) * 96)]
    for route in ("/run", '/odd "route"'):
        total = 0.0
        values = []
        for _ in stamps:
            total += rng.randint(0, 20)
            values.append(total)
        tsdb.write_samples("http_requests_total", {"route": route}, stamps, values,
                           metric_type="counter", unit=None)  # fmt: skip
    tsdb.write_samples("api.queue-depth", {"queue.name": "events"}, stamps,
                       [float(rng.randint(0, 50)) for _ in stamps])  # fmt: skip
    tsdb.compact(now=START + dt.timedelta(days=DAYS + 3))
    # Written after compaction into compacted windows: these stay in the head.
    late = START_NS // 1000 + 3 * 86_400 * 10**6 + 7
    tsdb.write_samples("api.queue-depth", {"queue.name": "late"}, [late, late + 1], [99.0, 98.5])
    tsdb.write_samples("http_requests_total", {"route": "/run"}, [late], [123456.0],
                       metric_type="counter")  # fmt: skip
    conn.close()


def fill_store(path: Path, *, seed: int = 11, events: int = 4000, missions: int = 150) -> Path:
    """Fill a new store at ``path``; returns ``path``."""
    rng = random.Random(seed)
    product = [
        _product_event(rng, START_NS - DAY_NS + rng.randrange((DAYS + 2) * DAY_NS))
        for _ in range(events)
    ]
    mission_events = _run_missions(rng, missions)
    projections = default_projections()
    with SQLiteStore(path) as store:
        half = len(product) // 2
        store.write_batch(product[:half], projections=projections)
        store.write_batch(mission_events, projections=projections)
        store.write_batch(product[half:], projections=projections)
    _alerts(path, rng)
    _metrics(path, rng)
    return path
