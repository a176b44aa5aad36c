"""POST /v1/metrics against a real server: points stored and read back through the
metrics query API, or refused with each bad field named."""

from __future__ import annotations

import gzip
import json
import math
import random
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import pytest
from server_clients import http_client, keyed_server, problem
from serving import ServerProcess

from tachimeter.model.timestamps import format_timestamp, from_ns

INGEST = "tk_metrics_ingest_1"
READ = "tk_metrics_read_22"
BURST = "tk_metrics_burst_3"
_STEP = 300
_US = 1_000_000


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with http_client(server) as http:
        yield http


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    db = tmp_path_factory.mktemp("metric_auth") / "analytics.db"
    # A slow refill: the burst is what a key gets within a test.
    settings = {"rate_limit_per_second": 0.01, "rate_limit_burst": 5}
    with keyed_server(db, settings, {INGEST: "ingest", READ: "read", BURST: "ingest"}) as process:
        yield process


def _iso(us: int) -> str:
    return format_timestamp(from_ns(us * 1000))


def _query(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    answer = client.get("/v1/metrics/query", params=params)
    assert answer.status_code == 200, answer.text
    series: list[dict[str, Any]] = answer.json()["series"]
    return series


def _values(series: dict[str, Any]) -> dict[int, float]:
    """Evaluation time (µs) -> value, leaving out times without a value."""
    out = {}
    for t, v in series["points"]:
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            out[round(t * _US)] = v
    return out


def _linear_quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _stored_series(server: ServerProcess, name: str) -> list[tuple[str, str, str | None]]:
    conn = sqlite3.connect(f"{server.db.as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute(
            "SELECT metric_type, labels, unit FROM metric_series WHERE name = ?", (name,)
        ).fetchall()
    finally:
        conn.close()


def test_posted_points_are_read_back_through_the_query_api(
    server: ServerProcess, client: httpx.Client
) -> None:
    """Counters, gauges and histograms from seeded random data, recomputed in plain Python
    from what was sent: increase per window, instant values, window percentiles."""
    rng = random.Random(9)
    start_us = (int(time.time()) // _STEP * _STEP - 12 * _STEP) * _US
    end_us = start_us + 11 * _STEP * _US

    # Samples fall strictly inside the range, never on an evaluation time (window edges).
    def stamp() -> int:
        offset = 0
        while offset % (_STEP * _US) == 0:
            offset = rng.randrange(1, 11 * _STEP * _US)
        return start_us + offset

    sent: list[dict[str, Any]] = []
    counters: dict[str, list[tuple[int, float]]] = {"search": [], "edit": []}
    gauges: list[tuple[int, float]] = []
    observations: list[tuple[int, float]] = []
    for _ in range(400):
        tool = rng.choice(["search", "edit"])
        ts, value = stamp(), float(rng.randint(1, 5))
        while any(t == ts for t, _ in counters[tool]):
            ts = stamp()
        counters[tool].append((ts, value))
        sent.append(
            {"name": "agent_tool_calls", "kind": "counter", "value": value,
             "timestamp": _iso(ts), "labels": {"tool": tool}}
        )  # fmt: skip
    for _ in range(150):
        ts, value = stamp(), round(rng.uniform(-20, 80), 3)
        while any(t == ts for t, _ in gauges):
            ts = stamp()
        gauges.append((ts, value))
        sent.append(
            {"name": "agent_queue_depth", "kind": "gauge", "value": value,
             "timestamp": ts / _US, "tags": {"queue": "events"}}
        )  # fmt: skip
    for _ in range(300):
        ts, value = stamp(), rng.lognormvariate(0, 1)
        while any(t == ts for t, _ in observations):
            ts = stamp()
        observations.append((ts, value))
        sent.append(
            {"name": "agent_llm_latency_seconds", "kind": "histogram", "value": value,
             "timestamp": _iso(ts), "unit": "seconds"}
        )  # fmt: skip
    rng.shuffle(sent)
    # Three batches, three encodings: JSON, MessagePack, gzip'd JSON.
    first = client.post("/v1/metrics", json={"points": sent[:300]})
    assert first.status_code == 200, first.text
    ack = first.json()
    assert (ack["received"], ack["accepted"]) == (300, 300) and 1 <= ack["series"] <= 4
    second = client.post(
        "/v1/metrics",
        content=msgspec.msgpack.encode(sent[300:600]),
        headers={"Content-Type": "application/msgpack"},
    )
    assert second.status_code == 200, second.text
    third = client.post(
        "/v1/metrics",
        content=gzip.compress(json.dumps(sent[600:]).encode()),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert third.status_code == 200, third.text
    assert third.json()["accepted"] == len(sent) - 600

    times = list(range(start_us, end_us + 1, _STEP * _US))
    window = {"start": _iso(start_us), "end": _iso(end_us), "step": _STEP}

    # Counter points are increments: increase over [t - step, t] is their sum.
    found = _query(
        client, name="agent_tool_calls", aggregation="increase", group_by="tool", **window
    )
    assert {s["labels"]["tool"] for s in found} == {"search", "edit"}
    for series in found:
        samples = counters[series["labels"]["tool"]]
        expected = {}
        for t in times:
            inside = [v for ts, v in samples if t - _STEP * _US <= ts <= t]
            if inside:
                expected[t] = sum(inside)
        assert _values(series) == pytest.approx(expected)

    # A gauge's instant value: the last sample in the 5-minute lookback.
    (gauge,) = _query(client, name="agent_queue_depth", match='queue="events"', **window)
    expected = {}
    for t in times:
        recent = [(ts, v) for ts, v in gauges if t - 300 * _US <= ts <= t]
        if recent:
            expected[t] = max(recent)[1]
    assert _values(gauge) == pytest.approx(expected)

    # Histogram observations: quantiles of the samples in each window (linear).
    found = _query(
        client,
        name="agent_llm_latency_seconds",
        aggregation="percentiles",
        quantiles="0.5,0.9",
        **window,
    )
    by_quantile = {s["labels"].get("quantile"): s for s in found}
    for q in (0.5, 0.9):
        series = by_quantile.get(str(q)) or by_quantile.get(f"{q:g}")
        assert series is not None, sorted(by_quantile)
        expected = {}
        for t in times:
            inside = [v for ts, v in observations if t - _STEP * _US <= ts <= t]
            if inside:
                expected[t] = _linear_quantile(inside, q)
        assert _values(series) == pytest.approx(expected)

    names = {m["name"]: m for m in client.get("/v1/metrics/names").json()}
    assert names["agent_tool_calls"]["kind"] == "counter"
    assert names["agent_tool_calls"]["series"] == 2
    assert names["agent_llm_latency_seconds"]["unit"] == "seconds"
    assert names["agent_queue_depth"]["kind"] == "gauge"


def test_timers_default_to_milliseconds_and_timestamps_default_to_now(
    server: ServerProcess, client: httpx.Client
) -> None:
    before = time.time()
    answer = client.post(
        "/v1/metrics", json=[{"name": "step_duration", "kind": "timer", "value": 12.5}]
    )
    assert answer.status_code == 200, answer.text
    assert _stored_series(server, "step_duration") == [("timer", "{}", "ms")]
    (series,) = _query(client, name="step_duration", start="-10m", step=60)
    stamps = [t for t, v in series["points"] if v is not None]
    assert stamps and stamps[-1] >= before - 60
    assert 12.5 in [v for _, v in series["points"]]


def test_label_values_are_scrubbed_of_secrets_before_they_are_stored(
    server: ServerProcess, client: httpx.Client
) -> None:
    answer = client.post(
        "/v1/metrics",
        json=[
            {"name": "llm_requests", "kind": "counter", "value": 1,
             "labels": {"api_key": "k-live-123", "url": "postgres://app:hunter22@db/prod",
                        "auth": "Bearer abcdefghijklmnop.qrstu", "model": "gpt-4o"}}
        ],
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    ((_, labels, _),) = _stored_series(server, "llm_requests")
    stored = json.loads(labels)
    assert stored["model"] == "gpt-4o"
    assert stored["api_key"] == "[REDACTED]"
    assert "hunter22" not in labels and "abcdefghijklmnop" not in labels
    (series,) = _query(client, name="llm_requests", start="-10m", step=60)
    assert "hunter22" not in json.dumps(series)


def test_invalid_points_get_422_naming_every_bad_field_and_nothing_is_stored(
    server: ServerProcess, client: httpx.Client
) -> None:
    points: list[Any] = [
        {"name": "bad_batch_ok", "kind": "gauge", "value": 1},
        {"name": "bad batch", "kind": "gauge", "value": 1},
        {"name": "bad_batch_kind", "kind": "summary", "value": 1},
        {"name": "bad_batch_value", "kind": "gauge", "value": "12"},
        {"name": "bad_batch_counter", "kind": "counter", "value": -1},
        {"name": "bad_batch_labels", "kind": "gauge", "value": 1, "labels": {"code": 200}},
        {"name": "bad_batch_label_name", "kind": "gauge", "value": 1, "labels": {"1x": "a"}},
        {"name": "bad_batch_future", "kind": "gauge", "value": 1, "timestamp": time.time() + 3600},
        {"name": "bad_batch_time", "kind": "gauge", "value": 1, "timestamp": "yesterday"},
        {"name": "bad_batch_extra", "kind": "gauge", "value": 1, "colour": "red"},
        {"name": "bad_batch_both", "kind": "gauge", "value": 1, "labels": {}, "tags": {}},
        {"kind": "gauge"},
        ["not", "an", "object"],
    ]
    body = problem(client.post("/v1/metrics", json={"points": points}), 422)
    messages = {e["path"]: e["message"] for e in body["errors"]}
    assert "names must match" in messages["$.points[1].name"]
    assert "counter, gauge, histogram, timer" in messages["$.points[2].kind"]
    assert messages["$.points[3].value"] == "must be a finite number, got '12'"
    assert ">= 0" in messages["$.points[4].value"]
    assert messages["$.points[5].labels.code"] == "label values must be strings, got 200"
    assert "label names must match" in messages['$.points[6].labels["1x"]']
    assert "in the future" in messages["$.points[7].timestamp"]
    assert "ISO-8601" in messages["$.points[8].timestamp"]
    assert "unknown field" in messages["$.points[9].colour"]
    assert "not both" in messages["$.points[10].tags"]
    assert messages["$.points[11].name"].startswith("required")
    assert messages["$.points[11].value"].startswith("required")
    assert "must be an object" in messages["$.points[12]"]
    assert body["detail"].startswith("12 of 13 points are invalid, nothing was stored")
    assert not [n for n in client.get("/v1/metrics/names").json() if n["name"].startswith("bad_")]


def test_non_finite_values_are_refused_in_every_encoding(client: httpx.Client) -> None:
    # JSON has no NaN: Python's json writes a bare NaN, which is not JSON at all.
    text = json.dumps([{"name": "nan_metric", "kind": "gauge", "value": float("nan")}])
    assert (
        "malformed"
        in problem(
            client.post("/v1/metrics", content=text, headers={"Content-Type": "application/json"}),
            400,
        )["title"]
    )
    # 1e999 overflows a double.
    big = b'[{"name": "inf_metric", "kind": "gauge", "value": 1e999}]'
    assert problem(client.post("/v1/metrics", content=big), 422)["errors"]
    for value in (float("nan"), float("inf"), -float("inf")):
        body = msgspec.msgpack.encode(
            {"points": [{"name": "nan_metric", "kind": "gauge", "value": value}]}
        )
        answer = client.post(
            "/v1/metrics", content=body, headers={"Content-Type": "application/msgpack"}
        )
        (error,) = problem(answer, 422)["errors"]
        assert error["path"] == "$.points[0].value"
        assert error["message"].startswith("must be a finite number")


def test_malformed_bodies_get_400_413_or_415_with_a_clear_detail(client: httpx.Client) -> None:
    json_type = {"Content-Type": "application/json"}
    good = json.dumps([{"name": "shape_ok", "kind": "gauge", "value": 1}]).encode()
    truncated = client.post("/v1/metrics", content=good[:-7], headers=json_type)
    assert "truncated" in problem(truncated, 400)["detail"]
    invalid_utf8 = b'[{"name": "x", "kind": "gauge", "value": 1, "labels": {"a": "\xff\xfe"}}]'
    assert "UTF-8" in problem(client.post("/v1/metrics", content=invalid_utf8), 400)["detail"]
    deep = b"[" * 100_000 + b"]" * 100_000
    assert "nested too deeply" in problem(client.post("/v1/metrics", content=deep), 400)["detail"]
    not_a_batch = client.post("/v1/metrics", json={"series": []})
    assert problem(not_a_batch, 422)["errors"]
    assert problem(client.post("/v1/metrics", content=b"\x1f\x8b garbage",
                               headers={"Content-Encoding": "gzip"}), 400)  # fmt: skip
    assert problem(client.post("/v1/metrics", content=good,
                               headers={"Content-Type": "text/csv"}), 415)  # fmt: skip
    assert problem(client.post("/v1/metrics", content=good,
                               headers={"Content-Encoding": "br"}), 415)  # fmt: skip
    too_many = [{"name": "many", "kind": "gauge", "value": 1}] * 10_001
    assert "10000" in problem(client.post("/v1/metrics", json=too_many), 413)["detail"]
    huge_labels = {f"l{i}": "v" for i in range(500)}
    body = problem(
        client.post("/v1/metrics", json=[{"name": "wide", "kind": "gauge", "value": 1,
                                          "labels": huge_labels}]),
        422,
    )  # fmt: skip
    assert body["errors"][0]["path"] == "$[0].labels"
    assert "500 labels, more than 64" in body["errors"][0]["message"]
    names = {n["name"] for n in client.get("/v1/metrics/names").json()}
    assert not names & {"x", "many", "wide", "shape_ok"}


def test_a_retried_batch_with_its_idempotency_key_is_stored_once(
    client: httpx.Client,
) -> None:
    batch = [{"name": "retried_total_calls", "kind": "counter", "value": 5}]
    key = {"Idempotency-Key": "metrics-batch-0001"}
    first = client.post("/v1/metrics", json=batch, headers=key)
    again = client.post("/v1/metrics", json=batch, headers=key)
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    (series,) = _query(client, name="retried_total_calls", start="-10m", step=600,
                       aggregation="increase")  # fmt: skip
    assert sum(v for _, v in series["points"] if v is not None) == 5


def test_the_ingest_scope_and_the_rate_limit_apply(keyed: ServerProcess) -> None:
    point = [{"name": "scoped_metric", "kind": "gauge", "value": 1}]
    with http_client(keyed) as http:
        assert http.post("/v1/metrics", json=point).status_code == 401
        denied = http.post("/v1/metrics", json=point, headers={"Authorization": f"Bearer {READ}"})
        assert denied.status_code == 403 and "'ingest' scope" in denied.json()["detail"]
        ok = http.post("/v1/metrics", json=point, headers={"X-API-Key": INGEST})
        assert ok.status_code == 200, ok.text
        names = http.get("/v1/metrics/names", headers={"X-API-Key": READ}).json()
        assert [n["name"] for n in names] == ["scoped_metric"]
        statuses = [
            http.post("/v1/metrics", json=point, headers={"X-API-Key": BURST}).status_code
            for _ in range(6)
        ]
        assert statuses[:5] == [200] * 5 and statuses[5] == 429
        limited = http.post("/v1/metrics", json=point, headers={"X-API-Key": BURST})
        assert int(limited.headers["retry-after"]) >= 1
