"""What the dashboard's overview shows, in one call: health, rates, today vs yesterday;
and the marks its charts draw: detected anomalies and alert firing intervals.

Every figure comes from an index range scan over the last hour, a summary table,
``dashboard_metrics`` or ``alert_events``, never a scan of the whole event table, so the
call stays fast on millions of events (``python -m bench dashboard``: at 1M events).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Final

import msgspec
from litestar import Request, get
from litestar.params import Parameter

from tachimeter.analyze.activity import dashboard_metrics
from tachimeter.analyze.anomalies import RobustZScore
from tachimeter.analyze.events import EventRecord, search_events
from tachimeter.analyze.intervals import truncate
from tachimeter.model.timestamps import format_timestamp, parse_timestamp, utc_now
from tachimeter.model.validation import EARLIEST_TIMESTAMP
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


class ChartAnomaly(msgspec.Struct, kw_only=True):
    """An anomaly a detector found in one of the overview's series (Unix seconds)."""

    series: str
    kind: str
    timestamp: float
    start: float
    end: float
    value: float
    expected: float
    score: float


class AlertInterval(msgspec.Struct, kw_only=True):
    """One alert's firing interval: from its firing change to its resolution (``end``
    None: still firing). Times in Unix seconds."""

    rule: str
    fingerprint: str
    labels: dict[str, str]
    severity: str | None
    start: float
    end: float | None
    value: float | None
    message: str | None


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
    anomalies: list[ChartAnomaly]
    alerts: list[AlertInterval]


class EventName(msgspec.Struct, kw_only=True):
    """An event name and how many events had it in the range (whole UTC days)."""

    name: str
    count: int


@get(
    "/v1/overview",
    summary="The dashboard overview in one call",
    description="Server health, events and errors per minute over the last `minutes`, "
    "active missions, today vs yesterday (dashboard_metrics), the latest errors, the "
    "anomalies a robust z-score finds in the per-minute series and the alert firing "
    "intervals overlapping those minutes.",
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
    # The detector's trailing window needs minutes before the first one shown.
    since = format_timestamp(now - dt.timedelta(minutes=minutes + _DETECTOR.window))
    # timestamp is fixed-width text: its first 16 characters are the UTC minute.
    rows = state.store.execute(
        "SELECT substr(timestamp, 1, 16), count(*), coalesce(sum(category = 'error'), 0) "
        "FROM analytics_events WHERE timestamp >= ? GROUP BY 1 ORDER BY 1",
        (since,),
    )
    shown = format_timestamp(now - dt.timedelta(minutes=minutes))[:16]
    per_minute = [
        MinuteRate(minute=f"{r[0]}:00Z", events=r[1], errors=r[2]) for r in rows if r[0] >= shown
    ]
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
        anomalies=_minute_anomalies(rows, now, minutes),
        alerts=alert_intervals(state.store, now - dt.timedelta(minutes=minutes), now),
    )


# Per-minute counts: 30 trailing minutes give the median and spread (at least 10 of
# them), and a point 5 robust standard deviations away is anomalous (the detector's
# default). The detector (and numpy) is imported with the routes, at server start: on the
# first overview call numpy's import would add about 0.1 s.
_DETECTOR: Final = RobustZScore(window=30, min_points=10)
# Firing intervals that began up to this long before a range are found (an alert firing
# for longer shows from the range's start only if its firing change is this recent).
_ALERT_LOOKBACK: Final = dt.timedelta(days=30)
_DAY: Final = dt.timedelta(days=1)
# An end this close to the clock is "now" (the default end, read a moment before).
_NOW_TOLERANCE: Final = dt.timedelta(seconds=1)


def _minute_anomalies(rows: list[Any], now: dt.datetime, minutes: int) -> list[ChartAnomaly]:
    """Anomalies of events and errors per minute over the last ``minutes`` (complete
    minutes only: the current one, still filling, would look like a dip)."""
    end = (int(now.timestamp()) // 60 - 1) * 60
    first = end - (minutes + _DETECTOR.window - 1) * 60
    stamps = [float(t) for t in range(first, end + 1, 60)]
    by_minute = {
        int(dt.datetime.fromisoformat(f"{r[0]}:00+00:00").timestamp()): (r[1], r[2]) for r in rows
    }
    shown = end - (minutes - 1) * 60
    out: list[ChartAnomaly] = []
    for series, column in (("events", 0), ("errors", 1)):
        values = [float(by_minute.get(int(t), (0, 0))[column]) for t in stamps]
        for found in _DETECTOR.detect(stamps, values).anomalies:
            if found.end < shown:
                continue
            out.append(
                ChartAnomaly(
                    series=series,
                    kind=found.kind,
                    timestamp=found.timestamp,
                    start=found.start,
                    end=found.end,
                    value=found.value,
                    expected=found.expected,
                    score=found.score,
                )
            )
    return out


def alert_intervals(store: Any, start: dt.datetime, end: dt.datetime) -> list[AlertInterval]:
    """Firing intervals of alerts that overlap ``[start, end)``, from ``alert_events``."""
    # No alert is older than the epoch; clamping there keeps year 1 from overflowing.
    since = max(start, EARLIEST_TIMESTAMP + _ALERT_LOOKBACK) - _ALERT_LOOKBACK
    rows = store.execute(
        "SELECT at, rule, fingerprint, labels, from_state, to_state, value, severity, message "
        "FROM alert_events WHERE at >= ? AND at < ? ORDER BY at, id",
        (format_timestamp(since), format_timestamp(end)),
    )
    open_: dict[str, AlertInterval] = {}
    out: list[AlertInterval] = []
    for at, rule, fingerprint, labels, from_state, to_state, value, severity, message in rows:
        seconds = parse_timestamp(at).timestamp()
        if to_state == "firing" and fingerprint not in open_:
            open_[fingerprint] = AlertInterval(
                rule=rule,
                fingerprint=fingerprint,
                labels=msgspec.json.decode(labels) if labels else {},
                severity=severity,
                start=seconds,
                end=None,
                value=value,
                message=message,
            )
        elif from_state == "firing" and to_state != "firing" and fingerprint in open_:
            interval = open_.pop(fingerprint)
            interval.end = seconds
            out.append(interval)
    out.extend(open_.values())
    lo = start.timestamp()
    return sorted((i for i in out if i.end is None or i.end >= lo), key=lambda i: i.start)


@get(
    "/v1/alerts/intervals",
    summary="Alert firing intervals in a range, for charts",
    description="Each alert's firing intervals that overlap the range (from its change to "
    "firing to its resolution; `end` null while it fires), from the stored alert history.",
    tags=["alerts"],
    opt=_READ,
    sync_to_thread=True,
)
def alert_firing_intervals(
    request: Request[Any, Any, Any],
    start: Annotated[
        str | None, Parameter(description=f"Range start (default -24h): {TIME_HELP}.")
    ] = None,
    end: Annotated[str | None, Parameter(description=f"Range end: {TIME_HELP}.")] = None,
) -> list[AlertInterval]:
    """Firing intervals overlapping the range, oldest first."""
    lo, hi = time_range(start, end, default_start="-24h")
    return alert_intervals(server_state(request).store, lo, hi)


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
    """Names and their counts of events in ``[start, end)``, at most 500."""
    state = server_state(request)
    lo, hi = time_range(start, end, default_start="-30d")
    counts = event_name_counts(state.store, lo, hi, dt.datetime.now(dt.UTC))
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:500]
    return [EventName(name=name, count=count) for name, count in ranked]


def event_name_counts(
    store: Any, lo: dt.datetime, hi: dt.datetime, now: dt.datetime
) -> dict[str, int]:
    """Events per name in ``[lo, hi)``: whole UTC days from ``analytics_daily_counts``
    (a row per day and name), the parts of days at the edges from the raw events (by
    the timestamp index). A range ending now (the default) counts today from the rollup:
    it holds no event after now but those of clock skew."""
    first_whole = truncate(lo, "day")
    if first_whole < lo:
        first_whole += _DAY
    whole_end = hi if hi >= now - _NOW_TOLERANCE else truncate(hi, "day")
    counts: dict[str, int] = {}
    if first_whole < whole_end:
        last_day = truncate(whole_end - dt.timedelta(microseconds=1), "day").date()
        for name, count in store.execute(
            "SELECT event_name, sum(event_count) FROM analytics_daily_counts "
            "WHERE date >= ? AND date <= ? GROUP BY 1",
            (first_whole.date().isoformat(), last_day.isoformat()),
        ):
            counts[name] = counts.get(name, 0) + int(count)
        parts = [(lo, first_whole), (whole_end, hi)]
    else:  # within one day: all from the raw events
        parts = [(lo, hi)]
    for a, b in parts:
        if a < b:
            for name, count in store.execute(
                "SELECT event_name, count(*) FROM analytics_events "
                "WHERE timestamp >= ? AND timestamp < ? GROUP BY 1",
                (format_timestamp(a), format_timestamp(b)),
            ):
                counts[name] = counts.get(name, 0) + int(count)
    return counts


OVERVIEW_HANDLERS: tuple[Any, ...] = (overview, event_names, alert_firing_intervals)
