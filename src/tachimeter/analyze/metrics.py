"""Metric queries over the time-series store, with Prometheus semantics.

A :class:`MetricQuery` selects series by metric name and label matchers (``=``, ``!=``,
``=~``, ``!~``; regular expressions are anchored, as in PromQL), evaluates them at
``start, start + step, ... <= end`` and aggregates:

========================  ==============================================================
``aggregation``           value at each evaluation time ``t``
========================  ==============================================================
None                      each series' last sample in ``[t - lookback, t]`` (PromQL's
                          instant selector; ``lookback`` 5 minutes)
sum avg min max count     that value, aggregated across the series of each group
rate / increase           PromQL's ``rate(x[window])`` / ``increase(x[window])`` per
                          series (counter resets, extrapolation at the range edges,
                          exactly as Prometheus 2.x computes them); summed within groups
                          when ``group_by`` is given: ``sum by (g) (rate(x[w]))``
percentiles               quantiles (linear interpolation, numpy's default) of all
                          samples of the group's series in ``[t - window, t]``
histogram_quantile        PromQL's ``histogram_quantile(q, sum by (g, le) (rate(...)))``
                          over ``_bucket`` series
========================  ==============================================================

``group_by=None`` means one group of everything for the cross-series aggregations, one
per series for rate/increase, and one per histogram (all labels but ``le``) for
``histogram_quantile``. Delta counters (spec 355 counter points, event-derived counts)
have no resets to handle: their rate/increase is the sum of their increments in the
window, without extrapolation.

Resolution. ``raw`` reads samples (chunks and head). ``hourly``, ``daily`` and ``weekly``
read ``metric_aggregates``: evaluation times are period boundaries, counted back by the
step from the first boundary at or after ``end`` (so the newest, perhaps unfinished,
period is the last window: it is read up to ``end`` and reported at ``end``); the window
at ``t`` is the periods starting in ``[t - window, t)``, an instant value is the last
sample in that window, rate/increase are the exact (reset-aware, unextrapolated)
increase over it (a rate per second of the window up to ``end``),
percentiles merge the periods' sketches (1% relative error) and the extremes are exact.
Periods not rolled up yet are computed from raw samples on the fly. ``auto`` takes the
coarsest period that divides the step (raw when the step is under an hour).

>>> import sqlite3, datetime as dt
>>> from tachimeter.store.migrator import Migrator
>>> from tachimeter.store.timeseries import TimeSeriesStore
>>> conn = sqlite3.connect(":memory:", isolation_level=None)
>>> _ = Migrator(conn).up()
>>> t0 = 1_767_225_600
>>> tsdb = TimeSeriesStore(conn)
>>> for route in ("api", "web"):
...     _ = tsdb.write_samples("requests_total", {"route": route},
...         [(t0 + 15 * i) * 10**6 for i in range(41)], [10.0 * i for i in range(41)],
...         metric_type="counter")
>>> query = MetricQuery(names=["requests_total"], start=t0 + 300, end=t0 + 600, step=300,
...                     aggregation="rate", window=300, group_by=[])
>>> [round(v, 6) for v in MetricsEngine(conn).query(query).series[0].values.tolist()]
[1.333333, 1.333333]
"""

from __future__ import annotations

import datetime as dt
import math
import re
import sqlite3
from collections import defaultdict
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, Final, Literal, TypeAlias

import msgspec
import numpy as np
import numpy.typing as npt

from tachimeter.analyze.connection import ReadSource, read_connection
from tachimeter.errors import QueryError
from tachimeter.model.prices import PriceTable
from tachimeter.model.timestamps import from_ns, to_ns
from tachimeter.model.tokens import TokenUsage
from tachimeter.store.rollups import (
    ROW_COLUMNS,
    compute_hourly_rows,
    counter_increments,
    decode_sketches,
    merge_rows,
    merged_quantiles,
    period_end,
    period_start,
    previous_samples,
)
from tachimeter.store.timeseries import SeriesInfo, find_series, read_samples

__all__ = [
    "Aggregation",
    "LabelMatcher",
    "MetricQuery",
    "MetricSeries",
    "MetricsEngine",
    "PerformanceStats",
    "QueryResult",
    "Resolution",
    "TokenUsageReport",
    "bucket_quantile",
    "loop_performance_stats",
    "token_usage_report",
]

Aggregation: TypeAlias = Literal[
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "rate",
    "increase",
    "percentiles",
    "histogram_quantile",
]
Resolution: TypeAlias = Literal["auto", "raw", "hourly", "daily", "weekly"]
MatchOp: TypeAlias = Literal["=", "!=", "=~", "!~"]

_AGGREGATIONS: Final = frozenset(
    ("sum", "avg", "min", "max", "count", "rate", "increase", "percentiles", "histogram_quantile")
)
_RESOLUTIONS: Final = ("auto", "raw", "hourly", "daily", "weekly")
_PERIOD_US: Final = {"hourly": 3_600_000_000, "daily": 86_400_000_000, "weekly": 604_800_000_000}
_US: Final = 1_000_000
# Evaluation times per query: 11 000 as Prometheus allows; more is a mistake (a month at a
# one-second step) that would take minutes and more memory than the data.
_MAX_POINTS: Final = 11_000
# Without a step, about 250 points: the width of a dashboard chart.
_DEFAULT_POINTS: Final = 250
_MATCHER: Final = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(=~|!~|!=|=)\s*"(.*)"\s*$')
_SUCCESS: Final = "success"


class LabelMatcher(msgspec.Struct, frozen=True):
    """``label op "value"``; a missing label matches as the empty string (PromQL).

    >>> LabelMatcher("route", "=~", "api|web").matches({"route": "api"})
    True
    >>> LabelMatcher.parse('code!~"5.."').matches({"code": "503"})
    False
    """

    label: str
    op: MatchOp
    value: str

    def __post_init__(self) -> None:
        if self.op not in ("=", "!=", "=~", "!~"):
            raise QueryError(
                f"LabelMatcher op for label {self.label!r} must be one of =, !=, =~, !~; "
                f"got {self.op!r}"
            )
        if self.op in ("=~", "!~"):
            try:
                re.compile(self.value)
            except re.error as exc:
                raise QueryError(
                    f"LabelMatcher for label {self.label!r}: {self.value!r} is not a valid "
                    f"regular expression ({exc}); fix the pattern"
                ) from None

    @classmethod
    def parse(cls, text: str) -> LabelMatcher:
        """From PromQL's form: ``route="api"``, ``code=~"5.."``."""
        found = _MATCHER.match(text)
        if found is None:
            raise QueryError(
                f'label matcher {text!r} is not of the form label="value" (or !=, =~, !~)'
            )
        return cls(found.group(1), found.group(2), found.group(3))  # type: ignore[arg-type]

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether a series with these labels is selected."""
        value = labels.get(self.label, "")
        if self.op == "=":
            return value == self.value
        if self.op == "!=":
            return value != self.value
        hit = re.fullmatch(self.value, value) is not None
        return hit if self.op == "=~" else not hit


TimeLike: TypeAlias = dt.datetime | float | int


class MetricQuery(msgspec.Struct, frozen=True, kw_only=True):
    """What to read and how to aggregate it (see the module docstring).

    Times are aware datetimes or Unix seconds; ``step``, ``window`` and ``lookback`` are
    seconds. Without a step, about 250 evaluations end at ``end`` (``start`` moves up to
    the first on that grid, less than a step later), so a chart shows the newest samples.
    ``matchers`` take :class:`LabelMatcher` or PromQL text (``'code=~"5.."'``).
    Invalid queries raise :class:`~tachimeter.errors.QueryError` naming the parameter.

    >>> MetricQuery(names=["up"], start=0, end=3600, step=60).evaluation_times()[-1]
    3600000000
    """

    names: Sequence[str]
    start: TimeLike
    end: TimeLike
    matchers: Sequence[LabelMatcher | str] = ()
    step: float | None = None
    aggregation: Aggregation | None = None
    group_by: Sequence[str] | None = None
    window: float | None = None
    quantiles: Sequence[float] = (0.5, 0.9, 0.99)
    resolution: Resolution = "auto"
    lookback: float = 300.0

    def __post_init__(self) -> None:
        names = [self.names] if isinstance(self.names, str) else list(self.names)
        if not names or not all(isinstance(n, str) and n for n in names):
            raise QueryError(
                f"MetricQuery.names must be a non-empty list of metric names, got {self.names!r}"
            )
        _set(self, "names", tuple(names))
        _set(
            self,
            "matchers",
            tuple(
                m if isinstance(m, LabelMatcher) else LabelMatcher.parse(m) for m in self.matchers
            ),
        )
        start, end = _to_us(self.start, "start"), _to_us(self.end, "end")
        if end < start:
            raise QueryError(
                f"MetricQuery.end ({_show(end)}) is before start ({_show(start)}); swap them"
            )
        if self.aggregation is not None and self.aggregation not in _AGGREGATIONS:
            raise QueryError(
                f"MetricQuery.aggregation must be one of {', '.join(sorted(_AGGREGATIONS))} "
                f"or None, got {self.aggregation!r}"
            )
        if self.resolution not in _RESOLUTIONS:
            raise QueryError(
                f"MetricQuery.resolution must be one of {', '.join(_RESOLUTIONS)}, "
                f"got {self.resolution!r}"
            )
        step = self.step
        if step is None:
            step = max(15.0, math.ceil((end - start) / _US / _DEFAULT_POINTS))
            _set(self, "step", float(step))
            # A chart's grid: its last evaluation is at `end` (now), so the newest samples
            # show; the first is the earliest at or after `start` on that grid.
            step_us = round(step * _US)
            start += (end - start) % step_us
            _set(self, "start", from_ns(start * 1000))
        elif not (isinstance(step, int | float) and math.isfinite(step) and step > 0):
            raise QueryError(f"MetricQuery.step must be a number of seconds > 0, got {step!r}")
        if (end - start) / (step * _US) > _MAX_POINTS:
            raise QueryError(
                f"MetricQuery.step {step!r} s gives more than {_MAX_POINTS} points over "
                f"{(end - start) / _US:.0f} s; use a step of at least "
                f"{math.ceil((end - start) / _US / _MAX_POINTS)} s"
            )
        for name in ("window", "lookback"):
            value = getattr(self, name)
            if value is not None and not (
                isinstance(value, int | float) and math.isfinite(value) and value > 0
            ):
                raise QueryError(f"MetricQuery.{name} must be seconds > 0, got {value!r}")
        for q in self.quantiles:
            if not (isinstance(q, int | float) and 0.0 <= q <= 1.0):
                raise QueryError(
                    f"MetricQuery.quantiles must be numbers in [0, 1], got {q!r} in "
                    f"{list(self.quantiles)!r}"
                )
        if self.aggregation in ("percentiles", "histogram_quantile") and not self.quantiles:
            raise QueryError("MetricQuery.quantiles is empty; give at least one, e.g. [0.99]")
        if self.group_by is not None:
            if isinstance(self.group_by, str):
                raise QueryError(
                    f"MetricQuery.group_by must be a list of label names, got the string "
                    f"{self.group_by!r}; write [{self.group_by!r}]"
                )
            _set(self, "group_by", tuple(self.group_by))

    @property
    def start_us(self) -> int:
        """Start in integer microseconds."""
        return _to_us(self.start, "start")

    @property
    def end_us(self) -> int:
        """End in integer microseconds."""
        return _to_us(self.end, "end")

    @property
    def step_us(self) -> int:
        """Step in integer microseconds."""
        assert self.step is not None
        return round(self.step * _US)

    @property
    def window_us(self) -> int:
        """The range of rate, increase and percentiles (default: the step)."""
        return round((self.window if self.window is not None else self.step or 0) * _US)

    def evaluation_times(self) -> list[int]:
        """``start, start + step, ...`` up to ``end``, in microseconds (raw resolution)."""
        start, end, step = self.start_us, self.end_us, self.step_us
        return list(range(start, end + 1, step))

    def chosen_resolution(self) -> Resolution:
        """The resolution ``auto`` stands for, given the step (others unchanged)."""
        if self.resolution != "auto":
            return self.resolution
        step = self.step_us
        window = self.window_us
        periods: tuple[Resolution, ...] = ("weekly", "daily", "hourly")
        for period in periods:
            length = _PERIOD_US[period]
            if step % length == 0 and window % length == 0:
                return period
        return "raw"


class MetricSeries:
    """One result series: its labels and (timestamp, value) points.

    ``timestamps`` are Unix seconds and ``values`` floats (numpy arrays); times without
    a value are left out.

    >>> s = MetricSeries({"route": "api"}, np.array([60.0]), np.array([1.5]))
    >>> s.points()
    [(60.0, 1.5)]
    """

    __slots__ = ("labels", "name", "timestamps", "values")

    def __init__(
        self,
        labels: dict[str, str],
        timestamps: npt.NDArray[np.float64],
        values: npt.NDArray[np.float64],
        name: str | None = None,
    ) -> None:
        self.labels = labels
        self.timestamps = timestamps
        self.values = values
        self.name = name

    def points(self) -> list[tuple[float, float]]:
        """The points as ``(unix_seconds, value)`` pairs."""
        return list(zip(self.timestamps.tolist(), self.values.tolist(), strict=True))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: ``{"name", "labels", "points": [[t, v], ...]}``."""
        return {"name": self.name, "labels": dict(self.labels), "points": self.points()}

    def __repr__(self) -> str:
        return f"MetricSeries({self.name!r}, {self.labels!r}, {len(self.values)} points)"


class QueryResult(msgspec.Struct, frozen=True, kw_only=True):
    """The series a query produced and how they were computed.

    >>> QueryResult(series=[], resolution="raw", step=60.0, window=300.0).to_dict()["window"]
    300.0
    """

    series: list[MetricSeries]
    resolution: Resolution
    step: float
    window: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "resolution": self.resolution,
            "step": self.step,
            "window": self.window,
            "series": [s.to_dict() for s in self.series],
        }


class MetricsEngine:
    """Evaluates :class:`MetricQuery` on a store.

    ``source`` is a ``sqlite3.Connection``, a ``SQLiteStore`` (queries use its pooled
    read-only connections) or a ``TimeSeriesStore`` (its connection).

    >>> import sqlite3
    >>> from tachimeter.store.migrator import Migrator
    >>> conn = sqlite3.connect(":memory:", isolation_level=None)
    >>> _ = Migrator(conn).up()
    >>> engine = MetricsEngine(conn)
    >>> engine.query(MetricQuery(names=["up"], start=0, end=60, step=15)).series
    []
    """

    __slots__ = ("_source",)

    def __init__(self, source: ReadSource | Any) -> None:
        connection = getattr(source, "connection", None)
        self._source = connection if isinstance(connection, sqlite3.Connection) else source

    def series(
        self, names: Sequence[str], matchers: Sequence[LabelMatcher | str] = ()
    ) -> list[SeriesInfo]:
        """The series of these names whose labels pass every matcher."""
        parsed = [m if isinstance(m, LabelMatcher) else LabelMatcher.parse(m) for m in matchers]
        with read_connection(self._source) as conn:
            return _select(conn, names, parsed)

    def query(self, query: MetricQuery) -> QueryResult:
        """Evaluate ``query``; raises ``QueryError`` on an invalid combination."""
        resolution = query.chosen_resolution()
        with read_connection(self._source) as conn:
            infos = _select(conn, query.names, query.matchers)  # type: ignore[arg-type]
            if resolution == "raw":
                series = _Raw(conn, query, infos).evaluate()
            else:
                series = _Rolled(conn, query, infos, resolution).evaluate()
        return QueryResult(
            series=series,
            resolution=resolution,
            step=float(query.step or 0),
            window=query.window_us / _US,
        )

    def total_increase(
        self,
        names: Sequence[str],
        start: TimeLike,
        end: TimeLike,
        *,
        matchers: Sequence[LabelMatcher | str] = (),
        group_by: Sequence[str] = (),
    ) -> dict[tuple[str, ...], float]:
        """Exact increase of counters over ``[start, end)``, summed per ``group_by`` values.

        Reset-aware and unextrapolated (the rollups' definition): from raw samples when
        the store still has them for the whole range, else from hourly rollups (the range
        is widened to whole hours).
        """
        start_us, end_us = _to_us(start, "start"), _to_us(end, "end")
        parsed = [m if isinstance(m, LabelMatcher) else LabelMatcher.parse(m) for m in matchers]
        with read_connection(self._source) as conn:
            infos = _select(conn, names, parsed)
            if not infos:
                return {}
            per_series = _exact_increase(conn, infos, start_us, end_us)
        totals: dict[tuple[str, ...], float] = defaultdict(float)
        by_id = {s.id: s for s in infos}
        for sid, value in per_series.items():
            labels = by_id[sid].labels
            totals[tuple(labels.get(g, "") for g in group_by)] += value
        return dict(totals)


def _exact_increase(
    conn: sqlite3.Connection, infos: Sequence[SeriesInfo], start: int, end: int
) -> dict[int, float]:
    oldest = conn.execute(
        "SELECT min(m) FROM (SELECT min(min_ts) AS m FROM metric_chunks "
        "UNION ALL SELECT min(ts) FROM metric_points)"
    ).fetchone()[0]
    out: dict[int, float] = defaultdict(float)
    if oldest is not None and int(oldest) <= start:
        data = read_samples(conn, infos, start - _PERIOD_US["hourly"], end - 1)
        by_id = {s.id: s for s in infos}
        delta = np.array([by_id[int(s)].is_delta for s in data.series_ids], dtype=bool)
        counters = [s.id for s in infos if s.is_counter and not s.is_delta]
        increments = counter_increments(data, delta, previous_samples(conn, data, start, counters))
        sid = np.repeat(data.series_ids, np.diff(data.offsets))
        keep = (data.timestamps >= start) & np.isfinite(increments)
        sums = np.bincount(
            np.searchsorted(data.series_ids, sid[keep]),
            weights=increments[keep],
            minlength=len(data.series_ids),
        )
        for s, v in zip(data.series_ids.tolist(), sums.tolist(), strict=True):
            out[s] += v
        return dict(out)
    hour = _PERIOD_US["hourly"]
    rows = _period_rows(conn, infos, "hourly", start - start % hour, -(-end // hour) * hour, end)
    for row in rows:
        out[int(row[0])] += float(row[3])
    return dict(out)


def _select(
    conn: sqlite3.Connection, names: Sequence[str], matchers: Sequence[LabelMatcher]
) -> list[SeriesInfo]:
    infos = find_series(conn, list(names))
    return [s for s in infos if all(m.matches(s.labels) for m in matchers)]


# -- raw resolution ------------------------------------------------------------------------


class _Raw:
    """Evaluation over raw samples, vectorized over series x evaluation times."""

    __slots__ = ("conn", "data", "infos", "query", "times")

    def __init__(
        self, conn: sqlite3.Connection, query: MetricQuery, infos: list[SeriesInfo]
    ) -> None:
        self.conn = conn
        self.query = query
        self.times = np.array(query.evaluation_times(), dtype=np.int64)
        reach = max(query.window_us, round(query.lookback * _US))
        base = int(self.times[0]) - reach if len(self.times) else 0
        end = int(self.times[-1]) if len(self.times) else base
        self.data = read_samples(conn, infos, base, end)
        by_id = {s.id: s for s in infos}
        self.infos = [by_id[int(s)] for s in self.data.series_ids]

    def evaluate(self) -> list[MetricSeries]:
        agg = self.query.aggregation
        if not self.infos or not len(self.times):
            return []
        if agg in ("rate", "increase"):
            values = self._rates(agg == "rate")
            return self._group_sum_or_each(values)
        if agg == "percentiles":
            return self._percentiles()
        if agg == "histogram_quantile":
            return _histogram_quantiles(self.infos, self._rates(True), self.query, self.times)
        values = self._instant()
        if agg is None:
            return _each(self.infos, values, self.times, with_name=True)
        return _aggregate(self.infos, values, self.query, self.times, agg)

    def _bounds(self, reach: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Per (series, time): the sample index range of ``[t - reach, t]``."""
        n, m = len(self.infos), len(self.times)
        left = np.empty((n, m), dtype=np.int64)
        right = np.empty((n, m), dtype=np.int64)
        ts = self.data.timestamps
        lows = self.times - reach
        # One binary search per series over all times: no per-sample work.
        for i, (a, b) in enumerate(
            zip(self.data.offsets[:-1].tolist(), self.data.offsets[1:].tolist(), strict=True)
        ):
            piece = ts[a:b]
            left[i] = np.searchsorted(piece, lows, "left") + a
            right[i] = np.searchsorted(piece, self.times, "right") + a
        return left, right

    def _instant(self) -> npt.NDArray[np.float64]:
        lookback = round(self.query.lookback * _US)
        left, right = self._bounds(lookback)
        # The last sample in [t - lookback, t]: right - 1 when the window is not empty.
        found = right > left
        index = np.where(found, right - 1, 0)
        return np.where(found, self.data.values[index], np.nan)

    def _rates(self, per_second: bool) -> npt.NDArray[np.float64]:
        """``rate``/``increase`` per (series, time) as Prometheus 2.x computes them."""
        window = self.query.window_us
        left, right = self._bounds(window)
        values = self.data.values
        ts = self.data.timestamps
        offsets = self.data.offsets
        count = right - left
        first = np.minimum(left, len(values) - 1)
        last = np.maximum(right - 1, 0)
        # Reset corrections: a drop adds back the value before it. Drops are rare, so the
        # running sum is kept over the drops only and looked up by position.
        falls = np.flatnonzero(values[1:] < values[:-1]) + 1
        falls = falls[np.isin(falls, offsets[:-1], invert=True)]
        corrections: npt.NDArray[np.float64] | float = 0.0
        if len(falls):
            fallen = np.concatenate([[0.0], np.cumsum(values[falls - 1])])
            corrections = (
                fallen[np.searchsorted(falls, last, "right")]
                - fallen[np.searchsorted(falls, first, "right")]
            )
        delta_series = np.array([s.is_delta for s in self.infos], dtype=bool)[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            result = values[last] - values[first] + corrections
            rel_times = self.times[None, :]
            start = rel_times - window
            to_start = (ts[first] - start) / _US
            to_end = (rel_times - ts[last]) / _US
            sampled = (ts[last] - ts[first]) / _US
            average = sampled / (count - 1)
            to_zero = sampled * (values[first] / result)
            use_zero = (result > 0) & (values[first] >= 0) & (to_zero < to_start)
            to_start = np.where(use_zero, to_zero, to_start)
            threshold = average * 1.1
            interval = (
                sampled
                + np.where(to_start < threshold, to_start, average / 2)
                + np.where(to_end < threshold, to_end, average / 2)
            )
            out = result * (interval / sampled)
            valid = count >= 2
            if delta_series.any():
                # Delta counters: the increments in [t - window, t] add up, no extrapolation.
                value_prefix = np.concatenate([[0.0], np.cumsum(values)])
                out = np.where(delta_series, value_prefix[right] - value_prefix[left], out)
                valid = np.where(delta_series, count >= 1, valid)
            if per_second:
                out = out / (window / _US)
        return np.where(valid, out, np.nan)

    def _group_sum_or_each(self, values: npt.NDArray[np.float64]) -> list[MetricSeries]:
        if self.query.group_by is None:
            return _each(self.infos, values, self.times, with_name=False)
        return _aggregate(self.infos, values, self.query, self.times, "sum")

    def _percentiles(self) -> list[MetricSeries]:
        groups, labels = _groups(self.infos, self.query.group_by, default_all=True)
        left, right = self._bounds(self.query.window_us)
        qs = list(self.query.quantiles)
        out: list[MetricSeries] = []
        for g, group_labels in enumerate(labels):
            members = np.flatnonzero(groups == g)
            result = _window_quantiles(self.data.values, left[members].T, right[members].T, qs)
            out.extend(_quantile_series(group_labels, qs, result, self.times))
        return out


def _window_quantiles(
    values: npt.NDArray[np.float64],
    left: npt.NDArray[np.int64],
    right: npt.NDArray[np.int64],
    qs: Sequence[float],
) -> npt.NDArray[np.float64]:
    """Per window ``j``, ``np.quantile`` of the samples ``values[left[j, i]:right[j, i]]``
    of every series ``i`` (NaN when empty).

    The windows become the rows of a matrix (padded with +inf), sorted row-wise in one
    call; every quantile is then read off by index and interpolated as numpy's ``linear``
    method does: one sort per block of windows instead of a numpy call per window.
    """
    m = len(left)
    out = np.full((len(qs), m), np.nan)
    lengths = right - left
    sizes = lengths.sum(axis=1)
    widest = int(sizes.max()) if m else 0
    if widest == 0:
        return out
    # Blocks of about 4M cells (32 MB) bound the memory of very wide windows.
    per_block = max(1, 4_000_000 // widest)
    for first in range(0, m, per_block):
        block = slice(first, first + per_block)
        n = sizes[block]
        runs = lengths[block].ravel()
        total = int(runs.sum())
        run_start = np.cumsum(runs) - runs
        # Source sample and matrix cell of every value, series slice after series slice.
        source = np.arange(total, dtype=np.int64) + np.repeat(left[block].ravel() - run_start, runs)
        row = np.repeat(np.arange(len(n)), n)
        column = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(n) - n, n)
        matrix = np.full((len(n), int(n.max()) if len(n) else 0), np.inf)
        matrix[row, column] = values[source]
        matrix.sort(axis=1)
        rows = np.arange(len(n))
        filled = n > 0
        for qi, q in enumerate(qs):
            position = (n - 1) * q
            below = np.floor(position).astype(np.int64).clip(0, None)
            above = np.minimum(below + 1, np.maximum(n - 1, 0))
            fraction = position - below
            a = matrix[rows, below]
            b = matrix[rows, above]
            with np.errstate(invalid="ignore"):
                diff = b - a
                # numpy's _lerp: from the nearer end, so the result is exact at both ends.
                value = np.where(fraction >= 0.5, b - diff * (1 - fraction), a + diff * fraction)
            out[qi, block] = np.where(filled, value, np.nan)
    return out


# -- rollup resolution ---------------------------------------------------------------------


class _Rolled:
    """Evaluation over ``metric_aggregates`` rows (see the module docstring)."""

    __slots__ = ("conn", "infos", "period", "query", "rows", "shown", "spans", "times")

    def __init__(
        self,
        conn: sqlite3.Connection,
        query: MetricQuery,
        infos: list[SeriesInfo],
        period: Resolution,
    ) -> None:
        length = _PERIOD_US[period]
        step, window = query.step_us, query.window_us
        if step % length or window % length:
            raise QueryError(
                f"MetricQuery resolution {period!r} needs step and window in whole "
                f"{period} periods ({length // _US} s), got step {step / _US:g} s and "
                f"window {window / _US:g} s; round them, or use resolution='raw'"
            )
        self.conn = conn
        self.query = query
        self.infos = infos
        self.period = period
        # Period boundaries, counted back by the step from the first boundary at or after
        # `end`: the last window is the range's newest (perhaps unfinished) period, read
        # up to `end` only, and reported at `end`.
        if period == "weekly":
            first = period_start(query.start_us + length - 1, "weekly")
            last = period_start(query.end_us + length - 1, "weekly")
        else:
            first = -(-query.start_us // length) * length
            last = -(-query.end_us // length) * length
        self.times = last - step * np.arange((last - first) // step, -1, -1, dtype=np.int64)
        self.shown = np.minimum(self.times, query.end_us)
        # The part of each window up to `end`: what a rate divides by.
        self.spans = self.shown - (self.times - window)
        low = int(self.times[0]) - window
        high = int(self.times[-1])
        self.rows = _period_rows(conn, infos, period, low, high, query.end_us)  # type: ignore[arg-type]

    def evaluate(self) -> list[MetricSeries]:
        if not self.infos or not len(self.times) or not self.rows:
            return []
        agg = self.query.aggregation
        ids = np.array([s.id for s in self.infos], dtype=np.int64)
        columns = list(zip(*self.rows, strict=True))
        row_start = np.array(columns[1], dtype=np.int64)
        series_index = np.searchsorted(ids, np.array(columns[0], dtype=np.int64))
        window = self.query.window_us
        # Row r counts at every time t_j with t_j - window <= start_r < t_j: a run of
        # columns. Expand the (row, column) pairs once; everything below is array work.
        first_col = np.searchsorted(self.times, row_start, "right")
        end_col = np.searchsorted(self.times - window, row_start, "right")
        reps = np.maximum(end_col - first_col, 0)
        row = np.repeat(np.arange(len(row_start)), reps)
        col = first_col[row] + (np.arange(len(row)) - np.repeat(np.cumsum(reps) - reps, reps))
        cell_series = series_index[row]
        n, m = len(ids), len(self.times)
        if agg == "percentiles":
            return self._percentiles(series_index[row], col, row)
        if agg in ("rate", "increase", "histogram_quantile"):
            totals = np.zeros((n, m))
            seen = np.zeros((n, m), dtype=bool)
            sums = np.array(columns[3], dtype=np.float64)
            np.add.at(totals, (cell_series, col), sums[row])
            seen[cell_series, col] = True
            values = np.where(seen, totals, np.nan)
            if agg in ("rate", "histogram_quantile"):
                values = values / (self.spans / _US)
            if agg == "histogram_quantile":
                return _histogram_quantiles(self.infos, values, self.query, self.shown)
            if self.query.group_by is None:
                return _each(self.infos, values, self.shown, with_name=False)
            return _aggregate(self.infos, values, self.query, self.shown, "sum")
        values = np.full((n, m), np.nan)
        if agg in ("min", "max"):
            # The window's extremes, exact from the rows.
            picked = np.array(columns[4 if agg == "min" else 5], dtype=np.float64)
            (np.fmin if agg == "min" else np.fmax).at(values, (cell_series, col), picked[row])
        else:
            # The window's last sample: of each (series, column) cell, the row whose last
            # sample is latest.
            last = np.array(columns[7], dtype=np.float64)
            last_ts = np.array(columns[8], dtype=np.int64)
            order = np.lexsort((last_ts[row], col, cell_series))
            cs, cc = cell_series[order], col[order]
            final = np.ones(len(order), dtype=bool)
            final[:-1] = (cs[1:] != cs[:-1]) | (cc[1:] != cc[:-1])
            values[cs[final], cc[final]] = last[row[order][final]]
        if agg is None:
            return _each(self.infos, values, self.shown, with_name=True)
        return _aggregate(self.infos, values, self.query, self.shown, agg)

    def _percentiles(
        self,
        cell_series: npt.NDArray[np.int64],
        col: npt.NDArray[np.int64],
        row: npt.NDArray[np.int64],
    ) -> list[MetricSeries]:
        groups, labels = _groups(self.infos, self.query.group_by, default_all=True)
        qs = list(self.query.quantiles)
        # Each (group, time) cell merges the sketches of its rows; decoded all at once.
        with_sketch = np.array([self.rows[k][9] is not None for k in row.tolist()], dtype=bool)
        cell_group, col, row = groups[cell_series][with_sketch], col[with_sketch], row[with_sketch]
        result = np.full((len(labels), len(qs), len(self.times)), np.nan)
        if len(row):
            used, index = np.unique(row, return_inverse=True)
            bins = decode_sketches([self.rows[int(k)][9] for k in used])
            cell = cell_group * len(self.times) + col
            order = np.argsort(cell, kind="stable")
            cell, index = cell[order], index[order]
            bounds = np.flatnonzero(np.diff(cell)) + 1
            members = np.split(index, bounds)
            cells = cell[np.concatenate([[0], bounds])]
            merged = merged_quantiles(bins, members, qs)
            result[cells // len(self.times), :, cells % len(self.times)] = merged.T
        out: list[MetricSeries] = []
        for g, group_labels in enumerate(labels):
            out.extend(_quantile_series(group_labels, qs, result[g], self.shown))
        return out


def _period_rows(
    conn: sqlite3.Connection,
    infos: Sequence[SeriesInfo],
    period: Literal["hourly", "daily", "weekly"],
    low: int,
    high: int,
    until: int,
) -> list[tuple[Any, ...]]:
    """Rows (``ROW_COLUMNS``) of periods starting in ``[low, high)``, including periods
    not (fully) rolled up yet, computed from raw samples and hourly rows on the fly; of
    the samples at ``until`` and later, none."""
    if not infos:
        return []
    ids_json = msgspec.json.encode(sorted(s.id for s in infos)).decode()
    mark_row = conn.execute(
        "SELECT complete_until FROM metric_rollup_state WHERE period_type = 'hourly'"
    ).fetchone()
    mark = int(mark_row[0]) if mark_row is not None else low
    # The hour holding `until` and the ones after it are computed from raw samples.
    mark = min(mark, until - until % _PERIOD_US["hourly"])
    stored = conn.execute(
        f"SELECT {ROW_COLUMNS} FROM metric_aggregates WHERE period_type = ? "
        "AND period_start_us >= ? AND period_start_us < ? "
        "AND series_id IN (SELECT value FROM json_each(?)) ORDER BY series_id, period_start_us",
        (period, low, high, ids_json),
    ).fetchall()
    if high <= mark or (
        period != "hourly" and period_end(period_start(high - 1, period), period) <= mark
    ):
        return stored
    # Periods reaching past the high-water mark: stored rows there may be partial.
    first_open = period_start(mark, period)
    rows = [r for r in stored if int(r[1]) < first_open]
    fresh = compute_hourly_rows(
        conn,
        list(infos),
        max(mark, low),
        min(
            until,
            high if period == "hourly" else period_end(period_start(high - 1, period), period),
        ),
    )
    fresh_parts = [(r[13], r[14], r[4], r[5], r[6], r[7], r[8], r[15], r[16], r[17]) for r in fresh]
    if period == "hourly":
        return rows + [p for p in fresh_parts if low <= int(p[1]) < high]
    hourly_stored = conn.execute(
        f"SELECT {ROW_COLUMNS} FROM metric_aggregates WHERE period_type = 'hourly' "
        "AND period_start_us >= ? AND period_start_us < ? "
        "AND series_id IN (SELECT value FROM json_each(?))",
        (max(first_open, low), mark, ids_json),
    ).fetchall()
    parts: dict[tuple[int, int], list[tuple[Any, ...]]] = defaultdict(list)
    for part in [*hourly_stored, *fresh_parts]:
        parts[(int(part[0]), period_start(int(part[1]), period))].append(part)
    by_id = {s.id: s for s in infos}
    for (sid, start), pieces in sorted(parts.items()):
        if low <= start < high:
            merged = merge_rows(by_id[sid], period, start, pieces)
            rows.append(
                (
                    merged[13],
                    merged[14],
                    merged[4],
                    merged[5],
                    merged[6],
                    merged[7],
                    merged[8],
                    merged[15],
                    merged[16],
                    merged[17],
                )
            )
    return rows


# -- shared --------------------------------------------------------------------------------


def _groups(
    infos: Sequence[SeriesInfo], group_by: Sequence[str] | None, default_all: bool
) -> tuple[npt.NDArray[np.int64], list[dict[str, str]]]:
    """Group index per series and each group's labels (empty values left out)."""
    index: dict[tuple[str, ...], int] = {}
    labels: list[dict[str, str]] = []
    out = np.empty(len(infos), dtype=np.int64)
    keys = tuple(group_by) if group_by is not None else ()
    for i, info in enumerate(infos):
        key = tuple(info.labels.get(k, "") for k in keys)
        g = index.get(key)
        if g is None:
            g = index[key] = len(labels)
            labels.append({k: v for k, v in zip(keys, key, strict=True) if v})
        out[i] = g
    return out, labels


def _each(
    infos: Sequence[SeriesInfo],
    values: npt.NDArray[np.float64],
    times: npt.NDArray[np.int64],
    *,
    with_name: bool,
) -> list[MetricSeries]:
    seconds = times / _US
    out = []
    for i, info in enumerate(infos):
        row = values[i]
        keep = ~np.isnan(row)
        if keep.any():
            out.append(
                MetricSeries(
                    dict(info.labels), seconds[keep], row[keep], info.name if with_name else None
                )
            )
    return out


def _aggregate(
    infos: Sequence[SeriesInfo],
    values: npt.NDArray[np.float64],
    query: MetricQuery,
    times: npt.NDArray[np.int64],
    agg: str,
) -> list[MetricSeries]:
    groups, labels = _groups(infos, query.group_by, default_all=True)
    k, m = len(labels), values.shape[1]
    present = ~np.isnan(values)
    counts = np.zeros((k, m))
    np.add.at(counts, groups, present.astype(np.float64))
    if agg in ("sum", "avg"):
        totals = np.zeros((k, m))
        np.add.at(totals, groups, np.where(present, values, 0.0))
        result = totals if agg == "sum" else totals / np.where(counts > 0, counts, 1)
    elif agg == "count":
        result = counts
    elif agg == "min":
        result = np.full((k, m), np.inf)
        np.fmin.at(result, groups, values)
    else:
        result = np.full((k, m), -np.inf)
        np.fmax.at(result, groups, values)
    result = np.where(counts > 0, result, np.nan)
    seconds = times / _US
    out = []
    for g, group_labels in enumerate(labels):
        keep = ~np.isnan(result[g])
        if keep.any():
            out.append(MetricSeries(group_labels, seconds[keep], result[g][keep]))
    return out


def _quantile_series(
    labels: Mapping[str, str],
    qs: Sequence[float],
    result: npt.NDArray[np.float64],
    times: npt.NDArray[np.int64],
) -> list[MetricSeries]:
    seconds = times / _US
    out = []
    for qi, q in enumerate(qs):
        keep = ~np.isnan(result[qi])
        if keep.any():
            out.append(
                MetricSeries({**labels, "quantile": _format_q(q)}, seconds[keep], result[qi][keep])
            )
    return out


def _histogram_quantiles(
    infos: Sequence[SeriesInfo],
    rates: npt.NDArray[np.float64],
    query: MetricQuery,
    times: npt.NDArray[np.int64],
) -> list[MetricSeries]:
    """PromQL ``histogram_quantile(q, sum by (group, le) (rate(x_bucket[w])))``."""
    les: list[float] = []
    for info in infos:
        raw = info.labels.get("le")
        try:
            les.append(float(raw) if raw is not None else math.nan)
        except ValueError:
            les.append(math.nan)
    if query.group_by is None:
        keys = sorted({k for s in infos for k in s.labels if k != "le"})
    else:
        keys = [k for k in query.group_by if k != "le"]
    grouped: dict[tuple[str, ...], dict[float, npt.NDArray[np.float64]]] = defaultdict(dict)
    seen: dict[tuple[str, ...], dict[float, npt.NDArray[np.bool_]]] = defaultdict(dict)
    for i, info in enumerate(infos):
        le = les[i]
        if math.isnan(le):
            continue
        key = tuple(info.labels.get(k, "") for k in keys)
        row = rates[i]
        present = ~np.isnan(row)
        buckets = grouped[key]
        if le in buckets:
            buckets[le] = buckets[le] + np.where(present, row, 0.0)
            seen[key][le] = seen[key][le] | present
        else:
            buckets[le] = np.where(present, row, 0.0)
            seen[key][le] = present
    seconds = times / _US
    out: list[MetricSeries] = []
    qs = list(query.quantiles)
    for key, buckets in grouped.items():
        bounds = sorted(buckets)
        counts = np.array([buckets[b] for b in bounds])
        present = np.array([seen[key][b] for b in bounds])
        labels = {k: v for k, v in zip(keys, key, strict=True) if v}
        for q in qs:
            values = np.array(
                [
                    bucket_quantile(
                        q,
                        [b for b, p in zip(bounds, present[:, j], strict=True) if p],
                        [c for c, p in zip(counts[:, j], present[:, j], strict=True) if p],
                    )
                    if present[:, j].any()
                    else math.nan
                    for j in range(len(times))
                ]
            )
            keep = ~np.isnan(values)
            if keep.any():
                out.append(
                    MetricSeries({**labels, "quantile": _format_q(q)}, seconds[keep], values[keep])
                )
    return out


def bucket_quantile(q: float, upper_bounds: Sequence[float], counts: Sequence[float]) -> float:
    """Prometheus' ``histogram_quantile`` on cumulative bucket counts (2.x ``bucketQuantile``).

    >>> bucket_quantile(0.5, [1.0, 2.0, math.inf], [10.0, 20.0, 20.0])
    1.0
    >>> bucket_quantile(0.75, [1.0, 2.0, math.inf], [10.0, 20.0, 20.0])
    1.5
    """
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    pairs: dict[float, float] = {}
    for bound, count in zip(upper_bounds, counts, strict=True):
        pairs[float(bound)] = pairs.get(float(bound), 0.0) + float(count)
    bounds = sorted(pairs)
    if not bounds or not math.isinf(bounds[-1]) or bounds[-1] < 0:
        return math.nan
    values = [pairs[b] for b in bounds]
    highest = -math.inf
    for i, v in enumerate(values):
        if v > highest:
            highest = v
        elif v < highest:
            values[i] = highest
    if len(bounds) < 2:
        return math.nan
    observations = values[-1]
    if observations == 0:
        return math.nan
    rank = q * observations
    b = len(bounds) - 1
    for i in range(len(bounds) - 1):
        if values[i] >= rank:
            b = i
            break
    if b == len(bounds) - 1:
        return bounds[-2]
    if b == 0 and bounds[0] <= 0:
        return bounds[0]
    bucket_start = 0.0
    bucket_end = bounds[b]
    count = values[b]
    if b > 0:
        bucket_start = bounds[b - 1]
        count -= values[b - 1]
        rank -= values[b - 1]
    return bucket_start + (bucket_end - bucket_start) * (rank / count)


def _format_q(q: float) -> str:
    return repr(float(q)).rstrip("0").rstrip(".") if q not in (0, 1) else str(int(q))


def _set(obj: object, name: str, value: object) -> None:
    msgspec.structs.force_setattr(obj, name, value)  # type: ignore[arg-type]


def _to_us(value: TimeLike, name: str) -> int:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise QueryError(
                f"MetricQuery.{name} {value!r} has no time zone; give an aware datetime "
                "(tzinfo=datetime.UTC) or Unix seconds"
            )
        return to_ns(value) // 1000
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return round(value * _US)
    raise QueryError(f"MetricQuery.{name} must be an aware datetime or Unix seconds, got {value!r}")


def _show(us: int) -> str:
    return from_ns(us * 1000).isoformat()


# -- spec 023 reports ----------------------------------------------------------------------


class PerformanceStats(msgspec.Struct, frozen=True, kw_only=True):
    """Spec 023's loop performance statistics (durations in seconds).

    >>> PerformanceStats(loop_type="planner", median_duration=1.5, p95_duration=4.0,
    ...                  p99_duration=9.0, total_executions=120, success_rate=0.95).p95_duration
    4.0
    """

    loop_type: str
    median_duration: float | None
    p95_duration: float | None
    p99_duration: float | None
    total_executions: float
    success_rate: float | None


class TokenUsageReport(msgspec.Struct, frozen=True, kw_only=True):
    """Spec 023's token usage report.

    ``total_tokens`` is input + output: cache tokens are part of input and reasoning
    tokens part of output (OpenTelemetry), so they are never added twice. ``by_token_type``
    shows every type, parts included. ``estimated_cost`` is USD from the price table for
    series with a ``model`` label (or the ``model`` argument), None when no model is known.

    >>> TokenUsageReport(total_tokens=1500, by_loop_type={"planner": 1500},
    ...                  by_token_type={"input": 1200, "output": 300}, by_model={},
    ...                  estimated_cost=None).by_token_type["output"]
    300
    """

    total_tokens: float
    by_loop_type: dict[str, float]
    by_token_type: dict[str, float]
    by_model: dict[str, float]
    estimated_cost: Decimal | None
    unpriced_models: list[str] = []


_DURATION: Final = "loop_execution_duration_seconds"
_TOKENS: Final = "llm_tokens_used_total"
_TOKEN_FIELDS: Final = {
    "input": "input_tokens",
    "output": "output_tokens",
    "cache_read": "cache_read_tokens",
    "cache_creation": "cache_creation_tokens",
    "reasoning": "reasoning_tokens",
}


def loop_performance_stats(
    engine: MetricsEngine, loop_type: str, start: TimeLike, end: TimeLike
) -> PerformanceStats:
    """Median, p95 and p99 duration, executions and success rate of one loop type over
    ``[start, end)``, from ``loop_execution_duration_seconds`` (``tachimeter.metrics.agent``).

    Quantiles interpolate within the histogram's buckets, as ``histogram_quantile`` does;
    counts are exact increases of the histogram's counters.
    """
    matcher = [LabelMatcher("loop_type", "=", loop_type)]
    buckets = engine.total_increase(
        [f"{_DURATION}_bucket"], start, end, matchers=matcher, group_by=["le"]
    )
    counts = engine.total_increase(
        [f"{_DURATION}_count"], start, end, matchers=matcher, group_by=["status"]
    )
    total = sum(counts.values())
    bounds, values = [], []
    for (le,), value in buckets.items():
        try:
            bounds.append(float(le))
        except ValueError:
            continue
        values.append(value)
    quantiles: list[float | None] = []
    for q in (0.5, 0.95, 0.99):
        v = bucket_quantile(q, bounds, values) if bounds else math.nan
        quantiles.append(None if math.isnan(v) else v)
    success = counts.get((_SUCCESS,), 0.0)
    return PerformanceStats(
        loop_type=loop_type,
        median_duration=quantiles[0],
        p95_duration=quantiles[1],
        p99_duration=quantiles[2],
        total_executions=total,
        success_rate=success / total if total > 0 else None,
    )


def token_usage_report(
    engine: MetricsEngine,
    start: TimeLike,
    end: TimeLike,
    *,
    model: str | None = None,
    prices: PriceTable | None = None,
) -> TokenUsageReport:
    """Tokens used over ``[start, end)`` from ``llm_tokens_used_total``, by loop type, by
    token type and by model, with the estimated cost (``tachimeter.model.prices``).

    ``model`` prices series that carry no ``model`` label.
    """
    totals = engine.total_increase(
        [_TOKENS], start, end, group_by=["loop_type", "token_type", "model"]
    )
    by_loop: dict[str, float] = defaultdict(float)
    by_type: dict[str, float] = defaultdict(float)
    by_model: dict[str, float] = defaultdict(float)
    usage: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    total = 0.0
    for (loop, token_type, series_model), value in totals.items():
        by_type[token_type] += value
        counted = token_type in ("input", "output")
        if counted:
            by_loop[loop] += value
            total += value
        chosen = series_model or model or ""
        if counted:
            by_model[chosen] += value
        field = _TOKEN_FIELDS.get(token_type)
        if field is not None:
            usage[chosen][field] += round(value)
    table = prices if prices is not None else PriceTable()
    cost: Decimal | None = None
    unpriced: list[str] = []
    at = from_ns(_to_us(end, "end") * 1000)
    for name, fields in sorted(usage.items()):
        if not name:
            unpriced.append("")
            continue
        try:
            tokens = TokenUsage(**_consistent(fields))
        except (ValueError, TypeError):
            unpriced.append(name)
            continue
        price = table.estimate(name, tokens, at=at).total
        if price is None:
            unpriced.append(name)
            continue
        cost = price if cost is None else cost + price
    return TokenUsageReport(
        total_tokens=total,
        by_loop_type=dict(by_loop),
        by_token_type=dict(by_type),
        by_model=dict(by_model),
        estimated_cost=cost,
        unpriced_models=unpriced,
    )


def _consistent(fields: Mapping[str, int]) -> dict[str, int]:
    """Token counts made to satisfy TokenUsage's rules when counters drifted apart (a
    reset seen in one series only): parts never exceed their whole."""
    out = {k: max(0, int(v)) for k, v in fields.items()}
    cached = out.get("cache_read_tokens", 0) + out.get("cache_creation_tokens", 0)
    out["input_tokens"] = max(out.get("input_tokens", 0), cached)
    out["output_tokens"] = max(out.get("output_tokens", 0), out.get("reasoning_tokens", 0))
    return out
