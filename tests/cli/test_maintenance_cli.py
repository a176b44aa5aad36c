"""``tachimeter retention run`` and ``tachimeter rebuild`` on a real store."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tachimeter.cli import app
from tachimeter.defaults import default_projections
from tachimeter.model import EventBuilder
from tachimeter.store.sqlite import SQLiteStore

runner = CliRunner()


def _store_with_events(path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    old = now - dt.timedelta(days=400)
    events = [
        EventBuilder.track("feature_used")
        .user_id("u1")
        .property("feature", "a")
        .timestamp(t)
        .build()
        for t in (old, old + dt.timedelta(minutes=1), now)
    ]
    with SQLiteStore(path) as store:
        store.write_batch(events, projections=default_projections())


def test_retention_run_deletes_only_what_is_past_its_age(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "a.db"
    _store_with_events(db)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["retention", "run", "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "analytics_events" in result.output
    rows = sqlite3.connect(db).execute("SELECT count(*) FROM analytics_events").fetchone()
    assert rows == (1,)  # the two 400-day-old events are past the 90-day default


def test_rebuild_recomputes_derived_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "b.db"
    _store_with_events(db)
    conn = sqlite3.connect(db)
    before = conn.execute("SELECT * FROM user_activity ORDER BY date").fetchall()
    conn.execute("DELETE FROM user_activity")
    conn.commit()
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["rebuild", "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert conn.execute("SELECT * FROM user_activity ORDER BY date").fetchall() == before


def _table(conn: sqlite3.Connection, table: str) -> list[tuple[object, ...]]:
    return conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()


def test_rebuild_after_retention_keeps_the_summaries_unless_forced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retention keeps summaries (730 days) longer than events (90): a rebuild would
    recompute them from the one event left, so it refuses, and changes nothing."""
    db = tmp_path / "r.db"
    _store_with_events(db)
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(app, ["retention", "run", "--store", str(db)]).exit_code == 0
    conn = sqlite3.connect(db)
    kept = {t: _table(conn, t) for t in ("user_activity", "analytics_daily_counts")}
    assert len(kept["user_activity"]) == 2  # the old day and today

    refused = runner.invoke(app, ["rebuild", "--db", str(db)])
    assert refused.exit_code == 2
    assert refused.stderr.startswith("error: not rebuilt: analytics_daily_counts holds data from")
    assert "--force" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert {t: _table(conn, t) for t in kept} == kept

    forced = runner.invoke(app, ["rebuild", "--db", str(db), "--force"])
    assert forced.exit_code == 0, forced.output
    assert len(_table(conn, "user_activity")) == 1  # what the remaining event makes


def test_rebuild_refuses_when_the_oldest_day_lost_some_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "d.db"
    now = dt.datetime.now(dt.UTC).replace(hour=12)
    events = [
        EventBuilder.track("feature_used").user_id("u1").timestamp(now - dt.timedelta(hours=h))
        for h in (3, 2, 1)
    ]
    with SQLiteStore(db) as store:
        store.write_batch([e.build() for e in events], projections=default_projections())
    conn = sqlite3.connect(db)
    conn.execute(
        "DELETE FROM analytics_events WHERE timestamp = (SELECT min(timestamp) "
        "FROM analytics_events)"
    )
    conn.commit()
    monkeypatch.chdir(tmp_path)
    refused = runner.invoke(app, ["rebuild", "--db", str(db)])
    assert refused.exit_code == 2
    assert f"the summaries count 3 events on {now.date().isoformat()}" in refused.stderr


@pytest.mark.parametrize("command", [["rebuild"], ["retention", "run"]])
def test_a_mistyped_store_is_an_error_not_a_new_store(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, [*command, "--db", str(tmp_path / "typo.db")])
    assert result.exit_code == 2 and result.stderr.startswith("error: no store at")
    assert not (tmp_path / "typo.db").exists()
