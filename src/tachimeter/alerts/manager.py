"""``AlertManager``: evaluates rules, moves alert states, notifies channels, keeps history.

Evaluation (:meth:`AlertManager.evaluate_rules`) runs on demand or every ``interval``
seconds (default 15) on a background thread of its own (:meth:`~AlertManager.start`,
:meth:`~AlertManager.stop` with a deadline). Conditions read through read-only
connections and history is written in one short transaction per evaluation on a
connection of its own, so ingest is never blocked. A rule that raises is put in state
``error`` (message kept, counted, recorded in history once per episode) and the other
rules are evaluated as usual.

Notifications, per alert (rule and label set):

* firing: when it starts firing, unless the previous firing notification of the same
  alert is less than ``cooldown`` old; then it is sent when the cooldown ends, if the
  alert still fires. With ``repeat_interval``, a still-firing alert is sent again.
  Alerts of budgets notify once per budget period (marks survive restarts);
* resolved: when a notified alert resolves.

Channels with a ``resend_interval`` (``AlertmanagerChannel``) get every state change at
once and every firing alert again each interval, as Prometheus sends to Alertmanager:
throttling is Alertmanager's job there.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, Protocol

import msgspec

from tachimeter.alerts.channels import Notification, NotificationChannel, ResendingChannel
from tachimeter.alerts.conditions import Budget, Observation
from tachimeter.alerts.durations import DurationLike, parse_duration
from tachimeter.alerts.history import (
    AlertEvent,
    AlertHistory,
    MemoryAlertHistory,
    SQLiteAlertHistory,
)
from tachimeter.alerts.rules import AlertRule
from tachimeter.alerts.state import (
    Alert,
    AlertState,
    AlertStatus,
    RuleHealth,
    Transition,
    fingerprint,
)
from tachimeter.errors import ConfigError, TachimeterError
from tachimeter.model.data import BusinessEventData, BusinessMetricType
from tachimeter.model.event_types import EventPriority, EventType

__all__ = ["AlertManager", "EvaluationReport", "EventTracker"]

_log = logging.getLogger("tachimeter.alerts")

DEFAULT_INTERVAL: Final = 15.0
# Notification batches queued per channel: one batch per evaluation, so 1 000 is over four
# hours of a channel being down at the default interval; older batches are dropped then.
DEFAULT_QUEUE_CAPACITY: Final = 1_000
_LOG_EVERY_SECONDS: Final = 60.0


class EventTracker(Protocol):
    """The part of a collector the manager uses to emit ``BudgetAlerted`` events."""

    def track(
        self,
        event: Any,
        properties: dict[str, Any] | None = None,
        *,
        user_id: str | None = None,
        data: Any = None,
        priority: EventPriority = ...,
    ) -> None:
        """Record an event (never raises for telemetry reasons)."""
        ...


class EvaluationReport(msgspec.Struct, frozen=True, kw_only=True):
    """What one evaluation did: rules evaluated, rule errors (name -> message), state
    changes, notifications queued, and how long it took."""

    at: dt.datetime
    rules_evaluated: int
    errors: dict[str, str]
    transitions: list[Transition]
    notifications: int
    duration_seconds: float


class _ChannelWorker:
    """A channel's delivery thread and its bounded queue of notification batches."""

    __slots__ = (
        "_busy",
        "_capacity",
        "_cond",
        "_last_log",
        "_queue",
        "_stopping",
        "_thread",
        "channel",
        "dropped",
        "failed",
        "sent",
    )

    def __init__(self, channel: NotificationChannel, capacity: int) -> None:
        self.channel = channel
        self._capacity = capacity
        self._queue: deque[list[Notification]] = deque()
        self._cond = threading.Condition()
        self._busy = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._last_log = -_LOG_EVERY_SECONDS
        self.sent = 0
        self.failed = 0
        self.dropped = 0

    def submit(self, batch: list[Notification]) -> None:
        with self._cond:
            if self._stopping:
                self.dropped += len(batch)
                return
            while len(self._queue) >= self._capacity:
                self.dropped += len(self._queue.popleft())
            self._queue.append(batch)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name=f"tachimeter-alerts-{self.channel.name}", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return
                batch = self._queue.popleft()
                self._busy = True
            try:
                self.channel.send(batch)
                outcome = True
            except Exception as exc:
                outcome = False
                now = time.monotonic()
                if now - self._last_log >= _LOG_EVERY_SECONDS:
                    self._last_log = now
                    _log.warning(
                        "alert channel %r failed to deliver %d notifications: %s",
                        self.channel.name,
                        len(batch),
                        exc,
                    )
            with self._cond:
                if outcome:
                    self.sent += len(batch)
                else:
                    self.failed += len(batch)
                self._busy = False
                self._cond.notify_all()

    def flush(self, deadline: float) -> bool:
        with self._cond:
            while self._queue or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def stop(self, deadline: float) -> bool:
        done = self.flush(deadline)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(max(0.0, deadline - time.monotonic()))
            done = done and not thread.is_alive()
        return done

    def stats(self) -> dict[str, int]:
        with self._cond:
            return {
                "sent": self.sent,
                "failed": self.failed,
                "dropped": self.dropped,
                "queued": sum(len(b) for b in self._queue),
            }


class _RuleRuntime:
    """A rule with its live alerts and its evaluation record."""

    __slots__ = (
        "alerts",
        "errors_total",
        "evaluations_total",
        "health",
        "last_duration",
        "last_error",
        "last_evaluated",
        "last_run",
        "rule",
    )

    def __init__(self, rule: AlertRule) -> None:
        self.rule = rule
        self.alerts: dict[str, Alert] = {}
        self.health = "unknown"
        self.last_error: str | None = None
        self.evaluations_total = 0
        self.errors_total = 0
        self.last_evaluated: dt.datetime | None = None
        self.last_duration: float | None = None
        self.last_run: float | None = None  # monotonic, for per-rule intervals

    def health_record(self) -> RuleHealth:
        return RuleHealth(
            rule=self.rule.name,
            health=self.health,
            last_error=self.last_error,
            evaluations_total=self.evaluations_total,
            errors_total=self.errors_total,
            last_evaluated_at=self.last_evaluated,
            last_duration_seconds=self.last_duration,
        )


class _Batch:
    """Everything one evaluation produces, written and dispatched at its end."""

    __slots__ = (
        "changed",
        "errors",
        "events",
        "forgotten",
        "health",
        "marks",
        "notify",
        "resend",
        "transitions",
    )

    def __init__(self) -> None:
        self.events: list[AlertEvent] = []
        self.transitions: list[Transition] = []
        self.changed: dict[str, Alert] = {}
        self.forgotten: list[str] = []
        self.health: list[RuleHealth] = []
        self.marks: list[tuple[str, str, str, dt.datetime, float | None]] = []
        self.errors: dict[str, str] = {}
        # channel name -> notifications
        self.notify: dict[str, list[Notification]] = {}
        self.resend: dict[str, list[Notification]] = {}


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _time(seconds: float | None) -> dt.datetime | None:
    return None if seconds is None else dt.datetime.fromtimestamp(seconds, dt.UTC)


class AlertManager:
    """Spec 023's alert manager: evaluates rules and notifies channels.

    ``store`` (a ``SQLiteStore``, a path or a ``sqlite3.Connection``) keeps history and
    state in migration 5's tables; without it (and without ``history``) they live in
    memory. ``collector`` receives ``BudgetAlerted`` events. ``clock`` returns the
    current aware UTC datetime (tests inject one). ``external_url`` is the base of the
    ``generator_url`` of notifications (a dashboard, say).

    >>> from tachimeter.alerts import AlertRule, MetricThreshold, SeriesData
    >>> queue = [SeriesData.single(120, {"queue": "events"})]
    >>> rule = AlertRule("QueueBacklog", MetricThreshold(lambda now: queue, ">", 100))
    >>> with AlertManager([rule]) as manager:
    ...     report = manager.evaluate_rules()
    ...     [(a.labels, a.state.value) for a in manager.alerts()]
    [({'queue': 'events'}, 'firing')]
    """

    def __init__(
        self,
        rules: Iterable[AlertRule] = (),
        channels: Iterable[NotificationChannel] = (),
        *,
        store: Any = None,
        history: AlertHistory | None = None,
        collector: EventTracker | None = None,
        interval: DurationLike = DEFAULT_INTERVAL,
        clock: Callable[[], dt.datetime] | None = None,
        external_url: str | None = None,
        queue_capacity: int = DEFAULT_QUEUE_CAPACITY,
    ) -> None:
        self._interval = parse_duration(interval, "AlertManager.interval", allow_zero=False)
        if not isinstance(queue_capacity, int) or queue_capacity < 1:
            raise ConfigError(
                f"AlertManager.queue_capacity must be an integer >= 1, got {queue_capacity!r}"
            )
        self._clock = clock or _utc_now
        self._collector = collector
        self._external_url = None if external_url is None else external_url.rstrip("/")
        self._workers: dict[str, _ChannelWorker] = {}
        for channel in channels:
            if not isinstance(channel, NotificationChannel):
                raise ConfigError(
                    f"AlertManager channels must have name, send() and close(), got "
                    f"{type(channel).__name__}"
                )
            if channel.name in self._workers:
                raise ConfigError(f"two alert channels are named {channel.name!r}")
            self._workers[channel.name] = _ChannelWorker(channel, queue_capacity)
        if history is not None:
            self._history: AlertHistory = history
        elif store is not None:
            self._history = SQLiteAlertHistory(store)
        else:
            self._history = MemoryAlertHistory()
        self._owns_history = history is None
        snapshot = self._history.load()
        self._marks: set[tuple[str, str]] = set(snapshot.marks)
        self._restored: dict[str, list[Alert]] = {}
        for alert in snapshot.alerts:
            self._restored.setdefault(alert.rule, []).append(alert)
        self._restored_health = snapshot.health
        self._rules: dict[str, _RuleRuntime] = {}
        self._lock = threading.RLock()  # rules, alerts and evaluation
        self._last_resend: dict[str, float] = {}
        self._evaluations = 0
        self._budget_events = 0
        self._history_errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        for rule in rules:
            self.add_rule(rule)

    # -- rules ---------------------------------------------------------------------------

    def add_rule(self, rule: AlertRule) -> None:
        """Add a rule (its name must be new); alerts it left in history are resumed."""
        if not isinstance(rule, AlertRule):
            raise ConfigError(f"add_rule takes an AlertRule, got {type(rule).__name__}")
        unknown = [c for c in rule.channels if c not in self._workers]
        if unknown:
            known = ", ".join(sorted(self._workers)) or "none configured"
            raise ConfigError(
                f"rule {rule.name!r} routes to unknown channel(s) {', '.join(unknown)}; "
                f"channels: {known}"
            )
        with self._lock:
            if rule.name in self._rules:
                raise ConfigError(f"an alert rule named {rule.name!r} exists already")
            runtime = _RuleRuntime(rule)
            for alert in self._restored.pop(rule.name, []):
                runtime.alerts[alert.fingerprint] = alert
            previous = self._restored_health.get(rule.name)
            if previous is not None:
                runtime.health = previous.health
                runtime.last_error = previous.last_error
                runtime.evaluations_total = previous.evaluations_total
                runtime.errors_total = previous.errors_total
                runtime.last_evaluated = previous.last_evaluated_at
            self._rules[rule.name] = runtime

    def remove_rule(self, name: str) -> bool:
        """Remove a rule and forget its live alerts (history stays); False if unknown."""
        with self._lock:
            runtime = self._rules.pop(name, None)
            if runtime is None:
                return False
            self._history.commit([], [], list(runtime.alerts), [], [])
            return True

    @property
    def rules(self) -> list[AlertRule]:
        """The rules, in the order they were added."""
        with self._lock:
            return [r.rule for r in self._rules.values()]

    @property
    def channels(self) -> list[NotificationChannel]:
        """The channels."""
        return [w.channel for w in self._workers.values()]

    @property
    def interval(self) -> float:
        """Seconds between background evaluations."""
        return self._interval

    # -- evaluation ----------------------------------------------------------------------

    def evaluate_rules(self, now: dt.datetime | None = None) -> EvaluationReport:
        """Evaluate every rule once, as of ``now`` (default: the clock), and notify."""
        return self._evaluate(now, due_only=False)

    def _evaluate(self, now: dt.datetime | None, *, due_only: bool) -> EvaluationReport:
        started = time.perf_counter()
        with self._lock:
            at = now if now is not None else self._clock()
            if at.tzinfo is None:
                at = at.replace(tzinfo=dt.UTC)
            t = at.timestamp()
            batch = _Batch()
            evaluated = 0
            mono = time.monotonic()
            for runtime in list(self._rules.values()):
                interval = runtime.rule.interval
                if (
                    due_only
                    and interval is not None
                    and runtime.last_run is not None
                    and mono - runtime.last_run < interval - 0.001
                ):
                    continue
                runtime.last_run = mono
                self._evaluate_rule(runtime, at, t, batch)
                evaluated += 1
            self._resend(at, t, batch)
            self._evaluations += 1
            try:
                self._history.commit(
                    batch.events,
                    list(batch.changed.values()),
                    batch.forgotten,
                    batch.health,
                    batch.marks,
                )
            except Exception as exc:
                # History is a record, not a reason to withhold notifications.
                self._history_errors += 1
                _log.warning("alert history not written: %s", exc)
            sent = self._dispatch(batch)
        return EvaluationReport(
            at=at,
            rules_evaluated=evaluated,
            errors=batch.errors,
            transitions=batch.transitions,
            notifications=sent,
            duration_seconds=time.perf_counter() - started,
        )

    def _evaluate_rule(
        self, runtime: _RuleRuntime, at: dt.datetime, t: float, batch: _Batch
    ) -> None:
        rule = runtime.rule
        began = time.perf_counter()
        runtime.evaluations_total += 1
        runtime.last_evaluated = at
        try:
            observations = _by_fingerprint(rule.name, rule.condition.evaluate(at))
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            runtime.errors_total += 1
            batch.errors[rule.name] = message
            if runtime.health != "error":
                _log.warning("alert rule %r failed: %s", rule.name, message, exc_info=exc)
                batch.events.append(
                    AlertEvent(
                        at=at,
                        rule=rule.name,
                        fingerprint=fingerprint(rule.name, {}),
                        labels={},
                        from_state=AlertState.INACTIVE,
                        to_state=AlertState.ERROR,
                        severity=rule.severity.value,
                        message=message,
                    )
                )
            runtime.health = "error"
            runtime.last_error = message
            runtime.last_duration = time.perf_counter() - began
            batch.health.append(runtime.health_record())
            return
        if runtime.health == "error":
            batch.events.append(
                AlertEvent(
                    at=at,
                    rule=rule.name,
                    fingerprint=fingerprint(rule.name, {}),
                    labels={},
                    from_state=AlertState.ERROR,
                    to_state=AlertState.INACTIVE,
                    severity=rule.severity.value,
                    message=f"evaluates again (last error: {runtime.last_error})",
                )
            )
        runtime.health = "ok"
        runtime.last_error = None
        fired: list[Alert] = []
        resolved: list[Alert] = []
        alerts = runtime.alerts
        # Sorted: state changes are recorded in the same order at every run.
        for fp in sorted(alerts.keys() | observations.keys()):
            observation = observations.get(fp)
            alert = alerts.get(fp)
            if alert is None:
                assert observation is not None
                if not observation.active:
                    continue
                alert = Alert(rule.name, observation.labels)
                alerts[fp] = alert
            before = alert.state
            after = alert.advance(observation, t, rule.for_, rule.keep_firing_for)
            if after is None:
                if observation is not None and observation.active:
                    # Its value and last-active time moved: a restart resumes from them.
                    batch.changed[fp] = alert
                continue
            batch.changed[fp] = alert
            if after is AlertState.FIRING:
                fired.append(alert)
            elif after is AlertState.RESOLVED:
                resolved.append(alert)
            self._record(rule, alert, before, after, at, batch)
        for alert in resolved:
            if alert.notified:
                self._queue(batch.notify, rule, self._notification(rule, alert, at, "resolved"))
            if alert.period is None or alert.notified:
                self._queue_resending(batch, rule, self._notification(rule, alert, at, "resolved"))
            alert.notified = False
        for alert in alerts.values():
            if alert.state is AlertState.FIRING:
                self._maybe_notify(rule, alert, at, t, batch)
        for alert in fired:
            if alert.period is None or alert.notified:
                self._queue_resending(batch, rule, self._notification(rule, alert, at, "firing"))
        for fp in [fp for fp, a in alerts.items() if a.expired(t)]:
            del alerts[fp]
            batch.changed.pop(fp, None)
            batch.forgotten.append(fp)
        runtime.last_duration = time.perf_counter() - began
        batch.health.append(runtime.health_record())

    def _record(
        self,
        rule: AlertRule,
        alert: Alert,
        before: AlertState,
        after: AlertState,
        at: dt.datetime,
        batch: _Batch,
    ) -> None:
        annotations = rule.render_annotations(
            alert.value, alert.threshold, alert.labels, alert.details, after.value
        )
        batch.transitions.append(
            Transition(
                rule=rule.name,
                fingerprint=alert.fingerprint,
                labels=dict(alert.labels),
                from_state=before,
                to_state=after,
                at=at,
                value=alert.value,
                threshold=alert.threshold,
                period=alert.period,
                details=dict(alert.details),
            )
        )
        batch.events.append(
            AlertEvent(
                at=at,
                rule=rule.name,
                fingerprint=alert.fingerprint,
                labels=dict(alert.labels),
                from_state=before,
                to_state=after,
                value=alert.value,
                threshold=alert.threshold,
                severity=rule.severity.value,
                message=annotations.get("summary"),
                annotations=annotations,
            )
        )

    def _maybe_notify(
        self, rule: AlertRule, alert: Alert, at: dt.datetime, t: float, batch: _Batch
    ) -> None:
        """Send a firing alert's notification when it is due (see the module docstring)."""
        last = alert.last_notified_at
        cooled = last is None or t - last >= rule.cooldown
        repeat = False
        if alert.period is not None:
            if (alert.fingerprint, alert.period) in self._marks or not cooled:
                return
        elif not alert.notified:
            if not cooled:
                return
        elif rule.repeat_interval is not None and last is not None:
            if t - last < rule.repeat_interval:
                return
            repeat = True
        else:
            return
        alert.notified = True
        alert.last_notified_at = t
        batch.changed[alert.fingerprint] = alert
        self._queue(batch.notify, rule, self._notification(rule, alert, at, "firing", repeat))
        for i in range(len(batch.events) - 1, -1, -1):
            event = batch.events[i]
            if event.fingerprint == alert.fingerprint and event.to_state is AlertState.FIRING:
                # This evaluation's change to firing is what the notification reports.
                batch.events[i] = msgspec.structs.replace(event, notified=True)
                break
        if alert.period is not None:
            self._marks.add((alert.fingerprint, alert.period))
            batch.marks.append((alert.fingerprint, alert.period, rule.name, at, alert.value))
            if isinstance(rule.condition, Budget):
                self._emit_budget_event(alert)

    def _emit_budget_event(self, alert: Alert) -> None:
        collector = self._collector
        if collector is None:
            return
        details = alert.details
        scope = details.get("budget_scope")
        key = details.get("scope_value")
        share = float(details.get("share", 0.0))
        try:
            # QUOTA_USED (a gauge, the share of the limit spent) rather than COST_USD or
            # TOTAL_TOKENS: those are counted as spend by projections and budgets, and an
            # alert about spend must not add to it.
            collector.track(
                EventType.BUDGET_ALERTED,
                data=BusinessEventData(
                    metric_type=BusinessMetricType.QUOTA_USED,
                    value=float(details.get("ratio", 0.0)),
                    unit="ratio",
                    model=key if scope == "model" and key else None,
                ),
                user_id=key if scope == "user" and key else None,
                priority=EventPriority.HIGH if share >= 1.0 else EventPriority.NORMAL,
            )
            self._budget_events += 1
        except Exception as exc:
            _log.warning("could not emit a BudgetAlerted event: %s", exc)

    def _notification(
        self,
        rule: AlertRule,
        alert: Alert,
        at: dt.datetime,
        status: str,
        repeat: bool = False,
    ) -> Notification:
        labels = {
            **alert.labels,
            **rule.labels,
            "alertname": rule.name,
            "severity": rule.severity.value,
        }
        starts = alert.fired_at if alert.fired_at is not None else at.timestamp()
        return Notification(
            status="resolved" if status == "resolved" else "firing",
            rule=rule.name,
            fingerprint=alert.fingerprint,
            severity=rule.severity.value,
            labels=labels,
            annotations=rule.render_annotations(
                alert.value, alert.threshold, alert.labels, alert.details, status
            ),
            value=alert.value,
            threshold=alert.threshold,
            starts_at=dt.datetime.fromtimestamp(starts, dt.UTC),
            ends_at=_time(alert.resolved_at) if status == "resolved" else None,
            at=at,
            generator_url=None
            if self._external_url is None
            else f"{self._external_url}/alerts?rule={rule.name}",
            repeat=repeat,
        )

    def _targets(self, rule: AlertRule, resending: bool) -> list[str]:
        names = rule.channels or tuple(self._workers)
        return [
            n for n in names if isinstance(self._workers[n].channel, ResendingChannel) == resending
        ]

    def _queue(
        self, into: dict[str, list[Notification]], rule: AlertRule, notification: Notification
    ) -> None:
        for name in self._targets(rule, resending=False):
            into.setdefault(name, []).append(notification)

    def _queue_resending(self, batch: _Batch, rule: AlertRule, notification: Notification) -> None:
        for name in self._targets(rule, resending=True):
            batch.notify.setdefault(name, []).append(notification)

    def _resend(self, at: dt.datetime, t: float, batch: _Batch) -> None:
        """Firing alerts again for resending channels whose interval has passed."""
        for name, worker in self._workers.items():
            channel = worker.channel
            if not isinstance(channel, ResendingChannel):
                continue
            last = self._last_resend.get(name)
            if last is not None and t - last < channel.resend_interval:
                continue
            self._last_resend[name] = t
            queued = {n.fingerprint for n in batch.notify.get(name, [])}
            for runtime in self._rules.values():
                rule = runtime.rule
                if name not in self._targets(rule, resending=True):
                    continue
                for alert in runtime.alerts.values():
                    if (
                        alert.state is AlertState.FIRING
                        and (alert.period is None or alert.notified)
                        and alert.fingerprint not in queued
                    ):
                        batch.notify.setdefault(name, []).append(
                            self._notification(rule, alert, at, "firing", repeat=True)
                        )

    def _dispatch(self, batch: _Batch) -> int:
        sent = 0
        for name, notifications in batch.notify.items():
            if notifications:
                self._workers[name].submit(notifications)
                sent += len(notifications)
        return sent

    # -- background evaluation -----------------------------------------------------------

    def start(self) -> None:
        """Evaluate now and then every ``interval`` seconds on a background thread."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._loop, name="tachimeter-alert-manager", daemon=True
            )
            self._thread.start()

    def _loop(self) -> None:
        next_run = time.monotonic()
        while not self._stop.is_set():
            try:
                self._evaluate(None, due_only=True)
            except Exception:
                _log.exception("alert evaluation failed")
            next_run += self._interval
            now = time.monotonic()
            if next_run < now:
                # An evaluation took longer than the interval: skip the missed ticks
                # rather than run them back to back.
                next_run = now + self._interval
            self._stop.wait(next_run - now)

    @property
    def running(self) -> bool:
        """Whether the background thread runs."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued notification was delivered (or failed); False on timeout."""
        deadline = time.monotonic() + timeout
        return all(w.flush(deadline) for w in list(self._workers.values()))

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop background evaluation and deliver what is queued, within ``timeout``
        seconds; True when everything finished in time."""
        deadline = time.monotonic() + timeout
        self._stop.set()
        thread = self._thread
        done = True
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
            done = not thread.is_alive()
        return self.flush(max(0.0, deadline - time.monotonic())) and done

    def close(self, timeout: float = 5.0) -> bool:
        """Stop, deliver what is queued (within ``timeout``), close channels and history."""
        deadline = time.monotonic() + timeout
        done = self.stop(timeout)
        for worker in self._workers.values():
            done = worker.stop(deadline) and done
            try:
                worker.channel.close()
            except Exception as exc:
                _log.warning("closing alert channel %r failed: %s", worker.channel.name, exc)
        if self._owns_history:
            self._history.close()
        return done

    def __enter__(self) -> AlertManager:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- reading ---------------------------------------------------------------------------

    def alerts(
        self, rule: str | None = None, *, states: Sequence[AlertState] | None = None
    ) -> list[AlertStatus]:
        """Live alerts (pending, firing, recently resolved), by rule then labels."""
        wanted = None if states is None else set(states)
        with self._lock:
            out = [
                alert.status()
                for runtime in self._rules.values()
                if rule is None or runtime.rule.name == rule
                for alert in runtime.alerts.values()
                if wanted is None or alert.state in wanted
            ]
        return sorted(out, key=lambda a: (a.rule, sorted(a.labels.items())))

    def health(self) -> list[RuleHealth]:
        """Per rule: ok, error (with the message) or unknown, and counts."""
        with self._lock:
            return [r.health_record() for r in self._rules.values()]

    def history(
        self,
        *,
        rule: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        limit: int = 100,
    ) -> list[AlertEvent]:
        """Stored state changes, newest first."""
        return self._history.events(rule=rule, since=since, until=until, limit=limit)

    def stats(self) -> dict[str, Any]:
        """Counters: evaluations, rule errors, BudgetAlerted events, failed history writes,
        and per channel notifications sent, failed, dropped and queued."""
        with self._lock:
            errors = sum(r.errors_total for r in self._rules.values())
            return {
                "evaluations": self._evaluations,
                "rule_errors": errors,
                "budget_events": self._budget_events,
                "history_errors": self._history_errors
                + int(getattr(self._history, "write_errors", 0)),
                "channels": {name: w.stats() for name, w in self._workers.items()},
            }

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        *,
        store: Any = None,
        functions: dict[str, Any] | None = None,
        collector: EventTracker | None = None,
        clock: Callable[[], dt.datetime] | None = None,
        check_metrics: bool = True,
    ) -> AlertManager:
        """A manager for the rules and channels of a TOML rule file (``docs/alerts.md``).

        ``store`` is what the rules read and where history goes; ``functions`` are the
        callables ``custom`` conditions name. With ``check_metrics``, metric names are
        checked against the store's metric catalog.
        """
        from tachimeter.alerts.loader import load_rules
        from tachimeter.alerts.sources import metric_catalog

        catalog = None
        if store is not None and check_metrics:
            try:
                catalog = metric_catalog(store)
            except (sqlite3.Error, TachimeterError) as exc:
                _log.debug("no metric catalog for rule checks: %s", exc)
        loaded = load_rules(path, source=store, functions=functions or {}, metrics=catalog)
        return cls(
            loaded.rules,
            loaded.channels,
            store=store,
            collector=collector,
            interval=loaded.interval,
            clock=clock,
            external_url=loaded.external_url,
        )

    def __repr__(self) -> str:
        return f"AlertManager({len(self._rules)} rules, {len(self._workers)} channels)"


def _by_fingerprint(rule: str, observations: Iterable[Observation]) -> dict[str, Observation]:
    """Observations by fingerprint; a condition that returns bad ones fails the rule."""
    out: dict[str, Observation] = {}
    for item in observations:
        if not isinstance(item, Observation):
            raise TypeError(f"a condition returned {type(item).__name__}, not an Observation")
        labels = item.labels
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
            raise TypeError(f"observation labels must map text to text, got {labels!r}")
        out[fingerprint(rule, labels)] = item
    return out
