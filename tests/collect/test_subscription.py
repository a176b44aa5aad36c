"""Live subscribers: bounded, sync and async, a slow one loses only its own events."""

from __future__ import annotations

import asyncio
from typing import Any

from collecting import wait_for

from tachimeter.collect.sinks import MemorySink
from tachimeter.collect.subscription import Subscription
from tachimeter.model import EventCategory


def test_sync_iteration_ends_on_close(collectors: Any) -> None:
    collector = collectors()
    sub = collector.subscribe()
    for i in range(3):
        collector.track("feature_used", {"i": i})
    assert wait_for(lambda: len(sub._buffer) == 3)
    sub.close()
    assert [e.data["i"] for e in sub] == [0, 1, 2]


def test_slow_subscriber_loses_its_oldest_and_counts_them(collectors: Any) -> None:
    sink = MemorySink()
    collector = collectors(sinks=[sink])
    slow = collector.subscribe(capacity=5)
    fast = collector.subscribe(capacity=1000)
    for i in range(50):
        collector.track("feature_used", {"i": i})
    assert collector.flush(timeout=10)
    assert len(sink.events()) == 50  # the pipeline did not wait for the slow subscriber
    assert [e.data["i"] for e in slow.drain()] == list(range(45, 50))
    assert slow.missed == 45
    assert len(fast.drain()) == 50
    assert collector.stats().subscribers_missed == 45


def test_filtered_subscription(collectors: Any) -> None:
    collector = collectors()
    errors = collector.subscribe(filter=lambda e: e.category is EventCategory.ERROR)
    collector.track("feature_used")
    collector.track("error_occurred")
    event = errors.get(timeout=10)
    assert event is not None and event.event_name == "error_occurred"
    assert errors.get(timeout=0.05) is None


def test_async_iteration(collectors: Any) -> None:
    collector = collectors()
    sub = collector.subscribe()

    async def consume() -> list[int]:
        seen: list[int] = []
        async for event in sub:
            seen.append(event.data["i"])
            if len(seen) == 3:
                break
        return seen

    async def main() -> list[int]:
        task = asyncio.create_task(consume())
        await asyncio.sleep(0)
        for i in range(3):
            collector.track("feature_used", {"i": i})
        return await asyncio.wait_for(task, timeout=10)

    assert asyncio.run(main()) == [0, 1, 2]


def test_async_iteration_ends_when_closed() -> None:
    sub = Subscription(capacity=3)

    async def main() -> list[Any]:
        async def consume() -> list[Any]:
            return [e async for e in sub]

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.01)
        sub.close()
        return await asyncio.wait_for(task, timeout=10)

    assert asyncio.run(main()) == []


def test_shutdown_closes_subscriptions(collectors: Any) -> None:
    collector = collectors()
    sub = collector.subscribe()
    collector.shutdown(timeout=5)
    assert sub.closed
    assert sub.get(timeout=0.01) is None
