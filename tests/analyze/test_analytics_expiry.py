"""run_retention: deletes what is older than each table's configured age, in batches."""

from __future__ import annotations

import datetime as dt
import sqlite3
from typing import Any

import pytest
from analytics_fixtures import at, make_event

from tachimeter.analyze import FunnelDefinition, FunnelStep, run_retention
from tachimeter.config.settings import AnalyticsConfig, RetentionSettings
from tachimeter.errors import QueryError


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    tables = (
        "analytics_events",
        "user_activity",
        "user_activity_spans",
        "analytics_daily_events",
        "analytics_daily_counts",
        "feature_usage",
        "feature_usage_users",
        "analytics_sessions",
        "analytics_session_sources",
        "funnel_conversions",
    )
    return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}


def test_each_table_keeps_its_configured_days(small_db: Any) -> None:
    """Raw events go after 10 days, summaries after their own ages; reports say how many."""
    funnel = FunnelDefinition(
        name="ab", steps=(FunnelStep("a"), FunnelStep("b")), conversion_window=dt.timedelta(hours=1)
    )
    events = []
    for day in range(40):
        when = at("2024-01-01 12:00") + dt.timedelta(days=day)
        for i, name in enumerate(("a", "b", "feature_used")):
            events.append(
                make_event(
                    name,
                    when + dt.timedelta(minutes=i),
                    session=f"s{day}",
                    props={"feature": "search"} if name == "feature_used" else None,
                )
            )
    conn = small_db(events, funnels=[funnel])
    config = AnalyticsConfig(
        retention=RetentionSettings(
            days={
                "analytics_events": 10,
                "user_activity": 20,
                "feature_usage": 30,
                "analytics_sessions": 15,
                "funnel_conversions": 25,
            }
        )
    )
    before = counts(conn)
    report = run_retention(conn, config, at("2024-02-09 12:00:30"), batch_size=7)
    after = counts(conn)
    # Day 0 is 2024-01-01 (events at 12:00, 12:01, 12:02); now is day 39 at 12:00:30.
    # Timestamps compare with now - N days exactly, so day 29 keeps its 12:01 and 12:02.
    assert after["analytics_events"] == 3 * 10 + 2
    # Daily rows compare dates: 20 days before is 2024-01-20 (day 19), which is kept.
    assert after["user_activity"] == after["user_activity_spans"] == 21
    assert after["analytics_daily_events"] == after["analytics_daily_counts"] == 21 * 3
    assert after["feature_usage"] == after["feature_usage_users"] == 31
    # A session goes once it started and ended before the cutoff: day 24's ended at 12:02.
    assert after["analytics_sessions"] == after["analytics_session_sources"] == 16
    assert after["funnel_conversions"] == 25
    by_table = {t.table: t for t in report.tables}
    for table, n in before.items():
        if table == "analytics_session_sources":
            continue
        assert by_table[table].deleted == n - after[table]
    assert by_table["analytics_events"].batches == -(-by_table["analytics_events"].deleted // 7)
    assert report.total_deleted == sum(t.deleted for t in report.tables)
    assert by_table["user_activity"].cutoff == "2024-01-20"
    again = run_retention(conn, config, at("2024-02-09 12:00:30"), vacuum=True)
    assert again.total_deleted == 0 and again.vacuumed


def test_refuses_to_run_inside_a_transaction(small_db: Any) -> None:
    """Retention commits batch by batch, so it needs a connection outside a transaction."""
    conn = small_db([make_event("a", "2024-01-01 00:00")])
    conn.execute("BEGIN")
    with pytest.raises(QueryError, match="outside a transaction"):
        run_retention(conn, AnalyticsConfig(), at("2024-03-01"))
    conn.execute("ROLLBACK")
    with pytest.raises(QueryError, match="batch_size"):
        run_retention(conn, AnalyticsConfig(), at("2024-03-01"), batch_size=0)
