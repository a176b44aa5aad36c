"""SQLiteStore: opening, writing with de-duplication, reading, projections, plans."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import random
import sqlite3
import uuid
import zoneinfo
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tachimeter.config import load_config
from tachimeter.errors import QueryError, StoreError
from tachimeter.model.data import (
    BusinessEventData,
    BusinessMetricType,
    CustomData,
    ErrorEventData,
    ErrorSeverity,
    EventMetadata,
    PerformanceEventData,
    UsageEventData,
)
from tachimeter.model.event_types import EventPriority, event_type_from_name
from tachimeter.model.events import AnalyticsEvent
from tachimeter.model.ids import uuid7_from_ns
from tachimeter.model.rows import EventRow, event_to_row
from tachimeter.model.timestamps import format_timestamp, from_ns, to_ns
from tachimeter.store import DecodedEvents, EventStore, SQLiteStore
from tachimeter.store.sqlite import _RowEncoder

NAMES = ["feature_used", "tool_invoked", "page_view", "tokens_consumed", "error_occurred"]
START = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)
METADATA = EventMetadata(app_version="1.2.3", os="linux", arch="x86_64", locale="en_US")


def seeded_events(n: int, seed: int = 0) -> list[AnalyticsEvent]:
    """Events over ten days: five names, 30 users (some events anonymous), missions."""
    rng = random.Random(seed)
    ns = to_ns(START)
    events = []
    for _ in range(n):
        ns += rng.randrange(1, 20 * 60 * 10**9)  # up to 20 minutes apart: ~10 days per 1000
        kind = event_type_from_name(rng.choice(NAMES))
        user = None if rng.random() < 0.1 else f"user-{rng.randrange(30)}"
        data: dict[str, Any] = {"n": rng.randrange(100)}
        if rng.random() < 0.3:
            data["mission_id"] = f"m-{rng.randrange(5)}"
        events.append(
            AnalyticsEvent(
                id=uuid7_from_ns(ns),
                category=kind.category(),
                event_type=kind,
                timestamp=from_ns(ns),
                session_id=f"s-{rng.randrange(50)}",
                data=data,
                metadata=METADATA,
                user_id=user,
            )
        )
    return events


def open_store(tmp_path: Path, **settings: Any) -> SQLiteStore:
    settings.setdefault("storage.path", str(tmp_path / "analytics.db"))
    config = load_config(env={}, cwd="/nonexistent-tachimeter-test-dir", **settings)
    return SQLiteStore(None, config)


@pytest.fixture
def store(tmp_path: Path) -> Any:
    with open_store(tmp_path) as opened:
        yield opened


def test_a_store_is_an_event_store(store: SQLiteStore) -> None:
    assert isinstance(store, EventStore)
    assert store.dialect == "sqlite"


def test_opening_creates_directories_and_sets_the_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "analytics.db"
    with open_store(tmp_path, **{"storage.path": str(path), "storage.busy_timeout_ms": 1234}) as s:
        assert path.exists() and s.path == path
        conn = s._writer()  # the writer's own settings are what matter here
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
        assert conn.execute("PRAGMA foreign_keys").fetchone() == (1,)
        assert conn.execute("PRAGMA busy_timeout").fetchone() == (1234,)
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (10_000,)
        with s.reader() as reader:
            assert reader.execute("PRAGMA query_only").fetchone() == (1,)
            assert reader.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    with open_store(tmp_path, **{"storage.synchronous": "FULL"}) as s:
        assert s._writer().execute("PRAGMA synchronous").fetchone() == (2,)


def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=r"junk\.db"):
        SQLiteStore(path)


def test_a_directory_is_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"is a directory; name a file in it, such as .*analytics"):
        SQLiteStore(tmp_path)


def test_writes_store_each_event_once_and_count_like_python(store: SQLiteStore) -> None:
    events = seeded_events(1500, seed=1)
    first = store.write_batch(events[:1000])
    assert (first.inserted, first.duplicates) == (1000, 0)
    # a replayed spool: the second half of the first batch again, plus new events, plus an
    # event repeated within the batch
    again = store.write_batch([*events[500:1500], events[1499]])
    assert (again.inserted, again.duplicates, again.rejected) == (500, 501, 0)
    assert store.event_count() == 1500
    by_name = Counter(e.event_name for e in events)
    for name in NAMES:
        assert store.event_count(event_name=name) == by_name[name]
    lo, hi = START + dt.timedelta(days=2), START + dt.timedelta(days=5, hours=7)
    expected = sum(1 for e in events if lo <= e.timestamp < hi and e.event_name == "page_view")
    assert store.event_count(event_name="page_view", start=lo, end=hi) == expected
    counted = dict(store.execute("SELECT event_name, count(*) FROM analytics_events GROUP BY 1"))
    assert counted == dict(by_name)


def test_rows_hold_the_spec_columns_and_migration_2_columns(store: SQLiteStore) -> None:
    events = seeded_events(300, seed=2)
    usage = AnalyticsEvent.new(
        "feature_used",
        UsageEventData(feature="f", action="a", success=True, extra={"mission_id": "m-usage"}),
    )
    tagged = AnalyticsEvent.new("feature_used", {"x": 1}).with_metadata(
        METADATA.with_custom("mission_id", "m-meta")
    )
    numbered = AnalyticsEvent.new("feature_used", {"mission_id": 42}).with_priority(
        EventPriority.HIGH
    )
    events += [usage, tagged, numbered]
    store.write_batch(events)
    rows = store.execute(
        "SELECT id, event_type, event_name, timestamp, session_id, user_id, properties, "
        "context, page_url, referrer, category, priority, mission_id, received_at "
        "FROM analytics_events"
    )
    by_id = {r[0]: r for r in rows}
    for event in events:
        row = by_id[str(event.id)]
        assert row[:10] == event_to_row(event).astuple()
        assert row[10] == event.category.value and row[11] == event.priority.value
        assert len(row[13]) == 27 and row[13].endswith("Z")
        data = event.data if isinstance(event.data, dict) else {}
        if "mission_id" in data:
            assert row[12] == str(data["mission_id"])
    assert by_id[str(usage.id)][12] == "m-usage"
    assert by_id[str(tagged.id)][12] == "m-meta"
    assert by_id[str(numbered.id)][11:13] == ("high", "42")


def _varied_events() -> list[AnalyticsEvent]:
    berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    base = [
        AnalyticsEvent.new("feature_used", {"feature": "search"}),
        AnalyticsEvent.new("feature_used", None),
        AnalyticsEvent.new(
            "tool_invoked", UsageEventData(feature="t", action="run", success=False, extra={})
        ),
        AnalyticsEvent.new(
            "response_latency", PerformanceEventData(metric="m", value=1.5, unit="ms")
        ),
        AnalyticsEvent.new(
            "error_occurred",
            ErrorEventData(code="E1", message="boom", severity=ErrorSeverity.ERROR, component="c"),
        ),
        AnalyticsEvent.new(
            "tokens_consumed",
            BusinessEventData(
                metric_type=BusinessMetricType.INPUT_TOKENS, value=3.0, unit="tokens", model="m"
            ),
        ),
        AnalyticsEvent.new("my_plugin.thing", CustomData([1, "two", {"3": None}])),
    ]
    out: list[AnalyticsEvent] = []
    for i, event in enumerate(base):
        out.append(event)
        out.append(msgspec.structs.replace(event, id=uuid.uuid4(), metadata=METADATA))
        out.append(
            msgspec.structs.replace(
                event,
                id=uuid.uuid4(),
                metadata=METADATA.with_custom("region", "eu").with_custom("n", i),
                session_id="s",
                session_assigned=True,
                priority=EventPriority.CRITICAL,
                call="page",
                page_url="/p?q=é",
                referrer="https://example.com",
                user_id="ü",
            )
        )
        for when in (
            dt.datetime(2025, 1, 1, tzinfo=dt.UTC),  # no fraction
            dt.datetime(2025, 6, 1, 12, 30, 1, 5, tzinfo=berlin),  # not UTC
            dt.datetime(2025, 6, 1, 12, 30, 1, 999999),  # naive: UTC
            dt.datetime(999, 2, 3, 4, 5, 6, 7, tzinfo=dt.UTC),  # a three-digit year
        ):
            out.append(msgspec.structs.replace(event, id=uuid.uuid4(), timestamp=when))
    return out


def test_the_batch_row_encoder_gives_exactly_event_to_row(store: SQLiteStore) -> None:
    events = _varied_events() * 2  # the second round hits the context cache
    encoder = _RowEncoder()
    prepared, rejected = encoder.encode_batch(events, encoder.ids(events), "now")
    assert rejected == 0
    assert [row for _, row, _ in prepared] == [event_to_row(e) for e in events]
    for _event, row, values in prepared:
        assert values[:10] == row.astuple()
    unique = list({e.id: e for e in events}.values())
    assert store.write_batch(unique).inserted == len(unique)
    decoded = store.read_events()
    assert decoded.malformed == 0
    # timestamps come back in UTC, so compare what is stored: the rows
    stored = {row.id: row for row in map(event_to_row, decoded.events)}
    assert stored == {row.id: row for row in map(event_to_row, unique)}


def test_an_event_whose_data_does_not_serialize_is_rejected_alone(store: SQLiteStore) -> None:
    good = seeded_events(3)
    bad = AnalyticsEvent.new("feature_used", {"handle": object()})
    result = store.write_batch([good[0], bad, *good[1:]])
    assert (result.inserted, result.duplicates, result.rejected) == (3, 0, 1)
    assert store.event_count() == 3


def test_read_events_skips_and_counts_rows_other_tools_wrote_badly(store: SQLiteStore) -> None:
    events = seeded_events(20, seed=3)
    store.write_batch(events)
    other_tool = sqlite3.connect(store.path)
    ts = format_timestamp(START + dt.timedelta(hours=1))
    other_tool.executemany(
        "INSERT INTO analytics_events (id, event_type, event_name, timestamp, properties, "
        "context) VALUES (?, 'track', 'feature_used', ?, ?, ?)",
        [
            (str(uuid.uuid4()), ts, "{not json", None),
            (str(uuid.uuid4()), ts, None, "[1, 2]"),
            (str(uuid.uuid4()), ts, None, '{"os": 5}'),
            (str(uuid.uuid4()), ts, None, '{"priority": "urgent"}'),
            ("not-a-uuid", ts, None, None),
            (str(uuid.uuid4()), "yesterday", None, None),
            (str(uuid.uuid4()), ts, '{"fine": true}', None),  # spec-shaped row: decodes
        ],
    )
    other_tool.commit()
    other_tool.close()
    decoded = store.read_events()
    assert isinstance(decoded, DecodedEvents)
    assert decoded.malformed == 6 and len(decoded.malformed_ids) == 6
    assert "not-a-uuid" in decoded.malformed_ids
    assert len(decoded.events) == 21
    assert [e.timestamp for e in decoded.events] == sorted(e.timestamp for e in decoded.events)
    limited = store.read_events(event_name="page_view", limit=3)
    assert [e.event_name for e in limited.events] == ["page_view"] * 3


def test_read_queries_cannot_write(store: SQLiteStore) -> None:
    store.write_batch(seeded_events(5))
    for sql in (
        "DELETE FROM analytics_events",
        "INSERT INTO funnels (id, name, steps) VALUES ('f', 'f', '[]')",
        "CREATE TABLE sneaky (x)",
    ):
        with pytest.raises(QueryError, match="cannot write"):
            store.execute(sql)
    with pytest.raises(QueryError, match="failed"):
        store.execute("SELECT 1; SELECT 2")
    with pytest.raises(QueryError, match="no such table"):
        store.execute("SELECT * FROM nope")
    conn = store.connect_reader()
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            conn.execute("DELETE FROM analytics_events")
    finally:
        conn.close()
    assert store.event_count() == 5


def test_readers_are_pooled_and_see_committed_writes(store: SQLiteStore) -> None:
    with store.reader() as first:
        assert first.execute("SELECT count(*) FROM analytics_events").fetchone() == (0,)
        first.execute("BEGIN")  # a reader left in a transaction is cleaned up when returned
    store.write_batch(seeded_events(7))
    with store.reader() as again:
        assert again is first
        assert not again.in_transaction
        assert again.execute("SELECT count(*) FROM analytics_events").fetchone() == (7,)


def test_a_time_range_count_by_name_uses_an_index(store: SQLiteStore) -> None:
    store.write_batch(seeded_events(2000, seed=4))
    lo, hi = format_timestamp(START), format_timestamp(START + dt.timedelta(days=7))
    queries = [
        "SELECT count(*) FROM analytics_events "
        "WHERE event_name = ? AND timestamp >= ? AND timestamp < ?",
        "SELECT event_name, count(*) FROM analytics_events "
        "WHERE timestamp >= ? AND timestamp < ? GROUP BY event_name",
    ]
    params: list[Sequence[str]] = [("page_view", lo, hi), (lo, hi)]
    for sql, args, index in zip(queries, params, ("name_time", "time_name"), strict=True):
        plan = [r[3] for r in store.execute(f"EXPLAIN QUERY PLAN {sql}", args)]
        # a range search in a covering index: no full scan, no visit to the table rows
        assert any(
            line.startswith("SEARCH analytics_events USING COVERING INDEX idx_events_" + index)
            for line in plan
        ), plan
        assert not any(line.startswith("SCAN analytics_events") for line in plan), plan
    expected = sum(
        1
        for e in seeded_events(2000, seed=4)
        if e.event_name == "page_view" and lo <= format_timestamp(e.timestamp) < hi
    )
    assert store.execute(queries[0], params[0]) == [(expected,)]


class RecordingProjection:
    """Keeps a count per event name in a table of its own."""

    name = "recording"

    def __init__(self) -> None:
        self.seen: list[str] = []

    def apply(
        self, conn: sqlite3.Connection, events: Sequence[AnalyticsEvent], rows: Sequence[EventRow]
    ) -> None:
        assert [r.id for r in rows] == [str(e.id) for e in events]
        conn.execute("CREATE TABLE IF NOT EXISTS seen (name TEXT PRIMARY KEY, n INTEGER)")
        conn.executemany(
            "INSERT INTO seen VALUES (?, 1) ON CONFLICT(name) DO UPDATE SET n = n + 1",
            [(r.event_name,) for r in rows],
        )
        self.seen.extend(str(e.id) for e in events)

    def rebuild(self, conn: sqlite3.Connection) -> None:
        conn.execute("DELETE FROM seen")


class FailingProjection(RecordingProjection):
    name = "failing"

    def apply(
        self, conn: sqlite3.Connection, events: Sequence[AnalyticsEvent], rows: Sequence[EventRow]
    ) -> None:
        raise ValueError("cannot fold")


def test_projections_see_each_new_event_once_in_the_same_transaction(
    store: SQLiteStore,
) -> None:
    events = seeded_events(400, seed=5)
    projection = RecordingProjection()
    store.write_batch(events[:300], projections=[projection])
    store.write_batch(events[100:], projections=[projection])
    assert sorted(projection.seen) == sorted(str(e.id) for e in events)
    assert dict(store.execute("SELECT name, n FROM seen")) == Counter(e.event_name for e in events)


def test_a_failing_projection_rolls_the_whole_batch_back(store: SQLiteStore) -> None:
    events = seeded_events(50, seed=6)
    recording = RecordingProjection()
    with pytest.raises(StoreError, match="projection 'failing' failed on a batch of 50 events"):
        store.write_batch(events, projections=[recording, FailingProjection()])
    assert store.event_count() == 0
    assert store.execute("SELECT count(*) FROM sqlite_master WHERE name = 'seen'") == [(0,)]
    assert store.write_batch(events).inserted == 50  # and the store still writes


def test_a_full_disk_fails_the_batch_and_writing_resumes_after(store: SQLiteStore) -> None:
    events = seeded_events(600, seed=7)
    store.write_batch(events[:100])
    conn = store._writer()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full now
    with pytest.raises(StoreError, match=r"disk is full.*SQLITE_FULL"):
        store.write_batch(events[100:600])
    assert not conn.in_transaction
    assert store.event_count() == 100
    conn.execute("PRAGMA max_page_count = 1073741823")  # space was freed
    assert store.write_batch(events).inserted == 500
    assert store.check_integrity() == "ok"


def test_a_closed_store_refuses_work(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.close()
    store.close()  # twice is fine
    with pytest.raises(StoreError, match="is closed"):
        store.write_batch(seeded_events(1))
    with pytest.raises(StoreError, match="is closed"):
        store.event_count()


def _write_in_child(store: SQLiteStore, events: list[AnalyticsEvent]) -> None:
    store.write_batch(events)


def test_a_forked_child_writes_through_its_own_connection(store: SQLiteStore) -> None:
    events = seeded_events(40, seed=8)
    store.write_batch(events[:20])
    with store.reader():
        pass  # a pooled reader the child must not reuse
    child = multiprocessing.get_context("fork").Process(
        target=_write_in_child, args=(store, events[20:])
    )
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert store.event_count() == 40
    assert store.write_batch(events).duplicates == 40
    assert store.check_integrity() == "ok"
