"""Metric and label naming rules (Prometheus data model), checked at definition time.

Internal: the primitives call these so that a bad definition raises ``ConfigError``
where it is written, never when a sample is recorded or scraped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from tachimeter.errors import ConfigError

__all__ = [
    "METRIC_KINDS",
    "build_metric_name",
    "check_label_names",
    "check_metric_name",
    "is_valid_label_name",
    "is_valid_metric_name",
    "sample_names",
]

METRIC_KINDS = ("counter", "gauge", "histogram", "summary", "unknown")

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_METRIC_RULE = "[a-zA-Z_:][a-zA-Z0-9_:]* (letters, digits, '_' and ':', not starting with a digit)"
_LABEL_RULE = "[a-zA-Z_][a-zA-Z0-9_]* (letters, digits and '_', not starting with a digit)"

# Labels the exposition adds itself to samples of these kinds.
_RESERVED_LABELS = {"histogram": ("le",), "summary": ("quantile",)}

# The sample names each kind exposes, as suffixes of the family name.
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "unknown": ("",),
}


def is_valid_metric_name(name: str) -> bool:
    """Whether ``name`` follows the Prometheus metric-name rule."""
    return _METRIC_NAME.fullmatch(name) is not None


def is_valid_label_name(name: str) -> bool:
    """Whether ``name`` follows the Prometheus label-name rule (``__`` prefix allowed)."""
    return _LABEL_NAME.fullmatch(name) is not None


def check_metric_name(name: object) -> str:
    """Return ``name`` if it is a valid metric name, else raise ``ConfigError``."""
    if not isinstance(name, str) or not is_valid_metric_name(name):
        raise ConfigError(f"metric name {name!r} is invalid: names must match {_METRIC_RULE}")
    return name


def build_metric_name(kind: str, name: object, unit: object) -> str:
    """The family name for a user-given base name: ``_total`` stripped from counters
    (the exposition adds it back) and ``_<unit>`` appended when missing."""
    base = check_metric_name(name)
    if not isinstance(unit, str) or (unit and _LABEL_NAME.fullmatch(unit) is None):
        raise ConfigError(
            f"unit {unit!r} of metric {name!r} is invalid: units must match {_LABEL_RULE}, "
            "for example 'seconds' or 'bytes'"
        )
    full = base
    if kind == "counter" and full.endswith("_total"):
        full = full[: -len("_total")]
        if not full:
            raise ConfigError(f"counter name {name!r} is empty once '_total' is removed")
    if unit and not full.endswith("_" + unit):
        full = f"{full}_{unit}"
    return full


def check_label_names(metric: str, kind: str, labels: object) -> tuple[str, ...]:
    """Validate a metric's label names and return them as a tuple."""
    if isinstance(labels, str):
        raise ConfigError(
            f"labels of metric {metric!r} must be a sequence of label names, got the string "
            f"{labels!r}; write labels=[{labels!r}]"
        )
    if not isinstance(labels, Iterable):
        raise ConfigError(
            f"labels of metric {metric!r} must be a sequence of label names, got {labels!r}"
        )
    names = tuple(labels)
    reserved = _RESERVED_LABELS.get(kind, ())
    seen: set[str] = set()
    for label in names:
        if not isinstance(label, str) or not is_valid_label_name(label):
            raise ConfigError(
                f"label name {label!r} of metric {metric!r} is invalid: "
                f"label names must match {_LABEL_RULE}"
            )
        if label.startswith("__"):
            raise ConfigError(
                f"label name {label!r} of metric {metric!r} is reserved: "
                "names starting with '__' are for Prometheus' internal use"
            )
        if label in reserved:
            raise ConfigError(
                f"label name {label!r} of {kind} {metric!r} is reserved: "
                f"the exposition adds {label!r} to {kind} samples itself"
            )
        if label in seen:
            raise ConfigError(f"label name {label!r} appears twice in metric {metric!r}")
        seen.add(label)
    return names


def sample_names(kind: str, name: str) -> tuple[str, ...]:
    """Every sample name a family of ``kind`` named ``name`` may expose."""
    return tuple(name + suffix for suffix in _SUFFIXES[kind])
