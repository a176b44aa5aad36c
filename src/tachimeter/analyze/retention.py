"""Retention cohorts: of the users who first did X in a period, how many came back later.

A user's cohort is the UTC day, ISO week (Monday) or month of their first-ever
``start_event`` among the stored events. Cohort ``i`` is the ``i``-th period from
``start``; column ``k`` counts its users who did ``return_event`` (default: the start
event again) in period ``i + k``, and column 0 is the cohort's size. Only periods inside
the ``periods``-long window are shown, so later cohorts have fewer columns (the usual
triangle). Events without a user are not part of cohorts.

By default cohorts come from ``analytics_first_events`` (each user's first day of each
event) and returns from ``analytics_daily_events`` (one row per event, day and user);
``use_summaries=False`` reads the raw events instead, with the same result.

>>> import sqlite3
>>> from tachimeter.store.migrations import all_migrations
>>> conn = sqlite3.connect(":memory:")
>>> for m in all_migrations(): _ = conn.executescript(m.up)
>>> m = retention_cohorts(conn, "session_started", start=dt.date(2024, 3, 4), periods=3)
>>> [(c.size, c.counts) for c in m.cohorts]
[(0, [0, 0, 0]), (0, [0, 0]), (0, [0])]
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Final, Literal

import msgspec

from tachimeter.analyze.connection import ReadSource, read_connection
from tachimeter.analyze.intervals import TimeLike, advance, to_utc, truncate
from tachimeter.errors import QueryError
from tachimeter.model.timestamps import format_timestamp

__all__ = ["RetentionCohort", "RetentionMatrix", "RetentionPeriod", "retention_cohorts"]

RetentionPeriod = Literal["day", "week", "month"]
"""Length of a cohort period."""

# A matrix of 400 x 400 cells is already more than a screen can show.
MAX_PERIODS: Final = 400


class RetentionCohort(msgspec.Struct, frozen=True, kw_only=True):
    """One row of the matrix: users who started in the period beginning at ``start``.

    ``counts[k]`` users came back ``k`` periods later (``counts[0]`` is ``size``);
    ``percentages[k]`` is that share of ``size`` in percent (None for an empty cohort).
    """

    start: dt.datetime
    size: int
    counts: list[int]
    percentages: list[float | None]


class RetentionMatrix(msgspec.Struct, frozen=True, kw_only=True):
    """Retention cohorts over ``periods`` consecutive periods from ``start``."""

    start_event: str
    return_event: str
    period: str
    periods: int
    start: dt.datetime
    cohorts: list[RetentionCohort]
    source: Literal["summary", "raw"]


def _index(day: dt.date, origin: dt.date, period: RetentionPeriod) -> int:
    """Which period after ``origin`` (a period start) holds ``day``."""
    if period == "day":
        return (day - origin).days
    if period == "week":
        return (day - origin).days // 7
    return (day.year - origin.year) * 12 + day.month - origin.month


def retention_cohorts(
    source: ReadSource,
    start_event: str,
    *,
    start: TimeLike,
    return_event: str | None = None,
    period: RetentionPeriod = "week",
    periods: int = 8,
    use_summaries: bool = True,
) -> RetentionMatrix:
    """The retention matrix of ``periods`` cohorts, starting with the period of ``start``."""
    for name, value in (("start_event", start_event), ("return_event", return_event)):
        if value is not None and (not isinstance(value, str) or not value):
            raise QueryError(f"{name} must be an event name, got {value!r}")
    if period not in ("day", "week", "month"):
        raise QueryError(f"period must be 'day', 'week' or 'month', got {period!r}")
    if not isinstance(periods, int) or isinstance(periods, bool) or not 1 <= periods <= MAX_PERIODS:
        raise QueryError(f"periods must be an integer in [1, {MAX_PERIODS}], got {periods!r}")
    returning = return_event or start_event
    origin = truncate(to_utc(start, "start"), period)
    window_end = advance(origin, period, periods)
    lo_date, hi_date = origin.date().isoformat(), window_end.date().isoformat()
    second = advance(origin, period).date().isoformat()
    with read_connection(source) as conn:
        if use_summaries:
            firsts = conn.execute(
                "SELECT user_id, first_date FROM analytics_first_events "
                "WHERE event_name = ? AND first_date >= ? AND first_date < ?",
                (start_event, lo_date, hi_date),
            ).fetchall()
            returns = conn.execute(
                "SELECT DISTINCT user_id, date FROM analytics_daily_events "
                "WHERE event_name = ? AND user_id <> '' AND date >= ? AND date < ?",
                (returning, second, hi_date),
            ).fetchall()
        else:
            firsts = conn.execute(
                "SELECT user_id, substr(min(timestamp), 1, 10) FROM analytics_events "
                "WHERE event_name = ? AND user_id IS NOT NULL AND timestamp < ? GROUP BY user_id",
                (start_event, format_timestamp(window_end)),
            ).fetchall()
            returns = conn.execute(
                "SELECT DISTINCT user_id, substr(timestamp, 1, 10) FROM analytics_events "
                "WHERE event_name = ? AND user_id IS NOT NULL AND timestamp >= ? "
                "AND timestamp < ?",
                (
                    returning,
                    format_timestamp(advance(origin, period)),
                    format_timestamp(window_end),
                ),
            ).fetchall()
    origin_day = origin.date()
    index_of: dict[str, int] = {}  # a few hundred distinct days: parse each once

    def index(day: str) -> int:
        found = index_of.get(day)
        if found is None:
            found = index_of[day] = _index(dt.date.fromisoformat(day), origin_day, period)
        return found

    cohort_of: dict[str, int] = {}
    for user_id, first in firsts:
        if first >= lo_date:
            cohort_of[user_id] = index(first)
    came_back: dict[tuple[int, int], set[str]] = defaultdict(set)
    for user_id, day in returns:
        cohort = cohort_of.get(user_id)
        if cohort is None:
            continue
        offset = index(day) - cohort
        if offset >= 1:
            came_back[(cohort, offset)].add(user_id)
    sizes = [0] * periods
    for cohort in cohort_of.values():
        sizes[cohort] += 1
    cohorts: list[RetentionCohort] = []
    for i in range(periods):
        counts = [sizes[i]] + [len(came_back.get((i, k), ())) for k in range(1, periods - i)]
        cohorts.append(
            RetentionCohort(
                start=advance(origin, period, i),
                size=sizes[i],
                counts=counts,
                percentages=[c / sizes[i] * 100 if sizes[i] else None for c in counts],
            )
        )
    return RetentionMatrix(
        start_event=start_event,
        return_event=returning,
        period=period,
        periods=periods,
        start=origin,
        cohorts=cohorts,
        source="summary" if use_summaries else "raw",
    )
