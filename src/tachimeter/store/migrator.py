"""Applies and reverts numbered migrations, recorded in ``schema_migrations``.

Each migration runs in its own transaction together with its ``schema_migrations`` row:
it is applied entirely or not at all. ``sqlite3.Connection.executescript`` would commit
before running, so scripts are split into statements (``sqlite3.complete_statement``
knows about strings, comments and trigger bodies) and executed one by one between
``BEGIN IMMEDIATE`` and ``COMMIT``; SQLite's DDL is transactional.

Safety checks, run before anything is written (:meth:`Migrator.check`):

* a database whose newest applied version is beyond every migration this version of
  Tachimeter knows was written by a newer Tachimeter: it is refused, never modified;
* an applied migration whose ``up`` text changed since (its checksum differs) is refused,
  naming the version: migrations are never edited, changes are new migrations.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

import msgspec

from tachimeter.errors import StoreError
from tachimeter.model.timestamps import format_timestamp, utc_now
from tachimeter.store.migrations import Migration, all_migrations

__all__ = ["MigrationState", "Migrator", "split_statements"]

_CREATE_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TEXT NOT NULL,
    checksum TEXT NOT NULL
)"""


class MigrationState(msgspec.Struct, frozen=True, kw_only=True):
    """One migration as :meth:`Migrator.status` sees it.

    ``state`` is ``applied``; ``pending`` (known, not applied); ``changed`` (applied, but
    its ``up`` text differs now: refused); or ``unknown`` (applied by another version of
    Tachimeter, no migration here has that number).

    >>> MigrationState(version=1, name="create_analytics", state="pending").applied
    False
    """

    version: int
    name: str
    state: Literal["applied", "pending", "changed", "unknown"]
    applied_at: str | None = None

    @property
    def applied(self) -> bool:
        """True when the migration is recorded as applied."""
        return self.state != "pending"


class _Applied(NamedTuple):
    name: str
    applied_at: str
    checksum: str


def split_statements(script: str) -> list[str]:
    """The statements of a SQL script, each ending with its ``;`` (comments kept).

    >>> split_statements("CREATE TABLE a (x); -- note; still a comment\\nDROP TABLE a;")
    ['CREATE TABLE a (x);', '-- note; still a comment\\nDROP TABLE a;']
    """
    statements: list[str] = []
    start = 0
    end = script.find(";")
    while end != -1:
        candidate = script[start : end + 1]
        if sqlite3.complete_statement(candidate):
            if candidate.strip(" \t\r\n;"):
                statements.append(candidate.strip())
            start = end + 1
        end = script.find(";", end + 1)
    rest = script[start:].strip()
    if rest:  # a last statement without ";", or trailing comments (which execute as no-ops)
        statements.append(rest)
    return statements


class Migrator:
    """Brings a database's schema to a version, up or down.

    ``conn`` must be in autocommit mode (``isolation_level=None``) so that the migrator
    controls the transactions; ``where`` names the database in error messages.

    >>> conn = sqlite3.connect(":memory:", isolation_level=None)
    >>> migrator = Migrator(conn)
    >>> migrator.up()[:2]
    [1, 2]
    >>> migrator.down(1)[-1], migrator.current_version()
    (2, 1)
    """

    __slots__ = ("_by_version", "_conn", "_migrations", "_where")

    def __init__(
        self,
        conn: sqlite3.Connection,
        migrations: Sequence[Migration] | None = None,
        *,
        where: str = "the database",
    ) -> None:
        found = tuple(all_migrations() if migrations is None else migrations)
        by_version: dict[int, Migration] = {}
        for migration in found:
            if migration.version <= 0:
                raise StoreError(
                    f"migration {migration.name!r} has version {migration.version}; "
                    "versions start at 1"
                )
            if migration.version in by_version:
                raise StoreError(f"migration version {migration.version} is given twice")
            by_version[migration.version] = migration
        self._conn = conn
        self._where = where
        self._by_version = by_version
        self._migrations = tuple(by_version[v] for v in sorted(by_version))

    @property
    def latest_known(self) -> int:
        """The highest version this Tachimeter knows (0 when it knows none)."""
        return self._migrations[-1].version if self._migrations else 0

    def applied(self) -> dict[int, tuple[str, str, str]]:
        """Applied versions: ``{version: (name, applied_at, checksum)}`` (read-only)."""
        try:
            exists = self._conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
            ).fetchone()
            if exists is None:
                return {}
            rows = self._conn.execute(
                "SELECT version, name, applied_at, checksum FROM schema_migrations"
            ).fetchall()
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"{self._where}: cannot read schema_migrations ({exc}); is it a Tachimeter "
                "database? Point storage.path at another file"
            ) from exc
        return {int(v): _Applied(str(n), str(a), str(c)) for v, n, a, c in rows}

    def current_version(self) -> int:
        """The highest applied version, 0 for an empty database."""
        return max(self.applied(), default=0)

    def check(self) -> None:
        """Refuse a newer schema or an edited migration (``StoreError``); writes nothing."""
        self._check(self.applied())

    def _check(self, applied: dict[int, tuple[str, str, str]]) -> None:
        newest = max(applied, default=0)
        if newest > self.latest_known:
            raise StoreError(
                f"{self._where} was written by a newer Tachimeter: schema version {newest}, "
                f"this version knows up to {self.latest_known}; upgrade tachimeter"
            )
        for version, (_, _, checksum) in sorted(applied.items()):
            migration = self._by_version.get(version)
            if migration is not None and migration.checksum != checksum:
                raise StoreError(
                    f"{self._where}: migration {version} ({migration.name}) was applied "
                    f"with checksum {checksum[:12]}, but its text now has checksum "
                    f"{migration.checksum[:12]}; applied migrations must never be edited: "
                    f"restore migration {version} and put the change in a new migration"
                )

    def status(self) -> list[MigrationState]:
        """Every known or applied migration, by version."""
        applied = self.applied()
        states: list[MigrationState] = []
        for version in sorted(set(applied) | set(self._by_version)):
            migration = self._by_version.get(version)
            record = applied.get(version)
            if record is None:
                assert migration is not None
                states.append(MigrationState(version=version, name=migration.name, state="pending"))
                continue
            name, applied_at, checksum = record
            if migration is None:
                state: Literal["applied", "changed", "unknown"] = "unknown"
            elif migration.checksum != checksum:
                state = "changed"
            else:
                state = "applied"
            states.append(
                MigrationState(version=version, name=name, state=state, applied_at=applied_at)
            )
        return states

    def pending(self) -> list[Migration]:
        """Known migrations not applied yet, by version."""
        applied = self.applied()
        return [m for m in self._migrations if m.version not in applied]

    def up(self, target: int | None = None) -> list[int]:
        """Apply pending migrations up to ``target`` (default: all); the versions applied.

        A known migration numbered below an applied one (added by a later merge) is
        applied too: every migration runs once, in version order.
        """
        self.check()
        done: list[int] = []
        for migration in self._migrations:
            if target is not None and migration.version > target:
                break
            if self._apply(migration):
                done.append(migration.version)
        return done

    def down(self, target: int) -> list[int]:
        """Revert applied migrations above ``target``, newest first; the versions reverted."""
        if target < 0:
            raise StoreError(f"migration target must be >= 0, got {target}")
        applied = self.applied()
        self._check(applied)
        versions = sorted((v for v in applied if v > target), reverse=True)
        for version in versions:  # all checked before anything is reverted
            if version not in self._by_version:
                raise StoreError(
                    f"{self._where}: migration {version} ({applied[version][0]}) is applied "
                    "but unknown to this version of Tachimeter, which cannot revert it; use "
                    "the version that applied it"
                )
        for version in versions:
            self._revert(self._by_version[version])
        return versions

    def _apply(self, migration: Migration) -> bool:
        def body() -> bool:
            self._conn.execute(_CREATE_TABLE)
            if self._conn.execute(
                "SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)
            ).fetchone():
                return False  # another process applied it while we waited for the lock
            self._run(migration, migration.up)
            self._conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at, checksum) "
                "VALUES (?, ?, ?, ?)",
                (
                    migration.version,
                    migration.name,
                    format_timestamp(utc_now()),
                    migration.checksum,
                ),
            )
            return True

        return self._transaction(migration, "apply", body)

    def _revert(self, migration: Migration) -> None:
        def body() -> bool:
            self._run(migration, migration.down)
            self._conn.execute(
                "DELETE FROM schema_migrations WHERE version = ?", (migration.version,)
            )
            return True

        self._transaction(migration, "revert", body)

    def _run(self, migration: Migration, script: str) -> None:
        for index, statement in enumerate(split_statements(script), start=1):
            try:
                self._conn.execute(statement)
            except sqlite3.Error as exc:
                first_line = statement.strip().splitlines()[0][:80]
                raise StoreError(
                    f"{self._where}: migration {migration.version} ({migration.name}) failed "
                    f"at statement {index} ({first_line!r}): {exc}; it was rolled back, "
                    "the schema is unchanged"
                ) from exc

    def _transaction(self, migration: Migration, verb: str, body: Callable[[], bool]) -> bool:
        if self._conn.in_transaction:
            raise StoreError(
                f"{self._where}: cannot {verb} migration {migration.version} inside an open "
                "transaction; commit or roll back first"
            )
        try:
            # IMMEDIATE takes the write lock up front: two processes opening the same new
            # database serialize here instead of failing half-way with SQLITE_BUSY.
            self._conn.execute("BEGIN IMMEDIATE")
            # Foreign keys are checked at COMMIT, so a migration may rebuild a referenced
            # table in several statements.
            self._conn.execute("PRAGMA defer_foreign_keys = ON")
            changed = body()
            self._conn.execute("COMMIT")
        except BaseException as exc:
            _rollback(self._conn)
            if isinstance(exc, sqlite3.Error):
                raise StoreError(
                    f"{self._where}: cannot {verb} migration {migration.version} "
                    f"({migration.name}): {exc}"
                ) from exc
            raise
        return changed


def _rollback(conn: sqlite3.Connection) -> None:
    # SQLite ends the transaction by itself after some errors (SQLITE_FULL in a commit).
    if conn.in_transaction:
        conn.execute("ROLLBACK")
