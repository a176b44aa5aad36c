"""``tachimeter report``: every figure against a plain-Python recomputation from the raw
rows (sqlite3 directly), and the three renderings (Markdown tables, a self-contained HTML
file with SVG charts, JSON of the data)."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections import Counter, defaultdict
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from report_world import DAYS, START, fill_store
from typer.testing import CliRunner

from tachimeter.analyze import MissionFilter, calculate_metrics
from tachimeter.cli import app
from tachimeter.report import Report, build_report, render_html, render_markdown
from tachimeter.store.sqlite import SQLiteStore

runner = CliRunner()

SINCE = START + dt.timedelta(days=2, hours=5)
UNTIL = START + dt.timedelta(days=9, hours=3)
FINISHED = {"completed", "failed", "cancelled", "abandoned"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fill_store(tmp_path_factory.mktemp("report") / "world.db")


@pytest.fixture(scope="module")
def report(world: Path) -> Report:
    with sqlite3.connect(world) as conn:
        return build_report(conn, SINCE, UNTIL, top=8, store=str(world))


def _when(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _inside(text: str) -> bool:
    return SINCE <= _when(text) < UNTIL


def _rows(world: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(world)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _events(world: Path) -> list[tuple[Any, ...]]:
    rows = _rows(
        world,
        "SELECT id, timestamp, event_name, user_id, session_id, category, properties "
        "FROM analytics_events",
    )
    return [r for r in rows if _inside(r[1])]


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q, method="linear")) if values else None


def test_summary_and_days_equal_a_recount_of_the_raw_events(world: Path, report: Report) -> None:
    events = _events(world)
    errors = [e for e in events if e[5] == "error"]
    assert report.summary.events == len(events) > 100
    assert report.summary.users == len({e[3] for e in events if e[3] is not None})
    assert report.summary.sessions == len({e[4] for e in events if e[4] is not None})
    assert report.summary.errors == len(errors) > 0
    assert report.summary.error_rate == pytest.approx(len(errors) / len(events))
    per_day = Counter(_when(e[1]).date().isoformat() for e in events)
    errors_per_day = Counter(_when(e[1]).date().isoformat() for e in errors)
    first, last = SINCE.date(), (UNTIL - dt.timedelta(microseconds=1)).date()
    days = [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
    assert [d.day for d in report.events_per_day] == days
    assert [(d.events, d.errors) for d in report.events_per_day] == [
        (per_day[d], errors_per_day[d]) for d in days
    ]


def test_top_events_and_errors_equal_a_recount(world: Path, report: Report) -> None:
    events = _events(world)
    counts = Counter(e[2] for e in events)
    users: dict[str, set[str]] = defaultdict(set)
    for e in events:
        if e[3] is not None:
            users[e[2]].add(e[3])
    expected = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:8]
    assert [(t.name, t.events, t.users) for t in report.top_events] == [
        (name, n, len(users[name])) for name, n in expected
    ]

    groups: dict[tuple[str, str | None], list[tuple[Any, ...]]] = defaultdict(list)
    for e in events:
        if e[5] == "error":
            code = json.loads(e[6]).get("code")
            groups[(e[2], code if isinstance(code, str) else None)].append(e)
    ranked = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0][0], kv[0][1] or ""))[:8]
    assert [(g.name, g.code, g.events, g.last_seen) for g in report.top_errors] == [
        (name, code, len(rows), max(r[1] for r in rows)) for (name, code), rows in ranked
    ]
    assert [g.users for g in report.top_errors] == [
        len({r[3] for r in rows if r[3] is not None}) for _, rows in ranked
    ]
    recent = sorted((e for e in events if e[5] == "error"), key=lambda e: (e[1], e[0]))[::-1][:8]
    assert [(r.timestamp, r.code, r.message) for r in report.recent_errors] == [
        (e[1], json.loads(e[6])["code"], json.loads(e[6])["message"]) for e in recent
    ]


def _mission_truth(rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    finished = [r for r in rows if r[3] in FINISHED]
    completed = sum(r[3] == "completed" for r in rows)
    durations = [r[4] for r in finished if r[4] is not None]
    return {
        "missions": len(rows),
        "finished": len(finished),
        "completed": completed,
        "failed": sum(r[3] == "failed" for r in rows),
        "success_rate": completed / len(finished) if finished else None,
        "p50": _percentile(durations, 50),
        "p90": _percentile(durations, 90),
        "tokens": sum(r[5] for r in rows),
        "cost": sum(r[6] for r in rows),
    }


def test_mission_figures_equal_a_recomputation(world: Path, report: Report) -> None:
    rows = [
        r
        for r in _rows(
            world,
            "SELECT created_at, backend, model, status, execution_time_ms, total_tokens, "
            "total_cost FROM missions",
        )
        if _inside(r[0])
    ]
    m = report.missions
    truth = _mission_truth(rows)
    assert m.available and m.total == truth["missions"] > 20
    assert (m.completed, m.failed) == (truth["completed"], truth["failed"])
    statuses = Counter(r[3] for r in rows)
    assert (m.cancelled, m.abandoned) == (statuses["cancelled"], statuses["abandoned"])
    assert m.active == len(rows) - truth["finished"] > 0
    assert m.success_rate == pytest.approx(truth["success_rate"])
    assert m.duration_p50_ms == pytest.approx(truth["p50"])
    assert m.duration_p90_ms == pytest.approx(truth["p90"])
    assert m.total_tokens == truth["tokens"]
    assert m.total_cost == pytest.approx(truth["cost"])
    for groups, column in ((m.by_backend, 1), (m.by_model, 2)):
        names = sorted({r[column] for r in rows})
        assert sorted(g.name for g in groups) == names
        for g in groups:
            t = _mission_truth([r for r in rows if r[column] == g.name])
            got = (g.missions, g.finished, g.completed, g.failed, g.total_tokens)
            assert got == (t["missions"], t["finished"], t["completed"], t["failed"], t["tokens"])
            assert g.success_rate == pytest.approx(t["success_rate"])
            assert (g.duration_p50_ms, g.duration_p90_ms) == pytest.approx((t["p50"], t["p90"]))
            assert g.total_cost == pytest.approx(t["cost"])
    per_day = Counter(_when(r[0]).date().isoformat() for r in rows)
    assert {d.day: d.missions for d in m.per_day if d.missions} == dict(per_day)
    for d in m.per_day:
        day_rows = [r for r in rows if r[0][:10] == d.day]
        assert d.completed == sum(r[3] == "completed" for r in day_rows)
        assert d.failed == sum(r[3] == "failed" for r in day_rows)
        assert d.completed + d.failed + d.other == d.missions


def test_mission_figures_agree_with_the_analysis_layer(world: Path, report: Report) -> None:
    """Same definitions as tachimeter.analyze.calculate_metrics (success over finished)."""
    with sqlite3.connect(world) as conn:
        metrics = calculate_metrics(conn, MissionFilter(since=SINCE, until=UNTIL))
    m = report.missions
    assert m.total == metrics.total_missions
    assert m.success_rate == pytest.approx(metrics.success_rate)
    assert m.duration_p50_ms == pytest.approx(metrics.median_execution_time_ms)
    assert m.duration_p90_ms == pytest.approx(metrics.p90_execution_time_ms)


def test_token_usage_by_model_equals_a_recount_of_the_llm_calls(
    world: Path, report: Report
) -> None:
    calls = [
        r
        for r in _rows(
            world,
            "SELECT called_at, model, input_tokens, output_tokens, cache_read_tokens, "
            "cache_creation_tokens, reasoning_tokens, cost FROM mission_llm_calls",
        )
        if _inside(r[0])
    ]
    by_model: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for c in calls:
        by_model[c[1]].append(c)
    assert {u.model for u in report.token_usage} == set(by_model)
    for u in report.token_usage:
        mine = by_model[u.model]
        assert u.calls == len(mine)
        sums = [sum(c[i] for c in mine) for i in range(2, 7)]
        assert [
            u.input_tokens,
            u.output_tokens,
            u.cache_read_tokens,
            u.cache_creation_tokens,
            u.reasoning_tokens,
        ] == sums
        assert u.total_tokens == sums[0] + sums[1]
        assert u.cost_usd == pytest.approx(sum(c[7] for c in mine if c[7] is not None))
        assert u.unpriced_calls == sum(c[7] is None for c in mine)
    assert any(u.unpriced_calls for u in report.token_usage), "the world has an unpriced model"
    costs = [u.cost_usd for u in report.token_usage]
    assert costs == sorted(costs, reverse=True)


def test_alerts_show_rule_states_and_the_firing_history_of_the_range(
    world: Path, report: Report
) -> None:
    history = _rows(world, "SELECT id, at, rule, from_state, to_state FROM alert_events")
    inside = [h for h in history if _inside(h[1])]
    states = _rows(world, "SELECT rule, state FROM alert_state")
    health = {
        r[0]: r for r in _rows(world, "SELECT rule, health, errors_total FROM alert_rule_health")
    }
    a = report.alerts
    assert a.available
    assert a.changes_in_range == len(inside)
    fired = [h for h in inside if h[4] == "firing"]
    assert a.firings_in_range == len(fired) > 0
    rules = sorted({h[2] for h in fired} | {s[0] for s in states} | set(health))
    assert [r.rule for r in a.rules] == rules
    for r in a.rules:
        assert r.fired_in_range == sum(h[2] == r.rule for h in fired)
        assert r.last_fired_at == max((h[1] for h in fired if h[2] == r.rule), default=None)
        assert r.firing_now == sum(s == (r.rule, "firing") for s in states)
        assert r.pending_now == sum(s == (r.rule, "pending") for s in states)
        assert r.health == (health[r.rule][1] if r.rule in health else "unknown")
        assert r.errors == (health[r.rule][2] if r.rule in health else 0)
    newest = sorted(inside, key=lambda h: (h[1], h[0]), reverse=True)[:50]
    assert [(c.at, c.rule, c.from_state, c.to_state) for c in a.changes] == [
        (h[1], h[2], h[3], h[4]) for h in newest
    ]


class _Structure(HTMLParser):
    """Checks that every element is closed in order (HTML void elements excepted)."""

    VOID = frozenset({"meta", "br", "img", "input", "link", "hr", "wbr", "source"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.tags: Counter[str] = Counter()
        self.titles: list[str] = []
        self._text: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        if tag not in self.VOID:
            self.stack.append(tag)
        if tag == "title":
            self._text = []

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()
        if tag == "title" and self._text is not None:
            self.titles.append("".join(self._text))
            self._text = None

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)


def test_html_is_one_well_formed_file_with_svg_charts(report: Report) -> None:
    html = render_html(report)
    parser = _Structure()
    parser.feed(html)
    parser.close()
    assert parser.problems == [] and parser.stack == []
    assert html.startswith("<!DOCTYPE html>")
    assert parser.tags["svg"] == 3  # events per day, missions per day, cost by model
    assert "prefers-color-scheme: dark" in html
    # Self-contained: no script, no stylesheet or image to fetch.
    assert parser.tags["script"] == 0 and parser.tags["link"] == 0 and parser.tags["img"] == 0
    assert "http" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    # Each bar's tooltip is its number: the events chart shows every non-empty day.
    for d in report.events_per_day:
        if d.events - d.errors:
            assert f"{d.day} events: {d.events - d.errors:,}" in parser.titles
        if d.errors:
            assert f"{d.day} errors: {d.errors:,}" in parser.titles
    for d in report.missions.per_day:
        if d.completed:
            assert f"{d.day} completed: {d.completed:,}" in parser.titles


def test_markdown_has_every_section_as_tables(report: Report) -> None:
    text = render_markdown(report)
    for heading in (
        "# Tachimeter report",
        "## Summary",
        "## Events per day",
        "## Top events",
        "## Errors",
        "## Missions",
        "## Token usage and cost by model",
        "## Alerts",
    ):
        assert f"\n{heading}\n" in f"\n{text}"
    assert f"| Events | {report.summary.events:,} |" in text
    day = report.events_per_day[0]
    assert f"| {day.day} | {day.events:,} | {day.errors:,} |" in text
    # Every table row has as many cells as its header (pipes inside cells are escaped).
    widths = [
        line.replace("\\|", "").count("|") for line in text.splitlines() if line.startswith("|")
    ]
    assert widths and all(w >= 3 for w in widths)


def test_cli_writes_each_format_and_json_holds_the_data(world: Path, tmp_path: Path) -> None:
    since, until = SINCE.isoformat(), UNTIL.isoformat()
    base = ["report", "--store", str(world), "--since", since, "--until", until, "--top", "8"]
    as_json = runner.invoke(app, [*base, "--format", "json"])
    assert as_json.exit_code == 0, as_json.output
    data = msgspec.json.decode(as_json.stdout, type=Report)
    with sqlite3.connect(world) as conn:
        direct = build_report(conn, SINCE, UNTIL, top=8, store=str(world.absolute()))
    assert msgspec.structs.replace(data, generated_at="") == msgspec.structs.replace(
        direct, generated_at=""
    )
    for name, marker in (("r.html", "<!DOCTYPE html>"), ("r.md", "# Tachimeter report")):
        done = runner.invoke(app, [*base, "--out", str(tmp_path / name)])
        assert done.exit_code == 0, done.output
        assert (tmp_path / name).read_text().startswith(marker)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html", "r.md"]  # no leftovers


def test_relative_times_and_an_empty_range(world: Path) -> None:
    done = runner.invoke(app, ["report", "--store", str(world), "--since", "2d", "-f", "json"])
    assert done.exit_code == 0, done.output
    data = json.loads(done.stdout)
    assert data["summary"]["events"] == 0 and len(data["events_per_day"]) == 3
    assert data["summary"]["error_rate"] is None and data["missions"]["success_rate"] is None
    assert (
        "No events in this range."
        in runner.invoke(app, ["report", "--store", str(world), "--since", "2d"]).stdout
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], "--since 'yesterday' is not a time"),
        (["--since", "2025-03-05", "--until", "2025-03-01"], "is before --since"),
        (["--top", "0"], "--top"),
    ],
)
def test_bad_options_print_one_error_line(world: Path, args: list[str], message: str) -> None:
    done = runner.invoke(app, ["report", "--store", str(world), *args])
    assert done.exit_code == 2
    assert message in done.stderr


def test_a_missing_store_or_another_database_is_one_error_line(world: Path, tmp_path: Path) -> None:
    missing = runner.invoke(app, ["report", "--store", str(tmp_path / "none.db")])
    assert missing.exit_code == 2
    assert missing.stderr.startswith("error: no store at")
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    foreign = runner.invoke(app, ["report", "--store", str(other)])
    assert foreign.exit_code == 2
    assert foreign.stderr.strip() == (
        "error: this database has no analytics_events table: it is not a Tachimeter store"
    )
    unwritable = runner.invoke(
        app, ["report", "--store", str(world), "--out", str(tmp_path / "no" / "r.md")]
    )
    assert unwritable.exit_code == 2
    assert unwritable.stderr.startswith(f"error: cannot write {tmp_path / 'no' / 'r.md'}")


def test_a_store_without_alert_tables_reports_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with SQLiteStore(path, migrate=False) as store:
        store.migrate(target=4)
    with sqlite3.connect(path) as conn:
        old = build_report(conn, SINCE, UNTIL)
    assert not old.alerts.available and old.missions.available
    assert "This store has no alert tables." in render_markdown(old)
    assert "This store has no alert tables." in render_html(old)


def test_days_cover_partial_first_and_last_days() -> None:
    """Every UTC day the range touches is listed, and none after an exclusive midnight."""
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE analytics_events (id, timestamp, user_id, session_id, "
                 "category, event_name, properties)")  # fmt: skip
    midnight = START + dt.timedelta(days=DAYS)
    days = build_report(conn, midnight - dt.timedelta(hours=30), midnight).events_per_day
    assert [d.day for d in days] == ["2025-03-13", "2025-03-14"]
