"""execute_rows: the same table as executemany, in a few multi-row statements."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tachimeter.store.bulk import _sizes, execute_rows

_SCHEMA = "CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER, note TEXT, x REAL)"
_STATEMENTS = [
    "INSERT OR REPLACE INTO t (k, n, note, x) VALUES (?, ?, ?, ?)",
    "INSERT INTO t (k, n, note, x) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (k) DO UPDATE SET n = n + excluded.n, note = excluded.note",
    "INSERT OR IGNORE INTO t (k, n, note, x) VALUES (?, ?, 'fixed ''(text)''', ?)",
]
_row = st.tuples(
    st.sampled_from("abcdefgh"),
    st.integers(-(2**63), 2**63 - 1),
    st.none() | st.text(max_size=8),
    st.floats(allow_nan=False),
)


def _table(statement: str, rows: list[tuple[Any, ...]], bulk: bool, limit: int) -> list[Any]:
    conn = sqlite3.connect(":memory:")
    conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, limit)
    conn.execute(_SCHEMA)
    if "fixed" in statement:
        rows = [(k, n, x) for k, n, _, x in rows]
    if bulk:
        execute_rows(conn, statement, rows)
    else:
        conn.executemany(statement, rows)
    return conn.execute("SELECT k, n, note, x FROM t ORDER BY k").fetchall()


@settings(max_examples=150, deadline=None)
@given(
    statement=st.sampled_from(_STATEMENTS),
    rows=st.lists(_row, max_size=80),
    limit=st.sampled_from([4, 9, 40, 999, 32766]),
)
def test_execute_rows_leaves_the_table_executemany_would(
    statement: str, rows: list[tuple[Any, ...]], limit: int
) -> None:
    # Rows repeat keys, so upserts, replaces and ignores depend on the order of rows;
    # small variable limits force statements of a row or two.
    assert _table(statement, rows, True, limit) == _table(statement, rows, False, limit)


def test_execute_rows_parts_are_powers_of_two_within_the_largest() -> None:
    for count in range(0, 3000, 7):
        parts = list(_sizes(count, 1024))
        assert sum(parts) == count
        assert all(p in {2**i for i in range(11)} for p in parts)
        assert len(parts) <= count // 1024 + 10


def test_a_row_of_the_wrong_width_is_an_error_naming_the_rows() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute(_SCHEMA)
    with pytest.raises(sqlite3.ProgrammingError, match="every row needs 4 values"):
        execute_rows(conn, _STATEMENTS[0], [("a", 1, None, 0.0), ("b", 2, None)])
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_a_statement_without_one_values_group_is_refused() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute(_SCHEMA)
    with pytest.raises(ValueError, match="one 'VALUES"):
        execute_rows(conn, "DELETE FROM t WHERE k = ?", [("a",), ("b",)])


def test_update_from_values_updates_each_keyed_row() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute(_SCHEMA)
    conn.executemany("INSERT INTO t (k, n) VALUES (?, ?)", [(k, 0) for k in "abc"])
    execute_rows(
        conn,
        "UPDATE t SET n = v.column1 FROM (VALUES (?, ?)) AS v WHERE t.k = v.column2",
        [(5, "a"), (7, "c")],
    )
    assert conn.execute("SELECT k, n FROM t ORDER BY k").fetchall() == [
        ("a", 5),
        ("b", 0),
        ("c", 7),
    ]
