"""The ``tachimeter`` command line (typer + rich).

Errors print one clear line and exit non-zero; every command has ``--help``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from tachimeter.model.data import library_version

__all__ = ["app", "main"]

app = typer.Typer(
    name="tachimeter",
    help="Local-first analytics and telemetry for AI-agent systems.",
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
    events: Annotated[int, typer.Option(help="How many events to generate.")] = 5_000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same data).")] = 7,
    out: Annotated[
        str | None,
        typer.Option(help="Also write the sanitized events as JSON lines to this file."),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(help="Also fill this SQLite store with 30 days of events and missions."),
    ] = None,
    missions: Annotated[int, typer.Option(help="Missions to track into --store.")] = 400,
    serve: Annotated[
        bool, typer.Option(help="Then serve the dashboard over --store (until Ctrl-C).")
    ] = False,
    port: Annotated[int, typer.Option(help="Port for --serve.")] = 8717,
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
    """Entry point of the ``tachimeter`` console script."""
    from tachimeter.errors import TachimeterError

    try:
        app()
    except TachimeterError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None


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
