"""The migrations runner: transactional steps, checksums, newer schemas, up and down."""

from __future__ import annotations

import hashlib
import re
import sqlite3
import threading
from pathlib import Path

import pytest

from tachimeter.errors import StoreError
from tachimeter.store import Migration, Migrator, SQLiteStore, all_migrations, split_statements
from tachimeter.store.migrations import m0001_create_analytics as m0001


def _connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def _schema(conn: sqlite3.Connection) -> dict[str, str]:
    """``{name: sql}`` of every table, index, view and trigger SQLite itself did not make."""
    rows = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%'"
    ).fetchall()
    return dict(rows)


def _normalize(sql: str) -> str:
    # SQLite stores a CREATE statement as written, minus "IF NOT EXISTS" (documented
    # in "The Schema Table"); collapse whitespace so both sides compare alike.
    sql = re.sub(r"\s+IF NOT EXISTS\s+", " ", sql.strip().rstrip(";"), flags=re.IGNORECASE)
    return " ".join(sql.split())


def _spec_statements() -> dict[str, str]:
    """``{object name: CREATE statement}`` parsed straight out of migration 1's text."""
    found: dict[str, str] = {}
    for statement in split_statements(m0001.UP):
        body = re.sub(r"^(\s*--[^\n]*\n)*", "", statement)  # leading comment lines
        match = re.match(r"CREATE (?:TABLE|INDEX) IF NOT EXISTS (\w+)", body)
        assert match, statement
        found[match.group(1)] = body
    return found


def test_split_statements_respects_strings_comments_and_trigger_bodies() -> None:
    script = """
    -- a comment; with a semicolon
    CREATE TABLE t (x TEXT DEFAULT 'a;b');
    /* block; comment */ CREATE TRIGGER tr AFTER INSERT ON t BEGIN
        INSERT INTO t VALUES ('c;d'); DELETE FROM t WHERE x = ';';
    END;
    ;
    INSERT INTO t VALUES ('last')
    """
    statements = split_statements(script)
    assert len(statements) == 3
    assert statements[0].endswith("DEFAULT 'a;b');")
    assert (
        statements[1].startswith("/* block; comment */ CREATE TRIGGER") and "END;" in statements[1]
    )
    assert statements[2] == "INSERT INTO t VALUES ('last')"
    conn = sqlite3.connect(":memory:")
    for statement in statements:
        conn.execute(statement)
    # the trigger fired once for the last insert: its two statements both ran
    assert conn.execute("SELECT x FROM t ORDER BY rowid").fetchall() == [("last",), ("c;d",)]


def test_migration_1_creates_exactly_the_spec_ddl(tmp_path: Path) -> None:
    """sqlite_master after migration 1 holds spec 355's CREATE statements, object for object."""
    conn = _connect(tmp_path / "a.db")
    Migrator(conn).up(target=1)
    schema = _schema(conn)
    schema.pop("schema_migrations")
    spec = _spec_statements()
    assert set(schema) == set(spec)
    assert len(spec) == 9 + 19  # nine tables, nineteen indexes
    for name, statement in spec.items():
        assert _normalize(schema[name]) == _normalize(statement), name


def test_down_of_migration_1_drops_what_the_spec_down_drops(tmp_path: Path) -> None:
    conn = _connect(tmp_path / "a.db")
    migrator = Migrator(conn)
    migrator.up(target=1)
    spec_drops = set(re.findall(r"DROP TABLE IF EXISTS (\w+);", m0001.DOWN))
    tables = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")} - {
        "schema_migrations"
    }
    assert tables == spec_drops
    assert migrator.down(0) == [1]
    assert set(_schema(conn)) == {"schema_migrations"}
    assert migrator.current_version() == 0


def test_every_migration_goes_down_to_zero_and_up_again_to_the_same_schema(
    tmp_path: Path,
) -> None:
    conn = _connect(tmp_path / "a.db")
    migrator = Migrator(conn)
    versions = [m.version for m in all_migrations()]
    assert migrator.up() == versions
    head = _schema(conn)
    assert migrator.down(0) == versions[::-1]
    assert set(_schema(conn)) == {"schema_migrations"}
    assert migrator.up() == versions
    assert _schema(conn) == head
    assert [s.state for s in migrator.status()] == ["applied"] * len(versions)


def test_up_and_down_to_a_target(tmp_path: Path) -> None:
    conn = _connect(tmp_path / "a.db")
    migrator = Migrator(conn)
    assert migrator.up(target=2) == [1, 2]
    assert [m.version for m in migrator.pending()] == [m.version for m in all_migrations()][2:]
    columns = {r[1] for r in conn.execute("PRAGMA table_info(analytics_events)")}
    assert {"category", "priority", "mission_id", "received_at"} <= columns
    assert migrator.down(1) == [2]
    columns = {r[1] for r in conn.execute("PRAGMA table_info(analytics_events)")}
    assert "mission_id" not in columns and "id" in columns
    assert migrator.up(target=2) == [2]
    assert migrator.up(target=2) == []


def test_a_failing_migration_leaves_nothing_behind(tmp_path: Path) -> None:
    good = Migration(version=1, name="good", up="CREATE TABLE a (x);", down="DROP TABLE a;")
    bad = Migration(
        version=2,
        name="bad",
        up="CREATE TABLE b (x);\nCREATE INDEX idx_b ON b(x);\nINSERT INTO nowhere VALUES (1);",
        down="DROP TABLE b;",
    )
    conn = _connect(tmp_path / "a.db")
    migrator = Migrator(conn, [good, bad], where="test.db")
    with pytest.raises(StoreError, match=r"migration 2 \(bad\) failed at statement 3") as info:
        migrator.up()
    assert "rolled back" in str(info.value)
    assert set(_schema(conn)) == {"schema_migrations", "a"}
    assert migrator.applied().keys() == {1}
    assert not conn.in_transaction


def test_a_failing_first_migration_leaves_an_empty_file(tmp_path: Path) -> None:
    bad = Migration(version=1, name="bad", up="CREATE TABLE a (x); SELECT nope();", down="")
    conn = _connect(tmp_path / "a.db")
    with pytest.raises(StoreError):
        Migrator(conn, [bad]).up()
    assert _schema(conn) == {}  # not even schema_migrations


def test_an_edited_applied_migration_is_refused_naming_its_version(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    SQLiteStore(path).close()
    conn = _connect(path)
    conn.execute("UPDATE schema_migrations SET checksum = 'f00d' WHERE version = 2")
    conn.close()
    with pytest.raises(StoreError, match=r"migration 2 \(event_columns\) was applied with"):
        SQLiteStore(path)
    status = {s.version: s.state for s in Migrator(_connect(path)).status()}
    assert status[2] == "changed" and status[1] == "applied"


def test_a_newer_schema_is_refused_and_the_file_is_not_modified(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    SQLiteStore(path).close()
    conn = _connect(path)
    latest = all_migrations()[-1].version
    newer = latest + 3
    conn.execute(
        "INSERT INTO schema_migrations VALUES (?, 'from_the_future', '2030-01-01', 'x')",
        (newer,),
    )
    conn.close()
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    expected = (
        f"written by a newer Tachimeter: schema version {newer}, this version knows up to "
        f"{latest}; upgrade tachimeter"
    )
    with pytest.raises(StoreError, match=re.escape(expected)):
        SQLiteStore(path)
    with pytest.raises(StoreError, match=re.escape(expected)):
        SQLiteStore(path, migrate=False)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    states = {s.version: s.state for s in Migrator(_connect(path)).status()}
    assert states[newer] == "unknown"


def test_pending_migrations_are_applied_when_a_store_opens(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    conn = _connect(path)
    Migrator(conn).up(target=1)
    conn.close()
    with SQLiteStore(path, migrate=False) as store:
        assert store.schema_version() == 1
        assert [s.state for s in store.migration_status()][:2] == ["applied", "pending"]
    with SQLiteStore(path) as store:
        assert store.schema_version() == all_migrations()[-1].version
        assert store.revert(1) == [m.version for m in all_migrations()][:0:-1]
        assert store.migrate(2) == [2]


def test_two_processes_opening_a_new_file_apply_each_migration_once(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def open_store() -> None:
        try:
            start.wait()
            SQLiteStore(path).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    conn = _connect(path)
    versions = [v for (v,) in conn.execute("SELECT version FROM schema_migrations")]
    assert versions == [m.version for m in all_migrations()]


def test_migration_versions_must_be_positive_and_unique() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    one = Migration(version=1, name="a", up="", down="")
    with pytest.raises(StoreError, match="given twice"):
        Migrator(conn, [one, one])
    with pytest.raises(StoreError, match="versions start at 1"):
        Migrator(conn, [Migration(version=0, name="z", up="", down="")])


def test_an_applied_migration_unknown_here_cannot_be_reverted(tmp_path: Path) -> None:
    one = Migration(version=1, name="one", up="CREATE TABLE a (x);", down="DROP TABLE a;")
    two = Migration(version=2, name="two", up="CREATE TABLE b (x);", down="DROP TABLE b;")
    three = Migration(version=3, name="three", up="CREATE TABLE c (x);", down="DROP TABLE c;")
    conn = _connect(tmp_path / "a.db")
    Migrator(conn, [one, two, three]).up()
    without_two = Migrator(conn, [one, three])
    assert [s.state for s in without_two.status()] == ["applied", "unknown", "applied"]
    with pytest.raises(StoreError, match=r"migration 2 \(two\) is applied but unknown"):
        without_two.down(0)
    assert without_two.applied().keys() == {1, 2, 3}  # refused before reverting anything
