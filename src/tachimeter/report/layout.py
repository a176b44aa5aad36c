"""What a rendered report shows, in order: sections of figures, tables, charts and notes.

Markdown and HTML render the same :func:`layout`, so they never disagree on a figure;
charts (inline SVG) appear only where the format can show them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import NamedTuple, TypeAlias

from tachimeter.report.charts import BarSeries, horizontal_bars, stacked_bars
from tachimeter.report.data import MissionGroup, Report
from tachimeter.report.display import (
    MISSING,
    show_count,
    show_ms,
    show_rate,
    show_time,
    show_usd,
)

__all__ = ["Block", "Chart", "Figures", "Note", "Section", "Table", "layout"]


class Figures(NamedTuple):
    """Headline figures: (label, value) pairs."""

    items: list[tuple[str, str]]


class Table(NamedTuple):
    """A table of text cells; ``numeric`` columns are right-aligned. A ``folded`` table
    repeats a chart's numbers: HTML shows it on demand."""

    headers: tuple[str, ...]
    rows: Sequence[tuple[str, ...]]
    numeric: tuple[bool, ...]
    folded: bool = False


class Chart(NamedTuple):
    """An inline SVG chart (HTML only; Markdown shows the table next to it)."""

    svg: str


class Note(NamedTuple):
    """A sentence of text."""

    text: str


Block: TypeAlias = Figures | Table | Chart | Note


class Section(NamedTuple):
    """A titled part of the report."""

    title: str
    blocks: list[Block]


def _table(
    headers: str, rows: list[tuple[str, ...]], numeric: str, *, folded: bool = False
) -> Table:
    """``headers`` separated by ``|``; ``numeric`` one ``n`` (right-aligned) or ``t`` each."""
    names = tuple(h.strip() for h in headers.split("|"))
    return Table(names, rows, tuple(c == "n" for c in numeric), folded)


def _summary(r: Report) -> Section:
    s, m = r.summary, r.missions
    items = [
        ("Events", show_count(s.events)),
        ("Users", show_count(s.users)),
        ("Sessions", show_count(s.sessions)),
        ("Errors", show_count(s.errors)),
        ("Error rate", show_rate(s.error_rate)),
    ]
    if m.available:
        items += [
            ("Missions", show_count(m.total)),
            ("Mission success", show_rate(m.success_rate)),
        ]
    if r.token_usage:
        items += [
            ("LLM tokens", show_count(sum(u.total_tokens for u in r.token_usage))),
            ("LLM cost", show_usd(sum(u.cost_usd for u in r.token_usage))),
        ]
    return Section("Summary", [Figures(items)])


def _trends(r: Report, charts: bool) -> Section:
    days = [d.day for d in r.events_per_day]
    blocks: list[Block] = []
    if charts:
        blocks.append(
            Chart(
                stacked_bars(
                    days,
                    [
                        BarSeries("events", [d.events - d.errors for d in r.events_per_day]),
                        BarSeries("errors", [d.errors for d in r.events_per_day]),
                    ],
                    title="Events per day (errors on top)",
                )
            )
        )
    blocks.append(
        _table(
            "Day | Events | Errors | Error rate",
            [
                (
                    d.day,
                    show_count(d.events),
                    show_count(d.errors),
                    show_rate(d.errors / d.events if d.events else None),
                )
                for d in r.events_per_day
            ],
            "tnnn",
            folded=charts,
        )
    )
    return Section("Events per day", blocks)


def _events(r: Report) -> Section:
    if not r.top_events:
        return Section("Top events", [Note("No events in this range.")])
    return Section(
        "Top events",
        [
            _table(
                "Event | Events | Users",
                [(e.name, show_count(e.events), show_count(e.users)) for e in r.top_events],
                "tnn",
            )
        ],
    )


def _errors(r: Report) -> Section:
    if not r.top_errors:
        return Section("Errors", [Note("No errors in this range.")])
    return Section(
        "Errors",
        [
            Note("Most frequent (by event and code):"),
            _table(
                "Event | Code | Events | Users | Last seen",
                [
                    (
                        e.name,
                        e.code or MISSING,
                        show_count(e.events),
                        show_count(e.users),
                        show_time(e.last_seen),
                    )
                    for e in r.top_errors
                ],
                "ttnnt",
            ),
            Note("Most recent:"),
            _table(
                "Time | Event | Code | Component | Message",
                [
                    (
                        show_time(e.timestamp),
                        e.name,
                        e.code or MISSING,
                        e.component or MISSING,
                        e.message or MISSING,
                    )
                    for e in r.recent_errors
                ],
                "ttttt",
            ),
        ],
    )


def _groups_table(label: str, groups: list[MissionGroup]) -> Table:
    return _table(
        f"{label} | Missions | Success rate | Duration p50 | Duration p90 | Tokens | Cost",
        [
            (
                g.name or MISSING,
                show_count(g.missions),
                show_rate(g.success_rate),
                show_ms(g.duration_p50_ms),
                show_ms(g.duration_p90_ms),
                show_count(g.total_tokens),
                show_usd(g.total_cost),
            )
            for g in groups
        ],
        "tnnnnnn",
    )


def _missions(r: Report, charts: bool) -> Section:
    m = r.missions
    if not m.available:
        return Section("Missions", [Note("This store has no mission tables.")])
    if m.total == 0:
        return Section("Missions", [Note("No missions were created in this range.")])
    blocks: list[Block] = [
        Figures(
            [
                ("Missions", show_count(m.total)),
                ("Completed", show_count(m.completed)),
                ("Failed", show_count(m.failed)),
                ("Cancelled", show_count(m.cancelled)),
                ("Abandoned", show_count(m.abandoned)),
                ("Active", show_count(m.active)),
                ("Success rate", show_rate(m.success_rate)),
                ("Duration p50", show_ms(m.duration_p50_ms)),
                ("Duration p90", show_ms(m.duration_p90_ms)),
            ]
        ),
    ]
    per_day = _table(
        "Day | Missions | Completed | Failed | Other",
        [
            (
                d.day,
                show_count(d.missions),
                show_count(d.completed),
                show_count(d.failed),
                show_count(d.other),
            )
            for d in m.per_day
        ],
        "tnnnn",
        folded=charts,
    )
    if charts:
        chart = stacked_bars(
            [d.day for d in m.per_day],
            [
                BarSeries("completed", [d.completed for d in m.per_day]),
                BarSeries("failed", [d.failed for d in m.per_day]),
                BarSeries("other", [d.other for d in m.per_day]),
            ],
            title="Missions per day by outcome",
        )
        blocks += [Chart(chart), per_day]
    blocks += [
        Note("By backend:"),
        _groups_table("Backend", m.by_backend),
        Note("By model:"),
        _groups_table("Model", m.by_model),
    ]
    if not charts:
        blocks += [Note("Per day:"), per_day]
    return Section("Missions", blocks)


def _tokens(r: Report, charts: bool) -> Section:
    usage = r.token_usage
    if not usage:
        return Section("Token usage and cost by model", [Note("No LLM calls in this range.")])
    blocks: list[Block] = []
    if charts:
        blocks.append(
            Chart(
                horizontal_bars(
                    [(u.model, u.cost_usd) for u in usage],
                    title="LLM cost by model (USD)",
                    value_format=show_usd,
                )
            )
        )
    blocks.append(
        _table(
            "Model | Calls | Input | Output | Cache read | Cache creation | Reasoning | "
            "Total tokens | Cost | Unpriced calls",
            [
                (
                    u.model,
                    show_count(u.calls),
                    show_count(u.input_tokens),
                    show_count(u.output_tokens),
                    show_count(u.cache_read_tokens),
                    show_count(u.cache_creation_tokens),
                    show_count(u.reasoning_tokens),
                    show_count(u.total_tokens),
                    show_usd(u.cost_usd),
                    show_count(u.unpriced_calls),
                )
                for u in usage
            ],
            "tnnnnnnnnn",
        )
    )
    blocks.append(
        Note(
            "Cache tokens are part of input tokens and reasoning tokens part of output "
            "tokens; the cost sums priced calls only."
        )
    )
    return Section("Token usage and cost by model", blocks)


def _alerts(r: Report) -> Section:
    a = r.alerts
    if not a.available:
        return Section("Alerts", [Note("This store has no alert tables.")])
    if not a.rules and not a.changes:
        return Section("Alerts", [Note("No alert rule has been evaluated on this store.")])
    blocks: list[Block] = [
        Note(
            f"{show_count(a.firings_in_range)} firings and {show_count(a.changes_in_range)} "
            "state changes in this range."
        ),
        _table(
            "Rule | Health | Evaluations | Errors | Firing now | Pending now | "
            "Fired in range | Last fired",
            [
                (
                    rule.rule,
                    rule.health if rule.last_error is None else f"{rule.health}: {rule.last_error}",
                    show_count(rule.evaluations),
                    show_count(rule.errors),
                    show_count(rule.firing_now),
                    show_count(rule.pending_now),
                    show_count(rule.fired_in_range),
                    show_time(rule.last_fired_at),
                )
                for rule in a.rules
            ],
            "ttnnnnnt",
        ),
    ]
    if a.changes:
        shown = len(a.changes)
        blocks += [
            Note(f"Latest state changes ({shown} of {show_count(a.changes_in_range)}):"),
            _table(
                "Time | Rule | Labels | Change | Value | Message",
                [
                    (
                        show_time(c.at),
                        c.rule,
                        json.dumps(c.labels, sort_keys=True) if c.labels else MISSING,
                        f"{c.from_state} → {c.to_state}",
                        MISSING if c.value is None else f"{c.value:g}",
                        c.message or MISSING,
                    )
                    for c in a.changes
                ],
                "ttttnt",
            ),
        ]
    return Section("Alerts", blocks)


def layout(report: Report, *, charts: bool) -> list[Section]:
    """The report's sections in reading order; with ``charts``, SVG charts included."""
    return [
        _summary(report),
        _trends(report, charts),
        _events(report),
        _errors(report),
        _missions(report, charts),
        _tokens(report, charts),
        _alerts(report),
    ]
