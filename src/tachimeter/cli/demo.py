"""``tachimeter demo``: a realistic stream of agent events through the whole pipeline.

A simulated coding-agent product: users open sessions, start missions on several
backends and models, call tools and LLMs (token usage), hit errors (some of whose
messages carry secrets, as real ones do), and report performance figures. Every event
goes through the collector: validated, scrubbed, batched; the summary shows counts per
category, bytes in JSON and MessagePack, and what was scrubbed.
"""

from __future__ import annotations

import datetime as dt
import random
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Final, NamedTuple

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tachimeter.collect.collector import EventCollector
from tachimeter.collect.sinks import JsonlFileSink, MemorySink
from tachimeter.config.sources import load_config
from tachimeter.model.codec import encode_event
from tachimeter.model.data import (
    BusinessEventData,
    BusinessMetricType,
    ErrorEventData,
    ErrorSeverity,
    PerformanceEventData,
    UsageEventData,
)
from tachimeter.model.event_types import EventPriority, EventType

__all__ = [
    "ALERT_RULES",
    "INCIDENTS",
    "Incident",
    "generate_agent_events",
    "replay_alerts",
    "run_demo",
    "seed_store",
]

BACKENDS = {
    "anthropic": ["claude-sonnet-4", "claude-3-5-haiku"],
    "openai": ["gpt-4o", "gpt-4o-mini"],
}
TOOLS = ["read_file", "search_code", "run_tests", "edit_file", "shell", "web_fetch"]
FEATURES = ["chat", "search", "refactor", "review", "settings"]


def _fake_secret(rng: random.Random) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    body = "".join(rng.choice(alphabet) for _ in range(40))
    return rng.choice([f"sk-ant-api03-{body}", f"sk-proj-{body}", f"ghp_{body[:36]}"])


def generate_agent_events(count: int, seed: int) -> list[tuple[Any, dict[str, Any]]]:
    """``count`` (event type, track() keyword arguments) pairs, reproducible from ``seed``."""
    rng = random.Random(seed)
    out: list[tuple[Any, dict[str, Any]]] = []
    users = [f"user-{i:04d}" for i in range(max(1, count // 50))]
    while len(out) < count:
        user = rng.choice(users)
        backend = rng.choice(list(BACKENDS))
        model = rng.choice(BACKENDS[backend])
        mission = f"m-{rng.getrandbits(40):010x}"
        common = {"mission_id": mission, "backend": backend, "model": model}
        start = len(out)
        out.append((EventType.SESSION_STARTED, {"user_id": user}))
        out.append((EventType.FEATURE_USED, {"user_id": user, "data": UsageEventData(
            feature=rng.choice(FEATURES), action="open", success=True)}))  # fmt: skip
        out.append((EventType.MISSION_STARTED, {"user_id": user, "properties": dict(common)}))
        for step in range(rng.randint(1, 6)):
            tool = rng.choice(TOOLS)
            ok = rng.random() > 0.08
            out.append((EventType.TOOL_INVOKED, {"user_id": user, "data": UsageEventData(
                feature="tool", action=tool, success=ok, duration_ms=int(rng.lognormvariate(5, 1)),
                extra={"mission_id": mission, "step": step})}))  # fmt: skip
            tokens = int(rng.lognormvariate(7, 0.8))
            out.append((EventType.TOKENS_CONSUMED, {"user_id": user, "data": BusinessEventData(
                metric_type=BusinessMetricType.TOTAL_TOKENS, value=tokens, unit="tokens",
                backend=backend, model=model)}))  # fmt: skip
            out.append((EventType.RESPONSE_LATENCY, {"data": PerformanceEventData(
                metric="llm_latency", value=round(rng.lognormvariate(6.5, 0.5), 1), unit="ms",
                tags={"backend": backend, "model": model})}))  # fmt: skip
        if rng.random() < 0.15:
            secret = _fake_secret(rng)
            message = rng.choice([
                f"401 from provider: invalid x-api-key {secret}",
                f"tool shell failed: curl -H 'Authorization: Bearer {secret}' returned 403",
                f"rate limited; retry with key={secret}",
            ])  # fmt: skip
            out.append((EventType.ERROR_OCCURRED, {"user_id": user, "priority": EventPriority.HIGH,
                "data": ErrorEventData(code=rng.choice(["AUTH", "RATE_LIMIT", "TOOL"]),
                message=message, severity=ErrorSeverity.ERROR, component="agent")}))  # fmt: skip
            out.append((EventType.MISSION_FAILED, {"user_id": user, "properties": dict(common)}))
        else:
            out.append((EventType.MISSION_COMPLETED, {"user_id": user, "properties": dict(common)}))
        # One journey, one session (as an application would pass its own session id).
        session = f"s-{rng.getrandbits(48):012x}"
        for _, kwargs in out[start:]:
            kwargs["session_id"] = session
    return out[:count]


def run_demo(*, events: int, seed: int, out: str | None) -> None:
    """Run the demo and print its summary."""
    console = Console()
    generated = generate_agent_events(events, seed)
    sink = MemorySink()
    sinks: list[Any] = [sink]
    if out is not None:
        sinks.append(JsonlFileSink(Path(out)))
    with tempfile.TemporaryDirectory() as tmp:
        settings: dict[str, Any] = {
            "storage.path": str(Path(tmp) / "demo.db"),
            "collection.queue_capacity": max(10_000, events),
            "collection.buffer_size": 500,
            "sampling.seed": seed,  # the sampler's draws too: same seed, same events
        }
        config = load_config(env={}, cwd=tmp, **settings)
        collector = EventCollector(config, sinks=sinks, register_atexit=False)
        started = time.perf_counter()
        for kind, kwargs in generated:
            collector.track(kind, **kwargs)
        flushed = collector.flush(timeout=120)
        elapsed = time.perf_counter() - started
        stats = collector.stats()
        collector.shutdown(timeout=10)
    delivered = sink.events()
    by_category = Counter(e.category.value for e in delivered)
    scrubbed = sum(
        1 for e in delivered if isinstance(e.data, ErrorEventData) and "[REDACTED" in e.data.message
    )
    json_bytes = sum(len(encode_event(e)) for e in delivered)
    msgpack_bytes = sum(len(encode_event(e, format="msgpack")) for e in delivered)

    table = Table(title=f"{len(delivered):,} events through the collector in {elapsed:.2f} s")
    table.add_column("category")
    table.add_column("events", justify="right")
    for category, count in sorted(by_category.items()):
        table.add_row(category, f"{count:,}")
    console.print(table)
    figures = Table(title="pipeline")
    figures.add_column("measure")
    figures.add_column("value", justify="right")
    figures.add_row("received", f"{stats.events_received:,}")
    figures.add_row(
        "sampled out (performance: rate 0.1, min 10/min)", f"{stats.events_sampled_out:,}"
    )
    figures.add_row("dead-lettered (failed validation)", f"{stats.events_dead_lettered:,}")
    figures.add_row("delivered", f"{stats.events_processed:,} in {stats.batches_flushed} batches")
    figures.add_row("error messages with secrets scrubbed", f"{scrubbed:,}")
    figures.add_row("JSON bytes / event", f"{json_bytes / max(1, len(delivered)):.0f}")
    figures.add_row("MessagePack bytes / event", f"{msgpack_bytes / max(1, len(delivered)):.0f}")
    figures.add_row("flushed and acknowledged", "yes" if flushed else "NO")
    console.print(figures)
    example = next((e for e in delivered if isinstance(e.data, ErrorEventData)), None)
    if example is not None:
        console.print("[bold]a scrubbed error message:[/bold]", escape(example.data.message))
    if out is not None:
        console.print(f"events written to {out}")


# The demo's alert rules (docs/alerts.md), written next to its store as ``alerts.toml``:
# quiet on the demo's ordinary traffic (about one event every two minutes, fewer than
# `min_total` in any 10 minutes; a few thousand tokens per 10 minutes), firing on its
# two incidents.
ALERT_RULES: Final = """\
interval = "15s"

[[rules]]
name = "HighErrorRate"
severity = "critical"
for = "2m"
annotations = { summary = "{errors:.0f} of {total:.0f} events in 10 minutes were errors" }
[rules.condition]
type = "error_rate"
threshold = 0.25
window = "10m"
min_total = 20

[[rules]]
name = "TokenBurn"
severity = "warning"
for = "5m"
annotations = { summary = "{value:.0f} tokens in 10 minutes" }
[rules.condition]
type = "threshold"
metric = "business_total_tokens"
aggregation = "increase"
window = "10m"
op = ">"
threshold = 200000
"""


class Incident(NamedTuple):
    """A planted incident: from ``ago`` before the seeding until ``ago - duration``."""

    name: str
    ago: dt.timedelta
    duration: dt.timedelta
    per_minute: int


# A provider rate-limits the agents for 15 minutes ending half an hour before the demo
# starts (the Overview's last hour shows it and HighErrorRate firing); six hours before,
# a runaway agent loop burns tokens for 40 minutes (the Metrics explorer's last 24 hours
# and the Alerts timeline show it and TokenBurn firing).
INCIDENTS: Final = (
    Incident("rate_limited", dt.timedelta(minutes=50), dt.timedelta(minutes=15), 8),
    Incident("token_burn", dt.timedelta(hours=6), dt.timedelta(minutes=40), 6),
)
# Alert rules are evaluated over each incident every 30 s, from 15 minutes before it
# to 45 minutes after (or now): the history the live manager would have written.
_REPLAY_STEP: Final = dt.timedelta(seconds=30)


def _incident_events(
    incident: Incident, now: dt.datetime, rng: random.Random
) -> list[tuple[Any, dict[str, Any]]]:
    begin = now - incident.ago
    minutes = int(incident.duration.total_seconds() // 60)
    out: list[tuple[Any, dict[str, Any]]] = []
    for i in range(minutes * incident.per_minute):
        when = begin + dt.timedelta(seconds=60 * i / incident.per_minute + rng.random())
        user = f"user-{rng.randrange(40):04d}"
        if incident.name == "rate_limited":
            out.append((EventType.ERROR_OCCURRED, {"user_id": user, "timestamp": when,
                "priority": EventPriority.HIGH, "data": ErrorEventData(code="RATE_LIMIT",
                message="429 from provider: rate limited, retry after 30s",
                severity=ErrorSeverity.ERROR, component="llm_client")}))  # fmt: skip
        else:
            out.append((EventType.TOKENS_CONSUMED, {"user_id": "user-0007", "timestamp": when,
                "data": BusinessEventData(metric_type=BusinessMetricType.TOTAL_TOKENS,
                value=int(rng.uniform(25_000, 40_000)), unit="tokens", backend="openai",
                model="gpt-4o")}))  # fmt: skip
    return out


def replay_alerts(path: str, rules: Path, now: dt.datetime) -> int:
    """Evaluate ``rules`` over each incident's stretch of time as a live alert manager
    would have, storing the history in the store at ``path``; the state changes."""
    from tachimeter.alerts import AlertManager
    from tachimeter.store.sqlite import SQLiteStore

    with SQLiteStore(path) as store:
        manager = AlertManager.from_file(rules, store=store)
        try:
            for incident in sorted(INCIDENTS, key=lambda i: -i.ago):
                at = now - incident.ago - dt.timedelta(minutes=15)
                until = min(now, now - incident.ago + incident.duration + dt.timedelta(minutes=45))
                while at <= until:
                    manager.evaluate_rules(now=at)
                    at += _REPLAY_STEP
            manager.evaluate_rules(now=now)
            return len(manager.history(limit=1000))
        finally:
            manager.close(timeout=5)


def seed_store(path: str, *, events: int, missions: int, seed: int, days: int = 30) -> None:
    """Fill the store at ``path`` with ``days`` of product events and tracked missions,
    plant :data:`INCIDENTS` and store the alert history of :data:`ALERT_RULES` over them
    (the rules are written to ``alerts.toml`` next to the store).

    Events follow a daily rhythm (busier in working hours); missions, spread over the
    same days, run on two backends and four models with planted effects the analyses
    find: ``gpt-4o-mini`` fails more often, ``openai`` is slower, and ``edit_file`` ->
    ``shell`` -> ``revert`` precedes failure.
    """
    from rich.progress import track as progress

    from tachimeter.defaults import default_sinks
    from tachimeter.missions import MissionError, MissionTracker
    from tachimeter.model.timestamps import to_ns

    rng = random.Random(seed)
    # The sampler's draws are seeded too: the same seed keeps the same events.
    settings: dict[str, Any] = {
        "storage.path": path,
        "collection.queue_capacity": 50_000,
        "sampling.seed": seed,
    }
    config = load_config(env={}, **settings)
    collector = EventCollector(config, sinks=default_sinks(config), register_atexit=False)
    now = dt.datetime.now(dt.UTC)
    start = now - dt.timedelta(days=days)
    generated = generate_agent_events(events, seed)
    span = (now - start).total_seconds()
    shift = 0.0
    for i, (kind, kwargs) in enumerate(progress(generated, description="product events")):
        offset = span * i / len(generated)
        if kind is EventType.SESSION_STARTED:  # quieter nights: move whole sessions
            hour = (start + dt.timedelta(seconds=offset)).hour
            shift = 8 * 3600 * rng.random() if hour < 7 and rng.random() < 0.6 else 0.0
        when = min(now, start + dt.timedelta(seconds=offset + shift))
        collector.track(kind, timestamp=when, **kwargs)
    for incident in INCIDENTS:
        for kind, kwargs in _incident_events(incident, now, rng):
            collector.track(kind, **kwargs)
    # Missions start at random times of the period (ending an hour before now at the
    # latest); the tracker's clock follows each one through its steps.
    clock = [0]
    tracker = MissionTracker(collector, clock=lambda: clock[0])
    latest = span - 3600
    for _ in progress(range(missions), description="missions"):
        clock[0] = to_ns(start + dt.timedelta(seconds=rng.uniform(0, latest)))
        backend = rng.choice(list(BACKENDS))
        model = rng.choice(BACKENDS[backend])
        mission_id = tracker.start_mission(None, backend, model, tags=[rng.choice(FEATURES)])
        tracker.mission_started(mission_id)
        doomed = rng.random() < (0.45 if model == "gpt-4o-mini" else 0.15)
        tools = [rng.choice(TOOLS) for _ in range(rng.randint(2, 7))]
        if doomed and rng.random() < 0.5:
            tools += ["edit_file", "shell", "revert"]
        slow = 2.5 if backend == "openai" else 1.0
        for step, tool in enumerate(tools):
            duration = rng.lognormvariate(5, 0.7) * slow
            clock[0] += int(duration * 1e6)
            tracker.tool_invoked(mission_id, tool, duration, success=rng.random() > 0.05)
            tracker.tokens_consumed(
                mission_id,
                input_tokens=int(rng.lognormvariate(7, 0.6)),
                output_tokens=int(rng.lognormvariate(5.5, 0.6)),
                model=model,
            )
            step_ms = rng.lognormvariate(7, 0.5)
            clock[0] += int(step_ms * 1e6)
            tracker.step_completed(mission_id, step, True, duration_ms=step_ms)
        if doomed:
            code = rng.choice(["TOOL_ERROR", "TIMEOUT", "RATE_LIMITED"])
            tracker.mission_failed(mission_id, MissionError(code=code, message=f"{code} in step"))
        else:
            tracker.mission_completed(mission_id)
    collector.flush(timeout=300)
    collector.shutdown(timeout=30)
    rules = Path(path).resolve().parent / "alerts.toml"
    rules.write_text(ALERT_RULES)
    replay_alerts(path, rules, now)
