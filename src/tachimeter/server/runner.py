"""Running the app on uvicorn, with a graceful shutdown that commits what was accepted.

On SIGINT or SIGTERM: the live streams are ended at once (an idle browser tab must not
hold the shutdown), uvicorn stops accepting connections and waits up to
``shutdown_timeout`` for requests in flight (each ingest request waits for its commit),
then the app's lifespan closes the writer, which commits everything queued, and the store.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, Final, TextIO

import uvicorn

from tachimeter.config.settings import AnalyticsConfig
from tachimeter.server.app import create_app
from tachimeter.server.settings import ServerSettings, is_loopback
from tachimeter.server.state import ServerState
from tachimeter.store.projection import Projection

__all__ = ["run_server"]

_log = logging.getLogger("tachimeter.server")

# Tracked allocations (net of frees) between young collections; CPython's default is 700.
# A 1 000-event request allocates and frees tens of thousands of containers, nearly none
# of them in cycles: at 700 the server ran about 10 young collections per request.
_GC_YOUNG_THRESHOLD: Final = 10_000


class _Server(uvicorn.Server):
    """uvicorn's server, ending the live streams as soon as shutdown starts."""

    def __init__(self, config: uvicorn.Config, state: ServerState, out: TextIO) -> None:
        super().__init__(config)
        self._state = state
        self._out = out

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._state.hub.close_threadsafe()
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        await super().shutdown(sockets=sockets)
        # Said here: after a signal uvicorn re-raises it once shut down (so the exit status
        # tells how the process ended), and nothing after run() would print.
        pending = self._state.writer.pending_events
        outcome = "every accepted event committed" if not pending else f"{pending} not committed"
        print(f"tachimeter server stopped ({outcome})", file=self._out, flush=True)


def run_server(
    *,
    store_path: str | os.PathLike[str] | None = None,
    settings: ServerSettings | None = None,
    config: AnalyticsConfig | None = None,
    projections: Sequence[Projection] | None = None,
    log_level: str = "info",
    out: TextIO | None = None,
    on_started: Callable[[str], None] | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM. Prints the URL (the real port when ``port`` is 0).

    After SIGTERM or SIGINT the process ends by that signal once shut down (uvicorn
    re-raises it), as a shell expects of a program stopped by a signal.
    """
    settings = settings or ServerSettings()
    config = config or AnalyticsConfig.default()
    stream = out or sys.stdout
    app = create_app(
        store_path if store_path is not None else config.storage.path,
        settings=settings,
        config=config,
        projections=projections,
    )
    state: ServerState = app.state["server"]
    uv_config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        access_log=False,
        server_header=False,
        lifespan="on",
        timeout_graceful_shutdown=int(settings.shutdown_timeout) or 1,
        # The store is one SQLite file: one worker process owns it.
        workers=1,
    )
    server = _Server(uv_config, state, stream)
    original_startup = server.startup

    async def startup(sockets: list[Any] | None = None) -> None:
        await original_startup(sockets=sockets)
        if not server.started:
            return
        _tune_gc()
        port = settings.port
        for listener in server.servers:
            for sock in listener.sockets:
                port = sock.getsockname()[1]
                break
        host = settings.host if ":" not in settings.host else f"[{settings.host}]"
        url = f"http://{host}:{port}"
        keys = state.keys.enabled
        print(f"tachimeter server listening on {url}", file=stream, flush=True)
        print(f"  dashboard  {url}/    API docs  {url}/docs", file=stream, flush=True)
        print(f"  store      {state.store.path}", file=stream, flush=True)
        if keys:
            print(
                f"  auth       {len(settings.api_keys)} API key(s) required",
                file=stream,
                flush=True,
            )
        else:
            where = "loopback only" if is_loopback(settings.host) else settings.host
            print(
                f"  auth       no API key configured: open to this machine ({where}); "
                "set TACHIMETER_API_KEY or [server] api_keys to listen elsewhere",
                file=stream,
                flush=True,
            )
        if on_started is not None:
            on_started(url)

    server.startup = startup  # type: ignore[method-assign]
    server.run()


def _tune_gc() -> None:
    """Garbage collection for a long-running server, once the app and store are ready.

    ``bench/server.py`` (100 000 events, http_1000) measured about 7 % of the server's
    time in collections: the full ones rescanned the ~86 000 objects of the app, its
    routes and the imported modules, which live as long as the process. Frozen, they
    are never scanned again; with the higher young threshold GC time fell from about
    0.6 s to 0.1 s per 100 000 events.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(_GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
