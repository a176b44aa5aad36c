"""Mission tracking overhead and mission analysis over a large store.

1. Caller-thread cost of recording one tool call (goal: under 5 us), interleaved with
   ``collector.track`` of a comparable event as the floor: ``m.tool(...)`` on a mission
   handle, ``tracker.tool_invoked(...)``, a ``@tool``-decorated no-op function called
   inside a mission, and the tracker alone on a collector that drops everything. Twice:
   with the collector's worker not started (the caller's own work: the goal), and with it
   running and delivering to a sink that discards (back-to-back calls then wait for the
   worker's share of the GIL, so that figure is pipeline throughput, not caller cost).
2. Analysis over a generated store of 100 000 missions (about 2 million tool calls,
   800 000 LLM calls, 500 000 steps), written directly into the mission tables with
   ``executemany``: ``calculate_metrics`` unfiltered and filtered (goal: under 500 ms),
   ``detect_patterns`` (goal: under 10 s), and, for information, ``tool_usage``,
   ``complexity``, ``efficiency`` and ``compare``.
3. Projection throughput: events folded per second into the mission tables.

Run alone with ``python -m bench missions``; results in bench/results/missions.json.
"""

from __future__ import annotations

import logging
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness import compare, print_table, write_results
from tachimeter.analyze.missions import (
    MissionFilter,
    calculate_metrics,
    complexity,
    detect_patterns,
    efficiency,
    tool_usage,
)
from tachimeter.analyze.missions import compare as compare_groups
from tachimeter.collect.collector import EventCollector
from tachimeter.collect.sinks import MemorySink
from tachimeter.config import load_config
from tachimeter.missions import Mission, MissionProjection, MissionTracker, tool
from tachimeter.missions.api import _current
from tachimeter.model.events import EventBatch
from tachimeter.model.rows import event_to_row
from tachimeter.store.migrations import all_migrations

MISSIONS = 100_000
TOOLS = [
    "read_file", "search", "edit_file", "run_tests", "list_dir", "web_search", "shell",
    "grep", "write_file", "git_diff", "git_commit", "lint", "format", "open_url",
    "ask_user", "plan",
]  # fmt: skip
BACKENDS = ["anthropic", "openai", "google", "local"]
MODELS = ["claude-sonnet-4", "gpt-4o", "gemini-2.5-pro", "llama-3.1-70b", "o3", "claude-opus-4"]
TAGS = ["refactor", "docs", "bugfix", "tests", "feature", "research"]
T0 = "2025-01-01T00:00:00"


class Discard:
    """A sink that drops batches: the bench measures the caller, not a sink."""

    name = "discard"

    def process(self, batch: EventBatch) -> None:
        """Drop the batch."""

    def flush(self) -> None:
        """Nothing to do."""


def _config(**settings: Any) -> Any:
    return load_config(env={}, cwd="/nonexistent-bench-dir", **settings)


# -- 1. caller-thread overhead -----------------------------------------------------------------


class NullCollector:
    """Takes events and does nothing: isolates the tracker's own cost from the collector's."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.session_id = "bench"

    def track(self, *args: Any, **kwargs: Any) -> None:
        """Drop the event."""

    def flush(self, timeout: float | None = None) -> bool:
        """Nothing to flush."""
        return True


class _Rig:
    """A collector, a tracker on it and an entered mission, remade between timed rounds."""

    def __init__(self, worker: bool) -> None:
        self.worker = worker
        self.collector: EventCollector | None = None
        self.renew()

    def renew(self) -> None:
        if self.collector is not None:
            self.collector.shutdown(timeout=60)
        big = {"collection.queue_capacity": 5_000_000, "collection.buffer_size": 1000}
        self.collector = EventCollector(
            _config(**big), sinks=[Discard()], register_atexit=False, autostart=self.worker
        )
        self.tracker = MissionTracker(self.collector, database="/nonexistent-bench-dir/db")
        self.handle = Mission(self.tracker, "anthropic", "claude-sonnet-4", ["bench"])
        self.handle.__enter__()

    def close(self) -> None:
        self.handle.__exit__(None, None, None)
        assert self.collector is not None
        self.collector.shutdown(timeout=60)


def caller_cases(
    worker: bool,
) -> tuple[dict[str, Callable[[int], object]], dict[str, Callable[[], object]], Callable[[], None]]:
    """Cases recording tool calls. Without ``worker`` the collector's worker is not started:
    the figure is the caller's own work (the tracker and the enqueue). With it, the worker
    runs and competes for the GIL: back-to-back calls then measure the whole pipeline's
    throughput, not the caller, since each call waits for the worker's share."""
    rig = _Rig(worker)
    config = rig.tracker.collector.config
    null_tracker = MissionTracker(
        NullCollector(config),  # type: ignore[arg-type]
        database="/nonexistent-bench-dir/db",
    )
    null_id = null_tracker.start_mission(None, "anthropic", "claude-sonnet-4", ["bench"])
    null_tracker.mission_started(null_id)
    props = {"mission_id": rig.handle.id, "backend": "anthropic", "model": "claude-sonnet-4",
             "tags": ["bench"], "seq": 0, "retry_count": 0, "gen_ai.tool.name": "search",
             "duration_ms": 1.5, "success": True}  # fmt: skip

    @tool("search")
    def search() -> None:
        return None

    def collector_track(n: int) -> None:
        assert rig.collector is not None
        track = rig.collector.track
        for _ in range(n):
            track("tool_invoked", props)

    def tracker_only(n: int) -> None:
        invoked = null_tracker.tool_invoked
        for _ in range(n):
            invoked(null_id, "search", 1.5, True)

    def tracker_tool_invoked(n: int) -> None:
        invoked = rig.tracker.tool_invoked
        mission_id = rig.handle.id
        for _ in range(n):
            invoked(mission_id, "search", 1.5, True)

    def handle_tool(n: int) -> None:
        record = rig.handle.tool
        for _ in range(n):
            record("search", 1.5)

    def decorated_tool(n: int) -> None:
        # The decorator finds the mission through the context variable set by __enter__.
        token = _current.set(rig.handle)
        try:
            for _ in range(n):
                search()
        finally:
            _current.reset(token)

    cases: dict[str, Callable[[int], object]] = {
        "collector.track (floor)": collector_track,
        "tracker only (null collector)": tracker_only,
        "tracker.tool_invoked": tracker_tool_invoked,
        "m.tool(...)": handle_tool,
        "@tool function call": decorated_tool,
    }
    settle: dict[str, Callable[[], object]] = dict.fromkeys(cases, rig.renew)
    return cases, settle, rig.close


# -- 2. a large generated store ----------------------------------------------------------------


def _ts(seconds: np.ndarray[Any, Any]) -> list[str]:
    base = np.datetime64(T0, "us")
    stamps = base + (seconds * 1e6).astype("timedelta64[us]")
    return [f"{s}Z" for s in np.datetime_as_string(stamps, unit="us")]


def generate_store(path: Path, missions: int = MISSIONS, seed: int = 0) -> dict[str, int]:
    """Write ``missions`` missions with their tool calls, LLM calls, steps and tags."""
    rng = np.random.default_rng(seed)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    for migration in all_migrations():
        conn.executescript(migration.up)
    n = missions
    keys = np.arange(1, n + 1)
    backend = rng.integers(0, len(BACKENDS), n)
    model = rng.integers(0, len(MODELS), n)
    calls = np.maximum(rng.poisson(20, n), 1)
    total = int(calls.sum())
    # Tool sequences from a Markov chain: agents have habits (read, then edit, then test).
    transition = rng.dirichlet(np.full(len(TOOLS), 0.3), size=len(TOOLS))
    cumulative = np.cumsum(transition, axis=1)
    owner = np.repeat(np.arange(n), calls)
    starts = np.cumsum(calls) - calls
    position = np.arange(total) - starts[owner]
    tool = np.empty(total, dtype=np.int64)
    current = rng.integers(0, len(TOOLS), n)
    for k in range(int(calls.max())):
        alive = np.flatnonzero(calls > k)
        tool[starts[alive] + k] = current[alive]
        u = rng.random(n)
        current = (u[:, None] > cumulative[current]).sum(axis=1).clip(0, len(TOOLS) - 1)
    duration = rng.lognormal(5.0, 1.0, total)
    ok = rng.random(total) > 0.05
    created = np.sort(rng.uniform(0, 90 * 86_400, n))
    execution = rng.lognormal(11.0, 0.8, n) * (1 + 0.5 * (backend == 3))
    fail_p = 0.10 + 0.08 * (model == 3) + 0.2 * ((~ok).reshape(-1)[starts] if total else 0)
    u = rng.random(n)
    status = np.where(u < fail_p, "failed", "completed").astype(object)
    status[rng.random(n) < 0.03] = "cancelled"
    status[rng.random(n) < 0.01] = "abandoned"
    status[rng.random(n) < 0.01] = "executing"
    finished = status != "executing"
    steps = np.maximum(calls // 4, 1)
    llm = np.maximum(calls // 2 + rng.integers(-2, 3, n), 1)
    created_s = _ts(created)
    ended_s = _ts(created + execution / 1e3)
    tool_seq = 10 * position + 2
    call_ts = _ts(created[owner] + position)
    conn.executemany(
        "INSERT INTO mission_tool_calls VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        zip(
            keys[owner].tolist(),
            tool_seq.tolist(),
            [TOOLS[t] for t in tool.tolist()],
            duration.tolist(),
            ok.astype(int).tolist(),
            [None if good else "TOOL_ERROR" for good in ok.tolist()],
            (position // 4).tolist(),
            call_ts,
            strict=True,
        ),
    )
    conn.execute(
        "INSERT INTO mission_tool_usage SELECT tool_name, mission_key, COUNT(*), "
        "SUM(success = 0), SUM(duration_ms) FROM mission_tool_calls GROUP BY 1, 2"
    )
    step_owner = np.repeat(np.arange(n), steps)
    step_index = np.arange(int(steps.sum())) - np.repeat(np.cumsum(steps) - steps, steps)
    step_ok = rng.random(step_index.size) > 0.08
    conn.executemany(
        "INSERT INTO mission_steps VALUES (?, ?, ?, NULL, ?, ?, ?)",
        zip(
            keys[step_owner].tolist(),
            (10 * (4 * step_index + 3) + 7).tolist(),
            step_index.tolist(),
            step_ok.astype(int).tolist(),
            rng.lognormal(8, 1, step_index.size).tolist(),
            _ts(created[step_owner] + step_index),
            strict=True,
        ),
    )
    llm_owner = np.repeat(np.arange(n), llm)
    llm_index = np.arange(int(llm.sum())) - np.repeat(np.cumsum(llm) - llm, llm)
    input_tokens = rng.integers(500, 20_000, llm_index.size)
    cache_read = (input_tokens * rng.uniform(0, 0.8, llm_index.size)).astype(np.int64)
    output_tokens = rng.integers(50, 2_000, llm_index.size)
    cost = (input_tokens * 3 + output_tokens * 15) / 1e6
    unpriced = model[llm_owner] == 3
    conn.executemany(
        "INSERT INTO mission_llm_calls VALUES (?, ?, ?, NULL, ?, ?, ?, 0, 0, ?, ?, NULL, ?)",
        zip(
            keys[llm_owner].tolist(),
            (10 * llm_index + 5).tolist(),
            [MODELS[m] for m in model[llm_owner].tolist()],
            input_tokens.tolist(),
            output_tokens.tolist(),
            cache_read.tolist(),
            [None if u else c for u, c in zip(unpriced.tolist(), cost.tolist(), strict=True)],
            ["unknown" if u else "genai-prices" for u in unpriced.tolist()],
            _ts(created[llm_owner] + llm_index),
            strict=True,
        ),
    )
    tag_a = rng.integers(0, len(TAGS), n)
    conn.executemany(
        "INSERT INTO mission_tags VALUES (?, ?)",
        zip([TAGS[t] for t in tag_a.tolist()], keys.tolist(), strict=True),
    )

    def per_mission(values: np.ndarray[Any, Any], owners: np.ndarray[Any, Any]) -> list[Any]:
        return list(np.bincount(owners, weights=values, minlength=n).tolist())

    tool_fail = per_mission((~ok).astype(float), owner)
    tool_ms = per_mission(duration, owner)
    distinct = np.array(
        [len(set(tool[s : s + c].tolist())) for s, c in zip(starts, calls, strict=True)]
    )
    in_sum = per_mission(input_tokens.astype(float), llm_owner)
    out_sum = per_mission(output_tokens.astype(float), llm_owner)
    cr_sum = per_mission(cache_read.astype(float), llm_owner)
    cost_sum = per_mission(np.where(unpriced, 0.0, cost), llm_owner)
    steps_ok = per_mission(step_ok.astype(float), step_owner)
    error_code = rng.choice(["TIMEOUT", "RATE_LIMITED", "TOOL_ERROR", "CONTEXT_OVERFLOW"], n)
    rows = []
    for i in range(n):
        failed = status[i] == "failed"
        done = bool(finished[i])
        rows.append(
            (
                i + 1, f"bench-{i:06d}", BACKENDS[backend[i]], MODELS[model[i]],
                f'["{TAGS[tag_a[i]]}"]', None, None, status[i], 100, created_s[i],
                created_s[i], ended_s[i] if done else None, ended_s[i], 100,
                float(execution[i]) if done and status[i] != "abandoned" else None, 0.0,
                int(rng.random() < 0.1), int(steps[i]), int(steps_ok[i]),
                int(steps[i] - steps_ok[i]), int(calls[i]), int(tool_fail[i]), tool_ms[i],
                int(distinct[i]), int(llm[i]), int(in_sum[i]), int(out_sum[i]), int(cr_sum[i]),
                0, 0, int(in_sum[i] + out_sum[i]), cost_sum[i], int(llm[i]) if model[i] == 3 else 0,
                str(error_code[i]) if failed else None, "failed" if failed else None, None,
                int(rng.integers(0, steps[i])) if failed else None, None, None,
            )
        )  # fmt: skip
    conn.executemany(f"INSERT INTO missions VALUES ({', '.join('?' * 39)})", rows)
    conn.commit()
    conn.close()
    return {"missions": n, "tool_calls": total, "llm_calls": int(llm.sum()),
            "steps": int(steps.sum())}  # fmt: skip


def timed(run: Callable[[], object], repeats: int) -> dict[str, float]:
    """Seconds per run: median and min over ``repeats``."""
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        samples.append(time.perf_counter() - started)
    return {"median_s": statistics.median(samples), "min_s": min(samples), "repeats": repeats}


def analysis(path: Path) -> dict[str, dict[str, float]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    anthropic = MissionFilter(backend="anthropic")
    results = {
        "calculate_metrics (all)": timed(lambda: calculate_metrics(conn), 7),
        "calculate_metrics (backend filter)": timed(lambda: calculate_metrics(conn, anthropic), 7),
        "detect_patterns (all)": timed(lambda: detect_patterns(conn), 2),
        "tool_usage (all)": timed(lambda: tool_usage(conn), 1),
        "complexity (all)": timed(lambda: complexity(conn), 1),
        "efficiency by model (all)": timed(lambda: efficiency(conn, group_by="model"), 1),
        "compare by backend (all, 2000 resamples)": timed(
            lambda: compare_groups(conn, by="backend", resamples=2000), 1
        ),
    }
    conn.close()
    return results


# -- 3. projection throughput ------------------------------------------------------------------


def projection_throughput(missions: int = 2_000) -> dict[str, float]:
    sink = MemorySink()
    collector = EventCollector(
        _config(**{"collection.queue_capacity": 1_000_000}), sinks=[sink], register_atexit=False
    )
    tracker = MissionTracker(collector, database="/nonexistent-bench-dir/db")
    rng = np.random.default_rng(1)
    for i in range(missions):
        mid = tracker.start_mission(None, BACKENDS[i % 4], MODELS[i % 6], [TAGS[i % 6]])
        tracker.mission_started(mid)
        for k in range(20):
            tracker.tool_invoked(mid, TOOLS[int(rng.integers(0, 16))], 12.5, True)
            if k % 4 == 3:
                tracker.step_completed(mid, k // 4, True)
            if k % 2 == 1:
                tracker.tokens_consumed(mid, 1000, 200, 0.001)
        tracker.mission_completed(mid)
    assert collector.flush(timeout=600)
    collector.shutdown(timeout=60)
    events = sink.events()
    rows = [event_to_row(e) for e in events]
    with tempfile.TemporaryDirectory() as tmp:
        conn = sqlite3.connect(Path(tmp) / "p.db")
        for migration in all_migrations():
            conn.executescript(migration.up)
        projection = MissionProjection()
        started = time.perf_counter()
        with conn:
            for i in range(0, len(events), 1000):
                projection.apply(conn, events[i : i + 1000], rows[i : i + 1000])
        elapsed = time.perf_counter() - started
        conn.close()
    return {"events": len(events), "seconds": elapsed, "events_per_second": len(events) / elapsed}


def main() -> None:
    """Run all parts, write bench/results/missions.json and print tables."""
    caller: dict[str, dict[str, dict[str, float]]] = {}
    # Remade collectors are shut down with their unstarted queue on purpose: not a warning.
    logging.getLogger("tachimeter.collect").setLevel(logging.ERROR)
    for label, worker, repeats in (("caller only", False, 15), ("worker running", True, 7)):
        cases, settle, close = caller_cases(worker)
        try:
            caller[label] = compare(cases, n=20_000, repeats=repeats, settle=settle)
        finally:
            close()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "missions.db"
        sizes = generate_store(path)
        generated = time.perf_counter() - started
        results = analysis(path)
        size_mib = path.stat().st_size / 2**20
    projection = projection_throughput()
    write_results(
        "missions",
        {
            "caller_ns_per_tool_call": caller,
            "store": {**sizes, "generation_seconds": generated, "file_mib": size_mib},
            "analysis_seconds": results,
            "projection": projection,
            "goals": {
                "tool call on the caller thread": "< 5 us",
                "calculate_metrics, 100 000 missions": "< 500 ms",
                "detect_patterns, 100 000 missions": "< 10 s",
            },
        },
    )
    only, loaded = caller["caller only"], caller["worker running"]
    print_table(
        "Recording one tool call (ns per call, medians of rounds of 20 000): the caller's "
        "own work (15 rounds), and back to back with the worker running (7 rounds)",
        [
            (name, f"{only[name]['median_ns']:,.0f}", f"{loaded[name]['median_ns']:,.0f}")
            for name in only
        ],
        ("case", "caller only", "worker running"),
    )
    print_table(
        f"Analysis over {sizes['missions']:,} missions, {sizes['tool_calls']:,} tool calls "
        f"({size_mib:,.0f} MiB; generated in {generated:.0f} s)",
        [
            (name, f"{r['median_s'] * 1e3:,.0f}", f"{r['min_s'] * 1e3:,.0f}")
            for name, r in results.items()
        ],
        ("analysis", "median ms", "min ms"),
    )
    print_table(
        "Projection: mission events folded into the tables",
        [(f"{projection['events']:,}", f"{projection['events_per_second']:,.0f}")],
        ("events", "events/s"),
    )


if __name__ == "__main__":
    main()
