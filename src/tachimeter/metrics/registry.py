"""Registries of metrics and collectors, the default ``REGISTRY``, and the module-level
``counter``/``gauge``/``histogram``/``summary``/``timer`` definitions on it.

Defining a metric through a registry is get-or-create: an identical re-definition
(same kind, name, help, labels, unit, buckets or quantiles, ``max_series``) returns the
metric already registered, so ``counter("x", ...)`` at an import-time call site that
runs twice is safe; a conflicting one raises ``ConfigError`` naming what differs.
"""

from __future__ import annotations

import logging
import os
import reprlib
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from tachimeter.errors import ConfigError
from tachimeter.metrics.family import MetricFamily, Sample
from tachimeter.metrics.naming import (
    METRIC_KINDS,
    is_valid_label_name,
    is_valid_metric_name,
    sample_names,
)
from tachimeter.metrics.primitives import (
    DEFAULT_AGE_BUCKETS,
    DEFAULT_BUCKETS,
    DEFAULT_MAX_AGE,
    DEFAULT_QUANTILES,
    Counter,
    Gauge,
    Histogram,
    Metric,
    Summary,
)

__all__ = [
    "REGISTRY",
    "Collector",
    "Registry",
    "counter",
    "gauge",
    "histogram",
    "summary",
    "timer",
]

_log = logging.getLogger("tachimeter.metrics")

_M = TypeVar("_M", bound=Metric[Any])

# The registry's own counters: exposed only while non-zero, so a healthy registry adds
# no series.
_OVERFLOW = "tachimeter_metric_series_overflow"
_INVALID = "tachimeter_metric_invalid_observations"
_FAILURES = "tachimeter_metric_collector_failures"
_OWN_FAMILIES = (_OVERFLOW, _INVALID, _FAILURES)

_FIELDS = ("type", "name", "documentation", "labels", "unit", "options", "max_series")


class Collector(Protocol):
    """A callable returning metric families at scrape time, for state owned elsewhere
    (the event collector's statistics, system metrics)."""

    def __call__(self) -> Iterable[MetricFamily]: ...


class Registry:
    """A set of metrics and collectors that are exposed together.

    >>> registry = Registry()
    >>> jobs = registry.counter("jobs", "Jobs run", ["queue"])
    >>> jobs.labels("default").inc()
    >>> registry.counter("jobs_total", "Jobs run", ["queue"]) is jobs
    True
    >>> [f.name for f in registry.collect()]
    ['jobs']

    Thread-safe. Collect through ``tachimeter.metrics.generate_latest(registry)`` for
    the Prometheus text, or ``collect()`` for ``MetricFamily`` objects.
    """

    __slots__ = (
        "__weakref__",
        "_collector_failures",
        "_collectors",
        "_lock",
        "_metrics",
        "_owners",
        "_warned_collectors",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metrics: dict[str, Metric[Any]] = {}
        # Every sample name (and family name) in use -> what uses it.
        self._owners: dict[str, str] = {}
        for own in _OWN_FAMILIES:
            for name in (own, *sample_names("counter", own)):
                self._owners[name] = "the registry's own counter " + repr(own)
        self._collectors: list[Collector] = []
        self._collector_failures: dict[str, int] = {}
        self._warned_collectors: set[str] = set()
        _REGISTRIES.add(self)

    def register(self, metric: _M) -> _M:
        """Add a metric built directly (``Counter(...)``); raises ``ConfigError`` if its
        name or one of its sample names is taken."""
        with self._lock:
            existing = self._metrics.get(metric.name)
            if existing is metric:
                return metric
            if existing is not None:
                if existing.definition() == metric.definition():
                    raise ConfigError(
                        f"{metric.kind} {metric.name!r} is already registered as another "
                        "object; define it through the registry (registry."
                        f"{metric.kind}(...)) to get the existing one back"
                    )
                raise ConfigError(_conflict(existing, metric))
            self._add(metric)
        return metric

    def _get_or_create(self, metric: _M) -> _M:
        with self._lock:
            existing = self._metrics.get(metric.name)
            if existing is None:
                self._add(metric)
                return metric
            if existing.definition() != metric.definition() or type(existing) is not type(metric):
                raise ConfigError(_conflict(existing, metric))
            return existing

    def _add(self, metric: Metric[Any]) -> None:
        names = (metric.name, *sample_names(metric.kind, metric.name))
        for name in names:
            owner = self._owners.get(name)
            if owner is not None:
                raise ConfigError(
                    f"{metric.kind} {metric.name!r} would expose the name {name!r}, "
                    f"which {owner} already uses; choose another metric name"
                )
        for name in names:
            self._owners[name] = f"{metric.kind} {metric.name!r}"
        self._metrics[metric.name] = metric

    def unregister(self, metric: Metric[Any]) -> None:
        """Remove a metric (no-op if it is not registered here)."""
        with self._lock:
            if self._metrics.get(metric.name) is not metric:
                return
            del self._metrics[metric.name]
            for name in (metric.name, *sample_names(metric.kind, metric.name)):
                self._owners.pop(name, None)

    def register_collector(self, collector: Collector) -> Collector:
        """Add a callable returning ``MetricFamily`` objects at every scrape.

        Usable as a decorator. A collector that raises or returns an invalid family
        (bad name, a name already in use, a sample that does not belong to its family)
        loses that scrape's families; it is logged once and counted in
        ``tachimeter_metric_collector_failures_total{collector=...}``.
        """
        if not callable(collector):
            raise ConfigError(f"a collector must be callable, got {collector!r}")
        with self._lock:
            if collector not in self._collectors:
                self._collectors.append(collector)
        return collector

    def unregister_collector(self, collector: Collector) -> None:
        """Remove a collector (no-op if it is not registered here)."""
        with self._lock:
            if collector in self._collectors:
                self._collectors.remove(collector)

    def get(self, name: str) -> Metric[Any] | None:
        """The metric with family name ``name``, if registered."""
        with self._lock:
            return self._metrics.get(name)

    def metrics(self) -> list[Metric[Any]]:
        """The registered metrics, in registration order."""
        with self._lock:
            return list(self._metrics.values())

    def collect(self) -> list[MetricFamily]:
        """Every family: metrics, then collectors, then the registry's own counters."""
        with self._lock:
            metrics = list(self._metrics.values())
            collectors = list(self._collectors)
            taken = set(self._owners)
        families = [metric.collect() for metric in metrics]
        for collector in collectors:
            families.extend(self._collect_from(collector, taken))
        families.extend(self._own_families(metrics))
        return families

    def _collect_from(self, collector: Collector, taken: set[str]) -> list[MetricFamily]:
        try:
            produced = list(collector())
            problem = None
            for family in produced:
                problem = _check_family(family, taken)
                if problem is not None:
                    break
                taken.update((family.name, *sample_names(family.kind, family.name)))
        except Exception as exc:
            produced = []
            problem = f"raised {type(exc).__name__}: {exc}"
        if problem is None:
            return produced
        label = _collector_label(collector)
        with self._lock:
            self._collector_failures[label] = self._collector_failures.get(label, 0) + 1
            first = label not in self._warned_collectors
            self._warned_collectors.add(label)
        if first:
            _log.warning(
                "metric collector %s %s; its families are left out of this scrape "
                "(further failures are counted in %s_total, not logged)",
                label,
                problem,
                _FAILURES,
            )
        return []

    def _own_families(self, metrics: list[Metric[Any]]) -> list[MetricFamily]:
        with self._lock:
            failures = sorted(self._collector_failures.items())
        counts = (
            (
                _OVERFLOW,
                "Label sets folded into a metric's __overflow__ series by its max_series cap",
                "metric",
                [(m.name, m.series_overflow) for m in metrics if m.series_overflow],
            ),
            (
                _INVALID,
                "Measurements and label lookups a metric rejected as invalid",
                "metric",
                [(m.name, m.invalid_observations) for m in metrics if m.invalid_observations],
            ),
            (_FAILURES, "Scrapes in which a metric collector failed", "collector", failures),
        )
        families = []
        for name, documentation, label, values in counts:
            if values:
                samples = tuple(
                    Sample(name + "_total", ((label, key),), float(value)) for key, value in values
                )
                families.append(MetricFamily(name, "counter", documentation, samples))
        return families

    def _reinit_after_fork(self) -> None:
        self._lock = threading.Lock()
        for metric in self._metrics.values():
            metric._reinit_locks()

    def counter(
        self,
        name: str,
        documentation: str,
        labels: Iterable[str] = (),
        *,
        unit: str = "",
        max_series: int | None = None,
    ) -> Counter:
        """Get or create a ``Counter`` in this registry."""
        return self._get_or_create(
            Counter(name, documentation, labels, unit=unit, max_series=max_series)
        )

    def gauge(
        self,
        name: str,
        documentation: str,
        labels: Iterable[str] = (),
        *,
        unit: str = "",
        max_series: int | None = None,
    ) -> Gauge:
        """Get or create a ``Gauge`` in this registry."""
        return self._get_or_create(
            Gauge(name, documentation, labels, unit=unit, max_series=max_series)
        )

    def histogram(
        self,
        name: str,
        documentation: str,
        labels: Iterable[str] = (),
        *,
        unit: str = "",
        buckets: Iterable[float] = DEFAULT_BUCKETS,
        max_series: int | None = None,
    ) -> Histogram:
        """Get or create a ``Histogram`` in this registry."""
        return self._get_or_create(
            Histogram(
                name, documentation, labels, unit=unit, buckets=buckets, max_series=max_series
            )
        )

    def summary(
        self,
        name: str,
        documentation: str,
        labels: Iterable[str] = (),
        *,
        unit: str = "",
        quantiles: Sequence[float] = DEFAULT_QUANTILES,
        max_age: float = DEFAULT_MAX_AGE,
        age_buckets: int = DEFAULT_AGE_BUCKETS,
        max_series: int | None = None,
        clock: Callable[[], float] | None = None,
    ) -> Summary:
        """Get or create a ``Summary`` in this registry (``clock`` is not compared)."""
        return self._get_or_create(
            Summary(
                name,
                documentation,
                labels,
                unit=unit,
                quantiles=quantiles,
                max_age=max_age,
                age_buckets=age_buckets,
                max_series=max_series,
                clock=clock,
            )
        )

    def timer(
        self,
        name: str,
        documentation: str,
        labels: Iterable[str] = (),
        *,
        buckets: Iterable[float] = DEFAULT_BUCKETS,
        max_series: int | None = None,
    ) -> Histogram:
        """Get or create a histogram of seconds (name ends in ``_seconds``) to time with:
        ``with registry.timer("step", "...").time(): ...``."""
        return self.histogram(
            name, documentation, labels, unit="seconds", buckets=buckets, max_series=max_series
        )


def _conflict(existing: Metric[Any], new: Metric[Any]) -> str:
    old_def = existing.definition()
    new_def = new.definition()
    differences = [
        f"{field} {old!r} (now {fresh!r})"
        for field, old, fresh in zip(_FIELDS, old_def, new_def, strict=True)
        if old != fresh
    ] or [f"class {type(existing).__name__} (now {type(new).__name__})"]
    return (
        f"metric {new.name!r} is already defined with " + "; ".join(differences) + ": "
        "a metric keeps one definition, so repeat the same arguments or use another name"
    )


def _collector_label(collector: Collector) -> str:
    name = getattr(collector, "__qualname__", None)
    if not isinstance(name, str):
        name = type(collector).__qualname__
    return name


def _check_family(family: object, taken: set[str]) -> str | None:
    """Why a collector's family cannot be exposed, or None if it can."""
    if not isinstance(family, MetricFamily):
        return f"returned {reprlib.repr(family)}, not a MetricFamily"
    name = family.name
    if not is_valid_metric_name(name):
        return f"returned a family with the invalid name {name!r}"
    if family.kind not in METRIC_KINDS:
        return f"returned family {name!r} of unknown kind {family.kind!r}"
    if family.unit and not name.endswith("_" + family.unit):
        return f"returned family {name!r} with unit {family.unit!r} but no '_{family.unit}' suffix"
    allowed = sample_names(family.kind, name)
    for used in (name, *allowed):
        if used in taken:
            return f"returned family {name!r}, whose name {used!r} is already in use"
    for sample in family.samples:
        if sample.name not in allowed:
            return f"returned sample {sample.name!r}, which a {family.kind} {name!r} cannot have"
        for label, value in sample.labels:
            if not is_valid_label_name(label) or not isinstance(value, str):
                return f"returned sample {sample.name!r} with bad label {label!r}={value!r}"
        if isinstance(sample.value, bool) or not isinstance(sample.value, int | float):
            return f"returned sample {sample.name!r} with non-numeric value {sample.value!r}"
    return None


_REGISTRIES: weakref.WeakSet[Registry] = weakref.WeakSet()


def _reinit_registries_after_fork() -> None:
    # Covers every metric registered somewhere; a metric never registered keeps its
    # locks, so code that forks while recording into one should register it.
    for registry in list(_REGISTRIES):
        registry._reinit_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_registries_after_fork)

REGISTRY = Registry()
"""The default registry: the module-level functions define metrics here."""


def _target(registry: Registry | None) -> Registry:
    return REGISTRY if registry is None else registry


def counter(
    name: str,
    documentation: str,
    labels: Iterable[str] = (),
    unit: str = "",
    registry: Registry | None = None,
    max_series: int | None = None,
) -> Counter:
    """Get or create a ``Counter`` (default registry): ``counter("http_requests", "...",
    ["route"])`` is exposed as ``http_requests_total``."""
    return _target(registry).counter(name, documentation, labels, unit=unit, max_series=max_series)


def gauge(
    name: str,
    documentation: str,
    labels: Iterable[str] = (),
    unit: str = "",
    registry: Registry | None = None,
    max_series: int | None = None,
) -> Gauge:
    """Get or create a ``Gauge`` (default registry)."""
    return _target(registry).gauge(name, documentation, labels, unit=unit, max_series=max_series)


def histogram(
    name: str,
    documentation: str,
    labels: Iterable[str] = (),
    unit: str = "",
    registry: Registry | None = None,
    max_series: int | None = None,
    buckets: Iterable[float] = DEFAULT_BUCKETS,
) -> Histogram:
    """Get or create a ``Histogram`` (default registry)."""
    return _target(registry).histogram(
        name, documentation, labels, unit=unit, buckets=buckets, max_series=max_series
    )


def summary(
    name: str,
    documentation: str,
    labels: Iterable[str] = (),
    unit: str = "",
    registry: Registry | None = None,
    max_series: int | None = None,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    max_age: float = DEFAULT_MAX_AGE,
    age_buckets: int = DEFAULT_AGE_BUCKETS,
    clock: Callable[[], float] | None = None,
) -> Summary:
    """Get or create a ``Summary`` (default registry)."""
    return _target(registry).summary(
        name,
        documentation,
        labels,
        unit=unit,
        quantiles=quantiles,
        max_age=max_age,
        age_buckets=age_buckets,
        max_series=max_series,
        clock=clock,
    )


def timer(
    name: str,
    documentation: str,
    labels: Iterable[str] = (),
    buckets: Iterable[float] = DEFAULT_BUCKETS,
    registry: Registry | None = None,
    max_series: int | None = None,
) -> Histogram:
    """Get or create a histogram of seconds to time code with (default registry):
    ``with timer("tool_latency", "...").time(): ...`` observes into
    ``tool_latency_seconds``."""
    return _target(registry).timer(
        name, documentation, labels, buckets=buckets, max_series=max_series
    )
