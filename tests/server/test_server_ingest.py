"""POST /v1/events against a real server: stored and readable, or refused precisely."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import sqlite3
import uuid

import msgspec
import pytest
from serving import ServerProcess, stored_ids, wire_events

from tachimeter.model.timestamps import format_timestamp


def _search(server: ServerProcess, query: str) -> list[dict]:
    answer = server.get(f"/v1/events/search?{query}")
    assert answer.status == 200, answer.body
    return answer.json()["events"]


def _assert_healthy(server: ServerProcess) -> None:
    assert server.get("/healthz").status == 200
    assert server.get("/readyz").status == 200


def test_an_accepted_batch_is_stored_sanitized_and_readable_back(server: ServerProcess) -> None:
    events = wire_events(3, "search_performed", api_key="sk-proj-abcdefghijklmnop1234")
    batch_id = str(uuid.uuid4())
    answer = server.post_json(
        "/v1/events",
        {"batch_id": batch_id, "sequence": 1, "events": events},
        {"Idempotency-Key": batch_id},
    )
    assert answer.status == 200, answer.body
    ack = answer.json()
    assert (ack["batch_id"], ack["received"], ack["accepted"], ack["rejected"]) == (
        batch_id,
        3,
        3,
        0,
    )
    assert {e["id"] for e in events} <= stored_ids(server.db)
    found = _search(server, "event=search_performed&limit=10")
    assert sorted(e["id"] for e in found) == sorted(e["id"] for e in events)
    assert all(e["properties"]["api_key"] == "[REDACTED]" for e in found)
    detail = server.get(f"/v1/events/{events[0]['id']}")
    assert detail.status == 200 and detail.json()["properties"]["index"] == 0


def test_msgpack_gzip_and_a_bare_array_are_accepted(server: ServerProcess) -> None:
    events = wire_events(50, "tool_called")
    body = gzip.compress(msgspec.msgpack.encode(events))
    answer = server.request(
        "POST",
        "/v1/events",
        body,
        {"Content-Type": "application/msgpack", "Content-Encoding": "gzip"},
    )
    assert answer.status == 200, answer.body
    assert answer.json()["accepted"] == 50
    assert {e["id"] for e in events} <= stored_ids(server.db)


def test_a_retried_batch_is_stored_once_and_answered_the_same(server: ServerProcess) -> None:
    events = wire_events(4, "retried_event")
    key = str(uuid.uuid4())
    first = server.post_json("/v1/events", {"events": events}, {"Idempotency-Key": key})
    again = server.post_json("/v1/events", {"events": events}, {"Idempotency-Key": key})
    assert first.status == again.status == 200
    assert first.body == again.body
    other_key = server.post_json("/v1/events", {"events": events})
    assert other_key.json()["duplicates"] == 4
    assert len(_search(server, "event=retried_event")) == 4
    # The same key with another batch is refused, not answered as the first (which
    # would acknowledge events that were never stored).
    others = wire_events(2, "retried_event")
    reused = server.post_json("/v1/events", {"events": others}, {"Idempotency-Key": key})
    assert reused.status == 422, reused.body
    assert f"Idempotency-Key {key!r} was already used with another body" in reused.body.decode()
    assert not {e["id"] for e in others} & stored_ids(server.db)


def test_invalid_events_are_refused_whole_with_each_bad_path(server: ServerProcess) -> None:
    good, bad_time, bad_id = wire_events(3, "should_not_be_stored")
    bad_time["timestamp"] = 12
    bad_id["id"] = "not-a-uuid"
    missing = {"event_type": "feature_used"}
    answer = server.post_json("/v1/events", {"events": [good, bad_time, bad_id, missing]})
    assert answer.status == 422
    assert answer.headers["content-type"].startswith("application/problem+json")
    problem = answer.json()
    paths = {e["path"] for e in problem["errors"]}
    assert {"$.events[1].timestamp", "$.events[2].id", "$.events[3]"} <= paths
    assert "nothing was stored" in problem["detail"]
    assert good["id"] not in stored_ids(server.db)


def test_an_unknown_event_field_is_refused_with_a_suggestion(server: ServerProcess) -> None:
    """A typo (``userid``) would lose the user silently: the event is refused, named."""
    events = wire_events(2, "field_probe")
    events[1]["userid"] = "u9"
    answer = server.post_json("/v1/events", {"events": events})
    assert answer.status == 422, answer.body
    errors = answer.json()["errors"]
    assert [e["path"] for e in errors] == ["$.events[1]"]
    assert "unknown field `userid`" in errors[0]["message"]
    assert "did you mean `user_id`?" in errors[0]["message"]
    assert not {e["id"] for e in events} & stored_ids(server.db)


def test_partial_true_stores_the_valid_events_and_lists_the_rest(server: ServerProcess) -> None:
    good, bad = wire_events(2, "partially_stored")
    bad["priority"] = "urgent!"
    answer = server.post_json("/v1/events?partial=true", [good, bad])
    assert answer.status == 200
    ack = answer.json()
    assert (ack["accepted"], ack["rejected"]) == (1, 1)
    assert ack["errors"][0]["path"] == "$[1].priority"
    ids = stored_ids(server.db)
    assert good["id"] in ids and bad["id"] not in ids


def test_malformed_bodies_get_a_4xx_with_a_clear_message(server: ServerProcess) -> None:
    event = wire_events(1)[0]
    valid = json.dumps([event]).encode()
    cases = {
        "truncated": (valid[: len(valid) // 2], 400, "truncated"),
        "not json": (b"hello", 400, "not valid JSON"),
        "deep nesting": (b"[" * 100_000 + b"]" * 100_000, 400, "nested too deeply"),
        "wrong type": (b'{"events": 3}', 422, "$.events"),
        "bad utf-8": (
            json.dumps([dict(event, user_id="X")]).encode().replace(b'"X"', b'"\xff\xfe"'),
            400,
            "",
        ),
        "huge string": (
            json.dumps([dict(event, data={"note": "x" * 100_000})]).encode(),
            422,
            "max_string_length",
        ),
        "nested data": (
            json.dumps([dict(event, data={"a": json.loads("[" * 30 + "]" * 30)})]).encode(),
            422,
            "depth",
        ),
    }
    for name, (body, status, text) in cases.items():
        answer = server.request("POST", "/v1/events", body, {"Content-Type": "application/json"})
        assert answer.status == status, (name, answer.body[:300])
        problem = answer.json()
        assert problem["status"] == answer.status and problem["detail"], name
        assert text in answer.body.decode(), (name, problem)
        _assert_healthy(server)


def test_a_million_tiny_events_are_refused_by_count_not_by_memory(server: ServerProcess) -> None:
    body = b"[" + b",".join([b"{}"] * 1_000_000) + b"]"
    answer = server.request("POST", "/v1/events", body, {"Content-Type": "application/json"})
    assert answer.status == 413
    assert "max_batch_events" in answer.json()["detail"]
    _assert_healthy(server)


def test_oversize_bodies_and_gzip_bombs_get_413(server: ServerProcess) -> None:
    big = b"[" + b" " * (11 * 1024 * 1024) + b"]"
    answer = server.request("POST", "/v1/events", big, {"Content-Type": "application/json"})
    assert answer.status == 413
    bomb = gzip.compress(b"[" + b" " * (64 * 1024 * 1024) + b"]")
    assert len(bomb) < 200_000
    answer = server.request(
        "POST",
        "/v1/events",
        bomb,
        {"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert answer.status == 413
    assert "inflates past" in answer.json()["detail"]
    _assert_healthy(server)


def test_unsupported_media_types_and_encodings_get_415(server: ServerProcess) -> None:
    assert server.request("POST", "/v1/events", b"a,b", {"Content-Type": "text/csv"}).status == 415
    answer = server.request(
        "POST", "/v1/events", b"[]", {"Content-Type": "application/json", "Content-Encoding": "br"}
    )
    assert answer.status == 415
    bad_gzip = server.request(
        "POST",
        "/v1/events",
        b"\x1f\x8bnot gzip",
        {"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert bad_gzip.status == 400


def test_events_without_a_session_are_stored_without_one(server: ServerProcess) -> None:
    (event,) = wire_events(1, "sessionless")
    assert "session_id" not in event or event["session_id"] is None
    assert server.post_json("/v1/events", [event]).status == 200
    (found,) = _search(server, "event=sessionless")
    assert found["session_id"] is None


def test_a_large_batch_encoded_off_the_writer_is_stored_once_and_sanitized(
    server: ServerProcess,
) -> None:
    # Past 64 KiB a body is decoded, and its rows encoded, on a worker thread; the writer
    # only writes them. A repeat of the same events is counted as duplicates.
    events = wire_events(
        600, "large_batch_event", api_key="sk-proj-abcdefghijklmnop1234", note="x" * 120
    )
    body = json.dumps({"events": events}).encode()
    assert len(body) > 64 * 1024
    first = server.request("POST", "/v1/events", body, {"Content-Type": "application/json"})
    assert first.status == 200, first.body
    assert first.json()["accepted"] == 600 and first.json()["duplicates"] == 0
    again = server.request("POST", "/v1/events", body, {"Content-Type": "application/json"})
    assert again.status == 200 and again.json()["duplicates"] == 600
    assert {e["id"] for e in events} <= stored_ids(server.db)
    found = _search(server, "event=large_batch_event&limit=1000")
    assert len(found) == 600
    assert all(e["properties"]["api_key"] == "[REDACTED]" for e in found)


def test_event_names_count_exactly_the_range(server: ServerProcess) -> None:
    """``GET /v1/events/names`` counts each name in ``[start, end)``, most frequent first,
    whole days from the rollup and the edges' parts of days from the raw events;
    recomputed here from the raw rows of the store file."""
    now = dt.datetime.now(dt.UTC)
    events = wire_events(6, "names_probe_recent") + wire_events(3, "names_probe_old")
    ages = (0, 0.3, 1, 3.5, 29.9, 30.1, 3, 45, 2.5)
    for event, days in zip(events, ages, strict=True):
        moment = now - dt.timedelta(days=days)
        event["timestamp"] = moment.isoformat().replace("+00:00", "Z")
    answer = server.post_json("/v1/events", {"events": events})
    assert answer.status == 200, answer.body
    conn = sqlite3.connect(f"{server.db.as_uri()}?mode=ro", uri=True)

    def recount(lo: dt.datetime, hi: dt.datetime) -> dict[str, int]:
        return dict(
            conn.execute(
                "SELECT event_name, count(*) FROM analytics_events "
                "WHERE timestamp >= ? AND timestamp < ? GROUP BY 1",
                [format_timestamp(lo), format_timestamp(hi)],
            ).fetchall()
        )

    def iso(moment: dt.datetime) -> str:
        return moment.isoformat().replace("+00:00", "Z")

    try:
        ranges = [
            (now - dt.timedelta(days=30), None),  # the dashboard's: -30d to now
            (now - dt.timedelta(days=4, hours=5), now - dt.timedelta(days=2, hours=1)),
            (now - dt.timedelta(days=3, hours=13), now - dt.timedelta(days=3, hours=11)),
            (now - dt.timedelta(days=40), now - dt.timedelta(days=2)),
        ]
        for lo, hi in ranges:
            query = f"start={iso(lo)}" + ("" if hi is None else f"&end={iso(hi)}")
            names = server.get(f"/v1/events/names?{query}").json()
            expected = recount(lo, hi or dt.datetime.now(dt.UTC))
            assert {n["name"]: n["count"] for n in names} == expected, (lo, hi)
            counts = [n["count"] for n in names]
            assert counts == sorted(counts, reverse=True)
        assert recount(now - dt.timedelta(days=30), now)["names_probe_recent"] == 4  # not at now
    finally:
        conn.close()


def test_property_stats_take_numbers_or_labels_and_match_numpy(server: ServerProcess) -> None:
    """``GET /v1/properties/stats`` with its default percentiles (50,90,99), numbers or
    labels; each figure recomputed with numpy over the values sent."""
    import numpy as np

    rng = np.random.default_rng(4)
    latencies = [round(float(v), 3) for v in rng.lognormal(4, 0.8, 200)]
    events = wire_events(200, "stats_probe")
    for event, value in zip(events, latencies, strict=True):
        event["data"]["latency_ms"] = value
    assert server.post_json("/v1/events", {"events": events}).status == 200
    query = "/v1/properties/stats?event=stats_probe&property=latency_ms&start=-1h"
    default = server.get(query)
    assert default.status == 200, default.body
    numbers = server.get(query + "&percentiles=50,90,99").json()
    labels = server.get(query + "&percentiles=p50,p90,p99").json()
    figures = [
        {k: v for k, v in a.items() if k not in ("start", "end")} for a in (default.json(), numbers)
    ]
    assert (
        figures[0] == figures[1] == {k: v for k, v in labels.items() if k not in ("start", "end")}
    )
    assert numbers["count"] == 200
    assert numbers["sum"] == pytest.approx(sum(latencies))
    for label, q in (("p50", 50), ("p90", 90), ("p99", 99)):
        assert numbers["percentiles"][label] == pytest.approx(float(np.percentile(latencies, q)))
    bad = server.get(query + "&percentiles=fifty")
    assert bad.status == 400 and "'fifty' is not a percentile label" in bad.body.decode()


def test_a_stored_funnel_is_defined_reported_and_missing_ones_are_404(
    server: ServerProcess,
) -> None:
    now = dt.datetime.now(dt.UTC)
    events = []
    for user, names in (("fu1", ["fn_open", "fn_buy"]), ("fu2", ["fn_open"]), ("fu3", ["fn_buy"])):
        for offset, name in enumerate(names):
            (event,) = wire_events(1, name)
            event["user_id"] = user
            moment = now - dt.timedelta(minutes=10 - offset)
            event["timestamp"] = moment.isoformat().replace("+00:00", "Z")
            events.append(event)
    assert server.post_json("/v1/events", {"events": events}).status == 200
    steps = [{"event": "fn_open"}, {"event": "fn_buy"}]
    body = {"name": "open-buy", "steps": steps, "conversion_window": 3600}
    defined = server.post_json("/v1/funnels", body)
    assert defined.status == 201, defined.body
    report = server.get("/v1/funnels/open-buy/report?start=-1h").json()
    assert (report["entered"], report["completed"]) == (2, 1)
    assert [s["entered"] for s in report["steps"]] == [2, 1]
    missing = server.get("/v1/funnels/nope/report")
    assert missing.status == 404 and "no funnel named 'nope'" in missing.body.decode()
    slashed = server.post_json("/v1/funnels", {**body, "name": "a/b"})
    assert slashed.status == 400 and "has a '/'" in slashed.body.decode()


def test_a_bad_query_parameter_is_named_in_the_errors(server: ServerProcess) -> None:
    for query, parameter in (
        ("/v1/trends?event=x&start=-1d&end=-2d", "query.end"),
        ("/v1/trends?event=x&start=yesterday", "query.start"),
        ("/v1/events/search?cursor=bogus", "query.cursor"),
        ("/v1/events/search?where=%7B%22a%22", "query.where"),
        ("/v1/properties/stats?event=x&property=y&percentiles=fifty", "query.percentiles"),
    ):
        answer = server.get(query)
        assert answer.status == 400, (query, answer.body)
        assert [e["path"] for e in answer.json()["errors"]] == [parameter], query
