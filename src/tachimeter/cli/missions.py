"""``tachimeter missions``: the stored missions (spec 414) from the shell.

Every command reads the store read-only (``--store``, default ``storage.path``) through
:mod:`tachimeter.analyze.missions` and takes the same filters: ``--since``/``--until``
(creation time), ``--backend``, ``--model``, ``--tag``, ``--status`` (each repeatable).

    tachimeter missions list --status failed --limit 20
    tachimeter missions show 01a2512f-1de0-7b6a-ba62-b26d7b93fb6c
    tachimeter missions stats --since 7d --model gpt-4o
    tachimeter missions compare --by model
    tachimeter missions patterns --min-missions 10
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Annotated, Any, Final

import typer

from tachimeter.cli.options import (
    Format,
    FormatOption,
    SinceOption,
    StoreOption,
    UntilOption,
    command_group,
    read_store,
    reported_errors,
    time_range,
)
from tachimeter.cli.output import Rows, record_of, rows_of, write_rows

if TYPE_CHECKING:  # imported when a command runs: `tachimeter --help` stays fast
    from tachimeter.analyze.missions import MissionFilter, SequencePattern

__all__ = ["app"]

app = command_group(
    "missions",
    "Stored missions: list, show one, statistics, comparisons, failure patterns.\n\n"
    "Example: tachimeter missions stats --since 30d --backend anthropic",
)


class GroupBy(enum.Enum):
    """How ``missions compare`` groups missions."""

    backend = "backend"
    model = "model"
    tag = "tag"
    status = "status"
    day = "day"
    week = "week"
    month = "month"


BackendOption = Annotated[
    list[str] | None, typer.Option("--backend", help="Only this backend, repeatable.")
]
ModelOption = Annotated[
    list[str] | None, typer.Option("--model", help="Only this model, repeatable.")
]
TagOption = Annotated[
    list[str] | None, typer.Option("--tag", help="Only with this tag, repeatable.")
]
# The API's names in its messages, as the commands' options (reported_errors).
_OPTIONS: Final = {
    "MissionFilter.status": "--status",
    "is not a valid MissionStatus": "is not a mission status",
    "MissionFilter.": "--",
}

StatusOption = Annotated[
    list[str] | None,
    typer.Option(
        "--status",
        help="Only this status, repeatable: created, planning, executing, paused, completed, "
        "failed, cancelled, abandoned.",
    ),
]


def _filter(
    since: str | None,
    until: str | None,
    backend: list[str] | None,
    model: list[str] | None,
    tag: list[str] | None,
    status: list[str] | None,
) -> MissionFilter | None:
    """The mission filter of the common options; None when nothing is filtered."""
    from tachimeter.analyze.missions import MissionFilter

    start, end = time_range(since, until)
    if since is None and until is None and not (backend or model or tag or status):
        return None
    return MissionFilter(
        since=start,
        until=end if until is not None else None,
        backend=tuple(backend) if backend else None,
        model=tuple(model) if model else None,
        tag=tuple(tag) if tag else None,
        status=tuple(status) if status else None,
    )


@app.command("list")
def list_(
    store: StoreOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    backend: BackendOption = None,
    model: ModelOption = None,
    tag: TagOption = None,
    status: StatusOption = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many.")] = 50,
    format: FormatOption = Format.table,
) -> None:
    """Missions, newest first, with their outcome, size, tokens and cost.

    Example: tachimeter missions list --status failed --model gpt-4o-mini --since 7d
    """
    from tachimeter.analyze.missions import list_missions

    with reported_errors(_OPTIONS), read_store(store) as conn:
        missions = list_missions(
            conn, _filter(since, until, backend, model, tag, status), limit=limit
        )
    columns = (
        "mission_id",
        "status",
        "backend",
        "model",
        "tags",
        "created_at",
        "execution_time_ms",
        "step_count",
        "tool_calls",
        "llm_calls",
        "total_tokens",
        "total_cost",
        "error_code",
    )
    write_rows(rows_of("missions", missions, columns), format.value)


@app.command()
def show(
    mission_id: Annotated[str, typer.Argument(help="The mission's id (missions list).")],
    store: StoreOption = None,
    format: FormatOption = Format.table,
) -> None:
    """One mission: status, timing, steps, tokens, cost, error, and its tools.

    Example: tachimeter missions show 01a2512f-1de0-7b6a-ba62-b26d7b93fb6c --format json
    """
    from tachimeter.errors import QueryError
    from tachimeter.missions import read_mission

    with reported_errors(_OPTIONS), read_store(store) as conn:
        mission = read_mission(conn, mission_id.strip())
        if mission is None:
            raise QueryError(
                f"no mission {mission_id!r} in the store; find ids with: tachimeter missions list"
            )
    usage = mission.token_usage
    error = mission.error
    header: dict[str, Any] = {
        "mission_id": mission.mission_id,
        "status": mission.status,
        "backend": mission.backend,
        "model": mission.model,
        "tags": list(mission.tags),
        "session_id": mission.session_id,
        "user_id": mission.user_id,
        "created_at": mission.created_at,
        "started_at": mission.started_at,
        "completed_at": mission.completed_at,
        "execution_time_ms": mission.execution_time_ms,
        "paused_ms": mission.paused_ms,
        "step_count": mission.step_count,
        "steps_completed": mission.steps_completed,
        "tool_calls": mission.tool_calls,
        "llm_calls": mission.llm_calls,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_tokens": usage.cache_read_tokens,
        "cache_creation_tokens": usage.cache_creation_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        "total_tokens": mission.total_tokens,
        "total_cost": mission.total_cost,
        "cost_complete": mission.cost_complete,
        "retry_count": mission.retry_count,
        "error_code": error.code if error else None,
        "error_message": error.message if error else None,
        "error_step_index": error.step_index if error else None,
    }
    tools = Rows(
        name="tools",
        columns=("tool_name", "invocations", "successes", "failures", "total_time_ms"),
        rows=[
            (t.tool_name, t.invocation_count, t.success_count, t.failure_count, t.total_time_ms)
            for t in mission.tools_used
        ],
        title="tools",
    )
    write_rows(
        [record_of("mission", header, title=f"mission {mission.mission_id}"), tools], format.value
    )


@app.command()
def stats(
    store: StoreOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    backend: BackendOption = None,
    model: ModelOption = None,
    tag: TagOption = None,
    status: StatusOption = None,
    format: FormatOption = Format.table,
) -> None:
    """Success rate, duration percentiles, steps, tokens, cost, top tools and errors.

    Rates are over finished missions; durations over finished missions that started.

    Example: tachimeter missions stats --since 30d --backend anthropic
    """
    import msgspec

    from tachimeter.analyze.missions import calculate_metrics

    with reported_errors(_OPTIONS), read_store(store) as conn:
        metrics = calculate_metrics(conn, _filter(since, until, backend, model, tag, status))
    values: dict[str, Any] = msgspec.structs.asdict(metrics)
    values["top_tools"] = dict(metrics.top_tools)
    values["top_errors"] = dict(metrics.top_errors)
    values["by_status"] = {s.value: n for s, n in metrics.by_status.items()}
    finished = metrics.total_missions - metrics.active_missions
    # Spec 414's struct says 0.0 where nothing was measured: shown as no value, not as
    # "0 % success in 0 ms".
    unmeasured = {"success_rate", "avg_execution_time_ms", "median_execution_time_ms"}
    unmeasured |= {"p90_execution_time_ms", "p95_execution_time_ms", "p99_execution_time_ms"}
    if finished == 0:
        values.update(dict.fromkeys(unmeasured, None))
    if metrics.total_missions == 0:
        values["avg_steps"] = None
    write_rows(record_of("stats", values, title="missions"), format.value)


@app.command()
def compare(
    store: StoreOption = None,
    by: Annotated[GroupBy, typer.Option(help="Group missions by this.")] = GroupBy.model,
    since: SinceOption = None,
    until: UntilOption = None,
    backend: BackendOption = None,
    model: ModelOption = None,
    tag: TagOption = None,
    confidence: Annotated[float, typer.Option(min=0.5, max=0.999, help="Interval level.")] = 0.95,
    resamples: Annotated[int, typer.Option(min=100, help="Bootstrap resamples.")] = 2_000,
    min_missions: Annotated[
        int, typer.Option(min=1, help="Smaller groups are 'too small to tell'.")
    ] = 20,
    seed: Annotated[int, typer.Option(help="Bootstrap seed (same seed, same intervals).")] = 0,
    format: FormatOption = Format.table,
) -> None:
    """Groups of finished missions compared as an A/B test: success rates with Wilson
    intervals, a Holm-corrected z-test per pair, bootstrap intervals of the median
    duration and cost differences, and a verdict.

    Example: tachimeter missions compare --by model --since 30d

    Example: tachimeter missions compare --by backend --tag refactor --format json
    """
    from tachimeter.analyze.missions import compare as compare_groups

    with reported_errors(_OPTIONS), read_store(store) as conn:
        result = compare_groups(
            conn,
            by=by.value,
            filter=_filter(since, until, backend, model, tag, None),
            confidence=confidence,
            resamples=resamples,
            min_missions=min_missions,
            seed=seed,
        )
    groups = Rows(
        name="groups",
        columns=(
            "group",
            "missions",
            "successes",
            "success_rate",
            "success_low",
            "success_high",
            "median_duration_ms",
            "median_cost",
        ),
        rows=[
            (
                g.group,
                g.missions,
                g.successes,
                g.success_rate,
                *(g.success_interval or (None, None)),
                g.median_duration_ms,
                g.median_cost,
            )
            for g in result.groups
        ],
        title=f"missions by {by.value} ({result.confidence:.0%} intervals)",
    )
    pairs = Rows(
        name="pairs",
        columns=(
            "a",
            "b",
            "success_rate_difference",
            "success_p_value",
            "success_significant",
            "duration_median_difference_ms",
            "duration_low_ms",
            "duration_high_ms",
            "cost_median_difference",
            "cost_low",
            "cost_high",
            "verdict",
        ),
        rows=[
            (
                p.a,
                p.b,
                p.success_rate_difference,
                p.success_p_value,
                p.success_significant,
                p.duration_median_difference_ms,
                *(p.duration_interval or (None, None)),
                p.cost_median_difference,
                *(p.cost_interval or (None, None)),
                p.verdict,
            )
            for p in result.pairs
        ],
        title="pairs (differences are b - a)",
    )
    write_rows([groups, pairs], format.value)


def _pattern(pattern: SequencePattern) -> str:
    return (" .. " if pattern.kind == "gapped" else " -> ").join(pattern.tools)


@app.command()
def patterns(
    store: StoreOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    backend: BackendOption = None,
    model: ModelOption = None,
    tag: TagOption = None,
    max_length: Annotated[int, typer.Option(min=1, max=8, help="Longest tool sequence.")] = 4,
    min_support: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Least share of missions with a pattern.")
    ] = 0.01,
    min_missions: Annotated[
        int, typer.Option(min=1, help="Least number of missions with a pattern.")
    ] = 20,
    alpha: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="False discovery rate of failure patterns.")
    ] = 0.05,
    top: Annotated[int, typer.Option(min=1, help="Patterns shown per list.")] = 20,
    format: FormatOption = Format.table,
) -> None:
    """Tool sequences of finished missions, those associated with failure, tool loops,
    the steps where failures happen, and recurring error codes.

    Sequences: a -> b are consecutive calls, a .. b calls in order with others between.

    Example: tachimeter missions patterns --since 30d --min-missions 10
    """
    from tachimeter.analyze.missions import detect_patterns

    with reported_errors(_OPTIONS), read_store(store) as conn:
        report = detect_patterns(
            conn,
            _filter(since, until, backend, model, tag, None),
            max_length=max_length,
            min_support=min_support,
            min_missions=min_missions,
            alpha=alpha,
            top=top,
        )
    pattern_columns = (
        "pattern",
        "missions",
        "support",
        "failures",
        "failure_rate",
        "lift",
        "p_value",
        "q_value",
    )

    def pattern_rows(name: str, items: list[SequencePattern], title: str) -> Rows:
        return Rows(
            name=name,
            columns=pattern_columns,
            rows=[(_pattern(p), *(getattr(p, c) for c in pattern_columns[1:])) for p in items],
            title=title,
        )

    summary = record_of(
        "summary",
        {
            "missions": report.missions,
            "failed_missions": report.failed_missions,
            "missions_with_loops": report.missions_with_loops,
            "min_support": report.min_support,
            "min_missions": report.min_missions,
            "alpha": report.alpha,
        },
        title="finished missions",
    )
    write_rows(
        [
            summary,
            pattern_rows(
                "failure_associated",
                report.failure_associated,
                "associated with failure (highest lift first)",
            ),
            pattern_rows("frequent", report.frequent, "most frequent"),
            rows_of(
                "loops",
                report.loops,
                (
                    "tool_name",
                    "loops",
                    "missions",
                    "longest_run",
                    "failure_rate_with_loop",
                    "failure_rate_without_loop",
                ),
                title="repeated-tool loops",
            ),
            rows_of(
                "failure_steps",
                report.failure_steps,
                (
                    "step_index",
                    "failed_missions",
                    "share_of_failed_missions",
                    "step_records",
                    "step_failures",
                    "step_failure_rate",
                ),
                title="where failures happen",
            ),
            rows_of(
                "recurring_errors",
                report.recurring_errors,
                (
                    "code",
                    "failed_missions",
                    "share_of_failed_missions",
                    "recoverable_share",
                    "tool_call_failures",
                    "first_seen",
                    "last_seen",
                ),
                title="recurring errors",
            ),
        ],
        format.value,
    )
