"""The Pythonic API: ``mission()`` blocks, ``@tool``, ``llm_call`` costs, refusals."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from mission_envs import LightEnv, MissionEnv

from tachimeter.errors import InvalidStateTransition
from tachimeter.missions import (
    Mission,
    MissionStatus,
    MissionTracker,
    current_mission,
    default_tracker,
    mission,
    tool,
)
from tachimeter.model.prices import ModelPrice, PriceTable
from tachimeter.model.tokens import TokenUsage


def _only(events: list[Any]) -> str:
    """The id of the one mission the events belong to."""
    [mission_id] = {e.data["mission_id"] for e in events}
    return str(mission_id)


def _by_name(events: list[Any], name: str) -> list[dict[str, Any]]:
    return [e.data for e in events if e.event_name == name]


def test_block_completes_and_tools_attach_to_it(light: LightEnv) -> None:
    @tool
    def read_file(path: str) -> str:
        return path.upper()

    with mission("anthropic", "claude-sonnet-4", ["docs"], tracker=light.tracker) as m:
        assert current_mission() is m
        assert read_file("a") == "A"
        assert m.step(success=True) == 0
        assert m.step(success=False, name="write") == 1
        m.tool("search", duration_ms=120, success=True)
        with tool("grep"):
            pass
        with m.tool_call("lint"):
            pass
    assert current_mission() is None
    record = m.record()
    assert record is not None and record.status is MissionStatus.COMPLETED
    assert [t.tool_name for t in record.tools_used] == ["read_file", "search", "grep", "lint"]
    assert (record.step_count, record.steps_completed) == (2, 1)
    tools = _by_name(light.events(), "tool_invoked")
    assert all(t["mission_id"] == m.id for t in tools)
    assert all(t["duration_ms"] >= 0 for t in tools)


def test_exception_fails_the_mission_with_a_classified_error_and_propagates(
    env: MissionEnv,
) -> None:
    def run() -> Mission:
        with mission("openai", "gpt-4o", tracker=env.tracker) as m:
            m.step(success=True)
            m.step(success=True)
            raise TimeoutError("model did not answer in 30 s")

    with pytest.raises(TimeoutError):
        run()
    env.flush()
    record = env.tracker.get_mission(_only(env.memory.events()))
    assert record is not None and record.status is MissionStatus.FAILED
    assert record.error is not None
    assert (record.error.code, record.error.step_index, record.error.recoverable) == (
        "TIMEOUT",
        2,
        True,
    )
    assert record.error.error_type == "builtins.TimeoutError"
    conn = env.connect()
    assert conn.execute(
        "SELECT status, error_code, error_step_index, error_recoverable FROM missions"
    ).fetchone() == ("failed", "TIMEOUT", 2, 1)


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (ValueError("bad"), "VALUE_ERROR"),
        (ConnectionResetError("reset"), "CONNECTION_ERROR"),
        (PermissionError("no"), "PERMISSION_DENIED"),
        (type("RateLimitError", (Exception,), {})("slow down"), "RATE_LIMITED"),
        (type("APIStatusError", (Exception,), {"status_code": 503})("down"), "SERVER_ERROR"),
        (type("Boom", (Exception,), {"code": "quota_exceeded"})("q"), "QUOTA_EXCEEDED"),
    ],
)
def test_exceptions_are_classified(light: LightEnv, exc: Exception, code: str) -> None:
    with pytest.raises(type(exc)), mission("a", "b", tracker=light.tracker) as m:
        raise exc
    record = m.record()
    assert record is not None and record.error is not None
    assert record.error.code == code


def test_interrupts_cancel_instead_of_failing(light: LightEnv) -> None:
    with pytest.raises(KeyboardInterrupt), mission("a", "b", tracker=light.tracker) as m:
        raise KeyboardInterrupt
    record = m.record()
    assert record is not None and record.status is MissionStatus.CANCELLED
    assert record.execution_time_ms is not None


def test_failed_tool_call_records_its_error_and_propagates(light: LightEnv) -> None:
    @tool("fetch")
    def fetch() -> None:
        raise ConnectionError("refused")

    with mission("a", "b", tracker=light.tracker) as m:
        with pytest.raises(ConnectionError):
            fetch()
        m.retry(ConnectionError("refused"))
    record = m.record()
    assert record is not None and record.status is MissionStatus.COMPLETED
    assert record.retry_count == 1
    assert record.tools_used[0].failure_count == 1
    [call] = _by_name(light.events(), "tool_invoked")
    assert (call["success"], call["error_code"]) == (False, "CONNECTION_ERROR")


def test_tool_outside_a_mission_just_runs(light: LightEnv) -> None:
    @tool
    def add(a: int, b: int) -> int:
        return a + b

    assert add(2, 3) == 5
    assert add.__name__ == "add"
    assert _by_name(light.events(), "tool_invoked") == []


def test_explicit_ending_inside_the_block_is_kept(light: LightEnv) -> None:
    with mission("a", "b", tracker=light.tracker) as m:
        m.cancel("not needed")
    record = m.record()
    assert record is not None and record.status is MissionStatus.CANCELLED
    with mission("a", "b", tracker=light.tracker, plan=True) as planned:
        assert light.tracker.status(planned.id) is MissionStatus.PLANNING
        planned.pause()
    record = planned.record()
    assert record is not None and record.status is MissionStatus.COMPLETED


def test_refused_calls_are_counted_not_raised(light: LightEnv) -> None:
    """Telemetry never breaks the application: a wrong call is counted and logged once."""
    with mission("a", "b", tracker=light.tracker) as m:
        m.complete()
        m.complete()
        m.tool("search", duration_ms=-5)
        m.resume()
    assert light.tracker.rejected_calls == 3


def test_strict_mode_raises_refused_calls() -> None:
    strict = LightEnv(strict=True)
    try:
        with mission("a", "b", tracker=strict.tracker) as m:
            m.complete()
            with pytest.raises(InvalidStateTransition):
                m.complete()
    finally:
        strict.close()


def test_nested_missions_attach_tools_to_the_innermost(light: LightEnv) -> None:
    @tool
    def work() -> None:
        return None

    with mission("a", "outer", tracker=light.tracker) as outer:
        work()
        with mission("a", "inner", tracker=light.tracker) as inner:
            work()
            work()
        work()
    assert outer.record().tool_calls == 2  # type: ignore[union-attr]
    assert inner.record().tool_calls == 2  # type: ignore[union-attr]


# -- llm calls and cost --------------------------------------------------------------------------


def test_llm_call_cost_is_inferred_caller_wins_and_unknown_is_null(light: LightEnv) -> None:
    tracker = light.tracker
    with mission("anthropic", "claude-sonnet-4", tracker=tracker) as m:
        inferred = m.llm_call(input_tokens=1000, output_tokens=1000)
        given = m.llm_call(input_tokens=1000, output_tokens=1000, cost=0.5)
        unknown = m.llm_call(model="in-house-llm", input_tokens=10, output_tokens=10)
    assert inferred == Decimal("0.018")
    assert given == Decimal("0.5")
    assert unknown is None
    record = m.record()
    assert record is not None
    assert record.total_cost == pytest.approx(0.518)
    assert record.unpriced_llm_calls == 1
    assert not record.cost_complete
    assert tracker.prices.unknown_models == {"in-house-llm": 1}
    calls = _by_name(light.events(), "tokens_consumed")
    assert [c["cost_source"] for c in calls] == ["genai-prices", "caller", "unknown"]
    assert calls[2]["cost_usd"] is None


def test_cache_tokens_are_part_of_input_and_charged_once(light: LightEnv) -> None:
    prices = PriceTable(
        overrides={
            "m": ModelPrice(
                input_per_mtok=Decimal(10), output_per_mtok=Decimal(20),
                cache_read_per_mtok=Decimal(1), cache_write_per_mtok=Decimal(12),
            )
        }
    )  # fmt: skip
    tracker = MissionTracker(light.collector, prices=prices, database="/nonexistent/x.db")
    with mission("a", "m", tracker=tracker) as m:
        cost = m.llm_call(
            input_tokens=1_000_000, cache_read_tokens=600_000, cache_creation_tokens=100_000,
            output_tokens=1_000_000, reasoning_tokens=400_000,
        )  # fmt: skip
    # 300k uncached * 10 + 600k * 1 + 100k * 12 + 1M output * 20, per million.
    assert cost == Decimal("3") + Decimal("0.6") + Decimal("1.2") + Decimal("20")
    record = m.record()
    assert record is not None
    assert record.token_usage == TokenUsage(
        input_tokens=1_000_000, cache_read_tokens=600_000, cache_creation_tokens=100_000,
        output_tokens=1_000_000, reasoning_tokens=400_000,
    )  # fmt: skip
    assert record.total_tokens == 2_000_000


def test_mission_cost_is_the_sum_of_its_calls_in_the_store(env: MissionEnv) -> None:
    with mission("anthropic", "claude-sonnet-4", tracker=env.tracker) as m:
        m.llm_call(input_tokens=1000, output_tokens=1000)
        m.llm_call(input_tokens=2000, output_tokens=0, cost=0.25)
        m.llm_call(model="in-house-llm", input_tokens=5, output_tokens=5)
    conn = env.connect()
    calls = conn.execute("SELECT cost, cost_source FROM mission_llm_calls ORDER BY seq").fetchall()
    assert calls == [(pytest.approx(0.018), "genai-prices"), (0.25, "caller"), (None, "unknown")]
    assert conn.execute("SELECT total_cost, unpriced_llm_calls FROM missions").fetchone() == (
        pytest.approx(0.268),
        1,
    )
    metrics = env.tracker.calculate_metrics()
    assert metrics.missions_with_unpriced_calls == 1


# -- asyncio -----------------------------------------------------------------------------------


def test_async_missions_with_nested_tool_calls(light: LightEnv) -> None:
    """Concurrent tasks each see their own mission, including tasks spawned inside it."""

    @tool("inner")
    async def inner(i: int) -> int:
        await asyncio.sleep(0)
        return i

    @tool("outer")
    async def outer(i: int) -> int:
        # A tool calling tools, some in tasks of their own: all belong to the mission.
        values = await asyncio.gather(inner(i), inner(i + 1))
        return sum(values)

    async def run(i: int) -> str:
        async with mission("a", f"model-{i % 3}", tracker=light.tracker) as m:
            await outer(i)
            await asyncio.sleep(0)
            async with tool("after"):
                await asyncio.sleep(0)
            assert current_mission() is m
        return m.id

    async def main() -> list[str]:
        return await asyncio.gather(*(run(i) for i in range(50)))

    ids = asyncio.run(main())
    assert len(set(ids)) == 50
    events = light.events()
    per_mission: dict[str, list[str]] = {}
    for call in _by_name(events, "tool_invoked"):
        per_mission.setdefault(call["mission_id"], []).append(call["gen_ai.tool.name"])
    assert set(per_mission) == set(ids)
    for names in per_mission.values():
        assert sorted(names) == ["after", "inner", "inner", "outer"]
    completed = _by_name(events, "mission_completed")
    assert len(completed) == 50


# -- the global API ------------------------------------------------------------------------------


def test_global_mission_uses_the_global_collector() -> None:
    import tachimeter as tm
    from tachimeter.testing import MemorySink

    sink = MemorySink()
    tm.configure(sinks=[sink], env={}, cwd="/nonexistent-tachimeter-test-dir")
    try:
        with mission(backend="anthropic", model="claude-sonnet-4", tags=["tour"]) as m:
            m.step(0, success=True)
            m.tool("search", duration_ms=120, success=True)
            m.llm_call(model="claude-sonnet-4", input_tokens=500, output_tokens=300)
        assert isinstance(m, Mission)
        assert default_tracker().collector is tm.global_collector()
        assert tm.flush()
        assert [e.event_name for e in sink.events()][-1] == "mission_completed"
    finally:
        tm.shutdown()


def test_cancelled_task_cancels_its_mission(light: LightEnv) -> None:
    started = asyncio.Event()
    seen: list[Mission] = []

    async def agent() -> None:
        async with mission("a", "b", tracker=light.tracker) as m:
            seen.append(m)
            started.set()
            await asyncio.sleep(60)

    async def main() -> None:
        task = asyncio.create_task(agent())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    record = seen[0].record()
    assert record is not None and record.status is MissionStatus.CANCELLED
    assert record.error is None


def test_a_duplicate_mission_id_is_refused_and_leaves_the_first_alone(light: LightEnv) -> None:
    with mission("a", "b", mission_id="same", tracker=light.tracker) as first:
        with mission("a", "b", mission_id="same", tracker=light.tracker):
            pass
        assert light.tracker.status(first.id) is MissionStatus.EXECUTING
    assert light.tracker.rejected_calls == 1
    assert light.tracker.status("same") is MissionStatus.COMPLETED
