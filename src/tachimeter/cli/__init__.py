"""The ``tachimeter`` command line (typer + rich).

Errors print one clear line and exit non-zero; every command has ``--help``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from tachimeter.model.data import library_version

__all__ = ["app", "main"]

app = typer.Typer(
    rich_markup_mode="markdown",
    name="tachimeter",
    help="Local-first analytics and telemetry for AI-agent systems.\n\n"
    "Example: tachimeter demo --store .demo/analytics.db --serve\n\n"
    "Example: tachimeter ingest events.jsonl --store analytics.db\n\n"
    "Example: tachimeter query events --event tool_invoked --since 1d --store analytics.db\n\n"
    "Example: tachimeter report --since 7d --store analytics.db -o report.html",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tachimeter {library_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Local-first analytics and telemetry for AI-agent systems."""


@app.command()
def demo(
    events: Annotated[int, typer.Option(help="How many events to generate.", min=1)] = 5_000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same data).")] = 7,
    out: Annotated[
        str | None,
        typer.Option(help="Also write the sanitized events as JSON lines to this file."),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(help="Also fill this SQLite store with 30 days of events and missions."),
    ] = None,
    missions: Annotated[int, typer.Option(help="Missions to track into --store.", min=0)] = 400,
    serve: Annotated[
        bool, typer.Option(help="Then serve the dashboard over --store (until Ctrl-C).")
    ] = False,
    port: Annotated[int, typer.Option(help="Port for --serve.", min=1, max=65_535)] = 8717,
) -> None:
    """Generate realistic agent events, validate, scrub and encode them, and summarize;
    with --store, fill a store with 30 days of them plus tracked missions; with --serve,
    open the dashboard on it.

    Example: tachimeter demo --events 20000 --out /tmp/events.jsonl

    Example: tachimeter demo --store .demo/analytics.db --serve
    """
    from tachimeter.cli.demo import run_demo, seed_store

    run_demo(events=events, seed=seed, out=out)
    if store is not None:
        import os

        os.makedirs(os.path.dirname(os.path.abspath(store)), exist_ok=True)
        seed_store(store, events=events, missions=missions, seed=seed)
        typer.echo(f"store filled: {store}")
        if serve:
            from tachimeter.config.sources import load_config
            from tachimeter.server.runner import run_server
            from tachimeter.server.settings import load_server_settings

            # The demo's rules (written next to the store by seed_store) are evaluated live.
            rules = os.path.join(os.path.dirname(os.path.abspath(store)), "alerts.toml")
            run_server(
                store_path=store,
                settings=load_server_settings(
                    port=port, alert_rules=rules if os.path.exists(rules) else None
                ),
                config=load_config(storage={"path": store}),
            )


def main() -> None:
    """Entry point of the ``tachimeter`` console script.

    Our errors and the parser's usage errors (a bad choice, a missing argument, an unknown
    option) print one ``error: ...`` line and exit 2.
    """
    import importlib

    from tachimeter.errors import TachimeterError

    # click's exception classes: typer 0.29 vendors click, earlier versions use the click
    # package; typer.BadParameter is theirs either way.
    errors = importlib.import_module(typer.BadParameter.__module__)
    try:
        # Not standalone: usage errors are raised rather than printed in a box, and the
        # code of a typer.Exit (--help, --version, a command's own exit) is returned.
        code = app(standalone_mode=False)
    except TachimeterError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None
    except errors.ClickException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            # `tachimeter query` alone: the help is the answer (rich printed it already).
            if exc.format_message():
                exc.show()
            raise SystemExit(2) from None
        message = " ".join(exc.format_message().replace("Value error, ", "").split())
        if message[1:2].islower():
            message = message[0].lower() + message[1:]
        if isinstance(exc, errors.UsageError):
            command = exc.ctx.command_path if exc.ctx is not None else "tachimeter"
            message = f"{message.rstrip('.')} (see {command} --help)"
        typer.echo(f"error: {message}", err=True)
        raise SystemExit(exc.exit_code) from None
    except typer.Abort:
        typer.echo("aborted", err=True)
        raise SystemExit(1) from None
    raise SystemExit(code if isinstance(code, int) else 0)


# Commands defined in their own modules (cheap to import: their work is imported lazily).
from tachimeter.cli.alerts import app as _alerts  # noqa: E402
from tachimeter.cli.export import export as _export  # noqa: E402
from tachimeter.cli.ingest import ingest as _ingest  # noqa: E402
from tachimeter.cli.maintenance import rebuild as _rebuild  # noqa: E402
from tachimeter.cli.maintenance import retention_app as _retention  # noqa: E402
from tachimeter.cli.migrate import app as _migrate  # noqa: E402
from tachimeter.cli.missions import app as _missions  # noqa: E402
from tachimeter.cli.query import app as _query  # noqa: E402
from tachimeter.cli.report import report as _report  # noqa: E402
from tachimeter.cli.serve import serve as _serve  # noqa: E402

app.command("serve")(_serve)
app.add_typer(_alerts, name="alerts")
app.add_typer(_migrate, name="migrate")
app.add_typer(_retention, name="retention")
app.command("rebuild")(_rebuild)
app.command("ingest")(_ingest)
app.add_typer(_query, name="query")
app.add_typer(_missions, name="missions")
app.command("report")(_report)
app.command("export")(_export)
