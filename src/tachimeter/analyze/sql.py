"""Custom read-only SQL over the documented schema (docs/schema.md).

Three guards, each enough on its own for its job:

* the SQLite **authorizer** admits reads only: ``SELECT`` (with CTEs, window functions,
  JSON functions) and introspection pragmas (``table_info``, ``index_list``, reading
  ``user_version``, ...). Writes, DDL, ``ATTACH``, transactions, pragma changes and
  ``load_extension`` are refused with a :class:`~tachimeter.errors.QueryError` that says
  which (``"custom SQL is read-only: INSERT is not allowed"``);
* ``PRAGMA query_only`` is on during the query (a second wall: statements that ask the
  authorizer nothing, like ``REINDEX``, still cannot write);
* a **time limit**: a progress handler stops the statement when it runs too long;
* a **row limit**: at most ``max_rows`` rows come back, ``truncated`` says if more existed.

A database path is opened read-only (``mode=ro``) for the query; a connection or a store
reader gets the guards installed for the call and removed afterwards (setting an
authorizer also expires statements the connection prepared before, so none escapes it).

>>> import sqlite3
>>> conn = sqlite3.connect(":memory:")
>>> _ = conn.execute("CREATE TABLE t (x)")
>>> run_sql(conn, "SELECT 1 + 1 AS two").rows
[(2,)]
>>> run_sql(conn, "INSERT INTO t VALUES (1)")
Traceback (most recent call last):
...
tachimeter.errors.QueryError: custom SQL is read-only: INSERT is not allowed
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import msgspec

from tachimeter.analyze.connection import ReadSource, read_connection
from tachimeter.errors import QueryError

__all__ = ["SqlResult", "run_sql"]

MAX_ROWS: Final = 100_000
# Checking the clock every 1000 virtual-machine instructions costs well under 1% and
# stops a runaway query within about a millisecond of its deadline.
_PROGRESS_STEPS: Final = 1000

_ACTION_NAMES: Final[dict[int, str]] = {
    sqlite3.SQLITE_INSERT: "INSERT",
    sqlite3.SQLITE_UPDATE: "UPDATE",
    sqlite3.SQLITE_DELETE: "DELETE",
    sqlite3.SQLITE_ATTACH: "ATTACH",
    sqlite3.SQLITE_DETACH: "DETACH",
    sqlite3.SQLITE_ALTER_TABLE: "ALTER TABLE",
    sqlite3.SQLITE_ANALYZE: "ANALYZE",
    sqlite3.SQLITE_REINDEX: "REINDEX",
    sqlite3.SQLITE_TRANSACTION: "a transaction statement (BEGIN, COMMIT, ROLLBACK)",
    sqlite3.SQLITE_SAVEPOINT: "SAVEPOINT",
    sqlite3.SQLITE_CREATE_INDEX: "CREATE INDEX",
    sqlite3.SQLITE_CREATE_TABLE: "CREATE TABLE",
    sqlite3.SQLITE_CREATE_TEMP_INDEX: "CREATE TEMP INDEX",
    sqlite3.SQLITE_CREATE_TEMP_TABLE: "CREATE TEMP TABLE",
    sqlite3.SQLITE_CREATE_TEMP_TRIGGER: "CREATE TEMP TRIGGER",
    sqlite3.SQLITE_CREATE_TEMP_VIEW: "CREATE TEMP VIEW",
    sqlite3.SQLITE_CREATE_TRIGGER: "CREATE TRIGGER",
    sqlite3.SQLITE_CREATE_VIEW: "CREATE VIEW",
    sqlite3.SQLITE_CREATE_VTABLE: "CREATE VIRTUAL TABLE",
    sqlite3.SQLITE_DROP_INDEX: "DROP INDEX",
    sqlite3.SQLITE_DROP_TABLE: "DROP TABLE",
    sqlite3.SQLITE_DROP_TEMP_INDEX: "DROP TEMP INDEX",
    sqlite3.SQLITE_DROP_TEMP_TABLE: "DROP TEMP TABLE",
    sqlite3.SQLITE_DROP_TEMP_TRIGGER: "DROP TEMP TRIGGER",
    sqlite3.SQLITE_DROP_TEMP_VIEW: "DROP TEMP VIEW",
    sqlite3.SQLITE_DROP_TRIGGER: "DROP TRIGGER",
    sqlite3.SQLITE_DROP_VIEW: "DROP VIEW",
    sqlite3.SQLITE_DROP_VTABLE: "DROP VIRTUAL TABLE",
}
# Pragmas that only describe the schema; their argument names a table or an index.
_INTROSPECTION_PRAGMAS: Final = frozenset(
    {
        "table_info",
        "table_xinfo",
        "table_list",
        "index_list",
        "index_info",
        "index_xinfo",
        "foreign_key_list",
        "collation_list",
        "function_list",
        "module_list",
        "pragma_list",
        "database_list",
        "compile_options",
    }
)
# Pragmas that are harmless to read but would change the database when given a value.
_READABLE_PRAGMAS: Final = frozenset(
    {
        "user_version",
        "schema_version",
        "application_id",
        "page_count",
        "page_size",
        "freelist_count",
        "encoding",
        "journal_mode",
        "data_version",
        "auto_vacuum",
    }
)
_DENIED_FUNCTIONS: Final = frozenset({"load_extension"})
# Maintenance statements write without asking the authorizer about it in their own name
# (VACUUM asks for ATTACH, ANALYZE for CREATE TABLE, REINDEX for nothing): named up front.
_MAINTENANCE: Final = frozenset({"VACUUM", "ANALYZE", "REINDEX"})
_ROW_ACTIONS: Final = frozenset(
    {sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE}
)


class SqlResult(msgspec.Struct, frozen=True, kw_only=True):
    """Rows of a custom query; ``truncated`` when more than ``max_rows`` existed."""

    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool
    elapsed_ms: float


class _Guard:
    """Authorizer and deadline for one query; remembers why it refused."""

    __slots__ = ("deadline", "reason")

    def __init__(self, timeout_seconds: float) -> None:
        self.deadline = time.monotonic() + timeout_seconds
        self.reason: str | None = None

    def authorize(
        self, action: int, arg1: str | None, arg2: str | None, _db: str | None, _source: str | None
    ) -> int:
        if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_RECURSIVE):
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_FUNCTION:
            if (arg2 or "").lower() in _DENIED_FUNCTIONS:
                return self._deny(f"the function {arg2}() is not allowed")
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_PRAGMA:
            name = (arg1 or "").lower()
            if name in _INTROSPECTION_PRAGMAS or (name in _READABLE_PRAGMAS and arg2 is None):
                return sqlite3.SQLITE_OK
            shown = f"PRAGMA {arg1}" + (f" = {arg2}" if arg2 is not None else "")
            return self._deny(
                f"{shown} is not allowed (only schema pragmas such as table_info and reading "
                "values such as user_version are)"
            )
        if arg1 is not None and arg1.startswith("sqlite_") and action in _ROW_ACTIONS:
            # SQLite asks about its own schema table while preparing reads (pragma table
            # functions) and before DDL (DROP TABLE deletes from sqlite_master, then asks
            # about DROP TABLE, which is refused below). Writing it stays impossible:
            # SQLite refuses it itself, and query_only is on.
            return sqlite3.SQLITE_OK
        return self._deny(f"{_ACTION_NAMES.get(action, f'operation {action}')} is not allowed")

    def _deny(self, why: str) -> int:
        if self.reason is None:
            self.reason = why
        return sqlite3.SQLITE_DENY

    def expired(self) -> bool:
        return time.monotonic() > self.deadline


@contextlib.contextmanager
def _connection(source: ReadSource | str | os.PathLike[str]) -> Iterator[sqlite3.Connection]:
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if not path.exists():
            raise QueryError(f"database {str(path)!r} does not exist; check the path")
        uri = path.absolute().as_uri() + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None)
        try:
            yield conn
        finally:
            conn.close()
    else:
        with read_connection(source) as conn:
            yield conn


@contextlib.contextmanager
def _query_only(conn: sqlite3.Connection) -> Iterator[None]:
    """``PRAGMA query_only`` on for the block, then back to what it was."""
    before = conn.execute("PRAGMA query_only").fetchone()[0]
    if not before:
        conn.execute("PRAGMA query_only = ON")
    try:
        yield
    finally:
        if not before:
            conn.execute("PRAGMA query_only = OFF")


def run_sql(
    source: ReadSource | str | os.PathLike[str],
    sql: str,
    params: Sequence[Any] | Mapping[str, Any] = (),
    *,
    timeout_seconds: float = 5.0,
    max_rows: int = 10_000,
) -> SqlResult:
    """Run one read-only SQL statement with a time and a row limit."""
    if not isinstance(sql, str) or not sql.strip():
        raise QueryError(f"sql must be a non-empty SQL statement, got {sql!r}")
    if not (isinstance(timeout_seconds, int | float) and 0 < timeout_seconds <= 3600):
        raise QueryError(f"timeout_seconds must be in (0, 3600], got {timeout_seconds!r}")
    if not isinstance(max_rows, int) or isinstance(max_rows, bool) or not 1 <= max_rows <= MAX_ROWS:
        raise QueryError(f"max_rows must be an integer in [1, {MAX_ROWS}], got {max_rows!r}")
    guard = _Guard(float(timeout_seconds))
    started = time.perf_counter()
    keyword = sql.split()[0].upper()
    if keyword in _MAINTENANCE:
        raise QueryError(f"custom SQL is read-only: {keyword} is not allowed")
    with _connection(source) as conn, _query_only(conn):
        conn.set_authorizer(guard.authorize)
        conn.set_progress_handler(guard.expired, _PROGRESS_STEPS)
        try:
            cursor = conn.execute(sql, params)
            rows = cursor.fetchmany(max_rows + 1)
            columns = [d[0] for d in cursor.description or ()]
            cursor.close()
        except sqlite3.ProgrammingError as exc:
            raise QueryError(
                f"custom SQL must be one statement with matching parameters: {exc}"
            ) from None
        except sqlite3.Error as exc:
            reason = guard.reason
            if "readonly database" in str(exc):
                reason = f"{keyword} is not allowed"
            if reason is not None:
                raise QueryError(f"custom SQL is read-only: {reason}") from None
            if guard.expired():
                raise QueryError(
                    f"custom SQL ran longer than {timeout_seconds} s and was stopped; narrow "
                    "the time range, filter on indexed columns (event_name, timestamp, "
                    "user_id), or raise timeout_seconds"
                ) from None
            raise QueryError(f"custom SQL failed: {exc}") from None
        finally:
            conn.set_authorizer(None)
            conn.set_progress_handler(None, 0)
            if conn.in_transaction:
                conn.rollback()
    truncated = len(rows) > max_rows
    return SqlResult(
        columns=columns,
        rows=[tuple(r) for r in rows[:max_rows]],
        truncated=truncated,
        elapsed_ms=(time.perf_counter() - started) * 1000,
    )
