"""``ServerSettings``: where ``tachimeter serve`` listens, who may call it, and its limits.

Sources, lowest to highest precedence: the defaults below; the ``[server]`` table of the
configuration file (``tachimeter.toml``, or ``[tool.tachimeter.server]`` in
``pyproject.toml``, found as :func:`tachimeter.config.load_config` finds it); API keys
from ``$TACHIMETER_API_KEY``; the ``serve`` command's options (keyword arguments here).

API keys, in a file (a key's SHA-256 may stand in for the key, so the file holds no
secret)::

    [server]
    port = 8717
    cors_origins = ["http://localhost:3000"]

    [[server.api_keys]]
    name = "agents"
    key_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    scopes = ["ingest"]

or in the environment, comma-separated ``key`` or ``key:scope+scope`` entries (a bare key
has every scope)::

    TACHIMETER_API_KEY="tk_agents_1:ingest,tk_dash_1:read,tk_ops_1:read+admin"

Scopes: ``ingest`` (``POST /v1/...``), ``read`` (queries, the stream, the dashboard's
data), ``admin`` (read-only SQL, funnel definitions; it includes ``read``). With no key
configured every request is allowed, and the server refuses to listen on anything but
a loopback address.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal

import msgspec

from tachimeter.errors import ConfigError

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "ENV_API_KEY",
    "ApiKeySettings",
    "Scope",
    "ServerSettings",
    "load_server_settings",
]

Scope = Literal["ingest", "read", "admin"]
SCOPES: Final[tuple[Scope, ...]] = ("ingest", "read", "admin")

# Loopback only: a server with no API key must never be reachable from the network.
DEFAULT_HOST: Final = "127.0.0.1"
# Unassigned by IANA and unused by the common dev tools (3000, 5000, 8000, 8080, 9090).
DEFAULT_PORT: Final = 8717
ENV_API_KEY: Final = "TACHIMETER_API_KEY"
_CONFIG_FILE: Final = "tachimeter.toml"
_ENV_CONFIG_FILE: Final = "TACHIMETER_CONFIG"


class ApiKeySettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One API key: its name (for logs and metrics), the key or its SHA-256, its scopes.

    >>> ApiKeySettings(name="agents", key="tk_agents_1", scopes=["ingest"]).digest().hex()[:8]
    '3efd9735'
    """

    name: str
    key: str | None = None
    key_sha256: str | None = None
    scopes: list[Scope] = msgspec.field(default_factory=lambda: list(SCOPES))

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("server.api_keys: every key needs a non-empty name")
        if (self.key is None) == (self.key_sha256 is None):
            raise ConfigError(
                f"server.api_keys {self.name!r}: give exactly one of key and key_sha256"
            )
        if self.key is not None and (len(self.key) < 8 or self.key != self.key.strip()):
            raise ConfigError(
                f"server.api_keys {self.name!r}: a key must have at least 8 characters and "
                "no surrounding whitespace"
            )
        if self.key_sha256 is not None:
            try:
                raw = bytes.fromhex(self.key_sha256)
            except ValueError:
                raw = b""
            if len(raw) != 32:
                raise ConfigError(
                    f"server.api_keys {self.name!r}: key_sha256 must be 64 hex digits "
                    "(python -c \"import hashlib; print(hashlib.sha256(b'KEY').hexdigest())\")"
                )
        if not self.scopes:
            raise ConfigError(f"server.api_keys {self.name!r}: scopes must not be empty")

    def digest(self) -> bytes:
        """The key's SHA-256 (what is compared)."""
        if self.key is not None:
            return hashlib.sha256(self.key.encode()).digest()
        assert self.key_sha256 is not None
        return bytes.fromhex(self.key_sha256)

    def __repr__(self) -> str:
        # Never show a key: settings are printed in errors and at startup.
        return f"ApiKeySettings(name={self.name!r}, scopes={self.scopes!r})"


class ServerSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How ``tachimeter serve`` runs (the ``[server]`` table).

    >>> ServerSettings().port, ServerSettings().host
    (8717, '127.0.0.1')
    >>> ServerSettings(host="0.0.0.0")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tachimeter.errors.ConfigError: server.host = '0.0.0.0' is not a loopback address and no ...
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    api_keys: list[ApiKeySettings] = msgspec.field(default_factory=list)
    # Origins allowed to call the API from a browser page they serve; empty: CORS off
    # (the dashboard is served by this process, so it needs none).
    cors_origins: list[str] = msgspec.field(default_factory=list)
    # A request body above this is refused with 413 before it is read further, and so is
    # a gzip body that inflates past it. 10 MiB is ValidationLimits.max_batch_bytes.
    max_body_bytes: int = 10 * 1024 * 1024
    # Requests per second per API key (per client address without keys), with bursts of
    # rate_limit_burst; 0 turns rate limiting off. 200/s of 1 000-event batches is far
    # above what one SQLite file takes, so only a runaway client meets it.
    rate_limit_per_second: float = 200.0
    rate_limit_burst: int = 400
    # Events the live stream keeps for clients resuming with Last-Event-ID: about 10 s at
    # a high ingest rate, a few MB of references.
    stream_replay_events: int = 10_000
    # Seconds between heartbeats on an idle stream: under the 30-60 s idle timeouts of
    # common proxies.
    stream_heartbeat_seconds: float = 15.0
    # Seconds graceful shutdown waits for requests in flight, then for the writer to commit.
    shutdown_timeout: float = 10.0
    # Answer a batch with some invalid events by storing the valid ones (and listing the
    # rejected) instead of refusing the whole batch with 422. Per request: ?partial=true.
    partial_batches: bool = False
    # Seconds between refreshes of dashboard_metrics (today vs yesterday) by the server.
    dashboard_refresh_seconds: float = 60.0
    # An alert rule file (TOML, see docs/alerts.md): the server evaluates its rules on
    # their interval (15 s by default) against this store, and notifies their channels.
    alert_rules: str | None = None

    def __post_init__(self) -> None:
        if not self.host:
            raise ConfigError("server.host must not be empty (127.0.0.1 is the default)")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"server.port must be in [0, 65535], got {self.port}")
        for name in ("max_body_bytes", "stream_replay_events", "rate_limit_burst"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"server.{name} must be > 0, got {getattr(self, name)}")
        for name in (
            "stream_heartbeat_seconds",
            "shutdown_timeout",
            "dashboard_refresh_seconds",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"server.{name} must be > 0 seconds, got {value}")
        rate = self.rate_limit_per_second
        if not (math.isfinite(rate) and rate >= 0):
            raise ConfigError(f"server.rate_limit_per_second must be >= 0, got {rate}")
        names = [k.name for k in self.api_keys]
        if len(set(names)) != len(names):
            raise ConfigError(f"server.api_keys: names must be unique, got {names}")
        digests = [k.digest() for k in self.api_keys]
        if len(set(digests)) != len(digests):
            raise ConfigError("server.api_keys: two entries have the same key")
        for origin in self.cors_origins:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ConfigError(
                    f"server.cors_origins: {origin!r} is not an origin (scheme://host[:port], or *)"
                )
        if not self.api_keys and not is_loopback(self.host):
            raise ConfigError(
                f"server.host = {self.host!r} is not a loopback address and no API key is "
                "configured: anyone on the network could read and write your data. "
                f"Configure server.api_keys or {ENV_API_KEY}, or listen on 127.0.0.1"
            )


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``: addresses only this machine reaches."""
    import ipaddress

    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything, so it is not trusted


def parse_env_keys(value: str) -> list[ApiKeySettings]:
    """Keys from ``$TACHIMETER_API_KEY``: ``key`` or ``key:scope+scope``, comma-separated.

    >>> [(k.name, k.scopes) for k in parse_env_keys("tk_agents_1:ingest, tk_all_12345")]
    [('env-1', ['ingest']), ('env-2', ['ingest', 'read', 'admin'])]
    """
    keys: list[ApiKeySettings] = []
    for index, entry in enumerate((e.strip() for e in value.split(",")), start=1):
        if not entry:
            continue
        key, sep, scopes_text = entry.partition(":")
        scopes = [s.strip() for s in scopes_text.split("+")] if sep else list(SCOPES)
        for scope in scopes:
            if scope not in SCOPES:
                raise ConfigError(
                    f"{ENV_API_KEY} entry {index}: unknown scope {scope!r}; "
                    f"use {', '.join(SCOPES)} joined by '+' (key:ingest+read)"
                )
        keys.append(ApiKeySettings(name=f"env-{index}", key=key, scopes=scopes))  # type: ignore[arg-type]
    return keys


def _file_table(path: str | os.PathLike[str] | None, env: Mapping[str, str]) -> dict[str, Any]:
    """The ``[server]`` table of the configuration file, found as load_config finds it."""
    import tomllib

    if path is None and env.get(_ENV_CONFIG_FILE):
        path = env[_ENV_CONFIG_FILE]
    if path is None:
        candidates = [Path.cwd() / _CONFIG_FILE, Path.cwd() / "pyproject.toml"]
    else:
        named = Path(path).expanduser()
        candidates = [named / _CONFIG_FILE, named / "pyproject.toml"] if named.is_dir() else [named]
    for file in candidates:
        if not file.is_file():
            if path is not None and not Path(path).expanduser().is_dir():
                raise ConfigError(f"configuration file {file} does not exist")
            continue
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read configuration file {file}: {exc}") from exc
        if file.name == "pyproject.toml":
            data = data.get("tool", {}).get("tachimeter", {})
        table = data.get("server", {})
        if not isinstance(table, dict):
            raise ConfigError(f"server in {file} must be a table, got {table!r}")
        return table
    return {}


def load_server_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> ServerSettings:
    """Settings from defaults < the file's ``[server]`` < ``$TACHIMETER_API_KEY`` <
    ``overrides`` (None values are ignored, so CLI options can be passed through).

    >>> load_server_settings(env={"TACHIMETER_API_KEY": "tk_test_123:read"}, port=9000).port
    9000
    """
    environ = os.environ if env is None else env
    merged: dict[str, Any] = dict(_file_table(path, environ))
    if environ.get(ENV_API_KEY):
        merged["api_keys"] = [
            msgspec.to_builtins(k) for k in parse_env_keys(environ[ENV_API_KEY])
        ] + list(merged.get("api_keys", []))
    merged.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return msgspec.convert(merged, ServerSettings)
    except msgspec.ValidationError as exc:
        message = str(exc).replace("`$.", "`server.").replace("`$`", "`server`")
        raise ConfigError(f"invalid server settings: {message}") from None
