"""MissionTracker: spec 414's three tests, events, history, values, strict mode, metrics."""

from __future__ import annotations

import math
import uuid
from typing import Any

import pytest
from mission_envs import LightEnv, MissionEnv

from tachimeter.collect.collector import EventCollector
from tachimeter.config.sources import load_config
from tachimeter.errors import QueryError, ValidationError
from tachimeter.metrics import Registry, generate_latest
from tachimeter.missions import (
    CollectionFailed,
    MissionError,
    MissionStatus,
    MissionTracker,
)
from tachimeter.model.event_types import EventPriority

# -- spec 414's tests, ported ------------------------------------------------------------------


def test_mission_lifecycle(env: MissionEnv) -> None:
    tracker = env.tracker
    mission_id = uuid.uuid4()
    tracker.start_mission(mission_id, "anthropic", "claude-3-opus", [])
    assert tracker.active_count() == 1
    tracker.mission_started(mission_id)
    tracker.step_completed(mission_id, 0, True)
    tracker.tool_invoked(mission_id, "search", 100, True)
    tracker.tokens_consumed(mission_id, 500, 300, 0.05)
    tracker.mission_completed(mission_id)
    assert tracker.active_count() == 0
    analytics = tracker.get_mission(mission_id)
    assert analytics is not None
    assert analytics.status is MissionStatus.COMPLETED
    assert analytics.total_tokens == 800
    assert len(analytics.tools_used) == 1


def test_mission_failure(env: MissionEnv) -> None:
    tracker = env.tracker
    mission_id = uuid.uuid4()
    tracker.start_mission(mission_id, "openai", "gpt-4", [])
    tracker.mission_started(mission_id)
    tracker.mission_failed(
        mission_id,
        MissionError(code="TIMEOUT", message="Request timed out", step_index=2, recoverable=True),
    )
    analytics = tracker.get_mission(mission_id)
    assert analytics is not None
    assert analytics.status is MissionStatus.FAILED
    assert analytics.error is not None
    assert analytics.error.code == "TIMEOUT"


def test_metrics_calculation(env: MissionEnv) -> None:
    tracker = env.tracker
    for _ in range(5):
        mission_id = uuid.uuid4()
        tracker.start_mission(mission_id, "anthropic", "claude-3-opus", [])
        tracker.mission_started(mission_id)
        tracker.tokens_consumed(mission_id, 100, 50, 0.01)
        tracker.mission_completed(mission_id)
    mission_id = uuid.uuid4()
    tracker.start_mission(mission_id, "anthropic", "claude-3-opus", [])
    tracker.mission_started(mission_id)
    tracker.mission_failed(
        mission_id, MissionError(code="ERROR", message="Test error", recoverable=False)
    )
    metrics = tracker.calculate_metrics()
    assert metrics.total_missions == 6
    assert metrics.completed_missions == 5
    assert metrics.failed_missions == 1
    assert abs(metrics.success_rate - 0.833) < 0.01
    assert metrics.total_tokens == 750
    assert metrics.total_cost == pytest.approx(0.05)
    assert metrics.top_errors == [("ERROR", 1)]


# -- events --------------------------------------------------------------------------------------


def test_every_fact_is_an_event_with_mission_properties(light: LightEnv) -> None:
    """Each transition, step, tool and LLM call is emitted with mission_id, backend, model,
    tags and a gapless seq; lifecycle events are high priority."""
    tracker = light.tracker
    mid = tracker.start_mission(None, "anthropic", "claude-sonnet-4", ["docs", "urgent"])
    tracker.plan(mid)
    tracker.mission_started(mid)
    tracker.step_completed(mid, 0, True, name="read", duration_ms=5.0)
    tracker.tool_invoked(mid, "search", 12.5, False, error_code="HTTP_500", step_index=1)
    tracker.tokens_consumed(mid, 1200, 300, model="claude-sonnet-4", cache_read_tokens=1000)
    tracker.pause(mid)
    tracker.resume(mid)
    tracker.mission_completed(mid)
    events = light.events()
    assert [e.event_name for e in events] == [
        "mission_created",
        "mission_started",
        "mission_started",
        "mission_step_completed",
        "tool_invoked",
        "tokens_consumed",
        "mission_paused",
        "mission_resumed",
        "mission_completed",
    ]
    for seq, event in enumerate(events):
        data = event.data
        assert data["mission_id"] == mid
        assert data["backend"] == "anthropic"
        assert data["model"] == "claude-sonnet-4"
        assert data["tags"] == ["docs", "urgent"]
        assert data["seq"] == seq
    assert [e.data.get("status") for e in events] == [
        "created", "planning", "executing", None, None, None, "paused", "executing", "completed",
    ]  # fmt: skip
    tool = events[4].data
    assert tool["gen_ai.tool.name"] == "search"
    assert tool["success"] is False
    assert tool["error_code"] == "HTTP_500"
    llm = events[5].data
    assert llm["gen_ai.usage.input_tokens"] == 1200
    assert llm["gen_ai.usage.cache_read.input_tokens"] == 1000
    assert llm["cost_source"] == "genai-prices"
    assert events[0].priority is EventPriority.HIGH
    assert events[4].priority is EventPriority.NORMAL
    final = events[-1].data
    assert final["total_tokens"] == 1500
    assert final["execution_time_ms"] >= 0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda t, m: t.tool_invoked(m, "search", -1.0, True), "duration_ms"),
        (lambda t, m: t.tool_invoked(m, "search", math.nan, True), "duration_ms"),
        (lambda t, m: t.tool_invoked(m, "search", math.inf, True), "duration_ms"),
        (lambda t, m: t.tool_invoked(m, "search", "12", True), "duration_ms"),
        (lambda t, m: t.tool_invoked(m, "", 1.0, True), "tool_name"),
        (lambda t, m: t.step_completed(m, -1, True), "step_index"),
        (lambda t, m: t.tokens_consumed(m, 10, 5, cache_read_tokens=20), "cache_read_tokens"),
        (lambda t, m: t.tokens_consumed(m, -1, 5), "input_tokens"),
        (lambda t, m: t.tokens_consumed(m, 10, 5, cost=-0.5), "cost"),
        (lambda t, m: t.mission_failed(m, "boom"), "MissionError"),
    ],
)
def test_bad_values_raise_validation_error_and_change_nothing(
    light: LightEnv, call: Any, message: str
) -> None:
    tracker = light.tracker
    mid = tracker.start_mission(None, "anthropic", "claude-sonnet-4")
    tracker.mission_started(mid)
    with pytest.raises(ValidationError, match=message):
        call(tracker, mid)
    record = tracker.get_mission(mid)
    assert record is not None
    assert record.tools_used == () and record.llm_calls == 0 and record.step_count == 0


def test_bad_mission_fields_are_refused(light: LightEnv) -> None:
    with pytest.raises(ValidationError, match="backend"):
        light.tracker.start_mission(None, "", "gpt-4o")
    with pytest.raises(ValidationError, match="tag"):
        light.tracker.start_mission(None, "openai", "gpt-4o", ["ok", 3])  # type: ignore[list-item]
    assert light.tracker.active_count() == 0


def test_strict_collector_refusal_raises_collection_failed() -> None:
    config = load_config(
        env={},
        cwd="/nonexistent-tachimeter-test-dir",
        strict=True,
        **{"collection.queue_capacity": 2},
    )
    collector = EventCollector(config, register_atexit=False, autostart=False)
    try:
        tracker = MissionTracker(collector, database="/nonexistent-tachimeter-test-dir/x.db")
        mid = tracker.start_mission(None, "anthropic", "claude-sonnet-4")
        tracker.mission_started(mid)
        with pytest.raises(CollectionFailed, match="tool_invoked"):
            tracker.tool_invoked(mid, "search", 1.0, True)
        record = tracker.get_mission(mid)
        assert record is not None and record.tool_calls == 1  # the tracker's state moved on
    finally:
        collector.shutdown(timeout=5)


# -- history -------------------------------------------------------------------------------------


def test_history_survives_a_new_tracker_and_collector(make_env: Any) -> None:
    first = make_env("shared.db")
    mid = first.tracker.start_mission(None, "anthropic", "claude-sonnet-4", ["x"])
    first.tracker.mission_started(mid)
    first.tracker.tool_invoked(mid, "search", 10.0, True)
    first.tracker.tool_invoked(mid, "search", 30.0, False)
    first.tracker.tokens_consumed(mid, 100, 20, 0.002)
    first.tracker.mission_completed(mid)
    first.close()
    second = make_env("shared.db")
    record = second.tracker.get_mission(mid)
    assert record is not None
    assert record.status is MissionStatus.COMPLETED
    assert record.tags == ("x",)
    [usage] = record.tools_used
    assert (usage.tool_name, usage.invocation_count, usage.total_time_ms) == ("search", 2, 40.0)
    assert (usage.success_count, usage.failure_count) == (1, 1)
    assert record.total_cost == pytest.approx(0.002)
    assert second.tracker.calculate_metrics().total_missions == 1


def test_recent_cache_is_bounded_and_falls_back_to_the_store(env: MissionEnv) -> None:
    tracker = MissionTracker(env.collector, database=env.path, recent=2)
    ids = []
    for _ in range(4):
        mid = tracker.start_mission(None, "openai", "gpt-4o")
        tracker.mission_started(mid)
        tracker.mission_completed(mid)
        ids.append(mid)
    assert len(tracker._recent) == 2
    env.flush()
    from_store = tracker.get_mission(ids[0])
    assert from_store is not None and from_store.status is MissionStatus.COMPLETED
    assert tracker.get_mission("unknown") is None


def test_calculate_metrics_without_a_store_says_how_to_fix(light: LightEnv) -> None:
    with pytest.raises(QueryError, match="MissionProjection"):
        light.tracker.calculate_metrics()


def test_active_missions_snapshot(light: LightEnv) -> None:
    tracker = light.tracker
    a = tracker.start_mission(None, "anthropic", "claude-sonnet-4")
    tracker.mission_started(a)
    tracker.tool_invoked(a, "search", 5.0, True)
    active = tracker.active_missions()
    assert [m.mission_id for m in active] == [a]
    assert active[0].duration() is not None
    assert active[0].success_rate() is None


# -- spec 023 metrics ------------------------------------------------------------------------------


def test_agent_metrics_are_recorded_in_the_registry(light: LightEnv) -> None:
    registry = Registry()
    tracker = MissionTracker(light.collector, registry=registry, database="/nonexistent/x.db")
    mid = tracker.start_mission(None, "anthropic", "claude-sonnet-4")
    tracker.mission_started(mid)
    tracker.tool_invoked(mid, "search", 5.0, True)
    tracker.tool_invoked(mid, "search", 5.0, False)
    tracker.tokens_consumed(mid, 100, 20)
    tracker.mission_failed(mid, TimeoutError("slow"))
    text = generate_latest(registry).decode()
    assert 'tool_invocations_total{tool="search",status="success"} 1.0' in text
    assert 'tool_invocations_total{tool="search",status="error"} 1.0' in text
    assert 'llm_tokens_used_total{model="claude-sonnet-4",token_type="input"} 100.0' in text
    assert 'loop_errors_total{backend="anthropic",error_type="TIMEOUT"} 1.0' in text
    assert 'loop_execution_duration_seconds_count{backend="anthropic",status="failed"} 1' in text
    assert "active_loops 0.0" in text
