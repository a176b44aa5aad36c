"""Projections that keep rows in memory stay equal to a rebuild across rollbacks and
writes by other connections."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from tachimeter.errors import StoreError
from tachimeter.model.events import AnalyticsEvent
from tachimeter.model.rows import EventRow
from tachimeter.model.timestamps import from_ns
from tachimeter.store import SQLiteStore
from tachimeter.store.projection import RowCache
from tachimeter.store.summaries import rebuild_summaries, summary_projections

TABLES = (
    "analytics_daily_events",
    "analytics_first_events",
    "user_activity",
    "user_activity_spans",
    "feature_usage",
    "feature_usage_users",
    "analytics_sessions",
    "analytics_session_sources",
)
_BASE_NS = 1_709_280_000 * 10**9  # 2024-03-01T08:00:00Z


def events(start: int, count: int, *, session: str | None = "s1") -> list[AnalyticsEvent]:
    out = []
    for i in range(start, start + count):
        event = AnalyticsEvent.new(
            "feature_used", {"feature": f"f{i % 3}", "duration_ms": i, "success": i % 2 == 0}
        )
        out.append(
            event.__class__(
                **{
                    **{f: getattr(event, f) for f in event.__struct_fields__},
                    "timestamp": from_ns(_BASE_NS + i * 60 * 10**9),
                    "user_id": f"u{i % 2}",
                    "session_id": session,
                }
            )
        )
    return out


def snapshot(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(path)
    try:
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall()) for t in TABLES}
    finally:
        conn.close()


def rebuilt(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        rebuild_summaries(conn)
    finally:
        conn.close()
    return snapshot(path)


class _Failing:
    """A projection that fails once, after the summaries updated their caches."""

    name = "failing"

    def __init__(self) -> None:
        self.fail = True

    def apply(
        self, conn: sqlite3.Connection, events: Sequence[AnalyticsEvent], rows: Sequence[EventRow]
    ) -> None:
        if self.fail:
            self.fail = False
            raise RuntimeError("boom")

    def rebuild(self, conn: sqlite3.Connection) -> None:
        pass


def test_a_rolled_back_batch_leaves_no_trace_in_the_cached_rows(tmp_path: Path) -> None:
    """The summaries cached the rolled-back batch's rows: the store makes them forget."""
    path = tmp_path / "a.db"
    projections = [*summary_projections(), _Failing()]
    with SQLiteStore(path) as store:
        store.write_batch(events(0, 5), projections=projections[:-1])
        with pytest.raises(StoreError, match="boom"):
            store.write_batch(events(5, 5), projections=projections)
        store.write_batch(events(5, 5), projections=projections)
        store.write_batch(events(10, 5, session=None), projections=projections)
        store.write_batch(events(15, 5), projections=projections)
    incremental = snapshot(path)
    assert incremental == rebuilt(path)
    sessions = {row[0]: row for row in incremental["analytics_sessions"]}
    assert sessions["s1"][5] == 15  # events 0-9 and 15-19


def test_a_write_by_another_connection_empties_the_cached_rows(tmp_path: Path) -> None:
    """Another connection rebuilt the tables between two batches: nothing stale is merged."""
    path = tmp_path / "a.db"
    projections = summary_projections()
    with SQLiteStore(path) as store:
        store.write_batch(events(0, 5), projections=projections)
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("DELETE FROM analytics_events WHERE user_id = 'u1'")
            rebuild_summaries(other)
        finally:
            other.close()
        store.write_batch(events(5, 5), projections=projections)
    assert snapshot(path) == rebuilt(path)


def test_row_cache_drops_its_oldest_half_when_full() -> None:
    """A full cache forgets its oldest entries, never the newest."""
    cache: RowCache[int, int] = RowCache(limit=4)
    for i in range(5):
        cache.put(i, i)
    assert [cache.get(i) for i in range(5)] == [None, None, 2, 3, 4]
