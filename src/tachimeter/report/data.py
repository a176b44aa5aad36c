"""The figures of a report over a time range, computed once from the store.

Everything a report shows is in one frozen :class:`Report`; the Markdown, HTML and JSON
renderers only format it. Definitions:

* **events** have ``since <= timestamp < until``; **users** and **sessions** are the
  distinct non-null ``user_id`` and ``session_id`` among them; **errors** are events of
  the ``error`` category (the dashboard's definition), the **error rate** is errors over
  events;
* **days** are UTC days; every day the range touches is listed, empty ones with zeros;
* **missions** were created in the range; the success rate is completed over finished
  (completed, failed, cancelled, abandoned), as ``tachimeter.analyze.calculate_metrics``
  has it; durations are execution times of finished missions, with percentiles by
  linear interpolation (``tachimeter.analyze.quantiles``);
* **token usage and cost** come from the LLM calls made in the range
  (``mission_llm_calls.called_at``); cache tokens are part of input tokens and reasoning
  tokens part of output (OpenTelemetry), so ``total_tokens`` is input + output; the cost
  sums priced calls only, ``unpriced_calls`` says how many it leaves out;
* **alerts** are the rules' health and live states as the alert manager left them, the
  state changes in the range and, per rule, how often it started firing in the range.

Sections whose tables a store lacks (an older schema) are empty and marked unavailable.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from typing import Final

import msgspec

from tachimeter.alerts.history import read_alert_events, read_alert_states, read_rule_health
from tachimeter.analyze.connection import ReadSource, read_connection
from tachimeter.analyze.quantiles import quantile
from tachimeter.errors import QueryError
from tachimeter.missions.lifecycle import TERMINAL_STATUSES
from tachimeter.model.timestamps import format_timestamp, utc_now

__all__ = [
    "AlertChange",
    "AlertRuleSummary",
    "AlertsSection",
    "DayCount",
    "ErrorGroup",
    "ErrorRecord",
    "EventCount",
    "MissionDay",
    "MissionGroup",
    "MissionsSection",
    "ModelUsage",
    "Report",
    "Summary",
    "build_report",
]

_FINISHED: Final = frozenset(s.value for s in TERMINAL_STATUSES)
# Alert state changes listed in a report: the newest ones; the per-rule counts cover all.
_ALERT_CHANGES_SHOWN: Final = 50
# Longer error messages are cut in the report (the store keeps them whole).
_MESSAGE_CHARS: Final = 300


class Summary(msgspec.Struct, frozen=True, kw_only=True):
    """Events, distinct users and sessions, errors and the error rate in the range."""

    events: int
    users: int
    sessions: int
    errors: int
    error_rate: float | None


class DayCount(msgspec.Struct, frozen=True, kw_only=True):
    """Events and errors on one UTC day (``YYYY-MM-DD``)."""

    day: str
    events: int
    errors: int


class EventCount(msgspec.Struct, frozen=True, kw_only=True):
    """One event name: how many events had it and how many distinct users sent them."""

    name: str
    events: int
    users: int


class ErrorGroup(msgspec.Struct, frozen=True, kw_only=True):
    """Error events of one name and code (``properties.code``; None without one)."""

    name: str
    code: str | None
    events: int
    users: int
    last_seen: str


class ErrorRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One recent error event (its message as stored, i.e. scrubbed; cut when long)."""

    timestamp: str
    name: str
    code: str | None
    component: str | None
    message: str | None
    user_id: str | None


class MissionGroup(msgspec.Struct, frozen=True, kw_only=True):
    """Missions of one backend or model (``""`` when not given)."""

    name: str
    missions: int
    finished: int
    completed: int
    failed: int
    success_rate: float | None
    duration_p50_ms: float | None
    duration_p90_ms: float | None
    total_tokens: int
    total_cost: float


class MissionDay(msgspec.Struct, frozen=True, kw_only=True):
    """Missions created on one UTC day, by outcome (``other``: cancelled, abandoned or
    still active)."""

    day: str
    missions: int
    completed: int
    failed: int
    other: int


class MissionsSection(msgspec.Struct, frozen=True, kw_only=True):
    """Missions created in the range."""

    available: bool
    total: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    abandoned: int = 0
    active: int = 0
    success_rate: float | None = None
    duration_p50_ms: float | None = None
    duration_p90_ms: float | None = None
    total_tokens: int = 0
    total_cost: float = 0.0
    by_backend: list[MissionGroup] = []
    by_model: list[MissionGroup] = []
    per_day: list[MissionDay] = []


class ModelUsage(msgspec.Struct, frozen=True, kw_only=True):
    """LLM calls of one model in the range: tokens by type and cost in USD."""

    model: str
    calls: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_creation_tokens: int
    reasoning_tokens: int
    total_tokens: int
    cost_usd: float
    unpriced_calls: int


class AlertRuleSummary(msgspec.Struct, frozen=True, kw_only=True):
    """One alert rule: its health, its live alerts now, and its firings in the range."""

    rule: str
    health: str
    evaluations: int
    errors: int
    last_error: str | None
    last_evaluated_at: str | None
    firing_now: int
    pending_now: int
    fired_in_range: int
    last_fired_at: str | None


class AlertChange(msgspec.Struct, frozen=True, kw_only=True):
    """One state change of one alert."""

    at: str
    rule: str
    labels: dict[str, str]
    from_state: str
    to_state: str
    value: float | None
    message: str | None


class AlertsSection(msgspec.Struct, frozen=True, kw_only=True):
    """Alert rules and the alert history in the range (newest changes first)."""

    available: bool
    rules: list[AlertRuleSummary] = []
    changes: list[AlertChange] = []
    changes_in_range: int = 0
    firings_in_range: int = 0


class Report(msgspec.Struct, frozen=True, kw_only=True):
    """A report over ``since <= t < until`` (times as fixed-width UTC text).

    >>> import sqlite3
    >>> from tachimeter.store.migrations import all_migrations
    >>> conn = sqlite3.connect(":memory:")
    >>> for migration in all_migrations():
    ...     _ = conn.executescript(migration.up)
    >>> since = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)
    >>> report = build_report(conn, since, since + dt.timedelta(days=2))
    >>> report.summary.events, [d.day for d in report.events_per_day]
    (0, ['2025-03-01', '2025-03-02'])
    """

    title: str
    store: str
    generated_at: str
    since: str
    until: str
    summary: Summary
    events_per_day: list[DayCount]
    top_events: list[EventCount]
    top_errors: list[ErrorGroup]
    recent_errors: list[ErrorRecord]
    missions: MissionsSection
    token_usage: list[ModelUsage]
    alerts: AlertsSection


def build_report(
    source: ReadSource,
    since: dt.datetime,
    until: dt.datetime,
    *,
    top: int = 10,
    title: str = "Tachimeter report",
    store: str = "",
    now: dt.datetime | None = None,
) -> Report:
    """The report of ``since <= t < until`` from ``source`` (a connection or a store).

    ``top`` bounds the lists of events, errors and recent errors. Read-only: a few
    indexed range scans, each over the range only.
    """
    if since.tzinfo is None or until.tzinfo is None:
        raise QueryError("report times must be timezone-aware (UTC); got a naive datetime")
    if until < since:
        raise QueryError(
            f"the report range ends ({format_timestamp(until)}) before it starts "
            f"({format_timestamp(since)}); swap --since and --until"
        )
    if not isinstance(top, int) or isinstance(top, bool) or not 1 <= top <= 1000:
        raise QueryError(f"top must be an integer in [1, 1000], got {top!r}")
    lo, hi = format_timestamp(since), format_timestamp(until)
    days = _days(since, until)
    with read_connection(source) as conn:
        tables = _tables(conn)
        if "analytics_events" not in tables:
            raise QueryError(
                "this database has no analytics_events table: it is not a Tachimeter store"
            )
        summary, per_day = _events(conn, lo, hi, days)
        return Report(
            title=title,
            store=store,
            generated_at=format_timestamp(now or utc_now()),
            since=lo,
            until=hi,
            summary=summary,
            events_per_day=per_day,
            top_events=_top_events(conn, lo, hi, top),
            top_errors=_top_errors(conn, lo, hi, top),
            recent_errors=_recent_errors(conn, lo, hi, top),
            missions=_missions(conn, lo, hi, days) if "missions" in tables else _NO_MISSIONS,
            token_usage=_token_usage(conn, lo, hi) if "mission_llm_calls" in tables else [],
            alerts=_alerts(conn, since, until) if tables >= _ALERT_TABLES else _NO_ALERTS,
        )


_NO_MISSIONS: Final = MissionsSection(available=False)
_NO_ALERTS: Final = AlertsSection(available=False)
_ALERT_TABLES: Final = frozenset({"alert_events", "alert_state", "alert_rule_health"})


def _tables(conn: sqlite3.Connection) -> frozenset[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")
    return frozenset(r[0] for r in rows)


def _days(since: dt.datetime, until: dt.datetime) -> list[str]:
    """Every UTC day that ``[since, until)`` touches, in order."""
    if until <= since:
        return []
    first = since.astimezone(dt.UTC).date()
    last = (until.astimezone(dt.UTC) - dt.timedelta(microseconds=1)).date()
    return [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def _events(
    conn: sqlite3.Connection, lo: str, hi: str, days: list[str]
) -> tuple[Summary, list[DayCount]]:
    events, users, sessions, errors = conn.execute(
        "SELECT count(*), count(DISTINCT user_id), count(DISTINCT session_id), "
        "coalesce(sum(category = 'error'), 0) FROM analytics_events "
        "WHERE timestamp >= ? AND timestamp < ?",
        (lo, hi),
    ).fetchone()
    # The stored timestamp is fixed-width UTC text: its first 10 characters are the day.
    counted = {
        day: (n, e)
        for day, n, e in conn.execute(
            "SELECT substr(timestamp, 1, 10), count(*), coalesce(sum(category = 'error'), 0) "
            "FROM analytics_events WHERE timestamp >= ? AND timestamp < ? GROUP BY 1",
            (lo, hi),
        )
    }
    per_day = [
        DayCount(day=day, events=counted.get(day, (0, 0))[0], errors=counted.get(day, (0, 0))[1])
        for day in days
    ]
    summary = Summary(
        events=events,
        users=users,
        sessions=sessions,
        errors=errors,
        error_rate=errors / events if events else None,
    )
    return summary, per_day


def _top_events(conn: sqlite3.Connection, lo: str, hi: str, top: int) -> list[EventCount]:
    rows = conn.execute(
        "SELECT event_name, count(*), count(DISTINCT user_id) FROM analytics_events "
        "WHERE timestamp >= ? AND timestamp < ? GROUP BY event_name ORDER BY 2 DESC, 1 LIMIT ?",
        (lo, hi, top),
    )
    return [EventCount(name=r[0], events=r[1], users=r[2]) for r in rows]


# properties.<key> of an error event as text; NULL when properties are not a JSON object
# with it (another tool may have written anything there).
def _property(key: str) -> str:
    return (
        f"CASE WHEN json_valid(properties) AND json_type(properties, '$.{key}') = 'text' "
        f"THEN json_extract(properties, '$.{key}') END"
    )


def _top_errors(conn: sqlite3.Connection, lo: str, hi: str, top: int) -> list[ErrorGroup]:
    rows = conn.execute(
        f"SELECT event_name, {_property('code')} AS code, count(*), count(DISTINCT user_id), "
        "max(timestamp) FROM analytics_events "
        "WHERE timestamp >= ? AND timestamp < ? AND category = 'error' "
        "GROUP BY event_name, code ORDER BY 3 DESC, 1, 2 LIMIT ?",
        (lo, hi, top),
    )
    return [ErrorGroup(name=r[0], code=r[1], events=r[2], users=r[3], last_seen=r[4]) for r in rows]


def _recent_errors(conn: sqlite3.Connection, lo: str, hi: str, top: int) -> list[ErrorRecord]:
    rows = conn.execute(
        f"SELECT timestamp, event_name, {_property('code')}, {_property('component')}, "
        f"{_property('message')}, user_id FROM analytics_events "
        "WHERE timestamp >= ? AND timestamp < ? AND category = 'error' "
        "ORDER BY timestamp DESC, id DESC LIMIT ?",
        (lo, hi, top),
    )
    return [
        ErrorRecord(
            timestamp=r[0],
            name=r[1],
            code=r[2],
            component=r[3],
            message=_cut(r[4]),
            user_id=r[5],
        )
        for r in rows
    ]


def _cut(text: str | None) -> str | None:
    if text is None or len(text) <= _MESSAGE_CHARS:
        return text
    return text[: _MESSAGE_CHARS - 1] + "…"


class _Tally:
    """Running totals of one group of missions."""

    __slots__ = ("completed", "cost", "durations", "failed", "finished", "missions", "tokens")

    def __init__(self) -> None:
        self.missions = 0
        self.finished = 0
        self.completed = 0
        self.failed = 0
        self.tokens = 0
        self.cost = 0.0
        self.durations: list[float] = []

    def add(self, status: str, duration: float | None, tokens: int, cost: float) -> None:
        self.missions += 1
        self.tokens += tokens
        self.cost += cost
        if status in _FINISHED:
            self.finished += 1
            if duration is not None:
                self.durations.append(float(duration))
        if status == "completed":
            self.completed += 1
        elif status == "failed":
            self.failed += 1

    def percentiles(self) -> tuple[float | None, float | None]:
        ordered = sorted(self.durations)
        return quantile(ordered, 0.5), quantile(ordered, 0.9)

    def group(self, name: str) -> MissionGroup:
        p50, p90 = self.percentiles()
        return MissionGroup(
            name=name,
            missions=self.missions,
            finished=self.finished,
            completed=self.completed,
            failed=self.failed,
            success_rate=self.completed / self.finished if self.finished else None,
            duration_p50_ms=p50,
            duration_p90_ms=p90,
            total_tokens=self.tokens,
            total_cost=self.cost,
        )


def _groups(tallies: dict[str, _Tally]) -> list[MissionGroup]:
    groups = [t.group(name) for name, t in tallies.items()]
    return sorted(groups, key=lambda g: (-g.missions, g.name))


def _missions(conn: sqlite3.Connection, lo: str, hi: str, days: list[str]) -> MissionsSection:
    overall = _Tally()
    by_backend: dict[str, _Tally] = {}
    by_model: dict[str, _Tally] = {}
    statuses: dict[str, int] = {}
    per_day: dict[str, list[int]] = {day: [0, 0, 0, 0] for day in days}
    rows = conn.execute(
        "SELECT substr(created_at, 1, 10), backend, model, status, execution_time_ms, "
        "total_tokens, total_cost FROM missions WHERE created_at >= ? AND created_at < ?",
        (lo, hi),
    )
    for day, backend, model, status, duration, tokens, cost in rows:
        overall.add(status, duration, tokens, cost)
        by_backend.setdefault(backend or "", _Tally()).add(status, duration, tokens, cost)
        by_model.setdefault(model or "", _Tally()).add(status, duration, tokens, cost)
        statuses[status] = statuses.get(status, 0) + 1
        counts = per_day.setdefault(day, [0, 0, 0, 0])
        counts[0] += 1
        counts[1 if status == "completed" else 2 if status == "failed" else 3] += 1
    p50, p90 = overall.percentiles()
    return MissionsSection(
        available=True,
        total=overall.missions,
        completed=statuses.get("completed", 0),
        failed=statuses.get("failed", 0),
        cancelled=statuses.get("cancelled", 0),
        abandoned=statuses.get("abandoned", 0),
        active=overall.missions - overall.finished,
        success_rate=overall.completed / overall.finished if overall.finished else None,
        duration_p50_ms=p50,
        duration_p90_ms=p90,
        total_tokens=overall.tokens,
        total_cost=overall.cost,
        by_backend=_groups(by_backend),
        by_model=_groups(by_model),
        per_day=[
            MissionDay(day=day, missions=c[0], completed=c[1], failed=c[2], other=c[3])
            for day, c in sorted(per_day.items())
        ],
    )


def _token_usage(conn: sqlite3.Connection, lo: str, hi: str) -> list[ModelUsage]:
    rows = conn.execute(
        "SELECT model, count(*), sum(input_tokens), sum(output_tokens), "
        "sum(cache_read_tokens), sum(cache_creation_tokens), sum(reasoning_tokens), "
        "coalesce(sum(cost), 0.0), sum(cost IS NULL) FROM mission_llm_calls "
        "WHERE called_at >= ? AND called_at < ? GROUP BY model",
        (lo, hi),
    )
    usage = [
        ModelUsage(
            model=r[0],
            calls=r[1],
            input_tokens=r[2],
            output_tokens=r[3],
            cache_read_tokens=r[4],
            cache_creation_tokens=r[5],
            reasoning_tokens=r[6],
            total_tokens=r[2] + r[3],
            cost_usd=r[7],
            unpriced_calls=r[8],
        )
        for r in rows
    ]
    return sorted(usage, key=lambda u: (-u.cost_usd, -u.total_tokens, u.model))


def _alerts(conn: sqlite3.Connection, since: dt.datetime, until: dt.datetime) -> AlertsSection:
    lo, hi = format_timestamp(since), format_timestamp(until)
    health = {h.rule: h for h in read_rule_health(conn)}
    live: dict[str, list[str]] = {}
    for status in read_alert_states(conn):
        live.setdefault(status.rule, []).append(status.state.value)
    fired = {
        rule: (count, last)
        for rule, count, last in conn.execute(
            "SELECT rule, count(*), max(at) FROM alert_events "
            "WHERE to_state = 'firing' AND at >= ? AND at < ? GROUP BY rule",
            (lo, hi),
        )
    }
    changed = conn.execute(
        "SELECT count(*) FROM alert_events WHERE at >= ? AND at < ?", (lo, hi)
    ).fetchone()[0]
    rules = []
    for rule in sorted(set(health) | set(live) | set(fired)):
        h = health.get(rule)
        states = live.get(rule, [])
        count, last = fired.get(rule, (0, None))
        rules.append(
            AlertRuleSummary(
                rule=rule,
                health=h.health if h is not None else "unknown",
                evaluations=h.evaluations_total if h is not None else 0,
                errors=h.errors_total if h is not None else 0,
                last_error=h.last_error if h is not None else None,
                last_evaluated_at=_stamp(h.last_evaluated_at if h is not None else None),
                firing_now=states.count("firing"),
                pending_now=states.count("pending"),
                fired_in_range=count,
                last_fired_at=last,
            )
        )
    changes = read_alert_events(conn, since=since, until=until, limit=_ALERT_CHANGES_SHOWN)
    return AlertsSection(
        available=True,
        rules=rules,
        changes=[
            AlertChange(
                at=format_timestamp(c.at),
                rule=c.rule,
                labels=dict(c.labels),
                from_state=c.from_state.value,
                to_state=c.to_state.value,
                value=c.value,
                message=c.message,
            )
            for c in changes
        ],
        changes_in_range=changed,
        firings_in_range=sum(count for count, _ in fired.values()),
    )


def _stamp(value: dt.datetime | None) -> str | None:
    return None if value is None else format_timestamp(value)
