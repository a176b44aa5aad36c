"""The server's ``dashboard_metrics`` refresh: it keeps up while events arrive, and its
commits leave the projections' row caches valid (``IngestWriter.call_on_store``)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest
from serving import ServerProcess, wire_events

from tachimeter.model.events import AnalyticsEvent
from tachimeter.model.timestamps import utc_now
from tachimeter.server.app import default_projections
from tachimeter.server.writer import IngestWriter
from tachimeter.store.projection import RowCache
from tachimeter.store.sqlite import SQLiteStore
from tachimeter.store.summaries import refresh_dashboard_metrics

# The server refreshes every 5 s while events arrive; a generous guard, not a measurement.
_REFRESH_WAIT_SECONDS = 30.0


def _events(count: int, users: int) -> list[AnalyticsEvent]:
    return [
        msgspec.structs.replace(
            AnalyticsEvent.new("feature_used", {"feature": f"f{i % 7}"}),
            user_id=f"user-{i % users}",
            session_id=f"session-{i % users}",
        )
        for i in range(count)
    ]


@pytest.fixture
def emptied(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of the row caches that :meth:`RowCache.check` found stale and emptied."""
    found: list[int] = []
    check = RowCache.check

    def counting(self: RowCache[object, object], conn: object) -> None:
        before = len(self)
        check(self, conn)  # type: ignore[arg-type]
        if before and not len(self):
            found.append(before)

    monkeypatch.setattr(RowCache, "check", counting)
    return found


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[IngestWriter]:
    store = SQLiteStore(tmp_path / "a.db")
    ingest = IngestWriter(store, default_projections())
    try:
        yield ingest
    finally:
        ingest.close()
        store.close()


def _refresh_between_batches(
    writer: IngestWriter, call: Callable[..., object]
) -> list[tuple[str, float]]:
    assert writer.submit(_events(300, users=40)).result(timeout=30) is not None
    future = call(lambda conn: refresh_dashboard_metrics(conn, utc_now()))
    metrics = future.result(timeout=30)  # type: ignore[attr-defined]
    assert writer.submit(_events(300, users=40)).result(timeout=30) is not None
    return [(m.metric_key, m.value) for m in metrics]


def test_a_refresh_on_the_store_connection_keeps_the_row_caches(
    writer: IngestWriter, emptied: list[int]
) -> None:
    """The refresh commits between batches, and the next batch finds its rows cached."""
    written = _refresh_between_batches(writer, writer.call_on_store)
    assert ("events_today", 300.0) in written
    assert ("unique_users_today", 40.0) in written
    assert emptied == []


def test_a_commit_on_another_connection_empties_the_row_caches(
    writer: IngestWriter, emptied: list[int]
) -> None:
    """Why the refresh runs on the store's connection (and proof the count above sees it)."""
    _refresh_between_batches(writer, writer.call)
    assert emptied  # each cache that held rows was emptied once


def test_a_failed_refresh_leaves_the_store_connection_usable(writer: IngestWriter) -> None:
    """A job that fails inside its transaction is rolled back; the next batch commits."""

    def fails(conn: object) -> None:
        conn.execute("BEGIN IMMEDIATE")  # type: ignore[attr-defined]
        conn.execute("DELETE FROM dashboard_metrics")  # type: ignore[attr-defined]
        raise RuntimeError("refresh failed")

    with pytest.raises(RuntimeError, match="refresh failed"):
        writer.call_on_store(fails).result(timeout=30)
    result = writer.submit(_events(10, users=2)).result(timeout=30)
    assert result is not None
    assert result.inserted == 10


def _events_today(server: ServerProcess) -> float | None:
    answer = server.get("/v1/dashboard?widget=overview")
    assert answer.status == 200, answer.body
    values = {row["metric_key"]: row["value"] for row in answer.json()}
    return values.get("events_today")


def test_dashboard_metrics_are_refreshed_while_events_arrive(server: ServerProcess) -> None:
    """Batches posted over a few seconds: the figures catch up without waiting a minute."""
    before = _events_today(server) or 0.0
    posted = 0
    deadline = time.monotonic() + _REFRESH_WAIT_SECONDS
    seen: float | None = before
    while time.monotonic() < deadline:
        batch = wire_events(50, run=str(uuid.uuid4()))
        answer = server.post_json("/v1/events", {"events": batch})
        assert answer.status == 200, answer.body
        posted += len(batch)
        seen = _events_today(server)
        if seen is not None and seen > before:
            break
        time.sleep(0.2)
    assert seen is not None
    assert seen > before, f"events_today stayed {seen} while {posted} events were posted"
    assert seen <= before + posted
