"""``tachimeter report``: a report of a time range as Markdown, HTML or JSON.

Registered on the main app with ``app.command("report")(report)``; the work is in
``tachimeter.report`` (docs/reports.md).
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Final

import typer

from tachimeter.cli.options import (
    StoreOption,
    database_file,
    read_store,
    reported_errors,
    time_range,
)

__all__ = ["report"]


class ReportFormat(enum.StrEnum):
    """Output formats of ``tachimeter report``."""

    markdown = "markdown"
    html = "html"
    json = "json"


_SUFFIXES: Final = {
    ".md": ReportFormat.markdown,
    ".markdown": ReportFormat.markdown,
    ".html": ReportFormat.html,
    ".htm": ReportFormat.html,
    ".json": ReportFormat.json,
}


def report(
    store: StoreOption = None,
    since: Annotated[
        str,
        typer.Option(help="Start: ISO-8601 (2025-03-01, 2025-03-01T12:00Z) or 7d, 12h ago."),
    ] = "7d",
    until: Annotated[
        str | None,
        typer.Option(help="End, excluded: ISO-8601, now, or 1d ago (default: now)."),
    ] = None,
    format: Annotated[
        ReportFormat | None,
        typer.Option(
            "--format", "-f", help="Output format (default: from --out's suffix, else markdown)."
        ),
    ] = None,
    out: Annotated[
        str | None, typer.Option("--out", "-o", help="Write to this file (default: stdout).")
    ] = None,
    top: Annotated[
        int, typer.Option(min=1, max=1000, help="Rows in the top events and errors lists.")
    ] = 10,
    title: Annotated[str, typer.Option(help="The report's title.")] = "Tachimeter report",
) -> None:
    """Report on a time range: summary, events per day, top events, errors, missions
    (success rate, durations, by backend and model), token usage and cost by model, and
    alerts. HTML is one self-contained file with inline SVG charts (no script, no CDN).

    Example: tachimeter report --store .demo/analytics.db --since 30d -o report.html

    Example: tachimeter report --since 2025-03-01 --until 2025-03-08 > week.md
    """
    from tachimeter.cli.destinations import open_destination
    from tachimeter.model.timestamps import utc_now
    from tachimeter.report import build_report, render_html, render_json, render_markdown

    chosen = format or _SUFFIXES.get(Path(out or "").suffix.lower(), ReportFormat.markdown)
    with reported_errors():
        now = utc_now()
        start, end = time_range(since, until, now=now)
        assert start is not None  # --since has a default
        with read_store(store) as conn:
            path = database_file(conn)
            data = build_report(conn, start, end, top=top, title=title, store=path, now=now)
    render = {
        ReportFormat.markdown: render_markdown,
        ReportFormat.html: render_html,
        ReportFormat.json: render_json,
    }[chosen]
    with open_destination(out) as stream:
        stream.write(render(data).encode("utf-8"))
    if out not in (None, "-"):
        typer.echo(f"{chosen} report of {data.summary.events:,} events written to {out}", err=True)
