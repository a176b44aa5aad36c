"""`tachimeter alerts check | list | history` over a real rule file and database."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from alerting import FakeClock, Gauge
from typer.testing import CliRunner

from tachimeter.alerts import AlertManager, AlertRule, MetricThreshold
from tachimeter.cli.alerts import app
from tachimeter.store.sqlite import SQLiteStore
from tachimeter.store.timeseries import TimeSeriesStore

# Wide enough that rich does not wrap table cells.
runner = CliRunner(env={"COLUMNS": "200"})

RULES = """
[[channels]]
type = "log"

[[rules]]
name = "Backlog"
severity = "critical"
for = "1m"
[rules.condition]
type = "threshold"
metric = "queue_depth"
op = ">"
threshold = 100

[[rules]]
name = "NoHeartbeat"
[rules.condition]
type = "absence"
event = "heartbeat"
duration = "10m"
"""


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "alerts.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_check_lists_the_rules_of_a_valid_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["check", str(_file(tmp_path, RULES))])
    assert result.exit_code == 0, result.output
    assert "Backlog" in result.output and "queue_depth > 100" in result.output
    assert "no data from event heartbeat for 10m" in result.output
    assert result.output.rstrip().endswith("ok")


def test_check_reports_the_first_mistake_and_fails(tmp_path: Path) -> None:
    path = _file(tmp_path, RULES.replace('op = ">"', 'op = "=>"'))
    result = runner.invoke(app, ["check", str(path)])
    assert result.exit_code == 1
    assert "rules[0] ('Backlog').condition.op: op = '=>' is not a comparison operator" in (
        result.output
    )


def test_check_with_a_database_checks_metric_names(tmp_path: Path) -> None:
    db = tmp_path / "analytics.db"
    with SQLiteStore(db) as store:
        tsdb = TimeSeriesStore(store)
        tsdb.write_samples("queue_depth_total", {}, [1_767_225_600_000_000], [1.0])
        tsdb.close()
    result = runner.invoke(app, ["check", str(_file(tmp_path, RULES)), "--db", str(db)])
    assert result.exit_code == 1
    assert "unknown metric 'queue_depth'" in result.output
    assert "did you mean 'queue_depth_total'?" in result.output


def test_list_and_history_read_what_a_manager_stored(tmp_path: Path) -> None:
    db = tmp_path / "analytics.db"
    clock = FakeClock()
    gauge = Gauge(150.0, {"queue": "events"})
    rule = AlertRule("Backlog", MetricThreshold(gauge, ">", 100), for_="1m")
    with SQLiteStore(db) as store, AlertManager([rule], clock=clock, store=store) as manager:
        manager.evaluate_rules()
        manager.evaluate_rules(clock.advance(60))
    listed = runner.invoke(app, ["list", "--db", str(db), "--json"])
    assert listed.exit_code == 0, listed.output
    payload = json.loads(listed.output)
    assert [(a["rule"], a["labels"], a["state"]) for a in payload["alerts"]] == [
        ("Backlog", {"queue": "events"}, "firing")
    ]
    assert payload["rules"][0]["health"] == "ok"
    assert payload["rules"][0]["evaluations_total"] == 2
    table = runner.invoke(app, ["list", "--db", str(db)])
    assert table.exit_code == 0 and "firing" in table.output
    history = runner.invoke(app, ["history", "--db", str(db), "--json", "--rule", "Backlog"])
    assert history.exit_code == 0, history.output
    changes = [(e["from_state"], e["to_state"], e["value"]) for e in json.loads(history.output)]
    assert changes == [("pending", "firing", 150.0), ("inactive", "pending", 150.0)]
    shown = runner.invoke(app, ["history", "--db", str(db), "--limit", "1"])
    assert shown.exit_code == 0 and "pending -> firing" in shown.output
    # The fake clock is in the past: nothing happened in the last hour of real time.
    recent = runner.invoke(app, ["history", "--db", str(db), "--json", "--since", "1h"])
    assert json.loads(recent.output) == []
    # --since takes an ISO date as every other --since does; --store names the database.
    dated = runner.invoke(app, ["history", "--store", str(db), "--json", "--since", "2000-01-01"])
    assert dated.exit_code == 0, dated.output
    assert len(json.loads(dated.output)) == 2
    bad_time = runner.invoke(app, ["history", "--db", str(db), "--since", "last week"])
    assert bad_time.exit_code == 2 and bad_time.stderr.startswith("error: --since 'last week'")
    assert runner.invoke(app, ["history", "--db", str(db), "--limit", "0"]).exit_code == 2


def test_reading_commands_need_a_database(tmp_path: Path) -> None:
    result = runner.invoke(app, ["list", "--db", str(tmp_path / "missing.db")])
    assert result.exit_code == 2
    assert "no database at" in result.output
    bad = runner.invoke(app, ["history", "--db", str(tmp_path / "missing.db"), "--since", "x"])
    assert bad.exit_code == 2
