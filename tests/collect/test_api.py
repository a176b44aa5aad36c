"""The module-level API over the global collector (spec 408's global instance)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

import tachimeter as tm
from tachimeter.collect import api


def _forget_global() -> None:
    """Shut the global collector down and forget it (a shut-down one stays global)."""
    tm.shutdown()
    api._global = None


@pytest.fixture(autouse=True)
def no_global(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No global collector before or after; a default store, if made, lives in tmp_path."""
    _forget_global()
    monkeypatch.setenv("TACHIMETER_DB", str(tmp_path / "default.db"))
    yield
    _forget_global()


def test_configure_track_identify_page_flush_shutdown() -> None:
    sink = tm.MemorySink()
    collector = tm.configure(sinks=[sink], env={}, flush_interval=3600)
    assert tm.global_collector() is collector
    tm.track("feature_used", {"feature": "search"}, user_id="u1")
    tm.identify("u1", {"plan": "pro"})
    tm.page("/settings", user_id="u1", referrer="/home")
    assert tm.flush(timeout=10)
    track, identify, page = sink.events()
    assert (track.event_name, track.call, track.user_id) == ("feature_used", "track", "u1")
    assert (identify.event_name, identify.call, identify.data) == (
        "user_identified",
        "identify",
        {"plan": "pro"},
    )
    assert (page.event_name, page.page_url, page.referrer) == ("page_view", "/settings", "/home")
    assert collector.config.collection.flush_interval == 3600
    assert tm.shutdown(timeout=10)
    # A late track goes to the shut-down collector, dropped and counted; never to a new
    # collector with the default configuration (another database).
    assert tm.global_collector() is collector
    tm.track("feature_used")
    assert collector.stats().events_dropped == 1
    assert len(sink.events()) == 3


def test_reconfigure_flushes_the_previous_collector() -> None:
    first = tm.MemorySink("first")
    tm.configure(sinks=[first], env={}, flush_interval=3600)
    tm.track("feature_used")
    second = tm.MemorySink("second")
    tm.configure(sinks=[second], env={})
    assert len(first.events()) == 1
    tm.track("feature_used")
    assert tm.flush(timeout=10)
    assert len(second.events()) == 1


def test_track_without_configure_stores_events_in_the_default_store(tmp_path: Path) -> None:
    tm.track("feature_used", {"feature": "search"}, user_id="u1")
    assert tm.global_collector() is not None
    assert api.init_global_collector() is tm.global_collector()
    assert tm.flush(timeout=30)
    rows = (
        sqlite3.connect(tmp_path / "default.db")
        .execute("SELECT event_name, user_id FROM analytics_events")
        .fetchall()
    )
    assert rows == [("feature_used", "u1")]


def test_configure_without_sinks_uses_the_store_with_every_projection(tmp_path: Path) -> None:
    db = tmp_path / "configured.db"
    tm.configure(path=db, env={})
    tm.track("feature_used", {"feature": "search"}, user_id="u1")
    assert tm.flush(timeout=30)
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM analytics_events").fetchone() == (1,)
    assert conn.execute("SELECT count(*) FROM user_activity").fetchone() == (1,)


def test_bad_configuration_fails_at_configure_with_the_key() -> None:
    with pytest.raises(tm.ConfigError, match="flush_interval"):
        tm.configure(env={}, flush_interval=-1)


def test_track_never_raises_for_telemetry_reasons() -> None:
    tm.configure(env={}, sinks=[tm.MemorySink()])
    tm.track("Bad Name", {"x": float("nan")})
    tm.track("feature_used", {"x": object()})
    assert tm.flush(timeout=10)
    assert tm.global_collector() is not None
    assert tm.global_collector().stats().events_dead_lettered == 2  # type: ignore[union-attr]


def test_a_mission_before_any_track_uses_the_default_store(tmp_path: Path) -> None:
    """The first global use may be a mission: its collector has the default sinks, as a
    first track()'s has (it once had none and every event was discarded)."""
    with tm.mission(backend="anthropic", model="claude-sonnet-4") as m:
        m.step(0, success=True)
    tm.track("feature_used", {"feature": "search"})
    assert tm.flush(timeout=30)
    conn = sqlite3.connect(tmp_path / "default.db")
    names = [r[0] for r in conn.execute("SELECT event_name FROM analytics_events")]
    assert "mission_completed" in names and "feature_used" in names
    assert conn.execute("SELECT count(*) FROM missions").fetchone() == (1,)


def test_flush_and_shutdown_without_a_collector_are_true() -> None:
    assert tm.flush() and tm.shutdown()


def test_the_global_collectors_statistics_are_exposed_as_metrics() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    tm.configure(env={}, sinks=[tm.MemorySink()], flush_interval=3600)
    for _ in range(3):
        tm.track("feature_used")
    assert tm.flush(timeout=10)
    families = {f.name: f for f in text_string_to_metric_families(tm.generate_latest().decode())}
    received = families["tachimeter_collector_events_received"]
    assert [s.value for s in received.samples] == [3.0]
    assert "tachimeter_collector_queue_depth" in families
    flush = families["tachimeter_collector_flush_duration_seconds"]
    counts = [s.value for s in flush.samples if s.name.endswith("_count")]
    assert counts and counts[0] >= 1
