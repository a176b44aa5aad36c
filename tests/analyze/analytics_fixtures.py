"""Fixtures for the analytics tests: the seeded 200k-event database, built once, and small
databases built from hand-written events for edge cases."""

from __future__ import annotations

import datetime as dt
import sqlite3
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# bench/ (the data generator) lives at the repository root, next to tests/.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import analytics_reference as ref  # noqa: E402
from bench.datagen import Dataset, create_database, generate, insert_rows, row_of  # noqa: E402

from tachimeter.analyze import (  # noqa: E402
    FunnelDefinition,
    FunnelExclusion,
    FunnelStep,
    PropertyFilter,
    define_funnel,
    rebuild_summaries,
)
from tachimeter.model.data import EventMetadata  # noqa: E402
from tachimeter.model.event_types import EventPriority, event_type_from_name  # noqa: E402
from tachimeter.model.events import AnalyticsEvent, CallKind  # noqa: E402
from tachimeter.model.ids import uuid7_from_ns  # noqa: E402
from tachimeter.model.timestamps import to_ns  # noqa: E402

UTC = dt.UTC

MISSIONS = FunnelDefinition(
    name="missions",
    steps=(
        FunnelStep("mission_created"),
        FunnelStep("mission_started"),
        FunnelStep("mission_completed"),
    ),
    conversion_window=dt.timedelta(minutes=30),
)
STRICT = FunnelDefinition(
    name="strict_tools",
    steps=(
        FunnelStep("mission_started"),
        FunnelStep("tool_invoked"),
        FunnelStep("tokens_consumed"),
    ),
    conversion_window=dt.timedelta(hours=1),
    order="strict",
)
EXCLUDING = FunnelDefinition(
    name="hard_missions",
    steps=(
        FunnelStep("mission_created", (PropertyFilter("complexity", "eq", "high"),)),
        FunnelStep("mission_started"),
        FunnelStep("mission_completed"),
    ),
    conversion_window=dt.timedelta(hours=2),
    exclusions=(FunnelExclusion("mission_failed", from_step=1),),
)
SEEDED_FUNNELS = (MISSIONS, STRICT, EXCLUDING)


@dataclass(frozen=True)
class Seeded:
    """The seeded database: a read-only connection, the raw rows parsed, the period."""

    path: Path
    conn: sqlite3.Connection
    data: Dataset
    events: list[ref.Ev]
    start: dt.datetime
    end: dt.datetime


def open_readonly(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, check_same_thread=False)


@pytest.fixture(scope="session")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    """200k generated events of 2 000 users over 30 days, summaries rebuilt, 3 funnels."""
    data = generate(seed=7, events=200_000, users=2_000, days=30)
    path = tmp_path_factory.mktemp("seeded") / "analytics.db"
    conn = create_database(path)
    insert_rows(conn, data.rows)
    rebuild_summaries(conn)
    for funnel in SEEDED_FUNNELS:
        define_funnel(conn, funnel)  # computes the funnel's entries
    conn.close()
    reader = open_readonly(path)
    yield Seeded(
        path=path,
        conn=reader,
        data=data,
        events=ref.load(data.rows),
        start=data.start,
        end=data.end,
    )
    reader.close()


def at(text: str) -> dt.datetime:
    """An aware UTC datetime from ``2024-03-04 10:00:00.5``-style text."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def make_event(
    name: str,
    when: dt.datetime | str,
    *,
    user: str | None = "u1",
    session: str | None = None,
    props: Any = None,
    call: CallKind = "track",
    page: str | None = None,
    referrer: str | None = None,
    context: dict[str, Any] | None = None,
) -> AnalyticsEvent:
    """A hand-written event with a UUIDv7 id of its instant (events at one instant are
    ordered by the id's random bits)."""
    moment = at(when) if isinstance(when, str) else when
    kind = event_type_from_name(name)
    return AnalyticsEvent(
        id=uuid7_from_ns(to_ns(moment)),
        category=kind.category(),
        event_type=kind,
        timestamp=moment,
        session_id=session,
        priority=EventPriority.NORMAL,
        data=props,
        metadata=EventMetadata(custom=context or {}),
        user_id=user,
        call=call,
        page_url=page,
        referrer=referrer,
    )


@pytest.fixture
def small_db(tmp_path: Path) -> Iterator[Callable[..., sqlite3.Connection]]:
    """Build a database from events: ``small_db(events, funnels=())`` -> writable conn."""
    made: list[sqlite3.Connection] = []

    def build(
        events: Sequence[AnalyticsEvent], funnels: Sequence[FunnelDefinition] = ()
    ) -> sqlite3.Connection:
        conn = create_database(tmp_path / f"small{len(made)}.db")
        rows = [row_of(e, "2024-01-01T00:00:00.000000Z") for e in events]
        insert_rows(conn, rows)
        rebuild_summaries(conn)
        for funnel in funnels:
            define_funnel(conn, funnel)
        made.append(conn)
        return conn

    yield build
    for conn in made:
        conn.close()
