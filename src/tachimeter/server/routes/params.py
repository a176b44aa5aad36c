"""Query-string values the API shares: times, name lists, property filters."""

from __future__ import annotations

import datetime as dt
import re
from typing import Final

import msgspec

from tachimeter.errors import QueryError
from tachimeter.model.timestamps import utc_now
from tachimeter.store.summaries import PropertyFilter

__all__ = ["TIME_HELP", "names", "parse_time", "property_filters", "time_range"]

TIME_HELP: Final = (
    "ISO-8601 time (2024-03-01T12:00:00Z), a date (2024-03-01, its UTC midnight), `now`, "
    "or relative to now: -30m, -24h, -7d, -2w"
)
_RELATIVE: Final = re.compile(r"^(?:now)?\s*-\s*(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_time(value: str, name: str, *, now: dt.datetime | None = None) -> dt.datetime:
    """A query-string time as an aware UTC datetime; ``QueryError`` naming ``name``.

    >>> parse_time("-2h", "start", now=dt.datetime(2024, 3, 1, 12, tzinfo=dt.UTC)).hour
    10
    >>> parse_time("2024-03-01", "end").isoformat()
    '2024-03-01T00:00:00+00:00'
    """
    text = value.strip()
    current = now or utc_now()
    if text.lower() == "now":
        return current
    relative = _RELATIVE.match(text.lower())
    if relative is not None:
        amount = float(relative.group(1)) * _UNIT_SECONDS[relative.group(2)]
        try:
            return current - dt.timedelta(seconds=amount)
        except OverflowError:
            raise QueryError(f"{name} = {value!r} reaches before year 1", name) from None
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T"))
    except ValueError:
        raise QueryError(f"{name} = {value!r} is not a time: use {TIME_HELP}", name) from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


def time_range(
    start: str | None, end: str | None, *, default_start: str = "-24h"
) -> tuple[dt.datetime, dt.datetime]:
    """``start`` and ``end`` (defaults: ``default_start`` and now) as UTC datetimes."""
    now = utc_now()
    lo = parse_time(start or default_start, "start", now=now)
    hi = parse_time(end, "end", now=now) if end else now
    if hi < lo:
        raise QueryError(f"end ({hi.isoformat()}) is before start ({lo.isoformat()})", "end")
    return lo, hi


def names(value: str | None) -> list[str] | None:
    """A comma-separated list, or None when empty."""
    if value is None:
        return None
    out = [v.strip() for v in value.split(",") if v.strip()]
    return out or None


def property_filters(value: str | None) -> list[PropertyFilter] | None:
    """``where``: a JSON array of ``{"path", "op", "value"}`` objects.

    >>> property_filters('[{"path": "model", "op": "eq", "value": "gpt-4o"}]')[0].path
    'model'
    """
    if not value:
        return None
    try:
        return msgspec.json.decode(value, type=list[PropertyFilter])
    except (msgspec.DecodeError, ValueError) as exc:
        raise QueryError(
            f"where = {value[:80]!r} is not a JSON array of property filters "
            f'([{{"path": "model", "op": "eq", "value": "gpt-4o"}}]): {exc}',
            "where",
        ) from None
