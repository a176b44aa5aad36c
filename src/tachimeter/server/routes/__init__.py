"""The HTTP routes, one module per area; :func:`handlers` lists them for the app."""

from __future__ import annotations

from typing import Any

__all__ = ["handlers"]


def handlers(*, dashboard: bool = True) -> list[Any]:
    """Every route handler of the server (the dashboard's pages and files if asked)."""
    from tachimeter.server.routes.analysis import ANALYSIS_HANDLERS
    from tachimeter.server.routes.events import EVENT_HANDLERS
    from tachimeter.server.routes.ingest import ingest_events
    from tachimeter.server.routes.metric_ingest import ingest_metrics
    from tachimeter.server.routes.mission_ingest import MISSION_INGEST_HANDLERS
    from tachimeter.server.routes.ops import healthz, metrics, openapi_json, readyz, stream_events
    from tachimeter.server.routes.overview import OVERVIEW_HANDLERS

    out: list[Any] = [
        ingest_events,
        ingest_metrics,
        *MISSION_INGEST_HANDLERS,
        healthz,
        readyz,
        metrics,
        openapi_json,
        stream_events,
        *EVENT_HANDLERS,
        *OVERVIEW_HANDLERS,
        *ANALYSIS_HANDLERS,
    ]
    if dashboard:
        from tachimeter.server.routes.dashboard import DASHBOARD_HANDLERS

        out += DASHBOARD_HANDLERS
    return out
