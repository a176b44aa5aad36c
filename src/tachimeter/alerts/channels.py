"""Where alert notifications go: log, console, webhook, Prometheus Alertmanager.

A channel is any object with a ``name``, ``send(notifications)`` and ``close()``
(:class:`NotificationChannel`). The manager calls ``send`` from a delivery thread of
the channel's own, so a slow or failing channel never delays evaluation or the other
channels; ``send`` raises when delivery failed for good.

Webhook body (``docs/alerts.md`` has the full schema)::

    {"version": "1", "sender": "tachimeter", "sent_at": "2026-01-01T12:00:00.000000Z",
     "notifications": [{"status": "firing", "rule": "HighErrorRate", "fingerprint": "...",
       "severity": "critical", "labels": {...}, "annotations": {...}, "value": 0.12,
       "threshold": 0.05, "starts_at": "...", "ends_at": null, "at": "...",
       "generator_url": null, "repeat": false}]}

With a secret, the request carries ``X-Tachimeter-Signature: sha256=<hex>``, the
HMAC-SHA256 of the exact body bytes under the secret.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import random
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any, Final, Literal, Protocol, runtime_checkable

import msgspec

from tachimeter.alerts.durations import DurationLike, parse_duration
from tachimeter.errors import ConfigError, SinkError
from tachimeter.model.data import library_version
from tachimeter.model.timestamps import format_timestamp

__all__ = [
    "SIGNATURE_HEADER",
    "AlertmanagerChannel",
    "ConsoleChannel",
    "LogChannel",
    "Notification",
    "NotificationChannel",
    "ResendingChannel",
    "RetryPolicy",
    "WebhookChannel",
    "sign_body",
]

SIGNATURE_HEADER: Final = "X-Tachimeter-Signature"
_WEBHOOK_VERSION: Final = "1"
# Statuses worth another attempt: the receiver is overloaded or restarting.
_RETRY_STATUSES: Final = frozenset({408, 425, 429, 500, 502, 503, 504})
_LOCAL_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "::1"})
_encode = msgspec.json.Encoder(order="sorted").encode


class Notification(msgspec.Struct, frozen=True, kw_only=True):
    """One alert as channels receive it.

    ``status`` is ``firing`` or ``resolved``; ``labels`` hold ``alertname`` (the rule),
    ``severity``, the rule's labels and the alert's own; ``starts_at`` is when it started
    firing, ``ends_at`` when it resolved (None while firing); ``at`` the evaluation that
    sent it; ``repeat`` marks a re-send of an alert already notified.
    """

    status: Literal["firing", "resolved"]
    rule: str
    fingerprint: str
    severity: str
    labels: dict[str, str]
    annotations: dict[str, str]
    value: float | None
    threshold: float | None
    starts_at: dt.datetime
    ends_at: dt.datetime | None
    at: dt.datetime
    generator_url: str | None = None
    repeat: bool = False


@runtime_checkable
class NotificationChannel(Protocol):
    """What the manager needs from a channel."""

    @property
    def name(self) -> str:
        """The name rules route to."""
        ...

    def send(self, notifications: Sequence[Notification]) -> None:
        """Deliver the notifications; raise when delivery failed for good."""
        ...

    def close(self) -> None:
        """Release resources (connections, files)."""
        ...


@runtime_checkable
class ResendingChannel(NotificationChannel, Protocol):
    """A channel that wants every firing alert again every ``resend_interval`` seconds
    (Alertmanager forgets alerts not re-sent before their ``endsAt``)."""

    @property
    def resend_interval(self) -> float:
        """Seconds between re-sends of the firing alerts."""
        ...


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How HTTP channels retry: ``max_attempts`` in all, waiting ``initial_backoff``
    seconds, then ``multiplier`` times more each time, at most ``max_backoff``, with
    jitter (each wait is drawn between half and all of its nominal length, so receivers
    recovering from an outage are not hit by every sender at once).

    >>> [RetryPolicy(initial_backoff=1, jitter=False).delay(n) for n in range(4)]
    [1.0, 2.0, 4.0, 8.0]
    """

    max_attempts: int = 4
    initial_backoff: float = 0.5
    max_backoff: float = 10.0
    multiplier: float = 2.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ConfigError(f"RetryPolicy.max_attempts must be >= 1, got {self.max_attempts!r}")
        for name in ("initial_backoff", "max_backoff"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 <= value < 3600):
                raise ConfigError(f"RetryPolicy.{name} must be seconds in [0, 3600), got {value!r}")
        if not (isinstance(self.multiplier, int | float) and self.multiplier >= 1):
            raise ConfigError(f"RetryPolicy.multiplier must be >= 1, got {self.multiplier!r}")

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (0 for the first retry)."""
        nominal = min(self.max_backoff, self.initial_backoff * self.multiplier**retry)
        if not self.jitter:
            return float(nominal)
        draw = (rng or random).random()
        return nominal / 2 + draw * nominal / 2


def sign_body(body: bytes, secret: str | bytes) -> str:
    """The signature header's value: ``sha256=`` and the hex HMAC-SHA256 of ``body``.

    A receiver recomputes it over the raw body it received and compares with
    ``hmac.compare_digest``.

    >>> sign_body(b'{}', "s3cret")
    'sha256=adbde1ce40c89c14215687d5d762a47df6dfaefcfad61e2e86718ffc8498571b'
    """
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def _check_url(url: object, owner: str) -> str:
    if not isinstance(url, str):
        raise ConfigError(f"{owner}.url must be text, got {url!r}")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{owner}.url must be an http(s) URL, got {url!r}")
    return url


def _check_name(name: object, owner: str) -> str:
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{owner}.name must be non-empty text, got {name!r}")
    return name


class _HttpPoster:
    """POSTs JSON with retries; local addresses bypass any proxy from the environment."""

    __slots__ = ("_opener", "headers", "owner", "retry", "sleep", "timeout", "url")

    def __init__(
        self,
        url: str,
        owner: str,
        timeout: float,
        retry: RetryPolicy,
        headers: Mapping[str, str],
        sleep: Callable[[float], None],
    ) -> None:
        self.url = url
        self.owner = owner
        self.timeout = timeout
        self.retry = retry
        self.headers = {
            "Content-Type": "application/json",
            "User-Agent": f"tachimeter/{library_version()}",
            **headers,
        }
        self.sleep = sleep
        host = urllib.parse.urlsplit(url).hostname or ""
        handlers: list[urllib.request.BaseHandler] = []
        if host in _LOCAL_HOSTS:
            handlers.append(urllib.request.ProxyHandler({}))
        self._opener = urllib.request.build_opener(*handlers)

    def post(self, body: bytes, extra_headers: Mapping[str, str] | None = None) -> int:
        """The final HTTP status; ``SinkError`` after the last failed attempt."""
        headers = {**self.headers, **(extra_headers or {})}
        last_error = ""
        last_retry_after: float | None = None
        for attempt in range(self.retry.max_attempts):
            if attempt:
                self.sleep(self._wait(attempt - 1, last_retry_after))
            last_retry_after = None
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with self._opener.open(request, timeout=self.timeout) as response:
                    response.read()
                    return int(response.status)
            except urllib.error.HTTPError as exc:
                status = exc.code
                last_retry_after = _retry_after(exc.headers.get("Retry-After"))
                exc.close()
                last_error = f"HTTP {status}"
                if status not in _RETRY_STATUSES:
                    raise SinkError(
                        f"{self.owner} {self.url}: the receiver refused the notification "
                        f"({last_error}); not retried, fix the receiver or the channel's "
                        "configuration"
                    ) from None
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                reason = getattr(exc, "reason", exc)
                last_error = f"{type(reason).__name__}: {reason}"
        raise SinkError(
            f"{self.owner} {self.url}: delivery failed after {self.retry.max_attempts} "
            f"attempts (last: {last_error})"
        )

    def _wait(self, retry: int, retry_after: float | None) -> float:
        delay = self.retry.delay(retry)
        if retry_after is not None:
            # The receiver asked for a wait: honour it, within the policy's bound.
            delay = max(delay, min(retry_after, self.retry.max_backoff))
        return delay


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def notification_to_builtins(n: Notification) -> dict[str, Any]:
    """A notification as the webhook body's JSON object."""
    return {
        "status": n.status,
        "rule": n.rule,
        "fingerprint": n.fingerprint,
        "severity": n.severity,
        "labels": dict(n.labels),
        "annotations": dict(n.annotations),
        "value": _json_number(n.value),
        "threshold": _json_number(n.threshold),
        "starts_at": format_timestamp(n.starts_at),
        "ends_at": None if n.ends_at is None else format_timestamp(n.ends_at),
        "at": format_timestamp(n.at),
        "generator_url": n.generator_url,
        "repeat": n.repeat,
    }


def _json_number(value: float | None) -> float | None:
    if value is None or value != value or value in (float("inf"), float("-inf")):
        return None
    return value


class WebhookChannel:
    """POSTs notifications as JSON to a URL, retried with backoff, optionally signed.

    ``secret`` signs each body (``X-Tachimeter-Signature: sha256=<hex>``); ``timeout``
    bounds each attempt (seconds or text); ``retry`` sets attempts and backoff; ``headers``
    are added to each request (an ``Authorization`` header, say). A 2xx answer is
    success; 408, 425, 429 and 5xx answers and network errors are retried; any other
    answer fails at once.

    >>> channel = WebhookChannel("ops", "https://hooks.example.com/tachimeter", secret="s3cret")
    >>> channel.name
    'ops'
    """

    __slots__ = ("_poster", "_secret", "name")

    def __init__(
        self,
        name: str,
        url: str,
        *,
        secret: str | None = None,
        timeout: DurationLike = 5.0,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        owner = "WebhookChannel"
        self.name = _check_name(name, owner)
        if secret is not None and (not isinstance(secret, str) or not secret):
            raise ConfigError(f"{owner} {name!r}: secret must be non-empty text when given")
        self._secret = secret
        self._poster = _HttpPoster(
            _check_url(url, owner),
            f"webhook {name!r}",
            parse_duration(timeout, f"{owner}.timeout", allow_zero=False),
            retry or RetryPolicy(),
            dict(headers or {}),
            sleep,
        )

    @property
    def url(self) -> str:
        """Where notifications are posted."""
        return self._poster.url

    def body(self, notifications: Sequence[Notification], sent_at: dt.datetime) -> bytes:
        """The JSON body for these notifications (what the signature covers)."""
        return _encode(
            {
                "version": _WEBHOOK_VERSION,
                "sender": "tachimeter",
                "sent_at": format_timestamp(sent_at),
                "notifications": [notification_to_builtins(n) for n in notifications],
            }
        )

    def send(self, notifications: Sequence[Notification]) -> None:
        """POST one body with every notification."""
        if not notifications:
            return
        body = self.body(notifications, dt.datetime.now(dt.UTC))
        headers = {} if self._secret is None else {SIGNATURE_HEADER: sign_body(body, self._secret)}
        self._poster.post(body, headers)

    def close(self) -> None:
        """Nothing held between sends."""

    def __repr__(self) -> str:
        return f"WebhookChannel({self.name!r}, {self.url!r})"


class AlertmanagerChannel:
    """Sends alerts to Prometheus Alertmanager through its v2 API (``POST /api/v2/alerts``).

    Each alert becomes ``{"labels", "annotations", "startsAt", "endsAt",
    "generatorURL"}``; labels include ``alertname`` (the rule) and ``severity``. As
    Prometheus does, firing alerts are re-sent every ``resend_interval`` with ``endsAt``
    four intervals ahead, so Alertmanager resolves them by itself if Tachimeter stops;
    a resolution is sent with ``endsAt`` at the time it resolved. Grouping, silences,
    inhibition and repeats are Alertmanager's.

    >>> AlertmanagerChannel("http://127.0.0.1:9093").url
    'http://127.0.0.1:9093/api/v2/alerts'
    """

    __slots__ = ("_poster", "_resend", "name")

    def __init__(
        self,
        url: str,
        *,
        name: str = "alertmanager",
        timeout: DurationLike = 5.0,
        retry: RetryPolicy | None = None,
        resend_interval: DurationLike = 60.0,
        headers: Mapping[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        owner = "AlertmanagerChannel"
        self.name = _check_name(name, owner)
        base = _check_url(url, owner).rstrip("/")
        if base.endswith("/api/v2/alerts"):
            base = base[: -len("/api/v2/alerts")]
        self._resend = parse_duration(resend_interval, f"{owner}.resend_interval", allow_zero=False)
        self._poster = _HttpPoster(
            base + "/api/v2/alerts",
            f"alertmanager {name!r}",
            parse_duration(timeout, f"{owner}.timeout", allow_zero=False),
            retry or RetryPolicy(),
            dict(headers or {}),
            sleep,
        )

    @property
    def url(self) -> str:
        """The alerts endpoint."""
        return self._poster.url

    @property
    def resend_interval(self) -> float:
        """Seconds between re-sends of the firing alerts."""
        return self._resend

    def payload(self, notifications: Sequence[Notification]) -> list[dict[str, Any]]:
        """The JSON array Alertmanager's ``postAlerts`` takes."""
        out = []
        for n in notifications:
            ends = (
                n.ends_at
                if n.ends_at is not None
                else n.at + dt.timedelta(seconds=4 * self._resend)
            )
            item: dict[str, Any] = {
                "labels": {_label_name(k): v for k, v in n.labels.items() if v != ""},
                "annotations": dict(n.annotations),
                "startsAt": _rfc3339(n.starts_at),
                "endsAt": _rfc3339(ends),
            }
            if n.generator_url:
                item["generatorURL"] = n.generator_url
            out.append(item)
        return out

    def send(self, notifications: Sequence[Notification]) -> None:
        """POST the alerts."""
        if notifications:
            self._poster.post(_encode(self.payload(notifications)))

    def close(self) -> None:
        """Nothing held between sends."""

    def __repr__(self) -> str:
        return f"AlertmanagerChannel({self.url!r})"


def _rfc3339(value: dt.datetime) -> str:
    return format_timestamp(value)


def _label_name(name: str) -> str:
    # Alertmanager accepts only Prometheus label names; other characters become "_".
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_" for c in name)
    return cleaned if cleaned and not cleaned[0].isdigit() else f"_{cleaned}"


class LogChannel:
    """Logs each notification on the ``tachimeter.alerts`` logger (structured).

    The message is one logfmt line (``alert firing rule=HighErrorRate severity=critical
    value=0.12 ...``); the record also carries the notification as ``record.alert`` (a
    dict) for JSON log formatters. Firing alerts log at WARNING (critical ones at ERROR),
    resolutions at INFO.

    >>> LogChannel().name
    'log'
    """

    __slots__ = ("_logger", "name")

    def __init__(self, name: str = "log", *, logger: logging.Logger | None = None) -> None:
        self.name = _check_name(name, "LogChannel")
        self._logger = logger or logging.getLogger("tachimeter.alerts")

    def send(self, notifications: Sequence[Notification]) -> None:
        """Log each notification."""
        for n in notifications:
            if n.status == "resolved":
                level = logging.INFO
            elif n.severity == "critical":
                level = logging.ERROR
            else:
                level = logging.WARNING
            fields = {
                "rule": n.rule,
                "severity": n.severity,
                "fingerprint": n.fingerprint,
                "value": _json_number(n.value),
                "threshold": _json_number(n.threshold),
                "starts_at": format_timestamp(n.starts_at),
                **{f"label.{k}": v for k, v in sorted(n.labels.items())},
                **{f"annotation.{k}": v for k, v in sorted(n.annotations.items())},
            }
            line = " ".join(f"{k}={_logfmt(v)}" for k, v in fields.items())
            self._logger.log(
                level,
                "alert %s %s",
                n.status,
                line,
                extra={"alert": notification_to_builtins(n)},
            )

    def close(self) -> None:
        """Nothing to release."""


def _logfmt(value: object) -> str:
    text = "" if value is None else str(value)
    if text and all(c.isalnum() or c in "._-:/+%" for c in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class ConsoleChannel:
    """Prints one readable line per notification (default: standard error).

    >>> import io
    >>> out = io.StringIO()
    >>> ConsoleChannel(stream=out).name
    'console'
    """

    __slots__ = ("_lock", "_stream", "name")

    def __init__(self, name: str = "console", *, stream: IO[str] | None = None) -> None:
        self.name = _check_name(name, "ConsoleChannel")
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, notifications: Sequence[Notification]) -> None:
        """Write the lines."""
        stream = self._stream if self._stream is not None else sys.stderr
        lines = []
        for n in notifications:
            labels = " ".join(
                f"{k}={v}"
                for k, v in sorted(n.labels.items())
                if k not in ("alertname", "severity")
            )
            value = "-" if n.value is None else f"{n.value:g}"
            summary = n.annotations.get("summary", "")
            lines.append(
                f"[{n.status.upper()}] {n.rule} ({n.severity}) {labels} value={value}"
                + (f" - {summary}" if summary else "")
            )
        with self._lock:
            stream.write("\n".join(lines) + "\n")
            stream.flush()

    def close(self) -> None:
        """Nothing to release (the stream is the caller's)."""
