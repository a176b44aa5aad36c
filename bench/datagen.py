"""Seeded, realistic agent-product event data for the analytics tests and benchmarks.

``generate(seed=0, events=200_000, users=2_000, days=30)`` simulates users of an agent
product: cohorts that sign up over the period and churn, sessions with page views (web
clients), feature use, searches with unicode queries, missions that go
``mission_created -> mission_started -> mission_step_completed* -> mission_completed``
with drop-offs, failures and some completions hours later (after a funnel's conversion
window), tool calls, token and cost business events, LLM latency, errors.

Awkward cases on purpose: sessions with a given id, with a collector-assigned id and
without any (the server splits those by inactivity), anonymous events, unicode user ids
and property values, events exactly on hour, day and ISO-week boundaries, events that
arrive late (hours to days after they happened) and so out of order.

The result lists events in *arrival* order (``received_at`` ascending), with their
``analytics_events`` rows (spec 355's ten columns plus migration 2's ``category``,
``priority``, ``mission_id``, ``received_at``). Everything, ids included, is a pure
function of the arguments: same seed, same bytes.

>>> data = generate(seed=1, events=2_000, users=50, days=3)
>>> len(data.events) == len(data.rows) >= 2_000
True
"""

from __future__ import annotations

import bisect
import datetime as dt
import random
import sqlite3
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tachimeter.model.data import (
    BusinessEventData,
    BusinessMetricType,
    ErrorEventData,
    ErrorSeverity,
    EventMetadata,
    PerformanceEventData,
    UsageEventData,
)
from tachimeter.model.event_types import Custom, EventPriority, EventType
from tachimeter.model.events import AnalyticsEvent, CallKind
from tachimeter.model.rows import event_to_row

__all__ = [
    "DEFAULT_START",
    "GENERATOR_VERSION",
    "Dataset",
    "create_database",
    "generate",
    "insert_rows",
    "row_of",
]

# Bumped whenever the output of generate() changes, so cached benchmark databases are rebuilt.
GENERATOR_VERSION = 1

# A Monday at midnight UTC: day, week and month boundaries all fall inside 30 days.
DEFAULT_START = dt.datetime(2024, 2, 26, tzinfo=dt.UTC)

_US = dt.timedelta(microseconds=1)
_PAGES = ("/", "/missions", "/missions/new", "/settings", "/docs/getting-started", "/billing")
_REFERRERS = ("https://www.google.com/", "https://news.ycombinator.com/", None, None)
_FEATURES = ("search", "code_review", "refactor", "chat", "file_edit", "terminal")
_ACTIONS = ("open", "run", "apply", "dismiss")
_TOOLS = ("web_search", "read_file", "write_file", "run_tests", "grep")
_MODELS = ("claude-sonnet-4", "gpt-4o", "gemini-2.5-pro")
_QUERIES = (
    "refactor auth module",
    "café au lait",
    "東京 天気",
    "naïve résumé",
    "emoji 🚀 launch",
    "Ünïcödé",
    "how to fix flaky tests",
    "Привет мир",
)
_COUNTRIES = (("FR", "Paris"), ("JP", "Tōkyō"), ("US", "New York"), ("DE", "München"))
_OSES = ("linux", "macos", "windows")
_BROWSERS = ("firefox", "chrome", "safari")
_SEARCH = Custom("search_performed")


@dataclass(frozen=True, slots=True)
class Dataset:
    """Generated events in arrival order, their rows, and the period they cover."""

    events: list[AnalyticsEvent]
    rows: list[tuple[Any, ...]]
    start: dt.datetime
    end: dt.datetime


@dataclass(slots=True)
class _User:
    user_id: str
    weight: float
    first_day: int
    last_day: int
    web: bool
    metadata: EventMetadata
    place: tuple[str, str] | None
    identified: bool = False


def row_of(event: AnalyticsEvent, received_at: str) -> tuple[Any, ...]:
    """The 14-column ``analytics_events`` row of an event (what the store writes)."""
    row = event_to_row(event)
    mission_id = None
    if isinstance(event.data, dict):
        value = event.data.get("mission_id")
        mission_id = value if isinstance(value, str) else None
    return (
        *row.astuple(),
        event.category.value,
        event.priority.value,
        mission_id,
        received_at,
    )


def generate(
    *,
    seed: int = 0,
    events: int = 200_000,
    users: int = 2_000,
    days: int = 30,
    start: dt.datetime = DEFAULT_START,
) -> Dataset:
    """At least ``events`` events of ``users`` users over ``days`` days from ``start``."""
    rng = random.Random(seed)
    end = start + dt.timedelta(days=days)
    people = [_make_user(rng, i, days) for i in range(users)]
    cumulative = list(_accumulate(u.weight for u in people))
    produced: list[tuple[dt.datetime, AnalyticsEvent]] = []
    # Every user signs up (a first session on their first day), then activity follows weight.
    for user in people:
        produced.extend(_session(rng, user, start + dt.timedelta(days=user.first_day), end))
    while len(produced) < events:
        user = people[bisect.bisect_left(cumulative, rng.random() * cumulative[-1])]
        day = rng.randint(user.first_day, user.last_day)
        produced.extend(_session(rng, user, start + dt.timedelta(days=day), end))
    arrivals: list[tuple[str, str, AnalyticsEvent]] = []
    for received, event in produced:
        # isoformat of an aware UTC datetime is the stored form with "+00:00" for "Z".
        text = received.isoformat(timespec="microseconds")[:26] + "Z"
        arrivals.append((text, str(event.id), event))
    arrivals.sort(key=lambda a: (a[0], a[1]))
    return Dataset(
        events=[a[2] for a in arrivals],
        rows=[row_of(a[2], a[0]) for a in arrivals],
        start=start,
        end=end,
    )


def _accumulate(values: Iterable[float]) -> Iterable[float]:
    total = 0.0
    for v in values:
        total += v
        yield total


def _make_user(rng: random.Random, index: int, days: int) -> _User:
    # 1% of users have unicode ids: identity handling must not assume ASCII.
    user_id = f"usér-{index:05d}-ß" if rng.random() < 0.01 else f"user-{index:05d}"
    first_day = min(days - 1, int(rng.random() ** 1.5 * days))
    lifetime = int(rng.expovariate(1 / 12))
    web = rng.random() < 0.6
    custom: dict[str, Any] = {}
    if web:
        custom["browser"] = rng.choice(_BROWSERS)
        custom["device_type"] = rng.choice(("desktop", "desktop", "mobile", "tablet"))
    metadata = EventMetadata(
        app_version=rng.choice(("1.4.0", "1.5.0", "1.5.1")),
        os=rng.choice(_OSES),
        locale=rng.choice(("en_US", "fr_FR", "ja_JP")),
        custom=custom,
    )
    return _User(
        user_id=user_id,
        weight=rng.lognormvariate(0, 1),
        first_day=first_day,
        last_day=min(days - 1, first_day + lifetime),
        web=web,
        metadata=metadata,
        place=rng.choice(_COUNTRIES) if rng.random() < 0.5 else None,
    )


def _event_id(rng: random.Random, when: dt.datetime) -> uuid.UUID:
    # UUIDv7 layout (see tachimeter.model.ids) with seeded random bits: reproducible ids.
    micros = (when - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // _US
    ms, rest = divmod(micros, 1000)
    frac = (rest << 12) // 1000
    value = (ms << 80) | (0x7 << 76) | (frac << 64) | (0b10 << 62) | rng.getrandbits(62)
    return uuid.UUID(int=value)


def _session_start(rng: random.Random, day_start: dt.datetime) -> dt.datetime:
    roll = rng.random()
    if roll < 0.01:
        return day_start  # midnight UTC (a Monday midnight every seventh day)
    if roll < 0.04:
        return day_start + dt.timedelta(hours=rng.randrange(24))  # exactly on the hour
    # Diurnal pattern: most activity in the (UTC) working day.
    hour = min(23.999, max(0.0, rng.gauss(14, 4)))
    return day_start + dt.timedelta(microseconds=int(hour * 3_600_000_000))


class _SessionWriter:
    """Emits one session's events, advancing its clock."""

    __slots__ = ("assigned", "end", "metadata", "out", "rng", "session_id", "t", "user")

    def __init__(self, rng: random.Random, user: _User, day_start: dt.datetime, end: dt.datetime):
        self.rng = rng
        self.user = user
        self.end = end
        self.out: list[tuple[dt.datetime, AnalyticsEvent]] = []
        kind = rng.random()
        self.session_id: str | None = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        self.assigned = False
        if kind < 0.15:
            self.session_id = None  # arrived at the server without one: split by inactivity
        elif kind < 0.30:
            self.assigned = True  # the collector filled in its own session id
        metadata = user.metadata
        if user.place is not None:
            country, city = user.place
            metadata = metadata.with_custom("country", country).with_custom("city", city)
        self.metadata = metadata
        self.t = _session_start(rng, day_start)

    def emit(
        self,
        event_type: EventType | Custom,
        data: Any = None,
        *,
        call: CallKind = "track",
        page: str | None = None,
        referrer: str | None = None,
        anonymous: bool = False,
        priority: EventPriority = EventPriority.NORMAL,
        at: dt.datetime | None = None,
    ) -> None:
        when = self.t if at is None else at
        if when >= self.end:
            return
        event = AnalyticsEvent(
            id=_event_id(self.rng, when),
            category=event_type.category(),
            event_type=event_type,
            timestamp=when,
            session_id=self.session_id,
            priority=priority,
            data=data,
            metadata=self.metadata,
            user_id=None if anonymous else self.user.user_id,
            call=call,
            page_url=page,
            referrer=referrer,
            session_assigned=self.assigned,
        )
        self.out.append((when + _delay(self.rng), event))

    def advance(self, mean_seconds: float) -> None:
        micros = int(self.rng.expovariate(1 / mean_seconds) * 1e6) + 1
        self.t += dt.timedelta(microseconds=micros)


def _session(
    rng: random.Random, user: _User, day_start: dt.datetime, end: dt.datetime
) -> list[tuple[dt.datetime, AnalyticsEvent]]:
    w = _SessionWriter(rng, user, day_start, end)
    # A web visitor's first page view happens before they sign in: an anonymous event.
    if user.web and not user.identified and rng.random() < 0.7:
        w.emit(
            Custom("page_view"),
            call="page",
            page="/",
            referrer=rng.choice(_REFERRERS),
            anonymous=True,
        )
        w.advance(5)
    w.emit(EventType.SESSION_STARTED)
    if user.web:
        w.emit(
            Custom("page_view"),
            call="page",
            page=rng.choice(_PAGES),
            referrer=rng.choice(_REFERRERS),
        )
    if not user.identified:
        w.advance(3)
        w.emit(Custom("user_identified"), call="identify")
        user.identified = True
    actions = 1 + int(rng.expovariate(1 / 5))
    for _ in range(actions):
        # Now and then a long pause: beyond 30 minutes the server starts a new session.
        w.advance(3_000 if rng.random() < 0.03 else 40)
        roll = rng.random()
        if user.web and roll < 0.25:
            w.emit(Custom("page_view"), call="page", page=rng.choice(_PAGES))
        elif roll < 0.45:
            duration = int(rng.lognormvariate(6, 1))
            data = UsageEventData(
                feature=rng.choice(_FEATURES),
                action=rng.choice(_ACTIONS),
                success=rng.random() < 0.9,
                duration_ms=duration if rng.random() < 0.8 else None,
                extra={"surface": rng.choice(("cli", "ide", "web"))},
            )
            w.emit(EventType.FEATURE_USED, data)
        elif roll < 0.55:
            query = {"query": rng.choice(_QUERIES), "result_count": rng.randrange(0, 50)}
            w.emit(_SEARCH, query)
        elif roll < 0.85:
            _mission(w)
        elif roll < 0.93:
            latency = PerformanceEventData(
                metric="llm_latency",
                value=round(rng.lognormvariate(6.5, 0.7), 3),
                unit="ms",
                tags={"model": rng.choice(_MODELS)},
            )
            w.emit(EventType.RESPONSE_LATENCY, latency, priority=EventPriority.LOW)
        else:
            error = ErrorEventData(
                code=rng.choice(("E_TIMEOUT", "E_RATE_LIMIT", "E_TOOL")),
                message="tool call failed",
                severity=rng.choice((ErrorSeverity.ERROR, ErrorSeverity.WARNING)),
                component=rng.choice(("tools", "llm", "ui")),
            )
            w.emit(EventType.ERROR_OCCURRED, error, priority=EventPriority.HIGH)
    if rng.random() < 0.8:
        w.advance(20)
        w.emit(EventType.SESSION_ENDED)
    return w.out


def _mission(w: _SessionWriter) -> None:
    rng = w.rng
    mission_id = f"m-{rng.getrandbits(48):012x}"
    model = rng.choice(_MODELS)
    props = {"mission_id": mission_id, "model": model, "complexity": rng.choice(("low", "high"))}
    w.emit(EventType.MISSION_CREATED, dict(props))
    if rng.random() < 0.2:
        return  # dropped off before starting
    w.advance(15)
    w.emit(EventType.MISSION_STARTED, dict(props))
    for step in range(1 + int(rng.expovariate(1 / 2))):
        w.advance(30)
        tool = {
            "mission_id": mission_id,
            "gen_ai.tool.name": rng.choice(_TOOLS),
            "duration_ms": round(rng.lognormvariate(5, 1), 2),
            "success": rng.random() < 0.93,
        }
        w.emit(EventType.TOOL_INVOKED, tool)
        tokens_in, tokens_out = rng.randrange(200, 8000), rng.randrange(50, 2000)
        for metric_type, value in (
            (BusinessMetricType.INPUT_TOKENS, tokens_in),
            (BusinessMetricType.OUTPUT_TOKENS, tokens_out),
        ):
            usage = BusinessEventData(
                metric_type=metric_type, value=value, unit="tokens", model=model
            )
            w.emit(EventType.TOKENS_CONSUMED, usage)
        cost = BusinessEventData(
            metric_type=BusinessMetricType.COST_USD,
            value=round((tokens_in * 3 + tokens_out * 15) / 1e6, 6),
            unit="usd",
            model=model,
        )
        w.emit(EventType.COST_INCURRED, cost)
        w.emit(EventType.MISSION_STEP_COMPLETED, {**props, "step": step})
    outcome = rng.random()
    if outcome < 0.6:
        if rng.random() < 0.06:
            # Finished hours later, in another session: after a short conversion window.
            later = w.t + dt.timedelta(seconds=rng.uniform(3_600, 30 * 3_600))
            w.emit(EventType.MISSION_COMPLETED, dict(props), at=later)
        else:
            w.advance(60)
            w.emit(EventType.MISSION_COMPLETED, dict(props))
    elif outcome < 0.8:
        w.advance(60)
        w.emit(EventType.MISSION_FAILED, dict(props), priority=EventPriority.HIGH)


def _delay(rng: random.Random) -> dt.timedelta:
    roll = rng.random()
    if roll < 0.02:
        # Late: an agent offline for hours, a spool replayed the next day.
        return dt.timedelta(seconds=rng.uniform(3_600, 3 * 86_400))
    if roll < 0.10:
        return dt.timedelta(seconds=rng.uniform(1, 120))
    return dt.timedelta(microseconds=rng.randrange(1_000, 2_000_000))


# -- databases ----------------------------------------------------------------------------

_INSERT = (
    "INSERT INTO analytics_events (id, event_type, event_name, timestamp, session_id, user_id, "
    "properties, context, page_url, referrer, category, priority, mission_id, received_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def create_database(path: str | Path) -> sqlite3.Connection:
    """A new SQLite file migrated by the store, and a writable connection to it (WAL)."""
    from tachimeter.store.sqlite import SQLiteStore

    SQLiteStore(path).close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def insert_rows(
    conn: sqlite3.Connection,
    rows: Sequence[tuple[Any, ...]],
    events: Sequence[AnalyticsEvent] | None = None,
    *,
    projections: Sequence[Any] = (),
    batch_sizes: Iterable[int] | None = None,
) -> None:
    """Insert rows in order; each batch is one transaction in which projections apply.

    ``batch_sizes`` gives the size of each successive batch (the last one repeats);
    None writes everything in one transaction.
    """
    sizes = iter(batch_sizes) if batch_sizes is not None else iter([max(1, len(rows))])
    size = max(1, len(rows))
    i = 0
    while i < len(rows):
        size = next(sizes, size)
        batch = rows[i : i + size]
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(_INSERT, batch)
        if projections:
            from tachimeter.model.rows import EventRow

            event_rows = [EventRow(*r[:10]) for r in batch]
            batch_events = events[i : i + size] if events is not None else []
            for projection in projections:
                projection.apply(conn, batch_events, event_rows)
        conn.execute("COMMIT")
        i += size
