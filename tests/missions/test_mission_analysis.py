"""Mission analysis on a seeded world with planted effects, run through the real tracker
and store, checked against plain-Python recomputation from the plan."""

from __future__ import annotations

import itertools
import math
import sqlite3
import statistics
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mission_envs import MissionEnv
from mission_world import (
    FATAL,
    LOOP_TOOL,
    TOOLS,
    FakeClock,
    MissionPlan,
    contains_gapped,
    contains_ngram,
    created_at,
    plan_world,
    quantile,
    run_world,
    tool_counts,
)

from tachimeter.analyze.missions import (
    COMPLEXITY_BUCKETS,
    COMPLEXITY_WEIGHTS,
    EFFICIENCY_WEIGHTS,
    MissionFilter,
    bootstrap_medians,
    calculate_metrics,
    compare,
    complexity,
    detect_patterns,
    efficiency,
    tool_usage,
    two_proportion_p_value,
    wilson_interval,
)
from tachimeter.errors import QueryError
from tachimeter.missions import MissionStatus


class World:
    def __init__(self, plans: list[MissionPlan], conn: sqlite3.Connection) -> None:
        self.plans = plans
        self.conn = conn
        self.by_id = {p.mission_id: p for p in plans}

    @property
    def finished(self) -> list[MissionPlan]:
        return [p for p in self.plans if p.finished]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """1 500 missions recorded through the tracker into a real store (built once)."""
    clock = FakeClock()
    env = MissionEnv(Path(tmp_path_factory.mktemp("world")) / "world.db", clock=clock)
    plans = plan_world()
    run_world(env.tracker, clock, plans)
    conn = env.connect()
    yield World(plans, conn)
    conn.close()
    env.close()


# -- filters and the truth of calculate_metrics --------------------------------------------------

FILTERS: dict[str, Callable[[list[MissionPlan]], tuple[MissionFilter, list[MissionPlan]]]] = {
    "all": lambda ps: (MissionFilter(), ps),
    "model": lambda ps: (
        MissionFilter(model="model-weak"),
        [p for p in ps if p.model == "model-weak"],
    ),
    "backends": lambda ps: (
        MissionFilter(backend=("anthropic", "openai")),
        [p for p in ps if p.backend in ("anthropic", "openai")],
    ),
    "tag": lambda ps: (MissionFilter(tag="docs"), [p for p in ps if "docs" in p.tags]),
    "without_tag": lambda ps: (
        MissionFilter(without_tag="docs"),
        [p for p in ps if "docs" not in p.tags],
    ),
    "status": lambda ps: (
        MissionFilter(status=MissionStatus.FAILED),
        [p for p in ps if p.outcome == "failed"],
    ),
    "time": lambda ps: (
        MissionFilter(since=created_at(ps[300]), until=created_at(ps[900])),
        ps[300:900],
    ),
}  # fmt: skip


def _ranked(counter: Counter[str], top: int = 10) -> list[tuple[str, int]]:
    return sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:top]


@pytest.mark.parametrize("name", list(FILTERS))
def test_metrics_equal_a_plain_recomputation(world: World, name: str) -> None:
    mission_filter, subset = FILTERS[name](world.plans)
    metrics = calculate_metrics(world.conn, None if name == "all" else mission_filter)
    outcomes = Counter(p.outcome for p in subset)
    finished = [p for p in subset if p.finished]
    durations = [p.duration_ms for p in finished]
    steps = sum(len(p.steps) for p in subset)
    tokens = sum(p.total_tokens for p in subset)
    cost = sum(p.cost for p in subset)
    assert metrics.total_missions == len(subset)
    assert metrics.completed_missions == outcomes["completed"]
    assert metrics.failed_missions == outcomes["failed"]
    assert metrics.cancelled_missions == outcomes["cancelled"]
    assert metrics.active_missions == outcomes["active"]
    assert metrics.success_rate == pytest.approx(outcomes["completed"] / len(finished))
    assert metrics.avg_execution_time_ms == pytest.approx(statistics.fmean(durations))
    for field, q in (("median", 0.5), ("p90", 0.9), ("p95", 0.95), ("p99", 0.99)):
        assert getattr(metrics, f"{field}_execution_time_ms") == pytest.approx(
            quantile(durations, q)
        ), field
    assert metrics.avg_steps == pytest.approx(steps / len(subset))
    assert metrics.total_tokens == tokens
    assert metrics.total_cost == pytest.approx(cost)
    assert metrics.missions_with_unpriced_calls == sum(1 for p in subset if p.unpriced)
    if outcomes["completed"]:
        assert metrics.cost_per_successful_mission == pytest.approx(cost / outcomes["completed"])
    assert metrics.tokens_per_step == pytest.approx(tokens / steps)
    assert metrics.top_tools == _ranked(tool_counts(subset))
    assert metrics.top_errors == _ranked(
        Counter(p.error_code for p in subset if p.outcome == "failed" and p.error_code)
    )
    status_of = {"active": "executing"}
    assert metrics.by_status == {MissionStatus(status_of.get(k, k)): v for k, v in outcomes.items()}
    assert metrics.by_backend == Counter(p.backend for p in subset)
    assert metrics.by_model == Counter(p.model for p in subset)


def test_bad_filter_values_are_refused() -> None:
    with pytest.raises(QueryError, match="status"):
        MissionFilter(status="done")


def test_empty_selection_gives_empty_metrics(world: World) -> None:
    metrics = calculate_metrics(world.conn, MissionFilter(model="no-such-model"))
    assert metrics.total_missions == 0
    assert metrics.top_tools == []


# -- planted effects ---------------------------------------------------------------------------


def test_weak_model_is_found_with_intervals_and_a_test(world: World) -> None:
    result = compare(world.conn, by="model")
    groups = {g.group: g for g in result.groups}
    for model, group in groups.items():
        finished = [p for p in world.finished if p.model == model]
        successes = sum(p.outcome == "completed" for p in finished)
        assert (group.missions, group.successes) == (len(finished), successes)
        assert group.success_interval == pytest.approx(wilson_interval(successes, len(finished)))
        assert group.success_interval == pytest.approx(_wilson(successes, len(finished)))
    pair = next(p for p in result.pairs if (p.a, p.b) == ("model-a", "model-weak"))
    a, b = groups["model-a"], groups["model-weak"]
    assert pair.success_p_value == pytest.approx(
        _z_test(b.successes, b.missions, a.successes, a.missions)
    )
    assert pair.success_significant
    assert pair.success_rate_difference is not None and pair.success_rate_difference < -0.2
    assert pair.verdict.startswith("model-weak succeeds less often than model-a")
    same = next(p for p in result.pairs if (p.a, p.b) == ("model-a", "model-b"))
    assert not same.success_significant
    assert "succeeds" not in same.verdict


def test_slower_backend_is_found(world: World) -> None:
    result = compare(world.conn, by="backend")
    medians = {
        b: quantile([p.duration_ms for p in world.finished if p.backend == b], 0.5)
        for b in ("anthropic", "openai", "slow-backend")
    }
    for pair in result.pairs:
        assert pair.duration_median_difference_ms == pytest.approx(
            medians[pair.b] - medians[pair.a]
        )
        if "slow-backend" in (pair.a, pair.b):
            assert pair.duration_interval is not None
            low, high = pair.duration_interval
            assert (low > 0) if pair.b == "slow-backend" else (high < 0)
            words = ("slow-backend is slower", "anthropic is faster", "openai is faster")
            assert any(w in pair.verdict for w in words)


def test_failure_sequence_is_found(world: World) -> None:
    report = detect_patterns(world.conn, min_missions=20, top=1_000)
    finished = world.finished
    base = sum(p.outcome == "failed" for p in finished) / len(finished)
    planted = [p for p in finished if p.planted]
    found = {(s.kind, s.tools): s for s in report.failure_associated}
    for kind in ("ngram", "gapped"):
        pattern = found[(kind, FATAL)]
        assert pattern.missions == len(planted)
        assert pattern.failures == len(planted)
        assert pattern.failure_rate == 1.0
        assert pattern.lift == pytest.approx(1 / base)
        assert pattern.q_value < 1e-6
    strongest = report.failure_associated[0]
    assert "revert" in strongest.tools and strongest.failure_rate == 1.0
    assert report.failed_missions == sum(p.outcome == "failed" for p in finished)
    # Every pattern reported as failure-associated really fails more often.
    for pattern in report.failure_associated:
        assert pattern.lift > 1 and pattern.q_value <= report.alpha


def test_pattern_supports_equal_brute_force(world: World) -> None:
    """Every frequent n-gram and gapped pattern, and nothing else, with exact counts."""
    report = detect_patterns(world.conn, min_missions=20, min_support=0.0, top=100_000)
    finished = world.finished
    threshold = 20
    support: Counter[tuple[str, tuple[str, ...]]] = Counter()
    failures: Counter[tuple[str, tuple[str, ...]]] = Counter()
    for p in finished:
        names = p.tool_names
        present = {("ngram", tuple(names[i : i + n])) for n in range(1, 5)
                   for i in range(len(names) - n + 1)}  # fmt: skip
        # Gapped: every pair and triple of calls in order, other calls allowed between.
        for length in (2, 3):
            present.update(
                ("gapped", tuple(names[i] for i in picks))
                for picks in itertools.combinations(range(len(names)), length)
            )
        support.update(present)
        if p.outcome == "failed":
            failures.update(present)
    truth = {key: (n, failures[key]) for key, n in support.items() if n >= threshold}
    for (kind, pattern), (n, _) in list(truth.items())[:50]:
        check = contains_ngram if kind == "ngram" else contains_gapped
        assert n == sum(check(p.tool_names, pattern) for p in finished)
    got = {(s.kind, s.tools): (s.missions, s.failures) for s in report.frequent}
    assert got == truth


def test_loops_equal_brute_force(world: World) -> None:
    report = detect_patterns(world.conn, min_repeats=3)
    runs: list[tuple[str, MissionPlan, int]] = []
    for p in world.finished:
        # The tracker's order: tool k, then after every third tool a step (if any left).
        sequence: list[tuple[str, Any]] = []
        step = 0
        for k, call in enumerate(p.tools):
            sequence.append(("tool", call.name))
            if (k + 1) % 3 == 0 and step < len(p.steps):
                sequence.append(("step", p.steps[step]))
                step += 1
        current, length = None, 0
        for kind, value in [*sequence, ("end", None)]:
            if kind == "step":
                if value:  # progress breaks a run
                    if length >= 3:
                        runs.append((current, p, length))  # type: ignore[arg-type]
                    current, length = None, 0
                continue
            if kind == "tool" and value == current:
                length += 1
                continue
            if length >= 3:
                runs.append((current, p, length))  # type: ignore[arg-type]
            current, length = (value, 1) if kind == "tool" else (None, 0)
    by_tool: dict[str, list[tuple[MissionPlan, int]]] = {}
    for tool_name, plan, length in runs:
        by_tool.setdefault(tool_name, []).append((plan, length))
    got = {s.tool_name: s for s in report.loops}
    assert set(got) == set(by_tool)
    for tool_name, hits in by_tool.items():
        stats = got[tool_name]
        missions = {id(p): p for p, _ in hits}
        assert stats.loops == len(hits)
        assert stats.missions == len(missions)
        assert stats.longest_run == max(n for _, n in hits)
        assert stats.failure_rate_with_loop == pytest.approx(
            statistics.fmean(p.outcome == "failed" for p in missions.values())
        )
    assert LOOP_TOOL in got and got[LOOP_TOOL].loops >= 20
    assert report.missions_with_loops == len({id(p) for _, p, _ in runs})


def test_failure_steps_and_recurring_errors(world: World) -> None:
    report = detect_patterns(world.conn)
    failed = [p for p in world.plans if p.outcome == "failed"]
    by_step = Counter(p.error_step for p in failed)
    top = report.failure_steps[0]
    assert top.step_index == 2
    assert top.failed_missions == by_step[2]
    records = Counter(i for p in world.plans for i in range(len(p.steps)))
    failures = Counter(i for p in world.plans for i, ok in enumerate(p.steps) if not ok)
    for row in report.failure_steps:
        assert row.failed_missions == by_step.get(row.step_index, 0)
        assert row.step_records == records[row.step_index]
        assert row.step_failures == failures[row.step_index]
        assert row.share_of_failed_missions == pytest.approx(
            by_step.get(row.step_index, 0) / len([p for p in failed if p.finished])
        )
    errors = {e.code: e for e in report.recurring_errors}
    codes = Counter(p.error_code for p in failed)
    tool_errors = sum(not c.success for p in world.plans for c in p.tools)
    for code, count in codes.items():
        assert errors[code].failed_missions == count
    assert errors["TOOL_ERROR"].tool_call_failures == tool_errors
    assert report.recurring_errors[0].code == codes.most_common(1)[0][0]


# -- tool usage ------------------------------------------------------------------------------------


def test_tool_usage_equals_a_plain_recomputation(world: World) -> None:
    report = tool_usage(world.conn)
    finished_time = sum(p.duration_ms for p in world.finished)
    for stats in report.tools:
        calls = [c for p in world.plans for c in p.tools if c.name == stats.tool_name]
        durations = [c.duration_ms for c in calls]
        assert stats.invocations == len(calls)
        assert stats.missions == sum(stats.tool_name in p.tool_names for p in world.plans)
        assert stats.failures == sum(not c.success for c in calls)
        assert stats.success_rate == pytest.approx(sum(c.success for c in calls) / len(calls))
        assert stats.mean_ms == pytest.approx(statistics.fmean(durations))
        for field, q in (("p50", 0.5), ("p90", 0.9), ("p95", 0.95), ("p99", 0.99)):
            assert getattr(stats, f"{field}_ms") == pytest.approx(quantile(durations, q), abs=1e-3)
        in_finished = sum(c.duration_ms for p in world.finished for c in p.tools
                          if c.name == stats.tool_name)  # fmt: skip
        assert stats.share_of_mission_time == pytest.approx(in_finished / finished_time)
    n = len(world.plans)
    for pair in report.co_occurrence:
        both = sum(pair.first in p.tool_names and pair.second in p.tool_names for p in world.plans)
        first = sum(pair.first in p.tool_names for p in world.plans)
        second = sum(pair.second in p.tool_names for p in world.plans)
        assert pair.missions == both
        assert pair.lift == pytest.approx(both * n / (first * second), rel=1e-5)
    assert report.co_occurrence[0].missions == max(
        sum(a in p.tool_names and b in p.tool_names for p in world.plans)
        for a, b in itertools.combinations(sorted({*TOOLS, "revert"}), 2)
    )


# -- complexity and efficiency -----------------------------------------------------------------


def _inputs(p: MissionPlan) -> dict[str, float]:
    return {
        "steps": len(p.steps),
        "distinct_tools": len(set(p.tool_names)),
        "tool_calls": len(p.tools),
        "llm_calls": len(p.llm),
        "retries": p.retries,
        "tokens": p.total_tokens,
        "duration_ms": p.duration_ms if p.finished else 0.0,
    }


def _parts(p: MissionPlan) -> dict[str, float]:
    return {
        k: COMPLEXITY_WEIGHTS[k][0] * min(1.0, math.sqrt(v / COMPLEXITY_WEIGHTS[k][1]))
        for k, v in _inputs(p).items()
    }


def _bucket(score: float) -> str:
    for name, low, high in COMPLEXITY_BUCKETS:
        if low <= score < high or (name == COMPLEXITY_BUCKETS[-1][0] and score >= low):
            return name
    raise AssertionError(score)


def test_complexity_equals_the_documented_formula(world: World) -> None:
    report = complexity(world.conn, include_scores=True)
    assert report.scores is not None
    scores = {p.mission_id: sum(_parts(p).values()) for p in world.plans}
    assert report.scores == pytest.approx(scores)
    buckets = {b.name: b for b in report.buckets}
    for name, _, _ in COMPLEXITY_BUCKETS:
        members = [p for p in world.plans if _bucket(scores[p.mission_id]) == name]
        bucket = buckets[name]
        assert bucket.missions == len(members)
        finished = [p for p in members if p.finished]
        if finished:
            assert bucket.success_rate == pytest.approx(
                sum(p.outcome == "completed" for p in finished) / len(finished)
            )
        priced = [p.cost for p in members if not p.unpriced]
        if priced:
            assert bucket.median_cost == pytest.approx(quantile(priced, 0.5))
    assert sum(b.missions for b in report.buckets) == len(world.plans)
    assert {b.name for b in report.buckets if b.missions} >= {"simple", "moderate"}


def test_efficiency_equals_the_documented_formula(world: World) -> None:
    report = efficiency(world.conn, group_by="model", include_missions=True)
    structural = ("steps", "distinct_tools", "tool_calls", "llm_calls", "retries")
    weight = sum(COMPLEXITY_WEIGHTS[k][0] for k in structural)
    finished = world.finished
    bucket_of = {
        p.mission_id: _bucket(sum(_parts(p)[k] for k in structural) * 100 / weight)
        for p in finished
    }
    values: dict[str, Callable[[MissionPlan], float | None]] = {
        "time": lambda p: p.duration_ms,
        "tokens": lambda p: float(p.total_tokens),
        "cost": lambda p: None if p.unpriced else p.cost,
    }
    yardsticks: dict[tuple[str, str], float] = {}
    for bucket in set(bucket_of.values()):
        for part, value_of in values.items():
            known = [v for q in finished if bucket_of[q.mission_id] == bucket
                     and q.outcome == "completed" and (v := value_of(q)) is not None]  # fmt: skip
            if known:
                yardsticks[bucket, part] = quantile(known, 0.5)
    expected: dict[str, float] = {}
    for p in finished:
        points = {"outcome": EFFICIENCY_WEIGHTS["outcome"] * (p.outcome == "completed")}
        for part, value_of in values.items():
            mine = value_of(p)
            if mine is None:
                continue
            median = yardsticks[bucket_of[p.mission_id], part]
            ratio = median / mine if mine > 0 else 1.0
            points[part] = EFFICIENCY_WEIGHTS[part] * min(1.0, ratio)
        expected[p.mission_id] = (
            100 * sum(points.values()) / sum(EFFICIENCY_WEIGHTS[k] for k in points)
        )
    assert report.by_mission is not None
    got = {m.mission_id: m.score for m in report.by_mission}
    assert got == pytest.approx(expected)
    for group in report.groups:
        members = [p for p in finished if p.model == group.group]
        assert group.missions == len(members)
        assert group.score == pytest.approx(
            statistics.fmean(expected[p.mission_id] for p in members)
        )
    weak = next(g for g in report.groups if g.group == "model-weak")
    assert weak.score == min(g.score for g in report.groups if g.cost is not None)
    unpriced = next(g for g in report.groups if g.group == "in-house-llm")
    assert unpriced.cost is None


# -- comparisons ---------------------------------------------------------------------------------


def test_small_groups_are_too_small_to_tell(world: World) -> None:
    result = compare(
        world.conn,
        groups={
            "few": MissionFilter(model="in-house-llm", tag="docs", backend="openai"),
            "many": MissionFilter(model="model-a"),
        },
    )
    [pair] = result.pairs
    assert pair.verdict.startswith("too small to tell")
    assert pair.duration_interval is None


def test_time_periods_can_be_compared(world: World) -> None:
    middle = created_at(world.plans[750])
    result = compare(
        world.conn,
        groups={"before": MissionFilter(until=middle), "after": MissionFilter(since=middle)},
    )
    assert [g.missions for g in result.groups] == [
        sum(p.finished for p in world.plans[:750]),
        sum(p.finished for p in world.plans[750:]),
    ]


def test_compare_needs_groups_or_by(world: World) -> None:
    with pytest.raises(QueryError):
        compare(world.conn)


@pytest.mark.parametrize("n", [5, 6])
def test_bootstrap_medians_have_the_exact_bootstrap_distribution(n: int) -> None:
    """Drawn order statistics give the same distribution as materialised resamples:
    compared with the exact distribution over all n**n resamples."""
    values = np.array([1.0, 2.0, 4.0, 8.0, 16.0, 32.0][:n])
    exact: Counter[float] = Counter()
    for picks in itertools.product(values.tolist(), repeat=n):
        exact[statistics.median(picks)] += 1
    draws = bootstrap_medians(values, 200_000, np.random.default_rng(1))
    seen = Counter(draws.tolist())
    assert set(seen) <= set(exact)
    for median, count in exact.items():
        assert seen[median] / 200_000 == pytest.approx(count / n**n, abs=0.005)


def _wilson(s: int, n: int) -> tuple[float, float]:
    z = 1.959963984540054
    p = s / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half, centre + half)


def _z_test(s1: int, n1: int, s2: int, n2: int) -> float:
    pooled = (s1 + s2) / (n1 + n2)
    z = (s1 / n1 - s2 / n2) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return math.erfc(abs(z) / math.sqrt(2))


def test_two_proportion_test_matches_the_formula() -> None:
    assert two_proportion_p_value(80, 100, 60, 100) == pytest.approx(_z_test(80, 100, 60, 100))


def test_patterns_do_not_trust_hand_edited_counters(world: World, tmp_path: Path) -> None:
    """Pattern mining maps calls to missions by missions.tool_calls when it matches the
    child rows, and reads the keys when someone edited the tables by hand."""
    copy = sqlite3.connect(tmp_path / "edited.db")
    world.conn.backup(copy)
    copy.execute("UPDATE missions SET tool_calls = tool_calls + 1 WHERE mission_key = 1")
    copy.commit()
    edited = detect_patterns(copy, min_missions=20, top=1_000)
    original = detect_patterns(world.conn, min_missions=20, top=1_000)
    assert edited.frequent == original.frequent
    assert edited.loops == original.loops
    copy.close()
