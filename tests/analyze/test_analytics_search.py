"""Event search: filters, keyset pagination and property predicates against raw rows."""

from __future__ import annotations

import datetime as dt
from typing import Any

import analytics_reference as ref
import pytest
from analytics_fixtures import Seeded, at, make_event
from bench.datagen import insert_rows, row_of

from tachimeter.analyze import PropertyFilter, search_events
from tachimeter.errors import QueryError
from tachimeter.model.data import CustomData
from tachimeter.store.summaries import parse_property_path


def all_pages(conn: Any, limit: int, **kwargs: Any) -> list[str]:
    """Ids of every page of a search, following cursors; checks page sizes on the way."""
    ids: list[str] = []
    cursor = None
    while True:
        page = search_events(conn, limit=limit, cursor=cursor, **kwargs)
        assert len(page.events) <= limit
        ids += [e.id for e in page.events]
        if page.next_cursor is None:
            return ids
        assert len(page.events) == limit
        cursor = page.next_cursor


SEARCHES: list[tuple[dict[str, Any], dict[str, Any]]] = [
    (
        {
            "event": "feature_used",
            "start": at("2024-03-05"),
            "end": at("2024-03-08"),
            "where": [
                PropertyFilter("feature", "in", ["search", "chat"]),
                PropertyFilter("success", "eq", True),
            ],
        },
        {
            "names": {"feature_used"},
            "filters": [(["feature"], "in", ["search", "chat"]), (["success"], "eq", True)],
        },
    ),
    (
        {"category": "error", "start": at("2024-03-01"), "end": at("2024-03-06")},
        {"categories": {"error"}},
    ),
    (
        {"event_type": "page", "start": at("2024-03-10"), "end": at("2024-03-11 12:00")},
        {"calls": {"page"}},
    ),
    (
        {
            "event": ["tool_invoked"],
            "start": at("2024-03-01"),
            "end": at("2024-03-04"),
            "where": [
                PropertyFilter('"gen_ai.tool.name"', "eq", "grep"),
                PropertyFilter("duration_ms", "lt", 50),
            ],
        },
        {
            "names": {"tool_invoked"},
            "filters": [(["gen_ai.tool.name"], "eq", "grep"), (["duration_ms"], "lt", 50)],
        },
    ),
    (
        {
            "event": "search_performed",
            "where": [PropertyFilter("query", "contains", "東京")],
            "newest_first": False,
        },
        {"names": {"search_performed"}, "filters": [(["query"], "contains", "東京")]},
    ),
    (
        {"event": ["mission_completed", "mission_failed"], "start": at("2024-03-20")},
        {"names": {"mission_completed", "mission_failed"}},
    ),
]


def expected_ids(events: list[ref.Ev], kwargs: dict[str, Any], spec: dict[str, Any]) -> list[str]:
    chosen = []
    for e in events:
        if "names" in spec and e.event_name not in spec["names"]:
            continue
        if "categories" in spec and e.category not in spec["categories"]:
            continue
        if "calls" in spec and e.event_type not in spec["calls"]:
            continue
        if "start" in kwargs and e.t < kwargs["start"]:
            continue
        if "end" in kwargs and e.t >= kwargs["end"]:
            continue
        if "user_id" in kwargs and e.user_id != kwargs["user_id"]:
            continue
        if "session_id" in kwargs and e.session_id != kwargs["session_id"]:
            continue
        if not all(ref.matches(e.props, s, o, v) for s, o, v in spec.get("filters", [])):
            continue
        chosen.append(e)
    chosen.sort(key=lambda e: e.key, reverse=kwargs.get("newest_first", True))
    return [e.id for e in chosen]


@pytest.mark.parametrize(("kwargs", "spec"), SEARCHES)
def test_paging_through_a_search_yields_exactly_the_matching_events(
    seeded: Seeded, kwargs: dict[str, Any], spec: dict[str, Any]
) -> None:
    """All pages together are the matching events, in (timestamp, id) order, once each."""
    want = expected_ids(seeded.events, kwargs, spec)
    assert want, "the case should match some events"
    assert all_pages(seeded.conn, 97, **kwargs) == want


def test_user_and_session_filters(seeded: Seeded) -> None:
    """user_id and session_id select one user's and one session's events."""
    sample = next(e for e in seeded.events if e.session_id and e.user_id)
    for kwargs in ({"user_id": sample.user_id}, {"session_id": sample.session_id}):
        want = expected_ids(seeded.events, kwargs, {})
        assert all_pages(seeded.conn, 50, **kwargs) == want


def test_records_carry_decoded_columns(seeded: Seeded) -> None:
    """A record has parsed JSON, aware UTC times and the migration-2 columns."""
    page = search_events(seeded.conn, event="tool_invoked", limit=1)
    record = page.events[0]
    assert record.timestamp.tzinfo is not None
    assert isinstance(record.properties, dict) and "gen_ai.tool.name" in record.properties
    assert record.mission_id == record.properties["mission_id"]
    assert record.category == "usage" and record.context["category"] == "usage"
    assert record.received_at is not None and record.received_at >= record.timestamp


def test_pages_do_not_shift_when_newer_events_arrive(small_db: Any) -> None:
    """Keyset pages continue where they stopped even after new events are written."""
    events = [make_event("e", f"2024-03-05 10:00:{s:02d}") for s in range(10)]
    conn = small_db(events)
    first = search_events(conn, event="e", limit=4)
    insert_rows(conn, [row_of(make_event("e", "2024-03-05 11:00"), "2024-03-05T11:00:00.000000Z")])
    second = search_events(conn, event="e", limit=4, cursor=first.next_cursor)
    assert [e.timestamp.second for e in first.events] == [9, 8, 7, 6]
    assert [e.timestamp.second for e in second.events] == [5, 4, 3, 2]


def test_ties_on_timestamp_are_paged_by_id(small_db: Any) -> None:
    """Many events at the same microsecond page without loss or repeats."""
    events = [make_event("tie", "2024-03-05 10:00", props={"i": i}) for i in range(25)]
    conn = small_db(events)
    ids = all_pages(conn, 7, event="tie")
    assert sorted(ids, reverse=True) == ids and len(set(ids)) == 25


def test_foreign_or_garbled_cursors_are_refused(seeded: Seeded) -> None:
    """A cursor only continues the search it came from."""
    page = search_events(seeded.conn, event="feature_used", limit=5)
    with pytest.raises(QueryError, match="other filters"):
        search_events(seeded.conn, event="page_view", limit=5, cursor=page.next_cursor)
    with pytest.raises(QueryError, match="not a cursor"):
        search_events(seeded.conn, event="feature_used", cursor="not-a-cursor")


PROPS: list[Any] = [
    {"n": 1, "s": "1", "b": True, "z": None, "a": [1, "x", True], "o": {"k": "v", "l": [0, 2.5]}},
    {"n": 1.0, "s": "naïve café", "b": False, "a": [], "o": {"k": "w"}},
    {"n": 10, "s": "10", "b": 1, "a": ["naïve", 2], "o": {"l": [3]}},
    {"n": "10", "s": "Tōkyō 東京", "z": 0, "o": "flat", "gen_ai.usage.input_tokens": 1500},
    {"gen_ai": {"usage": {"input_tokens": 3}}},
    None,
    [1, 2, 3],
    {},
]

FILTERS: list[tuple[str, str, Any]] = [
    ("n", "eq", 1),
    ("n", "eq", 10),
    ("n", "ne", 1),
    ("n", "gt", 1),
    ("n", "gte", 1),
    ("n", "lt", 10),
    ("n", "lte", 1.0),
    ("s", "eq", "10"),
    ("s", "contains", "é"),
    ("s", "contains", "東京"),
    ("b", "eq", True),
    ("b", "eq", 1),
    ("b", "ne", False),
    ("z", "eq", None),
    ("z", "exists", None),
    ("z", "not_exists", None),
    ("a", "contains", 1),
    ("a", "contains", "x"),
    ("a", "contains", True),
    ("a", "contains", "naïve"),
    ("a[1]", "eq", "x"),
    ("o.k", "in", ["v", "w"]),
    ("o.k", "not_in", ["v"]),
    ("o.l[1]", "gt", 2),
    ("o.l", "contains", 3),
    ("o", "eq", "flat"),
    ('"gen_ai.usage.input_tokens"', "gte", 1000),
    ("gen_ai.usage.input_tokens", "eq", 3),
    ("s", "in", ["1", 10, None]),
    ("n", "not_in", [1, "10"]),
]


@pytest.mark.parametrize(("path", "op", "value"), FILTERS)
def test_property_filters_agree_in_sql_python_and_reference(
    small_db: Any, path: str, op: str, value: Any
) -> None:
    """SQL filters, PropertyFilter.matches (funnels) and the reference select the same rows."""
    events = [
        make_event(
            "p",
            dt.datetime(2024, 3, 5, 10, i, tzinfo=dt.UTC),
            props=CustomData(props) if isinstance(props, list) else props,
        )
        for i, props in enumerate(PROPS)
    ]
    conn = small_db(events)
    flt = PropertyFilter(path, op, value)  # type: ignore[arg-type]
    segments = list(parse_property_path(path))
    page = search_events(conn, event="p", where=[flt], limit=100, newest_first=False)
    got = [e.timestamp.minute for e in page.events]
    want = [i for i, props in enumerate(PROPS) if ref.matches(props, segments, op, value)]
    python = [i for i, props in enumerate(PROPS) if flt.matches(props)]
    assert got == want == python


@pytest.mark.parametrize(
    ("path", "op", "value", "message"),
    [
        ("", "eq", 1, "non-empty"),
        ("a..b", "eq", 1, "bad key"),
        ("a[x]", "eq", 1, "bad array index"),
        ("a b", "eq", 1, "expected '.'"),
        ('"unterminated', "eq", 1, "bad key"),
        ("n", "gt", "10", "needs a finite number"),
        ("n", "gt", True, "needs a finite number"),
        ("n", "in", [], "non-empty list"),
        ("n", "in", [[1]], "non-empty list"),
        ("n", "eq", {"a": 1}, "'in' for a list"),
        ("n", "exists", 1, "takes no value"),
        ("n", "like", 1, "unknown op"),
        ("n", "gt", float("nan"), "finite number"),
    ],
)
def test_bad_filters_name_the_path_and_the_fix(
    path: str, op: str, value: Any, message: str
) -> None:
    """Invalid paths and values raise QueryError at construction."""
    with pytest.raises(QueryError, match=message):
        PropertyFilter(path, op, value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"limit": 0}, "limit must be"),
        ({"limit": 5000}, "limit must be"),
        ({"event_type": "click"}, "event_type must be among"),
        ({"category": "sales"}, "category must be among"),
        ({"event": ""}, "event must be"),
        ({"where": ["feature = 1"]}, "must be a PropertyFilter"),
        ({"start": at("2024-03-02"), "end": "2024-03-01"}, "end must be a datetime"),
    ],
)
def test_bad_search_arguments(seeded: Seeded, kwargs: dict[str, Any], message: str) -> None:
    """Bad search arguments raise QueryError naming the parameter."""
    with pytest.raises(QueryError, match=message):
        search_events(seeded.conn, **kwargs)


def test_rows_from_other_tools_do_not_break_search(small_db: Any) -> None:
    """A row whose properties are not JSON is returned as text; filtering over it says why."""
    conn = small_db([make_event("e", "2024-03-05 10:00", props={"a": 1})])
    conn.execute(
        "INSERT INTO analytics_events (id, event_type, event_name, timestamp, properties) "
        "VALUES ('x', 'track', 'e', '2024-03-05T11:00:00.000000Z', '{not json')"
    )
    page = search_events(conn, event="e")
    assert [e.properties for e in page.events] == ["{not json", {"a": 1}]
    with pytest.raises(QueryError, match="not valid JSON"):
        search_events(conn, event="e", where=[PropertyFilter("a", "eq", 1)])
