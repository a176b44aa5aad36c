"""Options the ingest, query and missions commands share: the store, time ranges, output
format, and how their errors are reported.

Times (``--since``, ``--until``) are ISO-8601 (``2024-03-01``, ``2024-03-01T12:00``,
``2024-03-01T12:00:00+02:00``; no offset means UTC), ``now``, or a duration back from
now (``7d``, ``12h``, ``1h30m``, ``2w``).

>>> now = dt.datetime(2024, 3, 8, 12, tzinfo=dt.UTC)
>>> parse_time("7d", "--since", now=now).isoformat()
'2024-03-01T12:00:00+00:00'
>>> parse_time("2024-03-01", "--since", now=now).isoformat()
'2024-03-01T00:00:00+00:00'
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final

import typer

from tachimeter.errors import QueryError, TachimeterError

if TYPE_CHECKING:  # imported when a command runs: `tachimeter --help` stays fast
    import sqlite3

    from tachimeter.store.summaries import PropertyFilter

__all__ = [
    "Format",
    "FormatOption",
    "SinceOption",
    "StoreOption",
    "UntilOption",
    "WhereOption",
    "command_group",
    "database_file",
    "existing_store",
    "parse_duration_seconds",
    "parse_time",
    "parse_where",
    "read_store",
    "reported_errors",
    "store_path",
    "time_range",
]


class Format(enum.Enum):
    """Output formats of the reading commands."""

    table = "table"
    json = "json"
    csv = "csv"


StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        "--db",
        help="The SQLite store (default: storage.path of the configuration).",
        show_default=False,
    ),
]
FormatOption = Annotated[
    Format, typer.Option("--format", "-f", help="table (for people), json or csv.")
]
SinceOption = Annotated[
    str | None,
    typer.Option(help="From this time: ISO-8601 (2024-03-01, 2024-03-01T12:00Z) or 7d, 12h ago."),
]
UntilOption = Annotated[
    str | None,
    typer.Option(help="Until this time, exclusive: ISO-8601, now, or 1d ago (default: now)."),
]

WhereOption = Annotated[
    list[str] | None,
    typer.Option(
        "--where",
        help="A property filter, repeatable (all must match): model=gpt-4o, "
        "duration_ms>=100, status!=ok, message~timeout (contains), error (exists), !error.",
        show_default=False,
    ),
]


def command_group(name: str, help: str) -> typer.Typer:
    """A group of commands as the CLI's groups are: its help when run without a command,
    no shell completion, no rich tracebacks (errors are one ``error:`` line).

    >>> command_group("missions", "Stored missions.").info.name
    'missions'
    """
    return typer.Typer(
        rich_markup_mode="markdown",
        name=name,
        help=help,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )


_AGO: Final = re.compile(r"^-?((?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+)$")
# The path is everything before the first operator; longer operators are tried first.
_WHERE: Final = re.compile(r"^(?P<path>[^=!<>~]+?)\s*(?P<op>!=|>=|<=|=|>|<|~)\s*(?P<value>.*)$")
_WHERE_OPS: Final = {
    "=": "eq",
    "!=": "ne",
    ">": "gt",
    ">=": "gte",
    "<": "lt",
    "<=": "lte",
    "~": "contains",
}


def parse_duration_seconds(text: str, name: str) -> float:
    """Seconds in a duration such as ``90s``, ``5m``, ``1h30m``, ``7d``; ``QueryError`` else."""
    from tachimeter.alerts.durations import parse_duration

    try:
        return parse_duration(text, name, allow_zero=False)
    except TachimeterError as exc:
        raise QueryError(str(exc)) from None


def parse_time(text: str, name: str, *, now: dt.datetime | None = None) -> dt.datetime:
    """An aware UTC datetime from ISO-8601, ``now`` or a duration back from now."""
    value = text.strip()
    current = now if now is not None else dt.datetime.now(dt.UTC)
    if value.lower() == "now":
        return current
    ago = _AGO.match(value.replace(" ", ""))
    if ago is not None:
        seconds = parse_duration_seconds(ago.group(1), name)
        try:
            return current - dt.timedelta(seconds=seconds)
        except OverflowError:
            raise QueryError(
                f"{name} {text!r} reaches before year 1; give a shorter duration or a date"
            ) from None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise QueryError(
            f"{name} {text!r} is not a time; write ISO-8601 (2024-03-01, "
            "2024-03-01T12:00:00Z), now, or a duration back from now (7d, 12h, 30m)"
        ) from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


def time_range(
    since: str | None,
    until: str | None,
    *,
    default_since: str | None = None,
    now: dt.datetime | None = None,
) -> tuple[dt.datetime | None, dt.datetime]:
    """``(start, end)`` from ``--since`` and ``--until``; ``end`` defaults to now."""
    current = now if now is not None else dt.datetime.now(dt.UTC)
    end = parse_time(until, "--until", now=current) if until is not None else current
    chosen = since if since is not None else default_since
    start = parse_time(chosen, "--since", now=current) if chosen is not None else None
    if start is not None and end < start:
        raise QueryError(
            f"--until ({end.isoformat()}) is before --since ({start.isoformat()}); swap them"
        )
    return start, end


def _where_value(text: str) -> Any:
    """A filter value: JSON (a number, true, false, null, "quoted text") if it parses as
    such, else the text as written."""
    import msgspec

    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return text
    return value if value is None or isinstance(value, bool | int | float | str) else text


def parse_where(filters: list[str] | None) -> list[PropertyFilter]:
    """``--where`` texts as property filters; ``QueryError`` naming a bad one.

    >>> [(f.path, f.op, f.value) for f in parse_where(["duration_ms>=100", "!error"])]
    [('duration_ms', 'gte', 100), ('error', 'not_exists', None)]
    """
    from tachimeter.store.summaries import PropertyFilter

    out: list[PropertyFilter] = []
    for text in filters or ():
        stripped = text.strip()
        found = _WHERE.match(stripped)
        if found is not None:
            op = _WHERE_OPS[found.group("op")]
            value = _where_value(found.group("value").strip())
            if op in ("gt", "gte", "lt", "lte") and not isinstance(value, int | float):
                raise QueryError(f"--where {text!r}: {found.group('op')} compares numbers only")
            out.append(PropertyFilter(found.group("path").strip(), op, value))  # type: ignore[arg-type]
        elif stripped.startswith("!"):
            out.append(PropertyFilter(stripped[1:].strip(), "not_exists"))
        elif stripped:
            out.append(PropertyFilter(stripped, "exists"))
        else:
            raise QueryError("--where needs a filter such as model=gpt-4o")
    return out


def store_path(store: str | None) -> Path:
    """The store named by ``--store``, else ``storage.path`` of the configuration."""
    if store is not None:
        return Path(store).expanduser()
    from tachimeter.config.sources import load_config

    return Path(load_config().storage.path).expanduser()


def existing_store(store: str | None) -> Path:
    """:func:`store_path`, which must be a file: ``QueryError`` otherwise."""
    path = store_path(store)
    if not path.is_file():
        raise QueryError(
            f"no store at {str(path)!r}; pass --store, or fill one first "
            "(tachimeter ingest FILE --store PATH)"
        )
    return path


@contextlib.contextmanager
def read_store(store: str | None) -> Iterator[sqlite3.Connection]:
    """A read-only connection to an existing store, closed after the block.

    Read-only (``mode=ro`` and ``query_only``): a query never migrates, locks or creates
    a file, so it is safe next to a running collector or server.
    """
    import sqlite3

    path = existing_store(store)
    conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, isolation_level=None)
    try:
        conn.execute("PRAGMA query_only = ON")
        conn.execute("PRAGMA busy_timeout = 5000")
        yield conn
    finally:
        conn.close()


def database_file(conn: sqlite3.Connection) -> str:
    """The file of a connection's main database, as SQLite names it (for messages)."""
    return str(conn.execute("PRAGMA database_list").fetchone()[2])


@contextlib.contextmanager
def reported_errors(options: Mapping[str, str] | None = None) -> Iterator[None]:
    """Tachimeter errors inside the block print one ``error: ...`` line and exit 2.

    The same as the console script's ``main()`` does, so that a command behaves alike when
    run in-process (typer's test runner, another program's ``app()``). ``options`` maps
    the Python API's parameter names, as its messages name them, to the command's options
    (``{"timeout_seconds": "--timeout"}``): the user is told about what they typed.
    """
    try:
        yield
    except TachimeterError as exc:
        message = str(exc)
        for name, option in (options or {}).items():
            message = message.replace(name, option)
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(2) from None
