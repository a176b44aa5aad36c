"""``tachimeter query``: each answer checked against a plain-Python recomputation over the
seeded events the store was filled with; JSON and CSV outputs parse; SQL stays read-only."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from typer.testing import CliRunner

from tachimeter.cli import app
from tachimeter.defaults import default_projections
from tachimeter.model import EventBuilder
from tachimeter.model.codec import data_to_builtins
from tachimeter.model.data import BusinessEventData, BusinessMetricType
from tachimeter.model.events import AnalyticsEvent
from tachimeter.store.sqlite import SQLiteStore

runner = CliRunner()
START = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
DAYS = 14
TOOLS = ["shell", "search", "edit_file"]
MODELS = ["gpt-4o", "claude-sonnet-4"]


@dataclass(frozen=True)
class Row:
    """One generated event as the recomputations see it."""

    id: str
    name: str
    ts: dt.datetime
    user: str
    props: dict[str, Any]


@dataclass
class World:
    db: Path
    rows: list[Row]

    def named(self, name: str) -> list[Row]:
        return [r for r in self.rows if r.name == name]


def _generate(seed: int) -> list[AnalyticsEvent]:
    """Seeded events over ``DAYS`` days: tool calls, token usage, and a sign-up funnel.

    No event falls on a midnight, so bucket and window edges never hold a sample and the
    raw and summary paths answer alike.
    """
    rng = random.Random(seed)
    events: list[AnalyticsEvent] = []

    def at(day: float) -> dt.datetime:
        seconds = int(day * 86_400)
        if seconds % 86_400 == 0:
            seconds += 1
        return START + dt.timedelta(seconds=seconds, microseconds=rng.randrange(1, 10**6))

    for _ in range(2_500):
        events.append(
            EventBuilder.track("tool_invoked")
            .user_id(f"u{rng.randrange(30)}")
            .timestamp(at(rng.uniform(0, DAYS)))
            .properties(
                {
                    "tool": rng.choice(TOOLS),
                    "duration_ms": round(rng.lognormvariate(5, 1), 1),
                    "success": rng.random() > 0.1,
                }
            )
            .build()
        )
    for _ in range(600):
        model = rng.choice(MODELS)
        data = BusinessEventData(
            metric_type=BusinessMetricType.TOTAL_TOKENS,
            value=float(rng.randrange(100, 5_000)),
            unit="tokens",
            backend="x",
            model=model,
        )
        event = AnalyticsEvent.new("tokens_consumed", data)
        events.append(
            msgspec.structs.replace(
                event, timestamp=at(rng.uniform(0, DAYS)), user_id=f"u{rng.randrange(30)}"
            )
        )
    for user in range(60):
        for _ in range(rng.randint(1, 3)):
            t = rng.uniform(0, DAYS - 1)
            steps = [("signup", t)]
            if rng.random() < 0.7:
                t += rng.uniform(0, 1.3)  # sometimes past the one-day window
                steps.append(("activate", t))
                if rng.random() < 0.6:
                    t += rng.uniform(0, 0.5)
                    steps.append(("purchase", t))
            for name, day in steps:
                events.append(
                    EventBuilder.track(name).user_id(f"f{user}").timestamp(at(day)).build()
                )
    return events


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    db = tmp_path_factory.mktemp("query") / "analytics.db"
    events = _generate(seed=11)
    with SQLiteStore(db) as store:
        for i in range(0, len(events), 1_000):
            store.write_batch(events[i : i + 1_000], projections=default_projections())
    rows = [
        Row(
            id=str(e.id),
            name=e.event_name,
            ts=e.timestamp,
            user=e.user_id or "",
            props=data_to_builtins(e.data) or {},
        )
        for e in events
    ]
    return World(db=db, rows=rows)


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("TACHIMETER_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def query(world: World, *args: str) -> Any:
    """Run ``tachimeter query ... --format json`` and return the parsed answer."""
    result = runner.invoke(app, ["query", *args, "--store", str(world.db), "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def query_csv(world: World, *args: str) -> list[dict[str, str]]:
    result = runner.invoke(app, ["query", *args, "--store", str(world.db), "--format", "csv"])
    assert result.exit_code == 0, result.output
    return list(csv.DictReader(io.StringIO(result.stdout)))


def _day(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%dT00:00:00Z")


def _days(start: dt.datetime, end: dt.datetime) -> list[str]:
    out, day = [], start.replace(hour=0, minute=0, second=0, microsecond=0)
    while day < end:
        out.append(_day(day))
        day += dt.timedelta(days=1)
    return out


# -- trends ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("since", "until"),
    [
        ("2024-03-02", "2024-03-12"),  # whole days: the daily summaries answer
        ("2024-03-02T06:30:00", "2024-03-11T18:00:00Z"),  # partial days: raw events answer
    ],
)
def test_trend_counts_per_day_match_a_recount(world: World, since: str, until: str) -> None:
    lo = dt.datetime.fromisoformat(since).replace(tzinfo=dt.UTC)
    hi = dt.datetime.fromisoformat(until.replace("Z", "")).replace(tzinfo=dt.UTC)
    expected = Counter(_day(r.ts) for r in world.named("tool_invoked") if lo <= r.ts < hi)
    answer = query(world, "trends", "--event", "tool_invoked", "--since", since, "--until", until)
    assert [(a["bucket"], a["count"]) for a in answer] == [
        (d, expected.get(d, 0)) for d in _days(lo, hi)
    ]


def test_trend_breakdown_as_csv_matches_a_recount(world: World) -> None:
    lo, hi = START, START + dt.timedelta(days=DAYS)
    expected = Counter((_day(r.ts), r.props["tool"]) for r in world.named("tool_invoked"))
    rows = query_csv(
        world,
        "trends",
        "--event",
        "tool_invoked",
        "--since",
        "2024-03-01",
        "--until",
        "2024-03-15",
        "--breakdown",
        "tool",
    )
    assert rows and set(rows[0]) == {"bucket", "tool", "count"}
    got = {(r["bucket"], r["tool"]): int(r["count"]) for r in rows}
    assert got == {(d, t): expected.get((d, t), 0) for d in _days(lo, hi) for t in TOOLS}


def test_trend_unique_users_per_week_match_a_recount(world: World) -> None:
    # 2024-03-04 is a Monday; weeks start on Monday.
    lo, hi = dt.datetime(2024, 3, 4, tzinfo=dt.UTC), dt.datetime(2024, 3, 15, tzinfo=dt.UTC)
    users: dict[str, set[str]] = defaultdict(set)
    for r in world.named("tool_invoked"):
        if lo <= r.ts < hi:
            monday = r.ts.date() - dt.timedelta(days=r.ts.weekday())
            users[f"{monday.isoformat()}T00:00:00Z"].add(r.user)
    answer = query(
        world,
        "trends",
        "--event",
        "tool_invoked",
        "--measure",
        "unique_users",
        "--interval",
        "week",
        "--since",
        "2024-03-04",
        "--until",
        "2024-03-15",
    )
    assert {a["bucket"]: a["unique_users"] for a in answer} == {
        week: len(members) for week, members in users.items()
    }


def test_trend_p90_of_a_property_matches_numpy(world: World) -> None:
    values: dict[str, list[float]] = defaultdict(list)
    for r in world.named("tool_invoked"):
        if r.props["success"] is False:
            values[_day(r.ts)].append(r.props["duration_ms"])
    answer = query(
        world,
        "trends",
        "--event",
        "tool_invoked",
        "--measure",
        "p90",
        "--property",
        "duration_ms",
        "--where",
        "success=false",
        "--since",
        "2024-03-01",
        "--until",
        "2024-03-15",
    )
    assert len(answer) == DAYS
    for a in answer:
        expected = float(np.percentile(values[a["bucket"]], 90)) if values[a["bucket"]] else None
        assert a["p90"] == pytest.approx(expected)


# -- events ------------------------------------------------------------------------------------


def test_event_count_with_filters_matches_a_recount(world: World) -> None:
    lo, hi = dt.datetime(2024, 3, 3, 12, tzinfo=dt.UTC), dt.datetime(2024, 3, 9, tzinfo=dt.UTC)
    expected = sum(
        1
        for r in world.named("tool_invoked")
        if lo <= r.ts < hi and r.props["success"] is False and r.props["duration_ms"] >= 100
    )
    answer = query(
        world,
        "events",
        "--count",
        "--event",
        "tool_invoked",
        "--since",
        "2024-03-03T12:00Z",
        "--until",
        "2024-03-09",
        "--where",
        "success=false",
        "--where",
        "duration_ms>=100",
    )
    assert answer == {"events": expected}
    assert query(world, "events", "--count") == {"events": len(world.rows)}


def test_event_listing_pages_past_one_page_in_time_order(world: World) -> None:
    rows = query_csv(
        world,
        "events",
        "--event",
        "signup",
        "--event",
        "activate",
        "--oldest-first",
        "--limit",
        "100000",
    )
    chosen = sorted(
        (r for r in world.rows if r.name in ("signup", "activate")), key=lambda r: (r.ts, r.id)
    )
    assert [r["id"] for r in rows] == [r.id for r in chosen]
    newest = query(world, "events", "--limit", "1200")
    everything = sorted(world.rows, key=lambda r: (r.ts, r.id), reverse=True)
    assert len(everything) > 1200
    assert [e["id"] for e in newest] == [r.id for r in everything[:1200]]
    first = newest[0]
    assert set(first) >= {"timestamp", "event_name", "user_id", "properties", "id"}


# -- funnels and retention ---------------------------------------------------------------------


def _funnel_truth(world: World, steps: list[str], lo: dt.datetime, hi: dt.datetime) -> list[int]:
    """Users reaching each step: per user the best entry (most steps) of the entries in the
    range, each step the first matching event after the previous one, all within a day of
    the entry."""
    window = dt.timedelta(days=1)
    by_user: dict[str, list[Row]] = defaultdict(list)
    for r in sorted(world.rows, key=lambda r: (r.ts, r.id)):
        if r.name in steps:
            by_user[r.user].append(r)
    reached = [0] * len(steps)
    for events in by_user.values():
        best = 0
        for i, entry in enumerate(events):
            if entry.name != steps[0] or not lo <= entry.ts < hi:
                continue
            got, last = 1, i
            for step in steps[1:]:
                nxt = next(
                    (j for j in range(last + 1, len(events)) if events[j].name == step), None
                )
                if nxt is None or events[nxt].ts - entry.ts > window:
                    break
                got, last = got + 1, nxt
            best = max(best, got)
        for k in range(best):
            reached[k] += 1
    return reached


def test_funnel_matches_a_recomputation(world: World) -> None:
    steps = ["signup", "activate", "purchase"]
    lo, hi = dt.datetime(2024, 3, 2, tzinfo=dt.UTC), dt.datetime(2024, 3, 12, tzinfo=dt.UTC)
    answer = query(
        world,
        "funnel",
        "--step",
        "signup",
        "--step",
        "activate",
        "--step",
        "purchase",
        "--since",
        "2024-03-02",
        "--until",
        "2024-03-12",
        "--window",
        "1d",
    )
    expected = _funnel_truth(world, steps, lo, hi)
    assert [a["entered"] for a in answer] == expected
    assert [a["event"] for a in answer] == steps
    assert answer[1]["conversion_from_previous"] == pytest.approx(expected[1] / expected[0])


def test_retention_matrix_matches_a_recomputation(world: World) -> None:
    origin = dt.date(2024, 3, 4)  # a Monday
    first: dict[str, dt.date] = {}
    for r in sorted(world.named("signup"), key=lambda r: r.ts):
        first.setdefault(r.user, r.ts.date())
    came_back: dict[tuple[int, int], set[str]] = defaultdict(set)
    cohorts: dict[str, int] = {
        user: (day - origin).days // 7
        for user, day in first.items()
        if 0 <= (day - origin).days < 14
    }
    for r in world.named("activate"):
        cohort = cohorts.get(r.user)
        offset = (r.ts.date() - origin).days // 7 - (cohort or 0)
        if cohort is not None and offset >= 1 and (r.ts.date() - origin).days < 14:
            came_back[(cohort, offset)].add(r.user)
    rows = query_csv(
        world,
        "retention",
        "--start-event",
        "signup",
        "--return-event",
        "activate",
        "--period",
        "week",
        "--periods",
        "2",
        "--since",
        "2024-03-04",
    )
    assert [r["cohort"] for r in rows] == ["2024-03-04T00:00:00Z", "2024-03-11T00:00:00Z"]
    sizes = Counter(cohorts.values())
    assert sizes[0] and sizes[1] and came_back[(0, 1)], "the seeded data must exercise this"
    assert [int(r["size"]) for r in rows] == [sizes[0], sizes[1]]
    assert int(rows[0]["period_1"]) == len(came_back[(0, 1)])
    assert rows[1]["period_1"] == ""  # outside the window: the triangle's empty corner


# -- metrics -----------------------------------------------------------------------------------


def test_metric_increase_per_day_by_model_matches_token_sums(world: World) -> None:
    answer = query(
        world,
        "metrics",
        "business_total_tokens",
        "--aggregation",
        "increase",
        "--since",
        "2024-03-03",
        "--until",
        "2024-03-10",
        "--step",
        "1d",
        "--window",
        "1d",
        "--group-by",
        "model",
    )
    got = {(a["labels"]["model"], a["time"]): a["value"] for a in answer}
    expected: dict[tuple[str, str], float] = defaultdict(float)
    for t in range(8):
        at = dt.datetime(2024, 3, 3, tzinfo=dt.UTC) + dt.timedelta(days=t)
        for r in world.named("tokens_consumed"):
            if at - dt.timedelta(days=1) <= r.ts < at:
                expected[(r.props["model"], at.strftime("%Y-%m-%dT%H:%M:%SZ"))] += r.props["value"]
    assert got == pytest.approx(dict(expected))


def test_metrics_without_a_name_list_the_series(world: World) -> None:
    answer = query(world, "metrics")
    tokens = [s for s in answer if s["name"] == "business_total_tokens"]
    assert sorted(s["labels"]["model"] for s in tokens) == sorted(MODELS)
    assert all(s["type"] == "counter" for s in tokens)


# -- sql and errors ----------------------------------------------------------------------------


def test_sql_counts_match_and_a_write_is_refused_with_one_line(world: World) -> None:
    rows = query_csv(
        world, "sql", "SELECT event_name, count(*) AS n FROM analytics_events GROUP BY 1 ORDER BY 1"
    )
    assert {r["event_name"]: int(r["n"]) for r in rows} == dict(Counter(r.name for r in world.rows))
    for statement in ("DELETE FROM analytics_events", "DROP TABLE analytics_events"):
        refused = runner.invoke(app, ["query", "sql", statement, "--store", str(world.db)])
        assert refused.exit_code == 2
        assert refused.stderr.startswith("error: custom SQL is read-only:")
        assert len(refused.stderr.strip().splitlines()) == 1
    assert query(world, "events", "--count") == {"events": len(world.rows)}


def test_bad_options_and_a_missing_store_are_one_line_errors(world: World, tmp_path: Path) -> None:
    bad_time = runner.invoke(
        app, ["query", "trends", "--since", "last tuesday", "--store", str(world.db)]
    )
    assert bad_time.exit_code == 2
    assert bad_time.stderr.startswith("error: --since 'last tuesday' is not a time")
    one_step = runner.invoke(app, ["query", "funnel", "--step", "a", "--store", str(world.db)])
    assert one_step.exit_code == 2 and "at least two --step" in one_step.stderr
    missing = runner.invoke(app, ["query", "events", "--store", str(tmp_path / "none.db")])
    assert missing.exit_code == 2 and missing.stderr.startswith("error: no store at")
    assert not (tmp_path / "none.db").exists()


def test_table_output_is_titled_and_shows_every_row(world: World) -> None:
    result = runner.invoke(
        app,
        [
            "query",
            "trends",
            "--event",
            "signup",
            "--since",
            "2024-03-01",
            "--until",
            "2024-03-04",
            "--store",
            str(world.db),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "count of signup per day (summary)" in " ".join(result.stdout.split())
    for day in ("2024-03-01", "2024-03-02", "2024-03-03"):
        assert day in result.stdout


def test_stored_text_that_looks_like_markup_prints_as_it_is(world: World) -> None:
    """Rich markup is never read from data: '[/]' used to crash, '[warning]' to vanish."""
    sql = (
        "SELECT '[/]' AS closing, '{\"message\":\"[warning] disk full\"}' AS p, "
        "'a[b]c' AS x, '[bold]' AS \"[red]h\""
    )
    result = runner.invoke(app, ["query", "sql", sql, "--store", str(world.db)])
    assert result.exit_code == 0, result.output
    for text in ("[/]", '{"message":"[warning] disk full"}', "a[b]c", "[bold]", "[red]h"):
        assert text in result.stdout


def test_piped_tables_keep_ids_and_timestamps_on_one_line(world: World) -> None:
    result = runner.invoke(app, ["query", "events", "--limit", "3", "--store", str(world.db)])
    assert result.exit_code == 0, result.output
    ids = [r.id for r in world.rows]
    shown = [i for i in ids if i in result.stdout]
    assert len(shown) == 3  # each id whole on its line, not folded into 80 columns


def test_json_output_keeps_columns_that_share_a_name(world: World) -> None:
    answer = query(world, "sql", "SELECT 1 AS a, 2 AS a, 3 AS a_2")
    assert answer == [{"a": 1, "a_3": 2, "a_2": 3}]
