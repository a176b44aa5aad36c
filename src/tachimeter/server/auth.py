"""API keys and scopes, checked in constant time; a per-key token-bucket rate limiter.

A key is presented as ``Authorization: Bearer <key>`` (what the ``HttpSink`` sends) or
``X-API-Key: <key>``. It is hashed with SHA-256 and compared with *every* configured
digest by :func:`hmac.compare_digest`, without stopping at a match, so neither the time
taken nor its variation says how much of a key was right or which entry matched.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Final

import msgspec

from tachimeter.server.settings import SCOPES, ApiKeySettings, Scope

__all__ = ["KeyRing", "Principal", "RateLimiter"]

# "admin" includes "read": whoever may run SQL over the store may read it.
_IMPLIED: Final[Mapping[str, frozenset[str]]] = {
    "ingest": frozenset({"ingest"}),
    "read": frozenset({"read"}),
    "admin": frozenset({"admin", "read"}),
}


class Principal(msgspec.Struct, frozen=True):
    """Who made a request: a key's name and scopes, or ``anonymous`` when no key exists.

    >>> Principal("anonymous", frozenset({"read"})).allows("read")
    True
    """

    name: str
    scopes: frozenset[str]

    def allows(self, scope: Scope) -> bool:
        """Whether the principal holds ``scope``."""
        return scope in self.scopes


ANONYMOUS: Final = Principal("anonymous", frozenset(SCOPES))


class KeyRing:
    """The configured API keys; answers who a presented key belongs to.

    >>> ring = KeyRing([ApiKeySettings(name="agents", key="tk_agents_1", scopes=["ingest"])])
    >>> ring.authenticate("tk_agents_1").name, ring.authenticate("tk_agents_2")
    ('agents', None)
    >>> KeyRing([]).authenticate(None).name
    'anonymous'
    """

    __slots__ = ("_entries",)

    def __init__(self, keys: Iterable[ApiKeySettings]) -> None:
        self._entries: tuple[tuple[bytes, Principal], ...] = tuple(
            (
                key.digest(),
                Principal(key.name, frozenset().union(*(_IMPLIED[s] for s in key.scopes))),
            )
            for key in keys
        )

    @property
    def enabled(self) -> bool:
        """True when keys are configured (and so required)."""
        return bool(self._entries)

    def authenticate(self, presented: str | None) -> Principal | None:
        """The principal of ``presented``; None when keys are required and it matches none."""
        if not self._entries:
            return ANONYMOUS
        if not presented:
            return None
        digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        found: Principal | None = None
        for expected, principal in self._entries:
            # No early exit: every entry is compared, matched or not.
            if hmac.compare_digest(digest, expected):
                found = principal
        return found


def presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key in ``Authorization: Bearer <key>``, else in ``X-API-Key``."""
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    if x_api_key and x_api_key.strip():
        return x_api_key.strip()
    return None


class RateLimiter:
    """Token buckets, one per client: ``rate`` requests per second, bursts of ``burst``.

    ``take(client)`` returns 0.0 when the request may go ahead, else the seconds until it
    could (the ``Retry-After``). Buckets of idle clients are forgotten past ``max_clients``
    (least recently seen first), which bounds memory whatever clients send.

    >>> now = [0.0]
    >>> limiter = RateLimiter(rate=1.0, burst=2, clock=lambda: now[0])
    >>> [limiter.take("k") for _ in range(3)]
    [0.0, 0.0, 1.0]
    >>> now[0] = 1.0; limiter.take("k")
    0.0
    """

    __slots__ = ("_buckets", "_burst", "_clock", "_lock", "_max_clients", "_rate")

    def __init__(
        self,
        *,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = 10_000,
    ) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._max_clients = max_clients
        self._lock = threading.Lock()
        # client -> (tokens, time of the last update)
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()

    @property
    def enabled(self) -> bool:
        """False when the rate is 0 (no limit)."""
        return self._rate > 0

    def take(self, client: str) -> float:
        """Spend one token of ``client``'s bucket; 0.0, or seconds to wait when empty."""
        if self._rate <= 0:
            return 0.0
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.pop(client, (self._burst, now))
            tokens = min(self._burst, tokens + (now - last) * self._rate)
            if tokens >= 1.0:
                self._buckets[client] = (tokens - 1.0, now)
                wait = 0.0
            else:
                self._buckets[client] = (tokens, now)
                wait = (1.0 - tokens) / self._rate
            while len(self._buckets) > self._max_clients:
                self._buckets.popitem(last=False)
        return wait


def retry_after_header(seconds: float) -> str:
    """Whole seconds for ``Retry-After``, rounded up (at least 1)."""
    return str(max(1, math.ceil(seconds)))
