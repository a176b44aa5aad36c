"""The query engine: results equal a plain recomputation over the raw samples, at raw and
rollup resolution, and stay the same through compaction, rollups and retention."""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict

import numpy as np
import pytest
from tsdb_reference import (
    T0,
    US,
    Series,
    bucket_quantile_reference,
    exact_increase,
    instant_value,
    prometheus_rate,
    seeded_series,
    write_all,
)

from tachimeter.analyze.metrics import (
    LabelMatcher,
    MetricQuery,
    MetricsEngine,
    QueryResult,
    bucket_quantile,
)
from tachimeter.errors import QueryError
from tachimeter.store.rollups import roll_up, run_timeseries_retention
from tachimeter.store.timeseries import TimeSeriesStore

UTC = dt.UTC
HOUR = 3600 * US
START_S = T0 // US


@pytest.fixture
def seeded(tsdb: TimeSeriesStore) -> tuple[TimeSeriesStore, list[Series]]:
    series = seeded_series(seed=21, hours=6)
    write_all(tsdb, series)
    return tsdb, series


def _as_map(result: QueryResult) -> dict[tuple, dict[float, float]]:
    return {
        tuple(sorted(s.labels.items())): dict(
            zip(s.timestamps.tolist(), s.values.tolist(), strict=True)
        )
        for s in result.series
    }


def _assert_same(got: dict, want: dict, rel: float = 1e-9) -> None:
    assert set(got) == set(want)
    for key in want:
        assert set(got[key]) == set(want[key]), key
        for t, v in want[key].items():
            assert got[key][t] == pytest.approx(v, rel=rel, abs=1e-9), (key, t)


def _times(start: int, end: int, step: int) -> list[int]:
    return list(range(start, end + 1, step))


def _pick(series: list[Series], name: str) -> list[Series]:
    return [s for s in series if s.name == name]


def test_per_series_rate_and_increase_follow_prometheus(seeded: tuple) -> None:
    """rate/increase per series: counter resets and edge extrapolation, at every step."""
    tsdb, series = seeded
    engine = MetricsEngine(tsdb)
    start, end, step = T0 + HOUR, T0 + 5 * HOUR, 60 * US
    for agg, window in (("rate", 300), ("increase", 120), ("rate", 3600)):
        got = engine.query(
            MetricQuery(
                names=["http_requests_total"],
                start=start / US,
                end=end / US,
                step=60,
                aggregation=agg,
                window=window,
                resolution="raw",
            )
        )
        want: dict = {}
        for s in _pick(series, "http_requests_total"):
            points = {}
            for t in _times(start, end, step):
                v = prometheus_rate(s.ts, s.values, t, window * US, agg == "rate")
                if v is not None:
                    points[t / US] = v
            want[tuple(sorted(s.labels.items()))] = points
        _assert_same(_as_map(got), want)


def test_aggregations_by_label_equal_numpy(seeded: tuple) -> None:
    """sum/avg/min/max/count by a label over instant values (last sample within the
    5-minute lookback), and sum by label of rates."""
    tsdb, series = seeded
    engine = MetricsEngine(tsdb)
    start, end, step = T0 + 30 * 60 * US, T0 + 6 * HOUR, 300 * US
    gauges = _pick(series, "queue_depth")
    for agg in ("sum", "avg", "min", "max", "count"):
        got = engine.query(
            MetricQuery(
                names=["queue_depth"],
                start=start / US,
                end=end / US,
                step=300,
                aggregation=agg,
                group_by=["zone"],
                resolution="raw",
            )
        )
        want: dict = defaultdict(dict)
        for t in _times(start, end, step):
            groups: dict[str, list[float]] = defaultdict(list)
            for s in gauges:
                v = instant_value(s.ts, s.values, t, 300 * US)
                if v is not None:
                    groups[s.labels["zone"]].append(v)
            for zone, vals in groups.items():
                value = {"sum": np.sum, "avg": np.mean, "min": np.min, "max": np.max, "count": len}[
                    agg
                ](vals)
                want[(("zone", zone),)][t / US] = float(value)
        _assert_same(_as_map(got), dict(want))
    got = engine.query(
        MetricQuery(
            names=["http_requests_total"],
            matchers=['code="500"'],
            start=start / US,
            end=end / US,
            step=300,
            aggregation="rate",
            window=300,
            group_by=["route"],
            resolution="raw",
        )
    )
    want = defaultdict(dict)
    for t in _times(start, end, step):
        for s in _pick(series, "http_requests_total"):
            if s.labels["code"] != "500":
                continue
            v = prometheus_rate(s.ts, s.values, t, 300 * US, True)
            if v is not None:
                key = (("route", s.labels["route"]),)
                want[key][t / US] = want[key].get(t / US, 0.0) + v
    _assert_same(_as_map(got), dict(want))


def test_instant_values_per_series_keep_names(seeded: tuple) -> None:
    tsdb, series = seeded
    got = MetricsEngine(tsdb).query(
        MetricQuery(
            names=["queue_depth"],
            matchers=[LabelMatcher("queue", "=", "late")],
            start=START_S,
            end=START_S + 7200,
            step=600,
            resolution="raw",
        )
    )
    (late,) = got.series
    assert late.name == "queue_depth"
    s = next(x for x in series if x.labels.get("queue") == "late")
    want = {
        t / US: instant_value(s.ts, s.values, t, 300 * US)
        for t in _times(T0, T0 + 2 * HOUR, 600 * US)
    }
    assert late.points() == [(t, v) for t, v in want.items() if v is not None]
    assert late.timestamps[0] >= START_S + 3600  # the series starts an hour late


def test_percentiles_and_histogram_quantile_equal_numpy(seeded: tuple) -> None:
    tsdb, series = seeded
    engine = MetricsEngine(tsdb)
    start, end, step = T0 + HOUR, T0 + 5 * HOUR, 900 * US
    got = engine.query(
        MetricQuery(
            names=["tool_latency_seconds"],
            start=start / US,
            end=end / US,
            step=900,
            aggregation="percentiles",
            quantiles=[0.5, 0.99],
            group_by=["tool"],
            resolution="raw",
        )
    )
    want: dict = defaultdict(dict)
    for s in _pick(series, "tool_latency_seconds"):
        for t in _times(start, end, step):
            vals = s.values[(s.ts >= t - step) & (s.ts <= t)]
            for q in (0.5, 0.99):
                want[(("quantile", str(q)), ("tool", s.labels["tool"]))][t / US] = float(
                    np.quantile(vals, q)
                )
    _assert_same(_as_map(got), dict(want))
    got = engine.query(
        MetricQuery(
            names=["job_duration_seconds_bucket"],
            start=start / US,
            end=end / US,
            step=900,
            aggregation="histogram_quantile",
            quantiles=[0.9],
            window=300,
            resolution="raw",
        )
    )
    buckets = _pick(series, "job_duration_seconds_bucket")
    want = {(("quantile", "0.9"),): {}}
    for t in _times(start, end, step):
        rates = [prometheus_rate(s.ts, s.values, t, 300 * US, True) for s in buckets]
        bounds = [float(s.labels["le"]) for s in buckets]
        want[(("quantile", "0.9"),)][t / US] = bucket_quantile_reference(0.9, bounds, rates)
    _assert_same(_as_map(got), want)


def test_delta_counters_sum_their_increments(seeded: tuple) -> None:
    tsdb, series = seeded
    got = MetricsEngine(tsdb).query(
        MetricQuery(
            names=["tokens"],
            start=START_S + 3600,
            end=START_S + 4 * 3600,
            step=3600,
            aggregation="increase",
            window=3600,
            resolution="raw",
            group_by=[],
        )
    )
    want = {}
    for t in _times(T0 + HOUR, T0 + 4 * HOUR, HOUR):
        want[t / US] = float(
            sum(s.values[(s.ts >= t - HOUR) & (s.ts <= t)].sum() for s in _pick(series, "tokens"))
        )
    _assert_same(_as_map(got), {(): want})


def test_label_matchers_follow_promql(seeded: tuple) -> None:
    tsdb, _ = seeded
    engine = MetricsEngine(tsdb)

    def routes(*matchers: str) -> set[tuple[str, str]]:
        return {
            (s.labels["route"], s.labels["code"])
            for s in engine.series(["http_requests_total"], matchers)
        }

    assert routes('route="api"') == {("api", "200"), ("api", "500")}
    assert routes('route!="api"', 'code=~"5.."') == {("web", "500"), ("admin", "500")}
    assert routes('route=~"a.*"', 'code!~"2.."') == {("api", "500"), ("admin", "500")}
    assert routes('route=~"ap"') == set()  # anchored, as in PromQL
    assert routes('missing=""') == routes()  # an absent label matches the empty string
    assert routes('missing!=""') == set()


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"names": []}, "names"),
        ({"end": START_S - 10}, "before start"),
        ({"step": 0}, "step"),
        ({"step": 0.001}, "more than 11000 points"),
        ({"aggregation": "median"}, "aggregation must be one of"),
        ({"resolution": "yearly"}, "resolution must be one of"),
        ({"matchers": ['route="a'], "names": ["x"]}, "label matcher"),
        (
            {"matchers": [LabelMatcher("a", "=~", "(")] if False else ['a=~"("']},
            "regular expression",
        ),
        ({"quantiles": [1.5]}, "quantiles"),
        ({"group_by": "route"}, "group_by"),
        ({"start": dt.datetime(2026, 1, 1)}, "time zone"),
        ({"window": -5}, "window"),
    ],
)
def test_invalid_queries_name_the_parameter(kwargs: dict, needle: str) -> None:
    base = {"names": ["x"], "start": START_S, "end": START_S + 3600}
    with pytest.raises(QueryError, match=needle):
        MetricQuery(**{**base, **kwargs})


def test_rollup_resolution_needs_whole_periods(seeded: tuple) -> None:
    tsdb, _ = seeded
    with pytest.raises(QueryError, match="whole hourly periods"):
        MetricsEngine(tsdb).query(
            MetricQuery(
                names=["queue_depth"],
                start=START_S,
                end=START_S + 7200,
                step=600,
                resolution="hourly",
            )
        )


def _rollup_reference(
    series: list[Series],
    times: list[int],
    window: int,
    agg: str,
    group: str | None,
    until: int | None = None,
) -> dict:
    """Rollup semantics from raw samples: window [t - window, t), cut at ``until`` and
    then reported at ``until``; instant = last sample, min/max = extremes, increase =
    exact reset-aware increase, rate = increase / the window's length up to ``until``."""
    want: dict = defaultdict(dict)
    for aligned in times:
        t = aligned if until is None else min(aligned, until)
        groups: dict = defaultdict(list)
        for s in series:
            mask = (s.ts >= aligned - window) & (s.ts < t)
            if not mask.any():
                continue
            if agg in ("rate", "increase"):
                v = (
                    exact_increase(s.ts, s.values, aligned - window, t)
                    if s.kind == "counter"
                    else float(s.values[mask].sum())
                )
                if agg == "rate":
                    v /= (t - (aligned - window)) / US
            elif agg == "min":
                v = float(s.values[mask].min())
            elif agg == "max":
                v = float(s.values[mask].max())
            else:
                v = float(s.values[mask][-1])
            key = ((group, s.labels[group]),) if group else ()
            groups[key].append(v)
        for key, vals in groups.items():
            if agg in ("min",):
                want[key][t / US] = min(vals)
            elif agg == "max":
                want[key][t / US] = max(vals)
            elif agg == "avg":
                want[key][t / US] = float(np.mean(vals))
            else:
                want[key][t / US] = float(np.sum(vals))
    return dict(want)


def test_hourly_resolution_equals_a_recomputation_from_raw(seeded: tuple) -> None:
    """At hourly resolution, with part of the range rolled up and the rest computed on the
    fly from raw samples, every aggregation equals the same definition applied to raw."""
    tsdb, series = seeded
    tsdb.compact(now=dt.datetime(2026, 1, 1, 3, tzinfo=UTC))
    roll_up(tsdb.connection, now=dt.datetime(2026, 1, 1, 3, 20, tzinfo=UTC))
    engine = MetricsEngine(tsdb)
    times = _times(T0 + HOUR, T0 + 7 * HOUR, HOUR)
    for name, agg, group, window in (
        ("queue_depth", "sum", "zone", HOUR),
        ("queue_depth", "avg", None, 2 * HOUR),
        ("queue_depth", "min", "zone", HOUR),
        ("queue_depth", "max", None, HOUR),
        ("http_requests_total", "rate", "route", HOUR),
        ("http_requests_total", "increase", "code", 3 * HOUR),
        ("tokens", "increase", "model", HOUR),
    ):
        got = engine.query(
            MetricQuery(
                names=[name],
                start=START_S + 3600,
                end=START_S + 7 * 3600,
                step=3600,
                window=window / US,
                aggregation=agg,
                group_by=[group] if group else None,  # type: ignore[arg-type]
            )
        )
        assert got.resolution == "hourly"
        want = _rollup_reference(_pick(series, name), times, window, agg, group)
        if agg in ("rate", "increase") and group is None:
            want = {tuple(sorted(s.labels.items())): want.get((), {}) for s in _pick(series, name)}
        _assert_same(_as_map(got), want, rel=1e-9)
    got = engine.query(
        MetricQuery(
            names=["tool_latency_seconds"],
            start=START_S + 3600,
            end=START_S + 6 * 3600,
            step=3600,
            aggregation="percentiles",
            quantiles=[0.5, 0.99],
            group_by=["tool"],
        )
    )
    for s in got.series:
        src = next(x for x in series if x.labels.get("tool") == s.labels["tool"])
        for t, v in s.points():
            vals = src.values[(src.ts >= t * US - HOUR) & (src.ts < t * US)]
            exact = np.quantile(vals, float(s.labels["quantile"]), method="lower")
            assert abs(v - exact) <= 0.01 * exact


def test_rollup_times_end_with_the_period_holding_the_end_cut_there(seeded: tuple) -> None:
    """With ``end`` inside a period, the last evaluation is that period, read up to
    ``end`` and reported at ``end`` (it was once left out: a day's step lost today)."""
    tsdb, series = seeded
    tsdb.compact(now=dt.datetime(2026, 1, 1, 7, tzinfo=UTC))
    roll_up(tsdb.connection, now=dt.datetime(2026, 1, 1, 7, 20, tzinfo=UTC))  # all rolled up
    engine = MetricsEngine(tsdb)
    start, end = T0 + HOUR + 1_234 * US, T0 + 4 * HOUR + 1_800 * US
    aligned = _times(T0 + 2 * HOUR, T0 + 5 * HOUR, HOUR)
    for name, agg, group, window in (
        ("queue_depth", "sum", "zone", HOUR),
        ("queue_depth", "max", None, 2 * HOUR),
        ("http_requests_total", "rate", "route", HOUR),
        ("http_requests_total", "increase", "code", 2 * HOUR),
        ("tokens", "increase", "model", HOUR),
    ):
        got = engine.query(
            MetricQuery(
                names=[name],
                start=start / US,
                end=end / US,
                step=3600,
                window=window / US,
                aggregation=agg,
                group_by=[group] if group else None,  # type: ignore[arg-type]
            )
        )
        assert got.resolution == "hourly"
        want = _rollup_reference(_pick(series, name), aligned, window, agg, group, until=end)
        _assert_same(_as_map(got), want, rel=1e-9)
        assert max(t for s in got.series for t in s.timestamps.tolist()) == end / US


def test_compaction_rollups_and_retention_never_change_answers(seeded: tuple) -> None:
    """The same queries, before and after compaction, rollups and retention, inside the
    range retention keeps (an evaluation at t reads [t - window, t]): identical results at
    raw and at hourly resolution."""
    tsdb, _ = seeded
    engine = MetricsEngine(tsdb)
    raw_queries = [
        MetricQuery(
            names=["http_requests_total"],
            start=START_S + 4 * 3600 + 600,
            end=START_S + 6 * 3600,
            step=60,
            aggregation="rate",
            window=300,
            group_by=["route"],
            resolution="raw",
        ),
        MetricQuery(
            names=["queue_depth"],
            start=START_S + 4 * 3600 + 600,
            end=START_S + 6 * 3600,
            step=120,
            aggregation="max",
            group_by=["zone"],
            resolution="raw",
        ),
        MetricQuery(
            names=["tool_latency_seconds"],
            start=START_S + 4 * 3600 + 600,
            end=START_S + 6 * 3600,
            step=600,
            aggregation="percentiles",
            resolution="raw",
        ),
    ]
    hourly_queries = [
        MetricQuery(
            names=["http_requests_total"],
            start=START_S,
            end=START_S + 6 * 3600,
            step=3600,
            aggregation="increase",
            group_by=["code"],
        ),
        MetricQuery(
            names=["tool_latency_seconds"],
            start=START_S,
            end=START_S + 6 * 3600,
            step=3600,
            aggregation="percentiles",
            quantiles=[0.9],
        ),
        MetricQuery(
            names=["queue_depth"],
            start=START_S,
            end=START_S + 6 * 3600,
            step=3600,
            aggregation="sum",
        ),
    ]
    before = [_as_map(engine.query(q)) for q in raw_queries + hourly_queries]
    late_now = dt.datetime(2026, 1, 1, 6, 30, tzinfo=UTC)
    tsdb.compact(now=late_now)
    roll_up(tsdb.connection, now=late_now)
    # Raw data older than a day goes: the windows from 04:00 on stay.
    run_timeseries_retention(
        tsdb.connection, {"metrics": 1}, now=dt.datetime(2026, 1, 2, 4, 5, tzinfo=UTC)
    )
    retained = tsdb.connection.execute("SELECT min(window_start) FROM metric_chunks").fetchone()[0]
    assert retained == T0 + 4 * HOUR
    after = [_as_map(engine.query(q)) for q in raw_queries + hourly_queries]
    for a, b in zip(before, after, strict=True):
        _assert_same(b, a, rel=1e-12)


def test_bucket_quantile_edge_cases() -> None:
    assert math.isnan(bucket_quantile(0.5, [1.0, 2.0], [1.0, 2.0]))  # no +Inf bucket
    assert bucket_quantile(2, [1.0, math.inf], [1.0, 1.0]) == math.inf
    assert bucket_quantile(-1, [1.0, math.inf], [1.0, 1.0]) == -math.inf
    assert math.isnan(bucket_quantile(0.5, [1.0, math.inf], [0.0, 0.0]))
    assert bucket_quantile(0.99, [1.0, 2.0, math.inf], [1.0, 2.0, 10.0]) == 2.0
    assert bucket_quantile(0.5, [-1.0, math.inf], [5.0, 10.0]) == -1.0
    # Non-monotonic counts (from scrape skew) are fixed up like Prometheus does.
    assert bucket_quantile(0.5, [1.0, 2.0, 4.0, math.inf], [4.0, 3.0, 8.0, 8.0]) == (
        bucket_quantile_reference(0.5, [1.0, 2.0, 4.0, math.inf], [4.0, 3.0, 8.0, 8.0])
    )


def test_the_default_grid_ends_at_the_end_so_the_newest_sample_shows(
    tsdb: TimeSeriesStore,
) -> None:
    """Without a step the evaluations end at ``end``: a sample a minute old is in a 24 h
    chart (its grid, anchored at the start, once stopped up to a step before now)."""
    end = START_S + 86_400 + 1_234.5
    tsdb.write_samples("queue_depth", {}, [round((end - 60) * US)], [17.0])
    result = MetricsEngine(tsdb).query(
        MetricQuery(names=["queue_depth"], start=end - 86_400, end=end)
    )
    (series,) = result.series
    assert series.timestamps.tolist()[-1] == end
    assert series.values.tolist() == [17.0]
    assert result.step == 346.0
