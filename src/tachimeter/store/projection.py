"""Projections: tables derived from events, maintained inside the write transaction.

The store writes each batch of events in one transaction and, in the same transaction,
hands the *newly inserted* events (duplicates of already stored ids are filtered out
first, so replays never count twice) to every registered projection. A projection
updates its own tables incrementally (``apply``) and can recompute them from the raw
``analytics_events`` rows (``rebuild``); the incremental result must equal the rebuild.

Examples: the spec 355 summaries (``user_activity``, ``feature_usage``,
``analytics_sessions``, ``funnel_conversions``), the mission tables, metric points
derived from performance and business events.

A projection may keep rows of its tables in memory (:class:`RowCache`) so that a batch
is merged without reading them back. Such a cache is only right while nothing else
changed the tables: the store calls a projection's optional ``discard()`` when a batch
is rolled back, and the cache empties itself when another connection committed to the
file or the schema changed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar, runtime_checkable

from tachimeter.model.events import AnalyticsEvent
from tachimeter.model.rows import EventRow

__all__ = ["Projection", "RowCache", "discard_caches"]

# Both versions in one statement: every statement of the writer is a GIL round trip.
_VERSIONS = "SELECT * FROM pragma_data_version(), pragma_schema_version()"

_K = TypeVar("_K")
_V = TypeVar("_V")


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


class RowCache(Generic[_K, _V]):
    """A projection's bounded in-memory copy of some of its rows, keyed by row key.

    Call :meth:`check` at the start of each ``apply``: it empties the cache when the
    connection differs from the last one, or when another connection committed to the
    file (``PRAGMA data_version``) or the schema changed (``PRAGMA schema_version``)
    since. Past ``limit`` entries the oldest inserted half is dropped: a miss only costs
    a read of the stored row.

    >>> cache: RowCache[str, int] = RowCache(limit=2)
    >>> cache.put("a", 1); cache.put("b", 2); cache.put("c", 3)
    >>> cache.get("a"), cache.get("c")
    (None, 3)
    """

    __slots__ = ("_conn", "_data", "_limit", "_versions")

    def __init__(self, limit: int) -> None:
        self._limit = max(1, limit)
        self._data: dict[_K, _V] = {}
        self._conn: int | None = None
        self._versions: tuple[int, ...] | None = None

    def check(self, conn: sqlite3.Connection) -> None:
        """Empty the cache if its rows may differ from the tables ``conn`` sees."""
        versions = tuple(conn.execute(_VERSIONS).fetchone())
        if id(conn) != self._conn or versions != self._versions:
            self._data.clear()
            self._conn = id(conn)
            self._versions = versions

    def get(self, key: _K) -> _V | None:
        """The cached value, or None."""
        return self._data.get(key)

    def put(self, key: _K, value: _V) -> None:
        """Cache a value (the row as it will be once the transaction commits)."""
        data = self._data
        if key not in data and len(data) >= self._limit:
            for old in list(data)[: max(1, len(data) // 2)]:
                del data[old]
        data[key] = value

    def pop(self, key: _K) -> None:
        """Forget one entry (its row was deleted or replaced)."""
        self._data.pop(key, None)

    def clear(self) -> None:
        """Forget everything (a rollback, a rebuild)."""
        self._data.clear()
        self._versions = None

    def __len__(self) -> int:
        return len(self._data)


def discard_caches(projections: Sequence[Projection]) -> None:
    """Tell projections that keep rows in memory that the transaction was rolled back."""
    for projection in projections:
        discard = getattr(projection, "discard", None)
        if callable(discard):
            discard()
