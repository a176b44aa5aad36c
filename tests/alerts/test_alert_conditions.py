"""Conditions over injected data: thresholds, error rates, absence, anomalies, custom
checks, and budgets that fire once per period and emit BudgetAlerted events."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from alerting import START, FakeClock, Gauge, RecordingChannel

from tachimeter.alerts import (
    Absence,
    AlertManager,
    AlertRule,
    Anomaly,
    Budget,
    Custom,
    ErrorRate,
    LastSeen,
    MetricThreshold,
    Observation,
    RatioSample,
    SeriesData,
    SpendRequest,
)
from tachimeter.analyze.anomalies import LevelShift, RobustZScore
from tachimeter.errors import ConfigError
from tachimeter.model.data import BusinessEventData, BusinessMetricType
from tachimeter.model.event_types import EventPriority
from tachimeter.testing import MemorySink, collector_for_tests


@pytest.mark.parametrize(
    ("op", "value", "holds"),
    [
        (">", 100.0, False),
        (">", 100.5, True),
        (">=", 100.0, True),
        ("<", 99.0, True),
        ("<=", 100.0, True),
        ("==", 100.0, True),
        ("!=", 100.0, False),
        ("gt", 101.0, True),
        ("le", 101.0, False),
    ],
)
def test_threshold_operators(op: str, value: float, holds: bool) -> None:
    cond = MetricThreshold(Gauge(value), op, 100)
    assert [o.active for o in cond.evaluate(START)] == [holds]


def test_threshold_reads_the_last_finite_value_of_each_series() -> None:
    series = SeriesData(labels={"a": "1"}, timestamps=(1.0, 2.0, 3.0), values=(200.0, 50.0, np.nan))
    empty = SeriesData(labels={"a": "2"})
    (obs,) = MetricThreshold(lambda now: [series, empty], ">", 100).evaluate(START)
    assert (obs.labels, obs.value, obs.active) == ({"a": "1"}, 50.0, False)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: MetricThreshold(Gauge(1.0), "=>", 1), "not a comparison operator"),
        (lambda: MetricThreshold(Gauge(1.0), ">", float("nan")), "finite number"),
        (lambda: MetricThreshold("not callable", ">", 1), "must be callable"),  # type: ignore[arg-type]
        (lambda: ErrorRate(lambda s, e: [], 5), "fraction in [0, 1]"),
        (lambda: ErrorRate(lambda s, e: [], 0.1, "5 minutes"), "is not a duration"),
        (lambda: Absence(lambda now: [], "0s"), "must be a duration > 0"),
        (lambda: Anomaly(Gauge(1.0), object()), "must be a detector"),  # type: ignore[arg-type]
        (lambda: Budget(lambda r: {}, 0), "Budget.limit must be > 0"),
        (lambda: Budget(lambda r: {}, 10, scope="team"), "Budget.scope must be one of"),
        (lambda: Budget(lambda r: {}, 10, kind="dollars"), "Budget.kind must be one of"),
        (lambda: Budget(lambda r: {}, 10, thresholds=[]), "Budget.thresholds must be a list"),
        (
            lambda: AlertRule("x", MetricThreshold(Gauge(1.0), ">", 1, for_="1m"), for_="2m"),
            "'for' is given on both",
        ),
        (lambda: AlertRule("bad name!", MetricThreshold(Gauge(1.0), ">", 1)), "must start"),
        (
            lambda: AlertRule(
                "x", MetricThreshold(Gauge(1.0), ">", 1), annotations={"summary": "{valeu}"}
            ),
            "unknown field {valeu}",
        ),
        (
            lambda: AlertRule("x", MetricThreshold(Gauge(1.0), ">", 1), labels={"severity": "x"}),
            "is set by Tachimeter",
        ),
        (
            lambda: AlertRule("x", MetricThreshold(Gauge(1.0), ">", 1), severity="urgent"),
            "not a severity",
        ),
    ],
)
def test_bad_conditions_and_rules_fail_at_construction(build: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build()  # type: ignore[operator]
    assert message in str(caught.value)


def test_error_rate_judges_only_windows_with_enough_events() -> None:
    asked: list[tuple[dt.datetime, dt.datetime]] = []

    def source(start: dt.datetime, end: dt.datetime) -> list[RatioSample]:
        asked.append((start, end))
        return [
            RatioSample(errors=3, total=40, labels={"tool": "search"}),
            RatioSample(errors=2, total=3, labels={"tool": "shell"}),
        ]

    cond = ErrorRate(source, 0.05, "10m", min_total=10)
    search, shell = cond.evaluate(START)
    assert asked == [(START - dt.timedelta(minutes=10), START)]
    assert (search.value, search.active) == (0.075, True)
    assert (shell.value, shell.active) == (None, False)
    assert search.details == {"errors": 3, "total": 40}


def test_absence_of_stale_and_of_never_seen_data() -> None:
    seen = [
        LastSeen(at=START - dt.timedelta(minutes=3), labels={"job": "fresh"}),
        LastSeen(at=START - dt.timedelta(minutes=11), labels={"job": "stale"}),
        LastSeen(at=None, labels={"job": "never"}),
    ]
    cond = Absence(lambda now: seen, "10m")
    assert [(o.labels["job"], o.active, o.value) for o in cond.evaluate(START)] == [
        ("fresh", False, 180.0),
        ("stale", True, 660.0),
        ("never", True, None),
    ]
    (nothing,) = Absence(lambda now: [], "10m", labels={"job": "agent"}).evaluate(START)
    assert (nothing.labels, nothing.active) == ({"job": "agent"}, True)


def test_anomaly_condition_fires_on_a_recent_anomaly_only() -> None:
    now = START.timestamp()
    t = now - 60.0 * np.arange(200)[::-1]
    rng = np.random.default_rng(3)
    values = 50 + rng.normal(0, 1, 200)
    values[120] += 15  # an old spike
    series = SeriesData(labels={"route": "/run"}, timestamps=tuple(t), values=tuple(values))
    cond = Anomaly(lambda at: [series], RobustZScore(), recent="5m")
    (quiet,) = cond.evaluate(START)
    assert not quiet.active
    values[-2] += 15  # a spike one minute ago
    series = SeriesData(labels={"route": "/run"}, timestamps=tuple(t), values=tuple(values))
    (loud,) = Anomaly(lambda at: [series], RobustZScore(), recent="5m").evaluate(START)
    assert loud.active and loud.details["kind"] == "spike"
    assert loud.details["at"] == t[-2]
    assert loud.details["lower"] < loud.details["expected"] < loud.details["upper"]
    assert loud.value is not None and loud.value > 5.0


def test_anomaly_condition_with_a_level_shift_detector() -> None:
    t = START.timestamp() - 60.0 * np.arange(120)[::-1]
    values = np.r_[np.full(90, 10.0), np.full(30, 20.0)] + np.random.default_rng(4).normal(
        0, 1, 120
    )
    series = SeriesData(timestamps=tuple(t), values=tuple(values))
    cond = Anomaly(lambda at: [series], LevelShift(window=10), recent="1h")
    (obs,) = cond.evaluate(START)
    assert obs.active and obs.details["kind"] == "level_shift"
    assert obs.details["at"] == pytest.approx(t[90], abs=120)


def test_custom_checks_return_a_bool_or_observations() -> None:
    series = [SeriesData.single(3.0, {"k": "a"}), SeriesData.single(9.0, {"k": "b"})]
    total = Custom(lambda s: sum(x.values[-1] for x in s) > 10, lambda now: series)
    assert [o.active for o in total.evaluate(START)] == [True]

    def each(s: list[SeriesData]) -> list[Observation]:
        return [
            Observation(active=x.values[-1] > 5, labels=x.labels, value=x.values[-1]) for x in s
        ]

    per = Custom(each, lambda now: series, name="each_over_5")
    assert [(o.labels, o.active) for o in per.evaluate(START)] == [
        ({"k": "a"}, False),
        ({"k": "b"}, True),
    ]
    assert per.describe() == "custom each_over_5"


class Spend:
    """Spend per user that tests set; records the requests."""

    def __init__(self) -> None:
        self.amounts: dict[str, float] = {}
        self.requests: list[SpendRequest] = []

    def __call__(self, request: SpendRequest) -> dict[str, float]:
        self.requests.append(request)
        return dict(self.amounts)


def _budget_events(sink: MemorySink) -> list[tuple[str | None, float, str]]:
    out = []
    for event in sink.events():
        assert event.event_name == "budget_alerted"
        data = event.data
        assert isinstance(data, BusinessEventData)
        assert data.metric_type is BusinessMetricType.QUOTA_USED and data.unit == "ratio"
        out.append((event.user_id, round(data.value, 3), event.priority.value))
    return out


def test_budget_thresholds_fire_once_per_period_and_emit_budget_alerted_events(
    tmp_path: Path,
) -> None:
    clock = FakeClock(dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC))
    channel = RecordingChannel()
    spend = Spend()
    budget = Budget(spend, 10.0, window="1d", kind="cost", scope="user")
    rule = AlertRule("DailyCost", budget, cooldown=0, annotations={"summary": "{ratio:.0%}"})
    sink = MemorySink()

    def step(seconds: float, **amounts: float) -> list[str]:
        spend.amounts = amounts
        clock.advance(seconds)
        manager.evaluate_rules()
        assert manager.flush(10) and collector.flush(timeout=10)
        sent = [f"{n.status} {n.labels['user']} {n.labels['threshold']}" for n in channel.sent]
        channel.sent.clear()
        return sent

    with collector_for_tests(sink) as collector:
        manager = AlertManager(
            [rule], [channel], clock=clock, collector=collector, store=tmp_path / "a.db"
        )
        assert step(0, u1=8.5, u2=2.0) == ["firing u1 80%"]
        assert spend.requests[-1] == SpendRequest(
            start=clock.now - dt.timedelta(days=1), end=clock.now, scope="user", kind="cost"
        )
        assert _budget_events(sink) == [("u1", 0.85, "normal")]
        # The rolling window moves: spend dips under 80 % and comes back, same day.
        assert step(3600, u1=7.0) == ["resolved u1 80%"]
        assert step(3600, u1=8.6) == []
        assert step(3600, u1=9.2) == ["firing u1 90%"]
        assert step(3600, u1=10.4) == ["firing u1 100%"]
        assert step(3600, u1=10.4) == []
        assert _budget_events(sink)[1:] == [("u1", 0.92, "normal"), ("u1", 1.04, "high")]
        manager.close()
        # A restarted manager remembers what fired this period.
        manager = AlertManager(
            [AlertRule("DailyCost", budget, cooldown=0)],
            [channel],
            clock=clock,
            collector=collector,
            store=tmp_path / "a.db",
        )
        assert step(60, u1=10.4) == []
        # Next UTC day: each threshold still crossed fires once again.
        clock.now = dt.datetime(2026, 3, 3, 0, 0, 30, tzinfo=dt.UTC)
        assert sorted(step(0, u1=10.4)) == ["firing u1 100%", "firing u1 80%", "firing u1 90%"]
        assert step(60, u1=10.4) == []
        assert len(_budget_events(sink)) == 6
        assert manager.stats()["budget_events"] == 3
        manager.close()


def test_budget_total_scope_has_only_threshold_labels() -> None:
    budget = Budget(lambda r: {"": 95_000.0}, 100_000, kind="tokens", thresholds=[0.5, 0.9])
    observations = budget.evaluate(START)
    assert [(o.labels, o.active, o.threshold) for o in observations] == [
        ({"threshold": "50%"}, True, 50_000.0),
        ({"threshold": "90%"}, True, 90_000.0),
    ]
    assert observations[0].period == "2026-03-02T00:00:00.000000Z"
    assert budget.describe() == "tokens in total over 1d >= 50%/90% of 100000"


def test_budget_events_are_high_priority_at_the_limit() -> None:
    sink = MemorySink()
    budget = Budget(lambda r: {"claude-sonnet-4": 120.0}, 100, scope="model", thresholds=[1.0])
    with collector_for_tests(sink) as collector:
        with AlertManager([AlertRule("ModelBudget", budget)], collector=collector) as manager:
            manager.evaluate_rules(START)
        assert collector.flush(timeout=10)
    (event,) = sink.events()
    assert event.priority is EventPriority.HIGH and event.user_id is None
    assert isinstance(event.data, BusinessEventData)
    assert event.data.model == "claude-sonnet-4"
