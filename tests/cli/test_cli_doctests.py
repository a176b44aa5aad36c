"""The docstring examples of the CLI's options and of the report and export packages run
and give what they show."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize(
    "name",
    [
        "tachimeter.cli.options",
        "tachimeter.export",
        "tachimeter.export.exporter",
        "tachimeter.export.openmetrics",
        "tachimeter.export.writers",
        "tachimeter.report",
        "tachimeter.report.charts",
        "tachimeter.report.data",
        "tachimeter.report.display",
        "tachimeter.report.render",
    ],
)
def test_docstring_examples_run(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0
