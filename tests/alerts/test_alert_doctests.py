"""The examples in the docstrings of the alert and anomaly modules run as written."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "tachimeter.alerts",
    "tachimeter.alerts.channels",
    "tachimeter.alerts.conditions",
    "tachimeter.alerts.durations",
    "tachimeter.alerts.history",
    "tachimeter.alerts.loader",
    "tachimeter.alerts.manager",
    "tachimeter.alerts.rules",
    "tachimeter.alerts.sources",
    "tachimeter.alerts.state",
    "tachimeter.analyze.anomalies",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0
