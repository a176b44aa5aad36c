"""MissionProjection: order-independent, idempotent, equal to a rebuild; abandonment;
retention; reading a stored mission back."""

from __future__ import annotations

import datetime as dt
import random
import sqlite3
from typing import Any

import msgspec
import pytest
from mission_envs import MissionEnv
from mission_world import FakeClock

from tachimeter.missions import (
    MISSION_TABLES,
    MissionError,
    MissionProjection,
    MissionStatus,
    abandon_stale_missions,
    delete_missions,
    read_mission,
)
from tachimeter.model.events import AnalyticsEvent
from tachimeter.model.rows import event_to_row
from tachimeter.store.migrations import all_migrations


def _tables(conn: sqlite3.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every mission table, keyed by mission_id rather than the store-local mission_key."""
    ids = dict(conn.execute("SELECT mission_key, mission_id FROM missions"))
    out: dict[str, list[tuple[Any, ...]]] = {}
    for table in MISSION_TABLES:
        rows = conn.execute(f"SELECT * FROM {table}").fetchall()
        columns = [d[0] for d in conn.execute(f"SELECT * FROM {table} LIMIT 0").description]
        k = columns.index("mission_key")
        out[table] = sorted(
            tuple(
                ids[v] if i == k else (round(v, 9) if isinstance(v, float) else v)
                for i, v in enumerate(row)
            )
            for row in rows
        )
    return out


def _fresh(path: Any) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    for migration in all_migrations():
        conn.executescript(migration.up)
    return conn


def _run_some(env: MissionEnv, clock: FakeClock | None = None) -> None:
    tracker = env.tracker
    rng = random.Random(3)
    for i in range(60):
        mid = tracker.start_mission(None, ["anthropic", "openai"][i % 2], "gpt-4o", [f"t{i % 4}"])
        if i % 3 == 0:
            tracker.plan(mid)
        tracker.mission_started(mid)
        for k in range(rng.randint(0, 8)):
            tracker.tool_invoked(mid, rng.choice(["a", "b", "c"]), rng.uniform(0, 50), k % 4 != 3)
            if k % 2:
                tracker.step_completed(mid, k // 2, rng.random() > 0.2)
        if i % 5 == 0:
            tracker.pause(mid)
            tracker.resume(mid)
        if i % 7 == 0:
            tracker.retry(mid)
        tracker.tokens_consumed(mid, rng.randint(10, 900), rng.randint(1, 99), cost=0.001 * i)
        if i % 11 == 0:
            tracker.tokens_consumed(mid, 10, 10, model="in-house-llm")
        match i % 4:
            case 0:
                tracker.mission_completed(mid)
            case 1:
                tracker.mission_failed(mid, MissionError(code="E", message="m", step_index=1))
            case 2:
                tracker.mission_cancelled(mid, "stop")
            case _:
                pass  # left active


def test_incremental_equals_rebuild_and_any_order(env: MissionEnv, tmp_path: Any) -> None:
    """The store's tables equal a rebuild from analytics_events, and the same events folded
    in a shuffled order and random batches give the same tables again."""
    _run_some(env)
    conn = env.connect()
    incremental = _tables(conn)
    assert len(incremental["missions"]) == 60
    rebuilt_conn = sqlite3.connect(env.path)
    with rebuilt_conn:
        MissionProjection().rebuild(rebuilt_conn)
    assert _tables(rebuilt_conn) == incremental
    events = env.memory.events()
    rng = random.Random(9)
    for attempt in range(3):
        rng.shuffle(events)
        shuffled = _fresh(tmp_path / f"shuffled-{attempt}.db")
        projection = MissionProjection()
        at = 0
        while at < len(events):
            size = rng.randint(1, 60)
            chunk = events[at : at + size]
            projection.apply(shuffled, chunk, [event_to_row(e) for e in chunk])
            at += size
        assert _tables(shuffled) == incremental


def test_stored_mission_reads_back_like_the_tracker_saw_it(env: MissionEnv) -> None:
    tracker = env.tracker
    mid = tracker.start_mission(None, "anthropic", "claude-sonnet-4", ["docs"], user_id="u1")
    tracker.mission_started(mid)
    tracker.step_completed(mid, 0, True)
    tracker.step_completed(mid, 2, False)
    tracker.tool_invoked(mid, "search", 10.0, True)
    tracker.tool_invoked(mid, "edit", 5.0, False)
    tracker.tool_invoked(mid, "search", 30.0, True)
    tracker.tokens_consumed(mid, 1200, 300, 0.01, cache_read_tokens=1000, reasoning_tokens=100)
    tracker.retry(mid)
    seen = tracker.mission_failed(mid, MissionError(code="X", message="y", step_index=2))
    stored = read_mission(env.connect(), mid)
    assert stored is not None
    assert stored.session_id == env.collector.session_id
    expected = msgspec.structs.asdict(seen)
    actual = msgspec.structs.asdict(stored)
    assert actual.pop("execution_time_ms") == pytest.approx(expected.pop("execution_time_ms"))
    assert actual == expected


def test_unrelated_and_malformed_events_are_skipped(bare_db: sqlite3.Connection) -> None:
    events = [
        AnalyticsEvent.new("tool_invoked", {"gen_ai.tool.name": "search"}),  # no mission
        AnalyticsEvent.new("tool_invoked", {"mission_id": "m", "seq": "x"}),  # bad seq
        AnalyticsEvent.new("feature_used", {"mission_id": "m", "seq": 0}),  # not a mission event
        AnalyticsEvent.new("tool_invoked", {"mission_id": "m", "seq": 1}),  # no tool name
        AnalyticsEvent.new("tokens_consumed", {"mission_id": "m", "seq": 2}),  # no model
    ]
    MissionProjection().apply(bare_db, events, [event_to_row(e) for e in events])
    assert bare_db.execute("SELECT mission_id, status, tool_calls FROM missions").fetchall() == [
        ("m", "created", 0)
    ]


def test_events_without_a_cost_are_priced_by_the_projection(bare_db: sqlite3.Connection) -> None:
    """A producer other than the tracker may send tokens without cost_usd."""
    props = {"mission_id": "m", "seq": 0, "gen_ai.request.model": "claude-sonnet-4",
             "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 1000}  # fmt: skip
    event = AnalyticsEvent.new("tokens_consumed", props)
    MissionProjection().apply(bare_db, [event], [event_to_row(event)])
    assert bare_db.execute("SELECT cost, cost_source FROM mission_llm_calls").fetchone() == (
        pytest.approx(0.018),
        "genai-prices",
    )


def test_stale_missions_are_abandoned_and_a_real_ending_still_wins(make_env: Any) -> None:
    clock = FakeClock()
    env = make_env(clock=clock)
    tracker = env.tracker
    base = _hours_ago(5)
    clock.now = base
    stale = tracker.start_mission(None, "anthropic", "claude-sonnet-4")
    tracker.mission_started(stale)
    tracker.tool_invoked(stale, "search", 1.0, True)
    clock.now = _hours_ago(0.1)
    fresh = tracker.start_mission(None, "anthropic", "claude-sonnet-4")
    tracker.mission_started(fresh)
    env.flush()
    conn = sqlite3.connect(env.path)
    now = dt.datetime.now(dt.UTC)
    with conn:
        abandoned = abandon_stale_missions(conn, dt.timedelta(hours=1), now)
    assert abandoned == [stale]
    row = conn.execute(
        "SELECT status, ended_at IS NOT NULL, execution_time_ms, end_reason FROM missions "
        "WHERE mission_id = ?",
        (stale,),
    ).fetchone()
    assert row[:3] == ("abandoned", 1, None)
    assert "presumed crashed" in row[3]
    assert conn.execute(
        "SELECT status FROM missions WHERE mission_id = ?", (fresh,)
    ).fetchone() == ("executing",)
    assert conn.execute(
        "SELECT count(*) FROM analytics_events WHERE event_name = 'mission_abandoned'"
    ).fetchone() == (1,)
    with conn:
        assert abandon_stale_missions(conn, dt.timedelta(hours=1), now) == []
    before_rebuild = _tables(conn)
    with conn:
        MissionProjection().rebuild(conn)
    assert _tables(conn) == before_rebuild
    # The process was alive after all: its real ending replaces the inferred one.
    clock.now = _hours_ago(0)
    tracker.mission_completed(stale)
    env.flush()
    assert conn.execute(
        "SELECT status, execution_time_ms IS NOT NULL FROM missions WHERE mission_id = ?",
        (stale,),
    ).fetchone() == ("completed", 1)
    conn.close()


def test_abandonment_through_the_stores_write_path(make_env: Any) -> None:
    """With ``write``, the events go through the caller's path (the store's projections)."""
    clock = FakeClock(_hours_ago(3))
    env = make_env(clock=clock)
    mid = env.tracker.start_mission(None, "a", "b")
    env.flush()
    written: list[AnalyticsEvent] = []
    conn = sqlite3.connect(env.path)
    assert abandon_stale_missions(conn, dt.timedelta(hours=2), write=written.extend) == [mid]
    assert [e.event_name for e in written] == ["mission_abandoned"]
    assert written[0].data["inferred"] is True
    assert conn.execute("SELECT status FROM missions").fetchone() == ("created",)
    conn.close()


def test_delete_missions_removes_child_rows(env: MissionEnv) -> None:
    _run_some(env)
    env.flush()
    conn = sqlite3.connect(env.path)
    with conn:
        deleted = delete_missions(conn, dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
    assert deleted == 45  # the finished ones; the 15 active missions stay
    keys = {k for (k,) in conn.execute("SELECT mission_key FROM missions")}
    for table in MISSION_TABLES[1:]:
        left = {k for (k,) in conn.execute(f"SELECT DISTINCT mission_key FROM {table}")}
        assert left <= keys, table
    conn.close()


def test_replayed_batches_change_nothing(env: MissionEnv) -> None:
    """Delivery is at least once: the store skips known ids, the child tables their seq."""
    _run_some(env)
    conn = env.connect()
    before = _tables(conn)
    events = env.memory.events()
    env.store_sink.store.write_batch(events, projections=[MissionProjection()])
    writable = sqlite3.connect(env.path)
    with writable:
        # Even a projection handed the same events again changes nothing.
        MissionProjection().apply(writable, events[:50], [event_to_row(e) for e in events[:50]])
    assert _tables(conn) == before
    writable.close()


def _hours_ago(hours: float) -> int:
    import time

    return time.time_ns() - int(hours * 3_600 * 10**9)


def test_status_codes_in_schema_match_the_enum(bare_db: sqlite3.Connection) -> None:
    sql = bare_db.execute("SELECT sql FROM sqlite_master WHERE name = 'missions'").fetchone()[0]
    for status in MissionStatus:
        assert f"'{status.value}'" in sql


def test_timestamps_are_fixed_width_utc(env: MissionEnv) -> None:
    mid = env.tracker.start_mission(None, "a", "b")
    env.tracker.mission_started(mid)
    env.tracker.mission_completed(mid)
    row = env.connect().execute("SELECT created_at, started_at, ended_at FROM missions").fetchone()
    for text in row:
        assert len(text) == 27 and text.endswith("Z") and text[10] == "T"
