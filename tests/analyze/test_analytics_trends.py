"""Trends: every measure, interval and breakdown equals a recomputation over raw rows."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

import analytics_reference as ref
import pytest
from analytics_fixtures import Seeded, at, make_event

from tachimeter.analyze import PropertyFilter, property_stats, trend
from tachimeter.errors import QueryError

UTC = dt.UTC


def expected(
    seeded_events: list[ref.Ev],
    event: str | None,
    measure: str,
    prop: list[str | int] | None,
    interval: str,
    start: dt.datetime,
    end: dt.datetime,
    filters: list[tuple[list[str | int], str, Any]] | None = None,
    breakdown: list[str | int] | None = None,
    limit: int = 10,
) -> tuple[list[dt.datetime], list[tuple[str | None, bool, list[float | None], float | None]]]:
    chosen = ref.select(seeded_events, name=event, start=start, end=end, filters=filters or [])
    buckets = ref.all_buckets(start, end, interval)
    if breakdown is None:
        groups: dict[str | None, list[ref.Ev]] = {None: chosen}
        order: list[tuple[str | None, bool, list[str | None]]] = [(None, False, [None])]
    else:
        groups = defaultdict(list)
        for e in chosen:
            groups[ref.breakdown_label(e.props, breakdown)].append(e)

        def weight(evs: list[ref.Ev]) -> int:
            if measure == "unique_users":
                return len({e.user_id for e in evs if e.user_id is not None})
            if measure == "unique_sessions":
                return len({e.session_id for e in evs if e.session_id is not None})
            if prop is not None:
                return sum(1 for e in evs if type(ref.value_at(e.props, prop)) in (int, float))
            return len(evs)

        ranked = sorted(groups, key=lambda k: (-weight(groups[k]), k is None, k or ""))
        order = [(k, False, [k]) for k in ranked[:limit]]
        if ranked[limit:]:
            order.append((None, True, ranked[limit:]))
    empty = 0.0 if measure in ("count", "unique_users", "unique_sessions", "sum") else None
    series = []
    for label, other, members in order:
        evs = [e for m in members for e in groups[m]]
        by_bucket: dict[dt.datetime, list[ref.Ev]] = defaultdict(list)
        for e in evs:
            by_bucket[ref.bucket_of(e.t, interval)].append(e)
        values = [
            ref.measure_of(by_bucket[b], measure, prop) if by_bucket.get(b) else empty
            for b in buckets
        ]
        total = ref.measure_of(evs, measure, prop) if evs else empty
        if measure not in ("count", "unique_users", "unique_sessions", "sum") and not any(
            type(ref.value_at(e.props, prop)) in (int, float)
            for e in evs  # type: ignore[arg-type]
        ):
            total = None
        series.append((label, other, values, total))
    return buckets, series


def check(result: Any, want: Any) -> None:
    buckets, series = want
    assert result.buckets == buckets
    got = [(s.breakdown, s.other, s.values, s.total) for s in result.series]
    assert len(got) == len(series)
    for (gl, go, gv, gt), (wl, wo, wv, wt) in zip(got, series, strict=True):
        assert (gl, go) == (wl, wo)
        # Buckets without a number have no statistic (None); the rest agree closely.
        assert [v is None for v in gv] == [v is None for v in wv]
        assert [v for v in gv if v is not None] == pytest.approx(
            [v for v in wv if v is not None], rel=1e-9, abs=1e-9
        )
        assert gt == pytest.approx(wt, rel=1e-9, abs=1e-9)


CASES = [
    ("mission_created", "count", None, "hour", "2024-03-04", "2024-03-11"),
    (None, "count", None, "day", "2024-02-26", "2024-03-27"),
    (None, "unique_users", None, "day", "2024-02-26", "2024-03-27"),
    ("feature_used", "unique_users", None, "week", "2024-02-26", "2024-03-27"),
    ("feature_used", "count", None, "month", "2024-02-26", "2024-03-27"),
    ("page_view", "unique_sessions", None, "day", "2024-03-01", "2024-03-15"),
    ("tool_invoked", "p90", ["duration_ms"], "day", "2024-03-01", "2024-03-08"),
    ("tool_invoked", "avg", ["duration_ms"], "week", "2024-02-26", "2024-03-27"),
    ("tool_invoked", "sum", ["duration_ms"], "hour", "2024-03-05", "2024-03-06"),
    ("tool_invoked", "min", ["duration_ms"], "day", "2024-03-01", "2024-03-04"),
    ("tool_invoked", "max", ["duration_ms"], "day", "2024-03-01", "2024-03-04"),
    ("response_latency", "p50", ["value"], "month", "2024-02-26", "2024-03-27"),
    ("response_latency", "p99", ["value"], "week", "2024-02-26", "2024-03-27"),
    ("session_started", "count", None, "minute", "2024-03-06 13:00", "2024-03-06 15:00"),
    # Every event's numeric "value" (metric events) over a range cut mid-day.
    (None, "avg", ["value"], "day", "2024-03-02 06:30", "2024-03-12 18:00"),
    (None, "p99", ["duration_ms"], "hour", "2024-03-07 22:00", "2024-03-08 03:00"),
    # Not on midnight: partial first and last buckets, answered from raw events.
    ("feature_used", "unique_users", None, "day", "2024-03-01 13:17", "2024-03-09 08:00"),
]


@pytest.mark.parametrize("use_summaries", [True, False])
@pytest.mark.parametrize(("event", "measure", "prop", "interval", "start", "end"), CASES)
def test_trend_equals_recomputation(
    seeded: Seeded,
    event: str | None,
    measure: str,
    prop: list[str] | None,
    interval: str,
    start: str,
    end: str,
    use_summaries: bool,
) -> None:
    """Each measure per bucket equals a plain recomputation, from summaries or raw events."""
    lo, hi = at(start), at(end)
    result = trend(
        seeded.conn,
        event,
        start=lo,
        end=hi,
        interval=interval,  # type: ignore[arg-type]
        measure=measure,  # type: ignore[arg-type]
        property=prop[0] if prop else None,
        use_summaries=use_summaries,
    )
    check(result, expected(seeded.events, event, measure, prop, interval, lo, hi))


def test_day_trends_of_counts_and_users_read_the_summaries(seeded: Seeded) -> None:
    """Whole-day count and unique-user trends are answered by the summary tables."""
    lo, hi = at("2024-03-01"), at("2024-03-15")
    assert trend(seeded.conn, "feature_used", start=lo, end=hi).source == "summary"
    users = trend(seeded.conn, None, start=lo, end=hi, measure="unique_users")
    assert users.source == "summary"
    assert trend(seeded.conn, "feature_used", start=lo, end=hi, use_summaries=False).source == "raw"


@pytest.mark.parametrize(
    ("event", "measure", "prop", "breakdown", "limit"),
    [
        ("feature_used", "count", None, ["feature"], 3),
        ("tool_invoked", "unique_users", None, ["gen_ai.tool.name"], 2),
        ("tool_invoked", "p50", ["duration_ms"], ["success"], 10),
        ("search_performed", "count", None, ["query"], 4),
        ("page_view", "unique_sessions", None, ["missing_key"], 5),
    ],
)
def test_breakdown_keeps_top_values_and_gathers_the_rest(
    seeded: Seeded,
    event: str,
    measure: str,
    prop: list[str] | None,
    breakdown: list[str],
    limit: int,
) -> None:
    """Top N breakdown values by events (or distinct users) get series; the rest is 'other'."""
    lo, hi = at("2024-03-01"), at("2024-03-10")
    path = f'"{breakdown[0]}"' if "." in breakdown[0] else breakdown[0]
    result = trend(
        seeded.conn,
        event,
        start=lo,
        end=hi,
        measure=measure,  # type: ignore[arg-type]
        property=prop[0] if prop else None,
        breakdown=path,
        breakdown_limit=limit,
    )
    assert result.source == "raw"
    check(
        result,
        expected(
            seeded.events, event, measure, prop, "day", lo, hi, breakdown=breakdown, limit=limit
        ),
    )


def test_filters_with_unicode_values(seeded: Seeded) -> None:
    """Property filters restrict the counted events, unicode text included."""
    lo, hi = at("2024-02-26"), at("2024-03-27")
    where = [PropertyFilter("query", "contains", "é"), PropertyFilter("result_count", "gte", 10)]
    result = trend(seeded.conn, "search_performed", start=lo, end=hi, interval="week", where=where)
    filters = [(["query"], "contains", "é"), (["result_count"], "gte", 10)]
    want = expected(seeded.events, "search_performed", "count", None, "week", lo, hi, filters)
    check(result, want)
    assert result.series[0].total > 0


def test_events_on_bucket_boundaries_belong_to_the_bucket_they_start(small_db: Any) -> None:
    """An event at exactly 00:00:00.000000 counts in the new hour, day, ISO week and month."""
    events = [
        make_event("ping", "2024-03-31 23:59:59.999999"),  # Sunday, last instant of March
        make_event("ping", "2024-04-01 00:00:00"),  # Monday, first instant of April
        make_event("ping", "2024-04-01 00:59:59.999999"),
        make_event("ping", "2024-04-01 01:00:00"),
    ]
    conn = small_db(events)
    lo, hi = at("2024-03-31 23:00"), at("2024-04-01 02:00")
    assert trend(conn, "ping", start=lo, end=hi, interval="hour").series[0].values == [1, 2, 1]
    day = trend(conn, "ping", start=at("2024-03-31"), end=at("2024-04-02"))
    assert day.series[0].values == [1, 3]
    week = trend(conn, "ping", start=at("2024-03-25"), end=at("2024-04-08"), interval="week")
    assert week.buckets == [at("2024-03-25"), at("2024-04-01")]
    assert week.series[0].values == [1, 3]
    month = trend(conn, "ping", start=at("2024-03-01"), end=at("2024-05-01"), interval="month")
    assert month.series[0].values == [1, 3]
    # end is exclusive: an event at exactly `end` is outside the range
    edge = trend(conn, "ping", start=lo, end=at("2024-04-01 00:00"), interval="hour")
    assert edge.series[0].values == [1]


def test_empty_range_and_empty_buckets(small_db: Any) -> None:
    """start == end gives no buckets; buckets without events are 0 or None, never missing."""
    conn = small_db([make_event("latency", "2024-03-05 10:00", props={"ms": 5})])
    empty = trend(conn, "latency", start=at("2024-03-05"), end=at("2024-03-05"))
    assert empty.buckets == [] and empty.series[0].values == [] and empty.series[0].total == 0
    avg = trend(
        conn, "latency", start=at("2024-03-04"), end=at("2024-03-07"), measure="avg", property="ms"
    )
    assert avg.series[0].values == [None, 5.0, None]
    counts = trend(conn, "latency", start=at("2024-03-04"), end=at("2024-03-07"))
    assert counts.series[0].values == [0.0, 1.0, 0.0]


def test_numeric_measures_skip_non_numbers(small_db: Any) -> None:
    """Text, booleans and missing values are not numbers: avg and p50 ignore them."""
    events = [
        make_event("x", "2024-03-05 10:00", props={"v": 10}),
        make_event("x", "2024-03-05 10:01", props={"v": "20"}),
        make_event("x", "2024-03-05 10:02", props={"v": True}),
        make_event("x", "2024-03-05 10:03", props={"v": 30.5}),
        make_event("x", "2024-03-05 10:04", props={}),
    ]
    conn = small_db(events)
    day = {"start": at("2024-03-05"), "end": at("2024-03-06")}
    assert trend(conn, "x", measure="avg", property="v", **day).series[0].total == 20.25
    assert trend(conn, "x", measure="sum", property="v", **day).series[0].total == 40.5
    assert trend(conn, "x", measure="p50", property="v", **day).series[0].total == 20.25


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"measure": "median"}, "measure must be one of"),
        ({"measure": "p90"}, "needs property="),
        ({"measure": "count", "property": "x"}, "only read by"),
        ({"interval": "fortnight"}, "interval must be one of"),
        ({"start": at("2024-03-02"), "end": at("2024-03-01")}, "is before start"),
        ({"interval": "minute", "end": at("2024-04-01")}, "more than 10000"),
        ({"breakdown": "a..b"}, "property path 'a..b'"),
        ({"breakdown_limit": 0}, "breakdown_limit"),
        ({"start": "2024-03-01"}, "start must be a datetime"),
    ],
)
def test_bad_arguments_say_what_to_fix(
    seeded: Seeded, kwargs: dict[str, Any], message: str
) -> None:
    """Malformed trend questions raise QueryError naming the parameter and the fix."""
    args: dict[str, Any] = {"start": at("2024-03-01"), "end": at("2024-03-02"), **kwargs}
    with pytest.raises(QueryError, match=message):
        trend(seeded.conn, "feature_used", **args)


@pytest.mark.parametrize(
    ("event", "prop", "where"),
    [
        ("tool_invoked", "duration_ms", None),
        ("response_latency", "value", None),
        ("tool_invoked", "duration_ms", [PropertyFilter("success", "eq", False)]),
        ("feature_used", "missing", None),
    ],
)
def test_property_stats_equal_recomputation(
    seeded: Seeded, event: str, prop: str, where: list[PropertyFilter] | None
) -> None:
    """Count, sum, mean, extremes and percentiles of a numeric property."""
    lo, hi = at("2024-03-04"), at("2024-03-18")
    stats = property_stats(
        seeded.conn, event, prop, start=lo, end=hi, percentiles=(50, 90, "p99", 99.9), where=where
    )
    filters = [(["success"], "eq", False)] if where else []
    chosen = ref.select(seeded.events, name=event, start=lo, end=hi, filters=filters)
    values = [float(v) for e in chosen if type(v := ref.value_at(e.props, [prop])) in (int, float)]
    assert stats.count == len(values)
    assert list(stats.percentiles) == ["p50", "p90", "p99", "p99.9"]
    if not values:
        assert stats.sum is None and set(stats.percentiles.values()) == {None}
        return
    assert stats.sum == pytest.approx(sum(values))
    assert stats.avg == pytest.approx(sum(values) / len(values))
    assert (stats.min, stats.max) == (min(values), max(values))
    for label, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)):
        assert stats.percentiles[label] == pytest.approx(ref.percentile(values, q))
