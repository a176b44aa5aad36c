"""Reading the summary tables: sessions, user activity, feature usage, dashboard values.

These tables are kept by the projections of :mod:`tachimeter.store.summaries` (their
definitions are there); reading them never touches raw events, so dashboards stay fast
whatever the event volume. Day ranges are UTC dates, ``start`` inclusive, ``end``
exclusive.

>>> import sqlite3
>>> from tachimeter.store.migrations import all_migrations
>>> conn = sqlite3.connect(":memory:")
>>> for m in all_migrations(): _ = conn.executescript(m.up)
>>> feature_usage(conn, start=dt.date(2024, 3, 1), end=dt.date(2024, 3, 8))
[]
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

import msgspec

from tachimeter.analyze.connection import ReadSource, read_connection
from tachimeter.analyze.intervals import TimeLike, resolve_range
from tachimeter.errors import QueryError
from tachimeter.model.timestamps import format_timestamp, parse_timestamp
from tachimeter.store.summaries import DashboardMetric

__all__ = [
    "FeatureUsageDay",
    "SessionRecord",
    "UserActivityDay",
    "dashboard_metrics",
    "feature_usage",
    "list_sessions",
    "user_activity",
]

_json_decode = msgspec.json.Decoder().decode
# Rows returned at most by one call: a page of a table in a UI.
MAX_ROWS: Final = 10_000


class SessionRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One ``analytics_sessions`` row (ids starting ``derived:`` were split by inactivity)."""

    id: str
    user_id: str | None
    started_at: dt.datetime
    ended_at: dt.datetime | None
    duration_ms: int | None
    event_count: int
    device_type: str | None
    browser: str | None
    os: str | None
    country: str | None
    city: str | None
    referrer: str | None
    landing_page: str | None
    exit_page: str | None


class UserActivityDay(msgspec.Struct, frozen=True, kw_only=True):
    """One ``user_activity`` row: a user's events of one UTC day."""

    user_id: str
    date: dt.date
    session_count: int
    event_count: int
    total_duration_ms: int
    first_seen_at: dt.datetime
    last_seen_at: dt.datetime
    events_breakdown: dict[str, int]


class FeatureUsageDay(msgspec.Struct, frozen=True, kw_only=True):
    """One ``feature_usage`` row: a feature's use on one UTC day."""

    feature_name: str
    date: dt.date
    usage_count: int
    unique_users: int
    avg_duration_ms: float | None
    success_rate: float | None


def _limit(limit: int) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_ROWS:
        raise QueryError(f"limit must be an integer in [1, {MAX_ROWS}], got {limit!r}")
    return limit


def _days(start: TimeLike, end: TimeLike) -> tuple[str, str]:
    lo, hi = resolve_range(start, end)
    return lo.date().isoformat(), hi.date().isoformat()


def list_sessions(
    source: ReadSource,
    *,
    start: TimeLike,
    end: TimeLike,
    user_id: str | None = None,
    limit: int = 100,
) -> list[SessionRecord]:
    """Sessions that started in ``[start, end)``, newest first."""
    lo, hi = resolve_range(start, end)
    sql = (
        "SELECT id, user_id, started_at, ended_at, duration_ms, event_count, device_type, "
        "browser, os, country, city, referrer, landing_page, exit_page FROM analytics_sessions "
        "WHERE started_at >= ? AND started_at < ?"
    )
    params: list[Any] = [format_timestamp(lo), format_timestamp(hi)]
    if user_id is not None:
        sql += " AND user_id = ?"
        params.append(user_id)
    sql += " ORDER BY started_at DESC, id DESC LIMIT ?"
    params.append(_limit(limit))
    with read_connection(source) as conn:
        rows = conn.execute(sql, params).fetchall()
    return [
        SessionRecord(
            id=r[0],
            user_id=r[1],
            started_at=parse_timestamp(r[2]),
            ended_at=parse_timestamp(r[3]) if r[3] else None,
            duration_ms=r[4],
            event_count=r[5],
            device_type=r[6],
            browser=r[7],
            os=r[8],
            country=r[9],
            city=r[10],
            referrer=r[11],
            landing_page=r[12],
            exit_page=r[13],
        )
        for r in rows
    ]


def user_activity(
    source: ReadSource,
    *,
    start: TimeLike,
    end: TimeLike,
    user_id: str | None = None,
    limit: int = 1000,
) -> list[UserActivityDay]:
    """Per-user daily activity in ``[start, end)``, by date then user."""
    lo, hi = _days(start, end)
    sql = (
        "SELECT user_id, date, session_count, event_count, total_duration_ms, first_seen_at, "
        "last_seen_at, events_breakdown FROM user_activity WHERE date >= ? AND date < ?"
    )
    params: list[Any] = [lo, hi]
    if user_id is not None:
        sql += " AND user_id = ?"
        params.append(user_id)
    sql += " ORDER BY date, user_id LIMIT ?"
    params.append(_limit(limit))
    with read_connection(source) as conn:
        rows = conn.execute(sql, params).fetchall()
    return [
        UserActivityDay(
            user_id=r[0],
            date=dt.date.fromisoformat(r[1]),
            session_count=r[2],
            event_count=r[3],
            total_duration_ms=r[4],
            first_seen_at=parse_timestamp(r[5]),
            last_seen_at=parse_timestamp(r[6]),
            events_breakdown=_json_decode(r[7]) if r[7] else {},
        )
        for r in rows
    ]


def feature_usage(
    source: ReadSource,
    *,
    start: TimeLike,
    end: TimeLike,
    feature: str | None = None,
    limit: int = 1000,
) -> list[FeatureUsageDay]:
    """Daily feature usage in ``[start, end)``, by date then feature."""
    lo, hi = _days(start, end)
    sql = (
        "SELECT feature_name, date, usage_count, unique_users, avg_duration_ms, success_rate "
        "FROM feature_usage WHERE date >= ? AND date < ?"
    )
    params: list[Any] = [lo, hi]
    if feature is not None:
        sql += " AND feature_name = ?"
        params.append(feature)
    sql += " ORDER BY date, feature_name LIMIT ?"
    params.append(_limit(limit))
    with read_connection(source) as conn:
        rows = conn.execute(sql, params).fetchall()
    return [
        FeatureUsageDay(
            feature_name=r[0],
            date=dt.date.fromisoformat(r[1]),
            usage_count=r[2],
            unique_users=r[3],
            avg_duration_ms=r[4],
            success_rate=r[5],
        )
        for r in rows
    ]


def dashboard_metrics(source: ReadSource, widget_id: str | None = None) -> list[DashboardMetric]:
    """The values last written by ``refresh_dashboard_metrics``, by widget and key."""
    sql = (
        "SELECT widget_id, metric_key, value, previous_value, change_percent, updated_at "
        "FROM dashboard_metrics"
    )
    params: list[Any] = []
    if widget_id is not None:
        sql += " WHERE widget_id = ?"
        params.append(widget_id)
    with read_connection(source) as conn:
        rows = conn.execute(sql + " ORDER BY widget_id, metric_key", params).fetchall()
    return [
        DashboardMetric(
            widget_id=r[0],
            metric_key=r[1],
            value=r[2],
            previous_value=r[3],
            change_percent=r[4],
            updated_at=r[5],
        )
        for r in rows
    ]
