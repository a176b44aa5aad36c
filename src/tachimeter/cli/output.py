"""What the reading commands print: rows as a rich table, JSON or CSV (``--format``).

A command builds one or more :class:`Rows` (named columns and their values) and hands
them to :func:`write_rows`:

* ``table``: a rich table per section, for people (long values fold, nothing is cut);
* ``json``: one section is a JSON array of objects keyed by column (a *record*, one
  row shown vertically in a table, is a single object); several sections are an object
  of those, keyed by section name;
* ``csv``: one section is plain CSV with a header row. Several sections are CSV blocks,
  each introduced by a ``# <name>`` line and separated by a blank line.

Values keep their types in JSON (datetimes as RFC 3339 text, NaN as null); in CSV, None
is an empty cell, booleans are ``true``/``false``, and lists, objects and Structs are
compact JSON.

>>> import io
>>> buffer = io.StringIO()
>>> write_rows(Rows(name="days", columns=("day", "events"), rows=[("2024-03-01", 3)]),
...            "csv", out=buffer)
>>> buffer.getvalue().splitlines()
['day,events', '2024-03-01,3']
"""

from __future__ import annotations

import csv
import datetime as dt
import enum
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, TextIO, TypeAlias

import msgspec

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "OutputFormat",
    "Rows",
    "plain_console",
    "record_of",
    "rows_of",
    "unique_keys",
    "write_rows",
]

OutputFormat: TypeAlias = Literal["table", "json", "csv"]

_json_encoder: Final = msgspec.json.Encoder()
# The widest a table printed into a pipe or a file may be (a long JSON cell still folds).
_PIPED_WIDTH: Final = 400


class Rows(msgspec.Struct, frozen=True, kw_only=True):
    """One section of output: a name (JSON key, CSV block), columns and rows.

    ``record`` marks a single row to show vertically (field, value) in a table and as one
    JSON object.
    """

    name: str
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    title: str | None = None
    record: bool = False


def rows_of(
    name: str,
    items: Iterable[msgspec.Struct],
    columns: Sequence[str],
    *,
    title: str | None = None,
) -> Rows:
    """A section from Structs, one row each, reading the named fields."""
    return Rows(
        name=name,
        columns=tuple(columns),
        rows=[tuple(getattr(item, c) for c in columns) for item in items],
        title=title,
    )


def record_of(name: str, values: Mapping[str, Any], *, title: str | None = None) -> Rows:
    """A one-row section shown vertically: a mission, a set of statistics."""
    return Rows(
        name=name,
        columns=tuple(values),
        rows=[tuple(values.values())],
        title=title,
        record=True,
    )


def _builtin(value: Any) -> Any:
    """A JSON-ready value: NaN and infinities become None (JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def unique_keys(columns: Sequence[str]) -> list[str]:
    """Column names as distinct JSON keys: a repeated name gets ``_2``, ``_3``...

    >>> unique_keys(["user_id", "user_id", "n", "user_id_2"])
    ['user_id', 'user_id_3', 'n', 'user_id_2']
    """
    taken = set(columns)
    seen: set[str] = set()
    keys: list[str] = []
    for column in columns:
        key = column
        if key in seen:
            n = 2
            while f"{column}_{n}" in taken:
                n += 1
            key = f"{column}_{n}"
            taken.add(key)
        seen.add(key)
        keys.append(key)
    return keys


def _json_sections(sections: Sequence[Rows]) -> Any:
    def one(section: Rows) -> Any:
        keys = unique_keys(section.columns)
        objects = [{c: _builtin(v) for c, v in zip(keys, row, strict=True)} for row in section.rows]
        if section.record:
            return objects[0] if objects else None
        return objects

    if len(sections) == 1:
        return one(sections[0])
    return {s.name: one(s) for s in sections}


def _cell(value: Any) -> str:
    """A value as CSV text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, float):
        return "" if not math.isfinite(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dt.datetime | dt.date):
        return _json_encoder.encode(value).decode().strip('"')
    return _json_encoder.encode(value).decode()


def _shown(value: Any) -> str:
    """A value as table text: short numbers and times, compact JSON for the rest."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return ""
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    if isinstance(value, dt.datetime):
        moment: dt.datetime = value if value.tzinfo is None else value.astimezone(dt.UTC)
        text = moment.strftime("%Y-%m-%d %H:%M:%S.%f")
        return text.removesuffix(".000000").removesuffix(" 00:00:00")
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and all(isinstance(v, int | float) for v in value.values()):
        return ", ".join(f"{_shown(k)}: {_shown(v)}" for k, v in value.items())
    return _json_encoder.encode(value).decode()


def _numeric(section: Rows, index: int) -> bool:
    values = [row[index] for row in section.rows if row[index] is not None]
    return bool(values) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values
    )


def plain_console(out: TextIO | None = None, *, stderr: bool = False) -> Console:
    """A rich console for stored text: no markup is read from what it prints (a value
    such as ``[/]`` prints as it is), and into a pipe or a file a table keeps its natural
    width instead of folding ids and timestamps to the 80 columns rich assumes there."""
    from rich.console import Console

    console = Console(file=out, stderr=stderr, markup=False, highlight=False)
    if not console.is_terminal:
        console = Console(
            file=out, stderr=stderr, markup=False, highlight=False, width=_PIPED_WIDTH
        )
    return console


def _write_table(sections: Sequence[Rows], out: TextIO | None) -> None:
    from rich.table import Table
    from rich.text import Text

    # Cells are Text, never markup: stored values such as "[error] disk full" or "[/]"
    # print as they are.
    console = plain_console(out)
    for section in sections:
        title = Text(section.title or section.name, style="table.title")
        if section.record:
            table = Table(title=title, show_header=False)
            table.add_column("field", style="bold")
            table.add_column("value", overflow="fold")
            for column, value in zip(section.columns, section.rows[0], strict=True):
                table.add_row(Text(column), Text(_shown(value)))
        else:
            table = Table(title=title)
            for i, column in enumerate(section.columns):
                table.add_column(
                    Text(column, style="table.header"),
                    justify="right" if _numeric(section, i) else "left",
                    overflow="fold",
                )
            for row in section.rows:
                table.add_row(*(Text(_shown(v)) for v in row))
            if not section.rows:
                table.caption = "no rows"
        console.print(table)


def _write_csv(sections: Sequence[Rows], out: TextIO) -> None:
    writer = csv.writer(out, lineterminator="\n")
    several = len(sections) > 1
    for i, section in enumerate(sections):
        if several:
            if i:
                out.write("\n")
            out.write(f"# {section.name}\n")
        writer.writerow(section.columns)
        for row in section.rows:
            writer.writerow([_cell(v) for v in row])


def write_rows(
    sections: Rows | Sequence[Rows], format: OutputFormat, *, out: TextIO | None = None
) -> None:
    """Print the sections in ``format`` to ``out`` (default: standard output)."""
    chosen = [sections] if isinstance(sections, Rows) else list(sections)
    if format == "table":
        _write_table(chosen, out)
        return
    stream = out if out is not None else sys.stdout
    if format == "json":
        encoded = msgspec.json.format(msgspec.json.encode(_json_sections(chosen)), indent=2)
        stream.write(encoded.decode() + "\n")
    elif format == "csv":
        _write_csv(chosen, stream)
    else:
        raise ValueError(f"format must be table, json or csv, got {format!r}")
