"""End to end over the real store: rules on the metric store through the query engine,
and on stored events (error rates, absence, budgets), checked against recomputations
from the raw data written."""

from __future__ import annotations

import datetime as dt
import math
import random
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from alerting import FakeClock, RecordingChannel

from tachimeter.alerts import (
    Absence,
    AlertManager,
    AlertRule,
    Anomaly,
    Budget,
    ErrorRate,
    EventErrorRatio,
    EventLastSeen,
    EventSpend,
    MetricErrorRatio,
    MetricLastSeen,
    MetricSource,
    MetricThreshold,
    SpendRequest,
    metric_catalog,
)
from tachimeter.analyze.anomalies import SeasonalBaseline
from tachimeter.model.data import BusinessEventData, BusinessMetricType
from tachimeter.model.event_types import EventType
from tachimeter.model.events import AnalyticsEvent, EventBuilder
from tachimeter.model.prices import infer_cost
from tachimeter.model.tokens import TokenUsage
from tachimeter.store.sqlite import SQLiteStore
from tachimeter.store.summaries import PropertyFilter
from tachimeter.store.timeseries import TimeSeriesStore

T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
US = 1_000_000


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    with SQLiteStore(tmp_path / "analytics.db") as s:
        yield s


def _us(at: dt.datetime) -> int:
    return int(at.timestamp()) * US


def test_threshold_rule_over_the_metric_store_and_query_engine(store: SQLiteStore) -> None:
    tsdb = TimeSeriesStore(store)
    # One latency sample per tool every 15 s for 10 minutes; "shell" turns slow at 5 min.
    times = [T0 + dt.timedelta(seconds=15 * i) for i in range(41)]
    latency = {
        "search": [0.4 + 0.01 * (i % 5) for i in range(41)],
        "shell": [0.5 if i < 20 else 3.0 + 0.1 * (i % 3) for i in range(41)],
    }
    for tool, values in latency.items():
        tsdb.write_samples("tool_latency_seconds", {"tool": tool}, [_us(t) for t in times], values)
    tsdb.close()
    source = MetricSource(store, "tool_latency_seconds")
    rule = AlertRule("SlowTool", MetricThreshold(source, ">", 2.0), for_="1m")
    clock = FakeClock(T0)
    channel = RecordingChannel()
    with AlertManager([rule], [channel], clock=clock, store=store) as manager:
        firing_at = None
        for i in range(41):
            clock.now = times[i]
            report = manager.evaluate_rules()
            for t in report.transitions:
                if t.to_state.value == "firing":
                    firing_at = (i, t.labels, t.value)
        assert manager.flush(10)
    # Independent truth: shell's last sample exceeds 2.0 from i = 20; `for` 1m = 4 steps.
    assert firing_at == (24, {"tool": "shell"}, latency["shell"][24])
    assert channel.take() == [("firing", "SlowTool")]
    assert metric_catalog(store) == frozenset({"tool_latency_seconds"})


def test_error_rate_rule_over_metric_counters(store: SQLiteStore) -> None:
    tsdb = TimeSeriesStore(store)
    rng = np.random.default_rng(11)
    times = [_us(T0 + dt.timedelta(seconds=15 * i)) for i in range(81)]
    truth: dict[str, tuple[float, float]] = {}
    # The rule's window [now - 10 min, now) at sample 80 holds samples 40..79; each adds
    # its step from the sample before: the increase is v[79] - v[39].
    for loop in ("plan", "act"):
        runs = np.cumsum(rng.integers(5, 10, 81)).astype(float)
        p = 0.02 if loop == "plan" else 0.3
        errors = np.cumsum(rng.binomial(5, p, 81)).astype(float)
        tsdb.write_samples("loop_runs_total", {"loop": loop}, times, runs, metric_type="counter")
        tsdb.write_samples(
            "loop_errors_total", {"loop": loop}, times, errors, metric_type="counter"
        )
        truth[loop] = (errors[79] - errors[39], runs[79] - runs[39])
    tsdb.close()
    ratio = MetricErrorRatio(store, "loop_errors_total", "loop_runs_total", group_by=["loop"])
    rule = AlertRule("LoopErrors", ErrorRate(ratio, 0.1, "10m"))
    with AlertManager([rule], store=store) as manager:
        report = manager.evaluate_rules(T0 + dt.timedelta(seconds=15 * 80))
        statuses = {a.labels["loop"]: a for a in manager.alerts()}
    assert report.errors == {}
    assert set(statuses) == {"act"}  # only the failing loop fires
    errors, total = truth["act"]
    assert statuses["act"].value == pytest.approx(errors / total)


def test_anomaly_rule_over_a_stored_series(store: SQLiteStore) -> None:
    tsdb = TimeSeriesStore(store)
    rng = np.random.default_rng(5)
    step = 300
    n = 4 * 288  # four days of 5-minute samples
    start = T0 - dt.timedelta(seconds=step * (n - 1))
    t = np.array([_us(start) + i * step * US for i in range(n)], dtype=np.int64)
    phase = 2 * np.pi * (t / US) / 86_400
    values = 200 + 80 * np.sin(phase) + rng.normal(0, 5, n)
    values[-1] += 70  # the latest sample spikes
    tsdb.write_samples("llm_requests_per_minute", {}, t, values)
    tsdb.close()
    source = MetricSource(store, "llm_requests_per_minute", range="4d", step="5m")
    rule = AlertRule("RequestAnomaly", Anomaly(source, SeasonalBaseline(), recent="10m"))
    with AlertManager([rule], store=store) as manager:
        report = manager.evaluate_rules(T0)
    assert report.errors == {}
    (transition,) = report.transitions
    assert transition.to_state.value == "firing"
    assert transition.details["kind"] == "spike"
    assert transition.details["observed"] == pytest.approx(values[-1])


def test_absence_of_a_metric_and_of_an_event(store: SQLiteStore) -> None:
    tsdb = TimeSeriesStore(store)
    tsdb.write_samples("worker_up", {"worker": "a"}, [_us(T0 - dt.timedelta(minutes=2))], [1.0])
    tsdb.write_samples("worker_up", {"worker": "b"}, [_us(T0 - dt.timedelta(minutes=30))], [1.0])
    tsdb.close()
    beat = EventBuilder.track("heartbeat").timestamp(T0 - dt.timedelta(minutes=12)).build()
    store.write_batch([beat])
    metric_rule = AlertRule("WorkerDown", Absence(MetricLastSeen(store, "worker_up"), "10m"))
    event_rule = AlertRule("NoHeartbeat", Absence(EventLastSeen(store, "heartbeat"), "10m"))
    never = AlertRule("NeverSeen", Absence(EventLastSeen(store, "never_sent"), "10m"))
    with AlertManager([metric_rule, event_rule, never], store=store) as manager:
        manager.evaluate_rules(T0)
        alerts = [(a.rule, a.labels, a.value) for a in manager.alerts()]
    assert alerts == [
        ("NeverSeen", {"event": "never_sent"}, None),
        ("NoHeartbeat", {"event": "heartbeat"}, 720.0),
        ("WorkerDown", {"worker": "b"}, 1800.0),
    ]


def test_error_rate_rule_over_stored_events(store: SQLiteStore) -> None:
    rng = random.Random(7)
    events: list[AnalyticsEvent] = []
    outcomes: list[tuple[dt.datetime, bool]] = []
    for i in range(600):
        at = T0 - dt.timedelta(seconds=3 * i)
        ok = rng.random() > (0.25 if i < 100 else 0.02)  # failures jump in the last 5 min
        outcomes.append((at, ok))
        events.append(
            EventBuilder.track(EventType.TOOL_INVOKED)
            .timestamp(at)
            .properties({"gen_ai.tool.name": "search", "success": ok})
            .build()
        )
        if i % 50 == 0:  # unrelated events must not count
            events.append(EventBuilder.track("feature_used").timestamp(at).build())
    store.write_batch(events)
    ratio = EventErrorRatio(
        store, events=["tool_invoked"], error_filter=PropertyFilter("success", "eq", False)
    )
    rule = AlertRule("ToolFailures", ErrorRate(ratio, 0.1, "5m", min_total=20))
    now = T0 + dt.timedelta(microseconds=1)
    with AlertManager([rule], store=store) as manager:
        manager.evaluate_rules(now)
        (status,) = manager.alerts()
    window = [ok for at, ok in outcomes if now - dt.timedelta(minutes=5) <= at < now]
    assert status.value == pytest.approx(sum(not ok for ok in window) / len(window))
    assert status.details == {"errors": sum(not ok for ok in window), "total": len(window)}


def _llm_events(rng: random.Random) -> tuple[list[AnalyticsEvent], list[dict[str, object]]]:
    """Mission-style and business-style LLM events, and the raw facts of each."""
    users = ["u1", "u2", "u3"]
    models = ["claude-sonnet-4", "gpt-4o", "no-such-model-xyz"]
    tags = [["refactor"], ["refactor", "tests"], []]
    events: list[AnalyticsEvent] = []
    facts: list[dict[str, object]] = []
    for i in range(400):
        at = T0 - dt.timedelta(minutes=rng.randrange(0, 36 * 60))
        user = rng.choice(users)
        kind = rng.random()
        if kind < 0.6:
            model = rng.choice(models)
            inp, out = rng.randrange(100, 5000), rng.randrange(10, 2000)
            cache = rng.randrange(0, inp)
            props: dict[str, object] = {
                "mission_id": f"m{i}",
                "tags": rng.choice(tags),
                "gen_ai.request.model": model,
                "gen_ai.usage.input_tokens": inp,
                "gen_ai.usage.output_tokens": out,
                "gen_ai.usage.cache_read.input_tokens": cache,
            }
            cost: float | None
            mode = rng.random()
            if mode < 0.5:
                cost = round(rng.uniform(0.001, 0.2), 6)  # the caller's cost
                props["cost_usd"] = cost
            elif mode < 0.7:
                cost = None  # priced as unknown: never counted as free
                props["cost_usd"] = None
            else:  # no cost at all: the price table prices it at the event's time
                usage = TokenUsage(input_tokens=inp, output_tokens=out, cache_read_tokens=cache)
                total = infer_cost(model, usage, at=at)
                cost = None if total is None else float(total)
            builder = EventBuilder.track(EventType.TOKENS_CONSUMED).properties(props)
            facts.append({"at": at, "user": user, "model": model, "tags": props["tags"],
                          "tokens": inp + out, "cost": cost})  # fmt: skip
        elif kind < 0.8:
            model = rng.choice(models)
            tokens = rng.randrange(100, 9000)
            data = BusinessEventData(
                metric_type=BusinessMetricType.TOTAL_TOKENS, value=tokens, unit="tokens",
                model=model,
            )  # fmt: skip
            builder = EventBuilder.track(EventType.TOKENS_CONSUMED).data(data)
            facts.append({"at": at, "user": user, "model": model, "tags": [], "tokens": tokens,
                          "cost": None})  # fmt: skip
        else:
            model = rng.choice(models)
            usd = round(rng.uniform(0.01, 0.5), 4)
            data = BusinessEventData(
                metric_type=BusinessMetricType.COST_USD, value=usd, unit="usd", model=model
            )
            builder = EventBuilder.track(EventType.COST_INCURRED).data(data)
            facts.append({"at": at, "user": user, "model": model, "tags": [], "tokens": 0,
                          "cost": usd})  # fmt: skip
        events.append(builder.timestamp(at).user_id(user).build())
    return events, facts


@pytest.mark.parametrize("kind", ["tokens", "cost"])
@pytest.mark.parametrize("scope", ["total", "user", "model", "tag"])
def test_event_spend_equals_a_recomputation_from_the_events(
    store: SQLiteStore, kind: str, scope: str
) -> None:
    events, facts = _llm_events(random.Random(23))
    store.write_batch(events)
    start, end = T0 - dt.timedelta(hours=24), T0 + dt.timedelta(seconds=1)
    got = EventSpend(store)(SpendRequest(start=start, end=end, scope=scope, kind=kind))  # type: ignore[arg-type]
    want: dict[str, float] = defaultdict(float)
    for f in facts:
        at = f["at"]
        assert isinstance(at, dt.datetime)
        if not start <= at < end:
            continue
        amount = f[kind]
        if amount is None or amount == 0:
            continue
        if scope == "total":
            keys = [""]
        elif scope == "user":
            keys = [f["user"]]
        elif scope == "model":
            keys = [f["model"]]
        else:
            keys = sorted(set(f["tags"]))  # type: ignore[arg-type]
        for key in keys:
            want[str(key)] += float(amount)  # type: ignore[arg-type]
    assert got.keys() == want.keys()
    for key in want:
        assert math.isclose(got[key], want[key], rel_tol=1e-9), key


def test_budget_rule_over_stored_events_fires_per_user(store: SQLiteStore) -> None:
    events, facts = _llm_events(random.Random(23))
    store.write_batch(events)
    now = T0 + dt.timedelta(seconds=1)
    per_user: dict[str, float] = defaultdict(float)
    for f in facts:
        at = f["at"]
        assert isinstance(at, dt.datetime)
        if now - dt.timedelta(days=1) <= at < now and f["cost"] is not None:
            per_user[str(f["user"])] += float(f["cost"])  # type: ignore[arg-type]
    limit = sorted(per_user.values())[1] / 0.95  # the second user sits at 95 % of it
    budget = Budget(EventSpend(store), limit, window="1d", scope="user", thresholds=[0.9, 1.0])
    with AlertManager([AlertRule("DailyCost", budget)], store=store) as manager:
        manager.evaluate_rules(now)
        fired = sorted((a.labels["user"], a.labels["threshold"]) for a in manager.alerts())
    want = sorted(
        (user, label)
        for user, spent in per_user.items()
        for share, label in ((0.9, "90%"), (1.0, "100%"))
        if spent >= share * limit
    )
    assert want and fired == want
