"""Helpers for testing code that uses Tachimeter: in-memory sinks and a private collector.

>>> from tachimeter.testing import MemorySink, collector_for_tests
>>> sink = MemorySink()
>>> with collector_for_tests(sink) as collector:
...     collector.track("feature_used", {"feature": "search"})
...     assert collector.flush()
>>> [e.event_name for e in sink.events()]
['feature_used']
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tachimeter.collect.collector import EventCollector
from tachimeter.collect.sinks import MemorySink
from tachimeter.config.sources import load_config

__all__ = ["MemorySink", "collector_for_tests"]


@contextmanager
def collector_for_tests(*sinks: Any, **settings: Any) -> Iterator[EventCollector]:
    """A collector isolated from files and the environment, shut down on exit.

    Sampling is seeded (``sampling.seed=0``) so runs are reproducible; ``settings`` are
    configuration keys as for ``load_config``.
    """
    settings.setdefault("sampling.seed", 0)
    config = load_config(env={}, cwd="/nonexistent-tachimeter-test-dir", **settings)
    collector = EventCollector(config, sinks=sinks, register_atexit=False)
    try:
        yield collector
    finally:
        collector.shutdown(timeout=5)
