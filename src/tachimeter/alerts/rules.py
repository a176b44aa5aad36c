"""Alert rules: a condition plus timing, severity, routing, labels and annotations.

Annotations are templates filled at each state change: ``{value}``, ``{threshold}``,
``{rule}``, ``{severity}``, ``{labels.<name>}`` and any of the observation's details
(``{ratio}``, ``{expected}``), with Python format specs (``{value:.1%}``). Unknown
fields are an error when the rule is built, never when it fires.
"""

from __future__ import annotations

import enum
import re
import string
from collections.abc import Iterable, Mapping
from typing import Any, Final

from tachimeter.alerts.conditions import Condition
from tachimeter.alerts.durations import DurationLike, parse_duration
from tachimeter.errors import ConfigError

__all__ = ["AlertRule", "AnnotationTemplate", "Severity"]

# Names usable as a Prometheus label value of ``alertname`` and in file names and URLs.
_RULE_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,199}$")
# Prometheus label names.
_LABEL_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Labels the manager sets itself.
_RESERVED_LABELS: Final = frozenset({"alertname", "severity"})
_FIELDS: Final = frozenset({"value", "threshold", "rule", "severity", "state"})
# Details a condition may give (Budget, ErrorRate, Anomaly); a template may use them.
_DETAIL_FIELDS: Final = frozenset(
    {
        "budget_kind",
        "budget_scope",
        "scope_value",
        "limit",
        "share",
        "ratio",
        "window_seconds",
        "errors",
        "total",
        "detector",
        "kind",
        "at",
        "observed",
        "expected",
        "lower",
        "upper",
    }
)


class Severity(enum.Enum):
    """How urgent an alert is (spec 023's ``AlertSeverity``), ordered by rank."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @classmethod
    def parse(cls, value: object, where: str) -> Severity:
        """From a member or its name; ``ConfigError`` naming ``where`` otherwise."""
        if isinstance(value, Severity):
            return value
        if isinstance(value, str):
            try:
                return cls(value.strip().lower())
            except ValueError:
                pass
        raise ConfigError(
            f"{where} = {value!r} is not a severity; use one of {', '.join(s.value for s in cls)}"
        )


class AnnotationTemplate:
    """A checked annotation template: ``"Error rate {value:.1%} on {labels.route}"``.

    >>> t = AnnotationTemplate("{rule}: {value:.1f} > {threshold}", "summary")
    >>> t.render({"rule": "HighLatency", "value": 2.345, "threshold": 2.0}, {})
    'HighLatency: 2.3 > 2.0'
    """

    __slots__ = ("_parts", "text")

    def __init__(self, text: str, where: str) -> None:
        if not isinstance(text, str):
            raise ConfigError(f"{where} must be text, got {text!r}")
        self.text = text
        parts: list[tuple[str, str | None, str, str | None]] = []
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise ConfigError(
                f"{where} = {text!r} is not a valid template ({exc}); write {{value}}, "
                "{labels.route}, and {{ }} for literal braces"
            ) from None
        for literal, field, spec, conversion in parsed:
            if field is None:
                parts.append((literal, None, "", None))
                continue
            if field.startswith("labels."):
                label = field[len("labels.") :]
                if not _LABEL_NAME.match(label):
                    raise ConfigError(f"{where}: {{{field}}} does not name a label")
            elif field not in _FIELDS | _DETAIL_FIELDS:
                raise ConfigError(
                    f"{where}: unknown field {{{field}}} in {text!r}; use "
                    f"{', '.join(sorted(_FIELDS))}, labels.<name> or a detail "
                    f"({', '.join(sorted(_DETAIL_FIELDS))})"
                )
            if conversion not in (None, "r", "s"):
                raise ConfigError(f"{where}: conversion !{conversion} is not allowed")
            if "{" in (spec or ""):
                raise ConfigError(f"{where}: nested fields in format specs are not allowed")
            parts.append((literal, field, spec or "", conversion))
        self._parts = tuple(parts)

    def render(self, fields: Mapping[str, Any], labels: Mapping[str, str]) -> str:
        """The text with fields filled; a field without a value renders as ``-``."""
        out: list[str] = []
        for literal, field, spec, conversion in self._parts:
            out.append(literal)
            if field is None:
                continue
            if field.startswith("labels."):
                value: Any = labels.get(field[len("labels.") :], "")
            else:
                value = fields.get(field)
            if value is None:
                out.append("-")
                continue
            if conversion == "r":
                value = repr(value)
            elif conversion == "s":
                value = str(value)
            try:
                out.append(format(value, spec))
            except (ValueError, TypeError):
                # A number-only spec (.1%) on a text detail: show the value as is rather
                # than lose the notification.
                out.append(str(value))
        return "".join(out)


class AlertRule:
    """A named condition with timing, severity, routing, labels and annotations.

    ``for_`` is how long the condition must hold before the alert fires (pending until
    then); ``keep_firing_for`` how long a firing alert stays firing after the condition
    stops holding (against flapping); ``cooldown`` the least time between two firing
    notifications of one alert (a firing alert held back is sent when it ends);
    ``repeat_interval`` (optional) re-sends a still-firing alert. ``channels`` names the
    channels to notify (empty: all). ``interval`` (optional) evaluates this rule less
    often than the manager's interval (budgets over long windows).

    >>> from tachimeter.alerts.conditions import MetricThreshold, SeriesData
    >>> rule = AlertRule("QueueBacklog", MetricThreshold(lambda now: [SeriesData.single(120)],
    ...     ">", 100), for_="2m", severity="warning",
    ...     annotations={"summary": "queue at {value:.0f} (> {threshold:.0f})"})
    >>> rule.for_, rule.severity.value
    (120.0, 'warning')
    """

    __slots__ = (
        "annotations",
        "channels",
        "condition",
        "cooldown",
        "for_",
        "interval",
        "keep_firing_for",
        "labels",
        "name",
        "repeat_interval",
        "severity",
    )

    def __init__(
        self,
        name: str,
        condition: Condition,
        *,
        severity: Severity | str = Severity.WARNING,
        for_: DurationLike | None = None,
        keep_firing_for: DurationLike = 0,
        cooldown: DurationLike = "5m",
        repeat_interval: DurationLike | None = None,
        channels: Iterable[str] = (),
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        interval: DurationLike | None = None,
    ) -> None:
        if not isinstance(name, str) or not _RULE_NAME.match(name):
            raise ConfigError(
                f"alert rule name {name!r} must start with a letter or _ and contain only "
                "letters, digits, _ . : - (at most 200 characters)"
            )
        where = f"rule {name!r}"
        if not isinstance(condition, Condition):
            raise ConfigError(
                f"{where}: condition must be a condition of tachimeter.alerts "
                f"(MetricThreshold, ErrorRate, ...), got {type(condition).__name__}"
            )
        self.name = name
        self.condition = condition
        self.severity = Severity.parse(severity, f"{where} severity")
        own_for = getattr(condition, "for_", None)
        if for_ is not None and own_for is not None:
            raise ConfigError(
                f"{where}: 'for' is given on both the rule and its condition; keep one"
            )
        chosen = for_ if for_ is not None else own_for
        self.for_ = 0.0 if chosen is None else parse_duration(chosen, f"{where} for")
        self.keep_firing_for = parse_duration(keep_firing_for, f"{where} keep_firing_for")
        self.cooldown = parse_duration(cooldown, f"{where} cooldown")
        self.repeat_interval = (
            None
            if repeat_interval is None
            else parse_duration(repeat_interval, f"{where} repeat_interval", allow_zero=False)
        )
        if self.repeat_interval is not None and self.repeat_interval < self.cooldown:
            raise ConfigError(
                f"{where}: repeat_interval ({repeat_interval!r}) must be >= cooldown "
                f"({cooldown!r}), or the cooldown would hold every repeat back"
            )
        self.interval = (
            None
            if interval is None
            else parse_duration(interval, f"{where} interval", allow_zero=False)
        )
        if isinstance(channels, str):
            raise ConfigError(f"{where}: channels must be a list of names, got {channels!r}")
        self.channels = tuple(channels)
        for channel in self.channels:
            if not isinstance(channel, str) or not channel:
                raise ConfigError(f"{where}: channel names must be non-empty text: {channel!r}")
        self.labels = _check_labels(labels or {}, where)
        self.annotations = {
            key: AnnotationTemplate(text, f"{where} annotations.{key}")
            for key, text in (annotations or {}).items()
        }
        for key in self.annotations:
            if not _LABEL_NAME.match(key):
                raise ConfigError(f"{where}: annotation name {key!r} is not a valid name")

    def render_annotations(
        self,
        value: float | None,
        threshold: float | None,
        labels: Mapping[str, str],
        details: Mapping[str, Any],
        state: str,
    ) -> dict[str, str]:
        """The annotations filled for one alert."""
        fields: dict[str, Any] = {
            **details,
            "value": value,
            "threshold": threshold,
            "rule": self.name,
            "severity": self.severity.value,
            "state": state,
        }
        return {key: t.render(fields, labels) for key, t in self.annotations.items()}

    def describe(self) -> str:
        """The condition in one line."""
        return self.condition.describe()

    def __repr__(self) -> str:
        return f"AlertRule({self.name!r}, {self.describe()!r}, severity={self.severity.value!r})"


def _check_labels(labels: Mapping[str, str], where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in labels.items():
        if not isinstance(key, str) or not _LABEL_NAME.match(key):
            raise ConfigError(f"{where}: label name {key!r} is not a valid label name")
        if key in _RESERVED_LABELS:
            raise ConfigError(
                f"{where}: label {key!r} is set by Tachimeter (the rule's name and severity)"
            )
        if not isinstance(value, str):
            raise ConfigError(f"{where}: label {key} must be text, got {value!r}")
        out[key] = value
    return out
