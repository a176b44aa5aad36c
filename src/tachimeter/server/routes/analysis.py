"""Metric queries, anomalies, missions, funnels, retention, alerts and read-only SQL."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, get, post
from litestar.exceptions import NotFoundException
from litestar.params import JSONBody, Parameter, PathParameter

from tachimeter.analyze.funnels import (
    FunnelReport,
    StoredFunnel,
    define_funnel,
    funnel_report,
    get_funnel,
    list_funnels,
)
from tachimeter.analyze.intervals import advance, truncate
from tachimeter.analyze.retention import RetentionMatrix, RetentionPeriod, retention_cohorts
from tachimeter.analyze.sql import SqlResult, run_sql
from tachimeter.errors import QueryError
from tachimeter.model.timestamps import utc_now
from tachimeter.server.routes.params import TIME_HELP, names, time_range
from tachimeter.server.state import server_state
from tachimeter.store.summaries import FunnelDefinition

__all__ = ["ANALYSIS_HANDLERS"]

_READ: dict[str, Any] = {"scope": "read"}
_ADMIN: dict[str, Any] = {"scope": "admin"}

Start = Annotated[str | None, Parameter(description=f"Range start (inclusive): {TIME_HELP}.")]
End = Annotated[str | None, Parameter(description=f"Range end (default now): {TIME_HELP}.")]
Aggregation = Literal[
    "sum", "avg", "min", "max", "count", "rate", "increase", "percentiles", "histogram_quantile"
]


# -- metrics ------------------------------------------------------------------------------


class MetricName(msgspec.Struct, kw_only=True):
    """A stored metric: its name, kind, unit and how many label sets it has."""

    name: str
    kind: str | None
    unit: str | None
    series: int


@get(
    "/v1/metrics/names",
    summary="Stored metric names",
    tags=["metrics"],
    opt=_READ,
    sync_to_thread=True,
)
def metric_names(request: Request[Any, Any, Any]) -> list[MetricName]:
    """Every metric with at least one series."""
    rows = server_state(request).store.execute(
        "SELECT name, min(metric_type), min(unit), count(*) FROM metric_series "
        "GROUP BY name ORDER BY name"
    )
    return [MetricName(name=r[0], kind=r[1], unit=r[2], series=int(r[3])) for r in rows]


@get(
    "/v1/metrics/query",
    summary="Query metric series",
    description='Names, label matchers (PromQL: `route="/run"`, `code=~"5.."`), a range, a '
    "step, an aggregation (sum avg min max count rate increase percentiles "
    "histogram_quantile) and labels to group by. Long ranges read the hourly/daily rollups.",
    tags=["metrics"],
    opt=_READ,
    sync_to_thread=True,
)
def metric_query(
    request: Request[Any, Any, Any],
    name: Annotated[str, Parameter(description="Comma-separated metric names.")],
    match: Annotated[
        list[str] | None, Parameter(description='Label matchers, repeatable: code=~"5..".')
    ] = None,
    start: Start = None,
    end: End = None,
    step: Annotated[float | None, Parameter(description="Seconds between points.", gt=0)] = None,
    aggregation: Annotated[Aggregation | None, Parameter(description="How to combine.")] = None,
    group_by: Annotated[
        str | None, Parameter(description="Comma-separated labels to group by.")
    ] = None,
    quantiles: Annotated[
        str | None, Parameter(description="Comma-separated quantiles in [0, 1] (0.5,0.9,0.99).")
    ] = None,
) -> dict[str, Any]:
    """The series and how they were computed."""
    from tachimeter.analyze.metrics import MetricQuery, MetricsEngine

    lo, hi = time_range(start, end, default_start="-1h")
    query = MetricQuery(
        names=names(name) or [],
        start=lo,
        end=hi,
        matchers=match or (),
        step=step,
        aggregation=aggregation,
        group_by=names(group_by),
        quantiles=_floats(quantiles, "quantiles") or (0.5, 0.9, 0.99),
    )
    result: dict[str, Any] = MetricsEngine(server_state(request).store).query(query).to_dict()
    return result


def _floats(value: str | None, name: str) -> tuple[float, ...] | None:
    if not value:
        return None
    try:
        return tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise QueryError(f"{name} = {value!r} must be comma-separated numbers") from None


@get(
    "/v1/anomalies",
    summary="Anomalies in a metric or an event count",
    description="Runs a detector over one series: a metric (`metric`, aggregated with `sum` "
    "per `step`) or an event's count per interval (`event`). Returns every point with its "
    "expected value and range, and the anomalies found.",
    tags=["metrics"],
    opt=_READ,
    sync_to_thread=True,
)
def anomalies(
    request: Request[Any, Any, Any],
    metric: Annotated[str | None, Parameter(description="A metric name.")] = None,
    event: Annotated[str | None, Parameter(description="An event name (counted).")] = None,
    detector: Annotated[
        Literal["robust_zscore", "seasonal", "level_shift"],
        Parameter(description="robust_zscore, seasonal (daily pattern) or level_shift."),
    ] = "robust_zscore",
    start: Start = None,
    end: End = None,
    interval: Annotated[
        Literal["minute", "hour", "day"], Parameter(description="Bucket of event counts.")
    ] = "hour",
    step: Annotated[float | None, Parameter(description="Metric step in seconds.", gt=0)] = None,
) -> dict[str, Any]:
    """The detector's report."""
    from tachimeter.analyze import anomalies as an

    state = server_state(request)
    lo, hi = time_range(start, end, default_start="-7d")
    if (metric is None) == (event is None):
        raise QueryError("give exactly one of metric and event")
    if event is not None:
        from tachimeter.analyze.events import trend

        counted = trend(state.store, event, start=lo, end=hi, interval=interval)
        stamps = [b.timestamp() for b in counted.buckets]
        values = [v if v is not None else float("nan") for v in counted.series[0].values]
    else:
        from tachimeter.analyze.metrics import MetricQuery, MetricsEngine

        assert metric is not None
        result = MetricsEngine(state.store).query(
            MetricQuery(names=[metric], start=lo, end=hi, step=step, aggregation="sum")
        )
        if not result.series:
            raise NotFoundException(detail=f"no samples of metric {metric!r} in the range")
        stamps = result.series[0].timestamps.tolist()
        values = result.series[0].values.tolist()
    chosen: Any = {
        "robust_zscore": an.RobustZScore,
        "seasonal": an.SeasonalBaseline,
        "level_shift": an.LevelShift,
    }[detector]()
    report: dict[str, Any] = chosen.detect(stamps, values).to_dict()
    return report


# -- missions -----------------------------------------------------------------------------


class MissionRow(msgspec.Struct, kw_only=True):
    """One mission in a list."""

    mission_id: str
    status: str
    backend: str | None
    model: str | None
    tags: list[str]
    created_at: str
    ended_at: str | None
    execution_time_ms: float | None
    step_count: int
    tool_calls: int
    total_tokens: int
    total_cost: float
    error_message: str | None


def _mission_filter(
    start: str | None,
    end: str | None,
    backend: str | None,
    model: str | None,
    tag: str | None,
    status: str | None,
) -> Any:
    from tachimeter.analyze.missions import MissionFilter

    lo, hi = time_range(start, end, default_start="-30d")
    return MissionFilter(
        since=lo,
        until=hi,
        backend=tuple(names(backend) or ()) or None,
        model=tuple(names(model) or ()) or None,
        tag=tuple(names(tag) or ()) or None,
        status=tuple(names(status) or ()) or None,
    )


Backend = Annotated[str | None, Parameter(description="Comma-separated backends.")]
Model = Annotated[str | None, Parameter(description="Comma-separated models.")]
Tag = Annotated[str | None, Parameter(description="Comma-separated tags (any).")]
Status = Annotated[
    str | None,
    Parameter(
        description="Comma-separated statuses: created planning executing paused "
        "completed failed cancelled abandoned."
    ),
]


@get(
    "/v1/missions",
    summary="Missions, newest first",
    tags=["missions"],
    opt=_READ,
    sync_to_thread=True,
)
def missions_list(
    request: Request[Any, Any, Any],
    start: Start = None,
    end: End = None,
    backend: Backend = None,
    model: Model = None,
    tag: Tag = None,
    status: Status = None,
    limit: Annotated[
        int, Parameter(description="At most this many, 1 to 1000.", ge=1, le=1000)
    ] = 100,
) -> list[MissionRow]:
    """Missions created in the range that match the filters (``list_missions``)."""
    from tachimeter.analyze.missions import list_missions

    chosen = _mission_filter(start, end, backend, model, tag, status)
    with server_state(request).store.reader() as conn:
        listed = list_missions(conn, chosen, limit=limit)
    return [
        MissionRow(
            mission_id=m.mission_id,
            status=m.status.value,
            backend=m.backend or None,
            model=m.model or None,
            tags=list(m.tags),
            created_at=_stamp(m.created_at),
            ended_at=None if m.ended_at is None else _stamp(m.ended_at),
            execution_time_ms=m.execution_time_ms,
            step_count=m.step_count,
            tool_calls=m.tool_calls,
            total_tokens=m.total_tokens,
            total_cost=m.total_cost,
            error_message=m.error_message,
        )
        for m in listed
    ]


def _stamp(value: dt.datetime) -> str:
    from tachimeter.model.timestamps import format_timestamp

    return format_timestamp(value)


@get(
    "/v1/missions/metrics",
    summary="Mission metrics: rates, duration percentiles, tokens, cost",
    tags=["missions"],
    opt=_READ,
    sync_to_thread=True,
)
def missions_metrics(
    request: Request[Any, Any, Any],
    start: Start = None,
    end: End = None,
    backend: Backend = None,
    model: Model = None,
    tag: Tag = None,
    status: Status = None,
) -> Any:
    """``calculate_metrics`` over the filtered missions."""
    from tachimeter.analyze.missions import calculate_metrics

    state = server_state(request)
    with state.store.reader() as conn:
        return calculate_metrics(conn, _mission_filter(start, end, backend, model, tag, status))


@get(
    "/v1/missions/tools",
    summary="Tool usage of missions",
    tags=["missions"],
    opt=_READ,
    sync_to_thread=True,
)
def missions_tools(
    request: Request[Any, Any, Any],
    start: Start = None,
    end: End = None,
    backend: Backend = None,
    model: Model = None,
    tag: Tag = None,
    status: Status = None,
) -> Any:
    """Per tool: calls, failures, durations; frequent pairs."""
    from tachimeter.analyze.missions import tool_usage

    with server_state(request).store.reader() as conn:
        return tool_usage(conn, _mission_filter(start, end, backend, model, tag, status))


@get(
    "/v1/missions/patterns",
    summary="Tool sequences and other patterns linked to failure",
    tags=["missions"],
    opt=_READ,
    sync_to_thread=True,
)
def missions_patterns(
    request: Request[Any, Any, Any],
    start: Start = None,
    end: End = None,
    backend: Backend = None,
    model: Model = None,
    tag: Tag = None,
    top: Annotated[int, Parameter(description="Patterns kept, 1 to 100.", ge=1, le=100)] = 20,
) -> Any:
    """``detect_patterns`` over the filtered missions."""
    from tachimeter.analyze.missions import detect_patterns

    with server_state(request).store.reader() as conn:
        return detect_patterns(
            conn, _mission_filter(start, end, backend, model, tag, None), top=top
        )


@get(
    "/v1/missions/efficiency",
    summary="Mission efficiency scores by group",
    tags=["missions"],
    opt=_READ,
    sync_to_thread=True,
)
def missions_efficiency(
    request: Request[Any, Any, Any],
    start: Start = None,
    end: End = None,
    by: Annotated[
        Literal["backend", "model", "tag", "status", "day", "week", "month"],
        Parameter(description="Grouping."),
    ] = "model",
) -> Any:
    """``efficiency`` grouped by ``by``."""
    from tachimeter.analyze.missions import efficiency

    with server_state(request).store.reader() as conn:
        return efficiency(conn, _mission_filter(start, end, None, None, None, None), group_by=by)


@get(
    "/v1/missions/compare",
    summary="Compare mission groups with intervals",
    description="Success rates (Wilson intervals) and median durations (bootstrap) per group "
    "of `by`, with pairwise differences.",
    tags=["missions"],
    opt=_READ,
    sync_to_thread=True,
)
def missions_compare(
    request: Request[Any, Any, Any],
    by: Annotated[
        Literal["backend", "model", "tag", "status", "day", "week", "month"],
        Parameter(description="Grouping."),
    ] = "model",
    start: Start = None,
    end: End = None,
    backend: Backend = None,
    model: Model = None,
    tag: Tag = None,
    min_missions: Annotated[
        int, Parameter(description="Smallest group compared.", ge=1, le=100_000)
    ] = 20,
) -> Any:
    """``compare`` grouped by ``by``, over the missions of the filters."""
    from tachimeter.analyze.missions import compare

    with server_state(request).store.reader() as conn:
        return compare(
            conn,
            by=by,
            filter=_mission_filter(start, end, backend, model, tag, None),
            min_missions=min_missions,
            resamples=500,
        )


@get(
    "/v1/missions/{mission_id:str}",
    summary="One mission",
    tags=["missions"],
    opt=_READ,
    sync_to_thread=True,
)
def mission_detail(
    request: Request[Any, Any, Any],
    mission_id: Annotated[str, PathParameter(description="The mission's id.", max_length=100)],
) -> Any:
    """The mission's analytics (steps, tools, tokens, cost, error); 404 when absent."""
    from tachimeter.missions.projection import read_mission

    with server_state(request).store.reader() as conn:
        found = read_mission(conn, mission_id)
    if found is None:
        raise NotFoundException(detail=f"no mission with id {mission_id!r}")
    return found


# -- funnels, retention ---------------------------------------------------------------------


@get("/v1/funnels", summary="Defined funnels", tags=["funnels"], opt=_READ, sync_to_thread=True)
def funnels(request: Request[Any, Any, Any]) -> list[StoredFunnel]:
    """Every stored funnel definition."""
    return list_funnels(server_state(request).store)


@post(
    "/v1/funnels",
    summary="Define (or replace) a funnel",
    description="Body: a funnel definition (name, steps [{event, where}], conversion_window "
    "seconds, order, exclusions). Past events are folded in (backfill).",
    tags=["funnels"],
    opt=_ADMIN,
    status_code=201,
)
async def funnel_define(
    request: Request[Any, Any, Any],
    data: JSONBody[FunnelDefinition],
    replace: Annotated[bool, Parameter(description="Replace a funnel of the same name.")] = False,
) -> StoredFunnel:
    """Store the funnel; 409-like 400 if it exists and ``replace`` is false."""
    if "/" in data.name:
        raise QueryError(
            f"funnel name {data.name!r} has a '/', which its report's URL "
            "(/v1/funnels/{name}/report) cannot carry; choose another name"
        )
    state = server_state(request)
    future = state.writer.call(lambda conn: define_funnel(conn, data, replace=replace))
    stored: StoredFunnel = await asyncio.wrap_future(future)
    return stored


@get(
    "/v1/funnels/{name:str}/report",
    summary="Conversion through a stored funnel",
    tags=["funnels"],
    opt=_READ,
    sync_to_thread=True,
)
def funnel_conversion(
    request: Request[Any, Any, Any],
    name: Annotated[str, PathParameter(description="The funnel's name.", max_length=200)],
    start: Start = None,
    end: End = None,
) -> FunnelReport:
    """Users entering the funnel in the range and how far they got; 404 for no funnel."""
    lo, hi = time_range(start, end, default_start="-30d")
    store = server_state(request).store
    try:
        get_funnel(store, name)
    except QueryError:
        raise NotFoundException(
            detail=f"no funnel named {name!r}; GET /v1/funnels lists them, POST /v1/funnels "
            "defines one"
        ) from None
    return funnel_report(store, name, start=lo, end=hi)


@get(
    "/v1/retention",
    summary="Retention cohorts",
    tags=["funnels"],
    opt=_READ,
    sync_to_thread=True,
)
def retention(
    request: Request[Any, Any, Any],
    start_event: Annotated[str, Parameter(description="The event that puts a user in a cohort.")],
    return_event: Annotated[
        str | None, Parameter(description="The event that counts as a return (default: any).")
    ] = None,
    start: Annotated[
        str | None,
        Parameter(
            description=f"The first cohort's period holds this time: {TIME_HELP} (default: "
            "so that the last cohort is the current period)."
        ),
    ] = None,
    period: Annotated[RetentionPeriod, Parameter(description="day, week or month.")] = "week",
    periods: Annotated[int, Parameter(description="Periods followed, 1 to 52.", ge=1, le=52)] = 8,
) -> RetentionMatrix:
    """Cohorts by first ``start_event`` period and the share returning in each later one."""
    if start is None:  # the latest `periods` periods, the current one last
        lo = advance(truncate(utc_now(), period), period, -(periods - 1))
    else:
        lo, _ = time_range(start, None)
    return retention_cohorts(
        server_state(request).store,
        start_event,
        start=lo,
        return_event=return_event,
        period=period,
        periods=periods,
    )


# -- alerts ---------------------------------------------------------------------------------


@get(
    "/v1/alerts",
    summary="Current alerts (as the alert manager left them in the store)",
    tags=["alerts"],
    opt=_READ,
    sync_to_thread=True,
)
def alerts(request: Request[Any, Any, Any]) -> Any:
    """Live alert states: pending or firing, with values and since when."""
    from tachimeter.alerts.history import read_alert_states

    return read_alert_states(server_state(request).store)


@get(
    "/v1/alerts/history",
    summary="Alert state changes, newest first",
    tags=["alerts"],
    opt=_READ,
    sync_to_thread=True,
)
def alerts_history(
    request: Request[Any, Any, Any],
    rule: Annotated[str | None, Parameter(description="Only this rule.")] = None,
    start: Start = None,
    end: End = None,
    limit: Annotated[int, Parameter(description="At most, 1 to 1000.", ge=1, le=1000)] = 100,
) -> Any:
    """``alert_events`` rows."""
    from tachimeter.alerts.history import read_alert_events

    lo, hi = time_range(start, end, default_start="-30d")
    return read_alert_events(
        server_state(request).store, rule=rule, since=lo, until=hi, limit=limit
    )


# -- SQL ------------------------------------------------------------------------------------


class SqlRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A read-only query and its parameters."""

    sql: str
    params: list[Any] | dict[str, Any] = msgspec.field(default_factory=list)
    max_rows: int = 1000
    timeout_seconds: float = 5.0


@post(
    "/v1/sql",
    summary="Read-only SQL over the store (admin)",
    description="One SELECT (or WITH) statement with `?` or `:name` parameters; writes, "
    "ATTACH and PRAGMA changes are refused; at most `max_rows` rows (<= 10 000) and "
    "`timeout_seconds` (<= 30).",
    tags=["sql"],
    opt=_ADMIN,
    status_code=200,
    sync_to_thread=True,
)
def sql(request: Request[Any, Any, Any], data: JSONBody[SqlRequest]) -> SqlResult:
    """The rows, or 400 naming why the query was refused."""
    if not 1 <= data.max_rows <= 10_000:
        raise QueryError(f"max_rows must be in [1, 10000], got {data.max_rows}")
    if not 0 < data.timeout_seconds <= 30:
        raise QueryError(f"timeout_seconds must be in (0, 30], got {data.timeout_seconds}")
    return run_sql(
        server_state(request).store,
        data.sql,
        data.params,
        timeout_seconds=data.timeout_seconds,
        max_rows=data.max_rows,
    )


ANALYSIS_HANDLERS: tuple[Any, ...] = (
    metric_names,
    metric_query,
    anomalies,
    missions_list,
    missions_metrics,
    missions_tools,
    missions_patterns,
    missions_efficiency,
    missions_compare,
    mission_detail,
    funnels,
    funnel_define,
    funnel_conversion,
    retention,
    alerts,
    alerts_history,
    sql,
)
