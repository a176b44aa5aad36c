"""Query plans of the write path: every statement the projections run on a batch reads
through an index, so a batch costs the same on a small store and on a big one."""

from __future__ import annotations

import re
import sqlite3
import sys
from pathlib import Path

# bench/ (the data generator) lives at the repository root, next to tests/.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from bench.store import FUNNEL, agent_stream, bench_config, source_event  # noqa: E402

from tachimeter import analyze as ta  # noqa: E402
from tachimeter.defaults import default_projections  # noqa: E402
from tachimeter.model.data import EventMetadata  # noqa: E402
from tachimeter.store import SQLiteStore  # noqa: E402

# Tables a statement may read whole: the funnel definitions (a handful of rows).
SMALL_TABLES = {"funnels"}
BATCH = 5_000


def test_every_projection_statement_uses_an_index(tmp_path: Path) -> None:
    """Trace one batch's statements on a store holding earlier batches and explain each:
    no full scan of a table that grows with the store."""
    stream = agent_stream(5 * BATCH)
    path = tmp_path / "plans.db"
    store = SQLiteStore(path, bench_config(path, 100))
    try:
        ta.define_funnel(store, FUNNEL)
        projections = default_projections()
        metadata = EventMetadata.from_environment()
        batches = [
            [source_event(s, metadata) for s in stream[at : at + BATCH]]
            for at in range(0, len(stream), BATCH)
        ]
        for batch in batches[:-1]:
            store.write_batch(batch, projections=projections)
        statements: list[str] = []
        writer = store._writer()  # the connection the projections write on
        writer.set_trace_callback(statements.append)
        try:
            store.write_batch(batches[-1], projections=projections)
        finally:
            writer.set_trace_callback(None)
    finally:
        store.close()
    reader = sqlite3.connect(path)
    try:
        tables = {name for (name,) in reader.execute("SELECT name FROM sqlite_master")}
        explained = 0
        for sql in statements:
            if sql.lstrip().split(None, 1)[0].upper() not in (
                "SELECT",
                "INSERT",
                "UPDATE",
                "DELETE",
            ):
                continue
            plan = [row[3] for row in reader.execute(f"EXPLAIN QUERY PLAN {sql}")]
            explained += 1
            for line in plan:
                scanned = re.match(r"SCAN (\w+)( USING (COVERING )?INDEX \w+)?$", line)
                if scanned and scanned.group(1) in tables - SMALL_TABLES:
                    raise AssertionError(f"{line!r} in the plan of {sql[:300]!r}")
        assert explained > 10
    finally:
        reader.close()
