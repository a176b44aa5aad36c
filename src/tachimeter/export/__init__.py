"""Exports of the store: events, metric samples or missions as CSV, JSON lines, Parquet or
OpenMetrics, streamed in chunks so memory stays flat on stores of any size.

``tachimeter export`` is the command line over :func:`export` (docs/reports.md).
Internal to the server/CLI layer.

>>> import io, sqlite3
>>> from tachimeter.store.migrations import all_migrations
>>> conn = sqlite3.connect(":memory:")
>>> for migration in all_migrations():
...     _ = conn.executescript(migration.up)
>>> out = io.BytesIO()
>>> export(conn, out, what="events", format="csv").rows
0
>>> out.getvalue().decode().split(",")[:3]
['id', 'event_type', 'event_name']
"""

from __future__ import annotations

from tachimeter.export.exporter import ExportFormat, ExportResult, ExportWhat, export

__all__ = ["ExportFormat", "ExportResult", "ExportWhat", "export"]
