"""The mission tables, folded from mission events inside the store's write transaction.

:class:`MissionProjection` is a :class:`~tachimeter.store.projection.Projection`: give it
to the store sink (``StoreSink(store, projections=[MissionProjection()])``) and every
batch of newly stored mission events updates ``missions``, ``mission_tags``,
``mission_steps``, ``mission_tool_calls`` and ``mission_llm_calls`` (migration 4,
docs/missions.md) in the same transaction.

The fold does not depend on the order events arrive in (the collector may reorder across
priorities, a spool may replay old events late):

* child rows are keyed by ``(mission_key, seq)`` and inserted with ``OR IGNORE``;
* a mission's counters and totals are recomputed from its child rows;
* its status is that of the status-changing event with the highest ``seq``, so a late
  ``mission_started`` cannot undo a ``mission_completed``;
* creation time is the earliest event seen, last activity the latest.

So applying the same events in any order and any batching, or :meth:`rebuild` from
``analytics_events``, gives the same tables.

Abandonment: a process that crashed leaves its missions active. On start-up the store
calls :func:`abandon_stale_missions`, which records a ``mission_abandoned`` event
(``inferred: true``) for every active mission with no event for ``older_than``. If the
process was alive after all and its later events arrive, they win again: a real
ending always replaces an inferred one.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from typing import Any, Final

import msgspec

from tachimeter.missions import properties as p
from tachimeter.missions.lifecycle import ACTIVE_STATUSES, TERMINAL_STATUSES, MissionStatus
from tachimeter.missions.records import MissionAnalytics, MissionError, ToolUsage
from tachimeter.model.event_types import EventCategory, EventPriority, EventType
from tachimeter.model.events import AnalyticsEvent
from tachimeter.model.ids import uuid7_from_ns
from tachimeter.model.prices import DEFAULT_PRICE_TABLE, PriceTable
from tachimeter.model.rows import EventRow, event_to_row
from tachimeter.model.timestamps import format_timestamp, parse_timestamp, to_ns, utc_now
from tachimeter.model.tokens import TokenUsage

__all__ = [
    "DEFAULT_ABANDON_AFTER",
    "MISSION_TABLES",
    "MissionProjection",
    "abandon_stale_missions",
    "delete_missions",
    "read_mission",
]

DEFAULT_ABANDON_AFTER: Final = dt.timedelta(hours=1)
"""Inactivity after which an active mission is presumed abandoned: an agent emits an
event at least every LLM or tool call, and even long tool calls (builds, test suites)
end within minutes; an hour of silence means its process is gone."""

MISSION_TABLES: Final = (
    "missions",
    "mission_tags",
    "mission_steps",
    "mission_tool_calls",
    "mission_llm_calls",
)

_ACTIVE_SQL: Final = ", ".join(f"'{s.value}'" for s in sorted(ACTIVE_STATUSES, key=_order))  # type: ignore[name-defined]
