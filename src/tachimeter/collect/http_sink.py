"""``HttpSink``: delivers batches to a Tachimeter server's ``POST /v1/events``.

The request (the contract a Tachimeter server implements)::

    POST <url>                          normally https://<host>/v1/events
    Content-Type: application/json
    Content-Encoding: gzip              only when the JSON body is >= gzip_min_bytes
    Authorization: Bearer <api_key>     only when an api key is configured
    User-Agent: tachimeter/<version>
    Accept: application/json
    Idempotency-Key: <batch_id>         the same on every retry of one batch

    {"batch_id": "<uuid>", "sequence": <int>, "events": [<event>, ...]}

Each ``<event>`` is the wire dict of :func:`tachimeter.model.codec.event_to_builtins`
(read it back with :func:`~tachimeter.model.codec.event_from_builtins`). ``sequence``
numbers one collector's batches and starts again in a new process; it orders, it does not
identify.

How the answer is read:

* 2xx: accepted. The events are acknowledged (DESIGN.md: "the server answered 2xx"); the
  response body is ignored.
* 408, 429, 500, 502, 503, 504, a connection error or a timeout: transient. The same
  request is retried with exponential backoff and full jitter; ``Retry-After`` (seconds
  or an HTTP-date) on 429 and 503 is a lower bound for the wait.
* any other 4xx (400, 401, 403, 413, 422, ...): the batch is rejected for good. It is not
  retried and not spooled (it would fail the same way forever); the error carries the
  status and the first 200 characters of the body.
* anything else (a redirect, which is never followed, or another 5xx): the server cannot
  take the batch now, so it is given up at once, as when retries run out.

A server de-duplicates a repeated ``Idempotency-Key`` as one batch, and should
de-duplicate events by ``id`` too: spooled events come back later in new batches.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import gzip
import http.client
import logging
import math
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Final, NamedTuple

import msgspec

from tachimeter.collect.spool import Spool
from tachimeter.errors import ConfigError, SinkError
from tachimeter.model.codec import encode_event, event_to_builtins
from tachimeter.model.data import library_version
from tachimeter.model.events import AnalyticsEvent, EventBatch

__all__ = ["HttpSink"]

_log = logging.getLogger("tachimeter.collect")

_TRANSIENT: Final = frozenset({408, 429, 500, 502, 503, 504})
_HONOURS_RETRY_AFTER: Final = frozenset({429, 503})
# Hints appended to a rejection, for the statuses a misconfiguration usually causes.
_REJECTION_HINTS: Final = {
    401: "; check the sink's api_key",
    403: "; check the sink's api_key and its permissions",
    404: "; check the sink's url (normally https://<host>/v1/events)",
    413: "; lower collection.buffer_size so batches are smaller",
}
# A failure is logged at most once per this many seconds per sink; the rest are counted.
_LOG_EVERY_SECONDS: Final = 60.0
# Error bodies are read this far: enough for the 200 characters the error quotes, even
# in 4-byte UTF-8, without reading a huge error page.
_ERROR_BODY_BYTES: Final = 1024
_ERROR_BODY_CHARS: Final = 200
# A retry started right at the deadline still gets this long to connect and be answered.
_MIN_ATTEMPT_SECONDS: Final = 1.0
# zlib's default level: nearly level 9's ratio on JSON at a fraction of the CPU.
_GZIP_LEVEL: Final = 6

_encoder: Final = msgspec.json.Encoder()


class _Answer(NamedTuple):
    """One attempt's outcome: an HTTP status, or None when no answer came."""

    status: int | None
    retry_after: float | None
    detail: str


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuses redirects: urllib would replay a POST as a body-less GET (a 2xx for data
    never sent) and forward the Authorization header to whatever host it was sent to."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: object,
        code: int,
        msg: str,
        headers: object,
        newurl: str,
    ) -> None:
        return None


class HttpSink:
    """Sends each batch to a Tachimeter server, retrying transient failures.

    ``process`` sends synchronously on the collector's delivery thread for this sink, so
    a slow or unreachable server holds up only this sink. Transient failures are retried
    until ``max_retry_seconds`` after the first attempt (one call returns within about
    ``max_retry_seconds + timeout``); then the batch's events are appended to ``spool``
    when one is set (``process`` returns: nothing is lost) or :class:`SinkError` is
    raised. A rejected batch (4xx) raises :class:`SinkError` and is not spooled.

    Registered with a collector whose ``collection.backpressure`` is ``spill``, the
    collector attaches its own spill path (``attach_spill``): undelivered events go into
    the collector's spool and are delivered again later, in this process or the next.
    Otherwise ``spool`` may name a spool of the sink's own, in a directory no collector
    uses (two :class:`Spool` objects must never share a file: each tracks its own read
    position and truncates what it has read).

    Counters (``stats()``): ``requests`` made, ``retries`` among them, ``failures``
    (batches not accepted: spooled, rejected or raised), ``sent_events`` (acknowledged),
    ``spooled_events``, ``rejected_events``, and ``bytes_sent`` (request bodies, as
    sent, that the server answered).

    >>> sink = HttpSink("https://tachimeter.example.com/v1/events", api_key="tk_live_1")
    >>> sink.name, sink.stats()["requests"]
    ('http', 0)
    """

    __slots__ = (
        "_backoff_initial",
        "_backoff_max",
        "_bytes_sent",
        "_clock",
        "_closed",
        "_failures",
        "_gzip_min_bytes",
        "_headers",
        "_last_log",
        "_lock",
        "_lost_since_flush",
        "_max_retry_seconds",
        "_opener",
        "_rejected_events",
        "_requests",
        "_retries",
        "_rng",
        "_sent_events",
        "_sleep",
        "_spill",
        "_spool",
        "_spool_lock",
        "_spooled_events",
        "_timeout",
        "_url",
        "_where",
        "name",
    )

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        timeout: float = 10.0,
        max_retry_seconds: float = 30.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 10.0,
        gzip_min_bytes: int = 1024,
        spool: Spool | None = None,
        name: str = "http",
        sleep: Callable[[float], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._where = _check_url(url)
        _check_positive("timeout", timeout)
        _check_positive("backoff_initial", backoff_initial)
        if not (math.isfinite(max_retry_seconds) and max_retry_seconds >= 0):
            raise ConfigError(f"HttpSink max_retry_seconds must be >= 0, got {max_retry_seconds}")
        if not (math.isfinite(backoff_max) and backoff_max >= backoff_initial):
            raise ConfigError(
                f"HttpSink backoff_max must be >= backoff_initial ({backoff_initial}), "
                f"got {backoff_max}"
            )
        if gzip_min_bytes < 0:
            raise ConfigError(f"HttpSink gzip_min_bytes must be >= 0, got {gzip_min_bytes}")
        if not name:
            raise ConfigError("HttpSink name must not be empty")
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"tachimeter/{library_version()}",
        }
        if api_key is not None:
            # Checked here, not by http.client at send time; the key is never echoed.
            if not api_key or any(c in api_key for c in "\r\n\0") or api_key != api_key.strip():
                raise ConfigError(
                    "HttpSink api_key must be a non-empty token without surrounding "
                    "whitespace or line breaks"
                )
            headers["Authorization"] = f"Bearer {api_key}"
        self.name = name
        self._url = url
        self._headers = headers
        self._timeout = timeout
        self._max_retry_seconds = max_retry_seconds
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._gzip_min_bytes = gzip_min_bytes
        self._spool = spool
        self._spill: Callable[[list[AnalyticsEvent]], bool] | None = None
        self._closed = threading.Event()
        # The default wait is one that close() cuts short, so shutdown never waits out
        # a backoff.
        self._sleep: Callable[[float], object] = sleep or self._closed.wait
        self._clock = clock
        self._rng = rng or random.Random()
        # Proxies come from the environment (http_proxy, no_proxy), as with requests.
        self._opener = urllib.request.build_opener(_NoRedirect)
        self._lock = threading.Lock()
        self._spool_lock = threading.Lock()  # a Spool is not thread-safe
        self._last_log: float | None = None
        self._lost_since_flush = 0
        self._requests = 0
        self._retries = 0
        self._failures = 0
        self._spooled_events = 0
        self._rejected_events = 0
        self._sent_events = 0
        self._bytes_sent = 0

    def process(self, batch: EventBatch) -> None:
        """Send the batch; retry, then spool or raise :class:`SinkError` (see the class)."""
        count = len(batch.events)
        if not count:
            return
        body = _encoder.encode(
            {
                "batch_id": str(batch.id),
                "sequence": batch.sequence,
                "events": [event_to_builtins(e) for e in batch.events],
            }
        )
        headers = dict(self._headers)
        headers["Idempotency-Key"] = str(batch.id)
        if len(body) >= self._gzip_min_bytes:
            body = gzip.compress(body, compresslevel=_GZIP_LEVEL, mtime=0)
            headers["Content-Encoding"] = "gzip"
        deadline = self._clock() + self._max_retry_seconds
        attempts = 0
        while True:
            timeout = self._timeout
            if attempts:
                timeout = min(timeout, max(deadline - self._clock(), _MIN_ATTEMPT_SECONDS))
            answer = self._send(body, headers, timeout)
            attempts += 1
            with self._lock:
                self._requests += 1
                if attempts > 1:
                    self._retries += 1
                if answer.status is not None:
                    self._bytes_sent += len(body)
            status = answer.status
            if status is not None and 200 <= status < 300:
                with self._lock:
                    self._sent_events += count
                return
            if status is not None and 400 <= status < 500 and status not in _TRANSIENT:
                self._reject(batch, answer)
            if status is not None and status not in _TRANSIENT:
                break
            remaining = deadline - self._clock()
            wait_at_least = answer.retry_after or 0.0
            # A Retry-After beyond the deadline ends it now: an earlier retry would only
            # be refused again.
            if self._closed.is_set() or remaining <= 0 or wait_at_least > remaining:
                break
            ceiling = min(self._backoff_max, self._backoff_initial * 2 ** (attempts - 1))
            delay = max(self._rng.uniform(0.0, ceiling), wait_at_least)
            self._sleep(min(delay, remaining))
            if self._closed.is_set():
                break
        self._give_up(batch, answer, attempts)

    def flush(self) -> None:
        """Raise :class:`SinkError` if events given since the last flush were lost.

        Nothing is buffered: ``process`` returns after a 2xx (the events are acknowledged)
        or a spool write, and raises otherwise. Raising here too makes the collector's
        ``flush()`` return False, so lost events are never reported as acknowledged.
        """
        with self._lock:
            lost, self._lost_since_flush = self._lost_since_flush, 0
        if lost:
            raise SinkError(
                f"http sink {self.name!r}: {lost} events given since the last flush were "
                f"neither accepted by {self._where} nor spooled (see the log and stats())"
            )

    def close(self) -> None:
        """Stop retrying: a batch in backoff is given up now, later ones get one attempt.

        The spool stays open; whoever created it closes it.
        """
        self._closed.set()

    def stats(self) -> dict[str, int]:
        """The counters now (taken together under one lock)."""
        with self._lock:
            return {
                "requests": self._requests,
                "retries": self._retries,
                "failures": self._failures,
                "sent_events": self._sent_events,
                "spooled_events": self._spooled_events,
                "rejected_events": self._rejected_events,
                "bytes_sent": self._bytes_sent,
            }

    def _send(self, body: bytes, headers: dict[str, str], timeout: float) -> _Answer:
        request = urllib.request.Request(self._url, data=body, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=timeout) as response:
                return _Answer(response.status, None, "")
        except urllib.error.HTTPError as exc:
            with exc:
                status = exc.code
                retry_after = None
                if status in _HONOURS_RETRY_AFTER:
                    retry_after = _retry_after_seconds(exc.headers.get("Retry-After"))
                return _Answer(status, retry_after, _error_body(exc))
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, BaseException):
                return _Answer(None, None, f"{type(reason).__name__}: {reason}")
            return _Answer(None, None, str(reason))
        except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, bad answers
            return _Answer(None, None, f"{type(exc).__name__}: {exc}")

    def _reject(self, batch: EventBatch, answer: _Answer) -> None:
        count = len(batch.events)
        with self._lock:
            self._failures += 1
            self._rejected_events += count
            self._lost_since_flush += count
        message = (
            f"http sink {self.name!r}: {self._where} answered {answer.status} to batch "
            f"{batch.id} ({count} events), which was dropped, not retried: "
            f"{answer.detail or '(empty body)'}{_REJECTION_HINTS.get(answer.status or 0, '')}"
        )
        self._log_failure(message)
        raise SinkError(message)

    def attach_spill(self, spill: Callable[[list[AnalyticsEvent]], bool]) -> None:
        """Use the collector's spill path for undelivered events (the collector calls this)."""
        with self._lock:
            self._spill = spill

    def _give_up(self, batch: EventBatch, answer: _Answer, attempts: int) -> None:
        count = len(batch.events)
        last = f"HTTP {answer.status}" if answer.status is not None else answer.detail
        if answer.status is not None and answer.detail:
            last += f": {answer.detail}"
        what = (
            f"http sink {self.name!r}: gave up on batch {batch.id} ({count} events) to "
            f"{self._where} after {attempts} attempt{'s' if attempts > 1 else ''} ({last})"
        )
        spool = self._spool
        with self._lock:
            self._failures += 1
            spill = self._spill
        if spill is not None and spill(batch.events):
            with self._lock:
                self._spooled_events += count
            self._log_failure(f"{what}; handed to the collector's spool")
            return
        if spool is None:
            with self._lock:
                self._lost_since_flush += count
            message = f"{what}; give the sink a spool to keep undelivered events"
            self._log_failure(message)
            raise SinkError(message)
        try:
            payloads = [encode_event(e, format="msgpack") for e in batch.events]
            with self._spool_lock:
                spool.append(payloads)
        except OSError as exc:
            with self._lock:
                self._lost_since_flush += count
            message = f"{what}; the spool write failed too, events lost: {exc}"
            self._log_failure(message)
            raise SinkError(message) from exc
        with self._lock:
            self._spooled_events += count
        self._log_failure(f"{what}; spooled to {str(spool.path)!r}")

    def _log_failure(self, message: str) -> None:
        now = self._clock()
        with self._lock:
            if self._last_log is not None and now - self._last_log < _LOG_EVERY_SECONDS:
                return
            self._last_log = now
        _log.warning(
            "%s (further failures in the next %.0f s are counted, not logged)",
            message,
            _LOG_EVERY_SECONDS,
        )


def _check_url(url: str) -> str:
    """Validate the endpoint; returns it as logs may show it (no query, no fragment)."""
    if not isinstance(url, str):
        raise ConfigError(f"HttpSink url must be a string, got {url!r}")
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # an unbalanced "[" in an IPv6 host, for one
        raise ConfigError(f"HttpSink url is not a valid URL: {url!r}") from None
    if "@" in parts.netloc:
        # The message must not repeat the credentials it complains about.
        host = parts.netloc.rpartition("@")[2]
        raise ConfigError(
            f"HttpSink url must not carry credentials ({parts.scheme}://...@{host}"
            f"{parts.path}); pass the token as api_key"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"HttpSink url must be an http:// or https:// URL, got {url!r}")
    try:
        _ = parts.port
    except ValueError:
        raise ConfigError(f"HttpSink url has an invalid port: {url!r}") from None
    return f"POST {urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, '', ''))}"


def _check_positive(what: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"HttpSink {what} must be > 0 seconds, got {value}")


def _retry_after_seconds(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After value (delta-seconds or an HTTP-date)."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # "-0000" parses naive; HTTP-dates are GMT
            when = when.replace(tzinfo=dt.UTC)
        # An HTTP-date is wall-clock time; the injected clock is monotonic.
        seconds = when.timestamp() - time.time()
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)


def _error_body(exc: urllib.error.HTTPError) -> str:
    try:
        raw = exc.read(_ERROR_BODY_BYTES)
    except (OSError, http.client.HTTPException):
        return ""
    return raw.decode("utf-8", "replace").strip()[:_ERROR_BODY_CHARS]
