"""``create_app``: the ASGI application behind ``tachimeter serve`` (Litestar).

One process: ingest, queries, the live stream, ``/metrics``, health, OpenAPI and the
dashboard. The store is written by one thread (:class:`IngestWriter`); queries read
through the store's read-only connections on worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Final

from litestar import Litestar
from litestar.config.compression import CompressionConfig
from litestar.config.cors import CORSConfig
from litestar.enums import ScopeType
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from tachimeter.config.settings import AnalyticsConfig
from tachimeter.model.data import library_version
from tachimeter.model.timestamps import utc_now
from tachimeter.privacy import Scrubber
from tachimeter.server.ingest import IngestDecoder
from tachimeter.server.instruments import ServerInstruments
from tachimeter.server.problems import exception_handlers
from tachimeter.server.settings import ServerSettings
from tachimeter.server.state import ServerState, authorize
from tachimeter.server.stream import EventHub
from tachimeter.server.writer import IngestWriter
from tachimeter.store.projection import Projection
from tachimeter.store.sqlite import SQLiteStore

__all__ = ["create_app", "default_projections"]

_log = logging.getLogger("tachimeter.server")

# Streams, ingest and /metrics compress (or not) themselves: the compression middleware
# would buffer a stream and spend CPU on already compact bodies.
_UNCOMPRESSED: Final = ("/v1/stream", "/v1/events", "/metrics", "/static/vendor")


def default_projections() -> tuple[Projection, ...]:
    """The projections the server runs on ingest: summaries, missions, event metrics."""
    from tachimeter.missions.projection import MissionProjection
    from tachimeter.store.summaries import summary_projections
    from tachimeter.store.timeseries import EventMetricsProjection

    return (*summary_projections(), MissionProjection(), EventMetricsProjection())


def _metrics_middleware(instruments: ServerInstruments) -> Any:
    """Counts answers by route template and status, and times them (pure ASGI)."""

    def factory(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != ScopeType.HTTP:
                await app(scope, receive, send)
                return
            method = str(scope.get("method", ""))
            started = time.perf_counter()
            status = 500

            async def send_wrapper(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    route = scope.get("path_template") or "unmatched"
                    instruments.request_seconds.labels(route=route).observe(
                        time.perf_counter() - started
                    )
                await send(message)

            try:
                await app(scope, receive, send_wrapper)
            finally:
                instruments.requests.labels(
                    route=scope.get("path_template") or "unmatched",
                    method=method,
                    status=str(status),
                ).inc()

        return middleware

    return factory


def create_app(
    store: SQLiteStore | str | os.PathLike[str] | None = None,
    *,
    settings: ServerSettings | None = None,
    config: AnalyticsConfig | None = None,
    projections: Sequence[Projection] | None = None,
    instruments: ServerInstruments | None = None,
    dashboard: bool = True,
) -> Litestar:
    """The server's ASGI app over ``store`` (a store, a path, or ``config.storage.path``).

    A store passed in stays open when the app shuts down; one opened from a path is
    closed. ``projections`` default to :func:`default_projections`.

    >>> import tempfile, pathlib
    >>> app = create_app(pathlib.Path(tempfile.mkdtemp()) / "a.db")
    >>> sorted(r.path for r in app.routes if r.path.startswith("/v1/events"))
    ['/v1/events', '/v1/events/names', '/v1/events/search', '/v1/events/{event_id:str}']
    """
    config = config or AnalyticsConfig.default()
    settings = settings or ServerSettings()
    owns_store = not isinstance(store, SQLiteStore)
    if isinstance(store, SQLiteStore):
        opened = store
    else:
        opened = SQLiteStore(store if store is not None else config.storage.path, config)
    hub = EventHub(replay=settings.stream_replay_events)
    writer = IngestWriter(
        opened,
        default_projections() if projections is None else projections,
        on_committed=hub.publish_threadsafe,
    )
    privacy = config.privacy
    # User ids are not hashed here: events from a Tachimeter collector were hashed by it
    # (per its own privacy settings), and hashing is not idempotent.
    scrubber = Scrubber(
        extra_patterns=privacy.extra_patterns,
        drop_keys=privacy.drop_keys,
        sensitive_key_action=privacy.sensitive_key_action,
    )
    instruments = instruments or ServerInstruments()
    state = ServerState(
        store=opened,
        writer=writer,
        hub=hub,
        decoder=IngestDecoder(scrubber, config.validation, max_body_bytes=settings.max_body_bytes),
        settings=settings,
        config=config,
        instruments=instruments,
        owns_store=owns_store,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        hub.attach(asyncio.get_running_loop())
        refresher = asyncio.create_task(_refresh_dashboard(state))
        alerting = _start_alerts(settings.alert_rules, opened)
        try:
            yield
        finally:
            if alerting is not None:
                await asyncio.to_thread(alerting.close, settings.shutdown_timeout)
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            hub.close()
            flushed = await asyncio.to_thread(writer.close, settings.shutdown_timeout)
            if owns_store:
                opened.close()
            _log.info("tachimeter server stopped%s", "" if flushed else " (writer timed out)")

    from tachimeter.server.routes import handlers

    route_handlers: list[Any] = list(handlers(dashboard=dashboard))
    cors = CORSConfig(allow_origins=settings.cors_origins) if settings.cors_origins else None
    app = Litestar(
        route_handlers=route_handlers,
        guards=[authorize],
        exception_handlers=exception_handlers(),
        middleware=[_metrics_middleware(instruments)],
        lifespan=[lifespan],
        cors_config=cors,
        compression_config=CompressionConfig(
            backend="gzip", minimum_size=2048, exclude=list(_UNCOMPRESSED)
        ),
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="Tachimeter",
            version=library_version(),
            description=(
                "Local-first analytics for AI-agent systems: ingest, queries, live stream. "
                "Authenticate with `Authorization: Bearer <key>` when keys are configured."
            ),
            path="/schema",
            render_plugins=[JsonRenderPlugin()],
        ),
        state=_litestar_state(state),
        debug=False,
        # The process's logging belongs to whoever runs it (the CLI, an embedding app).
        logging_config=None,
    )
    return app


def _litestar_state(state: ServerState) -> Any:
    from litestar.datastructures import State

    return State({"server": state})


# While events arrive, dashboard_metrics is refreshed this often at most (each refresh
# scans today's and yesterday's events through the timestamp index).
_BUSY_REFRESH_SECONDS: Final = 5.0


def _start_alerts(rules_path: str | None, store: Any) -> Any:
    """An AlertManager evaluating ``rules_path`` on its own thread (reads never block
    ingest: they use the store's read connections), or None without a rule file."""
    if rules_path is None:
        return None
    from tachimeter.alerts import AlertManager, load_rules

    loaded = load_rules(rules_path, source=store)
    manager = AlertManager(
        loaded.rules,
        loaded.channels,
        store=store,
        interval=loaded.interval,
        external_url=loaded.external_url,
    )
    manager.start()
    _log.info("evaluating %d alert rules from %s", len(loaded.rules), rules_path)
    return manager


async def _refresh_dashboard(state: ServerState) -> None:
    """Keep ``dashboard_metrics`` (today vs yesterday) fresh, on the writer thread: every
    few seconds while events arrive, every ``dashboard_refresh_seconds`` otherwise.

    Each refresh commits on the store's writer connection between batches: a commit on
    another connection would empty the projections' row caches, and the next batches
    would read their rows back."""
    from tachimeter.store.summaries import refresh_dashboard_metrics

    transactions = -1
    last = 0.0
    while True:
        now = time.monotonic()
        busy = state.writer.transactions != transactions
        if now - last >= state.settings.dashboard_refresh_seconds or busy:
            transactions = state.writer.transactions
            last = now
            try:
                future = state.writer.call_on_store(
                    lambda conn: refresh_dashboard_metrics(conn, utc_now())
                )
                await asyncio.wrap_future(future)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failed refresh keeps the old figures; retried later
                _log.warning("dashboard_metrics refresh failed: %s", exc)
        await asyncio.sleep(min(_BUSY_REFRESH_SECONDS, state.settings.dashboard_refresh_seconds))


def static_dir() -> Path:
    """The dashboard's files (``static/``)."""
    return Path(__file__).with_name("static")
