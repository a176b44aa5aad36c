"""``tachimeter query``: ask a store questions from the shell, as tables, JSON or CSV.

Each command is a thin layer over :mod:`tachimeter.analyze` and takes its parameters as
options; the store is opened read-only (``--store``, default ``storage.path``).

    tachimeter query events --event tool_invoked --since 1d --limit 20
    tachimeter query trends --event mission_completed --since 30d --breakdown model
    tachimeter query funnel --step mission_started --step mission_completed --since 7d
    tachimeter query retention --start-event session_started --period week --periods 8
    tachimeter query metrics business_total_tokens --aggregation increase --step 1d
    tachimeter query sql "SELECT event_name, count(*) FROM analytics_events GROUP BY 1"
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import TYPE_CHECKING, Annotated, Any, Final

import typer

from tachimeter.cli.options import (
    Format,
    FormatOption,
    SinceOption,
    StoreOption,
    UntilOption,
    WhereOption,
    command_group,
    parse_duration_seconds,
    parse_where,
    read_store,
    reported_errors,
    time_range,
)
from tachimeter.cli.output import Rows, record_of, write_rows

if TYPE_CHECKING:  # imported when a command runs: `tachimeter --help` stays fast
    from tachimeter.analyze.events import EventRecord

__all__ = ["app"]

app = command_group(
    "query",
    "Query a store: events, trends, funnels, retention, metrics, read-only SQL.\n\n"
    "Example: tachimeter query events --event tool_invoked --since 1d --limit 20\n\n"
    "Example: tachimeter query trends --event mission_completed --since 30d --breakdown model\n\n"
    'Example: tachimeter query sql "SELECT event_name, count(*) FROM analytics_events GROUP BY 1"',
)

# The API's names in its messages, as the commands' options (reported_errors).
_EVENTS_OPTIONS: Final = {"event_type must be among": "--call must be one of"}
_TRENDS_OPTIONS: Final = {
    "needs property=,": "needs --property,",
    "property='duration_ms'": "--property duration_ms",
    "property=": "--property ",
    "breakdown_limit": "--limit",
}
_FUNNEL_OPTIONS: Final = {
    "conversion_window": "--window",
    "define it with define_funnel() or pass a FunnelDefinition": "give its --step options",
}
_METRICS_OPTIONS: Final = {
    "MetricQuery.quantiles": "--quantile",
    "MetricQuery.step": "--step",
    "MetricQuery.window": "--window",
    "MetricQuery.resolution": "--resolution",
}
_SQL_OPTIONS: Final = {"timeout_seconds": "--timeout", "max_rows": "--limit"}

# search_events returns at most this many events per page; longer listings page on.
_PAGE: Final = 1_000
_EVENT_COLUMNS: Final = (
    "timestamp",
    "event_name",
    "user_id",
    "session_id",
    "category",
    "event_type",
    "mission_id",
    "properties",
    "id",
)


class Interval(enum.Enum):
    """Bucket widths of a trend."""

    minute = "minute"
    hour = "hour"
    day = "day"
    week = "week"
    month = "month"


class Measure(enum.Enum):
    """What a trend measures per bucket."""

    count = "count"
    unique_users = "unique_users"
    unique_sessions = "unique_sessions"
    sum = "sum"
    avg = "avg"
    min = "min"
    max = "max"
    p50 = "p50"
    p75 = "p75"
    p90 = "p90"
    p95 = "p95"
    p99 = "p99"


class Period(enum.Enum):
    """Cohort periods of a retention matrix."""

    day = "day"
    week = "week"
    month = "month"


class Order(enum.Enum):
    """How funnel steps must follow each other."""

    ordered = "ordered"
    strict = "strict"


class Aggregation(enum.Enum):
    """Metric query aggregations (tachimeter.analyze.MetricQuery)."""

    sum = "sum"
    avg = "avg"
    min = "min"
    max = "max"
    count = "count"
    rate = "rate"
    increase = "increase"
    percentiles = "percentiles"
    histogram_quantile = "histogram_quantile"


class Resolution(enum.Enum):
    """Where a metric query reads: raw samples or rollups."""

    auto = "auto"
    raw = "raw"
    hourly = "hourly"
    daily = "daily"
    weekly = "weekly"


EventOption = Annotated[
    str | None, typer.Option("--event", "-e", help="The event name (default: all events).")
]


def _event_rows(events: list[EventRecord]) -> Rows:
    return Rows(
        name="events",
        columns=_EVENT_COLUMNS,
        rows=[tuple(getattr(e, c) for c in _EVENT_COLUMNS) for e in events],
    )


@app.command()
def events(
    store: StoreOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    event: Annotated[
        list[str] | None, typer.Option("--event", "-e", help="Event name, repeatable.")
    ] = None,
    user: Annotated[str | None, typer.Option(help="Only this user id.")] = None,
    session: Annotated[str | None, typer.Option(help="Only this session id.")] = None,
    category: Annotated[
        list[str] | None,
        typer.Option(help="Category, repeatable: usage, performance, error, business, ..."),
    ] = None,
    call: Annotated[
        list[str] | None, typer.Option(help="Call kind, repeatable: track, page, identify.")
    ] = None,
    where: WhereOption = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many events.")] = 50,
    oldest_first: Annotated[bool, typer.Option(help="Oldest first (default: newest).")] = False,
    count: Annotated[
        bool, typer.Option("--count", help="Print how many events match instead.")
    ] = False,
    format: FormatOption = Format.table,
) -> None:
    """Stored events matching every filter, newest first (or just their number).

    Example: tachimeter query events --event tool_invoked --where "success=false" --since 1d

    Example: tachimeter query events --count --since 2024-03-01 --until 2024-04-01
    """
    from tachimeter.analyze.events import count_events, search_events

    with reported_errors(_EVENTS_OPTIONS), read_store(store) as conn:
        start, end = time_range(since, until)
        # The same filters for the count and the listing.
        filters: dict[str, Any] = {
            "event": event or None,
            "event_type": call or None,
            "category": category or None,
            "start": start,
            "end": end if until is not None else None,  # events a few seconds ahead too
            "user_id": user,
            "session_id": session,
            "where": parse_where(where) or None,
        }
        if count:
            shown = record_of("count", {"events": count_events(conn, **filters)})
        else:
            found: list[EventRecord] = []
            cursor: str | None = None
            while len(found) < limit:
                page = search_events(
                    conn,
                    **filters,
                    limit=min(_PAGE, limit - len(found)),
                    cursor=cursor,
                    newest_first=not oldest_first,
                )
                found += page.events
                cursor = page.next_cursor
                if cursor is None:
                    break
            shown = _event_rows(found)
    write_rows(shown, format.value)


@app.command()
def trends(
    store: StoreOption = None,
    event: EventOption = None,
    since: Annotated[str, typer.Option(help="From this time: ISO-8601 or 7d, 12h ago.")] = "7d",
    until: UntilOption = None,
    interval: Annotated[Interval, typer.Option(help="Bucket width.")] = Interval.day,
    measure: Annotated[Measure, typer.Option(help="What each bucket measures.")] = Measure.count,
    property: Annotated[
        str | None,
        typer.Option("--property", help="The numeric property of sum, avg, min, max, pNN."),
    ] = None,
    breakdown: Annotated[
        str | None, typer.Option(help="Split into one series per value of this property.")
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=50, help="Series kept with --breakdown (the rest: other).")
    ] = 10,
    where: WhereOption = None,
    format: FormatOption = Format.table,
) -> None:
    """An event measure per UTC time bucket (zero-filled), optionally broken down.

    Buckets are named by their start; weeks start on Monday.

    Example: tachimeter query trends --event tool_invoked --since 14d --breakdown tool

    Example: tachimeter query trends --event response_latency --measure p90 --property value
    """
    from tachimeter.analyze.events import trend

    with reported_errors(_TRENDS_OPTIONS), read_store(store) as conn:
        start, end = time_range(since, until)
        assert start is not None
        result = trend(
            conn,
            event,
            start=start,
            end=end,
            interval=interval.value,
            measure=measure.value,
            property=property,
            where=parse_where(where) or None,
            breakdown=breakdown,
            breakdown_limit=limit,
        )
    # Counts come back as floats (one type for every measure): show them as the integers
    # they are.
    whole = measure in (Measure.count, Measure.unique_users, Measure.unique_sessions)
    rows: list[tuple[Any, ...]] = []
    for series in result.series:
        label = "(other)" if series.other else series.breakdown
        for bucket, raw in zip(result.buckets, series.values, strict=True):
            value = int(raw) if whole and raw is not None else raw
            rows.append((bucket, label, value) if breakdown else (bucket, value))
    columns = ("bucket", breakdown, measure.value) if breakdown else ("bucket", measure.value)
    title = f"{measure.value} of {event or 'all events'} per {interval.value} ({result.source})"
    write_rows(Rows(name="trend", columns=columns, rows=rows, title=title), format.value)


@app.command()
def funnel(
    store: StoreOption = None,
    step: Annotated[
        list[str] | None,
        typer.Option("--step", "-s", help="A step's event name, in order; 2 to 20 of them."),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="A stored funnel (defined by the API) instead of steps.")
    ] = None,
    since: Annotated[str, typer.Option(help="Entries from this time.")] = "30d",
    until: UntilOption = None,
    window: Annotated[
        str, typer.Option(help="Conversion window from the first step: 1h, 1d, 7d.")
    ] = "1d",
    order: Annotated[
        Order, typer.Option(help="ordered: other events may come between steps; strict: not.")
    ] = Order.ordered,
    format: FormatOption = Format.table,
) -> None:
    """Conversion through funnel steps of the users who entered it in the range.

    Example: tachimeter query funnel --step session_started --step mission_started
    --step mission_completed --since 7d --window 1h
    """
    from tachimeter.analyze.funnels import FunnelReport, funnel_report
    from tachimeter.errors import QueryError
    from tachimeter.store.summaries import FunnelDefinition, FunnelStep

    with reported_errors(_FUNNEL_OPTIONS), read_store(store) as conn:
        start, end = time_range(since, until)
        assert start is not None
        report: FunnelReport
        if name is not None:
            if step:
                raise QueryError("give either --name (a stored funnel) or --step, not both")
            report = funnel_report(conn, name, start=start, end=end)
        else:
            if not step or len(step) < 2:
                raise QueryError(
                    "a funnel needs at least two --step options (event names, in order), "
                    "or --name of a stored funnel"
                )
            definition = FunnelDefinition(
                name=" > ".join(step),
                steps=tuple(FunnelStep(s) for s in step),
                conversion_window=dt.timedelta(seconds=parse_duration_seconds(window, "--window")),
                order=order.value,
            )
            report = funnel_report(conn, definition, start=start, end=end)
    columns = (
        "step",
        "event",
        "entered",
        "converted",
        "drop_off",
        "conversion_from_start",
        "conversion_from_previous",
        "median_seconds_to_convert",
        "p90_seconds_to_convert",
    )
    rate = "-" if report.conversion_rate is None else f"{report.conversion_rate:.1%}"
    write_rows(
        Rows(
            name="funnel",
            columns=columns,
            rows=[tuple(getattr(s, c) for c in columns) for s in report.steps],
            title=f"{report.name}: {report.entered:,} entered, {report.completed:,} completed "
            f"({rate})",
        ),
        format.value,
    )


@app.command()
def retention(
    start_event: Annotated[
        str, typer.Option(help="The event that puts a user in a cohort (their first one).")
    ],
    store: StoreOption = None,
    return_event: Annotated[
        str | None, typer.Option(help="The event that counts as coming back (default: same).")
    ] = None,
    period: Annotated[Period, typer.Option(help="Cohort period.")] = Period.week,
    periods: Annotated[int, typer.Option(min=1, max=400, help="Cohorts and columns.")] = 8,
    since: Annotated[
        str | None,
        typer.Option(
            help="The first cohort's period holds this time (default: so that the "
            "last cohort is the current period)."
        ),
    ] = None,
    percent: Annotated[
        bool, typer.Option(help="Show each cell as a percentage of its cohort.")
    ] = False,
    format: FormatOption = Format.table,
) -> None:
    """Retention cohorts: how many users of each cohort came back in each later period.

    A user's cohort is the period of their first --start-event; period_k counts those who
    did --return-event k periods later (period_0 is the cohort's size).

    Example: tachimeter query retention --start-event session_started --period week --periods 6
    """
    from tachimeter.analyze.intervals import advance, truncate
    from tachimeter.analyze.retention import retention_cohorts
    from tachimeter.cli.options import parse_time

    with reported_errors(), read_store(store) as conn:
        now = dt.datetime.now(dt.UTC)
        if since is not None:
            start = parse_time(since, "--since", now=now)
        else:
            start = advance(truncate(now, period.value), period.value, -(periods - 1))
        matrix = retention_cohorts(
            conn,
            start_event,
            start=start,
            return_event=return_event,
            period=period.value,
            periods=periods,
        )
    columns = ("cohort", "size", *(f"period_{k}" for k in range(periods)))
    rows = []
    for cohort in matrix.cohorts:
        cells: list[Any] = list(cohort.percentages if percent else cohort.counts)
        rows.append((cohort.start, cohort.size, *cells, *([None] * (periods - len(cells)))))
    title = f"{matrix.start_event} -> {matrix.return_event}, by {matrix.period}" + (
        " (% of cohort)" if percent else ""
    )
    write_rows(Rows(name="retention", columns=columns, rows=rows, title=title), format.value)


@app.command()
def metrics(
    names: Annotated[
        list[str] | None,
        typer.Argument(help="Metric names (none: list the stored series).", show_default=False),
    ] = None,
    store: StoreOption = None,
    match: Annotated[
        list[str] | None,
        typer.Option("--match", "-m", help='A label matcher, repeatable: route="api", code=~"5.."'),
    ] = None,
    since: Annotated[str, typer.Option(help="From this time: ISO-8601 or 1h, 7d ago.")] = "1h",
    until: UntilOption = None,
    step: Annotated[
        str | None, typer.Option(help="Between evaluation times: 15s, 5m, 1d (default: ~250).")
    ] = None,
    aggregation: Annotated[
        Aggregation | None,
        typer.Option(
            help="sum, avg, min, max, count, rate, increase, percentiles, "
            "histogram_quantile (default: each series' last value)."
        ),
    ] = None,
    group_by: Annotated[
        list[str] | None, typer.Option("--group-by", "-g", help="Group by this label, repeatable.")
    ] = None,
    window: Annotated[
        str | None, typer.Option(help="Range of rate, increase, percentiles (default: step).")
    ] = None,
    quantile: Annotated[
        list[float] | None,
        typer.Option(
            "--quantile", "-q", help="Quantile in [0, 1], repeatable (default 0.5, 0.9, 0.99)."
        ),
    ] = None,
    resolution: Annotated[
        Resolution, typer.Option(help="raw samples, or hourly/daily/weekly rollups.")
    ] = Resolution.auto,
    format: FormatOption = Format.table,
) -> None:
    """Metric series from the time-series store, with PromQL's semantics.

    Example: tachimeter query metrics business_total_tokens --aggregation increase
    --step 1d --since 7d --group-by model

    Example: tachimeter query metrics   (lists the stored series)
    """
    from tachimeter.analyze.metrics import MetricQuery, MetricsEngine
    from tachimeter.store.timeseries import find_series

    with reported_errors(_METRICS_OPTIONS), read_store(store) as conn:
        if not names:
            listed = find_series(conn, None)
            write_rows(
                Rows(
                    name="series",
                    columns=("name", "type", "unit", "labels", "first_seen", "last_seen"),
                    rows=[
                        (s.name, s.metric_type, s.unit, s.labels, s.first_seen, s.last_seen)
                        for s in listed
                    ],
                    title="stored series",
                ),
                format.value,
            )
            return
        start, end = time_range(since, until)
        assert start is not None
        query = MetricQuery(
            names=names,
            start=start,
            end=end,
            matchers=match or (),
            step=parse_duration_seconds(step, "--step") if step else None,
            aggregation=aggregation.value if aggregation else None,
            group_by=group_by,
            window=parse_duration_seconds(window, "--window") if window else None,
            quantiles=quantile or (0.5, 0.9, 0.99),
            resolution=resolution.value,
        )
        result = MetricsEngine(conn).query(query)
    rows = [
        (series.name, series.labels, dt.datetime.fromtimestamp(t, dt.UTC), value)
        for series in result.series
        for t, value in series.points()
    ]
    title = f"{', '.join(names)} ({result.resolution}, step {result.step:g} s)"
    write_rows(
        Rows(name="metrics", columns=("name", "labels", "time", "value"), rows=rows, title=title),
        format.value,
    )


@app.command()
def sql(
    statement: Annotated[str, typer.Argument(help="One read-only SQL statement.")],
    store: StoreOption = None,
    limit: Annotated[
        int, typer.Option(min=1, max=100_000, help="At most this many rows.")
    ] = 10_000,
    timeout: Annotated[float, typer.Option(help="Stop the query after this many seconds.")] = 5.0,
    format: FormatOption = Format.table,
) -> None:
    """Run one read-only SQL statement over the store (schema: docs/schema.md).

    Writes, DDL, ATTACH and pragmas that change anything are refused.

    Example: tachimeter query sql "SELECT event_name, count(*) AS n FROM analytics_events
    GROUP BY 1 ORDER BY n DESC" --format csv
    """
    from tachimeter.analyze.sql import run_sql

    with reported_errors(_SQL_OPTIONS), read_store(store) as conn:
        result = run_sql(conn, statement, timeout_seconds=timeout, max_rows=limit)
    write_rows(
        Rows(name="rows", columns=tuple(result.columns), rows=result.rows, title="query"),
        format.value,
    )
    if result.truncated:
        typer.echo(f"(only the first {limit:,} rows; raise --limit for more)", err=True)
