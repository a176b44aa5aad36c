"""The mission state machine: the documented table is the one enforced, move by move."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from mission_envs import LightEnv, MissionEnv

from tachimeter.errors import InvalidStateTransition
from tachimeter.missions import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    TRANSITIONS,
    MissionError,
    MissionNotFound,
    MissionStatus,
    MissionTracker,
    check_transition,
    lifecycle,
)

S = MissionStatus

# How a test reaches each status the tracker can put a mission in.
PATHS: dict[MissionStatus, list[str]] = {
    S.CREATED: [],
    S.PLANNING: ["plan"],
    S.EXECUTING: ["start"],
    S.PAUSED: ["start", "pause"],
    S.COMPLETED: ["start", "complete"],
    S.FAILED: ["fail"],
    S.CANCELLED: ["cancel"],
}


def _moves(tracker: MissionTracker) -> dict[str, Callable[[str], Any]]:
    return {
        "plan": tracker.plan,
        "start": tracker.mission_started,
        "pause": tracker.pause,
        "resume": tracker.resume,
        "retry": tracker.retry,
        "complete": tracker.mission_completed,
        "fail": lambda mid: tracker.mission_failed(mid, MissionError(code="E", message="e")),
        "cancel": tracker.mission_cancelled,
    }


def _allowed(status: MissionStatus, move: str, paused_from: MissionStatus | None) -> bool:
    """What the docstring's table says about ``move`` from ``status``."""
    if move == "resume":
        return status is S.PAUSED
    if move == "retry":
        return status in (S.EXECUTING, S.PAUSED)
    target = {
        "plan": S.PLANNING,
        "start": S.EXECUTING,
        "pause": S.PAUSED,
        "complete": S.COMPLETED,
        "fail": S.FAILED,
        "cancel": S.CANCELLED,
    }[move]
    return target in TRANSITIONS[status]


def test_table_in_docstring_matches_transitions() -> None:
    """Every row of the docstring's table lists exactly the allowed targets."""
    doc = lifecycle.__doc__ or ""
    columns = ["planning", "executing", "paused", "completed", "failed", "cancelled", "abandoned"]
    for status in S:
        row = next(line for line in doc.splitlines() if line.startswith(status.value + " "))
        cells = row.split()[1:]
        # "resume, retry" is one cell written with a comma.
        merged: list[str] = []
        for cell in cells:
            if merged and merged[-1].endswith(","):
                merged[-1] += " " + cell
            else:
                merged.append(cell)
        allowed = {S(col) for col, cell in zip(columns, merged, strict=True) if cell != "."}
        assert allowed == set(TRANSITIONS[status]), status


@pytest.mark.parametrize("status", list(PATHS))
@pytest.mark.parametrize(
    "move", ["plan", "start", "pause", "resume", "retry", "complete", "fail", "cancel"]
)
def test_every_move_from_every_status(light: LightEnv, status: MissionStatus, move: str) -> None:
    """Allowed moves succeed; every other one raises InvalidStateTransition naming both
    statuses and leaves the mission as it was."""
    tracker = light.tracker
    moves = _moves(tracker)
    mid = tracker.start_mission(None, "anthropic", "claude-sonnet-4")
    for step in PATHS[status]:
        moves[step](mid)
    before = tracker.status(mid)
    assert before is status
    if _allowed(status, move, None):
        moves[move](mid)
        return
    with pytest.raises(InvalidStateTransition) as caught:
        moves[move](mid)
    message = str(caught.value)
    assert status.value in message
    assert caught.value.from_state == status.value
    assert tracker.status(mid) is status


def test_abandoned_is_terminal_and_reachable_from_every_active_status() -> None:
    """Only the store marks missions abandoned, from any active status; nothing leaves it."""
    for status in ACTIVE_STATUSES:
        check_transition(status, S.ABANDONED)
    for status in S:
        with pytest.raises(InvalidStateTransition):
            check_transition(S.ABANDONED, status)
    assert all(not TRANSITIONS[s] for s in TERMINAL_STATUSES)
    assert all(s.is_terminal for s in TERMINAL_STATUSES)


def test_completing_an_unknown_mission_raises_mission_not_found(light: LightEnv) -> None:
    with pytest.raises(MissionNotFound) as caught:
        light.tracker.mission_completed("no-such-mission")
    assert caught.value.mission_id == "no-such-mission"
    with pytest.raises(MissionNotFound):
        light.tracker.tool_invoked("no-such-mission", "search", 1.0, True)


def test_recording_activity_on_a_finished_mission_raises(light: LightEnv) -> None:
    tracker = light.tracker
    mid = tracker.start_mission(None, "openai", "gpt-4o")
    tracker.mission_started(mid)
    tracker.mission_completed(mid)
    with pytest.raises(MissionNotFound):
        tracker.tool_invoked(mid, "search", 1.0, True)
    with pytest.raises(InvalidStateTransition, match="completed -> executing"):
        tracker.mission_started(mid)


def test_starting_a_known_mission_again_is_refused(light: LightEnv) -> None:
    tracker = light.tracker
    mid = tracker.start_mission("m-1", "openai", "gpt-4o")
    with pytest.raises(InvalidStateTransition, match="created -> created"):
        tracker.start_mission(mid, "openai", "gpt-4o")


def test_cancel_sets_duration_and_end(make_env: Any) -> None:
    """Unlike spec 414's sketch, a cancelled mission has an execution time and an end."""
    from mission_world import FakeClock

    clock = FakeClock(1_700_000_000 * 10**9)
    env = make_env(clock=clock)
    tracker = env.tracker
    clock.now = _recent_ns()
    mid = tracker.start_mission(None, "anthropic", "claude-sonnet-4")
    tracker.mission_started(mid)
    clock.now += 2_500 * 10**6
    record = tracker.mission_cancelled(mid, reason="user stopped it")
    assert record.status is S.CANCELLED
    assert record.execution_time_ms == pytest.approx(2_500.0)
    assert record.completed_at is not None
    assert record.duration() == dt.timedelta(milliseconds=2_500)
    conn = env.connect()
    row = conn.execute(
        "SELECT status, execution_time_ms, ended_at IS NOT NULL, end_reason FROM missions"
    ).fetchone()
    assert row == ("cancelled", pytest.approx(2_500.0), 1, "user stopped it")


def test_cancel_before_start_has_no_execution_time(light: LightEnv) -> None:
    """A mission that never started did not execute: its end is set, its duration is not."""
    record = light.tracker.mission_cancelled(light.tracker.start_mission(None, "a", "b"))
    assert record.execution_time_ms is None
    assert record.completed_at is not None


def test_retry_increments_retry_count(env: MissionEnv) -> None:
    tracker = env.tracker
    mid = tracker.start_mission(None, "anthropic", "claude-sonnet-4")
    tracker.mission_started(mid)
    assert tracker.retry(mid, MissionError(code="TIMEOUT", message="slow")) == 1
    tracker.pause(mid)
    assert tracker.retry(mid) == 2
    assert tracker.status(mid) is S.EXECUTING
    record = tracker.mission_completed(mid)
    assert record.retry_count == 2
    conn = env.connect()
    assert conn.execute("SELECT retry_count FROM missions").fetchone() == (2,)
    names = [e.event_name for e in env.memory.events()]
    assert names.count("retry_attempted") == 2


def test_pause_time_is_accounted_and_resume_returns_to_planning(make_env: Any) -> None:
    from mission_world import FakeClock

    clock = FakeClock(_recent_ns())
    env = make_env(clock=clock)
    tracker = env.tracker
    mid = tracker.start_mission(None, "anthropic", "claude-sonnet-4")
    tracker.plan(mid)
    tracker.pause(mid)
    clock.now += 3 * 10**9
    tracker.resume(mid)
    assert tracker.status(mid) is S.PLANNING
    tracker.mission_started(mid)
    tracker.pause(mid)
    clock.now += 1 * 10**9
    with pytest.raises(InvalidStateTransition, match="paused -> completed"):
        tracker.mission_completed(mid)
    tracker.resume(mid)
    clock.now += 2 * 10**9
    record = tracker.mission_completed(mid)
    assert record.paused_ms == pytest.approx(4_000.0)
    assert record.execution_time_ms == pytest.approx(6_000.0)
    conn = env.connect()
    assert conn.execute("SELECT paused_ms, execution_time_ms FROM missions").fetchone() == (
        pytest.approx(4_000.0),
        pytest.approx(6_000.0),
    )


def _recent_ns() -> int:
    import time

    return time.time_ns() - 3_600 * 10**9
