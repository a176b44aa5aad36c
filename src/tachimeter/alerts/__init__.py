"""Alerts (spec 023): rules, conditions, states, channels, history.

A rule pairs a condition with timing (``for``, ``keep_firing_for``, ``cooldown``),
severity, routing, labels and annotations; the :class:`AlertManager` evaluates rules on
demand or every 15 seconds, moves each alert (rule and label set) through inactive,
pending, firing and resolved, notifies channels and stores every state change.
Rules come from Python or from a TOML file (``docs/alerts.md``).

>>> import tachimeter.alerts as ta
>>> depth = [ta.SeriesData.single(250.0, {"queue": "events"})]
>>> rule = ta.AlertRule(
...     "QueueBacklog",
...     ta.MetricThreshold(lambda now: depth, ">", 100),
...     severity="warning",
...     annotations={"summary": "{labels.queue} queue at {value:.0f}"},
... )
>>> with ta.AlertManager([rule]) as manager:
...     report = manager.evaluate_rules()
>>> [(t.to_state.value, t.value) for t in report.transitions]
[('firing', 250.0)]
"""

from __future__ import annotations

from tachimeter.alerts.channels import (
    SIGNATURE_HEADER,
    AlertmanagerChannel,
    ConsoleChannel,
    LogChannel,
    Notification,
    NotificationChannel,
    RetryPolicy,
    WebhookChannel,
    sign_body,
)
from tachimeter.alerts.conditions import (
    Absence,
    Anomaly,
    Budget,
    Condition,
    Custom,
    ErrorRate,
    LastSeen,
    MetricThreshold,
    Observation,
    RatioSample,
    SeriesData,
    SpendRequest,
)
from tachimeter.alerts.history import (
    AlertEvent,
    MemoryAlertHistory,
    SQLiteAlertHistory,
    read_alert_events,
)
from tachimeter.alerts.loader import RuleFile, load_rules, parse_rules
from tachimeter.alerts.manager import AlertManager, EvaluationReport
from tachimeter.alerts.rules import AlertRule, Severity
from tachimeter.alerts.sources import (
    EventErrorRatio,
    EventLastSeen,
    EventSpend,
    MetricErrorRatio,
    MetricLastSeen,
    MetricSource,
    metric_catalog,
)
from tachimeter.alerts.state import AlertState, AlertStatus, RuleHealth, Transition

__all__ = [
    "SIGNATURE_HEADER",
    "Absence",
    "AlertEvent",
    "AlertManager",
    "AlertRule",
    "AlertState",
    "AlertStatus",
    "AlertmanagerChannel",
    "Anomaly",
    "Budget",
    "Condition",
    "ConsoleChannel",
    "Custom",
    "ErrorRate",
    "EvaluationReport",
    "EventErrorRatio",
    "EventLastSeen",
    "EventSpend",
    "LastSeen",
    "LogChannel",
    "MemoryAlertHistory",
    "MetricErrorRatio",
    "MetricLastSeen",
    "MetricSource",
    "MetricThreshold",
    "Notification",
    "NotificationChannel",
    "Observation",
    "RatioSample",
    "RetryPolicy",
    "RuleFile",
    "RuleHealth",
    "SQLiteAlertHistory",
    "SeriesData",
    "Severity",
    "SpendRequest",
    "Transition",
    "WebhookChannel",
    "load_rules",
    "metric_catalog",
    "parse_rules",
    "read_alert_events",
    "sign_body",
]
