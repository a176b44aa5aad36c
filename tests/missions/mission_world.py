"""A seeded world of missions with planted effects, run through the real tracker and store,
and the plain-Python truth to check the analysis against.

Planted effects:

* ``model-weak`` succeeds about half as often as the other models;
* the tool sequence ``edit_file, shell, revert`` (``revert`` appears nowhere else) is
  always followed by failure;
* ``slow-backend`` missions take three times as long;
* about one mission in ten loops: ``search`` four times in a row with no step completed,
  and fails more often;
* most failures name step 2.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from tachimeter.missions import MissionError, MissionTracker

TOOLS = ["read_file", "search", "edit_file", "run_tests", "list_dir", "shell"]
TOOL_WEIGHTS = [5, 4, 3, 3, 2, 2]
FATAL = ("edit_file", "shell", "revert")
LOOP_TOOL = "search"
BACKENDS = ["anthropic", "openai", "slow-backend"]
MODELS = ["model-a", "model-b", "model-weak"]
UNPRICED_MODEL = "in-house-llm"
TAGS = ["docs", "refactor", "tests"]
ERRORS = ["TIMEOUT", "RATE_LIMITED", "TOOL_ERROR"]


@dataclass
class ToolCallPlan:
    name: str
    duration_ms: float
    success: bool


@dataclass
class LlmCallPlan:
    model: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cost: float | None


@dataclass
class MissionPlan:
    backend: str
    model: str
    tags: list[str]
    tools: list[ToolCallPlan]
    llm: list[LlmCallPlan]
    outcome: str  # completed, failed, cancelled, active
    start_ns: int
    duration_ms: float
    retries: int
    error_code: str | None = None
    error_step: int | None = None
    planted: bool = False
    looped: bool = False
    steps: list[bool] = field(default_factory=list)  # success of step 0, 1, ...
    mission_id: str = ""

    @property
    def finished(self) -> bool:
        return self.outcome != "active"

    @property
    def tool_names(self) -> list[str]:
        return [t.name for t in self.tools]

    @property
    def total_tokens(self) -> int:
        return sum(c.input_tokens + c.output_tokens for c in self.llm)

    @property
    def cost(self) -> float:
        return sum(c.cost for c in self.llm if c.cost is not None)

    @property
    def unpriced(self) -> int:
        return sum(1 for c in self.llm if c.cost is None)


def _contains_run(names: Sequence[str], run: Sequence[str]) -> bool:
    n = len(run)
    return any(tuple(names[i : i + n]) == tuple(run) for i in range(len(names) - n + 1))


def plan_world(n: int = 1500, seed: int = 7) -> list[MissionPlan]:
    """``n`` missions, deterministic for a seed."""
    rng = random.Random(seed)
    start = time.time_ns() - 3 * 86_400 * 10**9
    plans: list[MissionPlan] = []
    for i in range(n):
        backend = rng.choice(BACKENDS)
        model = UNPRICED_MODEL if rng.random() < 0.05 else rng.choice(MODELS)
        tags = sorted(rng.sample(TAGS, rng.randint(0, 2)))
        while True:
            names = rng.choices(TOOLS, TOOL_WEIGHTS, k=rng.randint(3, 12))
            # Loops are planted, never accidental: no tool three times in a row otherwise.
            if not any(names[j] == names[j + 1] == names[j + 2] for j in range(len(names) - 2)):
                break
        planted = rng.random() < 0.08
        looped = not planted and rng.random() < 0.10
        if planted:
            at = rng.randint(0, len(names))
            names[at:at] = list(FATAL)
        if looped:
            at = rng.randint(0, len(names))
            names[at:at] = [LOOP_TOOL] * 4
            # Keep the run exactly four long: no neighbour may extend it.
            while at > 0 and names[at - 1] == LOOP_TOOL:
                names[at - 1] = "read_file"
            end = at + 4
            while end < len(names) and names[end] == LOOP_TOOL:
                names[end] = "list_dir"
        tools = [
            ToolCallPlan(name, round(rng.lognormvariate(4.5, 0.8), 3), rng.random() > 0.05)
            for name in names
        ]
        success_p = 0.5 if model == "model-weak" else 0.85
        if looped:
            success_p -= 0.3
        u = rng.random()
        if i % 97 == 0:
            outcome = "active"
        elif planted or u > success_p:
            outcome = "failed"
        elif rng.random() < 0.03:
            outcome = "cancelled"
        else:
            outcome = "completed"
        duration = rng.lognormvariate(math.log(20_000), 0.5) * (
            3 if backend == "slow-backend" else 1
        )
        llm = []
        for _ in range(rng.randint(1, 4)):
            inp = rng.randint(100, 5_000)
            llm.append(
                LlmCallPlan(
                    model=model,
                    input_tokens=inp,
                    output_tokens=rng.randint(50, 1_000),
                    cache_read_tokens=rng.randint(0, inp // 2),
                    cost=None if model == UNPRICED_MODEL else round(rng.uniform(0.001, 0.05), 6),
                )
            )
        n_steps = len(tools) // 3
        steps = [rng.random() > 0.1 for _ in range(n_steps)]
        plan = MissionPlan(
            backend=backend,
            model=model,
            tags=tags,
            tools=tools,
            llm=llm,
            outcome=outcome,
            start_ns=start + i * 60 * 10**9,
            duration_ms=round(duration, 3),
            retries=1 if rng.random() < 0.1 else 0,
            planted=planted,
            looped=looped,
            steps=steps,
        )
        if outcome == "failed":
            plan.error_code = rng.choices(ERRORS, [5, 3, 2])[0]
            plan.error_step = 2 if rng.random() < 0.6 else rng.randint(0, 5)
        plans.append(plan)
    return plans


class FakeClock:
    """The tracker's clock: nanoseconds set by the test."""

    def __init__(self, now: int = 0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def run_world(tracker: MissionTracker, clock: FakeClock, plans: list[MissionPlan]) -> None:
    """Record every planned mission through the tracker (steps after every third tool)."""
    for plan in plans:
        clock.now = plan.start_ns
        plan.mission_id = tracker.start_mission(None, plan.backend, plan.model, plan.tags)
        tracker.mission_started(plan.mission_id)
        step = 0
        for k, call in enumerate(plan.tools):
            tracker.tool_invoked(
                plan.mission_id,
                call.name,
                call.duration_ms,
                call.success,
                error_code=None if call.success else "TOOL_ERROR",
            )
            if (k + 1) % 3 == 0 and step < len(plan.steps):
                tracker.step_completed(plan.mission_id, step, plan.steps[step])
                step += 1
        for _ in range(plan.retries):
            tracker.retry(plan.mission_id)
        for call in plan.llm:
            tracker.tokens_consumed(
                plan.mission_id,
                call.input_tokens,
                call.output_tokens,
                call.cost,
                model=call.model,
                cache_read_tokens=call.cache_read_tokens,
            )
        clock.now = plan.start_ns + int(plan.duration_ms * 1e6)
        if plan.outcome == "completed":
            tracker.mission_completed(plan.mission_id)
        elif plan.outcome == "failed":
            assert plan.error_code is not None
            tracker.mission_failed(
                plan.mission_id,
                MissionError(code=plan.error_code, message="planted", step_index=plan.error_step),
            )
        elif plan.outcome == "cancelled":
            tracker.mission_cancelled(plan.mission_id)


# -- plain-Python truth ------------------------------------------------------------------------


def quantile(values: Sequence[float], q: float) -> float:
    """Type 7 (linear) quantile written out by hand."""
    ordered = sorted(values)
    h = (len(ordered) - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (h - lo)


def created_at(plan: MissionPlan) -> dt.datetime:
    return dt.datetime.fromtimestamp(plan.start_ns // 1000 / 1e6, dt.UTC)


def tool_counts(plans: Sequence[MissionPlan]) -> Counter[str]:
    return Counter(name for p in plans for name in p.tool_names)


def contains_gapped(names: Sequence[str], pattern: Sequence[str]) -> bool:
    """Whether ``pattern`` is a subsequence of ``names`` (other calls allowed between)."""
    it = iter(names)
    return all(any(name == wanted for name in it) for wanted in pattern)


def contains_ngram(names: Sequence[str], pattern: Sequence[str]) -> bool:
    return _contains_run(names, pattern)
