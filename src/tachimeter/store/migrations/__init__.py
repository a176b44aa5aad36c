"""Numbered schema migrations, discovered from the modules of this package.

Each module ``mNNNN_<name>.py`` defines ``MIGRATION = Migration(version=NNNN, ...)``.
Version 1 is spec 355's SQL verbatim; later changes are new migrations, never edits of
applied ones (the runner records a checksum of ``up`` and refuses a changed one).

Numbers in use: 1 spec 355 schema, 2 analytics columns and indexes (store), 3 time series
(metrics), 4 missions, 5 alerts, 6 spec indexes made redundant by 2's composites dropped
(store), 7 analytics rollups.
"""

from __future__ import annotations

import hashlib
import importlib
import pkgutil
from functools import cache

import msgspec

from tachimeter.errors import StoreError

__all__ = ["Migration", "all_migrations"]


class Migration(msgspec.Struct, frozen=True, kw_only=True):
    """One schema step: SQL scripts to apply (``up``) and to revert (``down``)."""

    version: int
    name: str
    up: str
    down: str

    @property
    def checksum(self) -> str:
        """SHA-256 of ``up``: an applied migration whose text changed is refused."""
        return hashlib.sha256(self.up.encode()).hexdigest()


@cache
def all_migrations() -> tuple[Migration, ...]:
    """Every migration of this package, by version; duplicate versions are an error."""
    found: dict[int, Migration] = {}
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("m"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        migration = getattr(module, "MIGRATION", None)
        if not isinstance(migration, Migration):
            raise StoreError(f"migration module {info.name} defines no MIGRATION")
        if migration.version in found:
            raise StoreError(
                f"migration version {migration.version} is defined twice: "
                f"{found[migration.version].name!r} and {migration.name!r}"
            )
        found[migration.version] = migration
    return tuple(found[v] for v in sorted(found))
