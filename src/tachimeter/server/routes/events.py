"""Event analytics: search, detail, trends, property statistics, sessions, activity."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from litestar import Request, get
from litestar.exceptions import NotFoundException
from litestar.params import Parameter, PathParameter

from tachimeter.analyze.activity import (
    FeatureUsageDay,
    SessionRecord,
    UserActivityDay,
    dashboard_metrics,
    feature_usage,
    list_sessions,
    user_activity,
)
from tachimeter.analyze.events import (
    EventPage,
    EventRecord,
    Measure,
    PropertyStats,
    Trend,
    property_stats,
    search_events,
    trend,
)
from tachimeter.analyze.intervals import Interval
from tachimeter.server.routes.params import TIME_HELP, names, property_filters, time_range
from tachimeter.server.state import server_state
from tachimeter.store.summaries import DashboardMetric

__all__ = ["EVENT_HANDLERS"]

_READ: dict[str, Any] = {"scope": "read"}

Start = Annotated[str | None, Parameter(description=f"Range start (inclusive): {TIME_HELP}.")]
End = Annotated[
    str | None, Parameter(description=f"Range end (exclusive; default now): {TIME_HELP}.")
]
Where = Annotated[
    str | None,
    Parameter(
        description='Property filters, a JSON array: [{"path": "model", "op": "eq", '
        '"value": "gpt-4o"}]. Ops: eq ne in not_in contains gt gte lt lte exists not_exists.'
    ),
]


@get(
    "/v1/events/search",
    summary="Search events",
    description="Events matching every filter, newest first by default, one page at a time "
    "(keyset pagination: pass next_cursor as cursor).",
    tags=["events"],
    opt=_READ,
    sync_to_thread=True,
)
def events_search(
    request: Request[Any, Any, Any],
    event: Annotated[str | None, Parameter(description="Comma-separated event names.")] = None,
    category: Annotated[
        str | None, Parameter(description="Comma-separated categories (usage, error, ...).")
    ] = None,
    event_type: Annotated[
        str | None, Parameter(description="Comma-separated call kinds: track, page, identify.")
    ] = None,
    start: Start = None,
    end: End = None,
    user_id: Annotated[str | None, Parameter(description="Only this user's events.")] = None,
    session_id: Annotated[str | None, Parameter(description="Only this session's events.")] = None,
    where: Where = None,
    limit: Annotated[int, Parameter(description="Page size, 1 to 1000.", ge=1, le=1000)] = 50,
    cursor: Annotated[
        str | None, Parameter(description="next_cursor of the previous page.")
    ] = None,
    order: Annotated[
        Literal["newest", "oldest"], Parameter(description="newest first (default) or oldest.")
    ] = "newest",
) -> EventPage:
    """A page of matching events."""
    state = server_state(request)
    lo = hi = None
    if start or end:
        lo, hi = time_range(start, end, default_start="1970-01-01")
    return search_events(
        state.store,
        event=names(event),
        event_type=names(event_type),
        category=names(category),
        start=lo,
        end=hi,
        user_id=user_id,
        session_id=session_id,
        where=property_filters(where),
        limit=limit,
        cursor=cursor,
        newest_first=order == "newest",
    )


@get(
    "/v1/events/{event_id:str}",
    summary="One event by id",
    tags=["events"],
    opt=_READ,
    sync_to_thread=True,
)
def event_detail(
    request: Request[Any, Any, Any],
    event_id: Annotated[str, PathParameter(description="The event's id (a UUID).", max_length=64)],
) -> EventRecord:
    """The stored event, as search returns it; 404 when absent."""
    state = server_state(request)
    rows = state.store.execute("SELECT timestamp FROM analytics_events WHERE id = ?", (event_id,))
    if not rows:
        raise NotFoundException(detail=f"no event with id {event_id!r}")
    stamp = dt.datetime.fromisoformat(str(rows[0][0]).replace("Z", "+00:00"))
    page = search_events(
        state.store, start=stamp, end=stamp + dt.timedelta(microseconds=1), limit=1000
    )
    for record in page.events:
        if record.id == event_id:
            return record
    raise NotFoundException(detail=f"no event with id {event_id!r}")


@get(
    "/v1/trends",
    summary="Trend of an event over time",
    description="One value per interval bucket: a count, distinct users or sessions, or a "
    "statistic of a numeric property; optionally broken down by a property's values.",
    tags=["events"],
    opt=_READ,
    sync_to_thread=True,
)
def events_trend(
    request: Request[Any, Any, Any],
    event: Annotated[str | None, Parameter(description="Event name (default: all events).")] = None,
    start: Start = None,
    end: End = None,
    interval: Annotated[
        Interval, Parameter(description="Bucket size: minute, hour, day, week, month.")
    ] = "hour",
    measure: Annotated[
        Measure,
        Parameter(
            description="count, unique_users, unique_sessions, or sum/avg/min/max/p50/p75/"
            "p90/p95/p99 of `property`."
        ),
    ] = "count",
    property: Annotated[
        str | None, Parameter(description="Numeric property for sum..p99 measures.")
    ] = None,
    where: Where = None,
    breakdown: Annotated[
        str | None, Parameter(description="Property whose values split the series.")
    ] = None,
    breakdown_limit: Annotated[
        int, Parameter(description="Series kept before `other`, 1 to 50.", ge=1, le=50)
    ] = 10,
) -> Trend:
    """The trend."""
    state = server_state(request)
    lo, hi = time_range(start, end)
    return trend(
        state.store,
        event,
        start=lo,
        end=hi,
        interval=interval,
        measure=measure,
        property=property,
        where=property_filters(where),
        breakdown=breakdown,
        breakdown_limit=breakdown_limit,
    )


@get(
    "/v1/properties/stats",
    summary="Statistics of a numeric property",
    tags=["events"],
    opt=_READ,
    sync_to_thread=True,
)
def events_property_stats(
    request: Request[Any, Any, Any],
    event: Annotated[str, Parameter(description="Event name.")],
    property: Annotated[str, Parameter(description="Numeric property path.")],
    start: Start = None,
    end: End = None,
    percentiles: Annotated[
        str,
        Parameter(
            description="Comma-separated percentiles, as numbers in [0, 100] or labels: "
            "50,90,99 or p50,p90,p99.9."
        ),
    ] = "50,90,99",
    where: Where = None,
) -> PropertyStats:
    """Count, sum, min, max, mean and percentiles of the property."""
    state = server_state(request)
    lo, hi = time_range(start, end)
    wanted: list[float | str] = []
    for token in names(percentiles) or []:
        try:
            wanted.append(float(token))
        except ValueError:
            wanted.append(token)  # a label (p90), or the error that names it
    return property_stats(
        state.store,
        event,
        property,
        start=lo,
        end=hi,
        percentiles=wanted,
        where=property_filters(where),
    )


@get("/v1/sessions", summary="Sessions", tags=["events"], opt=_READ, sync_to_thread=True)
def sessions(
    request: Request[Any, Any, Any],
    start: Start = None,
    end: End = None,
    user_id: Annotated[str | None, Parameter(description="Only this user's sessions.")] = None,
    limit: Annotated[
        int, Parameter(description="At most this many, 1 to 1000.", ge=1, le=1000)
    ] = 100,
) -> list[SessionRecord]:
    """Sessions that overlap the range, newest first."""
    state = server_state(request)
    lo, hi = time_range(start, end, default_start="-7d")
    return list_sessions(state.store, start=lo, end=hi, user_id=user_id, limit=limit)


@get(
    "/v1/users/activity",
    summary="Daily activity per user",
    tags=["events"],
    opt=_READ,
    sync_to_thread=True,
)
def users_activity(
    request: Request[Any, Any, Any],
    start: Start = None,
    end: End = None,
    user_id: Annotated[str | None, Parameter(description="Only this user.")] = None,
    limit: Annotated[int, Parameter(description="Rows, 1 to 10000.", ge=1, le=10_000)] = 1000,
) -> list[UserActivityDay]:
    """``user_activity`` rows in the range."""
    state = server_state(request)
    lo, hi = time_range(start, end, default_start="-7d")
    return user_activity(state.store, start=lo, end=hi, user_id=user_id, limit=limit)


@get(
    "/v1/features",
    summary="Feature usage per day",
    tags=["events"],
    opt=_READ,
    sync_to_thread=True,
)
def features(
    request: Request[Any, Any, Any],
    start: Start = None,
    end: End = None,
    feature: Annotated[str | None, Parameter(description="Only this feature.")] = None,
    limit: Annotated[int, Parameter(description="Rows, 1 to 10000.", ge=1, le=10_000)] = 1000,
) -> list[FeatureUsageDay]:
    """``feature_usage`` rows in the range."""
    state = server_state(request)
    lo, hi = time_range(start, end, default_start="-7d")
    return feature_usage(state.store, start=lo, end=hi, feature=feature, limit=limit)


@get(
    "/v1/dashboard",
    summary="Dashboard figures: today so far vs the same stretch of yesterday",
    tags=["events"],
    opt=_READ,
    sync_to_thread=True,
)
def dashboard(
    request: Request[Any, Any, Any],
    widget: Annotated[str | None, Parameter(description="overview or llm (default: all).")] = None,
) -> list[DashboardMetric]:
    """``dashboard_metrics`` rows (refreshed by the server every minute)."""
    return dashboard_metrics(server_state(request).store, widget)


EVENT_HANDLERS: tuple[Any, ...] = (
    events_search,
    event_detail,
    events_trend,
    events_property_stats,
    sessions,
    users_activity,
    features,
    dashboard,
)
