"""``ServerState``: what the request handlers share (store, writer, stream, auth, limits)."""

from __future__ import annotations

import collections
import hashlib
import threading
from typing import Any, Final

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from tachimeter.config.settings import AnalyticsConfig
from tachimeter.server.auth import (
    ANONYMOUS,
    KeyRing,
    Principal,
    RateLimiter,
    presented_key,
    retry_after_header,
)
from tachimeter.server.ingest import IngestDecoder, Problem
from tachimeter.server.instruments import ServerInstruments
from tachimeter.server.settings import Scope, ServerSettings
from tachimeter.server.stream import EventHub
from tachimeter.server.writer import IngestWriter
from tachimeter.store.sqlite import SQLiteStore

__all__ = ["ServerState", "authorize", "principal_of", "server_state"]

# Idempotency keys remembered with a digest of their body and their answer: a retried
# batch is answered as the first time. 10 000 keys cover minutes of batches from many
# clients in a few MB.
_IDEMPOTENCY_KEYS: Final = 10_000


class ServerState:
    """Everything a handler needs, built once per app (see :func:`create_app`)."""

    __slots__ = (
        "_idem_lock",
        "_idempotent",
        "config",
        "decoder",
        "hub",
        "instruments",
        "keys",
        "limiter",
        "owns_store",
        "settings",
        "store",
        "writer",
    )

    def __init__(
        self,
        *,
        store: SQLiteStore,
        writer: IngestWriter,
        hub: EventHub,
        decoder: IngestDecoder,
        settings: ServerSettings,
        config: AnalyticsConfig,
        instruments: ServerInstruments,
        owns_store: bool,
    ) -> None:
        self.store = store
        self.writer = writer
        self.hub = hub
        self.decoder = decoder
        self.settings = settings
        self.config = config
        self.instruments = instruments
        self.owns_store = owns_store
        self.keys = KeyRing(settings.api_keys)
        self.limiter = RateLimiter(
            rate=settings.rate_limit_per_second, burst=settings.rate_limit_burst
        )
        self._idem_lock = threading.Lock()
        self._idempotent: collections.OrderedDict[tuple[str, str], Any] = collections.OrderedDict()

    def remembered(self, principal: str, key: str, body: bytes) -> Any:
        """The answer given to an earlier request with this ``Idempotency-Key`` and this
        body; None for a new key. The same key with another body is a client's mistake
        (its events would be lost behind the first answer): ``Problem`` 422."""
        with self._idem_lock:
            found = self._idempotent.get((principal, key))
            if found is None:
                return None
            self._idempotent.move_to_end((principal, key))
        digest, answer = found
        if digest != _digest(body):
            raise Problem(
                422,
                "idempotency key reused",
                f"Idempotency-Key {key!r} was already used with another body; a retry must "
                "send the same body, and a new batch a new key",
            )
        return answer

    def remember(self, principal: str, key: str, body: bytes, answer: Any) -> None:
        """Keep a 2xx answer for retries of the same ``Idempotency-Key`` and body."""
        with self._idem_lock:
            self._idempotent[(principal, key)] = (_digest(body), answer)
            while len(self._idempotent) > _IDEMPOTENCY_KEYS:
                self._idempotent.popitem(last=False)


def _digest(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=16).digest()


def server_state(connection: ASGIConnection[Any, Any, Any, Any]) -> ServerState:
    """The app's :class:`ServerState`."""
    state = connection.app.state["server"]
    assert isinstance(state, ServerState)
    return state


def authorize(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Guard: the key must hold the handler's ``opt["scope"]``; then the rate limit."""
    scope: Scope | None = handler.opt.get("scope")
    if scope is None:
        return
    state = server_state(connection)
    headers = connection.headers
    principal: Principal | None = state.keys.authenticate(
        presented_key(headers.get("authorization"), headers.get("x-api-key"))
    )
    if principal is None:
        raise NotAuthorizedException(
            detail="a valid API key is required: send Authorization: Bearer <key>",
            headers={"WWW-Authenticate": 'Bearer realm="tachimeter"'},
        )
    if not principal.allows(scope):
        raise PermissionDeniedException(
            detail=f"the key {principal.name!r} lacks the {scope!r} scope this endpoint needs"
        )
    connection.scope["state"]["principal"] = principal
    if state.limiter.enabled:
        client = principal.name
        if not state.keys.enabled:
            client = connection.client.host if connection.client else "unknown"
        wait = state.limiter.take(client)
        if wait > 0:
            raise Problem(
                429,
                "too many requests",
                f"rate limit of {state.settings.rate_limit_per_second:g} requests/s "
                f"(bursts of {state.settings.rate_limit_burst}) reached for {client!r}; "
                f"retry in {retry_after_header(wait)} s",
                headers={"Retry-After": retry_after_header(wait)},
            )


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """The principal the guard authenticated (anonymous on public endpoints)."""
    found = connection.scope["state"].get("principal")
    return found if isinstance(found, Principal) else ANONYMOUS
