"""``tachimeter serve``: the HTTP API, live stream and dashboard over a store.

Registered on the main app with ``app.command("serve")(serve)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["serve"]


def serve(
    host: Annotated[
        str | None,
        typer.Option(help="Address to listen on (default 127.0.0.1; others need API keys)."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(help="Port (default 8717; 0 picks a free one).", min=0, max=65_535),
    ] = None,
    db: Annotated[
        Path | None,
        typer.Option(
            "--store",
            "--db",
            help="The SQLite store (default: storage.path of the configuration).",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="Configuration file or directory (default: ./tachimeter.toml)."),
    ] = None,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(help="Allow browser calls from this origin (repeatable)."),
    ] = None,
    log_level: Annotated[
        str, typer.Option(help="uvicorn log level: critical, error, warning, info, debug.")
    ] = "info",
    alert_rules: Annotated[
        str | None,
        typer.Option(help="Alert rule file (TOML, docs/alerts.md) to evaluate while serving."),
    ] = None,
) -> None:
    """Serve ingest, queries, the live stream, /metrics and the dashboard.

    Example: tachimeter serve  (then open http://127.0.0.1:8717)

    Example: tachimeter serve --db ./analytics.db --port 9000

    Example: TACHIMETER_API_KEY=tk_agents_1:ingest,tk_me_12345 tachimeter serve --host 0.0.0.0
    """
    from tachimeter.config.sources import load_config
    from tachimeter.server.runner import run_server
    from tachimeter.server.settings import load_server_settings

    analytics = load_config(config)
    settings = load_server_settings(
        config,
        host=host,
        port=port,
        cors_origins=list(cors_origin) if cors_origin else None,
        alert_rules=alert_rules,
    )
    run_server(
        store_path=db if db is not None else analytics.storage.path,
        settings=settings,
        config=analytics,
        log_level=log_level,
    )
