"""Many threads running missions at once through one tracker, into one store."""

from __future__ import annotations

import random
import threading
from collections import Counter

from mission_envs import MissionEnv

from tachimeter.missions import MissionStatus, mission, tool

THREADS = 32
MISSIONS = 2_000


def test_32_threads_run_2000_missions(env: MissionEnv) -> None:
    """Every mission, tool call and token is stored once, per mission, with nothing lost."""
    tracker = env.tracker
    expected: dict[str, tuple[str, int, int, int]] = {}
    lock = threading.Lock()
    barrier = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    @tool("search")
    def search() -> None:
        return None

    def worker(index: int) -> None:
        rng = random.Random(index)
        try:
            barrier.wait()
            for k in range(index, MISSIONS, THREADS):
                calls = rng.randint(1, 6)
                tokens = rng.randint(10, 500)
                fail = k % 5 == 0
                try:
                    with mission("backend", f"model-{k % 4}", [f"t{k % 3}"], tracker=tracker) as m:
                        for step in range(calls):
                            search()
                            m.step(step, success=True)
                        m.llm_call(input_tokens=tokens, output_tokens=tokens, cost=0.001)
                        if fail:
                            raise RuntimeError("planned")
                except RuntimeError:
                    pass
                with lock:
                    expected[m.id] = ("failed" if fail else "completed", calls, 2 * tokens, calls)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert tracker.active_count() == 0
    assert tracker.rejected_calls == 0
    conn = env.connect()
    rows = conn.execute(
        "SELECT mission_id, status, tool_calls, total_tokens, step_count FROM missions"
    ).fetchall()
    assert len(rows) == MISSIONS
    assert {r[0]: r[1:] for r in rows} == expected
    stats = env.collector.stats()
    assert stats.events_dropped == 0 and stats.balanced()
    metrics = tracker.calculate_metrics()
    assert metrics.total_missions == MISSIONS
    assert metrics.failed_missions == MISSIONS // 5
    assert metrics.top_tools == [("search", sum(v[1] for v in expected.values()))]
    assert Counter(s for s, *_ in expected.values()) == {
        MissionStatus.COMPLETED.value: metrics.completed_missions,
        MissionStatus.FAILED.value: metrics.failed_missions,
    }
    # Each mission's events were numbered 0..n-1 with no gap or repeat, whatever the threads.
    by_mission: dict[str, list[int]] = {}
    for event in env.memory.events():
        by_mission.setdefault(event.data["mission_id"], []).append(event.data["seq"])
    assert all(sorted(seqs) == list(range(len(seqs))) for seqs in by_mission.values())
