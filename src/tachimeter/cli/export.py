"""``tachimeter export``: events, metric samples or missions as CSV, JSON lines, Parquet or
OpenMetrics, streamed (memory stays flat however large the store).

Registered on the main app with ``app.command("export")(export)``; the work is in
``tachimeter.export`` (docs/reports.md).
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Final

import typer

from tachimeter.cli.options import (
    StoreOption,
    database_file,
    parse_time,
    read_store,
    reported_errors,
)

__all__ = ["export"]


class ExportWhat(enum.StrEnum):
    """What ``tachimeter export`` exports."""

    events = "events"
    metrics = "metrics"
    missions = "missions"


class ExportFormat(enum.StrEnum):
    """Formats of ``tachimeter export``."""

    csv = "csv"
    jsonl = "jsonl"
    parquet = "parquet"
    openmetrics = "openmetrics"


_SUFFIXES: Final = {
    ".csv": ExportFormat.csv,
    ".jsonl": ExportFormat.jsonl,
    ".ndjson": ExportFormat.jsonl,
    ".parquet": ExportFormat.parquet,
    ".om": ExportFormat.openmetrics,
}


def export(
    what: Annotated[ExportWhat, typer.Option("--what", "-w", help="What to export.")],
    store: StoreOption = None,
    format: Annotated[
        ExportFormat | None,
        typer.Option(
            "--format",
            "-f",
            help="Output format (default: from --out's suffix, else csv); openmetrics is "
            "for metrics only.",
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            help="From this time (default: the first row): ISO-8601 (2025-03-01, "
            "2025-03-01T12:00Z) or 7d, 12h ago."
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(help="Until this time, excluded (default: the last row): ISO-8601, now, 1d."),
    ] = None,
    event: Annotated[
        list[str] | None, typer.Option(help="Only events of this name (repeatable).")
    ] = None,
    metric: Annotated[
        list[str] | None, typer.Option(help="Only metrics of this name (repeatable).")
    ] = None,
    out: Annotated[
        str, typer.Option("--out", "-o", help="Write to this file, or - for stdout.")
    ] = "-",
    chunk_rows: Annotated[
        int, typer.Option(min=1, help="Rows read and written at a time (bounds memory).")
    ] = 5000,
) -> None:
    """Export events (by timestamp), metric samples (by sample time) or missions (by
    creation time) of a time range, streamed chunk by chunk. JSON lines of events have
    the shape the JSONL sink writes, so they can be ingested again; OpenMetrics carries
    timestamps (for promtool tsdb create-blocks-from openmetrics) and ends with # EOF.

    Example: tachimeter export --what events --since 7d --event tool_invoked -o tools.jsonl

    Example: tachimeter export --what metrics --format openmetrics > metrics.om

    Example: tachimeter export --what missions --since 2025-03-01 -o missions.parquet
    """
    from tachimeter.cli.destinations import open_destination
    from tachimeter.export import export as export_rows
    from tachimeter.model.timestamps import utc_now

    chosen = format or _SUFFIXES.get(Path(out).suffix.lower(), ExportFormat.csv)
    with reported_errors():
        now = utc_now()
        start = None if since is None else parse_time(since, "--since", now=now)
        end = None if until is None else parse_time(until, "--until", now=now)
        with read_store(store) as conn:
            path = database_file(conn)
            with open_destination(out, binary=chosen is ExportFormat.parquet) as stream:
                result = export_rows(
                    conn,
                    stream,
                    what=what.value,
                    format=chosen.value,
                    since=start,
                    until=end,
                    events=event or (),
                    metrics=metric or (),
                    chunk_rows=chunk_rows,
                )
    unit = "samples" if what is ExportWhat.metrics else what.value
    skipped = f"; {result.skipped:,} skipped (not representable in {chosen})"
    typer.echo(
        f"exported {result.rows:,} {unit} of {path} to {'stdout' if out == '-' else out} "
        f"as {chosen}" + (skipped if result.skipped else ""),
        err=True,
    )
