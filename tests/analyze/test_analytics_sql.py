"""Custom SQL: reads only, with a time and a row limit, and errors that say why."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from analytics_fixtures import Seeded

from tachimeter.analyze import run_sql
from tachimeter.errors import QueryError
from tachimeter.store import SQLiteStore


def test_reads_with_parameters_ctes_windows_and_json(seeded: Seeded) -> None:
    """Ordinary analytical SQL runs and returns columns and rows."""
    result = run_sql(
        seeded.conn,
        "WITH daily AS (SELECT substr(timestamp, 1, 10) AS day, count(*) AS n "
        "FROM analytics_events WHERE event_name = :name GROUP BY 1) "
        "SELECT day, n, sum(n) OVER (ORDER BY day) AS running FROM daily ORDER BY day",
        {"name": "feature_used"},
    )
    assert result.columns == ["day", "n", "running"]
    assert result.rows[-1][2] == sum(r[1] for r in result.rows)
    assert not result.truncated
    models = run_sql(
        seeded.conn,
        "SELECT DISTINCT json_extract(properties, '$.model') FROM analytics_events "
        "WHERE event_name = ? ORDER BY 1",
        ["mission_created"],
    )
    assert [r[0] for r in models.rows] == ["claude-sonnet-4", "gemini-2.5-pro", "gpt-4o"]


@pytest.mark.parametrize(
    ("sql", "why"),
    [
        ("INSERT INTO funnels (id, name, steps) VALUES ('x', 'x', '[]')", "INSERT is not allowed"),
        ("UPDATE analytics_events SET user_id = NULL", "UPDATE is not allowed"),
        ("DELETE FROM analytics_events", "DELETE is not allowed"),
        ("DROP TABLE analytics_events", "DROP TABLE is not allowed"),
        ("CREATE TABLE t (x)", "CREATE TABLE is not allowed"),
        ("CREATE TEMP VIEW v AS SELECT 1", "CREATE TEMP VIEW is not allowed"),
        ("ALTER TABLE funnels ADD COLUMN y", "ALTER TABLE is not allowed"),
        ("ATTACH DATABASE ':memory:' AS other", "ATTACH is not allowed"),
        ("PRAGMA journal_mode = DELETE", "PRAGMA journal_mode = DELETE is not allowed"),
        ("PRAGMA query_only = 0", "PRAGMA query_only = 0 is not allowed"),
        ("PRAGMA writable_schema", "PRAGMA writable_schema is not allowed"),
        ("PRAGMA writable_schema = ON", "PRAGMA writable_schema = ON is not allowed"),
        ("SELECT load_extension('x')", "the function load_extension() is not allowed"),
        ("BEGIN", "a transaction statement"),
        ("VACUUM", "VACUUM is not allowed"),
        ("REINDEX", "REINDEX is not allowed"),
        ("ANALYZE", "ANALYZE is not allowed"),
    ],
)
def test_everything_but_reading_is_refused_with_the_reason(
    seeded: Seeded, sql: str, why: str
) -> None:
    """Writes, schema changes, ATTACH, pragma changes and extensions are refused."""
    with pytest.raises(
        QueryError, match="custom SQL is read-only: " + why.replace("(", r"\(").replace(")", r"\)")
    ):
        run_sql(seeded.conn, sql)


def test_schema_pragmas_and_reading_values_are_allowed(seeded: Seeded) -> None:
    """Introspection works: table_info, index_list, user_version, pragma functions."""
    columns = run_sql(seeded.conn, "PRAGMA table_info(analytics_events)")
    assert "event_name" in [r[1] for r in columns.rows]
    assert run_sql(seeded.conn, "PRAGMA user_version").rows
    assert run_sql(seeded.conn, "SELECT name FROM pragma_index_list('analytics_events')").rows


def test_a_writable_connection_stays_guarded_and_usable(tmp_path: Path) -> None:
    """On a writable connection the guard refuses writes, even statements prepared before,
    and is removed afterwards."""
    conn = sqlite3.connect(tmp_path / "w.db", isolation_level=None)
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")  # prepared and cached by the connection
    with pytest.raises(QueryError, match="INSERT is not allowed"):
        run_sql(conn, "INSERT INTO t VALUES (1)")
    conn.execute("INSERT INTO t VALUES (2)")
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (2,)
    conn.close()


def test_row_limit_truncates_and_says_so(seeded: Seeded) -> None:
    """At most max_rows rows come back; truncated tells that more existed."""
    result = run_sql(seeded.conn, "SELECT id FROM analytics_events", max_rows=10)
    assert len(result.rows) == 10 and result.truncated
    exact = run_sql(seeded.conn, "SELECT 1 UNION ALL SELECT 2", max_rows=2)
    assert len(exact.rows) == 2 and not exact.truncated


def test_time_limit_stops_a_runaway_query(seeded: Seeded) -> None:
    """A query past its deadline is interrupted with advice."""
    endless = (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n"
    )
    with pytest.raises(QueryError, match=r"ran longer than 0\.2 s"):
        run_sql(seeded.conn, endless, timeout_seconds=0.2)
    assert run_sql(seeded.conn, "SELECT 1").rows == [(1,)]  # the connection still works


def test_paths_open_read_only_and_stores_lend_a_reader(tmp_path: Path) -> None:
    """A file path is opened read-only; a store lends one of its pooled readers."""
    path = tmp_path / "s.db"
    with SQLiteStore(path) as store:
        assert run_sql(store, "SELECT count(*) FROM analytics_events").rows == [(0,)]
    assert run_sql(path, "SELECT count(*) FROM funnels").rows == [(0,)]
    with pytest.raises(QueryError, match="does not exist"):
        run_sql(tmp_path / "missing.db", "SELECT 1")


@pytest.mark.parametrize(
    ("sql", "kwargs", "message"),
    [
        ("SELECT 1; SELECT 2", {}, "one statement"),
        ("SELECT ?", {}, "one statement with matching parameters"),
        ("SELEC 1", {}, "custom SQL failed"),
        ("", {}, "non-empty SQL"),
        ("SELECT 1", {"max_rows": 0}, "max_rows"),
        ("SELECT 1", {"timeout_seconds": 0}, "timeout_seconds"),
    ],
)
def test_malformed_queries(seeded: Seeded, sql: str, kwargs: dict[str, Any], message: str) -> None:
    """Syntax errors, several statements and bad limits raise QueryError."""
    with pytest.raises(QueryError, match=message):
        run_sql(seeded.conn, sql, **kwargs)
