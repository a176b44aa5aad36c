"""Alert conditions: what a rule checks at each evaluation.

A condition reads its data through a *query* given at construction and returns one
:class:`Observation` per label set: the value it saw and whether the condition holds
for it. Queries are plain callables, so any data source fits: the adapters of
:mod:`tachimeter.alerts.sources` read the metric store, the query engine and the stored
events; tests and users can pass functions that return series.

==========================  ==============================================================
condition                   holds when
==========================  ==============================================================
:class:`MetricThreshold`    the last value of a series compares true with a threshold
:class:`ErrorRate`          errors / total over a window is above a threshold
:class:`Absence`            a series or an event has not been seen for a duration
:class:`Anomaly`            a detector of :mod:`tachimeter.analyze.anomalies` found an
                            anomaly in a series recently
:class:`Budget`             token or cost spend over a rolling window reached a share of
                            a limit (one label set per scope value and threshold)
:class:`Custom`             a Python function over query results says so
==========================  ==============================================================

>>> import datetime as dt
>>> cond = MetricThreshold(lambda now: [SeriesData.single(0.25, {"route": "/run"})], ">", 0.1)
>>> [(o.labels, o.value, o.active) for o in cond.evaluate(dt.datetime.now(dt.UTC))]
[({'route': '/run'}, 0.25, True)]
"""

from __future__ import annotations

import datetime as dt
import math
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, Literal, Protocol, TypeAlias, runtime_checkable

import msgspec
import numpy as np
import numpy.typing as npt

from tachimeter.alerts.durations import DurationLike, format_duration, parse_duration
from tachimeter.analyze.anomalies import AnomalyDetector
from tachimeter.errors import ConfigError
from tachimeter.model.timestamps import format_timestamp

__all__ = [
    "OPERATORS",
    "Absence",
    "Anomaly",
    "Budget",
    "BudgetKind",
    "BudgetScope",
    "Comparison",
    "Condition",
    "Custom",
    "CustomCheck",
    "ErrorRate",
    "LastSeen",
    "LastSeenQuery",
    "MetricThreshold",
    "Observation",
    "RatioQuery",
    "RatioSample",
    "SeriesData",
    "SeriesLike",
    "SeriesQuery",
    "SpendQuery",
    "SpendRequest",
    "parse_operator",
]

Comparison: TypeAlias = Literal[">", ">=", "<", "<=", "==", "!="]
BudgetScope: TypeAlias = Literal["total", "user", "tag", "model"]
BudgetKind: TypeAlias = Literal["tokens", "cost"]

OPERATORS: Final[Mapping[str, Callable[[float, float], bool]]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
_OPERATOR_NAMES: Final = {"gt": ">", "ge": ">=", "lt": "<", "le": "<=", "eq": "==", "ne": "!="}
_SCOPES: Final = ("total", "user", "tag", "model")
_KINDS: Final = ("tokens", "cost")


def parse_operator(op: object, where: str) -> Comparison:
    """``op`` as a comparison (``>``, ``>=``, ``<``, ``<=``, ``==``, ``!=`` or their
    names ``gt``, ``ge``, ...); ``ConfigError`` naming ``where`` otherwise.

    >>> parse_operator("ge", "rules[0].condition.op")
    '>='
    """
    if isinstance(op, str):
        text = op.strip()
        text = _OPERATOR_NAMES.get(text.lower(), text)
        if text in OPERATORS:
            return text  # type: ignore[return-value]
    raise ConfigError(
        f"{where} = {op!r} is not a comparison operator; use one of "
        f"{', '.join(OPERATORS)} (or gt, ge, lt, le, eq, ne)"
    )


# -- what conditions read and return ----------------------------------------------------


@runtime_checkable
class SeriesLike(Protocol):
    """A labelled series: ``tachimeter.analyze.metrics.MetricSeries`` or :class:`SeriesData`.

    ``timestamps`` are Unix seconds in ascending order, ``values`` floats, one each.
    """

    @property
    def labels(self) -> Mapping[str, str]:
        """The series' labels."""
        ...

    @property
    def timestamps(self) -> Sequence[float] | npt.NDArray[np.float64]:
        """Sample times, Unix seconds, ascending."""
        ...

    @property
    def values(self) -> Sequence[float] | npt.NDArray[np.float64]:
        """Sample values."""
        ...


class SeriesData(msgspec.Struct, frozen=True, kw_only=True):
    """A series given by value, for queries written as plain functions.

    >>> SeriesData.single(3.0, {"queue": "events"}, at=60.0)
    SeriesData(labels={'queue': 'events'}, timestamps=(60.0,), values=(3.0,))
    """

    labels: dict[str, str] = {}
    timestamps: tuple[float, ...] = ()
    values: tuple[float, ...] = ()

    @classmethod
    def single(
        cls, value: float, labels: Mapping[str, str] | None = None, at: float = 0.0
    ) -> SeriesData:
        """A series of one sample."""
        return cls(labels=dict(labels or {}), timestamps=(float(at),), values=(float(value),))


SeriesQuery: TypeAlias = Callable[[dt.datetime], Sequence[SeriesLike]]
"""Series as of ``now``: the instant or range query a condition reads."""


class Observation(msgspec.Struct, frozen=True, kw_only=True):
    """What a condition saw for one label set at one evaluation.

    ``active`` is whether the condition holds; ``value`` the figure it judged (None when
    there was none, as for a series never seen); ``threshold`` what it was compared with.
    ``period`` names the period in which an alert may notify only once (budgets: the
    period's start); ``details`` are extra figures for annotations and channels.
    """

    active: bool
    labels: dict[str, str] = {}
    value: float | None = None
    threshold: float | None = None
    period: str | None = None
    details: dict[str, Any] = {}


@runtime_checkable
class Condition(Protocol):
    """What :class:`~tachimeter.alerts.AlertRule` needs from a condition."""

    def evaluate(self, now: dt.datetime) -> Sequence[Observation]:
        """One observation per label set, as of ``now`` (an aware UTC datetime)."""
        ...

    def describe(self) -> str:
        """One line for listings: ``business_cost_usd > 10``."""
        ...


def _query_name(query: object) -> str:
    describe = getattr(query, "describe", None)
    if callable(describe):
        return str(describe())
    return getattr(query, "__name__", type(query).__name__)


def _check_number(owner: str, name: str, value: object) -> float:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(float(value))
    ):
        raise ConfigError(f"{owner}.{name} must be a finite number, got {value!r}")
    return float(value)


def _check_callable(owner: str, name: str, value: object) -> None:
    if not callable(value):
        raise ConfigError(
            f"{owner}.{name} must be callable (a query function or a source of "
            f"tachimeter.alerts.sources), got {type(value).__name__}"
        )


def _last_value(series: SeriesLike) -> float | None:
    values = series.values
    for i in range(len(values) - 1, -1, -1):
        value = float(values[i])
        if math.isfinite(value):
            return value
    return None


def _unix(now: dt.datetime) -> float:
    return now.timestamp()


# -- conditions ---------------------------------------------------------------------------


class MetricThreshold:
    """The last value of each series of ``query`` compared with ``threshold``.

    ``for_`` (optional) is how long the comparison must hold before the alert fires; it
    may be given here (spec 023) or on the rule, not both.

    >>> import datetime as dt
    >>> q = lambda now: [SeriesData.single(3.0, {"q": "a"}), SeriesData.single(9.0, {"q": "b"})]
    >>> [o.active for o in MetricThreshold(q, ">=", 5).evaluate(dt.datetime.now(dt.UTC))]
    [False, True]
    """

    __slots__ = ("_compare", "for_", "op", "query", "threshold")

    def __init__(
        self,
        query: SeriesQuery,
        op: Comparison | str,
        threshold: float,
        *,
        for_: DurationLike | None = None,
    ) -> None:
        _check_callable("MetricThreshold", "query", query)
        self.query = query
        self.op = parse_operator(op, "MetricThreshold.op")
        self.threshold = _check_number("MetricThreshold", "threshold", threshold)
        self.for_ = None if for_ is None else parse_duration(for_, "MetricThreshold.for_")
        self._compare = OPERATORS[self.op]

    def evaluate(self, now: dt.datetime) -> list[Observation]:
        """One observation per series with a value."""
        out: list[Observation] = []
        for series in self.query(now):
            value = _last_value(series)
            if value is None:
                continue
            out.append(
                Observation(
                    active=self._compare(value, self.threshold),
                    labels=dict(series.labels),
                    value=value,
                    threshold=self.threshold,
                )
            )
        return out

    def describe(self) -> str:
        """``<query> <op> <threshold>``."""
        return f"{_query_name(self.query)} {self.op} {self.threshold:g}"


class RatioSample(msgspec.Struct, frozen=True, kw_only=True):
    """Errors and total for one label set over a window."""

    errors: float
    total: float
    labels: dict[str, str] = {}


RatioQuery: TypeAlias = Callable[[dt.datetime, dt.datetime], Sequence[RatioSample]]
"""Errors and totals over ``[start, end)``."""


class ErrorRate:
    """Errors over total within ``window`` above ``threshold`` (a fraction, 0.05 = 5 %).

    Label sets with fewer than ``min_total`` events in the window are not judged (two
    failures out of three calls at night are not an outage).

    >>> import datetime as dt
    >>> src = lambda start, end: [RatioSample(errors=6, total=100)]
    >>> ErrorRate(src, 0.05, "5m").evaluate(dt.datetime.now(dt.UTC))[0].value
    0.06
    """

    __slots__ = ("min_total", "source", "threshold", "window")

    def __init__(
        self,
        source: RatioQuery,
        threshold: float,
        window: DurationLike = "5m",
        *,
        min_total: float = 1.0,
    ) -> None:
        _check_callable("ErrorRate", "source", source)
        self.source = source
        self.threshold = _check_number("ErrorRate", "threshold", threshold)
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(
                f"ErrorRate.threshold is a fraction in [0, 1] (0.05 for 5 %), got {threshold!r}"
            )
        self.window = parse_duration(window, "ErrorRate.window", allow_zero=False)
        self.min_total = _check_number("ErrorRate", "min_total", min_total)

    def evaluate(self, now: dt.datetime) -> list[Observation]:
        """One observation per label set of the source."""
        start = now - dt.timedelta(seconds=self.window)
        out: list[Observation] = []
        for sample in self.source(start, now):
            judged = sample.total >= self.min_total and sample.total > 0
            value = sample.errors / sample.total if judged else None
            out.append(
                Observation(
                    active=value is not None and value > self.threshold,
                    labels=dict(sample.labels),
                    value=value,
                    threshold=self.threshold,
                    details={"errors": sample.errors, "total": sample.total},
                )
            )
        return out

    def describe(self) -> str:
        """``error rate of <source> over <window> > <threshold>``."""
        return (
            f"error rate of {_query_name(self.source)} over "
            f"{format_duration(self.window)} > {self.threshold:g}"
        )


class LastSeen(msgspec.Struct, frozen=True, kw_only=True):
    """When a series or an event was last seen (None: never)."""

    at: dt.datetime | None
    labels: dict[str, str] = {}


LastSeenQuery: TypeAlias = Callable[[dt.datetime], Sequence[LastSeen]]
"""Last-seen times as of ``now``; an empty answer means nothing matched at all."""


class Absence:
    """No data for ``duration``: each label set whose last sample (or event) is older.

    When the source finds nothing at all, one observation with ``labels`` (by default
    none) is active, as PromQL's ``absent()``. ``value`` is the age in seconds (None when
    never seen).

    >>> import datetime as dt
    >>> now = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
    >>> src = lambda now: [LastSeen(at=now - dt.timedelta(minutes=20), labels={"job": "a"})]
    >>> o = Absence(src, "10m").evaluate(now)[0]
    >>> o.active, o.value
    (True, 1200.0)
    """

    __slots__ = ("duration", "labels", "source")

    def __init__(
        self,
        source: LastSeenQuery,
        duration: DurationLike,
        *,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        _check_callable("Absence", "source", source)
        self.source = source
        self.duration = parse_duration(duration, "Absence.duration", allow_zero=False)
        self.labels = dict(labels or {})

    def evaluate(self, now: dt.datetime) -> list[Observation]:
        """One observation per label set seen before, or one for nothing found."""
        seen = self.source(now)
        if not seen:
            return [Observation(active=True, labels=dict(self.labels), threshold=self.duration)]
        out: list[Observation] = []
        for item in seen:
            age = None if item.at is None else (now - item.at).total_seconds()
            out.append(
                Observation(
                    active=age is None or age >= self.duration,
                    labels={**self.labels, **item.labels},
                    value=age,
                    threshold=self.duration,
                )
            )
        return out

    def describe(self) -> str:
        """``no data from <source> for <duration>``."""
        return f"no data from {_query_name(self.source)} for {format_duration(self.duration)}"


class Anomaly:
    """An anomaly found by ``detector`` in a series of ``query`` within ``recent``.

    ``query`` is a range query (``MetricSource(..., range="2d", step="5m")``): the
    detector needs history. The observation's value is the strongest recent anomaly's
    score (else the last point's score), its details the expected range and the kind.

    >>> import datetime as dt, numpy as np
    >>> from tachimeter.analyze.anomalies import RobustZScore
    >>> now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    >>> t = now.timestamp() - 60.0 * np.arange(100)[::-1]
    >>> v = np.r_[np.full(99, 10.0) + np.sin(np.arange(99)), 40.0]
    >>> q = lambda now: [SeriesData(labels={}, timestamps=tuple(t), values=tuple(v))]
    >>> o = Anomaly(q, RobustZScore(), recent="2m").evaluate(now)[0]
    >>> o.active, o.details["kind"]
    (True, 'spike')
    """

    __slots__ = ("detector", "query", "recent", "step")

    def __init__(
        self,
        query: SeriesQuery,
        detector: AnomalyDetector,
        *,
        recent: DurationLike = "5m",
        step: DurationLike | None = None,
    ) -> None:
        _check_callable("Anomaly", "query", query)
        if not isinstance(detector, AnomalyDetector):
            raise ConfigError(
                f"Anomaly.detector must be a detector of tachimeter.analyze.anomalies "
                f"(RobustZScore, SeasonalBaseline, LevelShift), got {type(detector).__name__}"
            )
        self.query = query
        self.detector = detector
        self.recent = parse_duration(recent, "Anomaly.recent", allow_zero=False)
        self.step = None if step is None else parse_duration(step, "Anomaly.step", allow_zero=False)

    def evaluate(self, now: dt.datetime) -> list[Observation]:
        """One observation per series."""
        since = _unix(now) - self.recent
        out: list[Observation] = []
        for series in self.query(now):
            if len(series.values) == 0:
                continue
            report = self.detector.detect(series.timestamps, series.values, step=self.step)
            found = report.anomalies_since(since)
            details: dict[str, Any] = {"detector": self.detector.name}
            if found:
                top = max(found, key=lambda a: a.score)
                value = top.score
                details.update(
                    kind=top.kind,
                    at=top.timestamp,
                    observed=top.value,
                    expected=top.expected,
                    lower=top.lower,
                    upper=top.upper,
                )
            else:
                value = float(report.scores[-1]) if len(report.scores) else 0.0
            out.append(
                Observation(
                    active=bool(found),
                    labels=dict(series.labels),
                    value=value,
                    threshold=_detector_threshold(self.detector),
                    details=details,
                )
            )
        return out

    def describe(self) -> str:
        """``<detector> anomaly in <query> within <recent>``."""
        return (
            f"{self.detector.name} anomaly in {_query_name(self.query)} within "
            f"{format_duration(self.recent)}"
        )


def _detector_threshold(detector: AnomalyDetector) -> float | None:
    threshold = getattr(detector, "threshold", None)
    return float(threshold) if isinstance(threshold, int | float) else None


class SpendRequest(msgspec.Struct, frozen=True, kw_only=True):
    """What a budget asks its spend source: ``kind`` spent per ``scope`` in ``[start, end)``."""

    start: dt.datetime
    end: dt.datetime
    scope: BudgetScope
    kind: BudgetKind


SpendQuery: TypeAlias = Callable[[SpendRequest], Mapping[str, float]]
"""Spend per scope value (user id, tag, model; ``""`` for the total)."""


class Budget:
    """Token or cost spend over a rolling ``window`` against ``limit``, per scope.

    One label set per scope value and threshold (``{"user": "u1", "threshold": "80%"}``);
    each holds while the spend is at least that share of the limit. An alert of a budget
    notifies at most once per ``period`` (default: the window; periods are aligned on
    the Unix epoch, so a one-day period is a UTC day), however often the spend dips
    and rises again; the alert manager also emits a ``BudgetAlerted`` event then.

    >>> import datetime as dt
    >>> spend = lambda req: {"u1": 8.5, "u2": 2.0}
    >>> b = Budget(spend, 10.0, window="1d", scope="user", kind="cost")
    >>> [(o.labels, o.active) for o in b.evaluate(dt.datetime.now(dt.UTC)) if o.active]
    [({'user': 'u1', 'threshold': '80%'}, True)]
    """

    __slots__ = ("kind", "limit", "period", "scope", "spend", "thresholds", "window")

    def __init__(
        self,
        spend: SpendQuery,
        limit: float,
        *,
        window: DurationLike = "1d",
        kind: BudgetKind | str = "cost",
        scope: BudgetScope | str = "total",
        thresholds: Sequence[float] = (0.8, 0.9, 1.0),
        period: DurationLike | None = None,
    ) -> None:
        _check_callable("Budget", "spend", spend)
        self.spend = spend
        self.limit = _check_number("Budget", "limit", limit)
        if self.limit <= 0:
            raise ConfigError(f"Budget.limit must be > 0, got {limit!r}")
        self.window = parse_duration(window, "Budget.window", allow_zero=False)
        if kind not in _KINDS:
            raise ConfigError(f"Budget.kind must be one of {', '.join(_KINDS)}, got {kind!r}")
        if scope not in _SCOPES:
            raise ConfigError(f"Budget.scope must be one of {', '.join(_SCOPES)}, got {scope!r}")
        self.kind: BudgetKind = kind
        self.scope: BudgetScope = scope
        given: object = thresholds
        if isinstance(given, str) or not thresholds:
            raise ConfigError(
                f"Budget.thresholds must be a list of fractions like [0.8, 0.9, 1.0], "
                f"got {thresholds!r}"
            )
        checked = sorted({_check_number("Budget", "thresholds", t) for t in thresholds})
        if checked[0] <= 0:
            raise ConfigError(f"Budget.thresholds must be > 0 (0.8 is 80 %), got {thresholds!r}")
        self.thresholds = tuple(checked)
        self.period = (
            self.window
            if period is None
            else parse_duration(period, "Budget.period", allow_zero=False)
        )

    def evaluate(self, now: dt.datetime) -> list[Observation]:
        """One observation per scope value and threshold."""
        start = now - dt.timedelta(seconds=self.window)
        amounts = self.spend(SpendRequest(start=start, end=now, scope=self.scope, kind=self.kind))
        period_start = math.floor(_unix(now) / self.period) * self.period
        period = format_timestamp(dt.datetime.fromtimestamp(period_start, dt.UTC))
        out: list[Observation] = []
        for key, amount in sorted(amounts.items()):
            base: dict[str, str] = {} if self.scope == "total" else {str(self.scope): key}
            for share in self.thresholds:
                out.append(
                    Observation(
                        active=amount >= share * self.limit,
                        labels={**base, "threshold": _percent(share)},
                        value=float(amount),
                        threshold=share * self.limit,
                        period=period,
                        details={
                            "budget_kind": self.kind,
                            "budget_scope": self.scope,
                            "scope_value": key,
                            "limit": self.limit,
                            "share": share,
                            "ratio": amount / self.limit,
                            "window_seconds": self.window,
                        },
                    )
                )
        return out

    def describe(self) -> str:
        """``cost per user over 1d >= 80%/90%/100% of 10``."""
        shares = "/".join(_percent(t) for t in self.thresholds)
        per = "in total" if self.scope == "total" else f"per {self.scope}"
        return (
            f"{self.kind} {per} over {format_duration(self.window)} >= {shares} of {self.limit:g}"
        )


def _percent(share: float) -> str:
    return f"{share * 100:g}%"


CustomCheck: TypeAlias = Callable[[Sequence[SeriesLike]], "bool | Iterable[Observation]"]
"""A check over query results: True/False (one unlabelled alert) or observations."""


class Custom:
    """A Python function over the results of ``query`` (spec 023's ``Custom``).

    ``check`` gets the series (an empty list without a query) and returns a bool or
    :class:`Observation` objects. In rule files, ``type = "custom"`` names a function
    registered in code (``load_rules(path, functions={"name": check})``).

    >>> import datetime as dt
    >>> q = lambda now: [SeriesData.single(3.0), SeriesData.single(4.0)]
    >>> c = Custom(lambda series: sum(s.values[-1] for s in series) > 5, q, name="sum_over_5")
    >>> c.evaluate(dt.datetime.now(dt.UTC))[0].active
    True
    """

    __slots__ = ("check", "name", "query")

    def __init__(
        self, check: CustomCheck, query: SeriesQuery | None = None, *, name: str | None = None
    ) -> None:
        _check_callable("Custom", "check", check)
        if query is not None:
            _check_callable("Custom", "query", query)
        self.check = check
        self.query = query
        self.name = name or getattr(check, "__name__", "custom")

    def evaluate(self, now: dt.datetime) -> list[Observation]:
        """The check's verdict as observations."""
        results = self.query(now) if self.query is not None else []
        verdict = self.check(results)
        if isinstance(verdict, bool | np.bool_):
            return [Observation(active=bool(verdict))]
        out: list[Observation] = []
        for item in verdict:
            if not isinstance(item, Observation):
                raise TypeError(
                    f"custom check {self.name!r} must return a bool or Observation objects, "
                    f"got {type(item).__name__}"
                )
            out.append(item)
        return out

    def describe(self) -> str:
        """``custom <name>``."""
        return f"custom {self.name}"
