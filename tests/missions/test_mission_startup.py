"""Missions left active by a crashed process are marked abandoned when a store opens."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from tachimeter.collect.collector import EventCollector
from tachimeter.config import load_config
from tachimeter.defaults import default_sinks
from tachimeter.missions import MissionTracker


def test_opening_the_default_store_abandons_stale_missions(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    settings = {"storage.path": str(db), "missions.abandon_after_seconds": 0.05}
    config = load_config(env={}, cwd=str(tmp_path), **settings)
    collector = EventCollector(config, sinks=default_sinks(config), register_atexit=False)
    tracker = MissionTracker(collector)
    mission_id = tracker.start_mission(None, "anthropic", "claude-sonnet-4")
    tracker.mission_started(mission_id)  # ... and then the process "dies"
    assert collector.flush(timeout=30)
    collector.shutdown(timeout=10)
    status = sqlite3.connect(db).execute("SELECT status FROM missions").fetchall()
    assert status == [("executing",)]

    time.sleep(0.1)  # idle past abandon_after_seconds
    for sink in default_sinks(config):  # the next process opens the store
        sink.close()  # type: ignore[attr-defined]
    assert sqlite3.connect(db).execute("SELECT status FROM missions").fetchall() == [("abandoned",)]
