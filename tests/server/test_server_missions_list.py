"""GET /v1/missions against a real server: the listing of ``list_missions`` in the route's
shape, compared with the ``missions`` table read directly."""

from __future__ import annotations

import json
import sqlite3
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from serving import ServerProcess

from tachimeter.cli.demo import seed_store

FIELDS = {
    "mission_id",
    "status",
    "backend",
    "model",
    "tags",
    "created_at",
    "ended_at",
    "execution_time_ms",
    "step_count",
    "tool_calls",
    "total_tokens",
    "total_cost",
    "error_message",
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server over the demo store: 30 days of missions on two backends, some failed."""
    db = tmp_path_factory.mktemp("missions") / "analytics.db"
    seed_store(str(db), events=500, missions=150, seed=5)
    process = ServerProcess(db, {"rate_limit_per_second": 0})
    try:
        yield process
    finally:
        process.stop()


def _table(db: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute("SELECT * FROM missions").fetchall()
    finally:
        conn.close()
    return [dict(r) for r in rows]


def _expected(rows: list[dict[str, Any]], since: str, **wanted: set[str]) -> list[dict[str, Any]]:
    """The route's answer worked out in Python: filter, newest first, its fields."""
    chosen = []
    for r in sorted(rows, key=lambda r: (r["created_at"], r["mission_key"]), reverse=True):
        tags = json.loads(r["tags"] or "[]")
        if r["created_at"] < since:
            continue
        if any(r[k] not in v for k, v in wanted.items() if k != "tag"):
            continue
        if "tag" in wanted and not wanted["tag"] & set(tags):
            continue
        chosen.append({**{k: r[k] for k in FIELDS - {"tags"}}, "tags": tags})
    return chosen


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"status": "failed"},
        {"status": "completed,cancelled", "backend": "openai"},
        {"tag": "refactor,docs", "start": "<the median creation>"},
        {"model": "gpt-4o-mini", "limit": "7"},
    ],
)
def test_listing_equals_the_missions_table(served: ServerProcess, query: dict[str, str]) -> None:
    table = _table(served.db)
    query = dict(query)
    if query.get("start") == "<the median creation>":
        query["start"] = sorted(r["created_at"] for r in table)[len(table) // 2]
    # Every mission was created in the last 30 days (the route's default range).
    since = query.get("start", "")
    answer = served.get("/v1/missions?" + urllib.parse.urlencode({"limit": "1000", **query}))
    assert answer.status == 200, answer.body
    got = answer.json()
    assert all(set(m) == FIELDS for m in got)
    wanted = {
        k: set(query[k].split(",")) for k in ("status", "backend", "model", "tag") if k in query
    }
    expected = _expected(table, since, **wanted)[: int(query.get("limit", "1000"))]
    assert got, "the case should list some missions"
    assert got == expected
    if query.get("status") == "failed":
        assert all(m["error_message"] for m in got)


def test_a_bad_status_is_a_problem_naming_the_statuses(served: ServerProcess) -> None:
    answer = served.get("/v1/missions?status=exploded")
    assert answer.status == 400, answer.body
    assert "completed" in answer.body.decode()
