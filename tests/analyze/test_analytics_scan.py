"""The sliced scan behind property_stats and numeric trends: the numbers json.loads finds.

The reference reads the stored ``properties`` text with plain SQL and parses it with the
standard library's ``json``; it never calls the scan.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from analytics_fixtures import at, make_event
from bench import datagen
from bench.datagen import create_database, insert_rows, row_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tachimeter.analyze import PropertyFilter, property_stats
from tachimeter.analyze import scan as scan_module
from tachimeter.analyze.scan import keyed_numeric_values, numeric_values
from tachimeter.store.summaries import json_path, parse_property_path

START, END = at("2024-03-01"), at("2024-03-04")


def reference(
    conn: sqlite3.Connection, name: str, path: Sequence[str | int], lo: str, hi: str
) -> list[float]:
    """Every JSON number (not a boolean) at ``path`` of the named events in [lo, hi)."""
    out = []
    for (text,) in conn.execute(
        "SELECT properties FROM analytics_events WHERE event_name = ? AND timestamp >= ? "
        "AND timestamp < ?",
        [name, lo, hi],
    ):
        value = json.loads(text) if text is not None else None
        for segment in path:
            if isinstance(segment, int):
                ok = isinstance(value, list) and segment < len(value)
            else:
                ok = isinstance(value, dict) and segment in value
            if not ok:
                break
            value = value[segment]  # type: ignore[index]
        else:
            if type(value) in (int, float):
                out.append(float(value))
    return sorted(out)


def keyed_reference(
    conn: sqlite3.Connection, name: str, path: Sequence[str | int], lo: str, hi: str
) -> list[tuple[str, float]]:
    """:func:`reference` per event, paired with the event's UTC day."""
    out = []
    for (day,) in conn.execute(
        "SELECT DISTINCT substr(timestamp, 1, 10) FROM analytics_events WHERE timestamp >= ? "
        "AND timestamp < ?",
        [lo, hi],
    ):
        day_lo, day_hi = max(lo, f"{day}T00:00:00.000000Z"), min(hi, f"{day}T99")
        out += [(day, v) for v in reference(conn, name, path, day_lo, day_hi)]
    return sorted(out)


def keyed_scan(conn: sqlite3.Connection, path: str) -> list[tuple[str, float]]:
    segments = parse_property_path(path)
    pairs = keyed_numeric_values(
        conn,
        "substr(timestamp, 1, 10)",
        "event_name = ?",
        ["tool_invoked"],
        START,
        END,
        segments,
    )
    return sorted(pairs)


def scan(
    conn: sqlite3.Connection,
    name: str,
    path: str,
    lo: dt.datetime = START,
    hi: dt.datetime = END,
) -> list[float]:
    segments = parse_property_path(path)
    return numeric_values(conn, "event_name = ?", [name], lo, hi, segments)


AWKWARD: list[Any] = [
    {"v": 1},
    {"v": 2.5},
    {"v": -0.0},
    {"v": True},  # a boolean is not a number here
    {"v": False},
    {"v": "12"},  # nor is numeric text
    {"v": None},
    {"v": [3]},
    {"v": {"w": 4}},
    {"w": 5},
    {"v": 123456789012345678901234567890},
    {"v": 0.30000000000000004},
    {"v": 1e-300},
    {"n": {"w": 6, "list": [7, True, 8.5]}},
    {"n": {"w": "x", "list": []}},
    {"n": [1, 2]},
    {"é": 9, "v": 10},
    None,
]


def build(conn: sqlite3.Connection, props: list[Any], times: list[dt.datetime]) -> None:
    events = [make_event("tool_invoked", t, props=p) for p, t in zip(props, times, strict=True)]
    insert_rows(conn, [row_of(e, "2024-01-01T00:00:00.000000Z") for e in events])


def spread(n: int) -> list[dt.datetime]:
    """``n`` instants across [START, END], on and around the slice cuts (midnights)."""
    picks = [START, at("2024-03-02"), at("2024-03-03"), END, END - dt.timedelta(microseconds=1)]
    return [picks[i % len(picks)] + dt.timedelta(hours=7 * (i // len(picks))) for i in range(n)]


@pytest.fixture
def awkward_db(tmp_path: Path) -> sqlite3.Connection:
    conn = create_database(tmp_path / "awkward.db")
    build(conn, AWKWARD * 4, spread(len(AWKWARD) * 4))
    return conn


@pytest.mark.parametrize("path", ["v", "w", "n.w", "n.list[0]", "n.list[1]", "n.list[2]", '"é"'])
def test_values_equal_json_loads(awkward_db: sqlite3.Connection, path: str) -> None:
    """Numbers only (booleans, text, null, objects and arrays left out), at any depth,
    events on slice cuts counted once, the end excluded."""
    lo, hi = "2024-03-01T00:00:00.000000Z", "2024-03-04T00:00:00.000000Z"
    expected = reference(awkward_db, "tool_invoked", parse_property_path(path), lo, hi)
    assert scan(awkward_db, "tool_invoked", path) == expected
    # The statement the scan replaced selects the same values.
    jp = json_path(parse_property_path(path))
    old = awkward_db.execute(
        "SELECT json_extract(properties, ?) AS v FROM analytics_events WHERE event_name = ? "
        "AND timestamp >= ? AND timestamp < ? AND json_type(properties, ?) IN ('integer', "
        "'real') ORDER BY v",
        [jp, "tool_invoked", lo, hi, jp],
    ).fetchall()
    assert [float(v) for (v,) in old] == expected


@pytest.mark.parametrize("path", ["v", "n.list[2]"])
def test_keyed_values_pair_each_number_with_its_key(
    awkward_db: sqlite3.Connection, path: str
) -> None:
    """Keyed by the UTC day (as trends key by bucket), struct and nested paths alike."""
    lo, hi = "2024-03-01T00:00:00.000000Z", "2024-03-04T00:00:00.000000Z"
    want = keyed_reference(awkward_db, "tool_invoked", parse_property_path(path), lo, hi)
    assert keyed_scan(awkward_db, path) == want


def test_every_reader_gives_the_same_answer(awkward_db: sqlite3.Connection) -> None:
    """Two connections (a file, outside a transaction), the caller's alone (inside one,
    where its own uncommitted rows count) and a memory database agree."""
    two = scan(awkward_db, "tool_invoked", "v")
    awkward_db.execute("BEGIN")
    try:
        assert scan(awkward_db, "tool_invoked", "v") == two
        late = make_event("tool_invoked", "2024-03-02 12:00", props={"v": 99})
        awkward_db.execute(datagen._INSERT, row_of(late, "2024-01-01T00:00:00.000000Z"))
        assert scan(awkward_db, "tool_invoked", "v") == sorted([*two, 99.0])
    finally:
        awkward_db.execute("ROLLBACK")
    memory = sqlite3.connect(":memory:")
    awkward_db.backup(memory)
    assert scan(memory, "tool_invoked", "v") == two


def test_out_of_range_numbers_and_the_string_limit_fall_back(tmp_path: Path) -> None:
    """A number msgspec refuses (1e400) and a slice beyond SQLite's string limit are read
    row by row with SQLite's JSON functions, a document that is not an object as it is:
    nothing is lost."""
    conn = create_database(tmp_path / "odd.db")
    props: list[Any] = [{"v": "placeholder" if i == 3 else i} for i in range(40)]
    props.append({"v": "an array"})
    times = [START + dt.timedelta(minutes=97 * i) for i in range(41)]
    build(conn, props, times)
    conn.execute(
        "UPDATE analytics_events SET properties = '{\"v\": 1e400}' "
        "WHERE properties LIKE '%placeholder%'"
    )
    # A document that is not an object has no keys: read, and left out.
    conn.execute(
        "UPDATE analytics_events SET properties = '[1, 2]' WHERE properties LIKE '%array%'"
    )
    expected = sorted([float(i) for i in range(40) if i != 3] + [float("inf")])
    conn.commit()
    assert scan(conn, "tool_invoked", "v") == expected
    lo, hi = "2024-03-01T00:00:00.000000Z", "2024-03-04T00:00:00.000000Z"
    keyed = keyed_scan(conn, "v")
    assert sorted(v for _, v in keyed) == expected
    assert keyed == keyed_reference(conn, "tool_invoked", ["v"], lo, hi)
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 200)  # every slice's array is too long now
    conn.execute("BEGIN")  # the caller's connection reads every slice
    try:
        assert scan(conn, "tool_invoked", "v") == expected
        assert keyed_scan(conn, "v") == keyed
    finally:
        conn.execute("ROLLBACK")


def test_property_stats_filters_and_long_ranges(tmp_path: Path) -> None:
    """Property filters stay in SQL; a range longer than the slice cap still reads all."""
    conn = create_database(tmp_path / "long.db")
    times = [at("2020-01-01") + dt.timedelta(days=37 * i, hours=i % 24) for i in range(120)]
    build(conn, [{"v": i, "ok": i % 3 == 0} for i in range(120)], times)
    conn.commit()
    stats = property_stats(
        conn,
        "tool_invoked",
        "v",
        start=at("2019-01-01"),
        end=at("2035-01-01"),
        where=[PropertyFilter("ok", "eq", True)],
    )
    values = [float(i) for i in range(120) if i % 3 == 0]
    assert (stats.count, stats.sum, stats.min, stats.max) == (40, sum(values), 0.0, 117.0)


def test_an_error_in_a_slice_is_the_callers(awkward_db: sqlite3.Connection) -> None:
    """A failing statement raises (on either connection); the worker is waited for."""
    with pytest.raises(sqlite3.OperationalError, match="no such column"):
        numeric_values(awkward_db, "nope = ?", [1], START, END, ("v",))
    assert scan(awkward_db, "tool_invoked", "v")  # the worker is free for the next scan


json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from("vwn"), inner),
    max_leaves=6,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    docs=st.lists(st.dictionaries(st.sampled_from("vwn"), json_value, max_size=3), max_size=25),
    path=st.sampled_from(["v", "v.w", "v[0]", "n[1].v", "w[0][0]"]),
)
def test_any_properties(docs: list[dict[str, Any]], path: str) -> None:
    """Random JSON properties on random instants: the scan equals json.loads."""
    with tempfile.TemporaryDirectory() as tmp:
        conn = create_database(Path(tmp) / "p.db")
        try:
            build(conn, docs, spread(len(docs)))
            conn.commit()
            lo, hi = "2024-03-01T00:00:00.000000Z", "2024-03-04T00:00:00.000000Z"
            expected = reference(conn, "tool_invoked", parse_property_path(path), lo, hi)
            assert scan(conn, "tool_invoked", path) == expected
        finally:
            conn.close()


def test_a_sibling_that_cannot_open_leaves_every_slice_to_the_caller(
    awkward_db: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the second connection cannot open (say, a read-only directory without the WAL
    index), or fails on a slice, the caller's connection reads everything."""
    both = scan(awkward_db, "tool_invoked", "v")
    keyed = keyed_scan(awkward_db, "v")

    def refuse(file: str) -> sqlite3.Connection:
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(scan_module, "_open_sibling", refuse)
    assert scan(awkward_db, "tool_invoked", "v") == both

    def empty(file: str) -> sqlite3.Connection:  # opens, then fails at the first slice
        return sqlite3.connect(":memory:", check_same_thread=False)

    monkeypatch.setattr(scan_module, "_open_sibling", empty)
    assert scan(awkward_db, "tool_invoked", "v") == both
    assert keyed_scan(awkward_db, "v") == keyed


def test_concurrent_scans_do_not_wait_for_each_other(awkward_db: sqlite3.Connection) -> None:
    """Scans from several threads at once (a server's readers) all answer, each the same."""
    path = awkward_db.execute("PRAGMA database_list").fetchone()[2]
    expected = scan(awkward_db, "tool_invoked", "v")

    def one(_: int) -> list[float]:
        conn = sqlite3.connect(path)
        try:
            return scan(conn, "tool_invoked", "v")
        finally:
            conn.close()

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(one, range(16))) == [expected] * 16


def test_a_forked_child_scans_with_a_pool_of_its_own(awkward_db: sqlite3.Connection) -> None:
    """After fork the parent's worker thread is gone; the child's scans still answer."""
    expected = scan(awkward_db, "tool_invoked", "v")  # the parent's pool exists now
    path = awkward_db.execute("PRAGMA database_list").fetchone()[2]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        code = 1
        try:
            conn = sqlite3.connect(path)
            code = 0 if scan(conn, "tool_invoked", "v") == expected else 2
        finally:
            os.write(write, bytes([code]))
            os._exit(0)
    os.close(write)
    try:
        assert os.read(read, 1) == b"\x00"
    finally:
        os.close(read)
        os.waitpid(pid, 0)
