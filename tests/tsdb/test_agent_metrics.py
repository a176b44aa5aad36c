"""Spec 023's agent metrics, classify_error, and the reports built on the query engine."""

from __future__ import annotations

import datetime as dt
import errno
import json
import math
from decimal import Decimal

import numpy as np
import pytest
from tsdb_reference import T0, US, bucket_quantile_reference

from tachimeter.analyze.metrics import MetricsEngine, loop_performance_stats, token_usage_report
from tachimeter.metrics import Registry, generate_latest
from tachimeter.metrics.agent import (
    ERROR_TYPES,
    LOOP_DURATION_BUCKETS,
    AgentMetrics,
    classify_error,
)
from tachimeter.model.prices import ModelPrice, PriceTable
from tachimeter.model.timestamps import from_ns
from tachimeter.model.tokens import TokenUsage
from tachimeter.store.rollups import roll_up
from tachimeter.store.timeseries import TimeSeriesStore


class RateLimitError(Exception):
    status_code = 429


class AuthenticationError(Exception):
    pass


class APITimeoutError(Exception):  # openai's subclasses its connection error
    pass


class APIConnectionError(Exception):
    pass


class ToolException(Exception):
    pass


class OverloadedError(Exception):
    pass


class HTTPStatusError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"status {status}")
        self.status = status


def _wrapped(inner: BaseException) -> RuntimeError:
    try:
        raise RuntimeError("loop failed") from inner
    except RuntimeError as exc:
        return exc


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (TimeoutError(), "timeout"),
        (APITimeoutError(), "timeout"),
        (ConnectionResetError(), "network"),
        (OSError(errno.EHOSTUNREACH, "no route"), "network"),
        (APIConnectionError(), "network"),
        (RateLimitError(), "rate_limit"),
        (HTTPStatusError(429), "rate_limit"),
        (AuthenticationError(), "auth"),
        (HTTPStatusError(403), "auth"),
        (ValueError("bad json"), "validation"),
        (json.JSONDecodeError("x", "doc", 0), "validation"),
        (HTTPStatusError(422), "validation"),
        (ToolException(), "tool_error"),
        (OverloadedError(), "model_error"),
        (HTTPStatusError(529), "model_error"),
        (HTTPStatusError(503), "model_error"),
        (_wrapped(TimeoutError()), "timeout"),
        (KeyError("k"), "other"),
        (None, "other"),
        (429, "rate_limit"),
        (401, "auth"),
        (500, "model_error"),
        (418, "other"),
        ("rate_limit_exceeded", "rate_limit"),
        ("Request timed out", "timeout"),
        ("invalid_api_key", "auth"),
        ("tool_execution_failed", "tool_error"),
        ("context_length_exceeded", "model_error"),
        ("ECONNREFUSED", "network"),
        ("schema mismatch", "validation"),
        ("something odd", "other"),
        ("504", "timeout"),
    ],
)
def test_classify_error_maps_to_the_closed_set(error: object, expected: str) -> None:
    assert classify_error(error) == expected  # type: ignore[arg-type]
    assert expected in ERROR_TYPES


def test_agent_metrics_are_exposed_with_prometheus_names() -> None:
    registry = Registry()
    agent = AgentMetrics(registry)
    agent.record_loop(
        "planner",
        3.0,
        tokens=TokenUsage(input_tokens=100, output_tokens=20, cache_read_tokens=60),
        tool_invocations={"search": 2, "noop": 0},
        error="rate_limit_exceeded",
    )
    text = generate_latest(registry).decode()
    assert (
        'loop_execution_duration_seconds_bucket{loop_type="planner",status="error",le="5.0"} 1.0'
        in text
    )
    assert 'llm_tokens_used_total{loop_type="planner",token_type="cache_read"} 60.0' in text
    assert 'tool_invocations_total{tool="search",loop_type="planner"} 2.0' in text
    assert "noop" not in text
    assert 'loop_errors_total{loop_type="planner",error_type="rate_limit"} 1.0' in text
    assert "active_loops 0.0" in text


def test_track_loop_counts_active_loops_and_classifies_failures() -> None:
    agent = AgentMetrics(Registry())
    with agent.track_loop("coder"):
        assert agent.active_loops.labels().value == 1.0
    with pytest.raises(ConnectionRefusedError), agent.track_loop("coder"):
        raise ConnectionRefusedError
    assert agent.active_loops.labels().value == 0.0
    assert agent.loop_duration.labels("coder", "success").count == 1
    assert agent.loop_duration.labels("coder", "error").count == 1
    assert agent.loop_errors.labels("coder", "network").value == 1.0


def _simulate(tsdb: TimeSeriesStore, seed: int) -> dict:
    """Two hours of agent loops scraped every 15 s, with a process restart half-way (every
    counter starts again from zero). Returns what was recorded, per scrape index."""
    rng = np.random.default_rng(seed)
    registry = Registry()
    agent = AgentMetrics(registry, with_model=True)
    recorded: list[list[tuple]] = []
    for k in range(480):
        if k == 240:
            registry = Registry()
            agent = AgentMetrics(registry, with_model=True)
        loops = []
        for _ in range(int(rng.poisson(2))):
            loop_type = str(rng.choice(["planner", "coder"]))
            duration = float(rng.lognormal(1.0, 1.0))
            status = "success" if rng.random() < 0.8 else "error"
            model = str(rng.choice(["model-a", "model-b"]))
            tokens = {"input": int(rng.integers(100, 5000)), "output": int(rng.integers(10, 900))}
            tokens["cache_read"] = int(rng.integers(0, tokens["input"]))
            agent.record_loop(loop_type, duration, status=status, model=model, tokens=tokens)
            loops.append((loop_type, duration, status, model, tokens))
        recorded.append(loops)
        at = from_ns((T0 + k * 15 * US + int(rng.integers(0, 900)) * 1000) * 1000)
        tsdb.write_families(registry.collect(), at=at)
    return {"loops": recorded}


def test_reports_equal_a_recomputation_from_what_was_recorded(tsdb: TimeSeriesStore) -> None:
    """loop_performance_stats and token_usage_report over [start, end): the observations
    recorded after the scrape before ``start`` up to the last scrape before ``end``,
    exactly, across a counter reset, from raw samples and from rollups alike."""
    recorded = _simulate(tsdb, seed=4)["loops"]
    # Scrape k happens in [T0 + 15k s, T0 + 15k s + 0.9 s).
    start_k, end_k = 40, 400
    start, end = (T0 + start_k * 15 * US) / US, (T0 + end_k * 15 * US) / US
    window = [loop for k in range(start_k, end_k) for loop in recorded[k]]
    engine = MetricsEngine(tsdb)
    prices = PriceTable(
        overrides={
            "model-a": ModelPrice(
                input_per_mtok=Decimal(3),
                output_per_mtok=Decimal(15),
                cache_read_per_mtok=Decimal("0.3"),
            ),
            "model-b": ModelPrice(input_per_mtok=Decimal(1), output_per_mtok=Decimal(5)),
        }
    )
    for stage in ("raw", "rolled"):
        if stage == "rolled":
            tsdb.compact(now=dt.datetime(2026, 1, 2, tzinfo=dt.UTC))
            roll_up(tsdb.connection, now=dt.datetime(2026, 1, 2, tzinfo=dt.UTC))
        stats = loop_performance_stats(engine, "planner", start, end)
        planner = [loop for loop in window if loop[0] == "planner"]
        assert stats.total_executions == len(planner)
        assert stats.success_rate == pytest.approx(
            sum(loop[2] == "success" for loop in planner) / len(planner)
        )
        durations = np.array([loop[1] for loop in planner])
        counts = [float((durations <= b).sum()) for b in LOOP_DURATION_BUCKETS]
        for q, got in (
            (0.5, stats.median_duration),
            (0.95, stats.p95_duration),
            (0.99, stats.p99_duration),
        ):
            assert got == pytest.approx(bucket_quantile_reference(q, LOOP_DURATION_BUCKETS, counts))
        report = token_usage_report(engine, start, end, prices=prices)
        by_type = {
            t: float(sum(loop[4][t] for loop in window)) for t in ("input", "output", "cache_read")
        }
        assert report.by_token_type == pytest.approx(by_type)
        assert report.total_tokens == by_type["input"] + by_type["output"]
        assert report.by_loop_type == pytest.approx(
            {
                lt: float(
                    sum(loop[4]["input"] + loop[4]["output"] for loop in window if loop[0] == lt)
                )
                for lt in ("planner", "coder")
            }
        )
        expected_cost = Decimal(0)
        for model in ("model-a", "model-b"):
            mine = [loop[4] for loop in window if loop[3] == model]
            usage = TokenUsage(
                input_tokens=sum(t["input"] for t in mine),
                output_tokens=sum(t["output"] for t in mine),
                cache_read_tokens=sum(t["cache_read"] for t in mine),
            )
            expected_cost += prices.estimate(model, usage).total or Decimal(0)
        assert report.estimated_cost == expected_cost
        assert report.unpriced_models == []


def test_reports_on_an_empty_store(tsdb: TimeSeriesStore) -> None:
    engine = MetricsEngine(tsdb)
    stats = loop_performance_stats(engine, "planner", T0 / US, T0 / US + 3600)
    assert stats.total_executions == 0 and stats.success_rate is None
    assert stats.median_duration is None
    report = token_usage_report(engine, T0 / US, T0 / US + 3600)
    assert report.total_tokens == 0 and report.estimated_cost is None
    assert math.isfinite(report.total_tokens)
