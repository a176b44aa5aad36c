"""The event collector (spec 408): non-blocking, sampled, batched, back-pressured.

Data flow::

    caller thread                      worker thread                 one thread per sink
    -------------                      -------------                 -------------------
    track()/collect()                  build the event (id, time),   sink.process(batch)
      filter (config), sample,   --->  validate, sanitize, enrich,   sink.flush() on flush
      enqueue a small tuple            publish to subscribers,
      (no lock, no I/O)                batch, dispatch         --->

The caller looks the event name up in a dict of per-name routes (filters, sampler and
destination deque decided once per name and configuration), draws once if the name is
sampled, takes ``time.time_ns()``, claims one of ``queue_capacity`` free slots
(``list.pop``) and appends a tuple to its priority's deque. Each of those is one C call,
atomic under the GIL, so the caller takes no lock unless the queue is full, the name is
new, or the collector is closing. Counters the caller would bump (sampled out, filtered)
are tallies it appends ``None`` to, folded into integers by the worker and by
``stats()``; ``received`` is the sum of the outcomes, so at any instant::

    received == processed + sampled_out + filtered + dropped + dead_lettered + pending

Back-pressure when the queue holds ``queue_capacity`` events:

* ``drop_lowest_priority``: the oldest queued event of the lowest priority below the new
  event's is dropped to make room; if there is none, the new event is dropped. High and
  Critical events are never dropped while lower-priority events are queued.
* ``block``: the caller waits up to ``block_timeout`` for room, then the event is dropped.
* ``spill``: the event goes to a spill inbox (at most 4x ``queue_capacity``) that the
  worker writes to an
  on-disk :class:`~tachimeter.collect.spool.Spool`; it reads the spool back as
  room frees up, and whatever is left at exit is replayed on the next start.

Every drop is counted by reason and priority. Sinks run on their own threads so a slow
or failing sink never holds up the others (a plain :class:`MemorySink`, which only appends
to a list, is handed its batches by the worker directly); their failures count as
``flush_errors``.

Unlike spec 408's sketch, one batch sequence numbers every batch (the sketch had two),
the caller never blocks on a channel (except under the ``block`` policy, bounded), and
nothing is swallowed silently.
"""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import os
import random
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from itertools import repeat
from operator import call as _call
from typing import IO, Any, Final, cast

import msgspec

from tachimeter.collect.sampling import Sampler
from tachimeter.collect.sinks import EventSink, MemorySink
from tachimeter.collect.spool import Spool
from tachimeter.collect.subscription import Subscription
from tachimeter.config.manager import AnalyticsConfigManager
from tachimeter.config.settings import AnalyticsConfig
from tachimeter.errors import CollectorError, StoreError, TachimeterError, ValidationError
from tachimeter.model.codec import decode_event, encode_event, event_to_builtins
from tachimeter.model.data import EventMetadata
from tachimeter.model.event_types import (
    EventCategory,
    EventKind,
    EventPriority,
    add_registry_listener,
    event_type_from_name,
)
from tachimeter.model.events import AnalyticsEvent, CallKind, EventBatch
from tachimeter.model.ids import uuid7_from_ns
from tachimeter.model.timestamps import from_ns
from tachimeter.model.validation import validate_event
from tachimeter.privacy.scrubber import Scrubber, prepare_event

__all__ = ["EXIT_DEADLINE_SECONDS", "CollectorStatsSnapshot", "EventCollector"]

_log = logging.getLogger("tachimeter.collect")

_LOW, _NORMAL, _HIGH, _CRITICAL = (
    EventPriority.LOW,
    EventPriority.NORMAL,
    EventPriority.HIGH,
    EventPriority.CRITICAL,
)
_RANK: Final = {p: p.rank for p in EventPriority}
_time_ns = time.time_ns
_UTC: Final = dt.UTC

# Event ids are made in the worker's loop, laid out as tachimeter.model.ids.uuid7_from_ns
# (48 bits of ms, version 7, 12 bits of sub-ms fraction, variant, 62 random bits), with the
# UUID's slots set directly (uuid.UUID(int=...) re-validates what we built in range). The
# random bits come from a private generator, reseeded in a forked child.
_UUID: Final = uuid.UUID
_new_uuid: Final = uuid.UUID.__new__
_set_uuid_int: Final = uuid.UUID.__dict__["int"].__set__
_set_uuid_safe: Final = uuid.UUID.__dict__["is_safe"].__set__
_SAFE_UNKNOWN: Final = uuid.SafeUUID.unknown
_VERSION_7: Final = 0x7 << 76
_VARIANT: Final = 0b10 << 62
_id_random = random.Random(os.urandom(32))
_id_bits = _id_random.getrandbits
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# Distinct event names with a cached policy. Past this, names are answered uncached and
# share one sampler: a caller inventing names per event must not grow memory forever.
_MAX_POLICIES: Final = 10_000
# Records the worker takes per pass: bounds the time between checks for flush requests.
_WORKER_CHUNK: Final = 2_000
# Batches waiting for one sink; when full the worker waits for room (back-pressure).
_SINK_INBOX: Final = 64
# How long the worker waits for room in a full sink inbox before calling the sink stalled
# and dropping that sink's batches (counted in flush_errors; flush() then fails). Under
# the ``block`` policy it waits up to ``block_timeout`` instead, as the caller does: a
# store writing a large transaction is slow, not stuck, and blocking was asked for.
_SINK_WAIT_SECONDS: Final = 2.0
# The worker re-checks its clock at least this often, so an injected clock's advance
# (tests) or a due flush is noticed without a wake-up.
_POLL_SECONDS: Final = 0.05
# Under spill, overflow waits in memory for the worker to write it to disk: up to this
# many queue capacities, so a burst is absorbed while one fsync is in progress.
_SPILL_INBOX_FACTOR: Final = 4
# A sink's given-back events are offered to the sinks again at most this often, so a
# server that is down is not hammered in a tight loop.
_RETRY_SECONDS: Final = 60.0
# A sink's repeated failure is logged at most once per this many seconds.
_LOG_EVERY_SECONDS: Final = 60.0


class Record(msgspec.Struct, gc=False):
    """One queued event as the caller left it; the worker builds the event from it.

    Not tracked by the garbage collector (``gc=False``): under load records wait in the
    queue long enough to be promoted to the oldest generation, and each promotion brings
    the next full collection closer (bench/collector.py end to end: full collections took
    about a third of the CPU time; a record is one of the three objects an event
    promoted). A record cannot be part of a cycle: nothing but the queue refers to it.
    Built positionally, it costs no more than a tuple.
    """

    ns: int
    kind: EventKind
    data: Any
    priority: EventPriority
    user_id: str | None
    session_id: str | None
    call: CallKind
    page_url: str | None
    referrer: str | None
    prebuilt: AnalyticsEvent | None


Clock = Callable[[], int]
"""Monotonic nanoseconds (``time.monotonic_ns``); injectable for tests."""


class CollectorStatsSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """Counters of a collector at one instant (spec 408's six, plus ours).

    ``events_pending`` is queued, in the worker's hands, buffered, or in the spool;
    ``events_processed`` counts events handed to the sinks in batches.
    """

    events_received: int
    events_sampled_out: int
    events_processed: int
    events_dropped: int
    batches_flushed: int
    flush_errors: int
    events_filtered: int
    events_dead_lettered: int
    events_pending: int
    dropped_by_reason: dict[str, int]
    dropped_by_priority: dict[str, int]
    events_spooled: int
    events_replayed: int
    spool_corrupt_records: int
    subscribers_missed: int
    queue_high_water: int
    undelivered_by_sink: dict[str, int]
    flushes: int = 0
    flush_seconds_total: float = 0.0

    def balanced(self) -> bool:
        """True when received == processed + sampled_out + filtered + dropped + dead + pending."""
        return self.events_received == (
            self.events_processed
            + self.events_sampled_out
            + self.events_filtered
            + self.events_dropped
            + self.events_dead_lettered
            + self.events_pending
        )


class _Route:
    """What the caller path needs to know about one event name, decided once per name and
    configuration: its type, where each priority's events go (None: filtered), and how
    it is sampled (``draw() < rate`` inlined, or a windowed ``sampler``, or neither)."""

    __slots__ = ("appends", "draw", "kind", "normal", "rate", "sampler")

    def __init__(
        self,
        kind: EventKind,
        manager: AnalyticsConfigManager,
        enabled: bool,
        queues: tuple[deque[Record], ...],
        sampler: Sampler | None,
    ) -> None:
        self.kind = kind
        config = manager.config
        allowed = enabled and config.allows_type(kind)
        min_rank = config.min_priority.rank
        self.appends: dict[EventPriority, Callable[[Record], None] | None] = {
            p: queues[p.rank].append if allowed and p.rank >= min_rank else None
            for p in EventPriority
        }
        self.normal = self.appends[_NORMAL]
        self.sampler = sampler
        single = sampler.single_draw if sampler is not None else None
        if single is None:
            self.draw: Callable[[], float] | None = None
            self.rate = 1.0
        else:
            self.draw, self.rate = single
            self.sampler = None


class _FlushRequest:
    __slots__ = ("done", "failures", "remaining")

    def __init__(self, sinks: int) -> None:
        self.done = threading.Event()
        self.remaining = sinks
        self.failures: list[str] = []
        if sinks == 0:
            self.done.set()


class _SinkRunner:
    """One sink's delivery thread and bounded inbox.

    A :class:`MemorySink` (the exact class) gets no thread: its ``process`` appends to a
    list and ``flush`` does nothing, so the worker delivers to it directly, in order, and
    saves two thread switches per batch (bench/collector.py end to end).
    """

    __slots__ = (
        "_collector",
        "_cond",
        "_inbox",
        "_last_log",
        "_stop",
        "_thread",
        "_wait_seconds",
        "direct",
        "dropped_since_flush",
        "sink",
        "stalled",
        "undelivered",
    )

    def __init__(self, sink: EventSink, collector: EventCollector) -> None:
        self.sink = sink
        self._collector = weakref.ref(collector)
        self._inbox: deque[EventBatch | _FlushRequest] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._stop = False
        self.undelivered = 0  # events given to this sink and not yet processed by it
        self._wait_seconds = (
            max(_SINK_WAIT_SECONDS, collector._block_timeout)
            if collector._policy_name == "block"
            else _SINK_WAIT_SECONDS
        )
        # Batches refused since the last flush (inbox full): the next flush must fail, or
        # events this sink never saw would count as acknowledged.
        self.dropped_since_flush = 0
        # Set when a wait for room timed out with no progress: the sink is stuck, and the
        # worker stops waiting for it (other sinks must not be held up) until it moves.
        self.stalled = False
        self._last_log = -_LOG_EVERY_SECONDS
        self.direct = type(sink) is MemorySink
        self._thread: threading.Thread | None = None
        if not self.direct:
            self._thread = threading.Thread(
                target=self._run, name=f"tachimeter-sink-{sink.name}", daemon=True
            )
            self._thread.start()

    def _batches(self) -> int:
        return sum(1 for item in self._inbox if isinstance(item, EventBatch))

    def submit(self, batch: EventBatch) -> bool:
        """Queue a batch; when the inbox is full, wait up to _SINK_WAIT_SECONDS for room
        (``block_timeout`` under the ``block`` policy).

        Waiting passes a slow sink's back-pressure to the collector's queue, whose policy
        then drops by priority and counts it; a sink that made no progress in a whole
        wait is stalled and is no longer waited for, so it cannot hold up the others.
        """
        if self.direct:
            if self._stop:
                self.dropped_since_flush += 1
                return False
            self._deliver(batch)
            return True
        with self._cond:
            if self._batches() >= _SINK_INBOX and not self.stalled and not self._stop:
                deadline = time.monotonic() + self._wait_seconds
                while self._batches() >= _SINK_INBOX and not self._stop:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        self.stalled = True
                        break
                    self._cond.wait(remaining)
            if self._batches() >= _SINK_INBOX or self._stop:
                self.dropped_since_flush += 1
                return False
            self._inbox.append(batch)
            self.undelivered += len(batch.events)
            self._cond.notify_all()
            return True

    def request_flush(self, request: _FlushRequest) -> None:
        if self.direct:
            self._deliver(request)
            return
        with self._cond:
            self._inbox.append(request)
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()

    def join(self, timeout: float) -> bool:
        if self._thread is None:
            return True
        self._thread.join(max(0.0, timeout))
        return not self._thread.is_alive()

    def _failed(self, what: str, exc: BaseException) -> None:
        collector = self._collector()
        if collector is not None:
            collector._sink_failed(self.sink.name)
        now = time.monotonic()
        if now - self._last_log >= _LOG_EVERY_SECONDS:
            self._last_log = now
            _log.warning("sink %r failed to %s: %s: %s", self.sink.name, what, type(exc).__name__,
                         exc)  # fmt: skip

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._inbox and not self._stop:
                    self._cond.wait()
                if not self._inbox:
                    return
                item = self._inbox.popleft()
            self._deliver(item)

    def _deliver(self, item: EventBatch | _FlushRequest) -> None:
        """Process a batch or answer a flush request (the runner's thread, or the worker's
        for a direct sink)."""
        if isinstance(item, _FlushRequest):
            with self._cond:
                dropped, self.dropped_since_flush = self.dropped_since_flush, 0
            try:
                self.sink.flush()
            except Exception as exc:
                self._failed("flush", exc)
                item.failures.append(self.sink.name)
            else:
                if dropped:
                    item.failures.append(self.sink.name)
            collector = self._collector()
            if collector is not None:
                collector._flush_reported(item)
            else:
                item.done.set()
        else:
            try:
                self.sink.process(item)
            except Exception as exc:
                self._failed("process a batch", exc)
            if not self.direct:
                with self._cond:
                    self.undelivered -= len(item.events)
                    self.stalled = False
                    self._cond.notify_all()  # a submit may be waiting for room


class _SpoolSlot:
    """One of the collector's spools, opened lazily by the worker thread."""

    __slots__ = ("foreign_left", "name", "spool")

    def __init__(self, name: str) -> None:
        self.name = name
        self.spool: Spool | None = None
        self.foreign_left = 0  # records a previous process left, not yet read back

    @property
    def pending(self) -> int:
        return self.spool.pending if self.spool is not None else 0

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()
            self.spool = None


_collectors: weakref.WeakSet[EventCollector] = weakref.WeakSet()


class EventCollector:
    """Collects events from any thread and delivers them to sinks in batches.

    >>> from tachimeter.collect.sinks import MemorySink
    >>> sink = MemorySink()
    >>> collector = EventCollector(sinks=[sink])
    >>> collector.track("feature_used", {"feature": "search"}, user_id="u1")
    >>> collector.flush(timeout=5)
    True
    >>> [e.event_name for e in sink.events()]
    ['feature_used']
    >>> collector.shutdown()
    True
    """

    _dead_letter_file: IO[bytes] | None

    def __init__(
        self,
        config: AnalyticsConfig | AnalyticsConfigManager | None = None,
        *,
        sinks: Iterable[EventSink] = (),
        clock: Clock | None = None,
        session_id: str | None = None,
        scrubber: Scrubber | None = None,
        metadata: EventMetadata | None = None,
        register_atexit: bool = True,
        autostart: bool = True,
    ) -> None:
        manager = config if isinstance(config, AnalyticsConfigManager) else None
        self._manager = manager or AnalyticsConfigManager(config)  # type: ignore[arg-type]
        self._clock: Clock = clock or time.monotonic_ns
        self._session_id = session_id or str(uuid.uuid4())
        self._scrubber_override = scrubber
        self._metadata_override = metadata
        self._sinks: list[EventSink] = []
        self._subscriptions: list[Subscription] = []
        self._apply_config(self._manager)
        self._autostart = autostart
        self._init_runtime()
        for sink in sinks:
            self.register_sink(sink)
        _collectors.add(self)
        add_registry_listener(self)
        _ensure_fork_hook()
        if register_atexit:
            _exit_collectors.add(self)
        if self._policy_name == "spill" and autostart:
            with self._lock:
                self._ensure_started()  # replay what a previous process left in the spool

    # -- configuration ----------------------------------------------------------------------

    def _apply_config(self, manager: AnalyticsConfigManager) -> None:
        config = manager.config
        collection = config.collection
        self._config = config
        self._manager = manager
        self._enabled = config.enabled
        self._strict = config.strict
        self._capacity = collection.queue_capacity
        self._buffer_size = collection.buffer_size
        self._flush_interval_ns = int(collection.flush_interval * 1e9)
        self._policy_name = collection.backpressure
        self._block_timeout = collection.block_timeout
        self._seed = config.sampling.seed
        self._limits = config.validation
        self._metadata = self._metadata_override or EventMetadata.from_environment(
            config.app_version
        )
        privacy = config.privacy
        self._scrubber = self._scrubber_override or Scrubber(
            extra_patterns=privacy.extra_patterns,
            drop_keys=privacy.drop_keys,
            sensitive_key_action=privacy.sensitive_key_action,
            hash_user_ids=privacy.hash_user_ids,
            salt=privacy.salt,
        )
        self._spool_dir = config.spool_dir
        self._spool_fsync = collection.spool_fsync
        self._dead_letter_path = collection.dead_letter_path
        self._subscriber_capacity = collection.subscriber_capacity
        self._shutdown_timeout = collection.shutdown_timeout
        # Per-name routes, rebuilt lazily after any change; replaced, never mutated in place
        # except to add a name, so a caller reading the old dict sees a consistent route.
        self._routes: dict[object, _Route] = {}
        self._overflow_sampler: Sampler | None = None

    def event_types_changed(self) -> None:
        """A plugin registered an event type: cached per-name routes may be stale."""
        with self._lock:
            self._routes = {}
            self._overflow_sampler = None

    def update_config(self, config: AnalyticsConfig | AnalyticsConfigManager) -> None:
        """Swap the configuration at runtime (routes are rebuilt; queued events stay).

        A spool already open stays where it is: spool settings apply from the next start.
        """
        manager = (
            config if isinstance(config, AnalyticsConfigManager) else AnalyticsConfigManager(config)
        )
        with self._lock:
            self._apply_config(manager)
            self._resize_slots()

    @property
    def config(self) -> AnalyticsConfig:
        """The configuration in force."""
        return self._config

    # -- runtime state (re-created in a forked child) ---------------------------------------

    def _init_runtime(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._not_full = threading.Condition(self._lock)
        self._wakeup = threading.Event()
        self._queues: tuple[deque[Record], ...] = (deque(), deque(), deque(), deque())
        # One token per free place in the queues: a caller pops one before appending (a
        # strict bound with no lock), the worker gives them back as it takes records.
        # Tokens in circulation exceed the capacity only after update_config lowered it;
        # the worker then keeps back what it takes until they match again.
        self._free: list[None] = [None] * self._capacity
        self._slots = self._capacity
        self._wake_at = self._slots - self._buffer_size  # len(free) when buffer_size are queued
        self._high_water = 0
        self._spill_inbox: deque[Record] = deque()
        self._blocked = 0
        self._urgent = False
        self._flush_requests: list[_FlushRequest] = []
        self._closing = False
        self._closed = False
        self._worker: threading.Thread | None = None
        self._runners: dict[str, _SinkRunner] = {}
        # Overflow under spill, read back as soon as there is room; and events a sink gave
        # back (spill_events), retried at start and then at most every _RETRY_SECONDS.
        self._overflow = _SpoolSlot("spool.bin")
        self._retry = _SpoolSlot("retry.bin")
        self._retry_inbox: deque[AnalyticsEvent] = deque()
        self._retry_due_ns = 0
        self._spool_replayed = False
        self._dead_letter_file = None
        self._sequence = 0
        self._buffer: list[AnalyticsEvent] = []
        self._last_flush_ns = self._clock()
        self._routes = {}
        self._overflow_sampler = None
        # Outcomes decided on the caller thread without a lock: one None appended per
        # event (list.append is atomic), folded into the counters below under the lock.
        self._sampled_tally: list[None] = []
        self._filtered_tally: list[None] = []
        # counters, all guarded by self._lock
        self._sampled_out = 0
        self._filtered = 0
        self._processed = 0
        self._dead = 0
        self._batches = 0
        self._flush_errors = 0
        self._in_worker = 0
        self._spooled = 0
        self._replayed = 0
        self._dropped = 0
        self._dropped_by: dict[tuple[str, str], int] = {}
        self._flushes = 0
        self._flush_seconds = 0.0

    def _after_fork_in_child(self) -> None:
        """The child gets an empty queue, a new lock and new threads, not the parent's."""
        self._init_runtime()
        for sub in self._subscriptions:
            sub.close()
        self._subscriptions = []

    def start(self) -> None:
        """Start the worker now (it starts on first use unless ``autostart=False``)."""
        if self._pid != os.getpid():
            self._after_fork_in_child()
        with self._lock:
            self._autostart = True
            self._ensure_started()

    def _ensure_started(self) -> None:
        """Start the worker and sink threads (lock held; first use, or first use after fork)."""
        if self._worker is not None or self._closed:
            return
        for sink in self._sinks:
            if sink.name not in self._runners:
                self._runners[sink.name] = _SinkRunner(sink, self)
        self._worker = threading.Thread(target=self._run, name="tachimeter-collector", daemon=True)
        self._worker.start()

    # -- the caller path --------------------------------------------------------------------

    def track(
        self,
        event: EventKind | str,
        properties: dict[str, Any] | None = None,
        *,
        user_id: str | None = None,
        session_id: str | None = None,
        data: Any = None,
        priority: EventPriority = _NORMAL,
        call: CallKind = "track",
        page_url: str | None = None,
        referrer: str | None = None,
        timestamp: dt.datetime | None = None,
    ) -> None:
        """Record an event; never blocks on I/O and never raises for telemetry reasons.

        ``properties`` is key-value data; ``data`` is any other ``EventData`` variant
        (it wins when both are given). The worker reads them shortly after the call, as
        ``logging`` formats its arguments later: do not change them once passed (pass a
        copy of a dict you keep changing).
        """
        # The hot path, inlined (a call costs a tenth of it): known name, normal priority.
        # No pid check: os.fork() runs our register_at_fork hook, which resets the child;
        # flush() and shutdown() still check the pid for forks made behind Python's back.
        if timestamp is None:
            ns = _time_ns()
        elif isinstance(timestamp, dt.datetime):  # subclasses too (pandas.Timestamp)
            ns = _ns_of(timestamp)
        else:  # an untyped caller's str, float or date
            self._reject(  # type: ignore[unreachable]
                f"$.timestamp: expected a datetime, got {type(timestamp).__name__} "
                f"{timestamp!r:.40}; pass datetime.fromisoformat(...) or leave it out (now)"
            )
            return
        # Not copied: a copy per event costs a fifth of the pipeline's throughput (one
        # more GC-tracked dict each); the docstring asks callers not to change it.
        payload = properties if data is None else data
        if self._strict:
            self._check_now(event, payload, user_id, session_id, call, page_url, referrer, ns)
        try:
            route = self._routes[event]
        except (KeyError, TypeError):
            route = None
        if route is None or priority is not _NORMAL:
            self._enqueue(
                event,
                priority,
                ns,
                payload,
                user_id,
                session_id,
                call,
                page_url,
                referrer,
                None,
            )
            return
        append = route.normal
        if append is None:
            self._filtered_tally.append(None)
            return
        draw = route.draw
        if draw is not None:
            if draw() >= route.rate:
                self._sampled_tally.append(None)
                return
        elif route.sampler is not None and not route.sampler.keep(self._clock()):
            self._sampled_tally.append(None)
            return
        record = Record(
            ns, route.kind, payload, _NORMAL, user_id, session_id, call, page_url, referrer, None
        )  # fmt: skip
        free = self._free
        try:
            free.pop()
        except IndexError:
            self._enqueue_full(record)
            return
        append(record)
        if len(free) == self._wake_at:
            self._wakeup.set()

    def _check_now(
        self,
        name: object,
        data: Any,
        user_id: str | None,
        session_id: str | None,
        call: CallKind,
        page_url: str | None,
        referrer: str | None,
        ns: int,
    ) -> None:
        """Strict mode: validate the event on the caller's thread, as the worker will, and
        raise ``ValidationError`` with its errors (the event is then not recorded)."""
        try:
            kind = cast(EventKind, event_type_from_name(name) if isinstance(name, str) else name)
            candidate = AnalyticsEvent(
                id=uuid7_from_ns(ns),
                category=kind.category(),
                event_type=kind,
                timestamp=from_ns(ns),
                session_id=session_id or self._session_id,
                data=data,
                metadata=self._metadata,
                user_id=user_id,
                call=call,
                page_url=page_url,
                referrer=referrer,
            )
            result = validate_event(candidate, limits=self._limits)
        except TachimeterError:
            raise
        except Exception as exc:
            raise ValidationError(f"bad event {name!r}: {type(exc).__name__}: {exc}") from None
        if not result.valid:
            raise ValidationError(f"bad event {name!r}: {'; '.join(result.errors)}")

    def collect(self, event: AnalyticsEvent) -> None:
        """Record a prebuilt event (spec 408's ``collect``)."""
        self._enqueue(
            event.event_type,
            event.priority,
            _time_ns(),
            None,
            None,
            None,
            event.call,
            None,
            None,
            event,
        )

    def collect_batch(self, events: Iterable[AnalyticsEvent]) -> None:
        """Record several prebuilt events."""
        for event in events:
            self.collect(event)

    def _enqueue(
        self,
        name: object,
        priority: EventPriority,
        ns: int,
        data: Any,
        user_id: str | None,
        session_id: str | None,
        call: CallKind,
        page_url: str | None,
        referrer: str | None,
        prebuilt: AnalyticsEvent | None,
    ) -> None:
        """The caller path for any name and priority (``track`` inlines the common case)."""
        try:
            route = self._routes[name]
        except (KeyError, TypeError):
            found = self._new_route(name, priority)
            if found is None:
                return
            route = found
        try:
            append = route.appends[priority]
        except (KeyError, TypeError):
            self._reject(f"$.priority: {priority!r} is not an EventPriority")
            return
        if append is None:
            self._filtered_tally.append(None)
            return
        draw = route.draw
        if draw is not None:
            if draw() >= route.rate:
                self._sampled_tally.append(None)
                return
        elif route.sampler is not None and not route.sampler.keep(self._clock()):
            self._sampled_tally.append(None)
            return
        record = Record(
            ns, route.kind, data, priority, user_id, session_id, call, page_url, referrer, prebuilt
        )  # fmt: skip
        free = self._free
        try:
            free.pop()
        except IndexError:
            self._enqueue_full(record)
            return
        append(record)
        if priority is _CRITICAL:
            self._urgent = True
            self._wakeup.set()
        elif len(free) == self._wake_at:
            self._wakeup.set()

    def _new_route(self, name: object, priority: EventPriority) -> _Route | None:
        """The route of a name not seen since the last change (takes the lock).

        None when the event is not to be queued at all: the collector is closing (the
        event is dropped) or the name is absurd (dead-lettered). Starts the worker on
        first use, since every first event of a name comes this way.
        """
        with self._lock:
            if self._closed or self._closing:
                self._drop("shutdown", priority if isinstance(priority, EventPriority) else _NORMAL)
                return None
            if self._worker is None and self._autostart:
                self._ensure_started()
            try:
                return self._route(name)
            except Exception as exc:  # an unhashable or otherwise absurd event type
                self._dead += 1
                self._dead_letter_reason(f"$.event_type: {exc}")
                if self._strict:
                    raise CollectorError(f"bad event type {name!r}: {exc}") from exc
                return None

    def _route(self, name: object) -> _Route:
        """The route of an event name or type, cached (lock held)."""
        kind = cast(EventKind, event_type_from_name(name) if isinstance(name, str) else name)
        route = self._routes.get(kind)
        if route is not None:
            self._routes[name] = route
            return route
        sampler = Sampler(self._manager.get_sampling(kind), seed=self._seed)
        cached = len(self._routes) < _MAX_POLICIES
        if sampler.always_keeps:
            kept: Sampler | None = None
        elif cached:
            kept = sampler
        else:
            # Uncached names share one sampler, so their min-per-window still holds overall.
            if self._overflow_sampler is None:
                self._overflow_sampler = sampler
            kept = self._overflow_sampler
        route = _Route(kind, self._manager, self._enabled, self._queues, kept)
        if cached:
            self._routes[kind] = route
            self._routes[name] = route
        return route

    def _reject(self, reason: str) -> None:
        """Dead-letter an event the caller path cannot take (raises in strict mode)."""
        with self._lock:
            self._dead += 1
            self._dead_letter_reason(reason)
        if self._strict:
            raise CollectorError(reason)

    def _enqueue_full(self, record: Record) -> None:
        """The caller path when no slot was free: the back-pressure policy decides (lock)."""
        priority = record.priority
        with self._lock:
            if self._closed or self._closing:
                self._drop("shutdown", priority)
                return
            try:
                self._free.pop()  # the worker may have given room back meanwhile
                placed = True
            except IndexError:
                placed = False
            if not placed:
                self._high_water = max(self._high_water, self._slots)
                self._wakeup.set()
                if self._make_room(priority):
                    placed = True  # the victim's slot
                elif self._policy_name == "spill":
                    if len(self._spill_inbox) < self._capacity * _SPILL_INBOX_FACTOR:
                        self._spill_inbox.append(record)
                        return
                    self._drop("spill_backlog_full", priority)
                elif self._policy_name == "block" and self._wait_for_room():
                    placed = True
                else:
                    self._drop("queue_full", priority)
            if not placed:
                if self._strict:
                    raise CollectorError(
                        f"event queue is full ({self._capacity} events); raise "
                        "collection.queue_capacity or lower the event rate"
                    )
                return
            self._queues[_RANK[priority]].append(record)
            if priority is _CRITICAL:
                self._urgent = True

    def _make_room(self, priority: EventPriority) -> bool:
        """Under drop_lowest_priority, evict a lower-priority queued event (lock held)."""
        if self._policy_name != "drop_lowest_priority":
            return False
        rank = _RANK[priority]
        for lower in range(rank):
            queue = self._queues[lower]
            if queue:
                victim = queue.popleft()
                self._drop("queue_full", victim.priority)
                return True
        return False

    def _wait_for_room(self) -> bool:
        """Under block, wait up to block_timeout for a free slot and claim it (lock held;
        released while waiting)."""
        self._blocked += 1
        try:
            deadline = time.monotonic() + self._block_timeout
            while not self._closed:
                try:
                    self._free.pop()
                    return True
                except IndexError:
                    pass
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._wakeup.set()
                self._not_full.wait(remaining)
        finally:
            self._blocked -= 1
        return False

    def _drop(self, reason: str, priority: EventPriority) -> None:
        self._dropped += 1
        key = (reason, priority.value)
        self._dropped_by[key] = self._dropped_by.get(key, 0) + 1

    def _resize_slots(self) -> None:
        """Match the free slots to the capacity and buffer size in force (lock held)."""
        grow = self._capacity - self._slots
        if grow > 0:
            self._free.extend([None] * grow)
            self._slots += grow
        while self._slots > self._capacity:
            try:
                self._free.pop()
            except IndexError:
                break  # the rest is kept back by the worker as it takes records
            self._slots -= 1
        self._wake_at = self._slots - self._buffer_size

    def _release_slots(self, taken: int) -> None:
        """Give back the slots of records taken from the queues (lock held)."""
        keep = min(taken, self._slots - self._capacity)
        if keep > 0:
            self._slots -= keep
            taken -= keep
            self._wake_at = self._slots - self._buffer_size
        self._free.extend(repeat(None, taken))

    def _fold_tallies(self) -> None:
        """Move the caller's lock-free tallies into the counters (lock held)."""
        # Deleting the first n removes exactly those counted; Nones appended meanwhile stay.
        n = len(self._sampled_tally)
        del self._sampled_tally[:n]
        self._sampled_out += n
        n = len(self._filtered_tally)
        del self._filtered_tally[:n]
        self._filtered += n

    # -- the worker -------------------------------------------------------------------------

    def _take(self) -> list[Record]:
        """Up to a chunk of queued records in arrival order (lock held)."""
        # The queue only grows between takes, so its peak is what is held just before one.
        self._high_water = max(self._high_water, self._slots - len(self._free))
        queues = [q for q in self._queues if q]
        if not queues:
            return []
        records: list[Record] = []
        for queue in queues:
            # popleft in a C loop, not a copy and clear: callers append without the lock.
            records.extend(map(_call, repeat(queue.popleft, min(len(queue), _WORKER_CHUNK))))
        if len(queues) > 1:
            records.sort(key=_arrival)
        self._release_slots(len(records))
        self._in_worker += len(records)
        if self._blocked:
            self._not_full.notify_all()
        return records

    def _run(self) -> None:
        while True:
            self._wakeup.wait(_POLL_SECONDS)
            self._wakeup.clear()
            try:
                if self._work():
                    return
            except Exception:  # the worker must survive anything; count what it lost
                _log.exception("tachimeter collector worker error")

    def _work(self) -> bool:
        """One pass; returns True when the collector has closed and is drained."""
        while True:
            with self._lock:
                spill = list(self._spill_inbox)
                self._spill_inbox.clear()
                self._in_worker += len(spill)
                given_back = list(self._retry_inbox)
                self._retry_inbox.clear()
                self._in_worker += len(given_back)
                records = self._take()
                requests = self._flush_requests
                urgent = self._urgent
                self._urgent = False
                closing = self._closing
                room = len(self._free)
                self._fold_tallies()  # keeps the tallies short
            if spill:
                self._write_spool(self._overflow, self._materialize(spill))
            if given_back:
                self._write_spool(self._retry, given_back, taken=len(given_back))
            now = self._clock()
            if not self._spool_replayed:
                self._spool_replayed = True
                self._replay_spool(self._overflow, room)
                self._replay_spool(self._retry, room)
                self._retry_due_ns = now + int(_RETRY_SECONDS * 1e9)
            else:
                if self._overflow.pending and room > 0 and not records:
                    self._replay_spool(self._overflow, room)
                if self._retry.pending and now >= self._retry_due_ns:
                    self._replay_spool(self._retry, room)
                    self._retry_due_ns = now + int(_RETRY_SECONDS * 1e9)
            if records:
                self._accept(self._materialize(records))
            now = self._clock()
            due = now - self._last_flush_ns >= self._flush_interval_ns
            while len(self._buffer) >= self._buffer_size:
                self._dispatch(self._buffer[: self._buffer_size])
                del self._buffer[: self._buffer_size]
            if self._buffer and (urgent or due or requests or closing):
                self._dispatch(self._buffer)
                self._buffer = []
            if due or not self._buffer:
                self._last_flush_ns = now
            if not records and not spill and not given_back:
                break
        if requests or closing:
            with self._lock:
                drained = not any(self._queues) and not self._spill_inbox
                spool_left = self._overflow.pending
            if not drained or (spool_left and not closing):
                self._wakeup.set()  # more to drain before the flush can be answered
                return False
            with self._lock:
                answered, self._flush_requests = self._flush_requests, []
            for request in answered:
                runners = list(self._runners.values())
                request.remaining = len(runners)
                if not runners:
                    request.done.set()
                for runner in runners:
                    runner.request_flush(request)
            if closing:
                return True
        return False

    def _materialize(self, records: list[Record]) -> list[AnalyticsEvent]:
        """Build, validate, sanitize and enrich events (dead letters are counted here).

        The worker's hot loop, one pass per record: the id and timestamp are made inline
        from the caller's nanoseconds (one datetime conversion per second of events, one
        datetime per distinct microsecond), then :func:`prepare_event` validates and
        scrubs the event together (one pass over the values of common flat data). An
        invalid event comes back unsanitized with its errors and is dead-lettered.
        """
        dead: list[str] = []
        events: list[AnalyticsEvent] = []
        append = events.append
        metadata = self._metadata
        session = self._session_id
        scrubber = self._scrubber
        limits = self._limits
        prepare = prepare_event
        new_uuid, set_int, set_safe, bits = _new_uuid, _set_uuid_int, _set_uuid_safe, _id_bits
        datetime, utc, unknown = dt.datetime, _UTC, _SAFE_UNKNOWN
        last_kind: object = None
        category = EventCategory.CUSTOM
        second = last_micros = last_ms = -1
        ms_bits = 0
        year = month = day = hour = minute = sec = 0
        timestamp = _EPOCH
        fields = map(msgspec.structs.astuple, records)  # each tuple is freed at once
        for ns, kind, data, priority, user_id, session_id, call, url, ref, prebuilt in fields:
            try:
                if prebuilt is None:
                    if kind is not last_kind:  # records of one name share one kind object
                        category = kind.category()
                        last_kind = kind
                    # UUIDv7 as tachimeter.model.ids.uuid7_from_ns lays it out; the bits of
                    # the millisecond, version and variant are shared by its events.
                    ms, rest = divmod(ns, 1_000_000)
                    if ms != last_ms:
                        last_ms = ms
                        ms_bits = (ms << 80) | _VERSION_7 | _VARIANT
                    uid = new_uuid(_UUID)
                    set_int(uid, ms_bits | (((rest << 12) // 1_000_000) << 64) | bits(62))
                    set_safe(uid, unknown)
                    # A burst records several events per microsecond: they share one
                    # datetime (immutable), which costs as much to make as the id.
                    micros = ns // 1000
                    if micros != last_micros:
                        last_micros = micros
                        whole, micro = divmod(micros, 1_000_000)
                        if whole != second:
                            base = datetime.fromtimestamp(whole, utc)
                            year, month, day = base.year, base.month, base.day
                            hour, minute, sec = base.hour, base.minute, base.second
                            second = whole
                        timestamp = datetime(year, month, day, hour, minute, sec, micro, utc)
                    event = AnalyticsEvent(
                        id=uid,
                        category=category,
                        event_type=kind,
                        timestamp=timestamp,
                        session_id=session_id or session,
                        priority=priority,
                        data=data,
                        metadata=metadata,
                        user_id=user_id,
                        call=call,
                        page_url=url,
                        referrer=ref,
                        session_assigned=session_id is None,
                    )
                elif prebuilt.session_id is None:
                    event = msgspec.structs.replace(
                        prebuilt, session_id=session, session_assigned=True
                    )
                else:
                    event = prebuilt
            except Exception as exc:  # a hostile payload must not stop the pipeline
                dead.append(f"{type(exc).__name__}: {exc}")
                continue
            try:
                prepared, result = prepare(event, scrubber, limits=limits)
            except Exception as exc:  # a hostile payload (a key whose hash raises)
                dead.append(f"{event.event_name} {event.id}: {type(exc).__name__}: {exc}")
                continue
            if result is None or result.valid:  # valid, perhaps with warnings
                append(prepared)
            else:
                dead.append(f"{event.event_name} {event.id}: {'; '.join(result.errors)}")
                self._write_dead_letter(event, result.errors)
        with self._lock:
            self._in_worker -= len(records)
            self._dead += len(dead)
        for reason in dead[:1]:
            self._dead_letter_reason(reason)
        return events

    def _accept(self, events: list[AnalyticsEvent]) -> None:
        """Publish events to live subscribers and buffer them for the sinks."""
        for sub in self._subscriptions:
            for event in events:
                sub.publish(event)
        self._buffer.extend(events)

    def _dispatch(self, events: list[AnalyticsEvent]) -> None:
        """Hand ``events`` to every sink as one batch; the batch owns the list from now on
        (callers pass a slice or a buffer they replace), so it is not copied."""
        if not events:
            return
        with self._lock:
            self._sequence += 1
            sequence = self._sequence
        batch = EventBatch.new(events, sequence)
        failed = 0
        for runner in list(self._runners.values()):
            if not runner.submit(batch):
                failed += 1
        with self._lock:
            self._processed += len(events)
            self._batches += 1
            self._flush_errors += failed

    def _open_spool(self, slot: _SpoolSlot) -> Spool | None:
        if slot.spool is None and self._policy_name == "spill":
            try:
                spool = Spool(self._spool_dir, fsync=self._spool_fsync, name=slot.name)
            except StoreError as exc:
                _log.warning("%s", exc)
                return None
            with self._lock:
                # Events a previous process left in the spool are received now.
                slot.spool = spool
                slot.foreign_left += spool.pending
        return slot.spool

    def _write_spool(self, slot: _SpoolSlot, events: list[AnalyticsEvent], taken: int = 0) -> None:
        """Append events to a spool; ``taken`` of them were counted as in the worker's hands."""
        spool = self._open_spool(slot)
        try:
            if spool is None:
                raise OSError("the spool could not be opened")
            spool.append([encode_event(e, format="msgpack") for e in events])
        except OSError as exc:
            with self._lock:
                self._in_worker -= taken
                for event in events:
                    self._drop("spool_write_failed", event.priority)
            _log.warning("spool write failed, %d events dropped: %s", len(events), exc)
            return
        with self._lock:
            self._in_worker -= taken
            self._spooled += len(events)

    def _replay_spool(self, slot: _SpoolSlot, room: int) -> None:
        """Read spooled events back into the pipeline, as room allows."""
        spool = self._open_spool(slot)
        if spool is None or not spool.pending:
            return
        with self._lock:
            payloads = spool.read(max(room, self._buffer_size))
            self._in_worker += len(payloads)
        events: list[AnalyticsEvent] = []
        for payload in payloads:
            try:
                events.append(decode_event(payload, format="msgpack"))
            except ValidationError:
                self._dead_letter_reason("a spooled record does not decode as an event")
        with self._lock:
            self._in_worker -= len(payloads)
            foreign = min(len(payloads), slot.foreign_left)
            slot.foreign_left -= foreign
            self._replayed += foreign
            self._dead += len(payloads) - len(events)
        self._accept(events)

    def _write_dead_letter(self, event: AnalyticsEvent, errors: list[str]) -> None:
        if self._dead_letter_path is None:
            return
        try:
            if self._dead_letter_file is None:
                self._dead_letter_file = open(self._dead_letter_path, "ab")  # noqa: SIM115
            line = msgspec.json.encode({"errors": errors, "event": event_to_builtins(event)})
            self._dead_letter_file.write(line + b"\n")
            self._dead_letter_file.flush()
        except (OSError, TypeError) as exc:
            _log.warning("cannot write dead letter to %r: %s", self._dead_letter_path, exc)

    _last_dead_log = -_LOG_EVERY_SECONDS

    def _dead_letter_reason(self, reason: str) -> None:
        now = time.monotonic()
        if now - self._last_dead_log >= _LOG_EVERY_SECONDS:
            self._last_dead_log = now
            _log.warning("dead-lettered an event (further ones counted, not logged): %s", reason)

    def _sink_failed(self, name: str) -> None:
        with self._lock:
            self._flush_errors += 1

    def _flush_reported(self, request: _FlushRequest) -> None:
        with self._lock:
            request.remaining -= 1
            finished = request.remaining <= 0
        if finished:
            request.done.set()

    # -- control ----------------------------------------------------------------------------

    def register_sink(self, sink: EventSink) -> None:
        """Add a sink; names must be unique."""
        if not isinstance(sink, EventSink) or not isinstance(sink.name, str):
            raise CollectorError(
                f"{sink!r} is not an event sink: a sink has a name (str) and process(batch) "
                "and flush() methods (see tachimeter.collect.sinks.EventSink)"
            )
        with self._lock:
            if any(s.name == sink.name for s in self._sinks):
                raise CollectorError(
                    f"a sink named {sink.name!r} is already registered; unregister it first"
                )
            self._sinks.append(sink)
            if self._worker is not None:
                self._runners[sink.name] = _SinkRunner(sink, self)
        attach = getattr(sink, "attach_spill", None)
        if attach is not None and self._policy_name == "spill":
            attach(self.spill_events)

    def spill_events(self, events: list[AnalyticsEvent]) -> bool:
        """Take back events a sink could not deliver, into the spool (``spill`` only).

        They count as received again and go to a retry spool, offered to every sink again
        at the next start and at most once a minute meanwhile: delivery is at least once,
        and storing sinks de-duplicate by id. While any are parked, ``flush()`` is False.
        Returns False when the policy is not ``spill`` or the spill inbox is full.
        """
        with self._lock:
            if self._policy_name != "spill" or self._closed:
                return False
            room = self._capacity * _SPILL_INBOX_FACTOR - len(self._retry_inbox)
            if len(events) > room:
                return False
            self._retry_inbox.extend(events)
        self._wakeup.set()
        return True

    def unregister_sink(self, name: str) -> bool:
        """Remove a sink by name; batches already given to it are still delivered."""
        with self._lock:
            before = len(self._sinks)
            self._sinks = [s for s in self._sinks if s.name != name]
            runner = self._runners.pop(name, None)
        if runner is not None:
            runner.stop()
        return len(self._sinks) < before

    @property
    def sinks(self) -> list[EventSink]:
        """The registered sinks."""
        return list(self._sinks)

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Deliver everything received so far and flush every sink.

        Returns True when all of it reached every sink and every sink's ``flush()``
        succeeded within ``timeout`` seconds: those events are acknowledged.
        """
        if self._pid != os.getpid():
            self._after_fork_in_child()
        request = _FlushRequest(sinks=1)
        with self._lock:
            if self._closed:
                return not any(self._queues)
            if self._worker is None and not self._autostart:
                return not any(self._queues)
            self._ensure_started()
            self._flush_requests.append(request)
        self._wakeup.set()
        started = time.perf_counter()
        finished = request.done.wait(timeout)
        with self._lock:
            self._flushes += 1
            self._flush_seconds += time.perf_counter() - started
            parked = len(self._retry_inbox) + self._retry.pending
        return finished and not request.failures and parked == 0

    def shutdown(self, timeout: float | None = None) -> bool:
        """Flush, stop the threads and close sinks' files; True when all was delivered.

        Events that could not be delivered in time stay counted as pending; under the
        ``spill`` policy they are written to the spool and replayed on the next start.
        Later tracking calls are dropped (reason ``shutdown``).
        """
        if timeout is None:
            timeout = self._shutdown_timeout
        deadline = time.monotonic() + timeout
        if self._pid != os.getpid():
            self._after_fork_in_child()
        with self._lock:
            if self._closed:
                return True
            started = self._worker is not None
        delivered = self.flush(timeout) if started else True
        with self._lock:
            self._closing = True
            # Later calls miss the routes and take the lock, where they are dropped and
            # counted; a call already past its route lookup may still queue its event,
            # which then stays counted as pending.
            self._routes = {}
        self._wakeup.set()
        worker = self._worker
        if worker is not None:
            worker.join(max(0.0, deadline - time.monotonic()))
        if self._policy_name == "spill" and (worker is None or not worker.is_alive()):
            self._spill_leftovers()
        for runner in self._runners.values():
            runner.stop()
        for runner in self._runners.values():
            runner.join(deadline - time.monotonic())
        for sink in self._sinks:
            # Sinks with a close() release files and cut retry waits short (HttpSink); one
            # that is still stuck in process() is past the deadline and left behind.
            close = getattr(sink, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as exc:
                    _log.warning("sink %r failed to close: %s", sink.name, exc)
        with self._lock:
            self._closed = True
            self._not_full.notify_all()
        stats = self.stats()
        undelivered = stats.events_pending + sum(stats.undelivered_by_sink.values())
        ok = delivered and undelivered == 0
        if not ok:
            _log.warning(
                "tachimeter collector shut down with events undelivered: %d pending, by sink %s",
                stats.events_pending,
                stats.undelivered_by_sink,
            )
        for sub in list(self._subscriptions):
            sub.close()
        self._overflow.close()
        self._retry.close()
        if self._dead_letter_file is not None:
            self._dead_letter_file.close()
        return ok

    def _spill_leftovers(self) -> None:
        """At shutdown under spill: queued and buffered events go to the spool."""
        with self._lock:
            records: list[Record] = []
            for queue in self._queues:
                records.extend(map(_call, repeat(queue.popleft, len(queue))))
            records.sort(key=_arrival)
            self._release_slots(len(records))
            records.extend(self._spill_inbox)
            self._spill_inbox.clear()
            self._in_worker += len(records)
            given_back = list(self._retry_inbox)
            self._retry_inbox.clear()
            self._in_worker += len(given_back)
        if records:
            self._write_spool(self._overflow, self._materialize(records))
        if given_back:
            self._write_spool(self._retry, given_back, taken=len(given_back))
        if self._buffer:
            buffered, self._buffer = self._buffer, []
            self._write_spool(self._overflow, buffered)

    # -- observation ------------------------------------------------------------------------

    @property
    def session_id(self) -> str:
        """The session id given to events that come without one."""
        return self._session_id

    def subscribe(
        self,
        capacity: int | None = None,
        *,
        filter: Callable[[AnalyticsEvent], bool] | None = None,
    ) -> Subscription:
        """A bounded live stream of delivered events (sync or async iteration)."""
        sub = Subscription(
            capacity or self._subscriber_capacity, filter=filter, on_close=self._unsubscribe
        )
        with self._lock:
            self._subscriptions = [*self._subscriptions, sub]
            self._ensure_started()
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subscriptions = [s for s in self._subscriptions if s is not sub]

    def stats(self) -> CollectorStatsSnapshot:
        """The counters now (consistent with each other: taken under one lock)."""
        with self._lock:
            self._fold_tallies()
            self._high_water = max(self._high_water, self._slots - len(self._free))
            spool_pending = self._overflow.pending + self._retry.pending
            pending = (
                sum(map(len, self._queues))
                + len(self._spill_inbox)
                + len(self._retry_inbox)
                + self._in_worker
                + len(self._buffer)
                + spool_pending
            )
            by_reason: dict[str, int] = {}
            by_priority: dict[str, int] = {}
            for (reason, priority), count in self._dropped_by.items():
                by_reason[reason] = by_reason.get(reason, 0) + count
                by_priority[priority] = by_priority.get(priority, 0) + count
            # Received is the sum of the outcomes: the caller path counts nothing itself.
            received = (
                self._processed
                + self._sampled_out
                + self._filtered
                + self._dropped
                + self._dead
                + pending
            )
            return CollectorStatsSnapshot(
                events_received=received,
                events_sampled_out=self._sampled_out,
                events_processed=self._processed,
                events_dropped=self._dropped,
                batches_flushed=self._batches,
                flush_errors=self._flush_errors,
                events_filtered=self._filtered,
                events_dead_lettered=self._dead,
                events_pending=pending,
                dropped_by_reason=by_reason,
                dropped_by_priority=by_priority,
                events_spooled=self._spooled,
                events_replayed=self._replayed,
                spool_corrupt_records=sum(
                    slot.spool.corrupt_records
                    for slot in (self._overflow, self._retry)
                    if slot.spool is not None
                ),
                subscribers_missed=sum(s.missed for s in self._subscriptions),
                queue_high_water=self._high_water,
                flushes=self._flushes,
                flush_seconds_total=self._flush_seconds,
                undelivered_by_sink={
                    name: runner.undelivered for name, runner in self._runners.items()
                },
            )

    def dropped(self) -> dict[tuple[str, str], int]:
        """Drops by (reason, priority)."""
        with self._lock:
            return dict(self._dropped_by)


def _arrival(record: Record) -> int:
    return record.ns


def _ns_of(when: dt.datetime) -> int:
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


# -- process-wide hooks: exit and fork ------------------------------------------------------

_fork_hook_installed = False
_hooks_lock = threading.Lock()
# Collectors shut down at exit (those created with register_atexit=True).
_exit_collectors: weakref.WeakSet[EventCollector] = weakref.WeakSet()
# One deadline shared by every collector at exit, the process must never hang: the
# longest collection.shutdown_timeout among them (2 s by default).
EXIT_DEADLINE_SECONDS: Final = 2.0


def _ensure_fork_hook() -> None:
    global _fork_hook_installed
    with _hooks_lock:
        if _fork_hook_installed:
            return
        _fork_hook_installed = True
    os.register_at_fork(after_in_child=_reset_all_after_fork)


def _shutdown_all_at_exit() -> None:
    collectors = list(_exit_collectors)
    seconds = max(
        (c.config.collection.shutdown_timeout for c in collectors),
        default=EXIT_DEADLINE_SECONDS,
    )
    deadline = time.monotonic() + seconds
    for collector in collectors:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            collector.shutdown(timeout=remaining)
        except Exception:
            _log.exception("tachimeter collector failed to shut down at exit")


def _reset_all_after_fork() -> None:
    _id_random.seed(os.urandom(32))  # the child must not repeat the parent's ids
    for collector in list(_collectors):
        collector._after_fork_in_child()


atexit.register(_shutdown_all_at_exit)
