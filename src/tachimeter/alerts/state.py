"""Alert states per rule and label set, and how an evaluation moves them.

::

                 condition holds                 held for `for`
    inactive ------------------------> pending ----------------> firing
       ^   \\___ (`for` = 0: straight to firing) _______________/  |   ^
       |        condition stops                                    |   | holds again
       +------------------------------ pending                     |   |
       |                                        stopped for longer |   |
       +--- 15 minutes later (forgotten) --- resolved <------------+   |
                                                |  than keep_firing_for |
                                                +-----------------------+

An alert is identified by its *fingerprint*: the rule's name and the observation's
labels, hashed. ``firing`` starts exactly when the condition has held for ``for``
(``now - active_at >= for`` at an evaluation); ``keep_firing_for`` keeps a firing alert
firing that long after the condition last held, so a flapping condition gives one alert.
A rule whose evaluation raised is in ``error`` (its alerts keep their states).
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from tachimeter.alerts.conditions import Observation

__all__ = [
    "RESOLVED_RETENTION_SECONDS",
    "Alert",
    "AlertState",
    "AlertStatus",
    "RuleHealth",
    "Transition",
    "fingerprint",
]

# Prometheus keeps resolved alerts for 15 minutes so that receivers polling its API see
# the resolution; the same here, then the alert is forgotten (its history stays).
RESOLVED_RETENTION_SECONDS: Final = 900.0

_labels_encoder = msgspec.json.Encoder(order="sorted")


class AlertState(enum.Enum):
    """State of one alert (rule and label set), or ``error`` for a rule that failed."""

    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"
    ERROR = "error"


def fingerprint(rule: str, labels: Mapping[str, str]) -> str:
    """16 hex digits identifying an alert: the rule's name and its labels, order-free.

    >>> fingerprint("HighErrorRate", {"b": "2", "a": "1"}) == fingerprint(
    ...     "HighErrorRate", {"a": "1", "b": "2"})
    True
    """
    digest = hashlib.sha256(rule.encode() + b"\0" + _labels_encoder.encode(dict(labels)))
    return digest.hexdigest()[:16]


def _time(seconds: float | None) -> dt.datetime | None:
    return None if seconds is None else dt.datetime.fromtimestamp(seconds, dt.UTC)


class AlertStatus(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of one alert, as listings and channels see it.

    ``labels`` are the observation's labels; ``value`` the last value judged.
    """

    rule: str
    fingerprint: str
    labels: dict[str, str]
    state: AlertState
    value: float | None
    threshold: float | None
    active_at: dt.datetime | None
    fired_at: dt.datetime | None
    resolved_at: dt.datetime | None
    last_notified_at: dt.datetime | None
    details: dict[str, Any] = {}


class Transition(msgspec.Struct, frozen=True, kw_only=True):
    """One state change of one alert, with the value that caused it."""

    rule: str
    fingerprint: str
    labels: dict[str, str]
    from_state: AlertState
    to_state: AlertState
    at: dt.datetime
    value: float | None
    threshold: float | None = None
    period: str | None = None
    details: dict[str, Any] = {}
    message: str | None = None


class RuleHealth(msgspec.Struct, frozen=True, kw_only=True):
    """How a rule's evaluations went: ``ok``, ``error`` (with the message) or ``unknown``
    (not evaluated yet), and how many evaluations and errors so far."""

    rule: str
    health: str
    last_error: str | None
    evaluations_total: int
    errors_total: int
    last_evaluated_at: dt.datetime | None
    last_duration_seconds: float | None


class Alert:
    """The live state of one alert (internal to the manager; read :class:`AlertStatus`).

    Times are Unix seconds. ``notified`` says whether the current firing episode was
    notified (a firing alert held back by the cooldown is not, yet).
    """

    __slots__ = (
        "active_at",
        "details",
        "fingerprint",
        "fired_at",
        "labels",
        "last_active_at",
        "last_notified_at",
        "notified",
        "period",
        "resolved_at",
        "rule",
        "state",
        "threshold",
        "value",
    )

    def __init__(self, rule: str, labels: Mapping[str, str]) -> None:
        self.rule = rule
        self.labels = dict(labels)
        self.fingerprint = fingerprint(rule, self.labels)
        self.state = AlertState.INACTIVE
        self.value: float | None = None
        self.threshold: float | None = None
        self.details: dict[str, Any] = {}
        self.period: str | None = None
        self.active_at: float | None = None
        self.fired_at: float | None = None
        self.resolved_at: float | None = None
        self.last_active_at: float | None = None
        self.last_notified_at: float | None = None
        self.notified = False

    def advance(
        self,
        observation: Observation | None,
        now: float,
        for_: float,
        keep_firing_for: float,
    ) -> AlertState | None:
        """Apply one evaluation's observation (None: the label set was not returned);
        the new state when it changed, else None."""
        if observation is not None:
            # Value, threshold and details all describe the latest evaluation, so a
            # resolved alert's summary speaks of the window that resolved it.
            self.value = observation.value
            self.threshold = observation.threshold
            self.details = dict(observation.details)
            if observation.active:
                self.period = observation.period
        holds = observation is not None and observation.active
        state = self.state
        if holds:
            self.last_active_at = now
            if state in (AlertState.INACTIVE, AlertState.RESOLVED):
                self.active_at = now
                self.resolved_at = None
                if for_ <= 0:
                    return self._fire(now)
                return self._set(AlertState.PENDING)
            if state is AlertState.PENDING:
                assert self.active_at is not None
                if now - self.active_at >= for_:
                    return self._fire(now)
            return None
        if state is AlertState.PENDING:
            self.active_at = None
            return self._set(AlertState.INACTIVE)
        if state is AlertState.FIRING:
            last = self.last_active_at if self.last_active_at is not None else now
            if keep_firing_for > 0 and now - last < keep_firing_for:
                return None
            self.resolved_at = now
            return self._set(AlertState.RESOLVED)
        return None

    def expired(self, now: float) -> bool:
        """True for a resolved (or never firing) alert that can be forgotten."""
        if self.state is AlertState.INACTIVE:
            return True
        if self.state is AlertState.RESOLVED:
            assert self.resolved_at is not None
            return now - self.resolved_at >= RESOLVED_RETENTION_SECONDS
        return False

    def _fire(self, now: float) -> AlertState:
        self.fired_at = now
        self.notified = False
        return self._set(AlertState.FIRING)

    def _set(self, state: AlertState) -> AlertState:
        self.state = state
        return state

    def status(self) -> AlertStatus:
        """A frozen snapshot."""
        return AlertStatus(
            rule=self.rule,
            fingerprint=self.fingerprint,
            labels=dict(self.labels),
            state=self.state,
            value=self.value,
            threshold=self.threshold,
            active_at=_time(self.active_at),
            fired_at=_time(self.fired_at),
            resolved_at=_time(self.resolved_at),
            last_notified_at=_time(self.last_notified_at),
            details=dict(self.details),
        )

    def __repr__(self) -> str:
        return f"Alert({self.rule!r}, {self.labels!r}, {self.state.value})"
