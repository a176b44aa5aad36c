"""Alert rule files (TOML), validated when loaded: ``docs/alerts.md`` has the format.

Every problem is a :class:`~tachimeter.errors.ConfigError` that names the file, the
place in it and what is accepted, with a suggestion for a misspelt key or metric::

    alerts.toml: rules[1] ('HighErrorRate').condition: unknown key 'treshold'; did you
    mean 'threshold'?

>>> text = '''
... [[rules]]
... name = "QueueBacklog"
... for = "2m"
... [rules.condition]
... type = "threshold"
... metric = "queue_depth"
... op = ">"
... threshold = 100
... '''
>>> import tomllib
>>> loaded = parse_rules(tomllib.loads(text), origin="alerts.toml")
>>> [(r.name, r.for_, r.describe()) for r in loaded.rules]
[('QueueBacklog', 120.0, 'queue_depth > 100')]
"""

from __future__ import annotations

import difflib
import logging
import os
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Final, NoReturn, TypeVar

import msgspec

from tachimeter.alerts.channels import (
    AlertmanagerChannel,
    ConsoleChannel,
    LogChannel,
    NotificationChannel,
    RetryPolicy,
    WebhookChannel,
)
from tachimeter.alerts.conditions import (
    Absence,
    Anomaly,
    Budget,
    Condition,
    Custom,
    CustomCheck,
    ErrorRate,
    MetricThreshold,
    SeriesLike,
    parse_operator,
)
from tachimeter.alerts.durations import parse_duration
from tachimeter.alerts.manager import DEFAULT_INTERVAL
from tachimeter.alerts.rules import AlertRule
from tachimeter.alerts.sources import (
    EventErrorRatio,
    EventLastSeen,
    EventSpend,
    MetricErrorRatio,
    MetricLastSeen,
    MetricSource,
)
from tachimeter.analyze.anomalies import AnomalyDetector, LevelShift, RobustZScore, SeasonalBaseline
from tachimeter.errors import ConfigError, QueryError, TachimeterError
from tachimeter.store.summaries import PropertyFilter

__all__ = ["RuleFile", "load_rules", "parse_rules"]

_T = TypeVar("_T")

_TOP_KEYS: Final = frozenset({"interval", "external_url", "channels", "rules"})
_RULE_KEYS: Final = frozenset(
    {
        "name",
        "severity",
        "for",
        "keep_firing_for",
        "cooldown",
        "repeat_interval",
        "interval",
        "channels",
        "labels",
        "annotations",
        "condition",
    }
)
_QUERY_KEYS: Final = frozenset(
    {
        "metric",
        "matchers",
        "aggregation",
        "window",
        "group_by",
        "quantiles",
        "lookback",
        "resolution",
    }
)
_RETRY_KEYS: Final = frozenset({"max_attempts", "initial_backoff", "max_backoff"})
_CHANNEL_KEYS: Final[Mapping[str, frozenset[str]]] = {
    "webhook": frozenset({"name", "type", "url", "secret", "secret_env", "timeout", "headers"})
    | _RETRY_KEYS,
    "alertmanager": frozenset({"name", "type", "url", "timeout", "resend_interval", "headers"})
    | _RETRY_KEYS,
    "log": frozenset({"name", "type", "logger"}),
    "console": frozenset({"name", "type", "stream"}),
}
_CONDITION_KEYS: Final[Mapping[str, frozenset[str]]] = {
    "threshold": frozenset({"type", "op", "threshold", "for"}) | _QUERY_KEYS,
    "error_rate": frozenset(
        {
            "type",
            "source",
            "threshold",
            "window",
            "min_total",
            "events",
            "errors",
            "errors_where",
            "errors_metric",
            "total_metric",
            "matchers",
            "group_by",
        }
    ),
    "absence": frozenset({"type", "duration", "metric", "matchers", "event", "labels"}),
    "anomaly": frozenset({"type", "detector", "detector_options", "recent", "range", "step"})
    | _QUERY_KEYS,
    "budget": frozenset(
        {"type", "kind", "scope", "limit", "window", "thresholds", "period", "source"}
    ),
    "custom": frozenset({"type", "function", "range", "step"}) | _QUERY_KEYS,
}
_DETECTORS: Final[Mapping[str, tuple[type[Any], frozenset[str]]]] = {
    "robust_zscore": (RobustZScore, frozenset({"window", "threshold", "min_points"})),
    "seasonal_baseline": (
        SeasonalBaseline,
        frozenset(
            {"periods", "seasons", "threshold", "level_window", "scale_window", "min_seasons"}
        ),
    ),
    "level_shift": (
        LevelShift,
        frozenset({"window", "threshold", "scale_window", "periods", "seasons", "min_seasons"}),
    ),
}


class RuleFile(msgspec.Struct, frozen=True, kw_only=True):
    """A loaded rule file: rules, channels and the manager's settings."""

    rules: list[AlertRule]
    channels: list[NotificationChannel]
    interval: float = DEFAULT_INTERVAL
    external_url: str | None = None
    origin: str = "<rules>"


class _NoStore:
    """The source of rules loaded without a store: evaluating them says what to do."""

    def reader(self) -> AbstractContextManager[Any]:
        raise QueryError(
            "this rule was loaded without a store; pass store= to load_rules or "
            "AlertManager.from_file"
        )


def load_rules(
    path: str | os.PathLike[str],
    *,
    source: Any = None,
    functions: Mapping[str, CustomCheck] | None = None,
    metrics: Collection[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> RuleFile:
    """Load and validate a TOML rule file.

    ``source`` (a store or a connection) is what the rules' queries read; ``functions``
    the callables ``custom`` conditions name (None: names are not checked, for
    ``tachimeter alerts check``); ``metrics`` the known metric names (None: not checked);
    ``env`` where ``secret_env`` is looked up (default ``os.environ``).
    """
    import tomllib  # only when a rule file is read

    file = Path(path)
    try:
        with file.open("rb") as stream:
            data = tomllib.load(stream)
    except OSError as exc:
        raise ConfigError(f"cannot read alert rule file {file}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file} is not valid TOML: {exc}") from None
    return parse_rules(
        data, origin=str(file), source=source, functions=functions, metrics=metrics, env=env
    )


def parse_rules(
    data: Mapping[str, Any],
    *,
    origin: str = "<rules>",
    source: Any = None,
    functions: Mapping[str, CustomCheck] | None = None,
    metrics: Collection[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> RuleFile:
    """Validate rules given as TOML data (a dict); see :func:`load_rules`."""
    return _Parser(origin, source, functions, metrics, env).parse(data)


class _Parser:
    __slots__ = ("env", "functions", "metrics", "origin", "source")

    def __init__(
        self,
        origin: str,
        source: Any,
        functions: Mapping[str, CustomCheck] | None,
        metrics: Collection[str] | None,
        env: Mapping[str, str] | None,
    ) -> None:
        self.origin = origin
        self.source = source if source is not None else _NoStore()
        self.functions = functions
        self.metrics = None if metrics is None else frozenset(metrics)
        self.env = os.environ if env is None else env

    # -- helpers ---------------------------------------------------------------------------

    def fail(self, where: str, message: str) -> NoReturn:
        raise ConfigError(f"{self.origin}: {where}: {message}")

    def keys(self, table: Mapping[str, Any], allowed: Collection[str], where: str) -> None:
        for key in table:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), sorted(allowed), n=1, cutoff=0.6)
                hint = (
                    f"; did you mean {close[0]!r}?"
                    if close
                    else (f"; allowed: {', '.join(sorted(allowed))}")
                )
                self.fail(where, f"unknown key {key!r}{hint}")

    def table(self, value: object, where: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            self.fail(where, f"must be a table, got {value!r}")
        return value

    def text(self, table: Mapping[str, Any], key: str, where: str, default: Any = ...) -> Any:
        if key not in table:
            if default is ...:
                self.fail(where, f"missing required key {key!r}")
            return default
        value = table[key]
        if not isinstance(value, str) or not value:
            self.fail(f"{where}.{key}", f"must be non-empty text, got {value!r}")
        return value

    def number(self, table: Mapping[str, Any], key: str, where: str, default: Any = ...) -> Any:
        if key not in table:
            if default is ...:
                self.fail(where, f"missing required key {key!r}")
            return default
        value = table[key]
        if not isinstance(value, int | float) or isinstance(value, bool):
            self.fail(f"{where}.{key}", f"must be a number, got {value!r}")
        return value

    def texts(self, table: Mapping[str, Any], key: str, where: str) -> list[str] | None:
        if key not in table:
            return None
        value = table[key]
        if isinstance(value, str) or not isinstance(value, list):
            self.fail(f"{where}.{key}", f"must be a list of text, got {value!r}")
        if not all(isinstance(v, str) and v for v in value):
            self.fail(f"{where}.{key}", f"must be a list of non-empty text, got {value!r}")
        return list(value)

    def strings(self, table: Mapping[str, Any], key: str, where: str) -> dict[str, str]:
        if key not in table:
            return {}
        value = self.table(table[key], f"{where}.{key}")
        for k, v in value.items():
            if not isinstance(v, str):
                self.fail(f"{where}.{key}.{k}", f"must be text, got {v!r}")
        return dict(value)

    def guard(self, where: str, build: Callable[[], _T]) -> _T:
        """Run a constructor, prefixing its ConfigError with the place in the file."""
        try:
            return build()
        except TachimeterError as exc:
            self.fail(where, str(exc))

    def metric(self, name: str, where: str) -> str:
        if self.metrics is not None and name not in self.metrics:
            if f"{name}_bucket" in self.metrics:
                return name
            close = difflib.get_close_matches(name, sorted(self.metrics), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            self.fail(where, f"unknown metric {name!r} (not in the store's catalog){hint}")
        return name

    # -- the file ----------------------------------------------------------------------------

    def parse(self, data: Mapping[str, Any]) -> RuleFile:
        self.keys(data, _TOP_KEYS, "top level")
        interval = DEFAULT_INTERVAL
        if "interval" in data:
            interval = self.guard(
                "interval", lambda: parse_duration(data["interval"], "interval", allow_zero=False)
            )
        external = self.text(data, "external_url", "top level", None)
        channels_raw = data.get("channels", [])
        if not isinstance(channels_raw, list):
            self.fail("channels", "must be an array of tables ([[channels]])")
        channels = [self.channel(c, f"channels[{i}]") for i, c in enumerate(channels_raw)]
        names = [c.name for c in channels]
        for name in names:
            if names.count(name) > 1:
                self.fail("channels", f"two channels are named {name!r}")
        rules_raw = data.get("rules", [])
        if not isinstance(rules_raw, list):
            self.fail("rules", "must be an array of tables ([[rules]])")
        rules = [self.rule(r, i, set(names)) for i, r in enumerate(rules_raw)]
        seen: set[str] = set()
        for rule in rules:
            if rule.name in seen:
                self.fail("rules", f"two rules are named {rule.name!r}")
            seen.add(rule.name)
        return RuleFile(
            rules=rules,
            channels=channels,
            interval=interval,
            external_url=external,
            origin=self.origin,
        )

    def channel(self, raw: object, where: str) -> NotificationChannel:
        table = self.table(raw, where)
        kind = self.text(table, "type", where)
        if kind not in _CHANNEL_KEYS:
            close = difflib.get_close_matches(kind, sorted(_CHANNEL_KEYS), n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            self.fail(
                f"{where}.type",
                f"unknown channel type {kind!r}; use one of {', '.join(sorted(_CHANNEL_KEYS))}"
                f"{hint}",
            )
        self.keys(table, _CHANNEL_KEYS[kind], where)
        if kind == "log":
            name = self.text(table, "name", where, "log")
            logger = self.text(table, "logger", where, None)
            return LogChannel(name, logger=None if logger is None else logging.getLogger(logger))
        if kind == "console":
            name = self.text(table, "name", where, "console")
            stream = self.text(table, "stream", where, "stderr")
            if stream not in ("stderr", "stdout"):
                self.fail(f"{where}.stream", f"must be 'stderr' or 'stdout', got {stream!r}")
            return ConsoleChannel(name, stream=sys.stdout if stream == "stdout" else None)
        url = self.text(table, "url", where)
        retry = self.guard(
            where,
            lambda: RetryPolicy(
                max_attempts=self.number(table, "max_attempts", where, 4),
                initial_backoff=self.guard(
                    f"{where}.initial_backoff",
                    lambda: parse_duration(table.get("initial_backoff", 0.5), "initial_backoff"),
                ),
                max_backoff=self.guard(
                    f"{where}.max_backoff",
                    lambda: parse_duration(table.get("max_backoff", 10.0), "max_backoff"),
                ),
            ),
        )
        headers = self.strings(table, "headers", where)
        timeout = table.get("timeout", 5.0)
        if kind == "alertmanager":
            name = self.text(table, "name", where, "alertmanager")
            return self.guard(
                where,
                lambda: AlertmanagerChannel(
                    url,
                    name=name,
                    timeout=timeout,
                    retry=retry,
                    resend_interval=table.get("resend_interval", 60.0),
                    headers=headers,
                ),
            )
        name = self.text(table, "name", where)
        secret = self.text(table, "secret", where, None)
        secret_env = self.text(table, "secret_env", where, None)
        if secret is not None and secret_env is not None:
            self.fail(where, "give secret or secret_env, not both")
        if secret_env is not None:
            secret = self.env.get(secret_env)
            if not secret:
                self.fail(
                    f"{where}.secret_env",
                    f"environment variable {secret_env} is not set (it holds the webhook's "
                    "signing secret)",
                )
        return self.guard(
            where,
            lambda: WebhookChannel(
                name, url, secret=secret, timeout=timeout, retry=retry, headers=headers
            ),
        )

    def rule(self, raw: object, index: int, channel_names: set[str]) -> AlertRule:
        where = f"rules[{index}]"
        table = self.table(raw, where)
        name = self.text(table, "name", where)
        where = f"rules[{index}] ({name!r})"
        self.keys(table, _RULE_KEYS, where)
        channels = self.texts(table, "channels", where) or []
        for channel in channels:
            if channel not in channel_names:
                known = ", ".join(sorted(channel_names)) or "none are defined"
                self.fail(f"{where}.channels", f"unknown channel {channel!r}; channels: {known}")
        condition = self.condition(table.get("condition"), f"{where}.condition")
        try:
            return AlertRule(
                name,
                condition,
                severity=table.get("severity", "warning"),
                for_=table.get("for"),
                keep_firing_for=table.get("keep_firing_for", 0),
                cooldown=table.get("cooldown", "5m"),
                repeat_interval=table.get("repeat_interval"),
                channels=channels,
                labels=self.strings(table, "labels", where),
                annotations=self.strings(table, "annotations", where),
                interval=table.get("interval"),
            )
        except ConfigError as exc:
            # AlertRule names the rule itself; the place in the file says it already.
            message = str(exc).removeprefix(f"rule {name!r} ").removeprefix(f"rule {name!r}: ")
            self.fail(where, message)

    # -- conditions --------------------------------------------------------------------------

    def condition(self, raw: object, where: str) -> Condition:
        if raw is None:
            self.fail(where.rsplit(".", 1)[0], "missing required table 'condition'")
        table = self.table(raw, where)
        kind = self.text(table, "type", where)
        if kind not in _CONDITION_KEYS:
            close = difflib.get_close_matches(kind, sorted(_CONDITION_KEYS), n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            self.fail(
                f"{where}.type",
                f"unknown condition type {kind!r}; use one of "
                f"{', '.join(sorted(_CONDITION_KEYS))}{hint}",
            )
        self.keys(table, _CONDITION_KEYS[kind], where)
        build = getattr(self, f"_{kind}")
        result: Condition = build(table, where)
        return result

    def metric_source(self, table: Mapping[str, Any], where: str, *, ranged: bool) -> MetricSource:
        metric = self.metric(self.text(table, "metric", where), f"{where}.metric")
        matchers = self.texts(table, "matchers", where) or []
        group_by = self.texts(table, "group_by", where)
        quantiles = table.get("quantiles", [0.99])
        if not isinstance(quantiles, list):
            self.fail(f"{where}.quantiles", f"must be a list of numbers, got {quantiles!r}")
        aggregation = self.text(table, "aggregation", where, None)
        resolution = self.text(table, "resolution", where, "raw")
        kwargs: dict[str, Any] = {
            "matchers": matchers,
            "aggregation": aggregation,
            "window": table.get("window"),
            "group_by": group_by,
            "quantiles": quantiles,
            "lookback": table.get("lookback", 300),
            "resolution": resolution,
        }
        if ranged:
            kwargs["range"] = table.get("range", "1d")
            kwargs["step"] = table.get("step")
        return self.guard(where, lambda: MetricSource(self.source, metric, **kwargs))

    def _threshold(self, table: Mapping[str, Any], where: str) -> Condition:
        op = self.guard(f"{where}.op", lambda: parse_operator(table.get("op"), "op"))
        threshold = self.number(table, "threshold", where)
        query = self.metric_source(table, where, ranged=False)
        return self.guard(
            where, lambda: MetricThreshold(query, op, threshold, for_=table.get("for"))
        )

    def _error_rate(self, table: Mapping[str, Any], where: str) -> Condition:
        origin = self.text(table, "source", where, "events")
        threshold = self.number(table, "threshold", where)
        min_total = self.number(table, "min_total", where, 1)
        window = table.get("window", "5m")
        if origin == "events":
            for key in ("errors_metric", "total_metric", "matchers", "group_by"):
                if key in table:
                    self.fail(where, f"{key!r} is for source = 'metrics', not 'events'")
            filters = self.property_filters(table.get("errors_where"), f"{where}.errors_where")
            events = self.texts(table, "events", where)
            errors = self.texts(table, "errors", where)
            ratio: Any = self.guard(
                where,
                lambda: EventErrorRatio(
                    self.source, events=events, errors=errors, error_filter=filters or None
                ),
            )
        elif origin == "metrics":
            for key in ("events", "errors", "errors_where"):
                if key in table:
                    self.fail(where, f"{key!r} is for source = 'events', not 'metrics'")
            errors_metric = self.metric(
                self.text(table, "errors_metric", where), f"{where}.errors_metric"
            )
            total_metric = self.metric(
                self.text(table, "total_metric", where), f"{where}.total_metric"
            )
            matchers = self.texts(table, "matchers", where) or []
            group_by = self.texts(table, "group_by", where) or []
            ratio = self.guard(
                where,
                lambda: MetricErrorRatio(
                    self.source, errors_metric, total_metric, matchers=matchers, group_by=group_by
                ),
            )
        else:
            self.fail(f"{where}.source", f"must be 'events' or 'metrics', got {origin!r}")
        return self.guard(where, lambda: ErrorRate(ratio, threshold, window, min_total=min_total))

    def property_filters(self, raw: object, where: str) -> list[PropertyFilter]:
        if raw is None:
            return []
        if not isinstance(raw, list):
            self.fail(where, "must be an array of tables {path, op, value}")
        out = []
        for i, item in enumerate(raw):
            place = f"{where}[{i}]"
            table = self.table(item, place)
            self.keys(table, {"path", "op", "value"}, place)
            path = self.text(table, "path", place)
            op = self.text(table, "op", place, "eq")
            try:
                out.append(PropertyFilter(path, op, table.get("value")))
            except TachimeterError as exc:
                self.fail(place, str(exc))
        return out

    def _absence(self, table: Mapping[str, Any], where: str) -> Condition:
        has_metric, has_event = "metric" in table, "event" in table
        if has_metric == has_event:
            self.fail(where, "give exactly one of 'metric' or 'event'")
        labels = self.strings(table, "labels", where)
        if has_metric:
            metric = self.metric(self.text(table, "metric", where), f"{where}.metric")
            matchers = self.texts(table, "matchers", where) or []
            seen: Any = self.guard(
                where, lambda: MetricLastSeen(self.source, metric, matchers=matchers)
            )
        else:
            if "matchers" in table:
                self.fail(where, "'matchers' applies to 'metric', not to 'event'")
            event = self.text(table, "event", where)
            seen = self.guard(where, lambda: EventLastSeen(self.source, event))
        duration = table.get("duration")
        if duration is None:
            self.fail(where, "missing required key 'duration' (how long without data)")
        return self.guard(where, lambda: Absence(seen, duration, labels=labels))

    def _anomaly(self, table: Mapping[str, Any], where: str) -> Condition:
        name = self.text(table, "detector", where, "seasonal_baseline")
        if name not in _DETECTORS:
            close = difflib.get_close_matches(name, sorted(_DETECTORS), n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            self.fail(
                f"{where}.detector",
                f"unknown detector {name!r}; use one of {', '.join(sorted(_DETECTORS))}{hint}",
            )
        cls, allowed = _DETECTORS[name]
        options = dict(self.table(table.get("detector_options", {}), f"{where}.detector_options"))
        self.keys(options, allowed, f"{where}.detector_options")
        if "periods" in options:
            periods = options["periods"]
            place = f"{where}.detector_options.periods"
            parsed: list[float] = []
            for item in periods if isinstance(periods, list) else [periods]:
                try:
                    parsed.append(parse_duration(item, "periods", allow_zero=False))
                except ConfigError as exc:
                    self.fail(place, str(exc))
            options["periods"] = parsed
        detector: AnomalyDetector = self.guard(f"{where}.detector_options", lambda: cls(**options))
        query = self.metric_source(table, where, ranged=True)
        return self.guard(
            where,
            lambda: Anomaly(
                query, detector, recent=table.get("recent", "5m"), step=table.get("step")
            ),
        )

    def _budget(self, table: Mapping[str, Any], where: str) -> Condition:
        origin = self.text(table, "source", where, "events")
        if origin != "events":
            self.fail(f"{where}.source", f"must be 'events' (stored LLM events), got {origin!r}")
        limit = self.number(table, "limit", where)
        thresholds = table.get("thresholds", [0.8, 0.9, 1.0])
        if not isinstance(thresholds, list):
            self.fail(
                f"{where}.thresholds", f"must be a list like [0.8, 0.9, 1.0], got {thresholds!r}"
            )
        spend = EventSpend(self.source)
        return self.guard(
            where,
            lambda: Budget(
                spend,
                limit,
                window=table.get("window", "1d"),
                kind=table.get("kind", "cost"),
                scope=table.get("scope", "total"),
                thresholds=thresholds,
                period=table.get("period"),
            ),
        )

    def _custom(self, table: Mapping[str, Any], where: str) -> Condition:
        name = self.text(table, "function", where)
        check: CustomCheck
        if self.functions is None:
            check = _unregistered(name)
        elif name in self.functions:
            check = self.functions[name]
        else:
            close = difflib.get_close_matches(name, sorted(self.functions), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            known = ", ".join(sorted(self.functions)) or "none"
            self.fail(
                f"{where}.function",
                f"no custom function {name!r} is registered (registered: {known}){hint}",
            )
        query = None
        if "metric" in table:
            query = self.metric_source(table, where, ranged="range" in table)
        elif _QUERY_KEYS & table.keys():
            self.fail(where, "query keys need 'metric'")
        return self.guard(where, lambda: Custom(check, query, name=name))


def _unregistered(name: str) -> CustomCheck:
    def check(series: Sequence[SeriesLike]) -> bool:
        raise QueryError(
            f"custom function {name!r} is not registered; pass functions={{{name!r}: ...}} "
            "when loading the rules"
        )

    check.__name__ = name
    return check
