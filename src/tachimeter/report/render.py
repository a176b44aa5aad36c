"""A report as Markdown (tables), HTML (one self-contained file with SVG charts) or JSON.

The HTML file needs nothing else: no script, no stylesheet or font to fetch, charts drawn
as inline SVG from the numbers. It follows the reader's light or dark preference
(``prefers-color-scheme``) and prints cleanly.

>>> import sqlite3, datetime as dt
>>> from tachimeter.store.migrations import all_migrations
>>> from tachimeter.report.data import build_report
>>> conn = sqlite3.connect(":memory:")
>>> for migration in all_migrations():
...     _ = conn.executescript(migration.up)
>>> since = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)
>>> report = build_report(conn, since, since + dt.timedelta(days=1))
>>> render_markdown(report).splitlines()[0]
'# Tachimeter report'
"""

from __future__ import annotations

from html import escape
from typing import Final

import msgspec

from tachimeter.report.data import Report
from tachimeter.report.display import show_time
from tachimeter.report.layout import Chart, Figures, Note, Section, Table, layout

__all__ = ["render_html", "render_json", "render_markdown"]


def _range(report: Report) -> str:
    return f"{show_time(report.since)} to {show_time(report.until)} UTC"


# -- Markdown ------------------------------------------------------------------------------


def _cell(text: str) -> str:
    """A Markdown table cell: pipes escaped, line breaks flattened."""
    return " ".join(text.replace("\\", "\\\\").replace("|", "\\|").split())


def _markdown_table(table: Table) -> list[str]:
    out = [
        "| " + " | ".join(_cell(h) for h in table.headers) + " |",
        "|" + "|".join("---:" if n else "---" for n in table.numeric) + "|",
    ]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in table.rows]
    return out


def render_markdown(report: Report) -> str:
    """The report as GitHub-flavoured Markdown: headings and tables."""
    lines = [
        f"# {report.title}",
        "",
        f"{_range(report)}; store `{report.store}`; generated {show_time(report.generated_at)} UTC."
        if report.store
        else f"{_range(report)}; generated {show_time(report.generated_at)} UTC.",
    ]
    for section in layout(report, charts=False):
        lines += ["", f"## {section.title}"]
        for block in section.blocks:
            lines.append("")
            if isinstance(block, Figures):
                lines += _markdown_table(Table(("Measure", "Value"), block.items, (False, True)))
            elif isinstance(block, Table):
                lines += _markdown_table(block)
            elif isinstance(block, Note):
                lines.append(block.text)
    return "\n".join(lines) + "\n"


# -- HTML ----------------------------------------------------------------------------------

# Colours are CSS variables so that the charts (which only carry class names) follow the
# light or dark scheme; the series colours keep their contrast on both backgrounds.
_STYLE: Final = """
:root { color-scheme: light dark;
  --bg: #ffffff; --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --card: #f6f8fa;
  --s0: #2f6fdb; --s1: #d1242f; --s2: #8c959f; }
@media (prefers-color-scheme: dark) { :root {
  --bg: #0d1117; --fg: #e6edf3; --muted: #9198a1; --line: #3d444d; --card: #151b23;
  --s0: #4c8df6; --s1: #f85149; --s2: #6e7681; } }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1100px; padding: 24px; background: var(--bg);
  color: var(--fg); font: 14px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 32px 0 12px; padding-bottom: 4px;
  border-bottom: 1px solid var(--line); }
p { margin: 8px 0; }
.meta { color: var(--muted); }
.figures { display: flex; flex-wrap: wrap; gap: 12px; margin: 8px 0; }
.figure { background: var(--card); border: 1px solid var(--line); border-radius: 6px;
  padding: 8px 14px; min-width: 120px; }
.figure .label { color: var(--muted); font-size: 12px; }
.figure .value { font-size: 20px; font-weight: 600; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 8px 0; width: 100%; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px; text-align: left;
  vertical-align: top; }
th { color: var(--muted); font-weight: 600; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
details { margin: 4px 0 8px; }
summary { cursor: pointer; color: var(--muted); }
svg.chart { width: 100%; height: auto; margin: 8px 0; }
svg.chart text { fill: var(--muted); font-size: 11px; }
svg.chart text.legend { fill: var(--fg); font-size: 12px; }
svg.chart .grid { stroke: var(--line); stroke-dasharray: 2 3; }
svg.chart .baseline { stroke: var(--muted); }
svg.chart .series-0 { fill: var(--s0); }
svg.chart .series-1 { fill: var(--s1); }
svg.chart .series-2 { fill: var(--s2); }
@media print { body { max-width: none; } .scroll { overflow: visible; } }
"""


def _html_table(table: Table) -> str:
    def cells(tag: str, values: tuple[str, ...]) -> str:
        return "".join(
            f'<{tag} class="n">{escape(v)}</{tag}>' if n else f"<{tag}>{escape(v)}</{tag}>"
            for v, n in zip(values, table.numeric, strict=True)
        )

    body = "".join(f"<tr>{cells('td', row)}</tr>" for row in table.rows)
    return (
        f'<div class="scroll"><table><thead><tr>{cells("th", table.headers)}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def _html_section(section: Section) -> str:
    parts = [f"<section><h2>{escape(section.title)}</h2>"]
    for block in section.blocks:
        if isinstance(block, Figures):
            parts.append(
                '<div class="figures">'
                + "".join(
                    f'<div class="figure"><div class="label">{escape(label)}</div>'
                    f'<div class="value">{escape(value)}</div></div>'
                    for label, value in block.items
                )
                + "</div>"
            )
        elif isinstance(block, Table) and block.folded:
            parts.append(
                f"<details><summary>The numbers ({len(block.rows)} rows)</summary>"
                f"{_html_table(block)}</details>"
            )
        elif isinstance(block, Table):
            parts.append(_html_table(block))
        elif isinstance(block, Chart):
            parts.append(block.svg)
        else:
            parts.append(f"<p>{escape(block.text)}</p>")
    parts.append("</section>")
    return "".join(parts)


def render_html(report: Report) -> str:
    """The report as one self-contained HTML5 file with inline SVG charts."""
    store = f"; store <code>{escape(report.store)}</code>" if report.store else ""
    sections = "\n".join(_html_section(s) for s in layout(report, charts=True))
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="generator" content="tachimeter">\n'
        f"<title>{escape(report.title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"<header><h1>{escape(report.title)}</h1>"
        f'<p class="meta">{escape(_range(report))}{store}; generated '
        f"{escape(show_time(report.generated_at))} UTC.</p></header>\n"
        f"<main>\n{sections}\n</main>\n</body>\n</html>\n"
    )


# -- JSON ----------------------------------------------------------------------------------


def render_json(report: Report) -> str:
    """The report's data as indented JSON (the :class:`~tachimeter.report.Report` fields)."""
    return msgspec.json.format(msgspec.json.encode(report), indent=2).decode() + "\n"
