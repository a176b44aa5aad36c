"""``tachimeter missions``: list, show, stats, compare and patterns over a store filled with
missions tracked by the real tracker and store, checked against what the test tracked."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tachimeter.cli import app
from tachimeter.collect.collector import EventCollector
from tachimeter.config.sources import load_config
from tachimeter.defaults import default_projections
from tachimeter.missions import MissionError, MissionTracker
from tachimeter.store.sink import StoreSink

runner = CliRunner()
TOOLS = ["read_file", "search", "edit_file", "run_tests", "shell"]
FATAL = ["edit_file", "shell", "revert"]  # "revert" appears nowhere else
MODELS = ["model-a", "model-b", "model-weak"]


@dataclass
class Tracked:
    """What the test did to one mission: the truth the commands are checked against."""

    mission_id: str
    backend: str
    model: str
    tags: list[str]
    created_ns: int
    status: str
    tools: list[str] = field(default_factory=list)
    error_code: str | None = None
    planted: bool = False


class Clock:
    """The tracker's clock: one second per call, from three days ago."""

    def __init__(self) -> None:
        self.now = time.time_ns() - 3 * 86_400 * 10**9

    def __call__(self) -> int:
        self.now += 10**9
        return self.now


@dataclass
class Fleet:
    db: Path
    missions: list[Tracked]

    def ids(self, **where: Any) -> set[str]:
        return {
            m.mission_id for m in self.missions if all(getattr(m, k) == v for k, v in where.items())
        }


def _track(db: Path, seed: int, count: int) -> list[Tracked]:
    rng = random.Random(seed)
    config = load_config(
        env={},
        cwd="/nonexistent-tachimeter-test-dir",
        **{"storage.path": str(db), "sampling.seed": 0, "collection.queue_capacity": 100_000},
    )
    sink = StoreSink.open(db, config, projections=default_projections(config))
    collector = EventCollector(config, sinks=[sink], register_atexit=False)
    clock = Clock()
    tracker = MissionTracker(collector, database=db, clock=clock)
    out: list[Tracked] = []
    for i in range(count):
        model = MODELS[i % 3]
        backend = rng.choice(["anthropic", "openai"])
        tags = sorted(rng.sample(["docs", "refactor", "tests"], rng.randint(0, 2)))
        mission_id = tracker.start_mission(None, backend, model, tags)
        m = Tracked(mission_id, backend, model, tags, clock.now, "executing")
        tracker.mission_started(mission_id)
        m.tools = [rng.choice(TOOLS) for _ in range(rng.randint(2, 6))]
        m.planted = rng.random() < 0.2
        if m.planted:
            m.tools += FATAL
        for step, tool in enumerate(m.tools):
            tracker.tool_invoked(mission_id, tool, rng.uniform(10, 500), success=True)
            tracker.tokens_consumed(mission_id, input_tokens=400, output_tokens=100, model="gpt-4o")
            tracker.step_completed(mission_id, step, True, duration_ms=rng.uniform(50, 900))
        fails = m.planted or rng.random() < (0.5 if model == "model-weak" else 0.1)
        if i % 17 == 5 and not m.planted:
            tracker.mission_cancelled(mission_id, "user stopped it")
            m.status = "cancelled"
        elif i % 23 == 7 and not m.planted:
            pass  # still running
        elif fails:
            m.error_code = rng.choice(["TIMEOUT", "TOOL_ERROR"])
            tracker.mission_failed(mission_id, MissionError(code=m.error_code, message="x"))
            m.status = "failed"
        else:
            tracker.mission_completed(mission_id)
            m.status = "completed"
        out.append(m)
    assert collector.flush(timeout=60)
    collector.shutdown(timeout=30)
    return out


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    db = tmp_path_factory.mktemp("missions") / "analytics.db"
    return Fleet(db=db, missions=_track(db, seed=5, count=150))


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("TACHIMETER_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def missions(fleet: Fleet, *args: str, format: str = "json") -> Any:
    result = runner.invoke(app, ["missions", *args, "--store", str(fleet.db), "--format", format])
    assert result.exit_code == 0, result.output
    if format == "csv":
        return list(csv.DictReader(io.StringIO(result.stdout)))
    return json.loads(result.stdout)


def test_stats_count_what_was_tracked(fleet: Fleet) -> None:
    stats = missions(fleet, "stats")
    statuses = Counter(m.status for m in fleet.missions)
    assert stats["total_missions"] == len(fleet.missions)
    assert stats["completed_missions"] == statuses["completed"]
    assert stats["failed_missions"] == statuses["failed"]
    assert stats["cancelled_missions"] == statuses["cancelled"]
    assert stats["active_missions"] == statuses["executing"]
    finished = statuses["completed"] + statuses["failed"] + statuses["cancelled"]
    assert stats["success_rate"] == pytest.approx(statuses["completed"] / finished)
    assert stats["by_model"] == dict(Counter(m.model for m in fleet.missions))
    assert stats["by_status"] == dict(statuses)
    tool_calls = Counter(t for m in fleet.missions for t in m.tools)
    assert stats["top_tools"] == dict(tool_calls.most_common(10))
    assert stats["top_errors"] == dict(
        Counter(m.error_code for m in fleet.missions if m.error_code)
    )


def test_stats_filters_by_tag_and_creation_time(fleet: Fleet) -> None:
    middle = sorted(m.created_ns for m in fleet.missions)[len(fleet.missions) // 2]
    # Half a second before a mission's creation: clear of any rounding to microseconds.
    since = dt.datetime.fromtimestamp((middle - 5 * 10**8) / 1e9, dt.UTC).isoformat()
    later = [m for m in fleet.missions if m.created_ns >= middle]
    got = missions(fleet, "stats", "--since", since, "--tag", "docs", "--tag", "tests")
    wanted = [m for m in later if {"docs", "tests"} & set(m.tags)]
    assert got["total_missions"] == len(wanted)
    assert got["by_backend"] == dict(Counter(m.backend for m in wanted))


def test_stats_of_no_finished_missions_have_no_rates(fleet: Fleet) -> None:
    """Nothing finished: no success rate or durations (not "0 % in 0 ms")."""
    none = missions(fleet, "stats", "--since", "2030-01-01", "--until", "2030-02-01")
    assert none["total_missions"] == 0
    assert none["success_rate"] is None and none["avg_steps"] is None
    assert none["median_execution_time_ms"] is None and none["p99_execution_time_ms"] is None
    running = missions(fleet, "stats", "--status", "executing")
    assert running["total_missions"] == running["active_missions"] > 0
    assert running["success_rate"] is None and running["avg_steps"] is not None


def test_list_filters_and_orders_newest_first(fleet: Fleet) -> None:
    failed = missions(fleet, "list", "--status", "failed", "--limit", "1000", format="csv")
    assert {r["mission_id"] for r in failed} == fleet.ids(status="failed")
    assert {r["error_code"] for r in failed} <= {"TIMEOUT", "TOOL_ERROR"}
    newest = missions(fleet, "list", "--model", "model-b", "--limit", "4")
    chosen = sorted(
        (m for m in fleet.missions if m.model == "model-b"), key=lambda m: -m.created_ns
    )[:4]
    assert [r["mission_id"] for r in newest] == [m.mission_id for m in chosen]
    assert [r["tool_calls"] for r in newest] == [len(m.tools) for m in chosen]
    assert [r["tags"] for r in newest] == [m.tags for m in chosen]


def test_show_gives_one_mission_with_its_tools(fleet: Fleet) -> None:
    tracked = next(m for m in fleet.missions if m.status == "failed" and m.planted)
    shown = missions(fleet, "show", tracked.mission_id)
    mission = shown["mission"]
    assert mission["mission_id"] == tracked.mission_id
    assert mission["status"] == "failed"
    assert mission["error_code"] == tracked.error_code
    assert mission["model"] == tracked.model and mission["tags"] == tracked.tags
    assert mission["step_count"] == len(tracked.tools)
    assert {t["tool_name"]: t["invocations"] for t in shown["tools"]} == dict(
        Counter(tracked.tools)
    )
    table = runner.invoke(app, ["missions", "show", tracked.mission_id, "--store", str(fleet.db)])
    assert table.exit_code == 0 and tracked.mission_id in table.stdout


def test_show_of_an_unknown_mission_is_a_one_line_error(fleet: Fleet) -> None:
    result = runner.invoke(app, ["missions", "show", "no-such-id", "--store", str(fleet.db)])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: no mission 'no-such-id'")


def test_compare_by_model_counts_finished_missions_and_successes(fleet: Fleet) -> None:
    result = missions(fleet, "compare", "--by", "model", "--min-missions", "5")
    finished = Counter(m.model for m in fleet.missions if m.status != "executing")
    successes = Counter(m.model for m in fleet.missions if m.status == "completed")
    groups = {g["group"]: g for g in result["groups"]}
    assert {k: g["missions"] for k, g in groups.items()} == dict(finished)
    assert {k: g["successes"] for k, g in groups.items()} == {k: successes[k] for k in finished}
    low, high = groups["model-a"]["success_low"], groups["model-a"]["success_high"]
    assert low <= groups["model-a"]["success_rate"] <= high
    assert len(result["pairs"]) == 3 and all(p["verdict"] for p in result["pairs"])


def test_patterns_find_the_planted_failure_sequence(fleet: Fleet) -> None:
    report = missions(fleet, "patterns", "--min-missions", "5")
    planted = [m for m in fleet.missions if m.planted]
    assert all(m.status == "failed" for m in planted)
    assert report["summary"]["failed_missions"] == len(fleet.ids(status="failed"))
    found = {p["pattern"]: p for p in report["failure_associated"]}
    assert "edit_file -> shell -> revert" in found
    assert found["edit_file -> shell -> revert"]["missions"] == len(planted)
    assert found["edit_file -> shell -> revert"]["failure_rate"] == 1.0
    errors = {e["code"]: e["failed_missions"] for e in report["recurring_errors"]}
    assert errors == dict(Counter(m.error_code for m in fleet.missions if m.error_code))


def test_every_section_of_patterns_is_a_csv_block(fleet: Fleet) -> None:
    result = runner.invoke(
        app,
        [
            "missions",
            "patterns",
            "--min-missions",
            "5",
            "--store",
            str(fleet.db),
            "--format",
            "csv",
        ],
    )
    assert result.exit_code == 0, result.output
    blocks = result.stdout.strip().split("\n\n")
    names = [b.splitlines()[0] for b in blocks]
    assert names == [
        "# summary",
        "# failure_associated",
        "# frequent",
        "# loops",
        "# failure_steps",
        "# recurring_errors",
    ]
    summary = list(csv.DictReader(io.StringIO("\n".join(blocks[0].splitlines()[1:]))))
    assert int(summary[0]["missions"]) == sum(1 for m in fleet.missions if m.status != "executing")
