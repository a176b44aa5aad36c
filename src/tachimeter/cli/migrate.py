"""``tachimeter migrate``: show, apply and revert the store's schema migrations.

The database is ``--db`` if given, else ``storage.path`` from the configuration (file and
environment, as the library reads it). Opening never applies anything here: ``up`` does.

    tachimeter migrate status
    tachimeter migrate up            # everything pending
    tachimeter migrate up 2          # up to version 2
    tachimeter migrate down 1        # revert every migration above 1
    tachimeter migrate down          # revert the newest one
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:  # imported when a command runs: `tachimeter --help` stays fast
    from tachimeter.store.sqlite import SQLiteStore

__all__ = ["app"]

app = typer.Typer(
    name="migrate",
    help="Show, apply and revert the store's schema migrations.\n\n"
    "Example: tachimeter migrate status --db ./analytics.db",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DbOption = Annotated[
    str | None,
    typer.Option("--db", help="The database file (default: storage.path of the configuration)."),
]


def _open(db: str | None) -> SQLiteStore:
    from tachimeter.config.sources import load_config
    from tachimeter.store.sqlite import SQLiteStore

    overrides: dict[str, Any] = {} if db is None else {"storage.path": db}
    config = load_config(**overrides)
    return SQLiteStore(None, config, migrate=False)


@app.command()
def status(db: DbOption = None) -> None:
    """List every migration: applied (when), pending, changed or unknown.

    Example: tachimeter migrate status --db ./analytics.db
    """
    from rich.console import Console
    from rich.table import Table

    with _open(db) as store:
        states = store.migration_status()
        path = store.path
    table = Table(title=f"migrations of {path}")
    for column in ("version", "name", "state", "applied at"):
        table.add_column(column)
    for state in states:
        table.add_row(str(state.version), state.name, state.state, state.applied_at or "")
    Console().print(table)


@app.command()
def up(
    target: Annotated[
        int | None, typer.Argument(help="Apply up to this version (default: all).")
    ] = None,
    db: DbOption = None,
) -> None:
    """Apply pending migrations, each in its own transaction.

    Example: tachimeter migrate up
    """
    with _open(db) as store:
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
    db: DbOption = None,
) -> None:
    """Revert migrations, newest first, each in its own transaction.

    Example: tachimeter migrate down 2
    """
    with _open(db) as store:
        if target is None:
            applied = [s.version for s in store.migration_status() if s.applied]
            target = applied[-2] if len(applied) > 1 else 0
        reverted = store.revert(target)
        version = store.schema_version()
    done = ", ".join(map(str, reverted)) if reverted else "nothing to revert"
    typer.echo(f"reverted: {done}; schema version {version}")
