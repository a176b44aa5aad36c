"""``SQLiteStore``: the embedded default store, one SQLite file in WAL mode.

Connections (DESIGN.md, Store):

* one writer connection, used by whoever writes (normally the
  :class:`~tachimeter.store.sink.StoreSink`'s writer thread); a lock serializes the
  rare other writers in the process (migrations, a retention job);
* readers get connections of their own, opened read-only (``mode=ro`` plus
  ``PRAGMA query_only``), from a small pool: in WAL mode they never block the writer and
  the writer never blocks them.

Durability: every write is one transaction. In WAL mode a commit is in the operating
system's hands when it returns, so with ``storage.synchronous = "NORMAL"`` (the default)
committed events survive a crash or SIGKILL of the process; a power failure can lose the
last commits (never corrupt the file). ``"FULL"`` fsyncs the WAL at every commit and
loses nothing on power failure either, at a cost in write throughput.

Opening a file is safe against versions: a database written by a newer Tachimeter (a
schema version beyond the known migrations) is refused before anything is written to it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import msgspec

from tachimeter.config.settings import AnalyticsConfig
from tachimeter.errors import QueryError, StoreError
from tachimeter.model.codec import data_to_builtins
from tachimeter.model.data import EventMetadata, UsageEventData
from tachimeter.model.event_types import EventCategory, EventPriority, EventType
from tachimeter.model.events import AnalyticsEvent
from tachimeter.model.rows import EventRow, event_to_row
from tachimeter.model.timestamps import UTC, format_timestamp, utc_now
from tachimeter.store.backend import DecodedEvents, QueryParams, WriteResult, decode_rows
from tachimeter.store.bulk import execute_rows
from tachimeter.store.migrations import Migration, all_migrations
from tachimeter.store.migrator import MigrationState, Migrator
from tachimeter.store.projection import Projection, discard_caches

__all__ = ["EncodedBatch", "SQLiteStore"]

_log = logging.getLogger("tachimeter.store")

_COLUMNS: Final = (
    "id, event_type, event_name, timestamp, session_id, user_id, properties, context, "
    "page_url, referrer"
)
_INSERT: Final = (
    f"INSERT INTO analytics_events ({_COLUMNS}, category, priority, mission_id, received_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# Ids looked up per statement when finding duplicates: below SQLite's historical limit of
# 999 bound variables, so any build of SQLite accepts it.
_ID_CHUNK: Final = 500
# Idle read-only connections kept for reuse: one per concurrent reader of a small server;
# more readers still work, their connections are closed when returned.
_IDLE_READERS: Final = 4
# Page cache of the writer, in KiB (negative cache_size): an insert touches one leaf page
# in each of analytics_events' ten B-trees, and the user and session indexes take new
# events all over their range; 32 MB keeps their hot pages cached for millions of rows
# instead of SQLite's default 2 MB.
_WRITER_CACHE_KIB: Final = 32 * 1024
# WAL pages after which the writer's commit copies the WAL back into the database
# (SQLite's default is 1 000, 4 MB). A page written by several transactions between two
# checkpoints is copied once: with the server's 1 000-event transactions and every
# projection, 10 000 pages (40 MB of WAL) made ingest 15% faster on bench/store.py's
# stream at 600 000 rows (74 -> 63 us an event, interleaved), and plain inserts 13%.
# 10 000-event transactions pass either bound at each commit and gain nothing.
_WAL_AUTOCHECKPOINT_PAGES: Final = 10_000
# Prepared statements the writer keeps (sqlite3's default is 128).
_WRITER_STATEMENTS: Final = 512
# Hints for the SQLite errors a write can meet, by the start of their extended error name.
_HINTS: Final = (
    (
        "SQLITE_FULL",
        "the disk is full (or the database reached its max_page_count): free some space; "
        "writing resumes by itself",
    ),
    (
        "SQLITE_READONLY",
        "the database is read-only: check the permissions of the file and of its directory "
        "(WAL mode creates -wal and -shm files beside it); writing resumes when fixed",
    ),
    (
        "SQLITE_BUSY",
        "another connection held the write lock for longer than storage.busy_timeout_ms: "
        "raise it, or find the process holding a long write transaction",
    ),
    (
        "SQLITE_CORRUPT",
        "the file is damaged: restore it from a backup or point storage.path elsewhere",
    ),
    ("SQLITE_NOTADB", "the file is not a SQLite database: point storage.path elsewhere"),
    ("SQLITE_IOERR", "the operating system reported an I/O error: check the disk"),
    (
        "SQLITE_CANTOPEN",
        "the file cannot be opened: check the path and the permissions of its directory",
    ),
)
# Row contexts cached by the row encoder. A collector stamps one metadata object on all
# its events, so a handful of (metadata, category, priority, data kind) keys are in use;
# the bound matters only for callers building fresh metadata per event.
_CONTEXT_CACHE: Final = 256
_json_encode: Final = msgspec.json.Encoder().encode
_NO_CONTEXT: Final[Any] = object()
# Enum members' values and event names by id: an Enum property costs a Python call per
# read, a dict lookup by id is C (three reads per event).
_ENUM_VALUES: Final[dict[int, str]] = {id(m): m.value for m in (*EventCategory, *EventPriority)}
_TYPE_NAMES: Final[dict[int, str]] = {id(t): t.event_name for t in EventType}
_decode_texts: Final = msgspec.json.Decoder(list[str]).decode

# Connections inherited across os.fork(): never closed by the child (closing one could
# checkpoint the parent's WAL under its feet) and never collected (which would close it).
_inherited: list[sqlite3.Connection] = []
_stores: weakref.WeakSet[SQLiteStore] = weakref.WeakSet()
_fork_hook_lock = threading.Lock()
_fork_hook_installed = False


def _reset_stores_after_fork() -> None:
    for store in list(_stores):
        store._reset_after_fork()


def _install_fork_hook() -> None:
    global _fork_hook_installed
    with _fork_hook_lock:
        if not _fork_hook_installed:
            os.register_at_fork(after_in_child=_reset_stores_after_fork)
            _fork_hook_installed = True


def _hint(exc: sqlite3.Error) -> str:
    name = getattr(exc, "sqlite_errorname", "") or ""
    for prefix, hint in _HINTS:
        if name.startswith(prefix):
            return f"{hint} [{name}]"
    return f"[{name}]" if name else ""


def _mission_id(event: AnalyticsEvent) -> str | None:
    """``properties.mission_id`` (key-value or usage extra), else metadata ``mission_id``."""
    data = event.data
    value: Any = None
    if isinstance(data, dict):
        value = data.get("mission_id")
    elif isinstance(data, UsageEventData):
        value = data.extra.get("mission_id")
    if value is None and event.metadata.custom:
        value = event.metadata.custom.get("mission_id")
    if isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


class _RowEncoder:
    """``event_to_row`` plus migration 2's columns, for a whole batch at once.

    Same rows as ``event_to_row`` (a test checks this), in half the time:

    * an event's context is a function of its metadata, category, priority, data kind and
      ``session_assigned`` only, and building it is most of ``event_to_row``'s time: the
      first event of each combination goes through ``event_to_row`` and its context is
      reused for the others;
    * ids and UTC timestamps are turned into text by one msgspec call per batch (C code)
      instead of ``UUID.__str__`` and string formatting per event.
    """

    __slots__ = ("_by_value", "_contexts")

    def __init__(self) -> None:
        # key -> (the metadata object, kept alive so its id is not reused; the context)
        self._contexts: dict[tuple[Any, ...], tuple[EventMetadata, str | None]] = {}
        # The same by the metadata's value: events decoded from the wire (server ingest,
        # a replayed spool) carry equal metadata in distinct objects.
        self._by_value: dict[tuple[Any, ...], str | None] = {}

    @staticmethod
    def ids(events: Sequence[AnalyticsEvent]) -> list[str]:
        """The events' ids as text (canonical lowercase hyphenated, as ``str(uuid)``)."""
        return _decode_texts(_json_encode([e.id for e in events]))

    @staticmethod
    def _stamps(events: Sequence[AnalyticsEvent]) -> list[str]:
        if all(e.timestamp.tzinfo is UTC for e in events):
            # msgspec writes aware UTC datetimes as RFC 3339 with "Z" and six fractional
            # digits, leaving the fraction out when it is zero: put it back.
            stamps = _decode_texts(_json_encode([e.timestamp for e in events]))
            return [t if len(t) == 27 else t[:-1] + ".000000Z" for t in stamps]
        return [format_timestamp(e.timestamp) for e in events]

    def encode(
        self, event: AnalyticsEvent, event_id: str, stamp: str, received_at: str
    ) -> tuple[EventRow, tuple[Any, ...]]:
        """The event's ``EventRow`` and its ``analytics_events`` insert values."""
        metadata = event.metadata
        data = event.data
        # Enum members hash in Python code; their ids are as unique and hash in C.
        key = (
            id(metadata),
            id(event.category),
            id(event.priority),
            type(data),
            event.session_assigned,
        )
        cached = self._contexts.get(key)
        context: Any = _NO_CONTEXT
        if cached is not None and cached[0] is metadata:
            context = cached[1]
        else:
            value_key = (_json_encode(metadata), *key[1:])
            context = self._by_value.get(value_key, _NO_CONTEXT)
        if context is _NO_CONTEXT:
            row = event_to_row(event)
            if len(self._contexts) >= _CONTEXT_CACHE:
                self._contexts.clear()
            self._contexts[key] = (metadata, row.context)
            if len(self._by_value) >= _CONTEXT_CACHE:
                self._by_value.clear()
            self._by_value[value_key] = row.context
        else:
            kind = event.event_type
            row = EventRow(
                event_id,
                event.call,
                _TYPE_NAMES.get(id(kind)) or kind.event_name,
                stamp,
                event.session_id,
                event.user_id,
                None if data is None else _json_encode(data_to_builtins(data)).decode(),
                context,
                event.page_url,
                event.referrer,
            )
        values = (
            row.id,
            row.event_type,
            row.event_name,
            row.timestamp,
            row.session_id,
            row.user_id,
            row.properties,
            row.context,
            row.page_url,
            row.referrer,
            _ENUM_VALUES.get(id(event.category)) or event.category.value,
            _ENUM_VALUES.get(id(event.priority)) or event.priority.value,
            _mission_id(event),
            received_at,
        )
        return row, values

    def encode_batch(
        self, events: Sequence[AnalyticsEvent], ids: Sequence[str], received_at: str
    ) -> tuple[list[tuple[AnalyticsEvent, EventRow, tuple[Any, ...]]], int]:
        """Rows of the events; events whose data does not serialize are logged and counted."""
        try:
            stamps = self._stamps(events)
        except (TypeError, ValueError, msgspec.EncodeError):
            stamps = [""] * len(events)  # a bad timestamp: event_to_row names the event
        prepared: list[tuple[AnalyticsEvent, EventRow, tuple[Any, ...]]] = []
        rejected = 0
        for event, event_id, stamp in zip(events, ids, stamps, strict=True):
            try:
                if not stamp:
                    stamp = format_timestamp(event.timestamp)
                row, values = self.encode(event, event_id, stamp, received_at)
            except (TypeError, ValueError, AttributeError, msgspec.EncodeError) as exc:
                rejected += 1
                _log.warning(
                    "event %s (%s) cannot be stored, skipped: %s: %s",
                    event_id,
                    event.event_name,
                    type(exc).__name__,
                    exc,
                )
                continue
            prepared.append((event, row, values))
        return prepared, rejected


class EncodedBatch:
    """Events encoded as ``analytics_events`` rows by :meth:`SQLiteStore.encode_batch`:
    ``rows`` of (event, row, insert values), ids unique; the ``duplicates`` dropped and
    events ``rejected`` while encoding."""

    __slots__ = ("duplicates", "rejected", "rows")

    def __init__(
        self,
        rows: list[tuple[AnalyticsEvent, EventRow, tuple[Any, ...]]],
        duplicates: int,
        rejected: int,
    ) -> None:
        self.rows = rows
        self.duplicates = duplicates
        self.rejected = rejected


class SQLiteStore:
    """The embedded event store: a SQLite file with spec 355's schema and our migrations.

    ``path`` defaults to ``config.storage.path``; parent directories are created.
    Pending migrations are applied on open unless ``migrate=False`` (the ``migrate``
    CLI uses that to show and choose what to apply).

    >>> import tempfile, pathlib
    >>> from tachimeter.model import AnalyticsEvent
    >>> with SQLiteStore(pathlib.Path(tempfile.mkdtemp()) / "a.db") as store:
    ...     event = AnalyticsEvent.new("feature_used", {"feature": "search"})
    ...     store.write_batch([event, event])
    ...     store.event_count(event_name="feature_used")
    WriteResult(inserted=1, duplicates=1, rejected=0)
    1
    """

    __slots__ = (
        "__weakref__",
        "_closed",
        "_conn",
        "_encoder",
        "_idle",
        "_lock",
        "_migrations",
        "_path",
        "_readers_lock",
        "_reported_malformed",
        "_ro_uri",
        "_settings",
        "_where",
    )

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        config: AnalyticsConfig | None = None,
        *,
        migrate: bool = True,
        migrations: Sequence[Migration] | None = None,
    ) -> None:
        if config is None:
            config = AnalyticsConfig.default()
        storage = config.storage
        self._path = Path(path if path is not None else storage.path).expanduser().absolute()
        self._where = str(self._path)
        self._settings = storage
        self._migrations = tuple(all_migrations() if migrations is None else migrations)
        self._lock = threading.Lock()
        self._readers_lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._closed = False
        self._reported_malformed = False
        self._encoder = _RowEncoder()
        if self._path.is_dir():
            raise StoreError(
                f"the store {self._where!r} is a directory; name a file in it, such as "
                f"{str(self._path / 'analytics.db')!r}"
            )
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the directory of the store {self._where!r}: {exc}; "
                "check storage.path and the permissions of its parent"
            ) from exc
        self._ro_uri = self._path.as_uri() + "?mode=ro"
        if self._path.exists():
            self._check_before_writing()
        conn = self._open_writer()
        self._conn: sqlite3.Connection | None = conn
        try:
            migrator = Migrator(conn, self._migrations, where=self._where)
            if migrate:
                migrator.up()
            else:
                migrator.check()
        except BaseException:
            conn.close()
            raise
        _install_fork_hook()
        _stores.add(self)

    # -- opening ---------------------------------------------------------------------------

    def _check_before_writing(self) -> None:
        """Refuse a newer schema through a read-only connection: the file stays untouched."""
        try:
            conn = sqlite3.connect(self._ro_uri, uri=True, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store {self._where!r}: {exc}; {_hint(exc)}") from exc
        try:
            Migrator(conn, self._migrations, where=self._where).check()
        finally:
            conn.close()

    def _open_writer(self) -> sqlite3.Connection:
        settings = self._settings
        try:
            conn = sqlite3.connect(
                self._path,
                isolation_level=None,  # transactions are explicit: BEGIN IMMEDIATE ... COMMIT
                check_same_thread=False,  # used under self._lock, by one thread at a time
                timeout=settings.busy_timeout_ms / 1000,
                # Every projection's statements, in the few sizes execute_rows uses.
                cached_statements=_WRITER_STATEMENTS,
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store {self._where!r}: {exc}; {_hint(exc)}") from exc
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(
                    f"the store {self._where!r} cannot use WAL mode (journal_mode stayed "
                    f"{mode!r}); put storage.path on a local filesystem"
                )
            conn.execute(f"PRAGMA synchronous = {settings.synchronous}")
            conn.execute(f"PRAGMA busy_timeout = {int(settings.busy_timeout_ms)}")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute(f"PRAGMA cache_size = -{_WRITER_CACHE_KIB}")
            conn.execute(f"PRAGMA wal_autocheckpoint = {_WAL_AUTOCHECKPOINT_PAGES}")
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"cannot open the store {self._where!r}: {exc}; {_hint(exc)}") from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _writer(self) -> sqlite3.Connection:
        """The writer connection (lock held); a forked child opens its own on first use."""
        if self._closed:
            raise StoreError(f"the store {self._where!r} is closed; open a new SQLiteStore")
        if self._conn is None:
            self._conn = self._open_writer()
        return self._conn

    def _reset_after_fork(self) -> None:
        """In a forked child: fresh locks, and the parent's connections set aside."""
        # The parent's threads do not exist here; a lock one of them held stays held.
        self._lock = threading.Lock()
        self._readers_lock = threading.Lock()
        if self._conn is not None:
            _inherited.append(self._conn)
            self._conn = None
        _inherited.extend(self._idle)
        self._idle = []

    def _migrator(self) -> Migrator:
        return Migrator(self._writer(), self._migrations, where=self._where)

    # -- properties ------------------------------------------------------------------------

    @property
    def dialect(self) -> str:
        """``"sqlite"``: the SQL dialect of :meth:`execute`."""
        return "sqlite"

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    # -- migrations ------------------------------------------------------------------------

    def migrate(self, target: int | None = None) -> list[int]:
        """Apply pending migrations up to ``target`` (default: all); the versions applied."""
        with self._lock:
            return self._migrator().up(target)

    def revert(self, target: int) -> list[int]:
        """Revert migrations above ``target``, newest first; the versions reverted."""
        with self._lock:
            return self._migrator().down(target)

    def migration_status(self) -> list[MigrationState]:
        """Every known or applied migration with its state."""
        with self._lock:
            return self._migrator().status()

    def schema_version(self) -> int:
        """The highest applied migration."""
        with self._lock:
            return self._migrator().current_version()

    # -- writing ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def writer_connection(self) -> Iterator[sqlite3.Connection]:
        """The writer connection, under the store's lock, for work that must share it with
        :meth:`write_batch` (so projections' row caches stay valid: a commit on another
        connection empties them). Used outside any transaction; a transaction the caller
        leaves open (it failed midway) is rolled back, so the next batch starts clean.
        """
        with self._lock:
            conn = self._writer()
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")

    def write_batch(
        self,
        events: Sequence[AnalyticsEvent],
        *,
        projections: Sequence[Projection] = (),
    ) -> WriteResult:
        """Store the events in one transaction, skipping ids already stored.

        Duplicates (of stored ids, or repeated within ``events``) are skipped and counted;
        each projection's ``apply`` gets exactly the newly inserted events and rows in the
        same transaction. Raises :class:`StoreError` with the batch rolled back.
        """
        if not events:
            return WriteResult(inserted=0, duplicates=0)
        return self.write_encoded([self.encode_batch(events)], projections=projections)

    def encode_batch(self, events: Sequence[AnalyticsEvent]) -> EncodedBatch:
        """The events as rows, ready for :meth:`write_encoded`; any thread may call it.

        The ``StoreSink`` encodes each batch on its delivery thread, so the writer only
        writes. Events repeated within ``events`` are counted and dropped here; events
        whose data does not serialize are logged and counted as rejected.
        """
        by_id: dict[str, AnalyticsEvent] = {}
        for event_id, event in zip(self._encoder.ids(events), events, strict=True):
            by_id.setdefault(event_id, event)
        rows, rejected = self._encoder.encode_batch(
            list(by_id.values()), list(by_id), format_timestamp(utc_now())
        )
        return EncodedBatch(rows, len(events) - len(by_id), rejected)

    def write_encoded(
        self,
        batches: Sequence[EncodedBatch],
        *,
        projections: Sequence[Projection] = (),
    ) -> WriteResult:
        """Store encoded batches in one transaction, as :meth:`write_batch` does."""
        duplicates = sum(b.duplicates for b in batches)
        rejected = sum(b.rejected for b in batches)
        if len(batches) == 1:
            prepared = batches[0].rows
        else:  # an id in two batches of the group is stored once
            seen: set[str] = set()
            prepared = []
            for batch in batches:
                for item in batch.rows:
                    if item[1].id in seen:
                        duplicates += 1
                    else:
                        seen.add(item[1].id)
                        prepared.append(item)
        events_given = len(prepared) + duplicates + rejected
        with self._lock:
            conn = self._writer()
            try:
                conn.execute("BEGIN IMMEDIATE")
                existing = self._existing_ids(conn, [row.id for _, row, _ in prepared])
                if existing:
                    duplicates += len(existing)
                    prepared = [p for p in prepared if p[1].id not in existing]
                execute_rows(conn, _INSERT, [values for _, _, values in prepared])
                if projections and prepared:
                    new_events = [event for event, _, _ in prepared]
                    new_rows = [row for _, row, _ in prepared]
                    for projection in projections:
                        self._apply(projection, conn, new_events, new_rows)
                conn.execute("COMMIT")
            except BaseException as exc:
                self._rollback(conn)
                discard_caches(projections)
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(
                        f"cannot write {events_given} events to {self._where!r}: {exc}; "
                        f"{_hint(exc)}"
                    ) from exc
                raise
        return WriteResult(inserted=len(prepared), duplicates=duplicates, rejected=rejected)

    @staticmethod
    def _existing_ids(conn: sqlite3.Connection, ids: list[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(ids), _ID_CHUNK):
            chunk = ids[start : start + _ID_CHUNK]
            marks = ", ".join("?" * len(chunk))
            found.update(
                r[0]
                for r in conn.execute(
                    f"SELECT id FROM analytics_events WHERE id IN ({marks})", chunk
                )
            )
        return found

    def _apply(
        self,
        projection: Projection,
        conn: sqlite3.Connection,
        events: list[AnalyticsEvent],
        rows: list[EventRow],
    ) -> None:
        try:
            projection.apply(conn, events, rows)
        except sqlite3.Error as exc:
            raise StoreError(
                f"projection {projection.name!r} failed on a batch of {len(events)} events "
                f"in {self._where!r}: {exc}; the batch was rolled back. {_hint(exc)}"
            ) from exc
        except Exception as exc:
            raise StoreError(
                f"projection {projection.name!r} failed on a batch of {len(events)} events "
                f"in {self._where!r}: {type(exc).__name__}: {exc}; the batch was rolled back"
            ) from exc

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        # SQLite rolls back by itself after some errors (SQLITE_FULL in a commit): only an
        # open transaction is rolled back, and a failing rollback must not hide the cause.
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")

    # -- reading ---------------------------------------------------------------------------

    def connect_reader(self) -> sqlite3.Connection:
        """A new read-only connection of the caller's own; close it when done."""
        if self._closed:
            raise StoreError(f"the store {self._where!r} is closed; open a new SQLiteStore")
        try:
            conn = sqlite3.connect(
                self._ro_uri,
                uri=True,
                isolation_level=None,
                check_same_thread=False,  # pooled: a reader may be reused by another thread
                timeout=self._settings.busy_timeout_ms / 1000,
            )
            # mode=ro already refuses writes to this file; query_only also refuses them in
            # databases a query ATTACHes.
            conn.execute("PRAGMA query_only = ON")
        except sqlite3.Error as exc:
            raise StoreError(
                f"cannot open a reader on {self._where!r}: {exc}; {_hint(exc)}"
            ) from exc
        return conn

    @contextlib.contextmanager
    def reader(self) -> Iterator[sqlite3.Connection]:
        """A pooled read-only connection for the duration of a ``with`` block."""
        conn: sqlite3.Connection | None = None
        with self._readers_lock:
            if self._idle:
                conn = self._idle.pop()
        if conn is None:
            conn = self.connect_reader()
        try:
            yield conn
        finally:
            if conn.in_transaction:  # a reader left a BEGIN open: never pool it that way
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            with self._readers_lock:
                keep = not self._closed and len(self._idle) < _IDLE_READERS
                if keep:
                    self._idle.append(conn)
            if not keep:
                conn.close()

    def execute(self, sql: str, params: QueryParams = ()) -> list[tuple[Any, ...]]:
        """Run one read-only statement; :class:`QueryError` if it fails or tries to write."""
        with self.reader() as conn:
            try:
                return conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise _query_error(sql, exc) from exc

    def event_count(
        self,
        *,
        event_name: str | None = None,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
    ) -> int:
        """Stored events, optionally of one name, with ``start <= timestamp < end``."""
        where, params = _event_filter(event_name, start, end)
        rows = self.execute(f"SELECT count(*) FROM analytics_events{where}", params)
        return int(rows[0][0])

    def read_events(
        self,
        *,
        event_name: str | None = None,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        limit: int | None = None,
    ) -> DecodedEvents:
        """Stored events in time order; malformed rows are skipped and counted."""
        where, params = _event_filter(event_name, start, end)
        sql = f"SELECT {_COLUMNS} FROM analytics_events{where} ORDER BY timestamp, id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        decoded = decode_rows(self.execute(sql, params))
        if decoded.malformed and not self._reported_malformed:
            self._reported_malformed = True
            _log.warning(
                "%s: %d stored events do not decode and were skipped (first ids: %s); they "
                "were written by another tool (further ones are counted, not logged)",
                self._where,
                decoded.malformed,
                ", ".join(decoded.malformed_ids),
            )
        return decoded

    def check_integrity(self) -> str:
        """SQLite's ``PRAGMA integrity_check``: ``"ok"``, or the problems found."""
        rows = self.execute("PRAGMA integrity_check")
        return "\n".join(str(r[0]) for r in rows)

    # -- closing ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the writer and the idle readers (readers in use close when returned)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._conn is not None:
                self._rollback(self._conn)
                self._conn.close()
                self._conn = None
        with self._readers_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"SQLiteStore({self._where!r}, {state})"


def _event_filter(
    event_name: str | None, start: dt.datetime | None, end: dt.datetime | None
) -> tuple[str, list[Any]]:
    """A WHERE clause on name and time range; fixed-width timestamps compare as text."""
    clauses: list[str] = []
    params: list[Any] = []
    if event_name is not None:
        clauses.append("event_name = ?")
        params.append(event_name)
    if start is not None:
        clauses.append("timestamp >= ?")
        params.append(format_timestamp(start))
    if end is not None:
        clauses.append("timestamp < ?")
        params.append(format_timestamp(end))
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _query_error(sql: str, exc: sqlite3.Error) -> QueryError:
    name = getattr(exc, "sqlite_errorname", "") or ""
    shown = " ".join(sql.split())[:80]
    if name.startswith("SQLITE_READONLY"):
        return QueryError(
            f"read queries cannot write: {shown!r} was refused ({exc}); events are "
            "written through write_batch (the store sink)"
        )
    return QueryError(f"query {shown!r} failed: {exc}")
