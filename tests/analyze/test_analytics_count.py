"""``count_events``: the number of matching events, checked against a plain-Python count
over the raw rows and against paging through ``search_events``; one indexed statement."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import analytics_reference as ref
import pytest
from analytics_fixtures import at, open_readonly
from bench.datagen import create_database, generate, insert_rows

from tachimeter.analyze import PropertyFilter, count_events, search_events
from tachimeter.errors import QueryError


class World:
    """A generated store (read-only connection) and its raw rows, parsed."""

    def __init__(self, conn: sqlite3.Connection, events: list[ref.Ev]) -> None:
        self.conn = conn
        self.events = events


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """20k generated events of 300 users over 12 days from 2024-02-26."""
    data = generate(seed=23, events=20_000, users=300, days=12)
    path: Path = tmp_path_factory.mktemp("count") / "analytics.db"
    conn = create_database(path)
    insert_rows(conn, data.rows)
    conn.close()
    reader = open_readonly(path)
    yield World(reader, ref.load(data.rows))
    reader.close()


def _plain_count(events: list[ref.Ev], kwargs: dict[str, Any]) -> int:
    """The count written independently: every raw row tested against every filter."""

    def as_set(value: Any) -> set[str] | None:
        if value is None:
            return None
        return {value} if isinstance(value, str) else set(value)

    names = as_set(kwargs.get("event"))
    calls = as_set(kwargs.get("event_type"))
    categories = as_set(kwargs.get("category"))
    start, end = kwargs.get("start"), kwargs.get("end")
    where = kwargs.get("where") or []
    filters = [(f.segments, f.op, f.value) for f in where]
    total = 0
    for e in events:
        if names is not None and e.event_name not in names:
            continue
        if calls is not None and e.event_type not in calls:
            continue
        if categories is not None and e.category not in categories:
            continue
        if start is not None and e.t < start:
            continue
        if end is not None and e.t >= end:
            continue
        if "user_id" in kwargs and e.user_id != kwargs["user_id"]:
            continue
        if "session_id" in kwargs and e.session_id != kwargs["session_id"]:
            continue
        if all(ref.matches(e.props, s, o, v) for s, o, v in filters):
            total += 1
    return total


def _busiest(events: list[ref.Ev], attribute: str) -> str:
    counts: dict[str, int] = {}
    for e in events:
        value = getattr(e, attribute)
        if value is not None:
            counts[value] = counts.get(value, 0) + 1
    return max(counts, key=lambda k: (counts[k], k))


CASES: list[dict[str, Any]] = [
    {},
    {"event": "tool_invoked"},
    {"event": ["feature_used", "tool_invoked"], "start": at("2024-03-01"), "end": at("2024-03-04")},
    {"start": at("2024-02-28 06:30"), "end": at("2024-03-02 17:15:00.5")},
    {"start": at("2024-03-05")},
    {"end": at("2024-02-28")},
    {"user_id": "<busiest user>"},
    {"user_id": "<busiest user>", "start": "<user's quartile 1>", "end": "<user's quartile 3>"},
    {"session_id": "<busiest session>"},
    {"category": ["error", "performance"], "start": at("2024-03-01")},
    {"event_type": "page"},
    {"user_id": "nobody-at-all"},
    {
        "event": "feature_used",
        "where": [
            PropertyFilter("feature", "in", ["search", "chat"]),
            PropertyFilter("success", "eq", True),
        ],
    },
    {
        "event": "tool_invoked",
        "start": at("2024-02-27"),
        "end": at("2024-03-03"),
        "where": [PropertyFilter("duration_ms", "gte", 200)],
    },
    {"where": [PropertyFilter('"gen_ai.tool.name"', "ne", "grep")], "start": at("2024-03-02")},
    {"where": [PropertyFilter("mission_id", "not_exists")], "end": at("2024-03-01")},
    {
        "user_id": "<busiest user>",
        "where": [PropertyFilter("duration_ms", "lt", 500), PropertyFilter("success", "ne", False)],
    },
]


def _resolved(world: World, case: dict[str, Any]) -> dict[str, Any]:
    out = dict(case)
    if out.get("user_id") == "<busiest user>":
        out["user_id"] = _busiest(world.events, "user_id")
    if out.get("start") == "<user's quartile 1>":
        # Users are active on a few days each: the middle half of this one's events.
        times = sorted(e.t for e in world.events if e.user_id == out["user_id"])
        out["start"], out["end"] = times[len(times) // 4], times[3 * len(times) // 4]
    if out.get("session_id") == "<busiest session>":
        out["session_id"] = _busiest(world.events, "session_id")
    return out


@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
def test_count_equals_a_plain_count_over_the_raw_rows(world: World, case: dict[str, Any]) -> None:
    kwargs = _resolved(world, case)
    expected = _plain_count(world.events, kwargs)
    assert count_events(world.conn, **kwargs) == expected
    if case and "nobody" not in str(case):
        assert 0 < expected < len(world.events), "the case should select some events"


def test_count_equals_the_number_of_events_search_pages_through(world: World) -> None:
    kwargs = _resolved(world, CASES[7])
    ids: list[str] = []
    cursor = None
    while True:
        page = search_events(world.conn, limit=1000, cursor=cursor, **kwargs)
        ids += [e.id for e in page.events]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert count_events(world.conn, **kwargs) == len(ids) > 0


def test_a_count_is_one_indexed_statement(world: World) -> None:
    """A name and time range count SEARCHes an index of analytics_events, in one SELECT."""
    statements: list[str] = []
    world.conn.set_trace_callback(statements.append)
    try:
        count_events(
            world.conn,
            event="tool_invoked",
            start=at("2024-03-01"),
            end=at("2024-03-04"),
            where=[PropertyFilter("success", "eq", True)],
        )
        count_events(world.conn, user_id="user-00042", start=dt.datetime(2024, 3, 1, tzinfo=dt.UTC))
    finally:
        world.conn.set_trace_callback(None)
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 2 and all("count(*)" in s for s in selects)
    for sql in selects:
        plan = [row[3] for row in world.conn.execute("EXPLAIN QUERY PLAN " + sql)]
        assert any(line.startswith("SEARCH analytics_events USING") for line in plan), plan


def test_bad_filters_are_refused_as_search_refuses_them(world: World) -> None:
    with pytest.raises(QueryError, match="event_type must be among"):
        count_events(world.conn, event_type="click")
    with pytest.raises(QueryError, match="user_id must be text"):
        count_events(world.conn, user_id=42)  # type: ignore[arg-type]
    with pytest.raises(QueryError, match="where"):
        count_events(world.conn, where=["duration_ms > 3"])  # type: ignore[list-item]
