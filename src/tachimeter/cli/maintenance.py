"""``tachimeter retention run`` and ``tachimeter rebuild``: keeping a store tidy and exact.

Both open the existing store named by ``--store`` (or ``--db``; default: the configured
``storage.path``), apply pending migrations first, and print what they did.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from typing import Annotated

import typer
from rich.table import Table

from tachimeter.cli.options import StoreOption, existing_store, reported_errors
from tachimeter.cli.output import plain_console

__all__ = ["rebuild", "retention_app"]

retention_app = typer.Typer(
    rich_markup_mode="markdown",
    help="Apply the configured retention: delete data past its age, per table and tier.\n\n"
    "Example: tachimeter retention run --db ./analytics.db",
    no_args_is_help=True,
)


def _open(db: str | None) -> tuple[str, sqlite3.Connection]:
    """A writable connection to an existing store, its pending migrations applied."""
    from tachimeter.config.sources import load_config
    from tachimeter.store.sqlite import SQLiteStore

    path = str(existing_store(db))  # a mistyped path is an error, not a new empty store
    SQLiteStore(path, load_config()).close()  # applies pending migrations
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.execute("PRAGMA busy_timeout = 30000")
    return path, conn


@retention_app.command("run")
def retention_run(
    db: StoreOption = None,
    vacuum: Annotated[bool, typer.Option(help="VACUUM afterwards (locks the file).")] = False,
) -> None:
    """Delete events, summaries, metric points and rollups, and finished missions past
    their retention (retention.days in tachimeter.toml), in short batches.

    Example: tachimeter retention run --db ~/.local/share/tachimeter/analytics.db
    """
    from tachimeter.config.sources import load_config
    from tachimeter.missions.projection import delete_missions
    from tachimeter.store.rollups import run_timeseries_retention
    from tachimeter.store.summaries import run_retention

    config = load_config()
    with reported_errors():
        path, conn = _open(db)
    now = dt.datetime.now(dt.UTC)
    try:
        events = run_retention(conn, config, now, vacuum=False)
        series = run_timeseries_retention(conn, config, now)
        conn.execute("BEGIN IMMEDIATE")
        missions = delete_missions(conn, now - dt.timedelta(days=config.retention.days["missions"]))
        conn.execute("COMMIT")
        if vacuum:
            conn.execute("VACUUM")
    finally:
        conn.close()
    table = Table(title=f"retention applied to {path}")
    table.add_column("what")
    table.add_column("rows deleted", justify="right")
    for item in events.tables:
        table.add_row(item.table, f"{item.deleted:,}")
    table.add_row("metric chunks", f"{series.chunks:,}")
    table.add_row("metric head points", f"{series.head_points:,}")
    for period, count in sorted(series.aggregates.items()):
        table.add_row(f"metric rollups ({period})", f"{count:,}")
    table.add_row("missions", f"{missions:,}")
    plain_console().print(table)


def rebuild(
    db: StoreOption = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Rebuild even when retention deleted events the summaries count."
        ),
    ] = False,
) -> None:
    """Recompute every derived table (summaries, missions, time series from events) from
    the raw events, in one transaction.

    Refused when retention has deleted raw events that the summaries or missions still
    count (they are kept longer): the rebuild would lose that history. --force rebuilds
    anyway.

    Example: tachimeter rebuild --db analytics.db
    """
    from tachimeter.config.sources import load_config
    from tachimeter.defaults import default_projections
    from tachimeter.errors import StoreError
    from tachimeter.store.summaries import events_missing_for_rebuild

    with reported_errors():
        path, conn = _open(db)
        missing = None if force else events_missing_for_rebuild(conn)
        if missing is not None:
            conn.close()
            raise StoreError(f"not rebuilt: {missing}; pass --force to rebuild anyway")
    try:
        conn.execute("BEGIN IMMEDIATE")
        names = []
        for projection in default_projections(load_config()):
            projection.rebuild(conn)
            names.append(projection.name)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        conn.close()
    plain_console().print(f"rebuilt {', '.join(names)} in {path}")
