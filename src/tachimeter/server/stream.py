"""The live stream: committed events fanned out to server-sent-event subscribers.

Each committed event gets a stream id ``<epoch>-<seq>``: ``epoch`` names this server
process, ``seq`` counts events in it. The last ``replay`` events are kept, so a client
that reconnects with ``Last-Event-ID`` gets what it missed; when that id is from another
process or older than what is kept, the stream starts with an ``event: reset`` (the
client should reload what it shows) and goes on live. Delivery on the stream is at least
once: a batch retried by its client may appear twice.

Frames (``text/event-stream``)::

    retry: 2000

    id: 5f3a9c01-42
    event: event
    data: {"id": "0192...", "event_name": "feature_used", "category": "usage", ...}

    : heartbeat 2024-03-01T12:00:15Z

A subscriber that falls ``_QUEUE_FRAMES`` events behind is sent ``event: reset`` and
disconnected rather than slowing the server; it reconnects and resumes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Final

import msgspec

from tachimeter.model.codec import data_to_builtins
from tachimeter.model.events import AnalyticsEvent
from tachimeter.model.rows import event_to_row
from tachimeter.model.timestamps import format_timestamp, utc_now

__all__ = ["EventHub", "StreamFilter"]

# Frames a subscriber may have waiting before it is cut off: a few seconds of a busy
# server for a browser tab that went to sleep.
_QUEUE_FRAMES: Final = 2_048
# Frames joined into one write: fewer syscalls under load, still prompt when idle.
_FRAMES_PER_WRITE: Final = 256

_encode: Final = msgspec.json.Encoder().encode
_decode_text: Final = msgspec.json.Decoder().decode


class StreamFilter(msgspec.Struct, frozen=True):
    """Which events a subscriber wants: names and categories (empty: all).

    >>> StreamFilter(frozenset({"feature_used"}), frozenset()).matches("feature_used", "usage")
    True
    """

    names: frozenset[str] = frozenset()
    categories: frozenset[str] = frozenset()

    def matches(self, name: str, category: str) -> bool:
        """Whether an event of this name and category passes."""
        return (not self.names or name in self.names) and (
            not self.categories or category in self.categories
        )


class _Record:
    """One committed event on the stream; its frame is encoded once, on first use."""

    __slots__ = ("_frame", "category", "event", "name", "seq")

    def __init__(self, seq: int, event: AnalyticsEvent) -> None:
        self.seq = seq
        self.event = event
        self.name = event.event_type.event_name
        self.category = event.category.value
        self._frame: bytes | None = None

    def frame(self, epoch: str) -> bytes:
        if self._frame is None:
            self._frame = (
                f"id: {epoch}-{self.seq}\nevent: event\ndata: ".encode()
                + _encode(event_record(self.event))
                + b"\n\n"
            )
        return self._frame


def event_record(event: AnalyticsEvent) -> dict[str, Any]:
    """An event as the query API's event records show it (the row as stored)."""
    row = event_to_row(event)
    return {
        "id": row.id,
        "event_type": row.event_type,
        "event_name": row.event_name,
        "timestamp": row.timestamp,
        "session_id": row.session_id,
        "user_id": row.user_id,
        "properties": data_to_builtins(event.data),
        "context": _decode_text(row.context) if row.context else {},
        "page_url": row.page_url,
        "referrer": row.referrer,
        "category": event.category.value,
        "priority": event.priority.value,
    }


class _Subscriber:
    __slots__ = ("filter", "overflowed", "queue")

    def __init__(self, stream_filter: StreamFilter) -> None:
        self.filter = stream_filter
        self.queue: asyncio.Queue[_Record | None] = asyncio.Queue(_QUEUE_FRAMES)
        self.overflowed = False


class EventHub:
    """Fans committed events out to live subscribers; keeps the last ``replay`` of them.

    Publish from any thread with :meth:`publish_threadsafe` once :meth:`attach` gave it
    the event loop; subscribers iterate :meth:`frames` on that loop.

    >>> hub = EventHub(replay=100)
    >>> hub.subscribers
    0
    """

    __slots__ = (
        "_closed",
        "_kept",
        "_loop",
        "_replay",
        "_ring",
        "_seq",
        "_subscribers",
        "epoch",
    )

    def __init__(self, replay: int = 10_000) -> None:
        self.epoch = secrets.token_hex(4)
        # Committed batches as (seq of their first event, events): the replay buffer
        # costs one append per batch; records and frames are built only for readers.
        self._ring: collections.deque[tuple[int, list[AnalyticsEvent]]] = collections.deque()
        self._kept = 0  # events in the ring
        self._replay = max(0, replay)
        self._seq = 0
        self._subscribers: set[_Subscriber] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    @property
    def subscribers(self) -> int:
        """Connected subscribers now."""
        return len(self._subscribers)

    @property
    def closing(self) -> bool:
        """True once :meth:`close` ran: new streams are refused."""
        return self._closed

    @property
    def last_id(self) -> str:
        """The id of the latest event (``<epoch>-0`` before any)."""
        return f"{self.epoch}-{self._seq}"

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind to the event loop that serves the subscribers (at startup)."""
        self._loop = loop
        self._closed = False

    def publish_threadsafe(self, events: Sequence[AnalyticsEvent]) -> None:
        """Hand committed events to the loop (called on the writer thread)."""
        loop = self._loop
        if loop is None or self._closed or loop.is_closed() or not events:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody listens
            loop.call_soon_threadsafe(self._publish, list(events))

    def _publish(self, events: list[AnalyticsEvent]) -> None:
        first = self._seq + 1
        self._seq += len(events)
        self._keep(first, events)
        if not self._subscribers:
            return
        for seq, event in enumerate(events, start=first):
            record = _Record(seq, event)
            for sub in tuple(self._subscribers):
                if sub.overflowed or not sub.filter.matches(record.name, record.category):
                    continue
                try:
                    sub.queue.put_nowait(record)
                except asyncio.QueueFull:
                    sub.overflowed = True
                    self._subscribers.discard(sub)
                    _force_put(sub.queue, None)

    def _keep(self, first: int, events: list[AnalyticsEvent]) -> None:
        """Add a batch to the replay buffer, dropping the oldest events past ``replay``."""
        if len(events) > self._replay:
            events = events[len(events) - self._replay :]
            first = self._seq - len(events) + 1
        if events:
            self._ring.append((first, events))
            self._kept += len(events)
        while self._kept > self._replay:
            oldest_first, oldest = self._ring[0]
            extra = self._kept - self._replay
            if extra >= len(oldest):
                self._ring.popleft()
                self._kept -= len(oldest)
            else:
                self._ring[0] = (oldest_first + extra, oldest[extra:])
                self._kept -= extra

    def _records_after(self, seq: int) -> list[_Record]:
        """Records of the kept events with a seq above ``seq``."""
        out: list[_Record] = []
        for first, events in self._ring:
            if first + len(events) - 1 <= seq:
                continue
            start = max(0, seq + 1 - first)
            out.extend(_Record(first + i, events[i]) for i in range(start, len(events)))
        return out

    def close(self) -> None:
        """End every stream (graceful shutdown must not wait for idle subscribers)."""
        self._closed = True
        for sub in tuple(self._subscribers):
            _force_put(sub.queue, None)
        self._subscribers.clear()

    def close_threadsafe(self) -> None:
        """:meth:`close` from another thread (a signal handler)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.close)

    def _replay_after(self, last_event_id: str | None) -> tuple[list[_Record], str | None]:
        """Kept records after ``last_event_id``, or a reason why the client must reset."""
        if not last_event_id:
            return [], None
        epoch, _, seq_text = last_event_id.strip().partition("-")
        try:
            seq = int(seq_text)
        except ValueError:
            return [], "unknown Last-Event-ID"
        if epoch != self.epoch:
            return [], "the server restarted"
        if seq >= self._seq:
            return [], None
        oldest = self._ring[0][0] if self._ring else self._seq + 1
        if seq + 1 < oldest:
            return self._records_after(0), "events were missed (older than the replay buffer)"
        return self._records_after(seq), None

    async def frames(
        self,
        stream_filter: StreamFilter,
        *,
        last_event_id: str | None = None,
        heartbeat: float = 15.0,
        clock: Callable[[], str] | None = None,
    ) -> AsyncIterator[bytes]:
        """The byte frames of one subscriber's stream, until it or the server closes."""
        sub = _Subscriber(stream_filter)
        replay, reset = self._replay_after(last_event_id)
        if not self._closed:
            self._subscribers.add(sub)
        try:
            head = b"retry: 2000\n\n"
            if reset is not None:
                head += b"event: reset\ndata: " + _encode({"reason": reset}) + b"\n\n"
            matching = [r for r in replay if stream_filter.matches(r.name, r.category)]
            yield head + b"".join(r.frame(self.epoch) for r in matching)
            if self._closed:
                return
            while True:
                try:
                    record = await asyncio.wait_for(sub.queue.get(), heartbeat)
                except TimeoutError:
                    stamp = clock() if clock else format_timestamp(utc_now())
                    yield f": heartbeat {stamp}\n\n".encode()
                    continue
                chunks: list[bytes] = []
                done = record is None
                if record is not None:
                    chunks.append(record.frame(self.epoch))
                while not done and len(chunks) < _FRAMES_PER_WRITE and not sub.queue.empty():
                    more = sub.queue.get_nowait()
                    if more is None:
                        done = True
                    else:
                        chunks.append(more.frame(self.epoch))
                if done and sub.overflowed:
                    chunks.append(
                        b"event: reset\ndata: "
                        + _encode({"reason": "the client fell behind; reconnect to resume"})
                        + b"\n\n"
                    )
                if chunks:
                    yield b"".join(chunks)
                if done:
                    return
        finally:
            self._subscribers.discard(sub)


def _force_put(queue: asyncio.Queue[_Record | None], item: None) -> None:
    """Put the end marker even into a full queue (dropping its oldest frame)."""
    while True:
        try:
            queue.put_nowait(item)
            return
        except asyncio.QueueFull:
            with contextlib.suppress(asyncio.QueueEmpty):
                queue.get_nowait()
