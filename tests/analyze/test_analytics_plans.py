"""Query plans: every time-bounded analytics query reads through an index, never a scan."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from analytics_fixtures import Seeded, at

from tachimeter import analyze as ta

SUMMARY_TABLES = (
    "analytics_events",
    "analytics_daily_events",
    "user_activity",
    "feature_usage",
    "analytics_sessions",
    "funnel_conversions",
)


@contextmanager
def traced(conn: sqlite3.Connection) -> Iterator[list[str]]:
    """Statements the connection runs, with their parameters filled in."""
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        yield statements
    finally:
        conn.set_trace_callback(None)


def plans(conn: sqlite3.Connection, statements: list[str]) -> list[tuple[str, list[str]]]:
    out = []
    for sql in statements:
        if not sql.lstrip().upper().startswith(("SELECT", "WITH")):
            continue
        detail = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql)]
        out.append((sql, detail))
    return out


QUERIES: dict[str, Callable[[Any], Any]] = {
    "trend of one event by hour": lambda c: ta.trend(
        c, "mission_created", start=at("2024-03-04"), end=at("2024-03-11"), interval="hour"
    ),
    "trend of all events by day (summary)": lambda c: ta.trend(
        c, None, start=at("2024-02-26"), end=at("2024-03-27")
    ),
    "trend of all events by hour (raw)": lambda c: ta.trend(
        c, None, start=at("2024-03-04"), end=at("2024-03-11"), interval="hour"
    ),
    "daily unique users (summary)": lambda c: ta.trend(
        c, None, start=at("2024-02-26"), end=at("2024-03-27"), measure="unique_users"
    ),
    "weekly unique users of one event (summary)": lambda c: ta.trend(
        c,
        "feature_used",
        start=at("2024-02-26"),
        end=at("2024-03-25"),
        interval="week",
        measure="unique_users",
    ),
    "trend with breakdown and filter": lambda c: ta.trend(
        c,
        "tool_invoked",
        start=at("2024-03-04"),
        end=at("2024-03-11"),
        measure="unique_users",
        breakdown='"gen_ai.tool.name"',
        where=[ta.PropertyFilter("success", "eq", True)],
    ),
    "p90 of a property by day": lambda c: ta.trend(
        c,
        "tool_invoked",
        start=at("2024-03-04"),
        end=at("2024-03-11"),
        measure="p90",
        property="duration_ms",
    ),
    "property percentiles": lambda c: ta.property_stats(
        c, "response_latency", "value", start=at("2024-03-01"), end=at("2024-03-08")
    ),
    "search, time range only": lambda c: ta.search_events(
        c, start=at("2024-03-01"), end=at("2024-03-08")
    ),
    "search, next page": lambda c: ta.search_events(
        c,
        start=at("2024-03-01"),
        end=at("2024-03-08"),
        cursor=ta.search_events(c, start=at("2024-03-01"), end=at("2024-03-08")).next_cursor,
    ),
    "search by event and property": lambda c: ta.search_events(
        c,
        event="feature_used",
        start=at("2024-03-01"),
        where=[ta.PropertyFilter("feature", "eq", "search")],
    ),
    "search by category": lambda c: ta.search_events(
        c, category="error", start=at("2024-03-01"), end=at("2024-03-08")
    ),
    "search by user": lambda c: ta.search_events(c, user_id="user-00042"),
    "search by session": lambda c: ta.search_events(c, session_id="nope"),
    "funnel (summary)": lambda c: ta.funnel_report(
        c, "missions", start=at("2024-02-26"), end=at("2024-03-27")
    ),
    "funnel (raw)": lambda c: ta.funnel_report(
        c, "missions", start=at("2024-02-26"), end=at("2024-03-27"), use_summaries=False
    ),
    "retention (summary)": lambda c: ta.retention_cohorts(
        c, "session_started", start=at("2024-02-26"), periods=4
    ),
    "retention (raw)": lambda c: ta.retention_cohorts(
        c, "session_started", start=at("2024-02-26"), periods=4, use_summaries=False
    ),
    "sessions": lambda c: ta.list_sessions(c, start=at("2024-03-01"), end=at("2024-03-02")),
    "user activity": lambda c: ta.user_activity(c, start=at("2024-03-01"), end=at("2024-03-02")),
    "feature usage": lambda c: ta.feature_usage(c, start=at("2024-03-01"), end=at("2024-03-08")),
}


@pytest.mark.parametrize("name", list(QUERIES))
def test_queries_search_indexes(seeded: Seeded, name: str) -> None:
    """No statement scans analytics_events or a summary table: each one SEARCHes an index."""
    with traced(seeded.conn) as statements:
        QUERIES[name](seeded.conn)
    checked = plans(seeded.conn, statements)
    assert checked, "the query ran no SELECT"
    for sql, detail in checked:
        for line in detail:
            for table in SUMMARY_TABLES:
                if line.startswith(f"SCAN {table}"):
                    pytest.fail(f"{name}: {line!r} in plan of {sql[:200]!r}: {detail}")
