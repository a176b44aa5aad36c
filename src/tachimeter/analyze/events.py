"""Event analytics: search with keyset pagination, counts, trends, property statistics.

Raw-event queries are time-bounded and go through ``analytics_events`` indexes
(``(event_name, timestamp)``, ``(timestamp, event_name)``, ``(user_id, timestamp)``,
``session_id``); day, week and month trends of counts and unique users read the summary
tables instead (``analytics_daily_counts``, ``analytics_daily_events``, ``user_activity``)
when the question allows it.

>>> import sqlite3
>>> from tachimeter.store.migrations import all_migrations
>>> conn = sqlite3.connect(":memory:")
>>> for m in all_migrations(): _ = conn.executescript(m.up)
>>> t = trend(conn, "feature_used", start=dt.date(2024, 3, 1), end=dt.date(2024, 3, 3))
>>> [s.values for s in t.series]
[[0.0, 0.0]]
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, Final, Literal, NamedTuple, TypeAlias, get_args

import msgspec

from tachimeter.analyze.connection import ReadSource, read_connection
from tachimeter.analyze.filters import filters_sql, property_filters
from tachimeter.analyze.intervals import (
    Interval,
    TimeLike,
    bucket_key,
    bucket_sql,
    bucket_starts,
    check_interval,
    date_bucket_sql,
    is_midnight,
    resolve_range,
    to_utc,
)
from tachimeter.analyze.quantiles import parse_percentile, percentile_label, quantile
from tachimeter.analyze.scan import keyed_numeric_values, numeric_values
from tachimeter.errors import QueryError
from tachimeter.model.event_types import EventCategory
from tachimeter.model.timestamps import format_timestamp, parse_timestamp
from tachimeter.store.summaries import PropertyFilter, json_path, parse_property_path

__all__ = [
    "EventPage",
    "EventRecord",
    "Measure",
    "PropertyStats",
    "Trend",
    "TrendSeries",
    "count_events",
    "property_stats",
    "search_events",
    "trend",
]

_json_decode = msgspec.json.Decoder().decode
_json_encode = msgspec.json.Encoder(order="sorted").encode

_CALL_KINDS: Final = ("track", "page", "identify")
_CATEGORIES: Final = tuple(c.value for c in EventCategory)
_COLUMNS: Final = (
    "id, event_type, event_name, timestamp, session_id, user_id, properties, context, "
    "page_url, referrer, category, priority, mission_id, received_at"
)
# One page is rendered at once by a UI or returned by the HTTP API in one response.
MAX_PAGE_SIZE: Final = 1000


# -- search ---------------------------------------------------------------------------------


class EventRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One stored event as search returns it: columns decoded, JSON parsed.

    ``event_type`` is the call kind (``track``, ``page``, ``identify``), as in spec 355.
    """

    id: str
    event_type: str
    event_name: str
    timestamp: dt.datetime
    session_id: str | None
    user_id: str | None
    properties: Any
    context: dict[str, Any]
    page_url: str | None
    referrer: str | None
    category: str | None
    priority: str | None
    mission_id: str | None
    received_at: dt.datetime | None


class EventPage(msgspec.Struct, frozen=True, kw_only=True):
    """A page of search results; pass ``next_cursor`` back for the next page (None: last)."""

    events: list[EventRecord]
    next_cursor: str | None


def _names(value: str | Sequence[str] | None, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    values = (value,) if isinstance(value, str) else tuple(value)
    if not values or not all(isinstance(v, str) and v for v in values):
        raise QueryError(f"{name} must be a non-empty name or list of names, got {value!r}")
    return tuple(sorted(set(values)))


def _choices(
    value: str | EventCategory | Sequence[str | EventCategory] | None,
    name: str,
    allowed: tuple[str, ...],
) -> tuple[str, ...]:
    if value is None:
        return ()
    values = (value,) if isinstance(value, str | EventCategory) else tuple(value)
    out = sorted({v.value if isinstance(v, EventCategory) else v for v in values})
    for v in out:
        if v not in allowed:
            raise QueryError(f"{name} must be among {', '.join(allowed)}; got {v!r}")
    if not out:
        raise QueryError(f"{name} must not be an empty list; pass None for all")
    return tuple(out)


def _in(column: str, values: tuple[str, ...]) -> tuple[str, list[Any]]:
    if len(values) == 1:
        return f"{column} = ?", [values[0]]
    return f"{column} IN ({', '.join('?' * len(values))})", list(values)


def _encode_cursor(timestamp: str, event_id: str, fingerprint: str) -> str:
    raw = _json_encode([timestamp, event_id, fingerprint])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, fingerprint: str) -> tuple[str, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        timestamp, event_id, found = _json_decode(raw)
        if not (isinstance(timestamp, str) and isinstance(event_id, str)):
            raise ValueError(cursor)
    except (ValueError, TypeError, binascii.Error, msgspec.DecodeError):
        raise QueryError(
            f"cursor {cursor[:40]!r} is not a cursor from search_events; pass the "
            "next_cursor of the previous page, or None for the first page",
            "cursor",
        ) from None
    if found != fingerprint:
        raise QueryError(
            "cursor belongs to a search with other filters; pass the same filters as the "
            "page it came from, or start again with cursor=None",
            "cursor",
        )
    return timestamp, event_id


def _json_or_text(text: str | None) -> Any:
    """Decoded JSON; text that is not JSON (a row written by another tool) as it is."""
    if text is None:
        return None
    try:
        return _json_decode(text)
    except msgspec.DecodeError:
        return text


def _record(row: Sequence[Any]) -> EventRecord:
    context = _json_or_text(row[7])
    return EventRecord(
        id=row[0],
        event_type=row[1],
        event_name=row[2],
        timestamp=parse_timestamp(row[3]),
        session_id=row[4],
        user_id=row[5],
        properties=_json_or_text(row[6]),
        context=context if isinstance(context, dict) else {},
        page_url=row[8],
        referrer=row[9],
        category=row[10],
        priority=row[11],
        mission_id=row[12],
        received_at=parse_timestamp(row[13]) if row[13] else None,
    )


class _EventFilter(NamedTuple):
    """The filters of :func:`search_events` and :func:`count_events` but the time range,
    checked, as SQL conditions on ``analytics_events`` (to AND together)."""

    names: tuple[str, ...]
    calls: tuple[str, ...]
    categories: tuple[str, ...]
    filters: tuple[PropertyFilter, ...]
    clauses: list[str]
    params: list[Any]


def _event_filter(
    event: str | Sequence[str] | None,
    event_type: str | Sequence[str] | None,
    category: str | EventCategory | Sequence[str | EventCategory] | None,
    user_id: str | None,
    session_id: str | None,
    where: Sequence[PropertyFilter] | PropertyFilter | None,
) -> _EventFilter:
    names = _names(event, "event")
    calls = _choices(event_type, "event_type", _CALL_KINDS)
    categories = _choices(category, "category", _CATEGORIES)
    filters = property_filters(where)
    clauses: list[str] = []
    params: list[Any] = []
    for column, values in (("event_name", names), ("event_type", calls), ("category", categories)):
        if values:
            sql, p = _in(column, values)
            clauses.append(sql)
            params += p
    for column, value in (("user_id", user_id), ("session_id", session_id)):
        if value is not None:
            if not isinstance(value, str):
                raise QueryError(f"{column} must be text, got {value!r}")
            clauses.append(f"{column} = ?")
            params.append(value)
    sql_filters, filter_params = filters_sql(filters)
    return _EventFilter(
        names, calls, categories, filters, clauses + sql_filters, params + filter_params
    )


def _bounds(start: TimeLike | None, end: TimeLike | None) -> tuple[str | None, str | None]:
    """``start`` and ``end`` as stored timestamp text (None: unbounded)."""
    lo = format_timestamp(to_utc(start, "start")) if start is not None else None
    hi = format_timestamp(to_utc(end, "end")) if end is not None else None
    return lo, hi


def search_events(
    source: ReadSource,
    *,
    event: str | Sequence[str] | None = None,
    event_type: str | Sequence[str] | None = None,
    category: str | EventCategory | Sequence[str | EventCategory] | None = None,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    user_id: str | None = None,
    session_id: str | None = None,
    where: Sequence[PropertyFilter] | PropertyFilter | None = None,
    limit: int = 50,
    cursor: str | None = None,
    newest_first: bool = True,
) -> EventPage:
    """Events matching every given filter, newest first, one page at a time.

    Pages are cut by keyset on (timestamp, id), so page 100 costs what page 1 costs and
    events written meanwhile never shift or repeat a page. ``event_type`` is the call
    kind (``track``, ``page``, ``identify``).

    >>> import sqlite3
    >>> from tachimeter.store.migrations import all_migrations
    >>> conn = sqlite3.connect(":memory:")
    >>> for m in all_migrations(): _ = conn.executescript(m.up)
    >>> page = search_events(conn, event="feature_used",
    ...                      where=[PropertyFilter("feature", "eq", "search")])
    >>> page.events, page.next_cursor
    ([], None)
    """
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE_SIZE:
        raise QueryError(f"limit must be an integer in [1, {MAX_PAGE_SIZE}], got {limit!r}")
    chosen = _event_filter(event, event_type, category, user_id, session_id, where)
    clauses = list(chosen.clauses)
    params = list(chosen.params)
    lo, hi = _bounds(start, end)
    fingerprint = hashlib.sha256(
        _json_encode(
            [
                chosen.names,
                chosen.calls,
                chosen.categories,
                lo,
                hi,
                user_id,
                session_id,
                chosen.filters,
                newest_first,
            ]
        )
    ).hexdigest()[:16]
    if cursor is not None:
        after_ts, after_id = _decode_cursor(cursor, fingerprint)
        # The cursor's timestamp replaces the range's bound on the side it moves towards:
        # one bound per side lets the index range start right at the cursor instead of
        # skipping every row of the pages before it.
        if newest_first:
            clauses.append("timestamp <= ? AND (timestamp < ? OR id < ?)")
            hi = None if hi is None or after_ts < hi else hi
        else:
            clauses.append("timestamp >= ? AND (timestamp > ? OR id > ?)")
            lo = None if lo is None or after_ts >= lo else lo
        params += [after_ts, after_ts, after_id]
    if lo is not None:
        clauses.append("timestamp >= ?")
        params.append(lo)
    if hi is not None:
        clauses.append("timestamp < ?")
        params.append(hi)
    direction = "DESC" if newest_first else "ASC"
    sql = (
        f"SELECT {_COLUMNS} FROM analytics_events"
        + (" WHERE " + " AND ".join(clauses) if clauses else "")
        + f" ORDER BY timestamp {direction}, id {direction} LIMIT ?"
    )
    with read_connection(source) as conn:
        rows = conn.execute(sql, [*params, limit + 1]).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = _encode_cursor(rows[-1][3], rows[-1][0], fingerprint) if more else None
    return EventPage(events=[_record(r) for r in rows], next_cursor=next_cursor)


def count_events(
    source: ReadSource,
    *,
    event: str | Sequence[str] | None = None,
    event_type: str | Sequence[str] | None = None,
    category: str | EventCategory | Sequence[str | EventCategory] | None = None,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    user_id: str | None = None,
    session_id: str | None = None,
    where: Sequence[PropertyFilter] | PropertyFilter | None = None,
) -> int:
    """How many events :func:`search_events` would return with the same filters, by one
    ``SELECT count(*)`` through the same indexes (no page is read).

    >>> import sqlite3
    >>> from tachimeter.store.migrations import all_migrations
    >>> conn = sqlite3.connect(":memory:")
    >>> for m in all_migrations(): _ = conn.executescript(m.up)
    >>> count_events(conn, event="feature_used", start=dt.date(2024, 3, 1),
    ...              where=[PropertyFilter("feature", "eq", "search")])
    0
    """
    chosen = _event_filter(event, event_type, category, user_id, session_id, where)
    clauses = list(chosen.clauses)
    params = list(chosen.params)
    lo, hi = _bounds(start, end)
    if lo is not None:
        clauses.append("timestamp >= ?")
        params.append(lo)
    if hi is not None:
        clauses.append("timestamp < ?")
        params.append(hi)
    sql = "SELECT count(*) FROM analytics_events" + (
        " WHERE " + " AND ".join(clauses) if clauses else ""
    )
    with read_connection(source) as conn:
        return int(conn.execute(sql, params).fetchone()[0])


# -- trends ---------------------------------------------------------------------------------

Measure: TypeAlias = Literal[
    "count",
    "unique_users",
    "unique_sessions",
    "sum",
    "avg",
    "min",
    "max",
    "p50",
    "p75",
    "p90",
    "p95",
    "p99",
]
"""What a trend measures per bucket: events, distinct users or sessions, or a statistic of
a numeric property (``sum`` .. ``p99``)."""

MEASURES: Final[tuple[str, ...]] = get_args(Measure)
_NUMERIC_MEASURES: Final = frozenset(MEASURES) - {"count", "unique_users", "unique_sessions"}
# Breakdowns beyond this many series are unreadable as a chart; the rest go to "other".
MAX_BREAKDOWN: Final = 50


class TrendSeries(msgspec.Struct, frozen=True, kw_only=True):
    """One line of a trend: the breakdown value it stands for and one value per bucket.

    ``breakdown`` is the property's value as text (None: the property is absent or null,
    or there is no breakdown); ``other`` marks the series that gathers every value beyond
    the top N. ``values`` are 0 for empty buckets of counts and sums, None for averages
    and percentiles. ``total`` is the measure over the whole range (distinct users over
    the range, not a sum of buckets).
    """

    breakdown: str | None
    other: bool
    values: list[float | None]
    total: float | None


class Trend(msgspec.Struct, frozen=True, kw_only=True):
    """A measure of events per UTC bucket, optionally split by a property.

    ``source`` says what answered: ``"summary"`` (the daily rollups) or ``"raw"`` (indexed
    raw events).
    """

    event: str | None
    measure: str
    property: str | None
    interval: str
    start: dt.datetime
    end: dt.datetime
    buckets: list[dt.datetime]
    series: list[TrendSeries]
    source: Literal["summary", "raw"]


class _Acc:
    """Per (bucket, key) accumulator for one measure."""

    __slots__ = ("count", "maximum", "minimum", "total", "users", "values")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.minimum: float | None = None
        self.maximum: float | None = None
        self.users: set[str] = set()
        self.values: list[float] = []

    def merge(self, other: _Acc) -> None:
        self.count += other.count
        self.total += other.total
        if other.minimum is not None:
            self.minimum = (
                other.minimum if self.minimum is None else min(self.minimum, other.minimum)
            )
        if other.maximum is not None:
            self.maximum = (
                other.maximum if self.maximum is None else max(self.maximum, other.maximum)
            )
        self.users |= other.users
        self.values += other.values

    def value(self, measure: str) -> float | None:
        if measure == "count":
            return float(self.count)
        if measure in ("unique_users", "unique_sessions"):
            return float(len(self.users))
        if measure == "sum":
            return self.total
        if measure == "avg":
            return self.total / self.count if self.count else None
        if measure == "min":
            return self.minimum
        if measure == "max":
            return self.maximum
        self.values.sort()
        return quantile(self.values, parse_percentile(measure, "measure"))


def _label(kind: str | None, value: Any) -> str | None:
    """A breakdown value as text: JSON true/false as 'true'/'false', numbers as Python
    prints them, objects and arrays as their JSON; null and absent as None."""
    if kind is None or kind == "null":
        return None
    if kind in ("true", "false"):
        return kind
    return value if isinstance(value, str) else str(value)


def trend(
    source: ReadSource,
    event: str | None = None,
    *,
    start: TimeLike,
    end: TimeLike,
    interval: Interval = "day",
    measure: Measure = "count",
    property: str | None = None,
    where: Sequence[PropertyFilter] | PropertyFilter | None = None,
    breakdown: str | None = None,
    breakdown_limit: int = 10,
    use_summaries: bool = True,
) -> Trend:
    """A measure of one event (None: all events) per UTC bucket over ``[start, end)``.

    Every bucket overlapping the range is present (zero-filled); weeks start on Monday.
    ``property`` is the numeric property that ``sum``, ``avg``, ``min``, ``max`` and the
    percentiles (linear interpolation) read; events where it is not a number are left
    out of those. ``breakdown`` splits by a property's value: the ``breakdown_limit``
    values with the most events get a series each, the rest one ``other`` series.
    Counts and unique users by day, week or month over whole days are read from the
    daily summaries unless ``use_summaries`` is False.

    >>> import sqlite3
    >>> from tachimeter.store.migrations import all_migrations
    >>> conn = sqlite3.connect(":memory:")
    >>> for m in all_migrations(): _ = conn.executescript(m.up)
    >>> t = trend(conn, "tool_invoked", start=dt.datetime(2024, 3, 1, tzinfo=dt.UTC),
    ...           end=dt.datetime(2024, 3, 1, 3, tzinfo=dt.UTC), interval="hour",
    ...           measure="p90", property="duration_ms")
    >>> len(t.buckets), t.series[0].values
    (3, [None, None, None])
    """
    lo, hi = resolve_range(start, end)
    interval = check_interval(interval)
    if measure not in MEASURES:
        raise QueryError(f"measure must be one of {', '.join(MEASURES)}; got {measure!r}")
    if measure in _NUMERIC_MEASURES:
        if property is None:
            raise QueryError(
                f"measure {measure!r} needs property=, the numeric property it reads "
                "(for example property='duration_ms')"
            )
        parse_property_path(property)
    elif property is not None:
        raise QueryError(
            f"property= is only read by sum, avg, min, max and percentiles, not by "
            f"{measure!r}; drop it, or use breakdown= to split by a property"
        )
    if event is not None and (not isinstance(event, str) or not event):
        raise QueryError(f"event must be an event name or None for all events, got {event!r}")
    if breakdown is not None:
        parse_property_path(breakdown)
    if not isinstance(breakdown_limit, int) or not 1 <= breakdown_limit <= MAX_BREAKDOWN:
        raise QueryError(
            f"breakdown_limit must be an integer in [1, {MAX_BREAKDOWN}], got {breakdown_limit!r}"
        )
    filters = property_filters(where)
    buckets = bucket_starts(lo, hi, interval)
    summary = (
        use_summaries
        and measure in ("count", "unique_users")
        and interval in ("day", "week", "month")
        and not filters
        and breakdown is None
        and is_midnight(lo)
        and is_midnight(hi)
    )
    with read_connection(source) as conn:
        if summary:
            cells, totals = _summary_cells(conn, event, measure, interval, lo, hi)
            series = [
                TrendSeries(
                    breakdown=None,
                    other=False,
                    values=[cells.get(bucket_key(b, interval), 0.0) for b in buckets],
                    total=totals,
                )
            ]
            source_kind: Literal["summary", "raw"] = "summary"
        else:
            series = _raw_series(
                conn, event, measure, property, interval, lo, hi, filters, breakdown,
                breakdown_limit, buckets,
            )  # fmt: skip
            source_kind = "raw"
    return Trend(
        event=event,
        measure=measure,
        property=property,
        interval=interval,
        start=lo,
        end=hi,
        buckets=buckets,
        series=series,
        source=source_kind,
    )


def _summary_cells(
    conn: Any, event: str | None, measure: str, interval: Interval, lo: dt.datetime, hi: dt.datetime
) -> tuple[dict[str, float], float]:
    """Bucket values and the range total from the daily summaries."""
    days = [lo.date().isoformat(), hi.date().isoformat()]
    key = date_bucket_sql(interval)
    if measure == "count":
        # analytics_daily_counts: one row per day and event name.
        table, value, where = "analytics_daily_counts", "sum(event_count)", "date >= ? AND date < ?"
        if event is not None:
            where += " AND event_name = ?"
    elif event is None:
        # Every event with a user has its user-day in user_activity.
        table, value, where = "user_activity", "count(DISTINCT user_id)", "date >= ? AND date < ?"
    else:
        table, value = "analytics_daily_events", "count(DISTINCT nullif(user_id, ''))"
        where = "event_name = ? AND date >= ? AND date < ?"
    params = days if event is None else ([*days, event] if measure == "count" else [event, *days])
    rows = conn.execute(
        f"SELECT {key}, {value} FROM {table} WHERE {where} GROUP BY 1", params
    ).fetchall()
    total = conn.execute(f"SELECT coalesce({value}, 0) FROM {table} WHERE {where}", params)
    return {k: float(v) for k, v in rows}, float(total.fetchone()[0])


def _raw_series(
    conn: Any,
    event: str | None,
    measure: str,
    property: str | None,
    interval: Interval,
    lo: dt.datetime,
    hi: dt.datetime,
    filters: tuple[PropertyFilter, ...],
    breakdown: str | None,
    breakdown_limit: int,
    buckets: list[dt.datetime],
) -> list[TrendSeries]:
    sql_filters, filter_params = filters_sql(filters)
    if breakdown is None and property is not None:  # a numeric measure of one series
        return _scanned_series(
            conn, event, measure, property, interval, lo, hi, sql_filters, filter_params, buckets
        )
    clauses = ["timestamp >= ?", "timestamp < ?"]
    params: list[Any] = [format_timestamp(lo), format_timestamp(hi)]
    if event is not None:
        clauses.insert(0, "event_name = ?")
        params.insert(0, event)
    clauses += sql_filters
    params += filter_params
    select: list[str] = [bucket_sql(interval)]
    select_params: list[Any] = []
    if breakdown is not None:
        path = json_path(parse_property_path(breakdown))
        select += ["json_type(properties, ?)", "json_extract(properties, ?)"]
        select_params += [path, path]
    keys = len(select)
    group = ", ".join(str(i + 1) for i in range(keys))
    if measure == "count":
        sql = f"SELECT {', '.join(select)}, count(*) FROM analytics_events WHERE "
        sql += " AND ".join(clauses) + f" GROUP BY {group}"
    elif measure in ("unique_users", "unique_sessions"):
        column = "user_id" if measure == "unique_users" else "session_id"
        sql = f"SELECT DISTINCT {', '.join(select)}, {column} FROM analytics_events WHERE "
        sql += " AND ".join([*clauses, f"{column} IS NOT NULL"])
    else:
        assert property is not None
        path = json_path(parse_property_path(property))
        clauses.append("json_type(properties, ?) IN ('integer', 'real')")
        params.append(path)
        select.append("json_extract(properties, ?)")
        select_params.append(path)
        if measure in ("sum", "avg", "min", "max"):
            inner = f"SELECT {', '.join(select)} FROM analytics_events WHERE "
            inner += " AND ".join(clauses)
            cols = ", ".join(f"c{i}" for i in range(keys))
            aliased = ", ".join(f"c{i}" for i in range(keys + 1))
            # A CTE names the columns, so the aggregate reads each JSON value once.
            sql = (
                f"WITH t({aliased}) AS ({inner}) SELECT {cols}, count(*), sum(c{keys}), "
                f"min(c{keys}), max(c{keys}) FROM t GROUP BY {cols}"
            )
        else:
            sql = f"SELECT {', '.join(select)} FROM analytics_events WHERE "
            sql += " AND ".join(clauses)
    cells: dict[tuple[str, str | None], _Acc] = defaultdict(_Acc)
    for row in conn.execute(sql, [*select_params, *params]):
        bucket = row[0]
        label = _label(row[1], row[2]) if breakdown is not None else None
        acc = cells[(bucket, label)]
        rest = row[keys:]
        if measure == "count":
            acc.count += rest[0]
        elif measure in ("unique_users", "unique_sessions"):
            acc.users.add(rest[0])
        elif measure in ("sum", "avg", "min", "max"):
            count, total, minimum, maximum = rest
            acc.count += count
            acc.total += total
            acc.minimum = minimum if acc.minimum is None else min(acc.minimum, minimum)
            acc.maximum = maximum if acc.maximum is None else max(acc.maximum, maximum)
        else:
            acc.values.append(float(rest[0]))
            acc.count += 1
    return _series(cells, measure, interval, buckets, breakdown is not None, breakdown_limit)


def _scanned_series(
    conn: Any,
    event: str | None,
    measure: str,
    property: str,
    interval: Interval,
    lo: dt.datetime,
    hi: dt.datetime,
    sql_filters: list[str],
    filter_params: list[Any],
    buckets: list[dt.datetime],
) -> list[TrendSeries]:
    """A numeric measure per bucket, the values read by the sliced scan (``scan``)."""
    clauses, params = list(sql_filters), list(filter_params)
    if event is not None:
        clauses.insert(0, "event_name = ?")
        params.insert(0, event)
    pairs = keyed_numeric_values(
        conn,
        bucket_sql(interval),
        " AND ".join(clauses) or "1",
        params,
        lo,
        hi,
        parse_property_path(property),
    )
    cells: dict[tuple[str, str | None], _Acc] = defaultdict(_Acc)
    keep = measure not in ("sum", "avg", "min", "max")
    for bucket, value in pairs:
        acc = cells[(bucket, None)]
        acc.count += 1
        acc.total += value
        if acc.minimum is None or value < acc.minimum:
            acc.minimum = value
        if acc.maximum is None or value > acc.maximum:
            acc.maximum = value
        if keep:
            acc.values.append(value)
    return _series(cells, measure, interval, buckets, False, 1)


def _series(
    cells: dict[tuple[str, str | None], _Acc],
    measure: str,
    interval: Interval,
    buckets: list[dt.datetime],
    split: bool,
    limit: int,
) -> list[TrendSeries]:
    # Breakdown values are ranked by events (numeric measures: events with a number), or
    # by distinct users or sessions for the unique measures.
    labels: dict[str | None, int] = defaultdict(int)
    if measure in ("unique_users", "unique_sessions"):
        distinct: dict[str | None, set[str]] = defaultdict(set)
        for (_, label), acc in cells.items():
            distinct[label] |= acc.users
        labels.update((label, len(users)) for label, users in distinct.items())
    else:
        for (_, label), acc in cells.items():
            labels[label] += acc.count
    ranked = sorted(labels, key=lambda k: (-labels[k], k is None, k or ""))
    top = ranked[:limit] if split else [None]
    rest = set(ranked[limit:]) if split else set()
    empty = 0.0 if measure in ("count", "unique_users", "unique_sessions", "sum") else None
    out: list[TrendSeries] = []
    groups: list[tuple[str | None, bool, Iterable[str | None]]] = [
        (label, False, (label,)) for label in top
    ]
    if rest:
        groups.append((None, True, rest))
    for label, other, members in groups:
        member_set = set(members)
        per_bucket: dict[str, _Acc] = defaultdict(_Acc)
        whole = _Acc()
        for (bucket, cell_label), acc in cells.items():
            if cell_label in member_set:
                per_bucket[bucket].merge(acc)
        for acc in per_bucket.values():
            whole.merge(acc)
        values: list[float | None] = []
        for b in buckets:
            cell = per_bucket.get(bucket_key(b, interval))
            values.append(empty if cell is None else cell.value(measure))
        total = whole.value(measure) if per_bucket else empty
        out.append(TrendSeries(breakdown=label, other=other, values=values, total=total))
    return out


# -- property statistics --------------------------------------------------------------------


class PropertyStats(msgspec.Struct, frozen=True, kw_only=True):
    """Statistics of one numeric property of one event over a time range.

    ``percentiles`` maps labels (``"p50"``, ``"p99.9"``) to values (linear interpolation
    between closest ranks); everything is None when no event had a number there.
    """

    event: str
    property: str
    start: dt.datetime
    end: dt.datetime
    count: int
    sum: float | None
    avg: float | None
    min: float | None
    max: float | None
    percentiles: dict[str, float | None]


def property_stats(
    source: ReadSource,
    event: str,
    property: str,
    *,
    start: TimeLike,
    end: TimeLike,
    percentiles: Sequence[float | str] = (50, 90, 99),
    where: Sequence[PropertyFilter] | PropertyFilter | None = None,
) -> PropertyStats:
    """Count, sum, mean, extremes and percentiles of a numeric property of one event.

    >>> import sqlite3
    >>> from tachimeter.store.migrations import all_migrations
    >>> conn = sqlite3.connect(":memory:")
    >>> for m in all_migrations(): _ = conn.executescript(m.up)
    >>> s = property_stats(conn, "response_latency", "value", start=dt.date(2024, 3, 1),
    ...                    end=dt.date(2024, 3, 8))
    >>> s.count, s.percentiles
    (0, {'p50': None, 'p90': None, 'p99': None})
    """
    if not isinstance(event, str) or not event:
        raise QueryError(f"event must be an event name, got {event!r}")
    lo, hi = resolve_range(start, end)
    segments = parse_property_path(property)
    fractions = [parse_percentile(p, "percentiles") for p in percentiles]
    sql_filters, filter_params = filters_sql(property_filters(where))
    with read_connection(source) as conn:
        values = numeric_values(
            conn,
            " AND ".join(["event_name = ?", *sql_filters]),
            [event, *filter_params],
            lo,
            hi,
            segments,
        )
    total = sum(values) if values else None
    return PropertyStats(
        event=event,
        property=property,
        start=lo,
        end=hi,
        count=len(values),
        sum=total,
        avg=total / len(values) if total is not None else None,
        min=values[0] if values else None,
        max=values[-1] if values else None,
        percentiles={percentile_label(q): quantile(values, q) for q in fractions},
    )
