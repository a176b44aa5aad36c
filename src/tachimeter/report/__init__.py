"""Reports over a time range: events, errors, missions, tokens and cost, alerts.

:func:`build_report` reads the store once into a :class:`Report` (msgspec Structs);
:func:`render_markdown`, :func:`render_html` and :func:`render_json` format it. The HTML
is one self-contained file with inline SVG charts. ``tachimeter report`` is the command
line over these (docs/reports.md).

Internal to the server/CLI layer: it reads ``tachimeter.analyze`` and
``tachimeter.alerts``, and nothing below imports it.

>>> import datetime as dt, sqlite3
>>> from tachimeter.store.migrations import all_migrations
>>> conn = sqlite3.connect(":memory:")
>>> for migration in all_migrations():
...     _ = conn.executescript(migration.up)
>>> since = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)
>>> report = build_report(conn, since, since + dt.timedelta(days=7))
>>> report.summary.events, len(report.events_per_day), "<svg" in render_html(report)
(0, 7, True)
"""

from __future__ import annotations

from tachimeter.report.data import (
    AlertChange,
    AlertRuleSummary,
    AlertsSection,
    DayCount,
    ErrorGroup,
    ErrorRecord,
    EventCount,
    MissionDay,
    MissionGroup,
    MissionsSection,
    ModelUsage,
    Report,
    Summary,
    build_report,
)
from tachimeter.report.render import render_html, render_json, render_markdown

__all__ = [
    "AlertChange",
    "AlertRuleSummary",
    "AlertsSection",
    "DayCount",
    "ErrorGroup",
    "ErrorRecord",
    "EventCount",
    "MissionDay",
    "MissionGroup",
    "MissionsSection",
    "ModelUsage",
    "Report",
    "Summary",
    "build_report",
    "render_html",
    "render_json",
    "render_markdown",
]
