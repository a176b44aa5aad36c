"""``tachimeter serve``: ingest, queries, live stream, metrics and the dashboard (docs/server.md).

Internal layer: imported only by ``tachimeter serve`` and by applications that embed the
server, never by ``import tachimeter``.

>>> from tachimeter.server import ServerSettings
>>> ServerSettings().port
8717
"""

from __future__ import annotations

from tachimeter.server.settings import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    ApiKeySettings,
    ServerSettings,
    load_server_settings,
)

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "ApiKeySettings",
    "ServerSettings",
    "load_server_settings",
]
