"""CSV round trip: ``tachimeter export --what events --format csv``, then ``tachimeter
ingest`` into a fresh store, gives the same ``analytics_events`` rows (same ids, so
ingesting again stores nothing); the CSV mapping's rules for the export's columns."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from report_world import START, fill_store
from typer.testing import CliRunner

from tachimeter.cli import app
from tachimeter.defaults import default_projections
from tachimeter.model.data import CustomData, EventMetadata, UsageEventData
from tachimeter.model.event_types import (
    EventPriority,
    EventType,
    event_type_from_name,
)
from tachimeter.model.events import AnalyticsEvent
from tachimeter.model.ids import uuid7_from_ns
from tachimeter.model.timestamps import to_ns
from tachimeter.store.sqlite import SQLiteStore

runner = CliRunner()

# Every column but received_at (when the row was written, different in each store).
COLUMNS = (
    "id, event_type, event_name, timestamp, session_id, user_id, properties, context, "
    "page_url, referrer, category, priority, mission_id"
)
AWKWARD = 'comma, "quote", new\nline, tab\t, é ✓'


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No tachimeter.toml or TACHIMETER_* variable of the machine leaks into a test."""
    for name in [n for n in os.environ if n.startswith("TACHIMETER_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def _odd_events() -> list[AnalyticsEvent]:
    """Events the report world has none of: page and identify calls, custom and empty
    data, an empty object, metadata (named and custom), a mission named in the metadata
    or by an integer, an assigned session, every priority."""
    base = to_ns(START) + 3_600 * 10**9
    metadata = EventMetadata(app_version="2.1.0", os="linux", arch="x86_64", locale="fr_FR")
    specs: list[dict[str, Any]] = [
        {
            "event_type": EventType.FEATURE_USED,
            "call": "page",
            "page_url": "https://example.test/settings?a=1,b=2",
            "referrer": "https://example.test/",
            "data": {"feature": "settings", "nested": {"list": [1, 2.5, None, "x"]}},
            "metadata": metadata.with_custom("note", AWKWARD),
            "priority": EventPriority.HIGH,
        },
        {"event_type": event_type_from_name("profile_updated"), "call": "identify"},
        {"event_type": EventType.TOOL_INVOKED, "data": CustomData([1, "two", {"x": None}])},
        {"event_type": EventType.TOOL_INVOKED, "data": CustomData("just text, " + AWKWARD)},
        {"event_type": event_type_from_name("search_performed"), "data": {}},
        {
            "event_type": EventType.TOOL_INVOKED,
            "data": {"tool": "shell"},
            "metadata": EventMetadata(timezone_offset=-300).with_custom("mission_id", "m-meta"),
            "session_assigned": True,
            "priority": EventPriority.LOW,
        },
        {
            "event_type": EventType.FEATURE_USED,
            "data": UsageEventData(
                feature="chat", action="run", success=False, extra={"mission_id": 42}
            ),
            "priority": EventPriority.CRITICAL,
        },
    ]
    events = []
    for i, spec in enumerate(specs):
        ns = base + i * 1_234_567_891
        kind = spec["event_type"]
        events.append(
            AnalyticsEvent(
                id=uuid7_from_ns(ns),
                category=kind.category(),
                timestamp=dt.datetime.fromtimestamp(ns / 1e9, dt.UTC),
                user_id=f"odd-{i}",
                session_id=None if i % 3 == 0 else f"odd-session-{i}",
                **spec,
            )
        )
    return events


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """The report world's store plus the odd events; returns it and the odd events' ids."""
    path = fill_store(tmp_path_factory.mktemp("roundtrip") / "source.db")
    odd = _odd_events()
    with SQLiteStore(path) as store:
        assert store.write_batch(odd, projections=default_projections()).inserted == len(odd)
    return path, [str(e.id) for e in odd]


def _rows(path: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"SELECT {COLUMNS} FROM analytics_events ORDER BY id").fetchall()
    finally:
        conn.close()


def _invoke(*args: str) -> Any:
    return runner.invoke(app, list(args))


def test_exported_csv_ingests_into_a_fresh_store_as_the_same_rows(
    source: tuple[Path, list[str]], tmp_path: Path
) -> None:
    path, odd_ids = source
    out = tmp_path / "events.csv"
    exported = _invoke("export", "--what", "events", "--format", "csv", "--store", str(path),
                       "-o", str(out))  # fmt: skip
    assert exported.exit_code == 0, exported.output
    copy = tmp_path / "copy.db"
    ingested = _invoke("ingest", str(out), "--store", str(copy), "--quiet")
    assert ingested.exit_code == 0, ingested.output
    original, copied = _rows(path), _rows(copy)
    count = len(original)
    assert f"read {count:,}, stored {count:,}, duplicates 0, rejected 0" in ingested.stdout
    assert [r[0] for r in copied] == [r[0] for r in original]  # same ids
    # Equal to the byte, JSON columns included: an integer value of a business payload
    # (3573 tokens) stays an integer through export and ingest.
    assert copied == original
    assert any(re.search(r'"value":\d+[,}]', r[6] or "") for r in original)
    odd = set(odd_ids)
    kinds = {(r[1], json.loads(r[7])["data_kind"], r[12]) for r in original if r[0] in odd}
    assert {"page", "identify"} <= {k[0] for k in kinds}
    assert {"custom", "empty", "key_value", "usage"} <= {k[1] for k in kinds}
    assert {"m-meta", "42"} <= {k[2] for k in kinds}
    # Ingesting the same file again is harmless: every event is already there.
    again = _invoke("ingest", str(out), "--store", str(copy), "--quiet")
    assert again.exit_code == 0, again.output
    assert f"stored 0, duplicates {count:,}, rejected 0" in again.stdout
    assert _rows(copy) == copied


def _ingest_csv(tmp_path: Path, text: str, *extra: str) -> tuple[Any, Path]:
    source = tmp_path / "in.csv"
    source.write_text(text, encoding="utf-8")
    db = tmp_path / "in.db"
    return _invoke("ingest", str(source), "--store", str(db), "--quiet", *extra), db


def _stored(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_event_type_alone_still_names_the_event(tmp_path: Path) -> None:
    """The mapping documented before the export's columns: event_type is the name."""
    done, db = _ingest_csv(
        tmp_path, "event_type,timestamp,call\nsignup,2024-03-01T00:00:00Z,page\n"
    )
    assert done.exit_code == 0, done.output
    assert _stored(db, "SELECT event_type, event_name FROM analytics_events") == [
        ("page", "signup")
    ]


def test_next_to_event_name_event_type_is_the_call_kind(tmp_path: Path) -> None:
    text = "event_name,event_type,timestamp\nsignup,identify,2024-03-01T00:00:00Z\n"
    done, db = _ingest_csv(tmp_path, text)
    assert done.exit_code == 0, done.output
    assert _stored(db, "SELECT event_type, event_name FROM analytics_events") == [
        ("identify", "signup")
    ]


def test_the_call_kind_in_two_columns_is_refused_before_reading(tmp_path: Path) -> None:
    text = "event_name,event_type,call,timestamp\nsignup,track,page,2024-03-01T00:00:00Z\n"
    done, _ = _ingest_csv(tmp_path, text)
    assert done.exit_code == 2
    assert done.stderr.startswith("error: CSV header: the call kind is in two columns")


def test_the_mission_id_cell_is_used_only_when_the_event_names_none(tmp_path: Path) -> None:
    text = (
        "event,timestamp,properties,mission_id\n"
        'tool_invoked,2024-03-01T00:00:00Z,"{""mission_id"": ""m-prop""}",m-cell\n'
        "tool_invoked,2024-03-01T00:00:01Z,,m-cell\n"
    )
    done, db = _ingest_csv(tmp_path, text)
    assert done.exit_code == 0, done.output
    rows = _stored(db, "SELECT mission_id, context FROM analytics_events ORDER BY timestamp")
    assert [r[0] for r in rows] == ["m-prop", "m-cell"]
    assert "mission_id" not in json.loads(rows[0][1])
    assert json.loads(rows[1][1])["mission_id"] == "m-cell"


def test_bad_context_and_properties_cells_are_rejected_by_line(tmp_path: Path) -> None:
    text = (
        "event,timestamp,context,properties,prop.n\n"
        "a_event,2024-03-01T00:00:00Z,{nope,,\n"
        "a_event,2024-03-01T00:00:00Z,[1],,\n"
        "a_event,2024-03-01T00:00:00Z,,[1],2\n"
        'a_event,2024-03-01T00:00:00Z,"{""priority"": ""urgent""}",,\n'
        "a_event,2024-03-01T00:00:00Z,,[1],\n"
    )
    done, db = _ingest_csv(tmp_path, text)
    assert done.exit_code == 1
    reported = [line for line in done.stderr.splitlines() if line.startswith("line ")]
    assert reported[0].startswith("line 2: context: not valid JSON")
    assert reported[1] == "line 3: context: must be a JSON object, got list"
    assert reported[2].startswith("line 4: properties: must be a JSON object for prop.<key>")
    assert reported[3].startswith("line 5: $.priority")
    assert len(reported) == 4
    # A JSON value that is not an object, with no prop.<key> cell, is custom data.
    assert _stored(db, "SELECT properties, json_extract(context, '$.data_kind') "
                       "FROM analytics_events") == [("[1]", "custom")]  # fmt: skip
