"""The event store Protocol: what the collector's sink and the analytics need of a backend.

SQLite (:class:`~tachimeter.store.sqlite.SQLiteStore`) is the first implementation; a
ClickHouse or columnar backend implements the same methods, so ``tachimeter.analyze``
and the :class:`~tachimeter.store.sink.StoreSink` work with either unchanged. SQL passed
to :meth:`EventStore.execute` is in the backend's :attr:`~EventStore.dialect`; callers
that write SQL by hand branch on it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Protocol, TypeAlias, cast, runtime_checkable

import msgspec

from tachimeter.model.events import AnalyticsEvent
from tachimeter.model.rows import row_to_event
from tachimeter.store.projection import Projection

__all__ = [
    "DecodedEvents",
    "EncodingStore",
    "EventStore",
    "QueryParams",
    "ReadConnection",
    "ReadCursor",
    "WriteResult",
    "decode_rows",
    "encode_ahead",
    "write_prepared",
]

QueryParams: TypeAlias = Sequence[Any] | Mapping[str, Any]
"""Positional (``?``) or named (``:name``) parameters of a read query."""


class WriteResult(msgspec.Struct, frozen=True, kw_only=True):
    """What one :meth:`EventStore.write_batch` did.

    ``inserted`` new events were stored; ``duplicates`` had an id already stored (or
    repeated within the batch: a replayed spool) and were skipped, not counted twice;
    ``rejected`` could not be turned into a row (their data does not serialize) and were
    skipped so that one bad event never blocks its batch.

    >>> WriteResult(inserted=98, duplicates=2).total
    100
    """

    inserted: int
    duplicates: int
    rejected: int = 0

    @property
    def total(self) -> int:
        """Events the batch held."""
        return self.inserted + self.duplicates + self.rejected


class DecodedEvents(msgspec.Struct, frozen=True, kw_only=True):
    """Events read back from stored rows, and the rows that did not decode.

    Rows written by another tool may hold bad JSON or unknown values; they are skipped
    and counted (``malformed``), with the first few ids kept for the error report.

    >>> DecodedEvents(events=[], malformed=1, malformed_ids=["x"]).malformed
    1
    """

    events: list[AnalyticsEvent]
    malformed: int = 0
    malformed_ids: list[str] = []


# Ids of malformed rows kept for a report: enough to find them, bounded for a huge table.
_MALFORMED_IDS_KEPT: Final = 10
# What decoding a hand-written row can raise: bad JSON or values (our ValidationError is a
# ValueError), wrong types in the metadata (msgspec's errors), a non-text column.
_DECODE_ERRORS: Final = (ValueError, TypeError, KeyError, msgspec.MsgspecError)


def decode_rows(rows: Iterable[Sequence[Any]]) -> DecodedEvents:
    """Events of ``analytics_events`` rows (the 10 spec 355 columns, in order).

    Rows that do not decode are skipped and counted, never raised: another tool may have
    written them.

    >>> decode_rows([("not-a-uuid", "track", "feature_used", "2025-01-01T00:00:00Z",
    ...               None, None, "{bad json", None, None, None)]).malformed
    1
    """
    events: list[AnalyticsEvent] = []
    malformed = 0
    malformed_ids: list[str] = []
    for row in rows:
        try:
            events.append(row_to_event(tuple(row[:10])))
        except _DECODE_ERRORS:
            malformed += 1
            if len(malformed_ids) < _MALFORMED_IDS_KEPT:
                malformed_ids.append(str(row[0]))
    return DecodedEvents(events=events, malformed=malformed, malformed_ids=malformed_ids)


@runtime_checkable
class ReadCursor(Protocol):
    """The part of a DB-API cursor that read queries use."""

    @property
    def description(self) -> Any:
        """Column descriptions of the last query (name first)."""
        ...

    def fetchone(self) -> Any:
        """The next row, or None."""
        ...

    def fetchall(self) -> list[Any]:
        """The remaining rows."""
        ...


@runtime_checkable
class ReadConnection(Protocol):
    """A read-only DB-API connection of a backend (``sqlite3.Connection`` for SQLite)."""

    def execute(self, sql: str, parameters: Any = ..., /) -> ReadCursor:
        """Run one statement."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


@runtime_checkable
class EventStore(Protocol):
    """Stores events and answers read-only queries over them.

    >>> import tempfile, pathlib
    >>> from tachimeter.store import SQLiteStore
    >>> with SQLiteStore(pathlib.Path(tempfile.mkdtemp()) / "a.db") as store:
    ...     isinstance(store, EventStore), store.dialect
    (True, 'sqlite')
    """

    @property
    def dialect(self) -> str:
        """SQL dialect of :meth:`execute` (``"sqlite"``, later ``"clickhouse"``)."""
        ...

    def write_batch(
        self,
        events: Sequence[AnalyticsEvent],
        *,
        projections: Sequence[Projection] = (),
    ) -> WriteResult:
        """Store events atomically, skipping ids already stored; raises ``StoreError``.

        ``projections`` receive exactly the newly inserted events, in the same
        transaction: a failing projection rolls the whole batch back.
        """
        ...

    def connect_reader(self) -> ReadConnection:
        """A new read-only connection; the caller closes it."""
        ...

    def execute(self, sql: str, params: QueryParams = ()) -> list[tuple[Any, ...]]:
        """Run one read-only statement and return its rows; raises ``QueryError``."""
        ...

    def event_count(
        self,
        *,
        event_name: str | None = None,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
    ) -> int:
        """Stored events, optionally of one name, with ``start <= timestamp < end``."""
        ...

    def read_events(
        self,
        *,
        event_name: str | None = None,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        limit: int | None = None,
    ) -> DecodedEvents:
        """Stored events in time order, malformed rows skipped and counted."""
        ...

    def close(self) -> None:
        """Release connections; later calls raise ``StoreError``."""
        ...


@runtime_checkable
class EncodingStore(Protocol):
    """An :class:`EventStore` that can turn events into rows before its write, on any
    thread: the ``StoreSink`` encodes each batch on its delivery thread so that the
    writer thread only writes. The encoded form is the backend's own."""

    def encode_batch(self, events: Sequence[AnalyticsEvent]) -> Any:
        """The events encoded for :meth:`write_encoded`."""
        ...

    def write_encoded(
        self,
        batches: Sequence[Any],
        *,
        projections: Sequence[Projection] = (),
    ) -> WriteResult:
        """Store encoded batches in one transaction, as ``write_batch`` does."""
        ...


def encode_ahead(store: EventStore, events: Sequence[AnalyticsEvent]) -> Any:
    """``events`` encoded for ``store``'s :meth:`EncodingStore.write_encoded`, on the
    calling thread; None when the store does not encode ahead or the events cannot be
    encoded (:func:`write_prepared` then writes them with ``write_batch``, which reports
    what is wrong)."""
    encode = getattr(store, "encode_batch", None)  # once per batch: cheaper than isinstance
    if encode is None:
        return None
    try:
        return encode(events)
    except Exception:
        return None


def write_prepared(
    store: EventStore,
    groups: Sequence[tuple[Sequence[AnalyticsEvent], Any]],
    *,
    projections: Sequence[Projection] = (),
) -> WriteResult:
    """Store ``(events, encoded)`` groups (``encoded`` from :func:`encode_ahead`) in one
    transaction: from the encoded rows when every group has them, else from the events."""
    encoded = [e for _, e in groups if e is not None]
    if encoded and len(encoded) == len(groups):  # only an EncodingStore encodes ahead
        return cast(EncodingStore, store).write_encoded(encoded, projections=projections)
    events = groups[0][0] if len(groups) == 1 else [e for evs, _ in groups for e in evs]
    return store.write_batch(events, projections=projections)
