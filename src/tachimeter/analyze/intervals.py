"""Time ranges and UTC buckets (minute, hour, day, ISO week, month) for analytics.

Ranges are half-open, ``start <= t < end``. Naive datetimes are taken as UTC (as
everywhere in Tachimeter) and a ``date`` means its midnight UTC. A bucket is named by
its start; weeks start on Monday (ISO 8601). Bucket keys are text prefixes of the stored
fixed-width timestamps, so SQL groups by the same key Python computes.
"""

from __future__ import annotations

import datetime as dt
from typing import Final, Literal, TypeAlias, get_args

from tachimeter.errors import QueryError
from tachimeter.model.timestamps import format_timestamp

__all__ = [
    "MAX_BUCKETS",
    "Interval",
    "TimeLike",
    "advance",
    "bucket_key",
    "bucket_sql",
    "bucket_starts",
    "check_interval",
    "date_bucket_sql",
    "is_midnight",
    "resolve_range",
    "to_utc",
    "truncate",
]

Interval: TypeAlias = Literal["minute", "hour", "day", "week", "month"]
"""Bucket width of a trend or a retention period."""

TimeLike: TypeAlias = dt.datetime | dt.date
"""A point in time: an aware datetime, a naive one (UTC) or a date (its UTC midnight)."""

INTERVALS: Final[tuple[str, ...]] = get_args(Interval)

# A trend's series hold one value per bucket: 10 000 buckets is a week by minute or a
# year by hour; past that a chart has more points than pixels and the query is a mistake.
MAX_BUCKETS: Final = 10_000


def to_utc(value: TimeLike, name: str) -> dt.datetime:
    """``value`` as an aware UTC datetime; ``QueryError`` names the parameter otherwise.

    >>> to_utc(dt.date(2024, 3, 1), "start").isoformat()
    '2024-03-01T00:00:00+00:00'
    """
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    raise QueryError(
        f"{name} must be a datetime or a date, got {value!r} ({type(value).__name__}); "
        "pass e.g. datetime(2024, 3, 1, tzinfo=UTC)"
    )


def resolve_range(start: TimeLike, end: TimeLike) -> tuple[dt.datetime, dt.datetime]:
    """``(start, end)`` in UTC; ``end`` before ``start`` is an error, equal is an empty range."""
    lo, hi = to_utc(start, "start"), to_utc(end, "end")
    if hi < lo:
        raise QueryError(
            f"end ({format_timestamp(hi)}) is before start ({format_timestamp(lo)}); "
            "swap them (ranges are start <= t < end)"
        )
    return lo, hi


def check_interval(interval: str) -> Interval:
    """``interval`` if known, else ``QueryError`` listing the choices."""
    if interval not in INTERVALS:
        raise QueryError(f"interval must be one of {', '.join(INTERVALS)}; got {interval!r}")
    return interval  # type: ignore[return-value]


def truncate(value: dt.datetime, interval: Interval) -> dt.datetime:
    """Start of the bucket holding ``value`` (aware UTC).

    >>> truncate(dt.datetime(2024, 3, 3, 15, 30, tzinfo=dt.UTC), "week").isoformat()
    '2024-02-26T00:00:00+00:00'
    """
    if interval == "minute":
        return value.replace(second=0, microsecond=0)
    if interval == "hour":
        return value.replace(minute=0, second=0, microsecond=0)
    day = value.replace(hour=0, minute=0, second=0, microsecond=0)
    if interval == "day":
        return day
    if interval == "week":
        return day - dt.timedelta(days=day.weekday())
    return day.replace(day=1)


def advance(value: dt.datetime, interval: Interval, count: int = 1) -> dt.datetime:
    """Start of the bucket ``count`` buckets after the one starting at ``value``."""
    if interval == "minute":
        return value + dt.timedelta(minutes=count)
    if interval == "hour":
        return value + dt.timedelta(hours=count)
    if interval == "day":
        return value + dt.timedelta(days=count)
    if interval == "week":
        return value + dt.timedelta(weeks=count)
    months = value.year * 12 + value.month - 1 + count
    return value.replace(year=months // 12, month=months % 12 + 1, day=1)


def is_midnight(value: dt.datetime) -> bool:
    """True when ``value`` is exactly midnight UTC."""
    return value == truncate(value, "day")


def bucket_starts(start: dt.datetime, end: dt.datetime, interval: Interval) -> list[dt.datetime]:
    """Starts of the buckets that overlap ``[start, end)`` (none for an empty range).

    >>> [b.day for b in bucket_starts(dt.datetime(2024, 3, 1, 12, tzinfo=dt.UTC),
    ...                               dt.datetime(2024, 3, 3, tzinfo=dt.UTC), "day")]
    [1, 2]
    """
    out: list[dt.datetime] = []
    if end <= start:
        return out
    current = truncate(start, interval)
    while current < end:
        out.append(current)
        if len(out) > MAX_BUCKETS:
            raise QueryError(
                f"{interval} buckets from {format_timestamp(start)} to "
                f"{format_timestamp(end)} are more than {MAX_BUCKETS}; choose a wider "
                "interval or a shorter range"
            )
        current = advance(current, interval)
    return out


def bucket_key(value: dt.datetime, interval: Interval) -> str:
    """The text key :func:`bucket_sql` gives rows of the bucket starting at ``value``."""
    if interval == "minute":
        return value.strftime("%Y-%m-%dT%H:%M")
    if interval == "hour":
        return value.strftime("%Y-%m-%dT%H")
    if interval == "month":
        return value.strftime("%Y-%m")
    return truncate(value, interval).strftime("%Y-%m-%d")


def bucket_sql(interval: Interval, column: str = "timestamp") -> str:
    """SQL giving the bucket key of a stored timestamp column (fixed-width UTC text)."""
    if interval == "minute":
        return f"substr({column}, 1, 16)"
    if interval == "hour":
        return f"substr({column}, 1, 13)"
    if interval == "day":
        return f"substr({column}, 1, 10)"
    if interval == "week":
        # Back six days, then forward to the next Monday: the Monday on or before the day.
        return f"date(substr({column}, 1, 10), '-6 days', 'weekday 1')"
    return f"substr({column}, 1, 7)"


def date_bucket_sql(interval: Interval, column: str = "date") -> str:
    """SQL giving the bucket key of a ``YYYY-MM-DD`` date column (day, week or month)."""
    if interval == "week":
        return f"date({column}, '-6 days', 'weekday 1')"
    if interval == "month":
        return f"substr({column}, 1, 7)"
    return column
