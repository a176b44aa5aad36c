"""``tachimeter migrate``: show, apply and revert the store's schema migrations.

The database is ``--store`` (or ``--db``) if given, else ``storage.path`` from the
configuration (file and environment, as the library reads it). Opening never applies
anything here: ``up`` does, and is the one command that creates a missing store.

    tachimeter migrate status
    tachimeter migrate up            # everything pending
    tachimeter migrate up 2          # up to version 2
    tachimeter migrate down 1 --yes  # revert every migration above 1 (drops their data)
    tachimeter migrate down          # revert the newest one (asks first)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from tachimeter.cli.options import StoreOption, existing_store, reported_errors, store_path

if TYPE_CHECKING:  # imported when a command runs: `tachimeter --help` stays fast
    from tachimeter.store.sqlite import SQLiteStore

__all__ = ["app"]

app = typer.Typer(
    rich_markup_mode="markdown",
    name="migrate",
    help="Show, apply and revert the store's schema migrations.\n\n"
    "Example: tachimeter migrate status --db ./analytics.db",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _open(db: str | None, *, create: bool = False) -> SQLiteStore:
    """The store, never migrated on opening; unless ``create``, it must exist (a mistyped
    path is an error, not a new empty file)."""
    from tachimeter.config.sources import load_config
    from tachimeter.store.sqlite import SQLiteStore

    path = store_path(db) if create else existing_store(db)
    overrides: dict[str, Any] = {"storage.path": str(path)}
    return SQLiteStore(None, load_config(**overrides), migrate=False)


@app.command()
def status(db: StoreOption = None) -> None:
    """List every migration: applied (when), pending, changed or unknown.

    Example: tachimeter migrate status --db ./analytics.db
    """
    from rich.table import Table

    from tachimeter.cli.output import plain_console

    with reported_errors(), _open(db) as store:
        states = store.migration_status()
        path = store.path
    table = Table(title=f"migrations of {path}")
    for column in ("version", "name", "state", "applied at"):
        table.add_column(column)
    for state in states:
        table.add_row(str(state.version), state.name, state.state, state.applied_at or "")
    plain_console().print(table)


@app.command()
def up(
    target: Annotated[
        int | None, typer.Argument(help="Apply up to this version (default: all).")
    ] = None,
    db: StoreOption = None,
) -> None:
    """Apply pending migrations, each in its own transaction (creates the store if need be).

    Example: tachimeter migrate up
    """
    with reported_errors(), _open(db, create=True) as store:
        applied = store.migrate(target)
        version = store.schema_version()
    done = ", ".join(map(str, applied)) if applied else "nothing to apply"
    typer.echo(f"applied: {done}; schema version {version}")


@app.command()
def down(
    target: Annotated[
        int | None,
        typer.Argument(help="Revert every migration above this version (default: the newest)."),
    ] = None,
    db: StoreOption = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Revert without asking (their tables are dropped).")
    ] = False,
) -> None:
    """Revert migrations, newest first, each in its own transaction. A reverted
    migration drops what it created, data included (reverting 1 drops the events), so
    this asks first; --yes does not ask.

    Example: tachimeter migrate down 2 --yes
    """
    import sys

    with reported_errors(), _open(db) as store:
        applied = [s.version for s in store.migration_status() if s.applied]
        if target is None:
            target = applied[-2] if len(applied) > 1 else 0
        doomed = [v for v in reversed(applied) if v > target]
        if doomed and not yes:
            what = ", ".join(map(str, doomed))
            if not sys.stdin.isatty():
                typer.echo(
                    f"error: reverting migrations {what} of {store.path} drops their tables "
                    "and data; pass --yes to revert them",
                    err=True,
                )
                raise typer.Exit(2)
            typer.confirm(
                f"Revert migrations {what} of {store.path}? Their tables and data are dropped",
                abort=True,
            )
        reverted = store.revert(target)
        version = store.schema_version()
    done = ", ".join(map(str, reverted)) if reverted else "nothing to revert"
    typer.echo(f"reverted: {done}; schema version {version}")
