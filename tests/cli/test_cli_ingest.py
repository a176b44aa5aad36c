"""``tachimeter ingest``: JSON lines and CSV into a real store, validated and scrubbed as
the server does, rejected lines named by number; the demo's output round-trips."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tachimeter.cli import app
from tachimeter.model import EventBuilder
from tachimeter.model.codec import event_to_builtins

runner = CliRunner()
T0 = dt.datetime(2024, 3, 1, 9, 30, tzinfo=dt.UTC)
SECRET = "sk-ant-api03-" + "a1B2c3D4e5" * 4


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No tachimeter.toml or TACHIMETER_* variable of the machine leaks into a test."""
    for name in [n for n in os.environ if n.startswith("TACHIMETER_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def _events(count: int, seed: int) -> list[dict[str, Any]]:
    """Wire dicts of ``count`` seeded events over ten days from ``T0``."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        name = rng.choice(["feature_used", "tool_invoked", "search_performed"])
        when = T0 + dt.timedelta(seconds=rng.randrange(10 * 86_400))
        event = (
            EventBuilder.track(name)
            .user_id(f"user-{rng.randrange(20)}")
            .timestamp(when)
            .property("n", i)
            .property("tool", rng.choice(["shell", "search"]))
            .build()
        )
        out.append(event_to_builtins(event))
    return out


def _name(wire: dict[str, Any]) -> str:
    kind = wire["event_type"]
    return kind if isinstance(kind, str) else kind["custom"]


def _write_jsonl(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


def _rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_jsonl_with_bad_lines_stores_the_good_ones_and_names_the_bad_by_line(
    tmp_path: Path,
) -> None:
    good = _events(30, seed=1)
    lines = [json.dumps(e) for e in good]
    future = dict(
        good[3], id="01890000-0000-7000-8000-000000000001", timestamp="2999-01-01T00:00:00Z"
    )
    missing_id = {k: v for k, v in good[4].items() if k != "id"}
    bad_type = dict(good[5], id="01890000-0000-7000-8000-000000000002", priority="urgent")
    lines[4:4] = [json.dumps(future)]  # line 5
    lines[9:9] = ["{not json"]  # line 10
    lines[14:14] = [""]  # line 15: blank, skipped
    lines[16:16] = [json.dumps(missing_id)]  # line 17
    lines[20:20] = [json.dumps(bad_type) + "," + json.dumps(good[6])]  # line 21
    lines[24:24] = [json.dumps(dict(bad_type, timestamp="yesterday"))]  # line 25
    # Valid RFC 3339, but before the epoch: once an OverflowError that lost the batch.
    ancient = dict(good[7], id="01890000-0000-7000-8000-000000000003")
    lines[27:27] = [json.dumps(dict(ancient, timestamp="0001-01-01T00:00:00Z"))]  # line 28
    source = tmp_path / "events.jsonl"
    _write_jsonl(source, lines)
    db = tmp_path / "a.db"

    result = runner.invoke(app, ["ingest", str(source), "--store", str(db)])

    assert result.exit_code == 1, result.output
    reported = [line for line in result.stderr.splitlines() if line.startswith("line ")]
    assert [line.split(":")[0] for line in reported] == [
        "line 5",
        "line 10",
        "line 17",
        "line 21",
        "line 25",
        "line 28",
    ]
    assert reported[0].startswith("line 5: $.timestamp: ") and "future" in reported[0]
    assert reported[1].startswith("line 10: not valid JSON")
    assert "missing required field `id`" in reported[2]
    assert "one JSON value" in reported[3]
    assert reported[4].startswith("line 25: $.timestamp: ")
    assert reported[5].startswith("line 28: $.timestamp: 0001-01-01T00:00:00+00:00 is before")
    assert "read 36, stored 30, duplicates 0, rejected 6" in result.stdout
    assert "--allow-rejects" in result.stderr
    stored = {r[0] for r in _rows(db, "SELECT id FROM analytics_events")}
    assert stored == {e["id"] for e in good}


def test_allow_rejects_exits_zero_and_a_second_ingest_stores_nothing_twice(tmp_path: Path) -> None:
    good = _events(12, seed=2)
    source = tmp_path / "events.jsonl"
    _write_jsonl(source, [json.dumps(e) for e in good] + ['{"id": 1}'])
    db = tmp_path / "a.db"
    first = runner.invoke(app, ["ingest", str(source), "--store", str(db), "--allow-rejects"])
    assert first.exit_code == 0, first.output
    assert "stored 12, duplicates 0, rejected 1" in first.stdout
    again = runner.invoke(app, ["ingest", str(source), "--db", str(db), "--allow-rejects"])
    assert again.exit_code == 0, again.output
    assert "read 13, stored 0, duplicates 12, rejected 1" in again.stdout


def test_events_are_scrubbed_and_the_summaries_follow(tmp_path: Path) -> None:
    events = _events(200, seed=3)
    events[0]["data"]["note"] = f"retry with key={SECRET}"
    source = tmp_path / "events.jsonl"
    _write_jsonl(source, [json.dumps(e) for e in events])
    db = tmp_path / "a.db"
    result = runner.invoke(app, ["ingest", str(source), "--store", str(db), "--batch-size", "7"])
    assert result.exit_code == 0, result.output
    text = _rows(db, f"SELECT properties FROM analytics_events WHERE id = '{events[0]['id']}'")
    assert SECRET not in text[0][0] and "REDACTED" in text[0][0]
    expected = Counter((e["timestamp"][:10], _name(e)) for e in events)
    daily = _rows(db, "SELECT date, event_name, event_count FROM analytics_daily_counts")
    assert {(d, n): c for d, n, c in daily} == dict(expected)


CSV_TEXT = """event,timestamp,user_id,session_id,properties,prop.duration_ms,prop.model,prop.ok
tool_invoked,2024-03-01T10:00:00Z,u1,s1,"{""tool"": ""shell""}",120,gpt-4o,true
tool_invoked,2024-03-01T10:00:05+02:00,u2,,,80.5,o3,false
search_performed,1709287200,u1,s1,"{""query"": ""q""}",,"claude
sonnet",
tool_invoked,2024-03-01T11:00:00Z,u3,,not json,1,x,true
,2024-03-01T11:00:00Z,u3,,,1,x,true
tool_invoked,2024-03-01T12:00:00Z,u3
feature_used,not a time,u4,,,,,
Feature Used,2024-03-01T12:00:00Z,u4,,,,,
feature_used,2024-03-01T13:00:00Z,u5,,"{""feature"": ""search""}",007,,null
"""


def test_csv_maps_columns_and_names_bad_rows_by_their_first_line(tmp_path: Path) -> None:
    source = tmp_path / "events.csv"
    source.write_text(CSV_TEXT)
    db = tmp_path / "a.db"
    result = runner.invoke(app, ["ingest", str(source), "--store", str(db)])
    assert result.exit_code == 1, result.output
    reported = [line for line in result.stderr.splitlines() if line.startswith("line ")]
    assert [line.split(":")[0] for line in reported] == [
        "line 6",
        "line 7",
        "line 8",
        "line 9",
        "line 10",
    ]
    assert "properties: not valid JSON" in reported[0]
    assert "event name is empty" in reported[1]
    assert "has 3 cells, the header has 8" in reported[2]
    assert reported[3].startswith("line 9: $.timestamp")
    assert "Feature Used" in reported[4]
    assert "read 9, stored 4, duplicates 0, rejected 5" in result.stdout
    rows = _rows(
        db,
        "SELECT event_name, timestamp, user_id, session_id, properties FROM analytics_events "
        "ORDER BY timestamp, event_name",
    )
    decoded = [(n, t, u, s, json.loads(p) if p else None) for n, t, u, s, p in rows]
    assert decoded == [
        (
            "tool_invoked",
            "2024-03-01T08:00:05.000000Z",
            "u2",
            None,
            {"duration_ms": 80.5, "model": "o3", "ok": False},
        ),
        (
            "search_performed",
            "2024-03-01T10:00:00.000000Z",
            "u1",
            "s1",
            {"query": "q", "model": "claude\nsonnet"},
        ),
        (
            "tool_invoked",
            "2024-03-01T10:00:00.000000Z",
            "u1",
            "s1",
            {"tool": "shell", "duration_ms": 120, "model": "gpt-4o", "ok": True},
        ),
        (
            "feature_used",
            "2024-03-01T13:00:00.000000Z",
            "u5",
            None,
            {"feature": "search", "duration_ms": "007", "ok": None},
        ),
    ]
    ids = [r[0] for r in _rows(db, "SELECT id FROM analytics_events")]
    assert all(len(i) == 36 and i[14] == "7" for i in ids)  # derived ids are UUIDv7
    again = runner.invoke(app, ["ingest", str(source), "--store", str(db), "--allow-rejects"])
    assert "stored 0, duplicates 4, rejected 5" in again.stdout


def test_csv_header_with_an_unknown_column_is_refused_before_reading(tmp_path: Path) -> None:
    source = tmp_path / "events.csv"
    source.write_text("event,timestamp,duration\nx,2024-03-01T00:00:00Z,1\n")
    result = runner.invoke(app, ["ingest", str(source), "--store", str(tmp_path / "a.db")])
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("error: CSV header: unknown column 'duration'")
    assert "prop.duration" in result.stderr
    source.write_text("event;timestamp\nx;2024-03-01T00:00:00Z\n")
    semicolons = runner.invoke(app, ["ingest", str(source), "--store", str(tmp_path / "a.db")])
    assert semicolons.exit_code == 2
    assert "the file looks separated by ';'" in semicolons.stderr


def test_stdin_is_read_as_json_lines(tmp_path: Path) -> None:
    events = _events(25, seed=4)
    body = "\n".join(json.dumps(e) for e in events) + "\nnull\n"
    db = tmp_path / "a.db"
    result = runner.invoke(app, ["ingest", "-", "--store", str(db)], input=body.encode())
    assert result.exit_code == 1, result.output
    assert "line 26: $: Expected `object`, got `null`" in result.stderr
    assert "read 26, stored 25, duplicates 0, rejected 1" in result.stdout
    assert _rows(db, "SELECT count(*) FROM analytics_events") == [(25,)]


def test_unknown_extension_and_missing_file_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "events.txt").write_text("")
    unknown = runner.invoke(app, ["ingest", str(tmp_path / "events.txt")])
    assert unknown.exit_code == 2
    assert unknown.stderr.startswith("error: cannot tell the format of")
    missing = runner.invoke(
        app, ["ingest", str(tmp_path / "nope.jsonl"), "--store", str(tmp_path / "a.db")]
    )
    assert missing.exit_code == 2
    assert missing.stderr.startswith("error: cannot read")


def test_demo_output_round_trips_through_the_console_script(tmp_path: Path) -> None:
    """demo --out, then ingest, then query events: as many events as valid lines."""
    script = Path(sys.executable).with_name("tachimeter")
    out = tmp_path / "demo.jsonl"
    db = tmp_path / "round.db"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(script), *args], capture_output=True, text=True, timeout=300, cwd=tmp_path
        )

    demo = run("demo", "--events", "1500", "--out", str(out))
    assert demo.returncode == 0, demo.stderr
    lines = [line for line in out.read_text().splitlines() if line.strip()]
    assert len(lines) > 1000
    ingested = run("ingest", str(out), "--store", str(db))
    assert ingested.returncode == 0, ingested.stderr
    assert (
        f"read {len(lines):,}, stored {len(lines):,}, duplicates 0, rejected 0" in ingested.stdout
    )
    counted = run("query", "events", "--count", "--store", str(db), "--format", "json")
    assert counted.returncode == 0, counted.stderr
    assert json.loads(counted.stdout) == {"events": len(lines)}
    by_name = Counter(_name(json.loads(line)) for line in lines)
    sql = run(
        "query",
        "sql",
        "SELECT event_name, count(*) AS n FROM analytics_events GROUP BY 1",
        "--store",
        str(db),
        "--format",
        "csv",
    )
    assert sql.returncode == 0, sql.stderr
    rows = sql.stdout.splitlines()
    assert rows[0] == "event_name,n"
    assert {r.split(",")[0]: int(r.split(",")[1]) for r in rows[1:]} == dict(by_name)


def test_csv_with_a_bad_byte_rejects_only_its_record(tmp_path: Path) -> None:
    """A byte that is not UTF-8 costs its own record (here inside a quoted cell spanning
    two lines), not the file; a byte-order mark and CRLF line ends are fine."""
    source = tmp_path / "events.csv"
    source.write_bytes(
        b"\xef\xbb\xbfevent,timestamp,user_id\r\n"
        b"csv_one,2024-03-01T10:00:00Z,u1\r\n"
        b'csv_two,2024-03-01T10:00:01Z,"bad\r\n\xff\xfe"\r\n'
        b"csv_three,2024-03-01T10:00:02Z,u3\r\n"
    )
    db = tmp_path / "a.db"
    result = runner.invoke(app, ["ingest", str(source), "--store", str(db)])
    assert result.exit_code == 1, result.output
    reported = [line for line in result.stderr.splitlines() if line.startswith("line ")]
    assert reported == ["line 3: not valid UTF-8 (byte 0: invalid start byte)"]
    assert "read 3, stored 2, duplicates 0, rejected 1" in result.stdout
    names = [r[0] for r in _rows(db, "SELECT event_name FROM analytics_events ORDER BY 1")]
    assert names == ["csv_one", "csv_three"]


def test_csv_header_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "events.csv"
    source.write_bytes(b"event,times\xfftamp\nx,2024-03-01T00:00:00Z\n")
    result = runner.invoke(app, ["ingest", str(source), "--store", str(tmp_path / "a.db")])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: CSV header: not valid UTF-8 (byte 11: ")


def test_csv_dates_alone_are_midnight_and_milliseconds_get_a_hint(tmp_path: Path) -> None:
    source = tmp_path / "events.csv"
    source.write_text(
        "event,timestamp,user_id\n"
        "csv_day,2024-03-01,u1\n"
        "csv_seconds,1709251200,u2\n"
        "csv_millis,1709251200000,u3\n"
    )
    db = tmp_path / "a.db"
    result = runner.invoke(app, ["ingest", str(source), "--store", str(db)])
    assert result.exit_code == 1, result.output
    reported = [line for line in result.stderr.splitlines() if line.startswith("line ")]
    assert reported == [
        "line 4: timestamp: '1709251200000' is out of range as Unix seconds; milliseconds "
        "since the epoch? write seconds (divide by 1000)"
    ]
    stored = _rows(db, "SELECT event_name, timestamp FROM analytics_events ORDER BY 1")
    assert stored == [
        ("csv_day", "2024-03-01T00:00:00.000000Z"),
        ("csv_seconds", "2024-03-01T00:00:00.000000Z"),
    ]
