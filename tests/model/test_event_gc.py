"""AnalyticsEvent is not tracked by the garbage collector (``gc=False``): what that keeps
safe. Events do not add to the collector's work, their data still does, cycles among
data values are still collected, and the one cycle that could leak (data leading back
to its own event) is rejected by validation, so a pipeline never delivers it."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

from tachimeter.model import AnalyticsEvent, EventBatch, EventType, validate_event


class _Node:
    """A weak-referenceable object, to see when a cycle is freed."""

    def __init__(self) -> None:
        self.links: list[Any] = []


@pytest.fixture(autouse=True)
def _manual_gc() -> Iterator[None]:
    """Each test decides itself when the garbage collector runs."""
    enabled = gc.isenabled()
    gc.disable()
    yield
    if enabled:
        gc.enable()


def test_events_are_not_tracked_and_their_data_still_is() -> None:
    data = {"feature": "search", "tags": ["a", "b"]}
    event = AnalyticsEvent.new(EventType.FEATURE_USED, data)
    assert not gc.is_tracked(event)
    assert gc.is_tracked(event.data) and gc.is_tracked(event.data["tags"])


def test_a_cycle_among_data_values_is_collected_once_the_event_is_gone() -> None:
    node = _Node()
    data: dict[str, Any] = {"node": node}
    node.links.append(data)  # data -> node -> list -> data
    event = AnalyticsEvent.new(EventType.FEATURE_USED, data)
    batch = EventBatch.new([event], sequence=1)
    alive = weakref.ref(node)
    del node, data, event
    gc.collect()
    assert alive() is not None  # the batch still holds it
    del batch
    gc.collect()
    assert alive() is None


def test_a_cycle_among_data_values_is_collected_while_the_event_lives() -> None:
    """The event's data is the cycle's entry; replacing it frees the old cycle."""
    node = _Node()
    node.links.append(node)
    event = AnalyticsEvent.new(EventType.FEATURE_USED, {"node": node})
    alive = weakref.ref(node)
    del node
    event = event.with_priority(event.priority)  # a copy holds the same data
    gc.collect()
    assert alive() is not None
    event = AnalyticsEvent.new(EventType.FEATURE_USED, {"other": 1})
    gc.collect()
    assert alive() is None and event.data == {"other": 1}


def test_data_leading_back_to_its_own_event_is_invalid() -> None:
    """The one cycle an untracked event cannot have collected needs data mutated after
    the event was built to lead back to it; validation rejects such data (an event is
    not a JSON value), so neither the collector nor the server delivers the event."""
    data: dict[str, Any] = {"feature": "search"}
    event = AnalyticsEvent.new(EventType.FEATURE_USED, data)
    data["self"] = event
    assert not validate_event(event).valid
    holder: dict[str, Any] = {"feature": "search"}
    held = AnalyticsEvent.new(EventType.FEATURE_USED, holder)
    holder["batch"] = [held]  # through a container that holds the event
    assert not validate_event(held).valid
    data.clear()  # break the cycles by hand: they are not collectable
    holder.clear()
