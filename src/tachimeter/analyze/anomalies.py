"""Anomaly detectors for metric series: robust z-score, seasonal baseline, level shift.

Every detector takes a series as timestamps (Unix seconds) and values and returns an
:class:`AnomalyReport`: per point the expected value, the expected range, a score (in
robust standard deviations) and whether it is anomalous, plus the anomalies themselves,
one :class:`DetectedAnomaly` per run of consecutive anomalous points, each with its
score, expected range and kind (``spike``, ``dip``, ``level_shift``).

==========================  ==========================================================
detector                    expected value at a point, and its spread
==========================  ==========================================================
:class:`RobustZScore`       median of the trailing ``window`` points; spread from their
                            median absolute deviation (MAD)
:class:`SeasonalBaseline`   median of the same time of day (or week) on the previous
                            ``seasons`` periods, plus the recent level of the
                            difference; spread from the MAD of that difference over the
                            trailing ``scale_window``
:class:`LevelShift`         median of the ``window`` points before a candidate change
                            point, compared with the median of the ``window`` points
                            from it on (after removing the seasonal pattern when a
                            ``period`` is given); spread from first differences, which a
                            shift does not inflate
==========================  ==========================================================

Scores are robust z-scores: ``|x - expected| / (1.4826 * MAD)`` (1.4826 makes the MAD of
normal noise equal to its standard deviation). Series are put on a regular grid (the
median spacing of their timestamps, or ``step``); missing samples stay missing (NaN) and
never count as anomalies, and windows with too few samples give no verdict.

The figures these defaults reach on synthetic series with planted anomalies are in
``bench/anomalies.py`` (``bench/results/anomalies.json``).

>>> import numpy as np
>>> t = np.arange(200) * 60.0
>>> v = 10 + np.random.default_rng(1).normal(0, 1, 200)
>>> v[150] += 12
>>> report = RobustZScore().detect(t, v)
>>> [(a.timestamp, a.kind) for a in report.anomalies]
[(9000.0, 'spike')]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Final, Literal, Protocol, TypeAlias, runtime_checkable

import msgspec
import numpy as np
import numpy.typing as npt

from tachimeter.errors import ConfigError, QueryError

__all__ = [
    "AnomalyDetector",
    "AnomalyKind",
    "AnomalyReport",
    "DetectedAnomaly",
    "LevelShift",
    "RobustZScore",
    "SeasonalBaseline",
]

AnomalyKind: TypeAlias = Literal["spike", "dip", "level_shift"]
FloatArray: TypeAlias = npt.NDArray[np.float64]

# MAD * 1.4826 estimates the standard deviation of normal noise; 1.2533 does the same for
# the mean absolute deviation, the fallback when over half the window is one value.
_MAD_TO_SIGMA: Final = 1.4826
_MEAN_AD_TO_SIGMA: Final = 1.2533
# A grid longer than this is a mistake (a year at one second): refuse it rather than
# allocate gigabytes.
_MAX_GRID: Final = 2_000_000
# A spread of exactly zero (a constant window) would make any change infinitely anomalous;
# scores are capped so they stay finite numbers in JSON and SQLite.
_MAX_SCORE: Final = 1e6


class DetectedAnomaly(msgspec.Struct, frozen=True, kw_only=True):
    """One anomaly: a run of consecutive anomalous points, described by its peak.

    ``timestamp`` is the peak's time (for a level shift: the estimated change point),
    ``start``/``end`` the run's first and last anomalous times, ``detected_at`` the
    earliest time the detector could have reported it (later than ``timestamp`` for a
    level shift, which needs ``window`` points after the change). ``score`` is in robust
    standard deviations; ``lower``/``upper`` the expected range at the peak.
    """

    timestamp: float
    start: float
    end: float
    detected_at: float
    value: float
    expected: float
    lower: float
    upper: float
    score: float
    kind: AnomalyKind


class AnomalyReport:
    """A detector's verdict on every point of a series, and the anomalies found.

    Arrays (numpy, one entry per input point, in time order): ``timestamps``, ``values``,
    ``expected``, ``lower``, ``upper`` (NaN where the detector had too little data),
    ``scores`` (0 where it gave no verdict), ``flags`` (anomalous or not) and
    ``detected_at`` (when each point's verdict became available).
    """

    __slots__ = (
        "anomalies",
        "detected_at",
        "detector",
        "expected",
        "flags",
        "lower",
        "scores",
        "timestamps",
        "upper",
        "values",
    )

    def __init__(
        self,
        detector: str,
        timestamps: FloatArray,
        values: FloatArray,
        expected: FloatArray,
        lower: FloatArray,
        upper: FloatArray,
        scores: FloatArray,
        flags: npt.NDArray[np.bool_],
        detected_at: FloatArray,
        anomalies: list[DetectedAnomaly],
    ) -> None:
        self.detector = detector
        self.timestamps = timestamps
        self.values = values
        self.expected = expected
        self.lower = lower
        self.upper = upper
        self.scores = scores
        self.flags = flags
        self.detected_at = detected_at
        self.anomalies = anomalies

    def anomalies_since(self, since: float) -> list[DetectedAnomaly]:
        """Anomalies the detector could report at or after ``since`` (Unix seconds)."""
        return [a for a in self.anomalies if a.detected_at >= since]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict for the dashboard API (NaN becomes None)."""
        return {
            "detector": self.detector,
            "points": [
                {
                    "t": t,
                    "value": _json_float(v),
                    "expected": _json_float(e),
                    "lower": _json_float(lo),
                    "upper": _json_float(hi),
                    "score": _json_float(s),
                    "anomalous": bool(f),
                }
                for t, v, e, lo, hi, s, f in zip(
                    self.timestamps.tolist(),
                    self.values.tolist(),
                    self.expected.tolist(),
                    self.lower.tolist(),
                    self.upper.tolist(),
                    self.scores.tolist(),
                    self.flags.tolist(),
                    strict=True,
                )
            ],
            "anomalies": msgspec.to_builtins(self.anomalies),
        }

    def __repr__(self) -> str:
        return (
            f"AnomalyReport({self.detector!r}, {len(self.values)} points, "
            f"{len(self.anomalies)} anomalies)"
        )


@runtime_checkable
class AnomalyDetector(Protocol):
    """What the alert condition ``Anomaly`` and the dashboard need from a detector."""

    @property
    def name(self) -> str:
        """A short name for reports: ``robust_zscore``, ``seasonal_baseline``, ..."""
        ...

    def detect(
        self, timestamps: npt.ArrayLike, values: npt.ArrayLike, *, step: float | None = None
    ) -> AnomalyReport:
        """Score every point of the series."""
        ...


# -- the grid -----------------------------------------------------------------------------


class _Grid:
    """A series on a regular grid: ``values[k]`` is the sample at ``t0 + k * step``."""

    __slots__ = ("index", "step", "t0", "timestamps", "values", "values_grid")

    def __init__(self, timestamps: npt.ArrayLike, values: npt.ArrayLike, step: float | None):
        t = np.asarray(timestamps, dtype=np.float64).ravel()
        v = np.asarray(values, dtype=np.float64).ravel()
        if t.shape != v.shape:
            raise QueryError(
                f"timestamps and values must have one length, got {t.shape[0]} and {v.shape[0]}"
            )
        keep = np.isfinite(t)
        t, v = t[keep], v[keep]
        order = np.argsort(t, kind="stable")
        t, v = t[order], v[order]
        if step is None:
            gaps = np.diff(t)
            gaps = gaps[gaps > 0]
            step = float(np.median(gaps)) if gaps.size else 1.0
        elif not (math.isfinite(step) and step > 0):
            raise QueryError(f"step must be seconds > 0, got {step!r}")
        t0 = float(t[0]) if t.size else 0.0
        index = np.rint((t - t0) / step).astype(np.int64) if t.size else np.zeros(0, np.int64)
        length = int(index[-1]) + 1 if index.size else 0
        if length > _MAX_GRID:
            raise QueryError(
                f"the series spans {length} steps of {step} s; give a larger step "
                f"(at most {_MAX_GRID} steps)"
            )
        grid = np.full(length, np.nan)
        # Two samples in one slot: the later one wins, as a re-written sample does.
        grid[index] = v
        self.timestamps = t
        self.values = v
        self.index = index
        self.step = step
        self.t0 = t0
        self.values_grid = grid


def _row_nanmedian(rows: FloatArray) -> tuple[FloatArray, npt.NDArray[np.int64]]:
    """Median of each row ignoring NaN, and how many values each row had."""
    ordered = np.sort(rows, axis=1)  # NaN sorts last
    counts = np.count_nonzero(~np.isnan(rows), axis=1)
    lo = np.clip((counts - 1) // 2, 0, None)
    hi = np.clip(counts // 2, 0, None)
    cols = rows.shape[1]
    lo_v = np.take_along_axis(ordered, np.minimum(lo, cols - 1)[:, None], axis=1)[:, 0]
    hi_v = np.take_along_axis(ordered, np.minimum(hi, cols - 1)[:, None], axis=1)[:, 0]
    median = np.where(counts > 0, (lo_v + hi_v) / 2.0, np.nan)
    return median, counts


def _trailing(values: FloatArray, window: int) -> FloatArray:
    """Rows ``values[i - window : i]`` for every ``i`` (NaN before the start)."""
    padded = np.concatenate([np.full(window, np.nan), values])
    view = np.lib.stride_tricks.sliding_window_view(padded, window)
    return view[: len(values)]


def _robust_sigma(rows: FloatArray, center: FloatArray) -> FloatArray:
    """Standard deviation of each row's noise from its MAD (mean deviation as fallback)."""
    deviations = np.abs(rows - center[:, None])
    mad, counts = _row_nanmedian(deviations)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_ad = np.nansum(deviations, axis=1) / counts
    sigma = _MAD_TO_SIGMA * mad
    return np.where(sigma > 0, sigma, _MEAN_AD_TO_SIGMA * mean_ad)


def _scores(deviation: FloatArray, sigma: FloatArray) -> FloatArray:
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.abs(deviation) / sigma
    z = np.where(sigma > 0, z, np.where(deviation == 0, 0.0, _MAX_SCORE))
    return np.minimum(np.nan_to_num(z, nan=0.0), _MAX_SCORE)


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else value


def _check_int(owner: str, name: str, value: object, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{owner}.{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_positive(owner: str, name: str, value: object) -> float:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(f"{owner}.{name} must be a number > 0, got {value!r}")
    return float(value)


def _report(
    name: str,
    grid: _Grid,
    expected: FloatArray,
    sigma: FloatArray,
    scores: FloatArray,
    threshold: float,
    *,
    kinds: npt.NDArray[np.int8] | None = None,
    lag: int = 0,
    locate: Callable[[npt.NDArray[np.intp]], int] | None = None,
) -> AnomalyReport:
    """Reads the grid-level verdicts back at the series' own points and groups runs.

    ``kinds`` marks level shifts (1) apart from spikes and dips (0); ``lag`` is how many
    steps after a point its verdict becomes available; ``locate`` picks a run's
    representative point (default: its highest score).
    """
    idx = grid.index
    values = grid.values
    point_expected = expected[idx]
    point_sigma = sigma[idx]
    point_scores = scores[idx]
    flags = (point_scores > threshold) & np.isfinite(point_expected)
    band = threshold * point_sigma
    lower = point_expected - band
    upper = point_expected + band
    detected_at = grid.timestamps + lag * grid.step
    anomalies: list[DetectedAnomaly] = []
    flagged = np.flatnonzero(flags)
    if flagged.size:
        # Runs of consecutive points (no unflagged point between them).
        breaks = np.flatnonzero(np.diff(flagged) > 1) + 1
        for run in np.split(flagged, breaks):
            peak = int(run[np.argmax(point_scores[run])]) if locate is None else locate(run)
            shift = kinds is not None and bool(kinds[idx[peak]])
            kind: AnomalyKind
            if shift:
                kind = "level_shift"
            else:
                kind = "spike" if values[peak] >= point_expected[peak] else "dip"
            anomalies.append(
                DetectedAnomaly(
                    timestamp=float(grid.timestamps[peak]),
                    start=float(grid.timestamps[run[0]]),
                    end=float(grid.timestamps[run[-1]]),
                    detected_at=float(detected_at[run[0]] if shift else detected_at[peak]),
                    value=float(values[peak]),
                    expected=float(point_expected[peak]),
                    lower=float(lower[peak]),
                    upper=float(upper[peak]),
                    score=float(point_scores[peak]),
                    kind=kind,
                )
            )
    return AnomalyReport(
        name,
        grid.timestamps,
        values,
        point_expected,
        lower,
        upper,
        point_scores,
        flags,
        detected_at,
        anomalies,
    )


# -- detectors ----------------------------------------------------------------------------


class RobustZScore:
    """Flags points far from the median of the trailing window, in MAD units.

    ``window`` points before each point (not the point itself) give the median and the
    spread; at least ``min_points`` of them must be present. ``threshold`` is in robust
    standard deviations. Iglewicz and Hoaglin's cut-off for the modified z-score is 3.5,
    but a MAD taken from a few dozen points is itself noisy and fattens the tails: on
    Gaussian noise a 48-point window flags 0.3 % of points at 3.5 and 0.01 % at 5, hence
    the default. No memory of earlier days: on a series with a daily pattern the window
    sees the pattern's slope as spread and lags behind it; use :class:`SeasonalBaseline`.

    >>> import numpy as np
    >>> v = np.array([5.0, 5.2, 4.9, 5.1, 5.0, 4.8, 5.1, 30.0, 5.0])
    >>> r = RobustZScore(window=6, min_points=5).detect(np.arange(9.0), v)
    >>> [(a.timestamp, a.kind, round(a.expected, 2)) for a in r.anomalies]
    [(7.0, 'spike', 5.05)]
    """

    __slots__ = ("min_points", "threshold", "window")

    def __init__(self, window: int = 48, threshold: float = 5.0, min_points: int = 24) -> None:
        self.window = _check_int("RobustZScore", "window", window, 3)
        self.threshold = _check_positive("RobustZScore", "threshold", threshold)
        self.min_points = _check_int("RobustZScore", "min_points", min_points, 3)
        if self.min_points > self.window:
            raise ConfigError(
                f"RobustZScore.min_points ({min_points}) must be <= window ({window})"
            )

    @property
    def name(self) -> str:
        """``robust_zscore``."""
        return "robust_zscore"

    def detect(
        self, timestamps: npt.ArrayLike, values: npt.ArrayLike, *, step: float | None = None
    ) -> AnomalyReport:
        """Score every point against its trailing window."""
        grid = _Grid(timestamps, values, step)
        series = grid.values_grid
        rows = _trailing(series, self.window)
        median, counts = _row_nanmedian(rows)
        sigma = _robust_sigma(rows, median)
        enough = counts >= self.min_points
        expected = np.where(enough, median, np.nan)
        sigma = np.where(enough, sigma, np.nan)
        scores = np.where(enough, _scores(series - median, sigma), 0.0)
        return _report(self.name, grid, expected, sigma, scores, self.threshold)

    def __repr__(self) -> str:
        return f"RobustZScore(window={self.window}, threshold={self.threshold})"


def _period_levels(series: FloatArray, period: int) -> FloatArray:
    """Each slot's level: the median over one period centred on it, per block of slots.

    Centred on the slot, a window of one whole period contains every phase of the
    pattern once, so its median is the level of the series without the pattern, and a
    level shift moves it exactly at the shift. Computed once per block of a 24th of the
    period (an hour for a daily period), which is plenty for a level.
    """
    n = len(series)
    block = max(1, period // 24)
    half = period // 2
    levels = np.full(n, np.nan)
    # A quarter period of samples gives a usable median; fewer leave the level unknown.
    need = max(1, period // 4)
    for start in range(0, n, block):
        centre = start + block // 2
        window = series[max(0, centre - half) : centre + half]
        present = window[~np.isnan(window)]
        if present.size >= need:
            levels[start : start + block] = np.median(present)
    return levels


def _seasonal_profile(
    grid: _Grid, periods: Sequence[float], seasons: int, min_seasons: int
) -> FloatArray:
    """The pattern expected at each slot, without the series' level.

    The median, over ``t - k * period`` for ``k`` in ``1..seasons`` and each period, of
    the value's deviation from its own level (:func:`_period_levels`). Deviations rather
    than values, so a level shift is not repeated one and two periods later when the
    shifted days become the baseline. The level uses the shortest period: its window
    ends half a period after a lagged slot, which is still before ``t``.
    """
    series = grid.values_grid
    shortest = max(1, round(min(periods) / grid.step))
    deviations = series - _period_levels(series, shortest)
    lags = sorted({round(k * p / grid.step) for p in periods for k in range(1, seasons + 1)})
    n = len(series)
    columns = np.full((n, len(lags)), np.nan)
    for j, lag in enumerate(lags):
        if 0 < lag < n:
            columns[lag:, j] = deviations[: n - lag]
    profile, counts = _row_nanmedian(columns)
    return np.where(counts >= min_seasons, profile, np.nan)


def _check_periods(owner: str, periods: Sequence[float] | float) -> tuple[float, ...]:
    items = (periods,) if isinstance(periods, int | float) else tuple(periods)
    if not items:
        raise ConfigError(f"{owner}.periods must name at least one period in seconds")
    return tuple(_check_positive(owner, "periods", p) for p in items)


class SeasonalBaseline:
    """Flags points far from the same time of day (or week) on the previous periods.

    The baseline at ``t`` is the median of the values at ``t - k * period`` for ``k`` in
    ``1..seasons`` and each of ``periods`` (default: one day, so the same hour of the
    previous three days; add ``604_800.0`` for the same hour of previous weeks). The
    difference from that baseline is corrected by its own median over the trailing
    ``level_window`` points (the series may sit a little higher today than on previous
    days) and scored against its spread over the trailing ``scale_window`` points.

    >>> import numpy as np
    >>> t = np.arange(4 * 24) * 3600.0                 # four days, hourly
    >>> v = 100 + 50 * np.sin(2 * np.pi * t / 86400) + np.random.default_rng(0).normal(0, 2, 96)
    >>> v[80] += 40                                     # a spike on day four
    >>> r = SeasonalBaseline(seasons=3, level_window=6, scale_window=24).detect(t, v)
    >>> [a.timestamp / 3600 for a in r.anomalies]
    [80.0]
    """

    __slots__ = ("level_window", "min_seasons", "periods", "scale_window", "seasons", "threshold")

    def __init__(
        self,
        periods: Sequence[float] | float = (86_400.0,),
        seasons: int = 3,
        threshold: float = 4.0,
        level_window: int = 12,
        scale_window: int = 288,
        min_seasons: int = 2,
    ) -> None:
        self.periods = _check_periods("SeasonalBaseline", periods)
        self.seasons = _check_int("SeasonalBaseline", "seasons", seasons, 1)
        self.threshold = _check_positive("SeasonalBaseline", "threshold", threshold)
        self.level_window = _check_int("SeasonalBaseline", "level_window", level_window, 1)
        self.scale_window = _check_int("SeasonalBaseline", "scale_window", scale_window, 8)
        self.min_seasons = _check_int("SeasonalBaseline", "min_seasons", min_seasons, 1)
        if self.min_seasons > self.seasons * len(self.periods):
            raise ConfigError(
                f"SeasonalBaseline.min_seasons ({min_seasons}) must be <= seasons x periods "
                f"({self.seasons * len(self.periods)})"
            )

    @property
    def name(self) -> str:
        """``seasonal_baseline``."""
        return "seasonal_baseline"

    def detect(
        self, timestamps: npt.ArrayLike, values: npt.ArrayLike, *, step: float | None = None
    ) -> AnomalyReport:
        """Score every point against the same phase of previous periods."""
        grid = _Grid(timestamps, values, step)
        series = grid.values_grid
        seasonal = _seasonal_profile(grid, self.periods, self.seasons, self.min_seasons)
        residual = series - seasonal
        level, level_counts = _row_nanmedian(_trailing(residual, self.level_window))
        # No recent sample (after a gap): no level, so no verdict until samples return.
        level = np.where(level_counts > 0, level, np.nan)
        corrected = residual - level
        scale_rows = _trailing(corrected, self.scale_window)
        center, counts = _row_nanmedian(scale_rows)
        sigma = _robust_sigma(scale_rows, center)
        # A quarter of the scale window (at least 8 points) gives a usable spread.
        enough = (counts >= max(8, self.scale_window // 4)) & np.isfinite(seasonal)
        expected = np.where(enough, seasonal + level, np.nan)
        sigma = np.where(enough, sigma, np.nan)
        scores = np.where(enough, _scores(series - expected, sigma), 0.0)
        return _report(self.name, grid, expected, sigma, scores, self.threshold)

    def __repr__(self) -> str:
        return (
            f"SeasonalBaseline(periods={self.periods}, seasons={self.seasons}, "
            f"threshold={self.threshold})"
        )


def _change_point(base: FloatArray, lo: int, hi: int) -> int | None:
    """The grid slot in ``[lo, hi)`` where splitting the series in two levels (each its
    median) leaves the least absolute error; None when there are too few samples."""
    present = np.flatnonzero(~np.isnan(base[lo:hi]))
    values = base[lo:hi][present]
    best: int | None = None
    best_cost = math.inf
    for k in range(2, len(values) - 1):
        left, right = values[:k], values[k:]
        cost = float(np.abs(left - np.median(left)).sum() + np.abs(right - np.median(right)).sum())
        if cost < best_cost:
            best_cost, best = cost, lo + int(present[k])
    return best


class LevelShift:
    """Finds points where the series' level changes and stays changed.

    For each candidate change point the median of the ``window`` points before it is
    compared with the median of the ``window`` points from it on; the difference is
    scored against the noise, estimated from first differences over the trailing
    ``scale_window`` points (a shift moves one difference, not their spread). Each run of
    candidates above ``threshold`` gives one anomaly at its strongest point. A shift is
    known ``window - 1`` steps after it happens (``detected_at``). Medians ignore isolated
    spikes. With ``periods`` (seconds), the same-phase median of the previous ``seasons``
    periods is subtracted first, so a daily pattern is not taken for shifts.

    >>> import numpy as np
    >>> v = np.r_[np.full(40, 10.0), np.full(40, 18.0)] + np.random.default_rng(2).normal(0, 1, 80)
    >>> [a.timestamp for a in LevelShift(window=8).detect(np.arange(80.0), v).anomalies]
    [40.0]
    """

    __slots__ = ("min_seasons", "periods", "scale_window", "seasons", "threshold", "window")

    def __init__(
        self,
        window: int = 12,
        threshold: float = 3.0,
        scale_window: int = 288,
        periods: Sequence[float] | float | None = None,
        seasons: int = 3,
        min_seasons: int = 2,
    ) -> None:
        self.window = _check_int("LevelShift", "window", window, 3)
        self.threshold = _check_positive("LevelShift", "threshold", threshold)
        self.scale_window = _check_int("LevelShift", "scale_window", scale_window, 8)
        self.periods = None if periods is None else _check_periods("LevelShift", periods)
        self.seasons = _check_int("LevelShift", "seasons", seasons, 1)
        self.min_seasons = _check_int("LevelShift", "min_seasons", min_seasons, 1)

    @property
    def name(self) -> str:
        """``level_shift``."""
        return "level_shift"

    def detect(
        self, timestamps: npt.ArrayLike, values: npt.ArrayLike, *, step: float | None = None
    ) -> AnomalyReport:
        """Score every point as a candidate change point."""
        grid = _Grid(timestamps, values, step)
        series = grid.values_grid
        n = len(series)
        w = self.window
        if self.periods is not None:
            seasonal = _seasonal_profile(grid, self.periods, self.seasons, self.min_seasons)
            # Before the first full seasons there is no baseline: those points give no
            # verdict rather than a verdict on the raw pattern.
            base = series - seasonal
        else:
            seasonal = np.zeros(n)
            base = series
        before, before_n = _row_nanmedian(_trailing(base, w))
        # The window starting at i is the trailing window ending at i + w - 1.
        ahead_rows = _trailing(np.concatenate([base, np.full(w, np.nan)]), w)[w:]
        after, after_n = _row_nanmedian(ahead_rows)
        diffs = np.diff(base, prepend=np.nan)
        diff_rows = _trailing(diffs, self.scale_window)
        diff_center, diff_counts = _row_nanmedian(diff_rows)
        sigma = _robust_sigma(diff_rows, diff_center) / math.sqrt(2.0)
        need = max(3, (w + 1) // 2)
        enough = (before_n >= need) & (after_n >= need) & (diff_counts >= 8)
        shift = after - before
        scores = np.where(enough, _scores(shift, sigma), 0.0)
        expected = np.where(enough, seasonal + before, np.nan)
        sigma = np.where(enough, sigma, np.nan)
        kinds = np.ones(n, dtype=np.int8)

        def locate(run: npt.NDArray[np.intp]) -> int:
            # A shift raises the score of every candidate within about half a window of
            # it, nearly evenly (medians move only when half a window has crossed): the
            # change point is where a two-level fit around the run fits best.
            lo = max(0, int(grid.index[run[0]]) - w)
            hi = min(n, int(grid.index[run[-1]]) + w + 1)
            best = _change_point(base, lo, hi)
            if best is None:
                return int(run[np.argmax(scores[grid.index[run]])])
            return int(np.searchsorted(grid.index, best))

        return _report(
            self.name,
            grid,
            expected,
            sigma,
            scores,
            self.threshold,
            kinds=kinds,
            lag=w - 1,
            locate=locate,
        )

    def __repr__(self) -> str:
        return f"LevelShift(window={self.window}, threshold={self.threshold})"
