"""``StoreSink``: the collector's sink into an :class:`~tachimeter.store.backend.EventStore`.

The collector gives each sink its own delivery thread. This sink hands batches to a
writer thread of its own, the store's one writer, which commits whatever has arrived in
one transaction (group commit): one batch at a time while events trickle in, many at
once under load. Each commit writes to the WAL every page it touched in every index of
``analytics_events``, so small transactions cost: measured with bench/store.py (200 000
events, no projections), the collector's 100-event batches committed one by one ingest
at 0.57 of the rate of raw ``executemany`` in 1 000-row transactions, grouped at 0.72
(0.96 over the last 10 %).

Each batch is turned into rows on the delivery thread that calls :meth:`process` (when
the store can encode ahead, :class:`~tachimeter.store.backend.EncodingStore`), so the
writer thread only writes.

``flush()`` returns once every batch given before it is committed, so the collector's
``flush()`` returning True means every event it covers is committed (acknowledged, as
DESIGN.md defines it). Delivery is at least once (a replayed spool, a retried batch): the
store skips ids it already holds and projections see each event once.

When the store cannot write (disk full, read-only file, a failing projection), the
batch is written again on its own, so one bad batch never takes the others of its group
down; if it still fails:

* registered with a collector under the ``spill`` policy, the collector attaches its
  spill path (``attach_spill``): the batch's events go to the collector's retry spool and
  are offered again later, in this process or the next;
* otherwise its events are counted as lost.

Either way the next ``flush()`` raises :class:`~tachimeter.errors.SinkError` (the
collector counts it and its ``flush()`` returns False): events the store did not commit
are never acknowledged. Nothing crashes, and the next batch is tried afresh: writing
resumes as soon as the condition clears.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any, Final

from tachimeter.config.settings import AnalyticsConfig
from tachimeter.errors import ConfigError, SinkError, StoreError
from tachimeter.model.events import AnalyticsEvent, EventBatch
from tachimeter.store.backend import EventStore, encode_ahead, write_prepared
from tachimeter.store.projection import Projection

__all__ = ["StoreSink"]

_log = logging.getLogger("tachimeter.store")

# A failure is logged at most once per this many seconds; the rest are counted in stats().
_LOG_EVERY_SECONDS: Final = 60.0
# Events per transaction at most. A transaction writes each page it touched once, so
# under load bigger groups cost less per event: on bench/store.py's 1M-event stream,
# write_batch with every projection (no funnel defined) cost 66 us an event in 2 000-
# event transactions and 53 in 20 000-event ones (two separate single-threaded runs).
# 10 000 events are about half a second of writing: another writer (the CLI,
# retention) waits that long at most, and a group ends well within the 2 s the
# collector waits for a sink before calling it stalled.
# While events trickle in, a group is whatever has arrived: one batch.
DEFAULT_TRANSACTION_EVENTS: Final = 10_000
# Events given to the sink and not yet committed before process() waits: two full
# transactions (about 20 MB of event objects), so one group is being written while the
# next one fills, and the collector's delivery never waits longer than one group.
DEFAULT_PENDING_EVENTS: Final = 20_000
# How long close() waits for the writer to commit what is pending. The collector flushes
# before it closes its sinks, so little is left by then; the collector's exit hook gives
# everything 2 s, and a close must not hold the process much past that.
_CLOSE_SECONDS: Final = 2.0

_sinks: weakref.WeakSet[StoreSink] = weakref.WeakSet()
_fork_hook_lock = threading.Lock()
_fork_hook_installed = False


def _reset_sinks_after_fork() -> None:
    for sink in list(_sinks):
        sink._reset_after_fork()


def _install_fork_hook() -> None:
    global _fork_hook_installed
    with _fork_hook_lock:
        if not _fork_hook_installed:
            os.register_at_fork(after_in_child=_reset_sinks_after_fork)
            _fork_hook_installed = True


class StoreSink:
    """Commits batches to a store, grouped into transactions, with the projections.

    ``owns_store``: close the store when the sink is closed (the collector closes its
    sinks at shutdown); :meth:`open` sets it. ``max_transaction_events`` bounds one
    transaction; ``max_pending_events`` bounds what waits for the writer (``process``
    waits beyond it, and the collector sheds load as for any slow sink).

    >>> import tempfile, pathlib
    >>> from tachimeter.testing import collector_for_tests
    >>> sink = StoreSink.open(pathlib.Path(tempfile.mkdtemp()) / "analytics.db")
    >>> with collector_for_tests(sink) as collector:
    ...     collector.track("feature_used", {"feature": "search"}, user_id="u1")
    ...     assert collector.flush()
    >>> sink.stats()["inserted"]
    1
    """

    __slots__ = (
        "__weakref__",
        "_closing",
        "_completed",
        "_cond",
        "_counts",
        "_last_log",
        "_lost_since_flush",
        "_max_pending",
        "_max_transaction",
        "_owns_store",
        "_pending",
        "_pending_events",
        "_projections",
        "_spill",
        "_spilled_since_flush",
        "_store",
        "_submitted",
        "_thread",
        "name",
    )

    def __init__(
        self,
        store: EventStore,
        projections: Iterable[Projection] = (),
        *,
        name: str = "store",
        owns_store: bool = False,
        max_transaction_events: int = DEFAULT_TRANSACTION_EVENTS,
        max_pending_events: int = DEFAULT_PENDING_EVENTS,
    ) -> None:
        if not name:
            raise ConfigError("StoreSink name must not be empty")
        if max_transaction_events <= 0 or max_pending_events <= 0:
            raise ConfigError(
                f"StoreSink max_transaction_events and max_pending_events must be > 0, got "
                f"{max_transaction_events} and {max_pending_events}"
            )
        chosen = tuple(projections)
        seen: set[str] = set()
        for projection in chosen:
            if not isinstance(projection, Projection):
                raise ConfigError(
                    f"StoreSink projections must implement Projection (name, apply, "
                    f"rebuild); got {type(projection).__name__}"
                )
            if projection.name in seen:
                raise ConfigError(
                    f"StoreSink got two projections named {projection.name!r}; names must be unique"
                )
            seen.add(projection.name)
        self.name = name
        self._store = store
        self._projections = chosen
        self._owns_store = owns_store
        self._max_transaction = max_transaction_events
        self._max_pending = max_pending_events
        self._spill: Callable[[list[AnalyticsEvent]], bool] | None = None
        self._last_log: float | None = None
        self._counts = dict.fromkeys(
            ("inserted", "duplicates", "rejected", "failures", "spilled", "lost", "transactions"),
            0,
        )
        self._init_runtime()
        _install_fork_hook()
        _sinks.add(self)

    def _init_runtime(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        # (batch, its encoded form or None), in arrival order.
        self._pending: collections.deque[tuple[EventBatch, Any]] = collections.deque()
        self._pending_events = 0
        self._submitted = 0  # batches given to process()
        self._completed = 0  # batches committed, spilled or counted lost
        self._lost_since_flush = 0
        self._spilled_since_flush = 0
        self._closing = False
        self._thread: threading.Thread | None = None

    def _reset_after_fork(self) -> None:
        """In a forked child: no writer thread, fresh lock; the parent writes its batches."""
        self._init_runtime()

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str] | None = None,
        config: AnalyticsConfig | None = None,
        projections: Iterable[Projection] = (),
        *,
        name: str = "store",
    ) -> StoreSink:
        """A sink over a new :class:`~tachimeter.store.sqlite.SQLiteStore` it owns."""
        from tachimeter.store.sqlite import SQLiteStore  # the default backend, on demand

        return cls(SQLiteStore(path, config), projections, name=name, owns_store=True)

    @property
    def store(self) -> EventStore:
        """The store written to."""
        return self._store

    @property
    def projections(self) -> tuple[Projection, ...]:
        """The projections applied with every batch."""
        return self._projections

    def attach_spill(self, spill: Callable[[list[AnalyticsEvent]], bool]) -> None:
        """Send refused batches to the collector's spill path (the collector calls this)."""
        with self._cond:
            self._spill = spill

    def process(self, batch: EventBatch) -> None:
        """Queue the batch for the writer; waits while ``max_pending_events`` are queued."""
        count = len(batch.events)
        if not count:
            return
        encoded = encode_ahead(self._store, batch.events)  # here, not on the writer
        with self._cond:
            if self._thread is None and not self._closing:
                self._thread = threading.Thread(
                    target=self._run, name=f"tachimeter-store-{self.name}", daemon=True
                )
                self._thread.start()
            while self._pending_events >= self._max_pending and not self._closing:
                self._cond.wait()
            if self._closing:  # checked after the wait too: the writer may have finished
                raise SinkError(
                    f"store sink {self.name!r} is closed; batch {batch.id} ({count} events) "
                    "was not stored"
                )
            self._pending.append((batch, encoded))
            self._pending_events += count
            self._submitted += 1
            self._cond.notify_all()

    def flush(self) -> None:
        """Wait until every batch given so far is committed.

        Raises :class:`SinkError` if some events given since the last flush were not
        stored (spilled to the collector's spool, or lost), so that the collector's
        ``flush()`` is False and does not acknowledge them; spilled events are
        acknowledged by a later flush, once they are stored.
        """
        with self._cond:
            target = self._submitted
            while self._completed < target and self._thread is not None:
                self._cond.wait()
            lost, self._lost_since_flush = self._lost_since_flush, 0
            spilled, self._spilled_since_flush = self._spilled_since_flush, 0
        if lost or spilled:
            raise SinkError(
                f"store sink {self.name!r}: of the events given since the last flush, "
                f"{lost} were neither stored nor spooled and {spilled} went to the "
                "collector's spool for a retry (see the log and stats())"
            )

    def close(self, timeout: float = _CLOSE_SECONDS) -> None:
        """Commit what is pending (waiting at most ``timeout``), stop the writer, and close
        the store if the sink owns it."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                _log.warning(
                    "store sink %r: the writer did not finish within %.0f s; %d events "
                    "were not committed",
                    self.name,
                    timeout,
                    self._pending_events,
                )
                return
        if self._owns_store:
            self._store.close()

    def stats(self) -> dict[str, int]:
        """Counters: events ``inserted``, ``duplicates``, ``rejected``, ``spilled``, ``lost``
        and ``pending``; batch ``failures``; committed ``transactions``."""
        with self._cond:
            return {**self._counts, "pending": self._pending_events}

    # -- the writer thread -----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending:
                    return
                group = [self._pending.popleft()]
                count = len(group[0][0].events)
                while (
                    self._pending
                    and count + len(self._pending[0][0].events) <= self._max_transaction
                ):
                    item = self._pending.popleft()
                    group.append(item)
                    count += len(item[0].events)
            try:
                self._write(group)
            finally:  # flush() waits on this count: it must move whatever happened
                with self._cond:
                    self._pending_events -= count
                    self._completed += len(group)
                    self._cond.notify_all()

    def _write(self, group: list[tuple[EventBatch, Any]]) -> None:
        try:
            result = write_prepared(
                self._store, [(b.events, e) for b, e in group], projections=self._projections
            )
        except Exception as exc:  # the writer thread must survive anything
            if len(group) > 1:
                for item in group:  # find the failing batch; the others are stored
                    self._write([item])
                return
            error = (
                exc if isinstance(exc, StoreError) else StoreError(f"{type(exc).__name__}: {exc}")
            )
            self._failed(group[0][0], error)
            return
        with self._cond:
            counts = self._counts
            counts["inserted"] += result.inserted
            counts["duplicates"] += result.duplicates
            counts["rejected"] += result.rejected
            counts["transactions"] += 1

    def _failed(self, batch: EventBatch, exc: StoreError) -> None:
        count = len(batch.events)
        with self._cond:
            self._counts["failures"] += 1
            spill = self._spill
        what = f"store sink {self.name!r}: batch {batch.id} ({count} events) was not stored"
        try:
            spilled = spill is not None and spill(list(batch.events))
        except Exception as spill_exc:  # the writer thread must survive anything
            spilled = False
            what += f" (the collector's spool refused it too: {spill_exc})"
        if spilled:
            with self._cond:
                self._counts["spilled"] += count
                self._spilled_since_flush += count
            self._log_failure(f"{what}; handed to the collector's spool for a retry: {exc}")
            return
        with self._cond:
            self._counts["lost"] += count
            self._lost_since_flush += count
        self._log_failure(
            f"{what}: {exc}. With collection.backpressure = 'spill' such batches are kept "
            "for a retry"
        )

    def _log_failure(self, message: str) -> None:
        now = time.monotonic()
        with self._cond:
            if self._last_log is not None and now - self._last_log < _LOG_EVERY_SECONDS:
                return
            self._last_log = now
        _log.warning(
            "%s (further failures in the next %.0f s are counted, not logged)",
            message,
            _LOG_EVERY_SECONDS,
        )
