"""Rule files: a full file loads into rules and channels; mistakes fail at load with the
file, the place and a suggestion (unknown metric, bad duration, bad operator, typos)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tachimeter.alerts import (
    Absence,
    AlertManager,
    AlertmanagerChannel,
    Anomaly,
    Budget,
    ConsoleChannel,
    Custom,
    ErrorRate,
    LogChannel,
    MetricThreshold,
    SeriesData,
    Severity,
    WebhookChannel,
    load_rules,
    parse_rules,
)
from tachimeter.analyze.anomalies import SeasonalBaseline
from tachimeter.errors import ConfigError

FULL = """
interval = "30s"
external_url = "http://127.0.0.1:8000"

[[channels]]
name = "ops"
type = "webhook"
url = "https://hooks.example.com/tachimeter"
secret_env = "OPS_WEBHOOK_SECRET"
timeout = "3s"
max_attempts = 5

[[channels]]
type = "alertmanager"
url = "http://127.0.0.1:9093"
resend_interval = "30s"

[[channels]]
type = "log"

[[channels]]
type = "console"
stream = "stdout"

[[rules]]
name = "SlowTools"
severity = "critical"
for = "2m"
keep_firing_for = "5m"
cooldown = "10m"
repeat_interval = "4h"
channels = ["ops", "alertmanager"]
labels = { team = "agents" }
annotations = { summary = "p99 {labels.tool} at {value:.2f}s", runbook_url = "https://rb/slow" }
[rules.condition]
type = "threshold"
metric = "tool_latency_seconds"
matchers = ['tool=~"search|shell"']
aggregation = "percentiles"
quantiles = [0.99]
window = "5m"
group_by = ["tool"]
op = ">="
threshold = 2.5

[[rules]]
name = "ToolFailures"
[rules.condition]
type = "error_rate"
events = ["tool_invoked"]
errors_where = [{ path = "success", op = "eq", value = false }]
threshold = 0.1
window = "15m"
min_total = 20

[[rules]]
name = "LoopErrors"
[rules.condition]
type = "error_rate"
source = "metrics"
errors_metric = "loop_errors_total"
total_metric = "loop_executions_total"
group_by = ["loop_type"]
threshold = 0.05

[[rules]]
name = "NoHeartbeat"
[rules.condition]
type = "absence"
event = "heartbeat"
duration = "10m"

[[rules]]
name = "LatencyAnomaly"
[rules.condition]
type = "anomaly"
metric = "tool_latency_seconds"
aggregation = "avg"
range = "3d"
step = "5m"
detector = "seasonal_baseline"
detector_options = { periods = ["1d"], seasons = 2, threshold = 5.0 }
recent = "10m"

[[rules]]
name = "DailyCost"
interval = "1m"
[rules.condition]
type = "budget"
kind = "cost"
scope = "user"
limit = 25.0
window = "1d"
thresholds = [0.8, 1.0]

[[rules]]
name = "QueueCheck"
[rules.condition]
type = "custom"
function = "queue_check"
metric = "queue_depth"
"""

CATALOG = {
    "tool_latency_seconds",
    "loop_errors_total",
    "loop_executions_total",
    "queue_depth",
}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "alerts.toml"
    path.write_text(textwrap.dedent(text))
    return path


def queue_check(series: list[SeriesData]) -> bool:
    return False


def test_a_full_rule_file_loads_every_condition_and_channel(tmp_path: Path) -> None:
    path = _write(tmp_path, FULL)
    loaded = load_rules(
        path,
        functions={"queue_check": queue_check},
        metrics=CATALOG,
        env={"OPS_WEBHOOK_SECRET": "s3cret"},
    )
    assert loaded.interval == 30.0 and loaded.external_url == "http://127.0.0.1:8000"
    kinds = [type(c) for c in loaded.channels]
    assert kinds == [WebhookChannel, AlertmanagerChannel, LogChannel, ConsoleChannel]
    assert [c.name for c in loaded.channels] == ["ops", "alertmanager", "log", "console"]
    webhook, am = loaded.channels[0], loaded.channels[1]
    assert isinstance(am, AlertmanagerChannel) and am.resend_interval == 30.0
    assert isinstance(webhook, WebhookChannel) and webhook.url.endswith("/tachimeter")
    rules = {r.name: r for r in loaded.rules}
    assert [type(r.condition) for r in loaded.rules] == [
        MetricThreshold,
        ErrorRate,
        ErrorRate,
        Absence,
        Anomaly,
        Budget,
        Custom,
    ]
    slow = rules["SlowTools"]
    assert (slow.severity, slow.for_, slow.keep_firing_for, slow.cooldown) == (
        Severity.CRITICAL,
        120.0,
        300.0,
        600.0,
    )
    assert slow.repeat_interval == 4 * 3600 and slow.channels == ("ops", "alertmanager")
    assert slow.labels == {"team": "agents"}
    assert slow.describe() == (
        'percentiles by (tool)(tool_latency_seconds{tool=~"search|shell"}[300s]) >= 2.5'
    )
    anomaly = rules["LatencyAnomaly"].condition
    assert isinstance(anomaly, Anomaly) and isinstance(anomaly.detector, SeasonalBaseline)
    assert anomaly.detector.periods == (86400.0,) and anomaly.detector.seasons == 2
    budget = rules["DailyCost"].condition
    assert isinstance(budget, Budget) and budget.thresholds == (0.8, 1.0)
    assert rules["DailyCost"].interval == 60.0
    assert rules["SlowTools"].render_annotations(3.14159, 2.5, {"tool": "shell"}, {}, "firing") == {
        "summary": "p99 shell at 3.14s",
        "runbook_url": "https://rb/slow",
    }


def test_manager_from_file_wires_rules_channels_and_settings(tmp_path: Path) -> None:
    from tachimeter.store.sqlite import SQLiteStore

    text = FULL.split("[[rules]]")[0] + "[[rules]]" + FULL.split("[[rules]]")[4]
    path = _write(tmp_path, text)
    store = SQLiteStore(tmp_path / "a.db")
    try:
        import os

        os.environ["OPS_WEBHOOK_SECRET"] = "s3cret"
        try:
            manager = AlertManager.from_file(path, store=store, check_metrics=False)
        finally:
            del os.environ["OPS_WEBHOOK_SECRET"]
        with manager:
            assert manager.interval == 30.0
            assert [r.name for r in manager.rules] == ["NoHeartbeat"]
            assert len(manager.channels) == 4
    finally:
        store.close()


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        (
            """
            [[rules]]
            name = "R"
            [rules.condition]
            type = "threshold"
            metric = "tool_latency_second"
            op = ">"
            threshold = 1
            """,
            "rules[0] ('R').condition.metric: unknown metric 'tool_latency_second' "
            "(not in the store's catalog); did you mean 'tool_latency_seconds'?",
        ),
        (
            """
            [[rules]]
            name = "R"
            for = "5 minutes"
            [rules.condition]
            type = "threshold"
            metric = "queue_depth"
            op = ">"
            threshold = 1
            """,
            "rules[0] ('R'): for = '5 minutes' is not a duration",
        ),
        (
            """
            [[rules]]
            name = "R"
            [rules.condition]
            type = "threshold"
            metric = "queue_depth"
            op = "=>"
            threshold = 1
            """,
            "rules[0] ('R').condition.op: op = '=>' is not a comparison operator; use one of "
            ">, >=, <, <=, ==, !=",
        ),
        (
            """
            [[rules]]
            name = "R"
            [rules.condition]
            type = "threshold"
            metric = "queue_depth"
            op = ">"
            treshold = 1
            """,
            "rules[0] ('R').condition: unknown key 'treshold'; did you mean 'threshold'?",
        ),
        (
            """
            [[rules]]
            name = "R"
            severty = "critical"
            [rules.condition]
            type = "absence"
            event = "heartbeat"
            duration = "5m"
            """,
            "rules[0] ('R'): unknown key 'severty'; did you mean 'severity'?",
        ),
        (
            """
            intervall = "15s"
            """,
            "top level: unknown key 'intervall'; did you mean 'interval'?",
        ),
        (
            """
            [[rules]]
            name = "R"
            [rules.condition]
            type = "treshold"
            """,
            "unknown condition type 'treshold'; use one of absence, anomaly, budget, custom, "
            "error_rate, threshold; did you mean 'threshold'?",
        ),
        (
            """
            [[rules]]
            name = "R"
            channels = ["pager"]
            [rules.condition]
            type = "absence"
            event = "heartbeat"
            duration = "5m"
            """,
            "rules[0] ('R').channels: unknown channel 'pager'; channels: none are defined",
        ),
        (
            """
            [[rules]]
            name = "R"
            [rules.condition]
            type = "absence"
            event = "heartbeat"
            """,
            "missing required key 'duration'",
        ),
        (
            """
            [[rules]]
            name = "R"
            [rules.condition]
            type = "error_rate"
            events = ["tool_invoked"]
            errors_metric = "loop_errors_total"
            threshold = 0.1
            """,
            "'errors_metric' is for source = 'metrics', not 'events'",
        ),
        (
            """
            [[rules]]
            name = "R"
            [rules.condition]
            type = "anomaly"
            metric = "queue_depth"
            detector = "zscore"
            """,
            "unknown detector 'zscore'",
        ),
        (
            """
            [[rules]]
            name = "R"
            [rules.condition]
            type = "anomaly"
            metric = "queue_depth"
            detector = "robust_zscore"
            detector_options = { windw = 30 }
            """,
            "detector_options: unknown key 'windw'; did you mean 'window'?",
        ),
        (
            """
            [[rules]]
            name = "R"
            [rules.condition]
            type = "custom"
            function = "queue_chek"
            """,
            "no custom function 'queue_chek' is registered (registered: queue_check); "
            "did you mean 'queue_check'?",
        ),
        (
            """
            [[channels]]
            name = "ops"
            type = "webhook"
            url = "https://hooks.example.com"
            secret_env = "NOT_SET_ANYWHERE"
            """,
            "channels[0].secret_env: environment variable NOT_SET_ANYWHERE is not set",
        ),
        (
            """
            [[channels]]
            name = "ops"
            type = "webhok"
            """,
            "unknown channel type 'webhok'; use one of alertmanager, console, log, webhook; "
            "did you mean 'webhook'?",
        ),
        (
            """
            [[rules]]
            name = "R"
            [rules.condition]
            type = "threshold"
            metric = "queue_depth"
            matchers = ['queue=events']
            op = ">"
            threshold = 1
            """,
            'is not of the form label="value"',
        ),
        (
            """
            [[rules]]
            name = "R"
            [rules.condition]
            type = "budget"
            limit = 10
            scope = "team"
            """,
            "Budget.scope must be one of total, user, tag, model, got 'team'",
        ),
        (
            """
            [[rules]]
            name = "R"
            [rules.condition]
            type = "absence"
            event = "a"
            duration = "1m"
            [[rules]]
            name = "R"
            [rules.condition]
            type = "absence"
            event = "b"
            duration = "1m"
            """,
            "two rules are named 'R'",
        ),
    ],
)
def test_mistakes_fail_at_load_naming_the_file_and_the_place(
    tmp_path: Path, snippet: str, message: str
) -> None:
    path = _write(tmp_path, snippet)
    with pytest.raises(ConfigError) as caught:
        load_rules(path, functions={"queue_check": queue_check}, metrics=CATALOG, env={})
    text = str(caught.value)
    assert text.startswith((f"{path}: ", str(path))), text
    assert message in text, text


def test_invalid_toml_and_missing_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_rules(_write(tmp_path, "[[rules]\nname = 1"))
    with pytest.raises(ConfigError, match="cannot read alert rule file"):
        load_rules(tmp_path / "missing.toml")


def test_without_a_catalog_or_functions_names_are_not_checked() -> None:
    data = {
        "rules": [
            {"name": "A", "condition": {"type": "threshold", "metric": "anything", "op": ">",
                                        "threshold": 1}},
            {"name": "B", "condition": {"type": "custom", "function": "registered_later"}},
        ]
    }  # fmt: skip
    loaded = parse_rules(data)
    assert [r.name for r in loaded.rules] == ["A", "B"]
    custom = loaded.rules[1].condition
    assert isinstance(custom, Custom)
    with pytest.raises(Exception, match="custom function 'registered_later' is not registered"):
        custom.evaluate(__import__("datetime").datetime.now())


def test_rules_loaded_without_a_store_say_so_when_evaluated() -> None:
    loaded = parse_rules(
        {"rules": [{"name": "A", "condition": {"type": "absence", "event": "x", "duration": 60}}]}
    )
    with AlertManager(loaded.rules) as manager:
        report = manager.evaluate_rules()
    assert "loaded without a store" in report.errors["A"]
