"""``tachimeter alerts``: check rule files, list live alerts, show alert history.

The database is ``--db`` if given, else ``storage.path`` of the configuration. Reading
commands open it read-only.

    tachimeter alerts check alerts.toml            # validate (metrics checked with --db)
    tachimeter alerts list                         # live alerts and rule health
    tachimeter alerts history --since 1d --rule HighErrorRate
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["app"]

app = typer.Typer(
    rich_markup_mode="markdown",
    name="alerts",
    help="Check alert rule files, list live alerts, show alert history.\n\n"
    "Example: tachimeter alerts check alerts.toml --db ./analytics.db",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DbOption = Annotated[
    str | None,
    typer.Option(
        "--store", "--db", help="The database file (default: storage.path of the configuration)."
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _database(db: str | None, *, required: bool) -> Path | None:
    from tachimeter.config.sources import load_config

    path = Path(db) if db is not None else Path(load_config().storage.path)
    path = path.expanduser()
    if path.is_file():
        return path
    if required:
        typer.echo(f"error: no database at {path}; pass --db", err=True)
        raise typer.Exit(2)
    return None


def _reader(path: Path) -> Any:
    import sqlite3

    return sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)


def _show_time(value: dt.datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def _show_value(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def _labels(labels: dict[str, str]) -> str:
    return ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))


@app.command()
def check(
    file: Annotated[Path, typer.Argument(help="The TOML rule file.", exists=False)],
    db: Annotated[
        str | None,
        typer.Option("--db", help="Check metric names against this database's catalog."),
    ] = None,
) -> None:
    """Validate a rule file: keys, durations, operators, channels and, with --db, metrics.

    Custom conditions name functions registered in code; their names are not checked
    here. Example: tachimeter alerts check alerts.toml --db ./analytics.db
    """
    from rich.table import Table

    from tachimeter.alerts.durations import format_duration
    from tachimeter.alerts.loader import load_rules
    from tachimeter.alerts.sources import metric_catalog
    from tachimeter.cli.output import plain_console
    from tachimeter.errors import TachimeterError

    catalog = None
    if db is not None:
        path = _database(db, required=True)
        assert path is not None
        conn = _reader(path)
        try:
            catalog = metric_catalog(conn)
        finally:
            conn.close()
    try:
        loaded = load_rules(file, metrics=catalog)
    except TachimeterError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    table = Table(title=f"{file}: {len(loaded.rules)} rules, {len(loaded.channels)} channels")
    for column in ("rule", "severity", "condition", "for", "channels"):
        table.add_column(column)
    for rule in loaded.rules:
        table.add_row(
            rule.name,
            rule.severity.value,
            rule.describe(),
            format_duration(rule.for_),
            ", ".join(rule.channels) or "all",
        )
    plain_console().print(table)
    typer.echo("ok")


@app.command("list")
def list_alerts(db: DbOption = None, as_json: JsonOption = False) -> None:
    """Live alerts (pending, firing, recently resolved) and the health of each rule.

    Example: tachimeter alerts list --db ./analytics.db
    """
    from tachimeter.alerts.history import read_alert_states, read_rule_health

    path = _database(db, required=True)
    assert path is not None
    conn = _reader(path)
    try:
        states = read_alert_states(conn)
        health = read_rule_health(conn)
    finally:
        conn.close()
    if as_json:
        import msgspec

        typer.echo(
            json.dumps(
                {"alerts": msgspec.to_builtins(states), "rules": msgspec.to_builtins(health)},
                indent=2,
            )
        )
        return
    from rich.table import Table

    from tachimeter.cli.output import plain_console

    console = plain_console()
    alerts = Table(title=f"alerts in {path}")
    for column in ("rule", "labels", "state", "value", "since"):
        alerts.add_column(column)
    for a in states:
        since = a.resolved_at or a.fired_at or a.active_at
        alerts.add_row(
            a.rule, _labels(a.labels), a.state.value, _show_value(a.value), _show_time(since)
        )
    console.print(alerts)
    rules = Table(title="rules")
    for column in ("rule", "health", "evaluations", "errors", "last evaluated", "last error"):
        rules.add_column(column)
    for h in health:
        rules.add_row(
            h.rule,
            h.health,
            str(h.evaluations_total),
            str(h.errors_total),
            _show_time(h.last_evaluated_at),
            h.last_error or "",
        )
    console.print(rules)


@app.command()
def history(
    db: DbOption = None,
    rule: Annotated[str | None, typer.Option(help="Only this rule.")] = None,
    since: Annotated[
        str | None, typer.Option(help="Only changes from this time: ISO-8601 or 1h, 7d ago.")
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many changes.", min=1)] = 50,
    as_json: JsonOption = False,
) -> None:
    """Alert state changes, newest first, with the value that caused each.

    Example: tachimeter alerts history --since 1d --rule HighErrorRate
    """
    from tachimeter.alerts.history import events_to_builtins, read_alert_events
    from tachimeter.cli.options import parse_time, reported_errors

    path = _database(db, required=True)
    assert path is not None
    with reported_errors():
        start = None if since is None else parse_time(since, "--since")
        conn = _reader(path)
        try:
            events = read_alert_events(conn, rule=rule, since=start, limit=limit)
        finally:
            conn.close()
    if as_json:
        typer.echo(json.dumps(events_to_builtins(events), indent=2))
        return
    from rich.table import Table

    from tachimeter.cli.output import plain_console

    table = Table(title=f"alert history in {path}")
    for column in ("at", "rule", "labels", "change", "value", "message"):
        table.add_column(column)
    for e in events:
        table.add_row(
            _show_time(e.at),
            e.rule,
            _labels(e.labels),
            f"{e.from_state.value} -> {e.to_state.value}",
            _show_value(e.value),
            e.message or "",
        )
    plain_console().print(table)
