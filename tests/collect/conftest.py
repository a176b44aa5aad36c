"""Fixtures for the collector tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from collecting import make_config

from tachimeter.collect.collector import EventCollector
from tachimeter.config.settings import AnalyticsConfig


@pytest.fixture
def collectors() -> Iterator[Any]:
    """Collectors made through this fixture are shut down after the test."""
    made: list[EventCollector] = []

    def make(config: AnalyticsConfig | None = None, **kwargs: Any) -> EventCollector:
        kwargs.setdefault("register_atexit", False)
        collector = EventCollector(config or make_config(), **kwargs)
        made.append(collector)
        return collector

    yield make
    for collector in made:
        collector.shutdown(timeout=2)
