"""Where analytics read from and write to: a ``sqlite3.Connection`` or a store.

Every analytics function takes a *source*: a ``sqlite3.Connection`` (used as is, never
closed), or a store object with a pooled ``reader()`` context manager
(:class:`~tachimeter.store.sqlite.SQLiteStore`), or one with ``connect_reader()`` (the
:class:`~tachimeter.store.backend.EventStore` Protocol). The few functions that write
(defining funnels) take a writable connection or a store with a ``path``.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeAlias, runtime_checkable

from tachimeter.errors import QueryError

__all__ = ["ReadSource", "WriteTarget", "read_connection", "write_connection"]


@runtime_checkable
class _PooledReader(Protocol):
    def reader(self) -> AbstractContextManager[Any]: ...


@runtime_checkable
class _ReaderFactory(Protocol):
    def connect_reader(self) -> Any: ...


@runtime_checkable
class _StoreWithPath(Protocol):
    @property
    def path(self) -> os.PathLike[str]: ...


ReadSource: TypeAlias = "sqlite3.Connection | _PooledReader | _ReaderFactory"
"""A connection, or a store that hands out read connections."""

WriteTarget: TypeAlias = "sqlite3.Connection | _StoreWithPath"
"""A writable connection, or a store whose file a short-lived connection may write."""

# Writers of the same file wait this long for the store's writer to finish a batch.
_BUSY_TIMEOUT_SECONDS = 5.0


def _check_sqlite(conn: Any, source: Any) -> sqlite3.Connection:
    if not isinstance(conn, sqlite3.Connection):
        raise QueryError(
            f"analytics queries need a SQLite connection, but {type(source).__name__} "
            f"gave {type(conn).__name__}; use a SQLite-backed store"
        )
    return conn


@contextlib.contextmanager
def _as_query_errors() -> Iterator[None]:
    """SQLite errors inside the block become ``QueryError`` with a hint."""
    try:
        yield
    except sqlite3.Error as exc:
        hint = ""
        if "malformed JSON" in str(exc):
            hint = (
                "; a stored row's properties are not valid JSON (written by another "
                "tool?): drop the property filter or fix that row"
            )
        elif "no such table" in str(exc) or "no such column" in str(exc):
            hint = "; the database is not migrated: open it once with SQLiteStore"
        raise QueryError(f"analytics query failed: {exc}{hint}") from exc


@contextlib.contextmanager
def read_connection(source: ReadSource) -> Iterator[sqlite3.Connection]:
    """A SQLite connection to read from for the duration of a ``with`` block.

    SQLite errors raised inside the block come out as ``QueryError``.

    >>> conn = sqlite3.connect(":memory:")
    >>> with read_connection(conn) as c:
    ...     c is conn
    True
    """
    if isinstance(source, sqlite3.Connection):
        with _as_query_errors():
            yield source
    elif isinstance(source, _PooledReader):
        with source.reader() as conn, _as_query_errors():
            yield _check_sqlite(conn, source)
    elif isinstance(source, _ReaderFactory):
        conn = _check_sqlite(source.connect_reader(), source)
        try:
            with _as_query_errors():
                yield conn
        finally:
            conn.close()
    else:
        raise QueryError(
            f"source must be a sqlite3.Connection or a store with reader(), got "
            f"{type(source).__name__}"
        )


@contextlib.contextmanager
def write_connection(target: WriteTarget) -> Iterator[sqlite3.Connection]:
    """A writable SQLite connection, outside any transaction, for a ``with`` block.

    A store's file gets a connection of its own, closed afterwards; SQLite serializes it
    with the store's writer (each waits at most a few seconds for the other's batch).
    """
    if isinstance(target, sqlite3.Connection):
        if target.in_transaction:
            raise QueryError(
                "the connection is inside a transaction; commit or roll back before "
                "calling a function that writes (it runs its own transaction)"
            )
        yield target
    elif isinstance(target, _StoreWithPath):
        conn = sqlite3.connect(
            os.fspath(target.path), timeout=_BUSY_TIMEOUT_SECONDS, isolation_level=None
        )
        try:
            yield conn
        finally:
            conn.close()
    else:
        raise QueryError(
            f"target must be a sqlite3.Connection or a store with a path, got "
            f"{type(target).__name__}"
        )
