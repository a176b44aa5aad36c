"""Metric, label and unit names follow the Prometheus rules, checked at definition."""

from __future__ import annotations

import pytest

from tachimeter.errors import ConfigError
from tachimeter.metrics import Counter, Gauge, Histogram, Summary


@pytest.mark.parametrize("name", ["", "1abc", "http-requests", "a b", "métrique", "a.b", None, 3])
def test_invalid_metric_names_raise_with_the_rule(name: object) -> None:
    """The error names the bad value and the rule it breaks."""
    with pytest.raises(ConfigError) as info:
        Gauge(name, "doc")  # type: ignore[arg-type]
    message = str(info.value)
    assert repr(name) in message
    assert "[a-zA-Z_:][a-zA-Z0-9_:]*" in message


@pytest.mark.parametrize("name", ["a", "_private", "job:rate5m", "A_b_9", "tachimeter_x"])
def test_valid_metric_names_are_accepted(name: str) -> None:
    """Letters, digits, '_' and ':' (not leading digit) are fine."""
    assert Gauge(name, "doc").name == name


@pytest.mark.parametrize("label", ["1a", "a-b", "a:b", "", "é"])
def test_invalid_label_names_raise_with_the_rule(label: str) -> None:
    """Label names follow [a-zA-Z_][a-zA-Z0-9_]*; the error says which metric."""
    with pytest.raises(ConfigError) as info:
        Counter("req", "doc", [label])
    message = str(info.value)
    assert repr(label) in message and "'req'" in message
    assert "[a-zA-Z_][a-zA-Z0-9_]*" in message


def test_double_underscore_labels_are_reserved() -> None:
    """Labels starting with '__' belong to Prometheus."""
    with pytest.raises(ConfigError, match="'__name' of metric 'req' is reserved"):
        Counter("req", "doc", ["__name"])


def test_le_is_reserved_for_histograms_only() -> None:
    """'le' is refused on a histogram, allowed elsewhere."""
    with pytest.raises(ConfigError, match="'le' of histogram 'h' is reserved"):
        Histogram("h", "doc", ["le"])
    assert Gauge("g", "doc", ["le"]).label_names == ("le",)
    assert Summary("s", "doc", ["le"]).label_names == ("le",)


def test_duplicate_label_names_raise() -> None:
    """A label name may appear once."""
    with pytest.raises(ConfigError, match="'route' appears twice in metric 'req'"):
        Counter("req", "doc", ["route", "route"])


def test_a_single_string_is_not_taken_as_label_names() -> None:
    """labels="route" would mean five one-letter labels: refused with the fix."""
    with pytest.raises(ConfigError, match=r"write labels=\['route'\]"):
        Counter("req", "doc", "route")


@pytest.mark.parametrize("unit", ["Seconds!", "1s", "per-second", 5])
def test_invalid_units_raise(unit: object) -> None:
    """Units become part of the name, so they follow the label-name rule."""
    with pytest.raises(ConfigError, match=f"unit {unit!r} of metric 'lat' is invalid"):
        Histogram("lat", "doc", unit=unit)  # type: ignore[arg-type]


def test_counter_named_only_total_is_refused() -> None:
    """'_total' alone leaves no name once the suffix is removed."""
    with pytest.raises(ConfigError, match="empty once '_total' is removed"):
        Counter("_total", "doc")


def test_documentation_must_be_a_string() -> None:
    """The help text is required and must be a str."""
    with pytest.raises(ConfigError, match="documentation of metric 'g' must be a string"):
        Gauge("g", None)  # type: ignore[arg-type]
