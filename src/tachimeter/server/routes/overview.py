"""What the dashboard's overview shows, in one call: health, rates, today vs yesterday.

Every figure comes from an index range scan over the last hour, a summary table or
``dashboard_metrics``, never a scan of the whole event table, so the call stays fast on
millions of events.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import msgspec
from litestar import Request, get
from litestar.params import Parameter

from tachimeter.analyze.activity import dashboard_metrics
from tachimeter.analyze.events import EventRecord, search_events
from tachimeter.model.timestamps import format_timestamp, utc_now
from tachimeter.server.routes.params import TIME_HELP, time_range
from tachimeter.server.state import server_state
from tachimeter.store.summaries import DashboardMetric

__all__ = ["OVERVIEW_HANDLERS"]

_READ: dict[str, Any] = {"scope": "read"}


class MinuteRate(msgspec.Struct, kw_only=True):
    """Events and errors in one UTC minute."""

    minute: str
    events: int
    errors: int


class ServerHealth(msgspec.Struct, kw_only=True):
    """The server's own state."""

    status: str
    store: str
    pending_events: int
    stream_subscribers: int
    last_write_error: str | None


class Overview(msgspec.Struct, kw_only=True):
    """The overview page's data."""

    now: str
    health: ServerHealth
    per_minute: list[MinuteRate]
    events_last_hour: int
    error_rate_last_hour: float
    active_missions: int | None
    today: list[DashboardMetric]
    recent_errors: list[EventRecord]


class EventName(msgspec.Struct, kw_only=True):
    """An event name and how many events had it in the range (whole UTC days)."""

    name: str
    count: int


@get(
    "/v1/overview",
    summary="The dashboard overview in one call",
    description="Server health, events and errors per minute over the last `minutes`, "
    "active missions, today vs yesterday (dashboard_metrics) and the latest errors.",
    tags=["dashboard"],
    opt=_READ,
    sync_to_thread=True,
)
def overview(
    request: Request[Any, Any, Any],
    minutes: Annotated[
        int, Parameter(description="Minutes of per-minute rates, 5 to 1440.", ge=5, le=1440)
    ] = 60,
) -> Overview:
    """Everything the overview page draws."""
    state = server_state(request)
    now = utc_now()
    since = format_timestamp(now - dt.timedelta(minutes=minutes))
    # timestamp is fixed-width text: its first 16 characters are the UTC minute.
    rows = state.store.execute(
        "SELECT substr(timestamp, 1, 16), count(*), coalesce(sum(category = 'error'), 0) "
        "FROM analytics_events WHERE timestamp >= ? GROUP BY 1 ORDER BY 1",
        (since,),
    )
    per_minute = [MinuteRate(minute=f"{r[0]}:00Z", events=r[1], errors=r[2]) for r in rows]
    hour = format_timestamp(now - dt.timedelta(hours=1))[:16]
    last_hour = [m for m in per_minute if m.minute[:16] >= hour]
    events = sum(m.events for m in last_hour)
    errors = sum(m.errors for m in last_hour)
    try:
        active_rows = state.store.execute(
            "SELECT count(*) FROM missions WHERE status IN ('created', 'planning', "
            "'executing', 'paused')"
        )
        active: int | None = int(active_rows[0][0])
    except Exception:  # a store without the mission tables: no figure, not an error
        active = None
    writer = state.writer
    return Overview(
        now=format_timestamp(now),
        health=ServerHealth(
            status="ok" if writer.alive and not writer.last_error else "degraded",
            store=str(state.store.path),
            pending_events=writer.pending_events,
            stream_subscribers=state.hub.subscribers,
            last_write_error=writer.last_error,
        ),
        per_minute=per_minute,
        events_last_hour=events,
        error_rate_last_hour=errors / events if events else 0.0,
        active_missions=active,
        today=dashboard_metrics(state.store),
        recent_errors=search_events(
            state.store, category="error", start=now - dt.timedelta(days=7), limit=10
        ).events,
    )


@get(
    "/v1/events/names",
    summary="Event names seen in a range, most frequent first",
    tags=["events"],
    opt=_READ,
    sync_to_thread=True,
)
def event_names(
    request: Request[Any, Any, Any],
    start: Annotated[
        str | None, Parameter(description=f"Range start (default -30d): {TIME_HELP}.")
    ] = None,
    end: Annotated[str | None, Parameter(description=f"Range end: {TIME_HELP}.")] = None,
) -> list[EventName]:
    """Names and counts from the daily rollup (whole UTC days)."""
    state = server_state(request)
    lo, hi = time_range(start, end, default_start="-30d")
    rows = state.store.execute(
        "SELECT event_name, sum(event_count) FROM analytics_daily_events "
        "WHERE date >= ? AND date <= ? GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 500",
        (lo.date().isoformat(), hi.date().isoformat()),
    )
    return [EventName(name=r[0], count=int(r[1])) for r in rows]


OVERVIEW_HANDLERS: tuple[Any, ...] = (overview, event_names)
