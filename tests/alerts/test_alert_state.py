"""Alert states with an injected clock: pending, firing after exactly `for`, resolving,
keep_firing_for against flapping, cooldown and repeats, fingerprints, rule errors."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest
from alerting import FakeClock, Gauge, RecordingChannel

from tachimeter.alerts import (
    AlertManager,
    AlertRule,
    AlertState,
    Custom,
    MetricThreshold,
    Observation,
    SeriesData,
    SQLiteAlertHistory,
)
from tachimeter.alerts.state import RESOLVED_RETENTION_SECONDS, fingerprint
from tachimeter.store.migrator import Migrator


def _manager(
    clock: FakeClock, channel: RecordingChannel, *rules: AlertRule, **kwargs: object
) -> AlertManager:
    return AlertManager(rules, [channel], clock=clock, **kwargs)  # type: ignore[arg-type]


def _states(manager: AlertManager) -> list[str]:
    return [a.state.value for a in manager.alerts()]


def _step(manager: AlertManager, clock: FakeClock, seconds: float) -> list[tuple[str, str]]:
    clock.advance(seconds)
    report = manager.evaluate_rules()
    assert manager.flush(10)
    return [(t.from_state.value, t.to_state.value) for t in report.transitions]


def test_pending_becomes_firing_after_exactly_the_for_duration(
    clock: FakeClock, channel: RecordingChannel
) -> None:
    gauge = Gauge(150.0)
    rule = AlertRule("Backlog", MetricThreshold(gauge, ">", 100), for_="2m")
    with _manager(clock, channel, rule) as manager:
        assert _step(manager, clock, 0) == [("inactive", "pending")]
        assert channel.take() == []
        assert _step(manager, clock, 119.999) == []
        assert _states(manager) == ["pending"]
        assert _step(manager, clock, 0.001) == [("pending", "firing")]
        assert channel.take() == [("firing", "Backlog")]
        status = manager.alerts()[0]
        assert status.fired_at is not None and status.active_at is not None
        assert (status.fired_at - status.active_at).total_seconds() == pytest.approx(120.0)


def test_pending_that_stops_holding_goes_back_to_inactive_without_notifying(
    clock: FakeClock, channel: RecordingChannel
) -> None:
    gauge = Gauge(150.0)
    rule = AlertRule("Backlog", MetricThreshold(gauge, ">", 100), for_="2m")
    with _manager(clock, channel, rule) as manager:
        _step(manager, clock, 0)
        gauge.value = 50.0
        assert _step(manager, clock, 60) == [("pending", "inactive")]
        assert manager.alerts() == []
        gauge.value = 150.0
        # The `for` clock starts again from the new activation.
        assert _step(manager, clock, 60) == [("inactive", "pending")]
        assert _step(manager, clock, 60) == []
        assert _step(manager, clock, 60) == [("pending", "firing")]
        assert channel.take() == [("firing", "Backlog")]


def test_firing_resolves_when_the_condition_clears_and_is_forgotten_later(
    clock: FakeClock, channel: RecordingChannel
) -> None:
    gauge = Gauge(150.0)
    rule = AlertRule("Backlog", MetricThreshold(gauge, ">", 100))
    with _manager(clock, channel, rule) as manager:
        assert _step(manager, clock, 0) == [("inactive", "firing")]
        gauge.value = 20.0
        assert _step(manager, clock, 15) == [("firing", "resolved")]
        assert channel.take() == [("firing", "Backlog"), ("resolved", "Backlog")]
        resolved = manager.alerts()[0]
        assert resolved.state is AlertState.RESOLVED and resolved.value == 20.0
        _step(manager, clock, RESOLVED_RETENTION_SECONDS - 1)
        assert _states(manager) == ["resolved"]
        _step(manager, clock, 1)
        assert manager.alerts() == []


def test_series_that_disappears_resolves_its_alert(
    clock: FakeClock, channel: RecordingChannel
) -> None:
    gauge = Gauge(150.0)
    with _manager(clock, channel, AlertRule("Backlog", MetricThreshold(gauge, ">", 100))) as m:
        _step(m, clock, 0)
        gauge.value = None
        assert _step(m, clock, 15) == [("firing", "resolved")]


def test_keep_firing_for_holds_a_flapping_alert_in_one_firing_episode(
    clock: FakeClock, channel: RecordingChannel
) -> None:
    gauge = Gauge(150.0)
    rule = AlertRule("Flappy", MetricThreshold(gauge, ">", 100), keep_firing_for="1m", cooldown=0)
    with _manager(clock, channel, rule) as manager:
        _step(manager, clock, 0)
        for value in (50.0, 150.0, 50.0, 150.0, 50.0):  # flapping every 15 s
            gauge.value = value
            assert _step(manager, clock, 15) == []
            assert _states(manager) == ["firing"]
        assert channel.take() == [("firing", "Flappy")]
        # Cleared at t=75 s (last held at t=60 s): resolves once 60 s passed since then.
        assert _step(manager, clock, 44) == []
        assert _step(manager, clock, 1) == [("firing", "resolved")]
        assert channel.take() == [("resolved", "Flappy")]


def test_without_keep_firing_for_a_flapping_alert_fires_each_time(
    clock: FakeClock, channel: RecordingChannel
) -> None:
    gauge = Gauge(150.0)
    rule = AlertRule("Flappy", MetricThreshold(gauge, ">", 100), cooldown=0)
    with _manager(clock, channel, rule) as manager:
        _step(manager, clock, 0)
        gauge.value = 50.0
        assert _step(manager, clock, 15) == [("firing", "resolved")]
        gauge.value = 150.0
        assert _step(manager, clock, 15) == [("resolved", "firing")]
        assert [s for s, _ in channel.take()] == ["firing", "resolved", "firing"]


def test_cooldown_holds_a_refiring_notification_back_and_sends_it_when_it_ends(
    clock: FakeClock, channel: RecordingChannel
) -> None:
    gauge = Gauge(150.0)
    rule = AlertRule("Backlog", MetricThreshold(gauge, ">", 100), cooldown="5m")
    with _manager(clock, channel, rule) as manager:
        _step(manager, clock, 0)  # t=0 fires, notified
        gauge.value = 50.0
        _step(manager, clock, 60)  # t=60 resolved, notified
        gauge.value = 150.0
        assert _step(manager, clock, 60) == [("resolved", "firing")]  # t=120: in cooldown
        assert channel.take() == [("firing", "Backlog"), ("resolved", "Backlog")]
        _step(manager, clock, 179)  # t=299: still in cooldown
        assert channel.take() == []
        _step(manager, clock, 1)  # t=300: 5 minutes after the first notification
        assert channel.take() == [("firing", "Backlog")]
        _step(manager, clock, 600)  # still firing: no repeat without repeat_interval
        assert channel.take() == []


def test_an_alert_held_back_by_the_cooldown_that_resolves_is_never_sent(
    clock: FakeClock, channel: RecordingChannel
) -> None:
    gauge = Gauge(150.0)
    rule = AlertRule("Backlog", MetricThreshold(gauge, ">", 100), cooldown="5m")
    with _manager(clock, channel, rule) as manager:
        _step(manager, clock, 0)
        gauge.value = 50.0
        _step(manager, clock, 60)
        gauge.value = 150.0
        _step(manager, clock, 60)  # held back
        gauge.value = 50.0
        _step(manager, clock, 60)  # resolved before the cooldown ended
        assert channel.take() == [("firing", "Backlog"), ("resolved", "Backlog")]


def test_repeat_interval_resends_a_still_firing_alert(
    clock: FakeClock, channel: RecordingChannel
) -> None:
    gauge = Gauge(150.0)
    rule = AlertRule(
        "Backlog", MetricThreshold(gauge, ">", 100), cooldown="1m", repeat_interval="10m"
    )
    with _manager(clock, channel, rule) as manager:
        _step(manager, clock, 0)
        assert channel.take() == [("firing", "Backlog")]
        _step(manager, clock, 599)
        assert channel.take() == []
        _step(manager, clock, 1)
        assert channel.take() == [("firing", "Backlog")]


def test_alerts_are_deduplicated_by_rule_and_labels(
    clock: FakeClock, channel: RecordingChannel
) -> None:
    series = [
        SeriesData.single(150.0, {"queue": "a", "zone": "eu"}),
        SeriesData.single(150.0, {"zone": "eu", "queue": "a"}),  # same labels, other order
        SeriesData.single(150.0, {"queue": "b"}),
    ]
    rule = AlertRule("Backlog", MetricThreshold(lambda now: series, ">", 100))
    other = AlertRule("Backlog2", MetricThreshold(lambda now: series[:1], ">", 100))
    with _manager(clock, channel, rule, other) as manager:
        _step(manager, clock, 0)
        alerts = manager.alerts()
        assert [(a.rule, a.labels) for a in alerts] == [
            ("Backlog", {"queue": "a", "zone": "eu"}),
            ("Backlog", {"queue": "b"}),
            ("Backlog2", {"queue": "a", "zone": "eu"}),
        ]
        assert alerts[0].fingerprint == fingerprint("Backlog", {"zone": "eu", "queue": "a"})
        assert alerts[0].fingerprint != alerts[2].fingerprint
        _step(manager, clock, 15)
        assert len(channel.take()) == 3  # one notification each, not one per evaluation


def test_a_failing_rule_is_in_error_and_the_others_still_evaluate(
    clock: FakeClock, channel: RecordingChannel
) -> None:
    broken = {"fail": True}

    def query(now: dt.datetime) -> list[SeriesData]:
        if broken["fail"]:
            raise RuntimeError("metric store unreachable")
        return [SeriesData.single(1.0)]

    bad = AlertRule("Broken", MetricThreshold(query, ">", 100))
    good = AlertRule("Backlog", MetricThreshold(Gauge(150.0), ">", 100))
    with _manager(clock, channel, bad, good) as manager:
        report = manager.evaluate_rules()
        assert report.errors == {"Broken": "RuntimeError: metric store unreachable"}
        assert report.rules_evaluated == 2
        assert [a.rule for a in manager.alerts()] == ["Backlog"]
        manager.evaluate_rules(clock.advance(15))
        health = {h.rule: h for h in manager.health()}
        assert health["Broken"].health == "error"
        assert health["Broken"].last_error == "RuntimeError: metric store unreachable"
        assert (health["Broken"].errors_total, health["Broken"].evaluations_total) == (2, 2)
        assert health["Backlog"].health == "ok" and health["Backlog"].errors_total == 0
        broken["fail"] = False
        manager.evaluate_rules(clock.advance(15))
        assert {h.rule: h.health for h in manager.health()}["Broken"] == "ok"
        changes = [(e.from_state.value, e.to_state.value) for e in manager.history(rule="Broken")]
        # Entering error is recorded once per episode, not once per failed evaluation.
        assert changes == [("error", "inactive"), ("inactive", "error")]
        assert manager.stats()["rule_errors"] == 2


def test_a_condition_returning_bad_labels_is_a_rule_error(
    clock: FakeClock, channel: RecordingChannel
) -> None:
    rule = AlertRule(
        "BadLabels",
        Custom(lambda series: [Observation(active=True, labels={"n": 1})]),  # type: ignore[dict-item]
    )
    with _manager(clock, channel, rule) as manager:
        report = manager.evaluate_rules()
    assert "labels must map text to text" in report.errors["BadLabels"]


def test_every_state_change_is_stored_with_the_value_that_caused_it(
    clock: FakeClock, channel: RecordingChannel, tmp_path: Path
) -> None:
    gauge = Gauge(150.0, {"queue": "events"})
    rule = AlertRule(
        "Backlog",
        MetricThreshold(gauge, ">", 100),
        for_="30s",
        annotations={"summary": "{labels.queue} at {value:.0f} (> {threshold:.0f})"},
    )
    db = tmp_path / "alerts.db"
    with _manager(clock, channel, rule, store=db) as manager:
        _step(manager, clock, 0)
        gauge.value = 180.0
        _step(manager, clock, 30)
        gauge.value = 40.0
        _step(manager, clock, 30)
    conn = sqlite3.connect(db)
    rows = conn.execute(
        "SELECT at, rule, labels, from_state, to_state, value, threshold, message, notified "
        "FROM alert_events ORDER BY id"
    ).fetchall()
    conn.close()
    assert rows == [
        ("2026-03-02T09:00:00.000000Z", "Backlog", '{"queue":"events"}', "inactive", "pending",
         150.0, 100.0, "events at 150 (> 100)", 0),
        ("2026-03-02T09:00:30.000000Z", "Backlog", '{"queue":"events"}', "pending", "firing",
         180.0, 100.0, "events at 180 (> 100)", 1),
        ("2026-03-02T09:01:00.000000Z", "Backlog", '{"queue":"events"}', "firing", "resolved",
         40.0, 100.0, "events at 40 (> 100)", 0),
    ]  # fmt: skip


def test_a_restarted_manager_resumes_pending_and_firing_alerts(
    clock: FakeClock, channel: RecordingChannel, tmp_path: Path
) -> None:
    db = tmp_path / "alerts.db"
    gauge = Gauge(150.0)

    def rule() -> AlertRule:
        return AlertRule("Backlog", MetricThreshold(gauge, ">", 100), for_="2m")

    with _manager(clock, channel, rule(), store=db) as manager:
        _step(manager, clock, 0)
        _step(manager, clock, 60)
    with _manager(clock, channel, rule(), store=db) as manager:
        assert _states(manager) == ["pending"]
        # The `for` clock did not restart: firing 2 minutes after the first activation.
        assert _step(manager, clock, 60) == [("pending", "firing")]
        assert channel.take() == [("firing", "Backlog")]
    with _manager(clock, channel, rule(), store=db) as manager:
        assert _step(manager, clock, 15) == []  # still firing, already notified
        assert channel.take() == []


def test_rules_route_to_their_channels_only(clock: FakeClock) -> None:
    ops, team = RecordingChannel("ops"), RecordingChannel("team")
    to_ops = AlertRule("ToOps", MetricThreshold(Gauge(150.0), ">", 100), channels=["ops"])
    to_all = AlertRule("ToAll", MetricThreshold(Gauge(150.0), ">", 100))
    with AlertManager([to_ops, to_all], [ops, team], clock=clock) as manager:
        manager.evaluate_rules()
        assert manager.flush(10)
    assert sorted(r for _, r in ops.take()) == ["ToAll", "ToOps"]
    assert team.take() == [("firing", "ToAll")]


def test_notifications_carry_rule_and_alert_labels_and_rendered_annotations(
    clock: FakeClock, channel: RecordingChannel
) -> None:
    rule = AlertRule(
        "Backlog",
        MetricThreshold(Gauge(150.0, {"queue": "events"}), ">", 100),
        severity="critical",
        labels={"team": "agents"},
        annotations={
            "summary": "{labels.queue} queue at {value:.0f}",
            "runbook_url": "https://runbooks.example/backlog",
        },
    )
    with AlertManager(
        [rule], [channel], clock=clock, external_url="http://127.0.0.1:8000/"
    ) as manager:
        manager.evaluate_rules()
        assert manager.flush(10)
    (sent,) = channel.sent
    assert sent.labels == {
        "alertname": "Backlog",
        "severity": "critical",
        "team": "agents",
        "queue": "events",
    }
    assert sent.annotations == {
        "summary": "events queue at 150",
        "runbook_url": "https://runbooks.example/backlog",
    }
    assert sent.starts_at == clock.now and sent.ends_at is None
    assert sent.generator_url == "http://127.0.0.1:8000/alerts?rule=Backlog"


def test_sqlite_history_on_a_connection_reads_back_newest_first(clock: FakeClock) -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    Migrator(conn).up()
    history = SQLiteAlertHistory(conn)
    gauge = Gauge(150.0)
    rule = AlertRule("Backlog", MetricThreshold(gauge, ">", 100))
    with AlertManager([rule], clock=clock, history=history) as manager:
        manager.evaluate_rules()
        gauge.value = 1.0
        manager.evaluate_rules(clock.advance(60))
    events = history.events(rule="Backlog")
    assert [e.to_state for e in events] == [AlertState.RESOLVED, AlertState.FIRING]
    assert history.events(since=clock.now - dt.timedelta(seconds=30)) == events[:1]


def test_a_resolved_alert_describes_the_evaluation_that_resolved_it() -> None:
    """Value, threshold and details all come from the latest evaluation: a summary such
    as "16 of 17 events were errors" at resolve is about the window that resolved it."""
    from tachimeter.alerts.conditions import Observation
    from tachimeter.alerts.state import Alert

    alert = Alert("HighErrorRate", {})
    firing = Observation(active=True, value=0.95, threshold=0.5, details={"errors": 20, "n": 21})
    assert alert.advance(firing, now=0.0, for_=0.0, keep_firing_for=0.0) is AlertState.FIRING
    quiet = Observation(active=False, value=None, threshold=0.5, details={"errors": 16, "n": 17})
    assert alert.advance(quiet, now=60.0, for_=0.0, keep_firing_for=0.0) is AlertState.RESOLVED
    assert alert.status().details == {"errors": 16, "n": 17}
    assert alert.status().value is None
