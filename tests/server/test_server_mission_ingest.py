"""POST /v1/missions... against a real server: the tracker's events, read back through the
mission query API; the lifecycle enforced; bodies checked; the ingest scope required."""

from __future__ import annotations

import concurrent.futures
import gzip
import json
import random
import sqlite3
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import pytest
from server_clients import http_client, keyed_server, problem
from serving import ServerProcess

from tachimeter.missions import MissionError, MissionTracker
from tachimeter.testing import MemorySink, collector_for_tests

INGEST = "tk_missions_ingest_1"
READ = "tk_missions_read_22"
# Timing values differ between two runs of one scenario; everything else must not.
_TIMING = frozenset({"execution_time_ms", "paused_ms"})


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with http_client(server) as http:
        yield http


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    db = tmp_path_factory.mktemp("mission_auth") / "analytics.db"
    with keyed_server(
        db, {"rate_limit_per_second": 0}, {INGEST: "ingest", READ: "read"}
    ) as process:
        yield process


def _ok(answer: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _start(client: httpx.Client, **body: Any) -> str:
    body.setdefault("backend", "openai")
    body.setdefault("model", "gpt-4o")
    mission_id: str = _ok(client.post("/v1/missions", json=body), 201)["mission_id"]
    return mission_id


def _stored_events(server: ServerProcess, mission_id: str) -> list[tuple[Any, ...]]:
    """(name, priority, properties, session, user) of a mission's events, in seq order,
    read from the store file with plain sqlite3."""
    conn = sqlite3.connect(f"{server.db.as_uri()}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT event_name, priority, properties, session_id, user_id FROM analytics_events "
            "WHERE mission_id = ?",
            (mission_id,),
        ).fetchall()
    finally:
        conn.close()
    events = [(n, pr, json.loads(props), s, u) for n, pr, props, s, u in rows]
    return sorted(events, key=lambda e: e[2]["seq"])


def _comparable(props: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in props.items():
        if key in _TIMING or key == "mission_id":
            continue
        out[key] = round(value, 9) if isinstance(value, float) else value
    return out


def test_rest_calls_record_the_events_the_python_tracker_records(
    server: ServerProcess, client: httpx.Client
) -> None:
    """One scenario through MissionTracker (in memory) and through REST: same event types,
    priorities, properties and ids of session and user."""
    sink = MemorySink()
    with collector_for_tests(sink) as collector:
        tracker = MissionTracker(collector)
        mid = tracker.start_mission(
            None, "openai", "gpt-4o", ["same"], session_id="s-1", user_id="u-1"
        )
        tracker.mission_started(mid)
        tracker.step_completed(mid, 0, True, name="read", duration_ms=5.0)
        tracker.tool_invoked(mid, "search", 12.5, True, step_index=0)
        tracker.tool_invoked(mid, "edit", 3.0, False, error_code="E_IO")
        tracker.tokens_consumed(
            mid, 1200, 300, 0.02, model="gpt-4o", cache_read_tokens=1000,
            reasoning_tokens=100, provider="openai", duration_ms=800.0,
        )  # fmt: skip
        tracker.tokens_consumed(mid, 100, 50)
        tracker.pause(mid)
        tracker.resume(mid)
        tracker.pause(mid)
        tracker.retry(mid, MissionError(code="TIMEOUT", message="slow"))
        tracker.step_completed(mid, 1, False)
        tracker.mission_failed(
            mid,
            MissionError(
                code="E1", message="boom", step_index=1, recoverable=True, error_type="x.Y"
            ),
        )
        assert collector.flush()
    expected = [
        (e.event_name, e.priority.value, _comparable(e.data), e.session_id, e.user_id)
        for e in sink.events()
    ]

    rid = _start(client, tags=["same"], session_id="s-1", user_id="u-1")
    calls: list[tuple[str, dict[str, Any] | None]] = [
        ("steps", {"index": 0, "success": True, "name": "read", "duration_ms": 5.0}),
        ("tools", {"name": "search", "duration_ms": 12.5, "step_index": 0}),
        ("tools", {"name": "edit", "duration_ms": 3.0, "success": False, "error_code": "E_IO"}),
        ("llm", {"input_tokens": 1200, "output_tokens": 300, "cost_usd": 0.02,
                 "model": "gpt-4o", "cache_read_tokens": 1000, "reasoning_tokens": 100,
                 "provider": "openai", "duration_ms": 800.0}),
        ("llm", {"input_tokens": 100, "output_tokens": 50}),
        ("pause", None),
        ("resume", None),
        ("pause", None),
        ("retry", {"code": "TIMEOUT", "message": "slow"}),
        ("steps", {"index": 1, "success": False}),
        ("fail", {"code": "E1", "message": "boom", "step_index": 1, "recoverable": True,
                  "error_type": "x.Y"}),
    ]  # fmt: skip
    for path, body in calls:
        _ok(client.post(f"/v1/missions/{rid}/{path}", json=body))
    got = [
        (name, priority, _comparable(props), session, user)
        for name, priority, props, session, user in _stored_events(server, rid)
    ]
    assert got == expected
    stored = _stored_events(server, rid)
    failed = stored[-1][2]
    assert failed["paused_ms"] >= 0 and failed["execution_time_ms"] >= failed["paused_ms"]
    detail = _ok(client.get(f"/v1/missions/{rid}"))
    assert detail["status"] == "failed" and detail["retry_count"] == 1
    assert detail["error"]["code"] == "E1" and detail["error"]["recoverable"] is True


def test_missions_posted_over_rest_are_read_back_by_the_mission_api(
    client: httpx.Client,
) -> None:
    """Seeded random missions; list, detail and metrics against a plain recomputation."""
    rng = random.Random(414)
    tag = f"run-{uuid.uuid4().hex[:8]}"
    expected: dict[str, dict[str, Any]] = {}
    for number in range(24):
        mission_id = _start(client, tags=[tag], backend=rng.choice(["openai", "anthropic"]))
        record: dict[str, Any] = {
            "status": "executing", "tokens": 0, "cost": 0.0, "unpriced": 0, "tools": {},
            "steps": 0, "input": 0, "output": 0, "cache_read": 0,
        }  # fmt: skip
        for _ in range(rng.randint(0, 4)):
            tool = rng.choice(["search", "edit", "run_tests"])
            success = rng.random() < 0.8
            duration = round(rng.uniform(1, 500), 3)
            call = {"name": tool, "duration_ms": duration, "success": success}
            _ok(client.post(f"/v1/missions/{mission_id}/tools", json=call))
            record["tools"][tool] = record["tools"].get(tool, 0) + 1
        for _ in range(rng.randint(0, 3)):
            inputs, outputs = rng.randint(0, 5000), rng.randint(0, 2000)
            cached = rng.randint(0, inputs)
            llm: dict[str, Any] = {
                "input_tokens": inputs, "output_tokens": outputs, "cache_read_tokens": cached,
            }  # fmt: skip
            if rng.random() < 0.2:
                llm["model"] = "no-such-model-in-any-price-table"
                record["unpriced"] += 1
            else:
                llm["cost_usd"] = round(rng.uniform(0, 0.5), 6)
                record["cost"] += llm["cost_usd"]
            answer = _ok(client.post(f"/v1/missions/{mission_id}/llm", json=llm))
            assert answer.get("cost_usd") == llm.get("cost_usd")
            record["tokens"] += inputs + outputs
            record["input"] += inputs
            record["output"] += outputs
            record["cache_read"] += cached
        for index in range(rng.randint(0, 3)):
            _ok(client.post(f"/v1/missions/{mission_id}/steps", json={"success": True}))
            record["steps"] = index + 1
        ending = ("complete", "fail", "cancel", None)[number % 4]
        if ending == "fail":
            _ok(client.post(f"/v1/missions/{mission_id}/fail", json={"code": "E_TEST"}))
            record["status"] = "failed"
        elif ending == "cancel":
            _ok(client.post(f"/v1/missions/{mission_id}/cancel", json={"reason": "user"}))
            record["status"] = "cancelled"
        elif ending == "complete":
            done = _ok(client.post(f"/v1/missions/{mission_id}/complete"))
            assert done["total_tokens"] == record["tokens"]
            assert done["total_cost"] == pytest.approx(record["cost"])
            record["status"] = "completed"
        expected[mission_id] = record

    listed = {m["mission_id"]: m for m in _ok(client.get(f"/v1/missions?tag={tag}&limit=1000"))}
    assert set(listed) == set(expected)
    for mission_id, record in expected.items():
        row = listed[mission_id]
        assert row["status"] == record["status"]
        assert row["total_tokens"] == record["tokens"]
        assert row["total_cost"] == pytest.approx(record["cost"])
        assert row["tool_calls"] == sum(record["tools"].values())
        assert row["step_count"] == record["steps"]
        detail = _ok(client.get(f"/v1/missions/{mission_id}"))
        usage = detail["token_usage"]
        assert (usage["input_tokens"], usage["output_tokens"], usage["cache_read_tokens"]) == (
            record["input"],
            record["output"],
            record["cache_read"],
        )
        assert detail["unpriced_llm_calls"] == record["unpriced"]
        assert {t["tool_name"]: t["invocation_count"] for t in detail["tools_used"]} == record[
            "tools"
        ]
        if record["status"] in ("completed", "failed", "cancelled"):
            assert detail["execution_time_ms"] is not None and detail["completed_at"]

    metrics = _ok(client.get(f"/v1/missions/metrics?tag={tag}"))
    statuses = [r["status"] for r in expected.values()]
    finished = [s for s in statuses if s != "executing"]
    assert metrics["total_missions"] == len(expected)
    assert metrics["completed_missions"] == statuses.count("completed")
    assert metrics["failed_missions"] == statuses.count("failed")
    assert metrics["cancelled_missions"] == statuses.count("cancelled")
    assert metrics["active_missions"] == statuses.count("executing")
    assert metrics["success_rate"] == pytest.approx(statuses.count("completed") / len(finished))
    assert metrics["total_tokens"] == sum(r["tokens"] for r in expected.values())
    assert metrics["total_cost"] == pytest.approx(sum(r["cost"] for r in expected.values()))
    assert metrics["missions_with_unpriced_calls"] == sum(
        1 for r in expected.values() if r["unpriced"]
    )


def test_invalid_transitions_get_404_or_409_naming_the_mission_and_its_status(
    server: ServerProcess, client: httpx.Client
) -> None:
    unknown = problem(client.post("/v1/missions/no-such-mission/complete"), 404)
    assert "'no-such-mission'" in unknown["detail"]

    created = _start(client, status="created")
    refused = problem(client.post(f"/v1/missions/{created}/complete"), 409)
    assert f"'{created}' is created" in refused["detail"]
    assert "created -> completed is not allowed" in refused["detail"]
    not_paused = problem(client.post(f"/v1/missions/{created}/resume"), 409)
    assert "only a paused mission can resume" in not_paused["detail"]

    running = _start(client, mission_id="m-transitions-1")
    again = problem(client.post(f"/v1/missions/{running}/start"), 409)
    assert "already executing" in again["detail"]
    taken = problem(client.post("/v1/missions", json={"backend": "b", "model": "m",
                                                      "mission_id": running}), 409)  # fmt: skip
    assert "'m-transitions-1' already exists (status executing)" in taken["detail"]
    _ok(client.post(f"/v1/missions/{running}/complete"))
    twice = problem(client.post(f"/v1/missions/{running}/complete"), 409)
    assert f"'{running}' is completed" in twice["detail"]
    late_tool = problem(
        client.post(f"/v1/missions/{running}/tools", json={"name": "x", "duration_ms": 1}), 409
    )
    assert "completed" in late_tool["detail"] and "tool calls" in late_tool["detail"]
    # Refused calls wrote nothing: the mission's events are the three accepted ones.
    assert [e[0] for e in _stored_events(server, running)] == [
        "mission_created",
        "mission_started",
        "mission_completed",
    ]


def test_pauses_retries_and_plans_are_accounted_as_the_tracker_does(
    client: httpx.Client,
) -> None:
    mission_id = _start(client, status="planning")
    assert _ok(client.post(f"/v1/missions/{mission_id}/pause"))["status"] == "paused"
    time.sleep(0.3)
    assert _ok(client.post(f"/v1/missions/{mission_id}/resume"))["status"] == "planning"
    assert _ok(client.post(f"/v1/missions/{mission_id}/start"))["status"] == "executing"
    _ok(client.post(f"/v1/missions/{mission_id}/pause"))
    time.sleep(0.2)
    retried = _ok(client.post(f"/v1/missions/{mission_id}/retry"))
    assert (retried["status"], retried["retry_count"]) == ("executing", 1)
    assert _ok(client.post(f"/v1/missions/{mission_id}/retry"))["retry_count"] == 2
    done = _ok(client.post(f"/v1/missions/{mission_id}/complete"))
    assert done["paused_ms"] >= 500  # both pauses, the one a retry ended included
    assert done["execution_time_ms"] >= done["paused_ms"]
    detail = _ok(client.get(f"/v1/missions/{mission_id}"))
    assert detail["paused_ms"] == pytest.approx(done["paused_ms"])
    assert detail["retry_count"] == 2 and detail["status"] == "completed"


def test_concurrent_calls_on_one_mission_are_numbered_without_gaps(
    server: ServerProcess, client: httpx.Client
) -> None:
    mission_id = _start(client)

    def call(index: int) -> int:
        answer = client.post(
            f"/v1/missions/{mission_id}/tools", json={"name": f"t{index % 3}", "duration_ms": 1}
        )
        return answer.status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert list(pool.map(call, range(40))) == [200] * 40
    seqs = [e[2]["seq"] for e in _stored_events(server, mission_id)]
    assert seqs == list(range(42))
    detail = _ok(client.get(f"/v1/missions/{mission_id}"))
    assert sum(t["invocation_count"] for t in detail["tools_used"]) == 40


def test_bad_bodies_get_4xx_naming_the_field(client: httpx.Client) -> None:
    mission_id = _start(client)
    tools = f"/v1/missions/{mission_id}/tools"
    wrong_type = problem(client.post(tools, json={"name": "x", "duration_ms": "slow"}), 422)
    assert wrong_type["errors"][0]["path"] == "$.duration_ms"
    unknown = problem(client.post(tools, json={"name": "x", "duration_ms": 1, "color": 1}), 422)
    assert "color" in unknown["detail"]
    missing = problem(client.post(tools, json={"duration_ms": 1}), 422)
    assert "name" in missing["detail"]
    negative = problem(client.post(tools, json={"name": "x", "duration_ms": -1}), 422)
    assert negative["errors"][0]["path"] == "$.duration_ms"
    cache = problem(
        client.post(f"/v1/missions/{mission_id}/llm",
                    json={"input_tokens": 10, "cache_read_tokens": 20}), 422
    )  # fmt: skip
    assert cache["errors"][0]["path"] == "$.input_tokens"
    truncated = client.post(tools, content=b'{"name": "x", "dura',
                            headers={"Content-Type": "application/json"})  # fmt: skip
    assert "truncated" in problem(truncated, 400)["detail"]
    bad_id = problem(
        client.post("/v1/missions", json={"backend": "b", "model": "m", "mission_id": "a/b"}), 422
    )
    assert bad_id["errors"][0]["path"] == "$.mission_id"
    assert problem(client.post("/v1/missions", json={"model": "m"}), 422)
    # Typed bodies stop at the first value of the wrong type: deep nesting costs nothing.
    deep = b'{"reason": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    nested = problem(client.post(f"/v1/missions/{mission_id}/cancel", content=deep), 422)
    assert nested["errors"][0]["path"] == "$.reason"
    assert problem(client.post(tools, content=b"x,y", headers={"Content-Type": "text/csv"}), 415)
    # None of it was recorded.
    assert _ok(client.get(f"/v1/missions/{mission_id}"))["tools_used"] == []


def test_msgpack_gzip_bodies_and_idempotency_keys(client: httpx.Client) -> None:
    mission_id = _start(client)
    body = gzip.compress(msgspec.msgpack.encode({"name": "search", "duration_ms": 4.5}))
    headers = {
        "Content-Type": "application/msgpack",
        "Content-Encoding": "gzip",
        "Idempotency-Key": f"tool-{mission_id}-1",
    }
    first = _ok(client.post(f"/v1/missions/{mission_id}/tools", content=body, headers=headers))
    again = _ok(client.post(f"/v1/missions/{mission_id}/tools", content=body, headers=headers))
    assert first == again
    detail = _ok(client.get(f"/v1/missions/{mission_id}"))
    assert [(t["tool_name"], t["invocation_count"]) for t in detail["tools_used"]] == [
        ("search", 1)
    ]


def test_mission_calls_need_the_ingest_scope(keyed: ServerProcess) -> None:
    body = {"backend": "openai", "model": "gpt-4o", "mission_id": "scoped-1"}
    with http_client(keyed) as http:
        assert http.post("/v1/missions", json=body).status_code == 401
        denied = http.post("/v1/missions", json=body, headers={"X-API-Key": READ})
        assert denied.status_code == 403 and "'ingest' scope" in denied.json()["detail"]
        assert (
            http.post("/v1/missions", json=body, headers={"X-API-Key": INGEST}).status_code == 201
        )
        assert http.post("/v1/missions/scoped-1/complete",
                         headers={"X-API-Key": READ}).status_code == 403  # fmt: skip
        done = http.post("/v1/missions/scoped-1/complete", headers={"X-API-Key": INGEST})
        assert done.status_code == 200, done.text
        detail = http.get("/v1/missions/scoped-1", headers={"X-API-Key": READ})
        assert detail.status_code == 200 and detail.json()["status"] == "completed"
        assert http.get("/v1/missions/scoped-1", headers={"X-API-Key": INGEST}).status_code == 403
