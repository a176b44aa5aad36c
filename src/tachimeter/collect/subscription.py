"""Live event subscriptions: bounded, lossy for the slow subscriber only.

The collector's worker publishes each delivered event to every subscription without
waiting: a subscription that is full drops its own oldest event and counts it in
``missed``. Iterate synchronously (``for event in sub``, or ``sub.get(timeout)``) or
asynchronously (``async for event in sub``).
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING

from tachimeter.model.events import AnalyticsEvent

if TYPE_CHECKING:
    import asyncio

__all__ = ["Subscription"]


class Subscription:
    """A bounded stream of live events.

    >>> sub = Subscription(capacity=2)
    >>> for e in "abc": sub.publish(e)  # doctest: +SKIP
    >>> sub.missed  # doctest: +SKIP
    1
    """

    __slots__ = (
        "_async_waiters",
        "_buffer",
        "_closed",
        "_cond",
        "_on_close",
        "capacity",
        "filter",
        "missed",
    )

    def __init__(
        self,
        capacity: int = 1000,
        *,
        filter: Callable[[AnalyticsEvent], bool] | None = None,
        on_close: Callable[[Subscription], None] | None = None,
    ) -> None:
        self.capacity = capacity
        self.filter = filter
        self.missed = 0
        self._buffer: deque[AnalyticsEvent] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._closed = False
        self._on_close = on_close
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    @property
    def closed(self) -> bool:
        """True after ``close()`` (or the collector's shutdown)."""
        return self._closed

    def publish(self, event: AnalyticsEvent) -> None:
        """Offer an event (worker thread); never blocks."""
        if self.filter is not None and not self.filter(event):
            return
        with self._cond:
            if self._closed:
                return
            if len(self._buffer) >= self.capacity:
                self._buffer.popleft()
                self.missed += 1
            self._buffer.append(event)
            self._cond.notify()
            waiters, self._async_waiters = self._async_waiters, []
        _wake(waiters)

    def get(self, timeout: float | None = None) -> AnalyticsEvent | None:
        """The next event, waiting up to ``timeout`` seconds; None on timeout or close."""
        with self._cond:
            if not self._buffer and not self._closed:
                self._cond.wait(timeout)
            return self._buffer.popleft() if self._buffer else None

    def drain(self) -> list[AnalyticsEvent]:
        """Everything buffered now, without waiting."""
        with self._cond:
            items = list(self._buffer)
            self._buffer.clear()
            return items

    def close(self) -> None:
        """Stop receiving; iterators end once the buffer is empty."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            waiters, self._async_waiters = self._async_waiters, []
        _wake(waiters)
        if self._on_close is not None:
            self._on_close(self)

    def __iter__(self) -> Iterator[AnalyticsEvent]:
        while True:
            event = self.get()
            if event is None:
                return
            yield event

    def __aiter__(self) -> AsyncIterator[AnalyticsEvent]:
        return self._aiter()

    async def _aiter(self) -> AsyncIterator[AnalyticsEvent]:
        import asyncio  # deferred: about 15 ms of imports most users never need

        loop = asyncio.get_running_loop()
        while True:
            ready = asyncio.Event()
            with self._cond:
                if self._buffer:
                    event: AnalyticsEvent | None = self._buffer.popleft()
                elif self._closed:
                    return
                else:
                    event = None
                    self._async_waiters.append((loop, ready))
            if event is not None:
                yield event
            else:
                await ready.wait()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _wake(waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]) -> None:
    for loop, ready in waiters:
        with contextlib.suppress(RuntimeError):  # that loop was closed meanwhile
            loop.call_soon_threadsafe(ready.set)
