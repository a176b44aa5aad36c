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
