"""Alert history and persisted alert state (migration 5's tables).

The manager hands over what one evaluation changed (state changes, alert states, rule
health, once-per-period marks) in one :meth:`SQLiteAlertHistory.commit`: one short
transaction on a connection of its own, so it never holds the store's writer. If the
database is busy or read-only, the batch is kept and written with the next one (at most
``_MAX_PENDING`` state changes; older ones are dropped and counted), and the failure is
logged at most once a minute.

:class:`MemoryAlertHistory` keeps the same in memory, for managers without a database.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final, Protocol

import msgspec

from tachimeter.alerts.state import Alert, AlertState, AlertStatus, RuleHealth
from tachimeter.analyze.connection import ReadSource, read_connection
from tachimeter.errors import QueryError, StoreError
from tachimeter.model.timestamps import format_timestamp, parse_timestamp

__all__ = [
    "AlertEvent",
    "AlertHistory",
    "HistorySnapshot",
    "MemoryAlertHistory",
    "SQLiteAlertHistory",
    "events_to_builtins",
    "read_alert_events",
    "read_alert_states",
    "read_rule_health",
]

_log = logging.getLogger("tachimeter.alerts")

# State changes kept for a retry while the database cannot be written: a storm of 10 000
# changes is a few MB; past that the oldest are dropped (and counted).
_MAX_PENDING: Final = 10_000
_LOG_EVERY_SECONDS: Final = 60.0
_BUSY_TIMEOUT_SECONDS: Final = 5.0
_MAX_QUERY_LIMIT: Final = 10_000
_encode = msgspec.json.Encoder(order="sorted").encode
_decode_labels = msgspec.json.Decoder(dict[str, str]).decode


class AlertEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One row of ``alert_events``: a state change and the value that caused it."""

    at: dt.datetime
    rule: str
    fingerprint: str
    labels: dict[str, str]
    from_state: AlertState
    to_state: AlertState
    value: float | None = None
    threshold: float | None = None
    severity: str | None = None
    message: str | None = None
    annotations: dict[str, str] = {}
    notified: bool = False
    id: int | None = None


class HistorySnapshot(msgspec.Struct, kw_only=True):
    """What a manager resumes from: live alerts, once-per-period marks, rule health."""

    alerts: list[Alert]
    marks: set[tuple[str, str]]
    health: dict[str, RuleHealth]


class AlertHistory(Protocol):
    """Where the manager keeps history and state."""

    def load(self) -> HistorySnapshot:
        """The state left by a previous run."""
        ...

    def commit(
        self,
        events: Sequence[AlertEvent],
        alerts: Sequence[Alert],
        forgotten: Sequence[str],
        health: Sequence[RuleHealth],
        marks: Sequence[tuple[str, str, str, dt.datetime, float | None]],
    ) -> None:
        """Store one evaluation's changes: state changes, alert states (``forgotten``
        fingerprints are removed), rule health, and marks ``(fingerprint, period, rule,
        at, value)``."""
        ...

    def events(
        self,
        *,
        rule: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        limit: int = 100,
    ) -> list[AlertEvent]:
        """State changes, newest first."""
        ...

    def close(self) -> None:
        """Write what is pending (best effort) and release the database."""
        ...


class MemoryAlertHistory:
    """History in memory (bounded to the last ``capacity`` state changes).

    >>> history = MemoryAlertHistory()
    >>> history.events()
    []
    """

    __slots__ = ("_alerts", "_events", "_health", "_lock", "_marks")

    def __init__(self, capacity: int = 10_000) -> None:
        self._events: deque[AlertEvent] = deque(maxlen=capacity)
        self._alerts: dict[str, Alert] = {}
        self._marks: set[tuple[str, str]] = set()
        self._health: dict[str, RuleHealth] = {}
        self._lock = threading.Lock()

    def load(self) -> HistorySnapshot:
        """What was committed before (a new manager on the same history resumes it)."""
        with self._lock:
            return HistorySnapshot(
                alerts=list(self._alerts.values()),
                marks=set(self._marks),
                health=dict(self._health),
            )

    def commit(
        self,
        events: Sequence[AlertEvent],
        alerts: Sequence[Alert],
        forgotten: Sequence[str],
        health: Sequence[RuleHealth],
        marks: Sequence[tuple[str, str, str, dt.datetime, float | None]],
    ) -> None:
        """Keep the changes."""
        with self._lock:
            self._events.extend(events)
            for alert in alerts:
                self._alerts[alert.fingerprint] = alert
            for fp in forgotten:
                self._alerts.pop(fp, None)
            for item in health:
                self._health[item.rule] = item
            self._marks.update((fp, period) for fp, period, _, _, _ in marks)

    def events(
        self,
        *,
        rule: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        limit: int = 100,
    ) -> list[AlertEvent]:
        """State changes, newest first."""
        _check_limit(limit)
        with self._lock:
            items = list(self._events)
        out = [
            e
            for e in reversed(items)
            if (rule is None or e.rule == rule)
            and (since is None or e.at >= since)
            and (until is None or e.at < until)
        ]
        return out[:limit]

    def close(self) -> None:
        """Nothing to release."""


class SQLiteAlertHistory:
    """History and state in a Tachimeter database (migration 5).

    ``target`` is a store (its file is opened with a connection of this history's own),
    a path (migrated to the latest schema if needed) or a ``sqlite3.Connection`` on a
    migrated database (used as is; in-memory databases for tests).

    >>> import sqlite3
    >>> from tachimeter.store.migrator import Migrator
    >>> conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    >>> _ = Migrator(conn).up()
    >>> SQLiteAlertHistory(conn).events()
    []
    """

    __slots__ = (
        "_conn",
        "_dropped",
        "_last_log",
        "_lock",
        "_owned",
        "_pending",
        "_write_errors",
    )

    def __init__(self, target: sqlite3.Connection | str | os.PathLike[str] | Any) -> None:
        if isinstance(target, sqlite3.Connection):
            self._conn = target
            self._owned = False
        else:
            path = target if isinstance(target, str | os.PathLike) else target.path
            self._conn = sqlite3.connect(
                os.fspath(path),
                isolation_level=None,
                timeout=_BUSY_TIMEOUT_SECONDS,
                check_same_thread=False,
            )
            self._owned = True
            if isinstance(target, str | os.PathLike):
                # A bare file is brought to the latest schema; a store did it on open.
                from tachimeter.store.migrator import Migrator

                Migrator(self._conn, where=str(Path(path))).up()
        exists = self._conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alert_events'"
        ).fetchone()
        if exists is None:
            raise StoreError(
                "the database has no alert tables (migration 5); open it with SQLiteStore "
                "or run `tachimeter migrate` first"
            )
        self._lock = threading.Lock()
        self._pending: deque[
            tuple[
                list[AlertEvent],
                list[tuple[Any, ...]],
                list[str],
                list[RuleHealth],
                list[tuple[str, str, str, dt.datetime, float | None]],
            ]
        ] = deque()
        self._dropped = 0
        self._write_errors = 0
        self._last_log = 0.0

    @property
    def write_errors(self) -> int:
        """Commits that failed (their changes were kept for the next one)."""
        return self._write_errors

    @property
    def dropped_events(self) -> int:
        """State changes dropped because the database stayed unwritable too long."""
        return self._dropped

    def load(self) -> HistorySnapshot:
        """Live alerts, marks and rule health from the database."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT fingerprint, rule, labels, state, value, threshold, active_at, "
                "fired_at, resolved_at, last_active_at, last_notified_at, notified, period "
                "FROM alert_state"
            ).fetchall()
            marks = self._conn.execute("SELECT fingerprint, period FROM alert_marks").fetchall()
            health_rows = self._conn.execute(
                "SELECT rule, health, last_error, evaluations_total, errors_total, "
                "last_evaluated_at, last_duration_seconds FROM alert_rule_health"
            ).fetchall()
        alerts = []
        for row in rows:
            alert = Alert(row[1], _decode_labels(row[2]))
            alert.state = AlertState(row[3])
            alert.value, alert.threshold = row[4], row[5]
            alert.active_at = _seconds(row[6])
            alert.fired_at = _seconds(row[7])
            alert.resolved_at = _seconds(row[8])
            alert.last_active_at = _seconds(row[9])
            alert.last_notified_at = _seconds(row[10])
            alert.notified = bool(row[11])
            alert.period = row[12]
            alerts.append(alert)
        health = {r[0]: _health(r) for r in health_rows}
        return HistorySnapshot(alerts=alerts, marks={(a, b) for a, b in marks}, health=health)

    def commit(
        self,
        events: Sequence[AlertEvent],
        alerts: Sequence[Alert],
        forgotten: Sequence[str],
        health: Sequence[RuleHealth],
        marks: Sequence[tuple[str, str, str, dt.datetime, float | None]],
    ) -> None:
        """Write the changes (with any left from failed commits) in one transaction."""
        rows = [_alert_row(a) for a in alerts]
        with self._lock:
            self._pending.append((list(events), rows, list(forgotten), list(health), list(marks)))
            self._trim()
            batch = list(self._pending)
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                for b_events, b_rows, b_forgotten, b_health, b_marks in batch:
                    self._write(b_events, b_rows, b_forgotten, b_health, b_marks)
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                self._write_errors += 1
                now = time.monotonic()
                if now - self._last_log >= _LOG_EVERY_SECONDS:
                    self._last_log = now
                    _log.warning(
                        "alert history not written (%s); kept %d evaluations for the next attempt",
                        exc,
                        len(self._pending),
                    )
                return
            self._pending.clear()

    def _trim(self) -> None:
        while len(self._pending) > 1 and sum(len(p[0]) for p in self._pending) > _MAX_PENDING:
            self._dropped += len(self._pending.popleft()[0])

    def _write(
        self,
        events: Sequence[AlertEvent],
        rows: Sequence[Any],
        forgotten: Sequence[str],
        health: Sequence[RuleHealth],
        marks: Sequence[tuple[str, str, str, dt.datetime, float | None]],
    ) -> None:
        conn = self._conn
        conn.executemany(
            "INSERT INTO alert_events (at, rule, fingerprint, labels, from_state, to_state, "
            "value, threshold, severity, message, annotations, notified) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    format_timestamp(e.at),
                    e.rule,
                    e.fingerprint,
                    _encode(e.labels).decode(),
                    e.from_state.value,
                    e.to_state.value,
                    _finite(e.value),
                    _finite(e.threshold),
                    e.severity,
                    e.message,
                    _encode(e.annotations).decode(),
                    int(e.notified),
                )
                for e in events
            ],
        )
        conn.executemany(
            "INSERT OR REPLACE INTO alert_state (fingerprint, rule, labels, state, value, "
            "threshold, active_at, fired_at, resolved_at, last_active_at, last_notified_at, "
            "notified, period, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.executemany(
            "DELETE FROM alert_state WHERE fingerprint = ?", [(fp,) for fp in forgotten]
        )
        conn.executemany(
            "INSERT OR REPLACE INTO alert_rule_health (rule, health, last_error, "
            "evaluations_total, errors_total, last_evaluated_at, last_duration_seconds) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    h.rule,
                    h.health,
                    h.last_error,
                    h.evaluations_total,
                    h.errors_total,
                    None if h.last_evaluated_at is None else format_timestamp(h.last_evaluated_at),
                    h.last_duration_seconds,
                )
                for h in health
                if h.health in ("ok", "error")
            ],
        )
        conn.executemany(
            "INSERT OR IGNORE INTO alert_marks (fingerprint, period, rule, fired_at, value) "
            "VALUES (?, ?, ?, ?, ?)",
            [
                (fp, period, rule, format_timestamp(at), _finite(v))
                for fp, period, rule, at, v in marks
            ],
        )

    def events(
        self,
        *,
        rule: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        limit: int = 100,
    ) -> list[AlertEvent]:
        """State changes, newest first."""
        with self._lock:
            return _query_events(self._conn, rule, since, until, limit)

    def close(self) -> None:
        """Close the connection if this history opened it."""
        with self._lock:
            if self._owned:
                self._conn.close()


def read_alert_events(
    source: ReadSource,
    *,
    rule: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int = 100,
) -> list[AlertEvent]:
    """State changes stored in a database, newest first (a read-only query).

    ``source`` is a ``sqlite3.Connection`` or a store, as for ``tachimeter.analyze``.
    """
    with read_connection(source) as conn:
        return _query_events(conn, rule, since, until, limit)


def read_alert_states(source: ReadSource) -> list[AlertStatus]:
    """Live alerts as a manager left them (``alert_state``), by rule then labels."""
    with read_connection(source) as conn:
        try:
            rows = conn.execute(
                "SELECT fingerprint, rule, labels, state, value, threshold, active_at, "
                "fired_at, resolved_at, last_notified_at FROM alert_state "
                "ORDER BY rule, labels"
            ).fetchall()
        except sqlite3.OperationalError as exc:
            raise QueryError(
                f"cannot read alert state ({exc}); is the database migrated to version 5?"
            ) from exc
    return [
        AlertStatus(
            rule=r[1],
            fingerprint=r[0],
            labels=_decode_labels(r[2]),
            state=AlertState(r[3]),
            value=r[4],
            threshold=r[5],
            active_at=_parsed(r[6]),
            fired_at=_parsed(r[7]),
            resolved_at=_parsed(r[8]),
            last_notified_at=_parsed(r[9]),
        )
        for r in rows
    ]


def read_rule_health(source: ReadSource) -> list[RuleHealth]:
    """Per rule, how its evaluations went (``alert_rule_health``), by rule name."""
    with read_connection(source) as conn:
        try:
            rows = conn.execute(
                "SELECT rule, health, last_error, evaluations_total, errors_total, "
                "last_evaluated_at, last_duration_seconds FROM alert_rule_health ORDER BY rule"
            ).fetchall()
        except sqlite3.OperationalError as exc:
            raise QueryError(
                f"cannot read rule health ({exc}); is the database migrated to version 5?"
            ) from exc
    return [_health(r) for r in rows]


def _health(r: Sequence[Any]) -> RuleHealth:
    return RuleHealth(
        rule=r[0],
        health=r[1],
        last_error=r[2],
        evaluations_total=int(r[3]),
        errors_total=int(r[4]),
        last_evaluated_at=_parsed(r[5]),
        last_duration_seconds=r[6],
    )


def _parsed(text: str | None) -> dt.datetime | None:
    return None if text is None else parse_timestamp(text)


def _check_limit(limit: int) -> None:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= _MAX_QUERY_LIMIT:
        raise QueryError(f"limit must be an integer in [1, {_MAX_QUERY_LIMIT}], got {limit!r}")


def _query_events(
    conn: sqlite3.Connection,
    rule: str | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
    limit: int,
) -> list[AlertEvent]:
    _check_limit(limit)
    clauses: list[str] = []
    params: list[Any] = []
    if rule is not None:
        clauses.append("rule = ?")
        params.append(rule)
    if since is not None:
        clauses.append("at >= ?")
        params.append(format_timestamp(since))
    if until is not None:
        clauses.append("at < ?")
        params.append(format_timestamp(until))
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    try:
        rows = conn.execute(
            "SELECT id, at, rule, fingerprint, labels, from_state, to_state, value, threshold, "
            f"severity, message, annotations, notified FROM alert_events{where} "
            "ORDER BY at DESC, id DESC LIMIT ?",
            (*params, limit),
        ).fetchall()
    except sqlite3.OperationalError as exc:
        raise QueryError(
            f"cannot read alert history ({exc}); is the database migrated to version 5?"
        ) from exc
    return [
        AlertEvent(
            id=r[0],
            at=parse_timestamp(r[1]),
            rule=r[2],
            fingerprint=r[3],
            labels=_decode_labels(r[4]),
            from_state=AlertState(r[5]),
            to_state=AlertState(r[6]),
            value=r[7],
            threshold=r[8],
            severity=r[9],
            message=r[10],
            annotations=_decode_labels(r[11]),
            notified=bool(r[12]),
        )
        for r in rows
    ]


def _finite(value: float | None) -> float | None:
    # SQLite stores inf but NaN becomes NULL anyway; make both explicit.
    if value is None or value != value:
        return None
    return value


def _stamp(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return format_timestamp(dt.datetime.fromtimestamp(seconds, dt.UTC))


def _seconds(text: str | None) -> float | None:
    return None if text is None else parse_timestamp(text).timestamp()


def _alert_row(alert: Alert) -> tuple[Any, ...]:
    return (
        alert.fingerprint,
        alert.rule,
        _encode(alert.labels).decode(),
        alert.state.value,
        _finite(alert.value),
        _finite(alert.threshold),
        _stamp(alert.active_at),
        _stamp(alert.fired_at),
        _stamp(alert.resolved_at),
        _stamp(alert.last_active_at),
        _stamp(alert.last_notified_at),
        int(alert.notified),
        alert.period,
        format_timestamp(dt.datetime.now(dt.UTC)),
    )


def events_to_builtins(events: Iterable[AlertEvent]) -> list[dict[str, Any]]:
    """JSON-ready dicts (for the CLI and the HTTP API)."""
    return [msgspec.to_builtins(e) for e in events]
