"""The store layer: backends, migrations, projections and the collector's store sink.

>>> import tempfile, pathlib
>>> from tachimeter.store import SQLiteStore
>>> with SQLiteStore(pathlib.Path(tempfile.mkdtemp()) / "analytics.db") as store:
...     store.event_count()
0

``SQLiteStore`` is the embedded default; code that only stores and reads events depends
on the ``EventStore`` Protocol so other backends can stand in.
"""

from __future__ import annotations

from tachimeter.store.backend import (
    DecodedEvents,
    EventStore,
    QueryParams,
    ReadConnection,
    ReadCursor,
    WriteResult,
    decode_rows,
)
from tachimeter.store.migrations import Migration, all_migrations
from tachimeter.store.migrator import MigrationState, Migrator, split_statements
from tachimeter.store.projection import Projection
from tachimeter.store.sink import StoreSink
from tachimeter.store.sqlite import SQLiteStore

__all__ = [
    "DecodedEvents",
    "EventStore",
    "Migration",
    "MigrationState",
    "Migrator",
    "Projection",
    "QueryParams",
    "ReadConnection",
    "ReadCursor",
    "SQLiteStore",
    "StoreSink",
    "WriteResult",
    "all_migrations",
    "decode_rows",
    "split_statements",
]
