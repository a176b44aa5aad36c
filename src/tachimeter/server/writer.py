"""``IngestWriter``: the server's one writer thread, committing requests in groups.

Every ingest request hands its events to :meth:`IngestWriter.submit` and waits on the
returned future; the request is answered 2xx only once the future says the events are
committed (DESIGN.md: "acknowledged"). The thread commits whatever requests are waiting
in one transaction (group commit), up to ``max_transaction_events``: one request at a
time while traffic trickles in, many at once under load, so concurrent clients share the
cost of a commit. A group that fails is written again one request at a time, so one bad
request never fails the others.

Other writes the server makes (metric points, funnel definitions) run on the same thread
through :meth:`IngestWriter.call`, so the process never competes with itself for
SQLite's write lock. ``dashboard_metrics`` refreshes go through
:meth:`IngestWriter.call_on_store`: they commit on the store's own writer connection, so
the projections' row caches stay valid (a commit on any other connection empties them).
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar

from tachimeter.errors import StoreError
from tachimeter.model.events import AnalyticsEvent
from tachimeter.store.backend import WriteResult, encode_ahead, write_prepared
from tachimeter.store.projection import Projection
from tachimeter.store.sqlite import EncodedBatch, SQLiteStore

__all__ = ["IngestWriter", "WriterBusy"]

_log = logging.getLogger("tachimeter.server")
_T = TypeVar("_T")

# Events per transaction at most: bigger groups cost less per event (each touched page
# is written once per transaction; see store/sink.py), and 10 000 events, about half a
# second of writing, keep the write lock short for the CLI and retention.
DEFAULT_TRANSACTION_EVENTS: Final = 10_000
# Events accepted and not yet committed before new requests get 503 + Retry-After: about
# two seconds of writing, 50 MB of event objects at most.
DEFAULT_PENDING_EVENTS: Final = 20_000


class WriterBusy(StoreError):
    """The writer has more pending events than it may hold: retry later (503)."""


class _Job:
    __slots__ = ("encoded", "events", "future")

    def __init__(self, events: Sequence[AnalyticsEvent], encoded: EncodedBatch | None) -> None:
        self.events = events
        self.encoded = encoded
        self.future: concurrent.futures.Future[WriteResult | None] = concurrent.futures.Future()


class _Call:
    __slots__ = ("fn", "future", "on_store")

    def __init__(self, fn: Callable[[sqlite3.Connection], Any], *, on_store: bool) -> None:
        self.fn = fn
        self.on_store = on_store
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()


class IngestWriter:
    """Commits submitted events to a store on one thread, grouped into transactions.

    ``on_committed`` is called on the writer thread with each committed request's events
    (for the live stream); it must not block.

    >>> import tempfile, pathlib
    >>> from tachimeter.store import SQLiteStore
    >>> store = SQLiteStore(pathlib.Path(tempfile.mkdtemp()) / "a.db")
    >>> writer = IngestWriter(store)
    >>> event = AnalyticsEvent.new("feature_used", {"feature": "search"})
    >>> writer.submit([event]).result(timeout=10)
    WriteResult(inserted=1, duplicates=0, rejected=0)
    >>> writer.close()
    True
    >>> store.close()
    """

    __slots__ = (
        "_closing",
        "_cond",
        "_last_error",
        "_last_ok",
        "_max_pending",
        "_max_transaction",
        "_on_committed",
        "_pending",
        "_pending_events",
        "_projections",
        "_side_conn",
        "_store",
        "_thread",
        "transactions",
    )

    def __init__(
        self,
        store: SQLiteStore,
        projections: Sequence[Projection] = (),
        *,
        on_committed: Callable[[Sequence[AnalyticsEvent]], None] | None = None,
        max_transaction_events: int = DEFAULT_TRANSACTION_EVENTS,
        max_pending_events: int = DEFAULT_PENDING_EVENTS,
    ) -> None:
        self._store = store
        self._projections = tuple(projections)
        self._on_committed = on_committed
        self._max_transaction = max_transaction_events
        self._max_pending = max_pending_events
        self._cond = threading.Condition(threading.Lock())
        self._pending: collections.deque[_Job | _Call] = collections.deque()
        self._pending_events = 0
        self._closing = False
        self._last_error: str | None = None
        self._last_ok = time.monotonic()
        self._side_conn: sqlite3.Connection | None = None
        self.transactions = 0
        self._thread = threading.Thread(target=self._run, name="tachimeter-server-writer")
        self._thread.daemon = True
        self._thread.start()

    @property
    def pending_events(self) -> int:
        """Events submitted and not yet committed."""
        with self._cond:
            return self._pending_events

    @property
    def last_error(self) -> str | None:
        """The last write failure, cleared by the next successful write."""
        with self._cond:
            return self._last_error

    @property
    def alive(self) -> bool:
        """True while the writer thread runs and accepts work."""
        return self._thread.is_alive() and not self._closing

    def encode(self, events: Sequence[AnalyticsEvent]) -> EncodedBatch | None:
        """The events as rows for :meth:`submit`, encoded on the calling thread (a request's
        decode thread) rather than the writer's; None if they cannot be, and the writer
        encodes them and reports what is wrong."""
        encoded: EncodedBatch | None = encode_ahead(self._store, events)
        return encoded

    def submit(
        self, events: Sequence[AnalyticsEvent], *, encoded: EncodedBatch | None = None
    ) -> concurrent.futures.Future[WriteResult | None]:
        """Queue events for the next transaction; the future completes when committed.

        ``encoded``: the same events from :meth:`encode`, so the writer only writes.

        Its result is the store's count of new and duplicate events, or None when the
        request was committed in a group whose duplicates cannot be attributed to it.

        Raises :class:`WriterBusy` when too much is pending, :class:`StoreError` after close.
        """
        job = _Job(events, encoded)
        with self._cond:
            if self._closing:
                raise StoreError("the server is shutting down; retry against the new process")
            if self._pending_events and self._pending_events + len(events) > self._max_pending:
                raise WriterBusy(
                    f"{self._pending_events} events are waiting to be written; retry shortly"
                )
            self._pending.append(job)
            self._pending_events += len(events)
            self._cond.notify()
        return job.future

    def call(self, fn: Callable[[sqlite3.Connection], _T]) -> concurrent.futures.Future[_T]:
        """Run ``fn`` on the writer thread with a writable connection of its own."""
        return self._queue_call(_Call(fn, on_store=False))

    def call_on_store(
        self, fn: Callable[[sqlite3.Connection], _T]
    ) -> concurrent.futures.Future[_T]:
        """Run ``fn`` on the writer thread, between batches, with the store's own writer
        connection outside a transaction (``fn`` commits its own, and must not write
        through the store).

        The projections' row caches survive its commits (a commit on another connection
        empties them: :class:`~tachimeter.store.projection.RowCache`), so ``fn`` may only
        write tables no projection keeps, such as ``dashboard_metrics``; anything else
        goes through :meth:`call`.
        """
        return self._queue_call(_Call(fn, on_store=True))

    def _queue_call(self, job: _Call) -> concurrent.futures.Future[Any]:
        with self._cond:
            if self._closing:
                raise StoreError("the server is shutting down")
            self._pending.append(job)
            self._cond.notify()
        return job.future

    def call_and_write(
        self,
        build: Callable[[sqlite3.Connection], tuple[Sequence[AnalyticsEvent], _T]],
    ) -> concurrent.futures.Future[_T]:
        """Run ``build`` on the writer thread, then commit the events it returns.

        For events that depend on what is stored (a mission's next ``seq`` and status):
        ``build`` reads through its connection once everything queued before it is
        committed, and nothing else is written between its read and this write. The
        events go through the store with the projections and reach the live stream like
        submitted ones; the future completes with ``build``'s answer once they are
        committed, or with what ``build`` or the store raised.
        """

        def run(conn: sqlite3.Connection) -> _T:
            events, answer = build(conn)
            if events:
                self._store.write_batch(events, projections=self._projections)
                with self._cond:
                    self.transactions += 1
                if self._on_committed is not None:
                    try:
                        self._on_committed(events)
                    except Exception:  # a broken listener must not fail a committed write
                        _log.exception("the live stream failed to take committed events")
            return answer

        return self.call(run)

    def close(self, timeout: float = 10.0) -> bool:
        """Commit what is queued (waiting at most ``timeout``) and stop; True if all was."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
        if self._thread.is_alive():
            _log.warning(
                "the server's writer did not finish within %.0f s; %d events were not "
                "committed (their requests were not acknowledged)",
                timeout,
                self._pending_events,
            )
            return False
        return True

    # -- the thread -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._pending and not self._closing:
                        self._cond.wait()
                    if not self._pending:
                        return
                    first = self._pending.popleft()
                    if isinstance(first, _Call):
                        group: list[_Job] = []
                    else:
                        group = [first]
                        count = len(first.events)
                        while self._pending:
                            head = self._pending[0]
                            if (
                                not isinstance(head, _Job)
                                or count + len(head.events) > self._max_transaction
                            ):
                                break
                            group.append(head)
                            count += len(head.events)
                            self._pending.popleft()
                if isinstance(first, _Call):
                    self._run_call(first)
                else:
                    self._write(group)
        finally:
            if self._side_conn is not None:
                self._side_conn.close()

    def _run_call(self, job: _Call) -> None:
        if not job.future.set_running_or_notify_cancel():
            return
        try:
            if job.on_store:
                with self._store.writer_connection() as conn:
                    job.future.set_result(job.fn(conn))
                return
            if self._side_conn is None:
                self._side_conn = sqlite3.connect(
                    self._store.path, isolation_level=None, check_same_thread=False, timeout=5.0
                )
            job.future.set_result(job.fn(self._side_conn))
        except BaseException as exc:
            job.future.set_exception(exc)

    def _write(self, group: list[_Job]) -> None:
        try:
            result = write_prepared(
                self._store,
                [(job.events, job.encoded) for job in group],
                projections=self._projections,
            )
        except Exception as exc:  # the writer thread must survive anything
            if len(group) > 1:
                for job in group:  # find the failing request; the others are stored
                    self._write([job])
                return
            self._finish(group, None, exc)
            return
        self._finish(group, result, None)

    def _finish(
        self, group: list[_Job], result: WriteResult | None, error: Exception | None
    ) -> None:
        with self._cond:
            self._pending_events -= sum(len(job.events) for job in group)
            if error is None:
                self.transactions += 1
                self._last_error = None
                self._last_ok = time.monotonic()
            else:
                self._last_error = f"{type(error).__name__}: {error}"
        if error is not None:
            _log.warning("could not store %d events: %s", len(group[0].events), error)
            for job in group:
                job.future.set_exception(error)
            return
        assert result is not None
        if len(group) == 1:
            group[0].future.set_result(result)
        elif not result.duplicates and not result.rejected:
            for job in group:
                job.future.set_result(WriteResult(inserted=len(job.events), duplicates=0))
        else:
            # Committed, but the group's duplicates cannot be told apart per request.
            for job in group:
                job.future.set_result(None)
        if self._on_committed is not None and (result.inserted or not result.duplicates):
            for job in group:
                try:
                    self._on_committed(job.events)
                except Exception:  # a broken listener must not stop the writer
                    _log.exception("the live stream failed to take committed events")
