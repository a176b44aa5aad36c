"""Counter, Gauge, Histogram and Summary, their per-label-set children, and Timer.

A metric (family) is defined once with a name, help text and fixed label names; every
label set gets a child holding the numbers, created on first use and cached in a dict
keyed by the tuple of label values. A child's update is one lock-protected number
update, so pre-binding ``child = metric.labels("a")`` is the fastest way to record.

Bad measurements (negative counter increments, NaN, infinities, non-numbers, wrong
label values) never raise into the caller: they are counted in the metric's
``invalid_observations``, logged once per metric on the ``tachimeter.metrics`` logger,
and the call returns. Bad definitions raise ``ConfigError`` at construction.
"""

from __future__ import annotations

import functools
import logging
import math
import reprlib
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from itertools import pairwise
from types import TracebackType
from typing import Any, ClassVar, Generic, TypeVar

from tachimeter.errors import ConfigError
from tachimeter.metrics.family import MetricFamily, MetricKind, Sample
from tachimeter.metrics.naming import build_metric_name, check_label_names
from tachimeter.metrics.sketch import QuantileSketch

__all__ = [
    "DEFAULT_BUCKETS",
    "DEFAULT_QUANTILES",
    "OVERFLOW_LABEL_VALUE",
    "Counter",
    "CounterChild",
    "Gauge",
    "GaugeChild",
    "Histogram",
    "HistogramChild",
    "Metric",
    "Summary",
    "SummaryChild",
    "Timer",
    "exponential_buckets",
    "format_float",
    "linear_buckets",
]

_log = logging.getLogger("tachimeter.metrics")

_INF = math.inf

# Prometheus' default buckets: a web or RPC request from 5 ms to 10 s.
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    _INF,
)
# Median, p90 and p99: the usual latency objectives.
DEFAULT_QUANTILES: tuple[float, ...] = (0.5, 0.9, 0.99)
# Prometheus' Go client defaults: quantiles over the last 10 minutes, rotated in 5 steps,
# so the window holds between 8 and 10 minutes of observations.
DEFAULT_MAX_AGE = 600.0
DEFAULT_AGE_BUCKETS = 5

OVERFLOW_LABEL_VALUE = "__overflow__"

_F = TypeVar("_F", bound=Callable[..., Any])
_ChildT = TypeVar("_ChildT", bound="_Child")


def format_float(value: float) -> str:
    """A float as Prometheus' Go code writes it: ``+Inf``, ``-Inf``, ``NaN``, ``1.0``,
    ``2.5e+06`` (Go switches to exponents above 1e6 where Python's ``repr`` does not)."""
    if value == _INF:
        return "+Inf"
    if value == -_INF:
        return "-Inf"
    if value != value:
        return "NaN"
    text = repr(float(value))
    dot = text.find(".")
    if value > 0 and dot > 6:
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text


def _round_bound(value: float) -> float:
    """Drop binary noise from a computed bucket bound (0.30000000000000004 -> 0.3)."""
    return float(f"{value:.15g}")


def exponential_buckets(start: float, factor: float, count: int) -> tuple[float, ...]:
    """``count`` bounds ``start * factor**i``: ``exponential_buckets(0.001, 2, 3)`` is
    ``(0.001, 0.002, 0.004)`` (``+Inf`` is added by the histogram)."""
    if not (isinstance(start, int | float) and 0.0 < start < _INF):
        raise ConfigError(f"exponential_buckets start must be a finite number > 0, got {start!r}")
    if not (isinstance(factor, int | float) and 1.0 < factor < _INF):
        raise ConfigError(f"exponential_buckets factor must be a finite number > 1, got {factor!r}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"exponential_buckets count must be an integer >= 1, got {count!r}")
    try:
        bounds = [_round_bound(start * factor**i) for i in range(count)]
    except OverflowError:
        raise ConfigError(
            f"exponential_buckets({start!r}, {factor!r}, {count!r}) exceeds the float range"
        ) from None
    return _checked_bounds("exponential_buckets", bounds)


def linear_buckets(start: float, width: float, count: int) -> tuple[float, ...]:
    """``count`` bounds ``start + width * i``: ``linear_buckets(0.1, 0.1, 3)`` is
    ``(0.1, 0.2, 0.3)`` (``+Inf`` is added by the histogram)."""
    if not (isinstance(start, int | float) and -_INF < start < _INF):
        raise ConfigError(f"linear_buckets start must be a finite number, got {start!r}")
    if not (isinstance(width, int | float) and 0.0 < width < _INF):
        raise ConfigError(f"linear_buckets width must be a finite number > 0, got {width!r}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"linear_buckets count must be an integer >= 1, got {count!r}")
    return _checked_bounds(
        "linear_buckets", [_round_bound(start + width * i) for i in range(count)]
    )


def _checked_bounds(where: str, bounds: list[float]) -> tuple[float, ...]:
    for low, high in pairwise(bounds):
        if not low < high:
            raise ConfigError(
                f"{where} produced bounds that are not increasing ({low!r}, {high!r}): "
                "the step is too small for float precision"
            )
    return tuple(bounds)


def _is_async(func: Callable[..., Any]) -> bool:
    # inspect costs about 10 ms to import; decorating is rare, importing is not.
    import inspect

    return inspect.iscoroutinefunction(func)


class Timer:
    """Measures seconds with ``time.perf_counter`` and observes them into a metric.

    Made by ``Histogram.time()`` and ``Summary.time()`` (or their children). As a
    context manager it times the block, even when it raises, and keeps the duration in
    ``elapsed``; as a decorator it times every call, for plain and ``async`` functions.

    >>> h = Histogram("job_duration_seconds", "Time spent running jobs")
    >>> with h.time() as t:
    ...     pass
    >>> t.elapsed >= 0.0
    True
    >>> @h.time()
    ... def job() -> int:
    ...     return 42
    >>> job(), h.labels().count
    (42, 2)
    """

    __slots__ = ("_observe", "_start", "elapsed")

    def __init__(self, observe: Callable[[float], None]) -> None:
        self._observe = observe
        self._start = 0.0
        self.elapsed: float | None = None

    def __enter__(self) -> Timer:
        self._start = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.elapsed = time.perf_counter() - self._start
        self._observe(self.elapsed)

    def __call__(self, func: _F) -> _F:
        """Wrap ``func`` so that every call is timed (each call has its own start time)."""
        observe = self._observe
        perf_counter = time.perf_counter
        if _is_async(func):

            @functools.wraps(func)
            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                start = perf_counter()
                try:
                    return await func(*args, **kwargs)
                finally:
                    observe(perf_counter() - start)

            return timed_async  # type: ignore[return-value]

        @functools.wraps(func)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                observe(perf_counter() - start)

        return timed  # type: ignore[return-value]


class _InProgress:
    """Adds one to a gauge while a block or call runs (``Gauge.track_inprogress()``)."""

    __slots__ = ("_child",)

    def __init__(self, child: GaugeChild | Gauge) -> None:
        self._child = child

    def __enter__(self) -> None:
        self._child.inc()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._child.dec()

    def __call__(self, func: _F) -> _F:
        """Wrap ``func`` so that the gauge counts its running calls."""
        child = self._child
        if _is_async(func):

            @functools.wraps(func)
            async def tracked_async(*args: Any, **kwargs: Any) -> Any:
                child.inc()
                try:
                    return await func(*args, **kwargs)
                finally:
                    child.dec()

            return tracked_async  # type: ignore[return-value]

        @functools.wraps(func)
        def tracked(*args: Any, **kwargs: Any) -> Any:
            child.inc()
            try:
                return func(*args, **kwargs)
            finally:
                child.dec()

        return tracked  # type: ignore[return-value]


class _Child:
    """State shared by every child: its family (for error accounting) and label pairs."""

    __slots__ = ("_created", "_family", "_lock", "_pairs")

    # The hot paths take the lock with acquire()/release() in try/finally rather
    # than `with`: the same guarantee at about half the cost on CPython 3.11.

    def __init__(self, family: Metric[Any], pairs: tuple[tuple[str, str], ...]) -> None:
        self._family = family
        self._pairs = pairs
        self._lock = threading.Lock()
        self._created = time.time()

    @property
    def label_values(self) -> tuple[str, ...]:
        """This child's label values, in the order of the metric's label names."""
        return tuple(value for _, value in self._pairs)

    def _reinit_lock(self) -> None:
        self._lock = threading.Lock()

    def _invalid(self, value: object, rule: str) -> None:
        self._family._count_invalid(self._pairs, value, rule)

    def _append_samples(self, out: list[Sample], name: str) -> None:
        raise NotImplementedError


class CounterChild(_Child):
    """One series of a ``Counter``: a float that only goes up.

    >>> child = Counter("retries", "Retries per tool", ["tool"]).labels("search")
    >>> child.inc(); child.inc(2); child.value
    3.0
    """

    __slots__ = ("_value",)

    def __init__(self, family: Metric[Any], pairs: tuple[tuple[str, str], ...]) -> None:
        super().__init__(family, pairs)
        self._value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (finite, >= 0; anything else is counted as invalid)."""
        try:
            if 0.0 <= amount < _INF:
                lock = self._lock
                lock.acquire()
                try:
                    self._value += amount
                finally:
                    lock.release()
                return
        except (TypeError, ArithmeticError):
            pass
        self._invalid(amount, "counter increments must be finite numbers >= 0")

    @property
    def value(self) -> float:
        """The current total."""
        with self._lock:
            return self._value

    def _append_samples(self, out: list[Sample], name: str) -> None:
        with self._lock:
            value = self._value
        out.append(Sample(name + "_total", self._pairs, value))
        out.append(Sample(name + "_created", self._pairs, self._created))


class GaugeChild(_Child):
    """One series of a ``Gauge``: a float that goes up and down.

    >>> child = Gauge("queue_depth", "Queued events", ["queue"]).labels("events")
    >>> child.set(10); child.dec(3); child.value
    7.0
    """

    __slots__ = ("_value",)

    def __init__(self, family: Metric[Any], pairs: tuple[tuple[str, str], ...]) -> None:
        super().__init__(family, pairs)
        self._value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (finite)."""
        try:
            if -_INF < amount < _INF:
                lock = self._lock
                lock.acquire()
                try:
                    self._value += amount
                finally:
                    lock.release()
                return
        except (TypeError, ArithmeticError):
            pass
        self._invalid(amount, "gauge increments must be finite numbers")

    def dec(self, amount: float = 1.0) -> None:
        """Subtract ``amount`` (finite)."""
        try:
            if -_INF < amount < _INF:
                lock = self._lock
                lock.acquire()
                try:
                    self._value -= amount
                finally:
                    lock.release()
                return
        except (TypeError, ArithmeticError):
            pass
        self._invalid(amount, "gauge decrements must be finite numbers")

    def set(self, value: float) -> None:
        """Set the gauge to ``value`` (finite)."""
        try:
            if -_INF < value < _INF:
                value = float(value)
                lock = self._lock
                lock.acquire()
                self._value = value
                lock.release()
                return
        except (TypeError, ArithmeticError):
            pass
        self._invalid(value, "gauge values must be finite numbers")

    def track_inprogress(self) -> _InProgress:
        """A context manager and decorator that adds one while the block or call runs."""
        return _InProgress(self)

    @property
    def value(self) -> float:
        """The current value."""
        with self._lock:
            return self._value

    def _append_samples(self, out: list[Sample], name: str) -> None:
        with self._lock:
            value = self._value
        out.append(Sample(name, self._pairs, value))


class HistogramChild(_Child):
    """One series of a ``Histogram``: counts per bucket, count and sum.

    >>> child = Histogram("size_bytes", "Sizes", ["kind"], buckets=[10, 100]).labels("a")
    >>> child.observe(5); child.observe(50); child.bucket_counts()
    [(10.0, 1), (100.0, 2), (inf, 2)]
    """

    __slots__ = ("_bounds", "_counts", "_les", "_sum")

    def __init__(
        self,
        family: Metric[Any],
        pairs: tuple[tuple[str, str], ...],
        bounds: tuple[float, ...],
        les: tuple[str, ...],
    ) -> None:
        super().__init__(family, pairs)
        self._bounds = bounds
        self._les = les
        # Per-bucket (not cumulative) counts: observe() touches one slot.
        self._counts = [0] * len(bounds)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        """Count ``value`` (finite) in its bucket and in the sum."""
        try:
            if -_INF < value < _INF:
                index = bisect_left(self._bounds, value)
                lock = self._lock
                lock.acquire()
                try:
                    # The sum first: if the value's type cannot be added, nothing changed.
                    self._sum += value
                    self._counts[index] += 1
                finally:
                    lock.release()
                return
        except (TypeError, ArithmeticError):
            pass
        self._invalid(value, "histogram observations must be finite numbers")

    def time(self) -> Timer:
        """A ``Timer`` observing elapsed seconds into this series."""
        return Timer(self.observe)

    @property
    def count(self) -> int:
        """How many values were observed."""
        with self._lock:
            return sum(self._counts)

    @property
    def sum(self) -> float:
        """The sum of the observed values."""
        with self._lock:
            return self._sum

    def bucket_counts(self) -> list[tuple[float, int]]:
        """(upper bound, cumulative count) per bucket, ``+Inf`` last."""
        with self._lock:
            counts = list(self._counts)
        total = 0
        out = []
        for bound, count in zip(self._bounds, counts, strict=True):
            total += count
            out.append((bound, total))
        return out

    def _append_samples(self, out: list[Sample], name: str) -> None:
        with self._lock:
            counts = list(self._counts)
            total_sum = self._sum
        pairs = self._pairs
        bucket = name + "_bucket"
        cumulative = 0
        for le, count in zip(self._les, counts, strict=True):
            cumulative += count
            out.append(Sample(bucket, (*pairs, ("le", le)), float(cumulative)))
        out.append(Sample(name + "_count", pairs, float(cumulative)))
        # A sum over possibly negative observations is not a counter; OpenMetrics
        # forbids exposing it then, as prometheus_client does.
        if self._bounds[0] >= 0:
            out.append(Sample(name + "_sum", pairs, total_sum))
        out.append(Sample(name + "_created", pairs, self._created))


class SummaryChild(_Child):
    """One series of a ``Summary``: count and sum since creation, quantiles over a
    sliding window kept as a ring of ``QuantileSketch`` age buckets.

    >>> child = Summary("tokens", "Tokens", ["model"]).labels("claude")
    >>> child.observe(100); child.observe(300); child.count, child.quantile(1.0)
    (2, 300.0)
    """

    __slots__ = (
        "_clock",
        "_count",
        "_head",
        "_next_rotation",
        "_period",
        "_quantile_values",
        "_quantiles",
        "_sketches",
        "_sum",
    )

    def __init__(
        self,
        family: Metric[Any],
        pairs: tuple[tuple[str, str], ...],
        clock: Callable[[], float],
        max_age: float,
        age_buckets: int,
        quantiles: tuple[tuple[float, ...], tuple[str, ...]],
    ) -> None:
        super().__init__(family, pairs)
        self._clock = clock
        self._quantiles, self._quantile_values = quantiles
        self._count = 0
        self._sum = 0.0
        # Observations go into the head sketch only; a read merges the ring. Each
        # rotation clears the oldest sketch and makes it the head, so the window holds
        # between (age_buckets - 1) / age_buckets and all of max_age.
        self._sketches = [QuantileSketch() for _ in range(age_buckets)]
        self._head = 0
        self._period = max_age / age_buckets
        self._next_rotation = clock() + self._period

    def observe(self, value: float) -> None:
        """Count ``value`` (finite) in the count, the sum and the current window."""
        try:
            if -_INF < value < _INF:
                # As a float before the lock: the sketch must never see a value whose
                # arithmetic could fail halfway through an update.
                value = float(value)
                now = self._clock()
                lock = self._lock
                lock.acquire()
                try:
                    if now >= self._next_rotation:
                        self._rotate(now)
                    self._sketches[self._head].add(value)
                    self._count += 1
                    self._sum += value
                finally:
                    lock.release()
                return
        except (TypeError, ArithmeticError):
            pass
        self._invalid(value, "summary observations must be finite numbers")

    def time(self) -> Timer:
        """A ``Timer`` observing elapsed seconds into this series."""
        return Timer(self.observe)

    def _rotate(self, now: float) -> None:
        steps = int((now - self._next_rotation) // self._period) + 1
        ring = len(self._sketches)
        for _ in range(min(steps, ring)):
            self._head = (self._head + 1) % ring
            self._sketches[self._head].clear()
        self._next_rotation += steps * self._period

    def window(self) -> QuantileSketch:
        """A sketch of the observations in the current window."""
        return self._snapshot()[0]

    def _snapshot(self) -> tuple[QuantileSketch, int, float]:
        now = self._clock()
        with self._lock:
            if now >= self._next_rotation:
                self._rotate(now)
            merged = self._sketches[0].copy()
            for sketch in self._sketches[1:]:
                merged.merge(sketch)
            return merged, self._count, self._sum

    def quantile(self, q: float) -> float:
        """The estimate of quantile ``q`` over the window (NaN when it is empty)."""
        return self.window().quantile(q)

    @property
    def count(self) -> int:
        """How many values were observed since creation."""
        with self._lock:
            return self._count

    @property
    def sum(self) -> float:
        """The sum of the values observed since creation."""
        with self._lock:
            return self._sum

    def _append_samples(self, out: list[Sample], name: str) -> None:
        window, count, total_sum = self._snapshot()
        pairs = self._pairs
        estimates = window.quantiles(self._quantiles)
        for q_text, estimate in zip(self._quantile_values, estimates, strict=True):
            out.append(Sample(name, (*pairs, ("quantile", q_text)), estimate))
        out.append(Sample(name + "_count", pairs, float(count)))
        out.append(Sample(name + "_sum", pairs, total_sum))
        out.append(Sample(name + "_created", pairs, self._created))


class Metric(Generic[_ChildT]):
    """A metric family: name, help text, fixed label names, and one child per label set.

    The base of ``Counter``, ``Gauge``, ``Histogram`` and ``Summary``, useful in type
    annotations. ``labels(...)`` creates a child on first use and caches it; with
    ``max_series=N``, label sets past the N-th share one child whose label values are
    all ``__overflow__`` (``series_overflow`` counts those lookups).

    >>> m: Metric[CounterChild] = Counter("jobs", "Jobs", ["queue"], max_series=1)
    >>> m.labels("a") is m.labels(queue="a"), m.labels("b").label_values
    (True, ('__overflow__',))
    """

    kind: ClassVar[MetricKind]

    __slots__ = (
        "_children",
        "_discard",
        "_documentation",
        "_has_overflow",
        "_invalid_count",
        "_label_names",
        "_lock",
        "_max_series",
        "_name",
        "_overflow_key",
        "_series_overflow",
        "_solo",
        "_unit",
        "_warned",
    )

    def __init__(
        self,
        name: str,
        documentation: str,
        labels: Iterable[str] = (),
        *,
        unit: str = "",
        max_series: int | None = None,
    ) -> None:
        self._name = build_metric_name(self.kind, name, unit)
        if not isinstance(documentation, str):
            raise ConfigError(
                f"documentation of metric {self._name!r} must be a string, got {documentation!r}"
            )
        self._documentation = documentation
        self._unit = unit
        self._label_names = check_label_names(self._name, self.kind, labels)
        if max_series is not None and (
            isinstance(max_series, bool) or not isinstance(max_series, int) or max_series < 1
        ):
            raise ConfigError(
                f"max_series of metric {self._name!r} must be an integer >= 1 or None, "
                f"got {max_series!r}"
            )
        if max_series is not None and not self._label_names:
            raise ConfigError(
                f"max_series of metric {self._name!r} needs label names: "
                "a metric without labels has exactly one series"
            )
        self._max_series = max_series
        self._lock = threading.Lock()
        self._overflow_key = (OVERFLOW_LABEL_VALUE,) * len(self._label_names)
        self._has_overflow = 0
        self._series_overflow = 0
        self._invalid_count = 0
        self._warned = False
        self._discard: _ChildT | None = None
        self._children: dict[tuple[object, ...], _ChildT] = {}
        self._solo: _ChildT | None = None
        if not self._label_names:
            self._solo = self._children[()] = self._new_child(())

    def _new_child(self, values: tuple[str, ...]) -> _ChildT:
        raise NotImplementedError

    def _options(self) -> tuple[object, ...]:
        """Kind-specific parts of the definition (buckets, quantiles...)."""
        return ()

    @property
    def name(self) -> str:
        """The family name (for a counter, without ``_total``)."""
        return self._name

    @property
    def documentation(self) -> str:
        """The help text."""
        return self._documentation

    @property
    def unit(self) -> str:
        """The unit given at definition, or ``""``."""
        return self._unit

    @property
    def label_names(self) -> tuple[str, ...]:
        """The label names fixed at definition."""
        return self._label_names

    @property
    def max_series(self) -> int | None:
        """The cardinality cap, if any."""
        return self._max_series

    @property
    def invalid_observations(self) -> int:
        """How many measurements or label lookups were rejected as invalid."""
        return self._invalid_count

    @property
    def series_overflow(self) -> int:
        """How many label lookups were folded into the ``__overflow__`` series."""
        return self._series_overflow

    def definition(self) -> tuple[object, ...]:
        """Everything that makes two definitions the same metric (used by registries)."""
        return (
            self.kind,
            self._name,
            self._documentation,
            self._label_names,
            self._unit,
            self._options(),
            self._max_series,
        )

    def labels(self, *values: object, **named: object) -> _ChildT:
        """The child for one label set (positional in label-name order, or by name)."""
        if named:
            return self._labels_by_name(values, named)
        try:
            # Fast path: a cached child looked up by the caller's own tuple of str.
            return self._children[values]
        except (KeyError, TypeError):
            return self._resolve(values)

    def _labels_by_name(self, values: tuple[object, ...], named: dict[str, object]) -> _ChildT:
        names = self._label_names
        try:
            key: tuple[object, ...] | None = tuple([named[n] for n in names])
        except KeyError:
            key = None
        if key is None or values or len(named) != len(names):
            return self._wrong_labels(
                f"labels() got {'values and ' if values else ''}names "
                f"{sorted(named)}, expected exactly {list(names)}"
            )
        try:
            return self._children[key]
        except (KeyError, TypeError):
            return self._resolve(key)

    def _resolve(self, values: tuple[object, ...]) -> _ChildT:
        names = self._label_names
        if len(values) != len(names):
            return self._wrong_labels(
                f"labels() got {len(values)} values, expected {len(names)} for {list(names)}"
            )
        try:
            key = tuple(v if type(v) is str else str(v) for v in values)
        except Exception as exc:  # a label value whose __str__ fails is bad data
            return self._wrong_labels(f"a label value could not be converted to str: {exc!r}")
        with self._lock:
            child = self._children.get(key)
            if child is not None:
                return child
            cap = self._max_series
            if cap is not None and len(self._children) - self._has_overflow >= cap:
                self._series_overflow += 1
                key = self._overflow_key
                child = self._children.get(key)
                if child is not None:
                    return child
                self._has_overflow = 1
            child = self._children[key] = self._new_child(key)
            return child

    def _wrong_labels(self, rule: str) -> _ChildT:
        # The observation lands in a child that is never exposed, so the caller's
        # code keeps running and memory stays bounded.
        self._count_invalid((), None, rule)
        with self._lock:
            if self._discard is None:
                self._discard = self._new_child(self._overflow_key)
            return self._discard

    def _missing_labels(self) -> None:
        self._count_invalid(
            (),
            None,
            f"the metric has label names {list(self._label_names)}: record through .labels(...)",
        )

    def _count_invalid(self, pairs: tuple[tuple[str, str], ...], value: object, rule: str) -> None:
        with self._lock:
            self._invalid_count += 1
            first = not self._warned
            self._warned = True
        if first:
            where = "{" + ",".join(f"{k}={v!r}" for k, v in pairs) + "}" if pairs else ""
            _log.warning(
                "%s %r%s ignored %s: %s (further invalid observations of this metric "
                "are counted in invalid_observations, not logged)",
                self.kind,
                self._name,
                where,
                reprlib.repr(value),
                rule,
            )

    def remove(self, *values: object) -> None:
        """Drop the series of one label set (no-op if it does not exist)."""
        if len(values) != len(self._label_names) or not self._label_names:
            raise ConfigError(
                f"{self.kind} {self._name!r} has label names {list(self._label_names)}; "
                f"remove() got {len(values)} values"
            )
        key = tuple(v if type(v) is str else str(v) for v in values)
        with self._lock:
            if self._children.pop(key, None) is not None and key == self._overflow_key:
                self._has_overflow = 0

    def clear(self) -> None:
        """Drop every series; a metric without labels starts again from zero."""
        with self._lock:
            self._children = {}
            self._has_overflow = 0
            if not self._label_names:
                self._solo = self._children[()] = self._new_child(())

    def children(self) -> list[_ChildT]:
        """The current children, in creation order."""
        with self._lock:
            return list(self._children.values())

    def collect(self) -> MetricFamily:
        """The family and the samples of every series, as of now."""
        samples: list[Sample] = []
        name = self._name
        for child in self.children():
            child._append_samples(samples, name)
        return MetricFamily(
            name=name,
            kind=self.kind,
            documentation=self._documentation,
            samples=tuple(samples),
            unit=self._unit,
        )

    def _reinit_locks(self) -> None:
        """Give this metric and its children fresh locks (in a forked child process,
        a lock held by a parent thread at fork time would stay held forever)."""
        self._lock = threading.Lock()
        for child in self._children.values():
            child._reinit_lock()
        if self._discard is not None:
            self._discard._reinit_lock()

    def _pairs(self, values: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
        return tuple(zip(self._label_names, values, strict=True))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._name!r}, labels={list(self._label_names)!r})"


class Counter(Metric[CounterChild]):
    """A total that only goes up: requests served, tokens used, errors seen.

    Exposed as ``<name>_total``; a name given with ``_total`` has it removed first.

    >>> requests = Counter("http_requests", "HTTP requests served", ["route"])
    >>> requests.labels("/run").inc()
    >>> requests.labels(route="/run").inc(2)
    >>> requests.labels("/run").value
    3.0
    """

    kind = "counter"
    __slots__ = ()

    def _new_child(self, values: tuple[str, ...]) -> CounterChild:
        return CounterChild(self, self._pairs(values))

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` to the series of a metric without labels."""
        solo = self._solo
        if solo is not None:
            solo.inc(amount)
        else:
            self._missing_labels()


class Gauge(Metric[GaugeChild]):
    """A value that goes up and down: queue depth, loops running, memory in use.

    >>> active = Gauge("active_loops", "Agent loops running now")
    >>> active.inc()
    >>> with active.track_inprogress():
    ...     active.labels().value
    2.0
    >>> active.set(0)
    """

    kind = "gauge"
    __slots__ = ()

    def _new_child(self, values: tuple[str, ...]) -> GaugeChild:
        return GaugeChild(self, self._pairs(values))

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` to the series of a metric without labels."""
        solo = self._solo
        if solo is not None:
            solo.inc(amount)
        else:
            self._missing_labels()

    def dec(self, amount: float = 1.0) -> None:
        """Subtract ``amount`` from the series of a metric without labels."""
        solo = self._solo
        if solo is not None:
            solo.dec(amount)
        else:
            self._missing_labels()

    def set(self, value: float) -> None:
        """Set the series of a metric without labels to ``value``."""
        solo = self._solo
        if solo is not None:
            solo.set(value)
        else:
            self._missing_labels()

    def track_inprogress(self) -> _InProgress:
        """A context manager and decorator that adds one while the block or call runs."""
        return _InProgress(self)


def _check_buckets(name: str, buckets: object) -> tuple[float, ...]:
    if isinstance(buckets, str) or not isinstance(buckets, Iterable):
        raise ConfigError(
            f"buckets of histogram {name!r} must be a sequence of numbers, got {buckets!r}"
        )
    bounds: list[float] = []
    for bound in buckets:
        if isinstance(bound, bool) or not isinstance(bound, int | float) or bound != bound:
            raise ConfigError(
                f"bucket bound {bound!r} of histogram {name!r} is not a number; "
                "bounds must be numbers in increasing order"
            )
        bounds.append(float(bound))
    for low, high in pairwise(bounds):
        if not low < high:
            raise ConfigError(
                f"buckets of histogram {name!r} are not in strictly increasing order: "
                f"{format_float(low)} is followed by {format_float(high)}"
            )
    if bounds and bounds[0] == -_INF:
        raise ConfigError(f"buckets of histogram {name!r} must not contain -Inf")
    if not bounds or bounds[-1] != _INF:
        bounds.append(_INF)
    if len(bounds) < 2:
        raise ConfigError(f"histogram {name!r} needs at least one finite bucket bound besides +Inf")
    return tuple(bounds)


class Histogram(Metric[HistogramChild]):
    """Counts of observations in fixed buckets, with their count and sum.

    ``buckets`` are upper bounds in strictly increasing order (``+Inf`` is added);
    see ``DEFAULT_BUCKETS``, ``exponential_buckets`` and ``linear_buckets``.

    >>> latency = Histogram("tool_latency", "Tool call latency", ["tool"], unit="seconds",
    ...                     buckets=exponential_buckets(0.01, 2, 8))
    >>> latency.name
    'tool_latency_seconds'
    >>> latency.labels("search").observe(0.12)
    >>> with latency.labels("search").time():
    ...     pass
    >>> latency.labels("search").count
    2
    """

    kind = "histogram"
    __slots__ = ("_bounds", "_le_values")

    def __init__(
        self,
        name: str,
        documentation: str,
        labels: Iterable[str] = (),
        *,
        unit: str = "",
        buckets: Iterable[float] = DEFAULT_BUCKETS,
        max_series: int | None = None,
    ) -> None:
        self._bounds = _check_buckets(str(name), buckets)
        self._le_values = tuple(format_float(b) for b in self._bounds)
        super().__init__(name, documentation, labels, unit=unit, max_series=max_series)

    @property
    def buckets(self) -> tuple[float, ...]:
        """The bucket upper bounds, ``+Inf`` last."""
        return self._bounds

    def _options(self) -> tuple[object, ...]:
        return (self._bounds,)

    def _new_child(self, values: tuple[str, ...]) -> HistogramChild:
        return HistogramChild(self, self._pairs(values), self._bounds, self._le_values)

    def observe(self, value: float) -> None:
        """Observe ``value`` in the series of a metric without labels."""
        solo = self._solo
        if solo is not None:
            solo.observe(value)
        else:
            self._missing_labels()

    def time(self) -> Timer:
        """A ``Timer`` observing elapsed seconds (metric without labels)."""
        return Timer(self.observe)


class Summary(Metric[SummaryChild]):
    """Count, sum, and quantiles over a sliding time window, estimated within 1%.

    Quantiles cover the last ``max_age`` seconds (by ``clock``, default
    ``time.monotonic``), kept in ``age_buckets`` rotating ``QuantileSketch`` es, as
    Prometheus' Go client does. Count and sum cover the whole life of the series.

    >>> s = Summary("prompt_tokens", "Prompt size", quantiles=(0.5, 0.99))
    >>> for n in range(1, 101):
    ...     s.observe(n)
    >>> round(s.labels().quantile(0.5))
    50
    """

    kind = "summary"
    __slots__ = ("_age_buckets", "_clock", "_max_age", "_quantile_values", "_quantiles")

    def __init__(
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
    ) -> None:
        where = f"summary {name!r}"
        given: object = quantiles
        if isinstance(given, str) or not isinstance(given, Sequence):
            raise ConfigError(f"quantiles of {where} must be a sequence, got {given!r}")
        for q in given:
            if isinstance(q, bool) or not isinstance(q, int | float) or not 0.0 <= q <= 1.0:
                raise ConfigError(f"quantile {q!r} of {where} must be a number in [0, 1]")
        qs = tuple(float(q) for q in quantiles)
        if list(qs) != sorted(set(qs)):
            raise ConfigError(
                f"quantiles of {where} must be distinct and in increasing order, got {qs!r}"
            )
        if isinstance(max_age, bool) or not isinstance(max_age, int | float):
            raise ConfigError(f"max_age of {where} must be a number of seconds, got {max_age!r}")
        if not 0.0 < max_age < _INF:
            raise ConfigError(f"max_age of {where} must be > 0 seconds, got {max_age!r}")
        if isinstance(age_buckets, bool) or not isinstance(age_buckets, int) or age_buckets < 1:
            raise ConfigError(
                f"age_buckets of {where} must be an integer >= 1, got {age_buckets!r}"
            )
        self._quantiles = qs
        self._quantile_values = tuple(format_float(q) for q in qs)
        self._max_age = float(max_age)
        self._age_buckets = age_buckets
        self._clock = clock if clock is not None else time.monotonic
        super().__init__(name, documentation, labels, unit=unit, max_series=max_series)

    @property
    def quantiles(self) -> tuple[float, ...]:
        """The quantiles exposed per series."""
        return self._quantiles

    def _options(self) -> tuple[object, ...]:
        return (self._quantiles, self._max_age, self._age_buckets)

    def _new_child(self, values: tuple[str, ...]) -> SummaryChild:
        return SummaryChild(
            self,
            self._pairs(values),
            self._clock,
            self._max_age,
            self._age_buckets,
            (self._quantiles, self._quantile_values),
        )

    def observe(self, value: float) -> None:
        """Observe ``value`` in the series of a metric without labels."""
        solo = self._solo
        if solo is not None:
            solo.observe(value)
        else:
            self._missing_labels()

    def time(self) -> Timer:
        """A ``Timer`` observing elapsed seconds (metric without labels)."""
        return Timer(self.observe)
