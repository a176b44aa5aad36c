"""Summary tables: equal to a recomputation, and incremental maintenance equals a rebuild."""

from __future__ import annotations

import datetime as dt
import json
import random
import sqlite3
from pathlib import Path
from typing import Any

import analytics_reference as ref
import pytest
from analytics_fixtures import EXCLUDING, MISSIONS, STRICT, Seeded, at, make_event
from bench.datagen import generate

from tachimeter.analyze import (
    dashboard_metrics,
    define_funnel,
    feature_usage,
    list_sessions,
    rebuild_summaries,
    refresh_dashboard_metrics,
    summary_projections,
    user_activity,
)
from tachimeter.model.data import BusinessEventData, BusinessMetricType
from tachimeter.model.events import AnalyticsEvent
from tachimeter.store import SQLiteStore

SUMMARY_TABLES = (
    "analytics_daily_events",
    "analytics_daily_counts",
    "analytics_first_events",
    "user_activity",
    "user_activity_spans",
    "feature_usage",
    "feature_usage_users",
    "analytics_sessions",
    "analytics_session_sources",
    "funnel_conversions",
)


def snapshot(conn: sqlite3.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every summary row; funnel entries keyed by funnel name (ids differ between files)."""
    tables = {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall()) for t in SUMMARY_TABLES}
    tables["funnel_conversions"] = conn.execute(
        "SELECT f.name, c.user_id, c.session_id, c.started_at, c.completed_at, "
        "c.current_step, c.completed, c.step_timestamps "
        "FROM funnel_conversions c JOIN funnels f ON f.id = c.funnel_id "
        "ORDER BY 1, 2, 3, 4, 5, 6, 7, 8"
    ).fetchall()
    return tables


def test_sessions_equal_recomputation(seeded: Seeded) -> None:
    """Every session (given ids and inactivity-split ones) matches the raw events."""
    got = {r[0]: r for r in seeded.conn.execute("SELECT * FROM analytics_sessions")}
    want = ref.sessions(seeded.events)
    assert got == want
    assert sum(1 for k in got if k.startswith("derived:")) > 500


def test_user_activity_equals_recomputation(seeded: Seeded) -> None:
    """Per user-day: sessions, events, active time, first/last seen and the breakdown."""
    rows = seeded.conn.execute(
        "SELECT user_id, date, session_count, event_count, total_duration_ms, first_seen_at, "
        "last_seen_at, events_breakdown FROM user_activity"
    )
    got = {(r[0], r[1]): (*r[2:7], json.loads(r[7])) for r in rows}
    assert got == ref.user_activity(seeded.events)


def test_feature_usage_equals_recomputation(seeded: Seeded) -> None:
    """Per feature-day: uses, unique users, mean duration and success rate."""
    got = {
        (r.feature_name, r.date.isoformat()): (
            r.usage_count,
            r.unique_users,
            r.avg_duration_ms,
            r.success_rate,
        )
        for r in feature_usage(seeded.conn, start=seeded.start, end=seeded.end, limit=10_000)
    }
    want = ref.feature_usage(seeded.events)
    assert got.keys() == want.keys()
    for key, (count, users, avg, rate) in want.items():
        assert got[key][:2] == (count, users)
        assert got[key][2] == pytest.approx(avg, rel=1e-12)
        assert got[key][3] == pytest.approx(rate, rel=1e-12)


def test_daily_rollups_equal_recount(seeded: Seeded) -> None:
    """Events by name, day and user; by day and name; each user's first day of each event."""
    want: dict[tuple[str, str, str], int] = {}
    per_day: dict[tuple[str, str], int] = {}
    first: dict[tuple[str, str], str] = {}
    for e in seeded.events:
        key = (e.event_name, e.timestamp[:10], e.user_id or "")
        want[key] = want.get(key, 0) + 1
        per_day[(e.timestamp[:10], e.event_name)] = (
            per_day.get((e.timestamp[:10], e.event_name), 0) + 1
        )
        if e.user_id is not None:
            seen = first.get((e.event_name, e.user_id))
            first[(e.event_name, e.user_id)] = (
                min(seen, e.timestamp[:10]) if seen else e.timestamp[:10]
            )
    counts = {
        (r[0], r[1]): r[2] for r in seeded.conn.execute("SELECT * FROM analytics_daily_counts")
    }
    assert counts == per_day
    firsts = {
        (r[0], r[1]): r[2] for r in seeded.conn.execute("SELECT * FROM analytics_first_events")
    }
    assert firsts == first
    got = {
        (r[0], r[1], r[2]): r[3]
        for r in seeded.conn.execute("SELECT * FROM analytics_daily_events")
    }
    assert got == want


def write_in_batches(
    path: Path, events: list[Any], rng: random.Random, *, late_funnel: bool
) -> dict[str, list[tuple[Any, ...]]]:
    """Write events through the store in random batches with the summary projections."""
    with SQLiteStore(path) as store:
        define_funnel(store, MISSIONS)
        define_funnel(store, STRICT)
        projections = summary_projections()
        i = 0
        while i < len(events):
            n = rng.choice((1, 2, 7, 50, 333, 1500))
            batch = events[i : i + n]
            result = store.write_batch(batch, projections=projections)
            assert result.inserted == len(batch)
            if rng.random() < 0.1:  # a replayed batch: duplicates are not counted twice
                assert store.write_batch(batch, projections=projections).inserted == 0
            if late_funnel and i > len(events) // 2:
                define_funnel(store, EXCLUDING)  # defined mid-stream: backfilled, then kept
                late_funnel = False
            i += n
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        incremental = snapshot(conn)
        rebuild_summaries(conn)
        assert snapshot(conn) == incremental
        return incremental
    finally:
        conn.close()


@pytest.fixture(scope="module")
def medium() -> Any:
    return generate(seed=11, events=12_000, users=120, days=6)


def test_incremental_summaries_equal_a_rebuild(medium: Any, tmp_path: Path) -> None:
    """Random batch splits of late, out-of-order events give exactly the rebuilt tables."""
    rng = random.Random(5)
    in_arrival = write_in_batches(tmp_path / "a.db", medium.events, rng, late_funnel=True)
    shuffled = list(medium.events)
    rng.shuffle(shuffled)  # the worst arrival order: everything late and out of order
    in_any_order = write_in_batches(tmp_path / "b.db", shuffled, rng, late_funnel=True)
    assert in_arrival == in_any_order
    assert all(in_arrival[t] for t in SUMMARY_TABLES)
    sessions = {r[0]: r for r in in_arrival["analytics_sessions"]}
    assert sessions == ref.sessions(ref.load(medium.rows))


def test_inactivity_split_and_late_events(tmp_path: Path) -> None:
    """A gap of exactly 30 minutes stays in the session, one microsecond more splits it; a
    late event that fills the gap joins both sessions, one before the start moves it."""
    early = [
        make_event("e", "2024-03-05 10:00"),
        make_event("e", "2024-03-05 10:30"),  # +30 min exactly: same session
        make_event("e", "2024-03-05 11:00:00.000001"),  # +30 min 1 us: new session
        make_event("e", "2024-03-05 12:00", user="other"),
    ]
    with SQLiteStore(tmp_path / "s.db") as store:
        projections = summary_projections()
        store.write_batch(early, projections=projections)
        with store.reader() as conn:
            first = list_sessions(conn, start=at("2024-03-05"), end=at("2024-03-06"), user_id="u1")
        assert [(s.event_count, s.duration_ms) for s in first] == [(1, 0), (2, 1_800_000)]
        bridge = make_event("e", "2024-03-05 10:45")
        before = make_event("e", "2024-03-05 09:40")
        store.write_batch([bridge], projections=projections)
        store.write_batch([before], projections=projections)
        with store.reader() as conn:
            after = list_sessions(conn, start=at("2024-03-05"), end=at("2024-03-06"), user_id="u1")
    assert len(after) == 1
    assert after[0].id == f"derived:{before.id}"
    assert after[0].event_count == 5 and after[0].started_at == at("2024-03-05 09:40")


def test_given_sessions_take_columns_from_the_earliest_event_with_a_value(tmp_path: Path) -> None:
    """Landing page, device and user come from the earliest event that has them, the exit
    page from the latest, whatever order the events arrive in."""
    s = "sess-1"
    events = [
        make_event(
            "page_view", "2024-03-05 10:05", session=s, page="/b", context={"browser": "firefox"}
        ),
        make_event("click", "2024-03-05 10:06", session=s, user=None),
        make_event("page_view", "2024-03-05 10:09", session=s, page="/exit"),
        make_event(
            "page_view",
            "2024-03-05 10:00",
            session=s,
            user=None,
            page="/landing",
            referrer="https://example.org/",
            context={"device": "mobile", "country": "FR"},
        ),
    ]
    with SQLiteStore(tmp_path / "g.db") as store:
        for e in events:  # one at a time: the earliest arrives last
            store.write_batch([e], projections=summary_projections())
        with store.reader() as conn:
            (session,) = list_sessions(conn, start=at("2024-03-05"), end=at("2024-03-06"))
    assert session.id == s and session.user_id == "u1" and session.event_count == 4
    assert (session.landing_page, session.exit_page) == ("/landing", "/exit")
    assert (session.device_type, session.browser, session.country) == ("mobile", "firefox", "FR")
    assert session.referrer == "https://example.org/" and session.duration_ms == 540_000


def test_user_activity_reads(seeded: Seeded) -> None:
    """user_activity() returns the stored rows with the breakdown decoded."""
    days = user_activity(seeded.conn, start=dt.date(2024, 3, 5), end=dt.date(2024, 3, 6), limit=5)
    assert len(days) == 5 and all(d.date == dt.date(2024, 3, 5) for d in days)
    assert all(sum(d.events_breakdown.values()) == d.event_count for d in days)


def dashboard_reference(events: list[ref.Ev], lo: dt.datetime, hi: dt.datetime) -> dict[str, float]:
    chosen = [e for e in events if lo <= e.t <= hi]
    business: dict[str, float] = {}
    for e in chosen:
        if e.category == "business" and isinstance(e.props, dict):
            kind, value = e.props.get("metric_type"), e.props.get("value")
            if isinstance(value, int | float) and not isinstance(value, bool):
                business[kind] = business.get(kind, 0.0) + value
    return {
        "events_today": len(chosen),
        "unique_users_today": len({e.user_id for e in chosen if e.user_id}),
        "error_rate_today": sum(e.category == "error" for e in chosen) / len(chosen),
        "input_tokens_today": business.get("input_tokens", 0.0),
        "output_tokens_today": business.get("output_tokens", 0.0),
        "total_tokens_today": business.get("input_tokens", 0.0)
        + business.get("output_tokens", 0.0)
        + business.get("total_tokens", 0.0),
        "cost_usd_today": business.get("cost_usd", 0.0),
    }


def test_dashboard_metrics_compare_today_with_the_same_stretch_of_yesterday(
    seeded: Seeded, tmp_path: Path
) -> None:
    """Values cover midnight..now, previous values the same hours of yesterday."""
    now = at("2024-03-14 13:45:10.5")
    copy = tmp_path / "dash.db"
    seeded.conn.backup(target := sqlite3.connect(copy))
    target.close()
    conn = sqlite3.connect(copy, isolation_level=None)
    written = refresh_dashboard_metrics(conn, now)
    today = dashboard_reference(seeded.events, at("2024-03-14"), now)
    yesterday = dashboard_reference(seeded.events, at("2024-03-13"), now - dt.timedelta(days=1))
    stored = {m.metric_key: m for m in dashboard_metrics(conn)}
    assert {m.metric_key for m in written} == set(today) == set(stored)
    for key, value in today.items():
        metric = stored[key]
        assert metric.value == pytest.approx(value)
        assert metric.previous_value == pytest.approx(yesterday[key])
        assert metric.change_percent == pytest.approx(
            (value - yesterday[key]) / yesterday[key] * 100
        )
        assert metric.widget_id == (
            "overview"
            if key in ("events_today", "unique_users_today", "error_rate_today")
            else "llm"
        )
    conn.close()


def test_dashboard_without_business_events_has_no_llm_widgets(small_db: Any) -> None:
    """Token and cost rows exist only while business events do; 0 yesterday means no change %."""
    tokens = BusinessEventData(
        metric_type=BusinessMetricType.TOTAL_TOKENS, value=1500, unit="tokens"
    )
    conn = small_db(
        [
            make_event("tokens_consumed", "2024-03-05 09:00", props=tokens),
            make_event("e", "2024-03-06 09:00"),
        ]
    )
    first = {m.metric_key: m for m in refresh_dashboard_metrics(conn, at("2024-03-06 10:00"))}
    assert (
        first["total_tokens_today"].value == 0
        and first["total_tokens_today"].previous_value == 1500
    )
    assert first["events_today"].change_percent == 0.0
    later = {m.metric_key for m in refresh_dashboard_metrics(conn, at("2024-03-08 10:00"))}
    assert later == {"events_today", "unique_users_today", "error_rate_today"}
    assert {m.metric_key for m in dashboard_metrics(conn, "llm")} == set()
    empty = {m.metric_key: m for m in dashboard_metrics(conn, "overview")}
    assert empty["events_today"].value == 0 and empty["events_today"].change_percent is None


def test_dashboard_tokens_and_cost_count_missions_llm_calls(small_db: Any) -> None:
    """A mission's LLM call (gen_ai.usage counts and cost_usd in its tokens_consumed
    event, as MissionTracker and POST /v1/missions/{id}/llm record it) counts in the LLM
    widgets beside the business payloads."""
    from tachimeter.missions.properties import COST_USD, INPUT_TOKENS, OUTPUT_TOKENS

    def call(when: str, tokens_in: int, tokens_out: int, cost: float) -> AnalyticsEvent:
        props = {"mission_id": "m1", INPUT_TOKENS: tokens_in, OUTPUT_TOKENS: tokens_out}
        return make_event("tokens_consumed", when, props={**props, COST_USD: cost})

    business = BusinessEventData(metric_type=BusinessMetricType.COST_USD, value=2, unit="usd")
    conn = small_db(
        [
            call("2024-03-06 08:00", 1000, 200, 0.5),
            call("2024-03-06 09:00", 3000, 100, 1.25),
            call("2024-03-05 08:30", 10, 20, 0.125),
            make_event("tokens_consumed", "2024-03-06 09:30", props=business),
        ]
    )
    figures = {m.metric_key: m for m in refresh_dashboard_metrics(conn, at("2024-03-06 10:00"))}
    assert figures["input_tokens_today"].value == 4000
    assert figures["output_tokens_today"].value == 300
    assert figures["total_tokens_today"].value == 4300
    assert figures["cost_usd_today"].value == pytest.approx(3.75)
    assert figures["cost_usd_today"].previous_value == pytest.approx(0.125)
    assert figures["total_tokens_today"].previous_value == 30
