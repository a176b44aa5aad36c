"""Projections: tables derived from events, maintained inside the write transaction.

The store writes each batch of events in one transaction and, in the same transaction,
hands the *newly inserted* events (duplicates of already stored ids are filtered out
first, so replays never count twice) to every registered projection. A projection
updates its own tables incrementally (``apply``) and can recompute them from the raw
``analytics_events`` rows (``rebuild``); the incremental result must equal the rebuild.

Examples: the spec 355 summaries (``user_activity``, ``feature_usage``,
``analytics_sessions``, ``funnel_conversions``), the mission tables, metric points
derived from performance and business events.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from tachimeter.model.events import AnalyticsEvent
from tachimeter.model.rows import EventRow

__all__ = ["Projection"]


@runtime_checkable
class Projection(Protocol):
    """Keeps derived tables in step with ``analytics_events``."""

    @property
    def name(self) -> str:
        """Unique name (used in errors and the rebuild command)."""
        ...

    def apply(
        self,
        conn: sqlite3.Connection,
        events: Sequence[AnalyticsEvent],
        rows: Sequence[EventRow],
    ) -> None:
        """Fold newly stored events (``rows[i]`` is ``events[i]``'s row) into the tables.

        Runs inside the store's write transaction: do not commit or roll back; raise to
        abort the whole batch.
        """
        ...

    def rebuild(self, conn: sqlite3.Connection) -> None:
        """Recompute the tables from ``analytics_events`` (inside a transaction)."""
        ...
