"""EventCollector: collection, batching, sessions, sinks, dead letters, critical path."""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from collecting import FailingSink, GateSink, make_config, wait_for

from tachimeter.collect.sinks import ConsoleSink, MemorySink
from tachimeter.errors import CollectorError, ValidationError
from tachimeter.model import (
    AnalyticsEvent,
    EventBuilder,
    EventCategory,
    EventPriority,
    EventType,
    UsageEventData,
)
from tachimeter.model.ids import uuid7_from_ns
from tachimeter.model.timestamps import to_ns


def test_spec_collector_creation(collectors: Any) -> None:
    """Spec 408 test_collector_creation, ported."""
    assert collectors().stats().events_received == 0


def test_spec_event_collection(collectors: Any) -> None:
    """Spec 408 test_event_collection, ported."""
    sink = MemorySink()
    collector = collectors(sinks=[sink])
    collector.collect(
        EventBuilder(EventType.MISSION_CREATED).usage_data("mission", "create", True).build()
    )
    assert collector.flush(timeout=10)
    batches = sink.get_events()
    assert len(batches) == 1
    assert len(batches[0].events) == 1


def test_spec_session_enrichment(collectors: Any) -> None:
    """Spec 408 test_session_enrichment, ported; plus: an assigned id is marked as such."""
    sink = MemorySink()
    collector = collectors(sinks=[sink])
    event = EventBuilder(EventType.SESSION_STARTED).build()
    assert event.session_id is None
    collector.collect(event)
    collector.track("feature_used", session_id="given-session")
    assert collector.flush(timeout=10)
    assigned, given = sink.events()
    assert assigned.session_id == collector.session_id and assigned.session_assigned
    assert given.session_id == "given-session" and not given.session_assigned


def test_spec_broadcast_subscription(collectors: Any) -> None:
    """Spec 408 test_broadcast_subscription, ported (with a bounded wait, not a sleep)."""
    collector = collectors()
    subscriber = collector.subscribe()
    event = EventBuilder(EventType.FEATURE_USED).usage_data("test", "action", True).build()
    collector.collect(event)
    received = subscriber.get(timeout=10)
    assert received is not None and received.id == event.id


def test_spec_sampling(collectors: Any) -> None:
    """Spec 408 test_sampling, ported: every event is received, some sampled out."""
    collector = collectors(sinks=[MemorySink()])
    for _ in range(100):
        collector.collect(
            EventBuilder(EventType.RESPONSE_LATENCY).performance_data("latency", 100, "ms").build()
        )
    assert collector.flush(timeout=10)
    stats = collector.stats()
    assert stats.events_received == 100
    assert stats.events_processed + stats.events_sampled_out == 100
    assert stats.events_processed >= 10  # min_per_window of the performance category


def test_track_builds_the_event_on_the_worker(collectors: Any) -> None:
    sink = MemorySink()
    collector = collectors(sinks=[sink])
    collector.track("search_performed", {"query": "q"}, user_id="u1", priority=EventPriority.HIGH)
    collector.track(EventType.FEATURE_USED, data=UsageEventData(feature="f", action="a"))
    assert collector.flush(timeout=10)
    first, second = sink.events()
    assert first.event_name == "search_performed" and first.data == {"query": "q"}
    assert first.user_id == "u1" and first.priority is EventPriority.HIGH
    assert first.id.version == 7 and first.metadata.os
    assert isinstance(second.data, UsageEventData)
    assert first.timestamp <= second.timestamp


def test_batches_are_size_bounded_and_numbered_by_one_sequence(collectors: Any) -> None:
    sink = MemorySink()
    collector = collectors(make_config(**{"collection.buffer_size": 10}), sinks=[sink])
    for i in range(95):
        collector.track("feature_used", {"i": i})
    assert collector.flush(timeout=10)
    collector.track("feature_used", {"i": 95})
    assert collector.flush(timeout=10)
    batches = sink.get_events()
    assert all(len(b) <= 10 for b in batches)
    assert [b.sequence for b in batches] == list(range(1, len(batches) + 1))
    assert [e.data["i"] for e in sink.events()] == list(range(96))
    assert collector.stats().batches_flushed == len(batches)


def test_config_filters_are_counted_not_queued(collectors: Any) -> None:
    config = make_config(
        disabled_categories=["performance"],
        disabled_event_types=["search_performed"],
        min_priority="normal",
    )
    sink = MemorySink()
    collector = collectors(config, sinks=[sink])
    collector.track(EventType.CPU_USAGE)
    collector.track("search_performed")
    collector.track("feature_used", priority=EventPriority.LOW)
    collector.track("feature_used")
    assert collector.flush(timeout=10)
    stats = collector.stats()
    assert stats.events_filtered == 3 and stats.events_processed == 1
    assert stats.balanced()


def test_disabled_collection_filters_everything(collectors: Any) -> None:
    collector = collectors(make_config(enabled=False))
    collector.track("feature_used")
    assert collector.stats().events_filtered == 1


def test_invalid_events_are_dead_lettered_with_reason(collectors: Any, tmp_path: Path) -> None:
    dead = tmp_path / "dead.jsonl"
    sink = MemorySink()
    collector = collectors(make_config(**{"collection.dead_letter_path": str(dead)}), sinks=[sink])
    collector.track("feature_used", {"bad": float("nan")})
    collector.track("Not A Valid Name")
    collector.track("feature_used", {"good": 1})
    assert collector.flush(timeout=10)
    stats = collector.stats()
    assert stats.events_dead_lettered == 2 and stats.events_processed == 1
    assert stats.balanced()
    lines = [json.loads(line) for line in dead.read_text().splitlines()]
    assert len(lines) == 2
    assert "not a finite number" in lines[0]["errors"][0]
    assert "snake_case" in lines[1]["errors"][0]


def test_a_bad_id_or_data_kind_is_dead_lettered_and_its_batch_stored(
    collectors: Any, tmp_path: Path
) -> None:
    """An int user id or text as data once passed validation and made the store refuse
    the whole batch; now only those events are dead-lettered."""
    from tachimeter.defaults import default_projections
    from tachimeter.store.sink import StoreSink

    db = tmp_path / "a.db"
    sink = StoreSink.open(str(db), make_config(), projections=default_projections())
    collector = collectors(sinks=[sink])
    for i in range(20):
        collector.track("feature_used", {"i": i}, user_id=f"u{i}")
    collector.track("feature_used", {"i": "bad"}, user_id=42)  # type: ignore[arg-type]
    collector.track("feature_used", "not a dict")  # type: ignore[arg-type]
    collector.track("feature_used", {"i": "bad"}, session_id=["s"])  # type: ignore[arg-type]
    assert collector.flush(timeout=10)
    stats = collector.stats()
    assert (stats.events_processed, stats.events_dead_lettered) == (20, 3)
    assert sink.stats()["inserted"] == 20


def test_secrets_are_scrubbed_before_any_sink_sees_them(collectors: Any) -> None:
    sink = MemorySink()
    collector = collectors(sinks=[sink])
    secret = "sk-" + "a1B2c3D4e5" * 4
    collector.track("feature_used", {"note": f"key {secret}", "api_key": "hunter2"})
    assert collector.flush(timeout=10)
    (event,) = sink.events()
    assert secret not in json.dumps(event.data)
    assert event.data["api_key"] != "hunter2"


def test_critical_events_are_delivered_without_waiting_for_a_flush(collectors: Any) -> None:
    sink = MemorySink()
    collector = collectors(make_config(**{"collection.flush_interval": 3600}), sinks=[sink])
    collector.track("feature_used")
    collector.track("error_occurred", priority=EventPriority.CRITICAL)
    assert wait_for(lambda: len(sink.events()) == 2)


def test_sink_registration_and_unregistration(collectors: Any) -> None:
    first, second = MemorySink("first"), MemorySink("second")
    collector = collectors(sinks=[first])
    collector.track("feature_used")
    assert collector.flush(timeout=10)
    collector.register_sink(second)
    with pytest.raises(CollectorError, match="already registered"):
        collector.register_sink(MemorySink("second"))
    collector.track("feature_used")
    assert collector.flush(timeout=10)
    assert collector.unregister_sink("first")
    assert not collector.unregister_sink("nope")
    collector.track("feature_used")
    assert collector.flush(timeout=10)
    assert len(first.events()) == 2 and len(second.events()) == 2
    assert [s.name for s in collector.sinks] == ["second"]


def test_a_failing_sink_does_not_stop_the_others(collectors: Any) -> None:
    good, bad = MemorySink("good"), FailingSink()
    collector = collectors(sinks=[bad, good])
    for _ in range(5):
        collector.track("feature_used")
    assert collector.flush(timeout=10) is False  # the failing sink's flush failed
    assert len(good.events()) == 5
    stats = collector.stats()
    assert stats.flush_errors >= 2 and bad.calls >= 1
    assert stats.events_processed == 5


def test_a_slow_sink_does_not_stop_the_others(collectors: Any) -> None:
    slow, fast = GateSink(), MemorySink("fast")
    collector = collectors(sinks=[slow, fast])
    try:
        collector.track("feature_used", priority=EventPriority.CRITICAL)
        assert wait_for(lambda: len(fast.events()) == 1)
        assert slow.entered.wait(10)
        collector.track("feature_used", priority=EventPriority.CRITICAL)
        assert wait_for(lambda: len(fast.events()) == 2)
        assert slow.events() == []
        assert collector.stats().undelivered_by_sink["gate"] == 2
    finally:
        slow.gate.set()
    assert collector.flush(timeout=10)
    assert len(slow.events()) == 2


def test_console_sink_prints_one_line_per_event(collectors: Any) -> None:
    import io

    stream = io.StringIO()
    collector = collectors(sinks=[ConsoleSink("app", stream=stream)])
    collector.track("feature_used", {"k": 1})
    assert collector.flush(timeout=10)
    assert stream.getvalue() == "[app] feature_used: {'k': 1}\n"


def test_collect_batch_and_prebuilt_events_keep_their_ids(collectors: Any) -> None:
    sink = MemorySink()
    collector = collectors(sinks=[sink])
    events = [AnalyticsEvent.new(EventType.FEATURE_USED) for _ in range(3)]
    collector.collect_batch(events)
    assert collector.flush(timeout=10)
    assert [e.id for e in sink.events()] == [e.id for e in events]


def test_update_config_applies_to_new_events(collectors: Any) -> None:
    sink = MemorySink()
    collector = collectors(sinks=[sink])
    collector.track("feature_used")
    collector.update_config(make_config(disabled_categories=["usage"]))
    collector.track("feature_used")
    assert collector.flush(timeout=10)
    assert len(sink.events()) == 1 and collector.stats().events_filtered == 1
    assert EventCategory.USAGE in collector.config.disabled_categories


def test_strict_mode_raises_on_a_full_queue(collectors: Any) -> None:
    config = make_config(strict=True, **{"collection.queue_capacity": 2,
                                         "collection.buffer_size": 2})  # fmt: skip
    collector = collectors(config, autostart=False)
    collector.track("feature_used")
    collector.track("feature_used")
    with pytest.raises(CollectorError, match="queue is full"):
        collector.track("feature_used")


def test_tracking_after_shutdown_is_dropped_and_counted(collectors: Any) -> None:
    collector = collectors()
    assert collector.shutdown(timeout=5)
    collector.track("feature_used")
    stats = collector.stats()
    assert stats.events_dropped == 1 and stats.dropped_by_reason == {"shutdown": 1}
    assert stats.balanced()


def test_a_type_registered_after_first_use_gets_its_category(collectors: Any) -> None:
    from tachimeter.model import register_event_type

    collector = collectors(make_config(disabled_categories=["security"]))
    collector.track("lateplugin.login.tried")  # unregistered: category custom, collected
    register_event_type("lateplugin.login.tried", EventCategory.SECURITY)
    collector.track("lateplugin.login.tried")  # now security, which is disabled
    assert collector.stats().events_filtered == 1


def test_an_unhashable_event_type_is_dead_lettered_not_raised(collectors: Any) -> None:
    collector = collectors()
    collector.track(["not", "a", "name"])  # type: ignore[arg-type]
    stats = collector.stats()
    assert stats.events_dead_lettered == 1 and stats.balanced()


# -- the lock-free caller path: per-name routes, tallies, ids made on the worker -------------


def test_a_cached_route_follows_every_config_change(collectors: Any) -> None:
    """The per-name decision (sampling, filters) is rebuilt after update_config."""
    sink = MemorySink()
    collector = collectors(sinks=[sink])
    none_kept = {"per_event_type": {"feature_used": {"rate": 0.0, "min_per_window": 0}}}
    for _ in range(5):
        collector.track("feature_used")  # the route is cached from the first call on
    collector.update_config(make_config(sampling=none_kept))
    for _ in range(5):
        collector.track("feature_used")
    collector.update_config(make_config(min_priority="high"))
    for _ in range(5):
        collector.track("feature_used")
    collector.track("feature_used", priority=EventPriority.HIGH)
    collector.update_config(make_config(enabled=False))
    collector.track("feature_used", priority=EventPriority.CRITICAL)
    collector.update_config(make_config())
    collector.track("feature_used")
    assert collector.flush(timeout=10)
    stats = collector.stats()
    assert (stats.events_sampled_out, stats.events_filtered) == (5, 6)
    assert stats.events_processed == len(sink.events()) == 7
    assert stats.events_received == 18 and stats.balanced()


def test_outcomes_decided_without_a_lock_are_counted_exactly_across_threads(
    collectors: Any,
) -> None:
    """8 threads mixing kept, sampled and filtered events: every outcome counted once."""
    sink = MemorySink()
    config = make_config(
        disabled_event_types=["search_performed"],
        min_priority="normal",
        sampling={"per_event_type": {"cpu_usage": {"rate": 0.3, "min_per_window": 0}}},
        **{"collection.queue_capacity": 100_000, "collection.buffer_size": 500},
    )
    collector = collectors(config, sinks=[sink])
    per_thread = 2_000

    def produce(t: int) -> None:
        for i in range(per_thread):
            match i % 4:
                case 0:
                    collector.track("feature_used", {"t": t, "i": i})
                case 1:
                    collector.track("cpu_usage", {"t": t, "i": i})
                case 2:
                    collector.track("search_performed", {"t": t, "i": i})
                case _:
                    collector.track("feature_used", {"t": t, "i": i}, priority=EventPriority.LOW)

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert collector.flush(timeout=30)
    stats = collector.stats()
    names = [e.event_name for e in sink.events()]
    quarter = 8 * per_thread // 4
    assert names.count("feature_used") == quarter
    assert stats.events_filtered == 2 * quarter
    assert stats.events_sampled_out == quarter - names.count("cpu_usage")
    assert 0.2 * quarter < names.count("cpu_usage") < 0.4 * quarter
    assert stats.events_received == 8 * per_thread and stats.balanced()
    assert len({(e.data["t"], e.data["i"]) for e in sink.events()}) == len(names)


def test_an_unknown_priority_is_dead_lettered_not_raised(collectors: Any) -> None:
    collector = collectors()
    collector.track("feature_used", priority="urgent")  # type: ignore[arg-type]
    stats = collector.stats()
    assert stats.events_dead_lettered == 1 and stats.balanced()
    strict = collectors(make_config(strict=True))
    with pytest.raises(CollectorError, match="priority"):
        strict.track("feature_used", priority="urgent")  # type: ignore[arg-type]


def test_a_timestamp_that_is_not_a_datetime_is_dead_lettered_not_raised(
    collectors: Any,
) -> None:
    collector = collectors(sinks=[MemorySink()])
    for when in ("2024-01-01T00:00:00Z", 1_700_000_000.0, dt.date(2024, 1, 1)):
        collector.track("feature_used", {"a": 1}, timestamp=when)  # type: ignore[arg-type]

    class Moment(dt.datetime):  # a datetime subclass (pandas.Timestamp is one) is fine
        pass

    collector.track("feature_used", {"a": 2}, timestamp=Moment(2024, 1, 1, tzinfo=dt.UTC))
    stats = collector.stats()
    assert stats.events_dead_lettered == 3 and stats.balanced()
    assert collector.flush(timeout=10) and collector.stats().events_processed == 1
    strict = collectors(make_config(strict=True))
    with pytest.raises(CollectorError, match=r"\$.timestamp: expected a datetime, got str"):
        strict.track("feature_used", timestamp="2024-01-01")  # type: ignore[arg-type]


def test_strict_mode_raises_on_the_caller_for_what_the_worker_would_dead_letter(
    collectors: Any,
) -> None:
    sink = MemorySink()
    strict = collectors(make_config(strict=True), sinks=[sink])
    with pytest.raises(ValidationError, match="not a finite number"):
        strict.track("feature_used", {"x": float("nan")})
    with pytest.raises(ValidationError, match="snake_case"):
        strict.track("Bad Name")
    with pytest.raises(ValidationError, match=r"\$.user_id: expected a string"):
        strict.track("feature_used", user_id=7)  # type: ignore[arg-type]
    strict.track("feature_used", {"x": 1.5})
    assert strict.flush(timeout=10)
    assert [e.data for e in sink.events()] == [{"x": 1.5}]


def test_a_sink_is_checked_when_it_is_registered(collectors: Any) -> None:
    with pytest.raises(CollectorError, match="is not an event sink: a sink has a name"):
        collectors(sinks=[object()])
    collector = collectors(sinks=[MemorySink()])
    with pytest.raises(CollectorError, match="is not an event sink"):
        collector.register_sink(object())  # type: ignore[arg-type]


def test_ids_and_timestamps_come_from_the_callers_clock(collectors: Any) -> None:
    """The worker's inline UUIDv7 matches tachimeter.model.ids, and timestamps are exact
    across second boundaries and out-of-order times."""
    sink = MemorySink()
    collector = collectors(sinks=[sink])
    base = dt.datetime(2025, 3, 1, 23, 59, 59, 999_998, tzinfo=dt.UTC)
    offsets = [0, 1, 2, 1_000_000, -3_000_000, 86_400_000_000, 7]
    times = [base + dt.timedelta(microseconds=us) for us in offsets]
    for i, when in enumerate(times):
        collector.track("feature_used", {"i": i}, timestamp=when)
    assert collector.flush(timeout=10)
    events = sorted(sink.events(), key=lambda e: e.data["i"])
    assert [e.timestamp for e in events] == times
    for event, when in zip(events, times, strict=True):
        ns = to_ns(when)
        assert event.id.version == 7 and event.id.variant == uuid.RFC_4122
        assert event.id.int >> 62 == uuid7_from_ns(ns).int >> 62  # all but the random bits
    by_time = sorted(events, key=lambda e: e.timestamp)
    assert sorted(events, key=lambda e: e.id) == by_time
    assert len({e.id for e in events}) == len(events)


def test_a_name_tracked_before_shutdown_is_dropped_after_it(collectors: Any) -> None:
    """Shutdown clears the cached routes, so the lock-free path cannot queue past it."""
    sink = MemorySink()
    collector = collectors(sinks=[sink])
    collector.track("feature_used")
    assert collector.shutdown(timeout=5)
    collector.track("feature_used")
    stats = collector.stats()
    assert stats.dropped_by_reason == {"shutdown": 1} and stats.events_pending == 0
    assert len(sink.events()) == 1 and stats.balanced()


def test_events_in_one_microsecond_share_a_timestamp_and_keep_distinct_ids(
    collectors: Any,
) -> None:
    """The worker makes one datetime per distinct microsecond: repeats, returns to an
    earlier microsecond and second boundaries all keep the caller's exact time."""
    sink = MemorySink()
    collector = collectors(sinks=[sink])
    base = dt.datetime(2025, 3, 1, 23, 59, 59, 999_999, tzinfo=dt.UTC)
    offsets = [0, 0, 0, 1, 1, 0, 2, -1_000_000, -1_000_000, 1]
    times = [base + dt.timedelta(microseconds=us) for us in offsets]
    for i, when in enumerate(times):
        collector.track("feature_used", {"i": i}, timestamp=when)
    assert collector.flush(timeout=10)
    events = sorted(sink.events(), key=lambda e: e.data["i"])
    assert [e.timestamp for e in events] == times
    assert all(e.timestamp.tzinfo is dt.UTC for e in events)
    assert len({e.id for e in events}) == len(events)


def test_a_prebuilt_event_whose_data_leads_back_to_it_is_dead_lettered(
    collectors: Any,
) -> None:
    """Events are not tracked by the garbage collector; the one cycle that would make
    one unfreeable (data leading back to its event) never reaches a sink."""
    sink = MemorySink()
    collector = collectors(sinks=[sink])
    data: dict[str, Any] = {"feature": "search"}
    event = AnalyticsEvent.new(EventType.FEATURE_USED, data)
    data["self"] = event
    collector.collect(event)
    collector.track("feature_used", {"feature": "search"})
    assert collector.flush(timeout=10)
    stats = collector.stats()
    assert stats.events_dead_lettered == 1 and stats.events_processed == 1 and stats.balanced()
    assert [e.data for e in sink.events()] == [{"feature": "search"}]
    data.clear()
