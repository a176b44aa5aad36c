"""``tachimeter ingest FILE|-``: events from JSON lines or CSV into a store.

Every record goes through the server's ingest path (:class:`~tachimeter.server.ingest.IngestDecoder`
with the configured validation limits and privacy scrubber): decoded against the event
model, checked by :func:`~tachimeter.model.validation.validate_event`, secrets scrubbed.
Valid events are written in batches with every default projection, so summaries,
missions and time series stay exact; events already stored (same id) are skipped and
counted as duplicates, so ingesting a file again is harmless. A rejected record is
reported with its line number and every bad field (``line 17: $.timestamp: ...``), the
others are stored, and the run exits 1 unless ``--allow-rejects``.

JSON lines: one event per line in the wire shape (:func:`tachimeter.model.codec.event_to_builtins`),
which is what ``JsonlFileSink`` and ``tachimeter demo --out`` write. Blank lines are skipped.

CSV (UTF-8, a header row, then one event per row). The columns ``tachimeter export --what
events --format csv`` writes are all accepted, so an exported CSV ingested into another
store gives the same rows (same ids: ingesting it again stores nothing new):

============================  ============================================================
column                        meaning
============================  ============================================================
``event`` or ``event_name``   the event name, required: a built-in name (``tool_invoked``)
                              or a custom one (``search_performed``)
``event_type``                the event name when there is no ``event`` or ``event_name``
                              column; next to one of them, the call kind, as in spec 355's
                              table and the export (same as ``call``)
``timestamp``                 required: ISO-8601 (no offset means UTC; a date alone is its
                              midnight) or Unix seconds
``user_id``, ``session_id``   optional; an empty cell is no value (in every column)
``properties``                the event's data as JSON, usually an object; another JSON
                              value is custom data
``prop.<key>``                one property each; a cell that is a JSON number, ``true``,
                              ``false`` or ``null`` is that value, any other text is
                              text, an empty cell leaves the property out; these win over
                              the same key in ``properties`` (which must then be an object)
``context``                   a JSON object as stored (``tachimeter.model.rows``): its
                              ``category``, ``priority``, ``data_kind`` (how to read
                              ``properties``) and ``session_assigned``; ``library`` is
                              ignored (the store writes its own); every other key is
                              metadata
``id``                        the event id (a UUID). Without it, an id is derived from the
                              row's content and time (a UUIDv7), so the same file
                              ingested twice stores each event once
``category``, ``priority``,   as in the wire shape (``usage``, ``high``, ``track`` /
``call``, ``page_url``,       ``page`` / ``identify``, ...); ``category`` and ``priority``
``referrer``                  win over the context's
``mission_id``                the event's mission: the store takes it from
                              ``properties.mission_id`` or the metadata's ``mission_id``,
                              so the cell is used (as metadata) only when neither has one
============================  ============================================================

Any other column is refused before anything is read: name properties ``prop.<key>``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO, Final

import typer

from tachimeter.cli.options import StoreOption, reported_errors

if TYPE_CHECKING:  # imported when the command runs: `tachimeter --help` stays fast
    from rich.console import Console

    from tachimeter.config.settings import AnalyticsConfig
    from tachimeter.model.events import AnalyticsEvent
    from tachimeter.server.ingest import FieldError, IngestDecoder
    from tachimeter.store.projection import Projection
    from tachimeter.store.sqlite import SQLiteStore

__all__ = ["CsvMapping", "IngestReport", "ingest", "ingest_stream"]

# Events per transaction: past about 1 000 the commit cost is amortized (bench/store.py)
# and a batch with every projection is a fraction of a second, so a server writing to the
# same store waits little.
DEFAULT_BATCH: Final = 1_000
_NAME_COLUMNS: Final = ("event", "event_name")
# Spec 355's column: the event name on its own, the call kind next to a name column.
_EVENT_TYPE: Final = "event_type"
_TEXT_COLUMNS: Final = ("user_id", "session_id", "category", "priority", "page_url", "referrer")
_KNOWN: Final = frozenset(
    {
        *_NAME_COLUMNS,
        _EVENT_TYPE,
        *_TEXT_COLUMNS,
        "call",
        "id",
        "timestamp",
        "properties",
        "context",
        "mission_id",
    }
)
# Keys of a stored context that are wire fields, not metadata (tachimeter.model.rows).
_CONTEXT_FIELDS: Final = ("category", "priority", "data_kind", "session_assigned")
_CONTEXT_IGNORED: Final = "library"
_PROPERTY_PREFIX: Final = "prop."
_UTF8_BOM: Final = b"\xef\xbb\xbf"


class InputFormat(enum.Enum):
    """What ``ingest`` reads."""

    jsonl = "jsonl"
    csv = "csv"


class _Reject(Exception):
    """A record that cannot become an event: why (said after its line number)."""


class IngestReport:
    """Counts of one ingest run: records read, events stored, duplicates, rejected."""

    __slots__ = ("duplicates", "read", "rejected", "stored")

    def __init__(self) -> None:
        self.read = 0
        self.stored = 0
        self.duplicates = 0
        self.rejected = 0

    def summary(self) -> str:
        """``read 10, stored 7, duplicates 1, rejected 2``."""
        return (
            f"read {self.read:,}, stored {self.stored:,}, duplicates {self.duplicates:,}, "
            f"rejected {self.rejected:,}"
        )


# -- CSV --------------------------------------------------------------------------------------


def _cell_value(text: str) -> Any:
    """A ``prop.*`` cell: JSON numbers, true, false and null as such, other text as text."""
    import msgspec

    stripped = text.strip()
    if stripped in ("true", "false", "null") or (
        stripped and (stripped[0].isdigit() or stripped[0] in "-.")
    ):
        try:
            value = msgspec.json.decode(stripped)
        except msgspec.DecodeError:
            return text
        if value is None or isinstance(value, bool | int | float):
            return value
    return text


def _apply_context(text: str, wire: dict[str, Any]) -> None:
    """A stored context's wire fields and metadata into ``wire`` (``tachimeter.model.rows``
    writes them; ``row_to_event`` reads them the same way)."""
    import msgspec

    try:
        context = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise _Reject(f"context: not valid JSON ({exc})") from None
    if not isinstance(context, dict):
        raise _Reject(f"context: must be a JSON object, got {type(context).__name__}")
    metadata = {}
    for key, value in context.items():
        if key in _CONTEXT_FIELDS:
            wire[key] = value
        elif key != _CONTEXT_IGNORED:
            metadata[key] = value
    if metadata:
        wire["metadata"] = metadata


def _apply_mission(mission_id: str, wire: dict[str, Any]) -> None:
    """The ``mission_id`` cell as metadata, unless the data or the metadata name one (the
    store takes the mission from there)."""
    data = wire.get("data")
    metadata = wire.get("metadata", {})
    if isinstance(data, dict) and data.get("mission_id") is not None:
        return
    if metadata.get("mission_id") is not None:
        return
    wire["metadata"] = {**metadata, "mission_id": mission_id}


class CsvMapping:
    """Turns CSV rows into wire events by the column mapping (module docstring).

    Built from the header row: unknown or duplicated columns and missing required ones
    raise :class:`~tachimeter.errors.ValidationError` before any row is read.

    >>> mapping = CsvMapping(["event", "timestamp", "user_id", "prop.duration_ms"])
    >>> wire = mapping.wire(["tool_invoked", "2024-03-01T12:00:00Z", "u1", "120"])
    >>> wire["event_type"], wire["data"], wire["user_id"]
    ('tool_invoked', {'duration_ms': 120}, 'u1')
    """

    __slots__ = (
        "_call",
        "_context",
        "_id",
        "_mission",
        "_name",
        "_properties",
        "_props",
        "_seen",
        "_texts",
        "_timestamp",
        "width",
    )

    def __init__(self, header: Sequence[str]) -> None:
        from tachimeter.errors import ValidationError

        columns = [c.strip() for c in header]
        if columns and columns[0].startswith("\ufeff"):
            columns[0] = columns[0][1:]
        seen: set[str] = set()
        for column in columns:
            if column in seen:
                raise ValidationError(f"CSV header: column {column!r} appears twice")
            seen.add(column)
            if column not in _KNOWN and not (
                column.startswith(_PROPERTY_PREFIX) and len(column) > len(_PROPERTY_PREFIX)
            ):
                separator = next((c for c in (";", "\t", "|") if c in column), None)
                if len(columns) == 1 and separator is not None:
                    raise ValidationError(
                        f"CSV header: one column {column!r}; the file looks separated by "
                        f"{separator!r}, and CSV here is separated by commas"
                    )
                if column == _PROPERTY_PREFIX:
                    hint = "prop.<key> names a property: the key is missing"
                else:
                    hint = f"prop.<key> for a property (write prop.{column} to keep it as one)"
                raise ValidationError(
                    f"CSV header: unknown column {column!r}; the columns are "
                    f"{', '.join(sorted(_KNOWN))} and {hint}"
                )
        names = [c for c in columns if c in _NAME_COLUMNS]
        calls = [c for c in columns if c == "call"]
        if not names and _EVENT_TYPE in seen:
            names = [_EVENT_TYPE]
        elif _EVENT_TYPE in seen:
            calls.insert(0, _EVENT_TYPE)
        if len(names) != 1:
            raise ValidationError(
                "CSV header: name the event in exactly one column, event or event_name "
                f"(or event_type without them); got {', '.join(names) or 'none'}"
            )
        if len(calls) > 1:
            raise ValidationError(
                "CSV header: the call kind is in two columns, event_type (next to "
                f"{names[0]}, it is the call kind) and call; keep one"
            )
        if "timestamp" not in seen:
            raise ValidationError("CSV header: a timestamp column is required")
        index = {c: i for i, c in enumerate(columns)}
        self.width = len(columns)
        self._name = index[names[0]]
        self._timestamp = index["timestamp"]
        self._id = index.get("id")
        self._call = index[calls[0]] if calls else None
        self._properties = index.get("properties")
        self._context = index.get("context")
        self._mission = index.get("mission_id")
        self._texts = tuple((c, index[c]) for c in _TEXT_COLUMNS if c in index)
        self._props = tuple(
            (c[len(_PROPERTY_PREFIX) :], i)
            for c, i in index.items()
            if c.startswith(_PROPERTY_PREFIX)
        )
        # Identical rows get different derived ids: the n-th copy hashes its count too.
        self._seen: dict[bytes, int] = {}

    def wire(self, cells: Sequence[str]) -> dict[str, Any]:
        """The wire dict of one row; raises ``_Reject`` saying which cell is wrong."""
        from tachimeter.model.event_types import EventType, event_type_from_name

        if len(cells) != self.width:
            raise _Reject(f"has {len(cells)} cells, the header has {self.width}")
        name = cells[self._name].strip()
        if not name:
            raise _Reject("event: the event name is empty")
        kind = event_type_from_name(name)
        wire: dict[str, Any] = {
            "event_type": kind.value if isinstance(kind, EventType) else {"custom": name},
            "timestamp": self._timestamp_text(cells[self._timestamp].strip()),
        }
        if self._context is not None and cells[self._context].strip():
            _apply_context(cells[self._context], wire)
        for column, i in self._texts:
            if cells[i] != "":
                wire[column] = cells[i]
        if self._call is not None and cells[self._call] != "":
            wire["call"] = cells[self._call]
        self._apply_data(cells, wire)
        if self._mission is not None and cells[self._mission].strip():
            _apply_mission(cells[self._mission].strip(), wire)
        given = cells[self._id].strip() if self._id is not None else ""
        wire["id"] = given or self._derived_id(wire)
        return wire

    def _apply_data(self, cells: Sequence[str], wire: dict[str, Any]) -> None:
        """``properties`` and the ``prop.*`` cells as the wire's ``data`` (none: no data)."""
        import msgspec

        data: Any = None
        given = False
        if self._properties is not None and cells[self._properties].strip():
            try:
                data = msgspec.json.decode(cells[self._properties])
            except msgspec.DecodeError as exc:
                raise _Reject(f"properties: not valid JSON ({exc})") from None
            given = True
        props = {key: _cell_value(cells[i]) for key, i in self._props if cells[i] != ""}
        if props:
            if data is None:
                data = {}
            elif not isinstance(data, dict):
                raise _Reject(
                    "properties: must be a JSON object for prop.<key> cells to add to, "
                    f"got {type(data).__name__}"
                )
            data.update(props)
            given = True
        # An empty object is data too: "{}" stays "{}", unlike an empty cell.
        if given:
            wire["data"] = data

    @staticmethod
    def _timestamp_text(text: str) -> str:
        """ISO text as given (a date alone is its midnight, UTC); Unix seconds as ISO text."""
        import datetime as dt

        try:
            seconds = float(text)
        except ValueError:
            if len(text) == 10:
                try:
                    return dt.date.fromisoformat(text).isoformat() + "T00:00:00Z"
                except ValueError:
                    pass
            return text
        try:
            return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat()
        except (OverflowError, OSError, ValueError):
            hint = (
                "; milliseconds since the epoch? write seconds (divide by 1000)"
                if abs(seconds) >= 1e11
                else ""
            )
            raise _Reject(f"timestamp: {text!r} is out of range as Unix seconds{hint}") from None

    def _derived_id(self, wire: dict[str, Any]) -> str:
        """A UUIDv7 whose time is the event's and whose other bits hash its content."""
        import datetime as dt
        import hashlib
        import uuid

        import msgspec

        content = msgspec.json.encode(wire, order="sorted")
        copy = self._seen.get(content, 0)
        self._seen[content] = copy + 1
        digest = hashlib.sha256(content + b"#" + str(copy).encode()).digest()
        try:
            stamp = dt.datetime.fromisoformat(wire["timestamp"])
            if stamp.tzinfo is None:
                stamp = stamp.replace(tzinfo=dt.UTC)
            ms = max(0, min(int(stamp.timestamp() * 1000), (1 << 48) - 1))
        except ValueError:
            ms = 0  # the decoder rejects the timestamp, naming it
        bits = int.from_bytes(digest[:10], "big")
        value = (
            (ms << 80)
            | (0x7 << 76)
            | ((bits >> 62 & 0xFFF) << 64)
            | (0b10 << 62)
            | (bits & ((1 << 62) - 1))
        )
        return str(uuid.UUID(int=value))


# -- readers: (line number, JSON payload or None, why it was refused) ------------------------

_Record = tuple[int, bytes | None, str | None]


def _jsonl_records(stream: BinaryIO) -> Iterator[_Record]:
    for number, line in enumerate(stream, 1):
        text = line.strip()
        if number == 1 and text.startswith(_UTF8_BOM):
            text = text[len(_UTF8_BOM) :].strip()
        if text:
            yield number, text, None


def _csv_records(stream: BinaryIO) -> Iterator[_Record]:
    """Rows as JSON payloads; the header is checked when the first record is asked for."""
    import csv

    import msgspec

    # Each physical line is decoded on its own, so a bad byte costs only the record that
    # holds it (a decoder over the whole stream fails a chunk of lines at once).
    bad_utf8: dict[int, str] = {}

    def lines() -> Iterator[str]:
        for number, raw in enumerate(stream, 1):
            try:
                yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                bad_utf8[number] = f"not valid UTF-8 (byte {exc.start}: {exc.reason})"
                yield raw.decode("utf-8", "replace")

    reader = csv.reader(lines())
    try:
        header = next(reader, None)
    except csv.Error as exc:
        from tachimeter.errors import ValidationError

        raise ValidationError(f"CSV header: cannot be read: {exc}") from None
    if header is not None and bad_utf8:
        from tachimeter.errors import ValidationError

        raise ValidationError(f"CSV header: {bad_utf8[min(bad_utf8)]}")
    if header is None:
        return
    mapping = CsvMapping(header)
    encode = msgspec.json.encode
    while True:
        line = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield line, None, f"not valid CSV: {exc}"
            continue
        broken = [n for n in range(line, reader.line_num + 1) if n in bad_utf8]
        if broken:
            yield line, None, bad_utf8[broken[0]]
            continue
        if not cells or all(not c.strip() for c in cells):
            continue
        try:
            yield line, encode(mapping.wire(cells)), None
        except _Reject as exc:
            yield line, None, str(exc)


# -- writing ---------------------------------------------------------------------------------


def _field_errors(errors: Sequence[FieldError]) -> str:
    """``$.timestamp: ...; $.data.x: ...`` with the one-event wrapper's ``[0]`` removed."""
    parts = []
    for error in errors:
        path = error.path
        if path.startswith("$[0]"):
            path = "$" + path[4:]
        parts.append(f"{path}: {error.message}")
    return "; ".join(parts)


def _syntax_reason(payload: bytes, detail: str) -> str:
    """Why a payload the decoder refused as a whole is not one JSON value (byte offsets of
    the line itself, not of the one-event array the decoder was given)."""
    import msgspec

    try:
        payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not valid UTF-8 (byte {exc.start}: {exc.reason})"
    try:
        msgspec.json.decode(payload)
    except msgspec.DecodeError as exc:
        return f"not valid JSON: {exc}"
    except RecursionError:
        return "not valid JSON: nested too deeply"
    return detail


class _Writer:
    """Decodes, validates and scrubs records one by one; writes valid events in batches."""

    __slots__ = (
        "_batch",
        "_decoder",
        "_first_line",
        "_problem",
        "_projections",
        "_reject",
        "_size",
        "_store",
    )

    def __init__(
        self,
        store: SQLiteStore,
        projections: Sequence[Projection],
        decoder: IngestDecoder,
        size: int,
        reject: Callable[[str, str], None],
    ) -> None:
        self._store = store
        self._projections = projections
        self._decoder = decoder
        self._size = size
        self._reject = reject
        self._batch: list[AnalyticsEvent] = []
        self._first_line = 0
        from tachimeter.server.ingest import Problem

        self._problem = Problem

    def offer(self, line: int, payload: bytes, report: IngestReport) -> None:
        try:
            decoded = self._decoder.decode(
                b"[" + payload + b"]", "application/json", None, partial=True
            )
        except self._problem as exc:
            self._refuse(line, _syntax_reason(payload, exc.detail), report)
            return
        if decoded.received != 1:
            self._refuse(line, "not one JSON value; write one event per line", report)
            return
        if decoded.rejected:
            self._refuse(line, _field_errors(decoded.rejected), report)
            return
        if not self._batch:
            self._first_line = line
        self._batch.append(decoded.events[0])
        if len(self._batch) >= self._size:
            self.flush(line, report)

    def _refuse(self, line: int, reason: str, report: IngestReport) -> None:
        report.rejected += 1
        self._reject(f"line {line}", reason)

    def flush(self, last_line: int, report: IngestReport) -> None:
        if not self._batch:
            return
        result = self._store.write_batch(self._batch, projections=self._projections)
        report.stored += result.inserted
        report.duplicates += result.duplicates
        if result.rejected:
            report.rejected += result.rejected
            self._reject(
                f"lines {self._first_line}-{last_line}",
                f"{result.rejected} valid events could not be encoded for storage "
                "(the log names them)",
            )
        self._batch = []


def ingest_stream(
    stream: BinaryIO,
    format: InputFormat,
    store: SQLiteStore,
    *,
    projections: Sequence[Projection],
    decoder: IngestDecoder,
    batch_size: int = DEFAULT_BATCH,
    on_reject: Callable[[str, str], None],
    on_progress: Callable[[int], None] | None = None,
) -> IngestReport:
    """Read every record of ``stream`` into ``store``; ``on_reject(where, why)`` is told of
    each refused record, ``on_progress(records)`` after each batch."""
    report = IngestReport()
    writer = _Writer(store, projections, decoder, batch_size, on_reject)
    records = _jsonl_records(stream) if format is InputFormat.jsonl else _csv_records(stream)
    line = 0
    for line, payload, reason in records:
        report.read += 1
        if payload is None:
            report.rejected += 1
            on_reject(f"line {line}", reason or "unreadable")
        else:
            writer.offer(line, payload, report)
        if on_progress is not None and report.read % batch_size == 0:
            on_progress(report.read)
    writer.flush(line, report)
    if on_progress is not None:
        on_progress(report.read)
    return report


def _format_of(file: str, chosen: InputFormat | None) -> InputFormat:
    if chosen is not None:
        return chosen
    suffix = Path(file).suffix.lower()
    if suffix == ".csv":
        return InputFormat.csv
    if suffix in ("", ".jsonl", ".ndjson", ".json", ".log") or file == "-":
        return InputFormat.jsonl
    from tachimeter.errors import ValidationError

    raise ValidationError(
        f"cannot tell the format of {file!r} from its extension; pass --format jsonl or csv"
    )


def _decoder() -> tuple[IngestDecoder, AnalyticsConfig]:
    from tachimeter.config.sources import load_config
    from tachimeter.privacy import Scrubber
    from tachimeter.server.ingest import IngestDecoder

    config = load_config()
    privacy = config.privacy
    # As the server does: user ids are not hashed here, events from a Tachimeter collector
    # were hashed by it (per its own settings), and hashing is not idempotent.
    scrubber = Scrubber(
        extra_patterns=privacy.extra_patterns,
        drop_keys=privacy.drop_keys,
        sensitive_key_action=privacy.sensitive_key_action,
    )
    decoder = IngestDecoder(
        scrubber, config.validation, max_body_bytes=config.validation.max_batch_bytes
    )
    return decoder, config


class _RejectPrinter:
    """Prints the first ``limit`` rejected records as ``line 17: why``; counts the rest."""

    __slots__ = ("_console", "_limit", "hidden", "shown")

    def __init__(self, console: Console, limit: int) -> None:
        self._console = console
        self._limit = limit
        self.shown = 0
        self.hidden = 0

    def __call__(self, where: str, why: str) -> None:
        if self.shown < self._limit:
            self.shown += 1
            # markup off: messages quote user data, "[REDACTED]" must print as it is.
            self._console.print(f"{where}: {why}", markup=False, highlight=False, soft_wrap=True)
        else:
            self.hidden += 1


def ingest(
    file: Annotated[
        str, typer.Argument(metavar="FILE|-", help="A JSONL or CSV file; - reads standard input.")
    ],
    store: StoreOption = None,
    format: Annotated[
        InputFormat | None,
        typer.Option(
            "--format",
            help="jsonl or csv (default: from the extension; standard input is jsonl).",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, max=10_000, help="Events per transaction.")
    ] = DEFAULT_BATCH,
    allow_rejects: Annotated[
        bool, typer.Option(help="Exit 0 even when some records were rejected.")
    ] = False,
    max_reported: Annotated[
        int, typer.Option(min=0, help="Print at most this many rejected records.")
    ] = 100,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Store events from JSON lines or CSV, validated and scrubbed as the server does.

    Rejected records are listed (line 17: $.timestamp: ...) and the others stored; the
    exit status is 1 when any was rejected, unless --allow-rejects. Events already in
    the store are skipped, so a file can be ingested again after fixing it. CSV columns:
    event (or event_name), timestamp, user_id, session_id, properties (JSON) and
    prop.KEY columns, id, category, priority, call, page_url, referrer, context,
    mission_id: every column of tachimeter export --what events --format csv, which
    ingests back to the same rows.

    Example: tachimeter ingest events.jsonl --store analytics.db

    Example: gunzip -c events.jsonl.gz | tachimeter ingest - --store analytics.db

    Example: tachimeter ingest signups.csv --allow-rejects

    Example: tachimeter ingest exported.csv --store copy.db  (written by tachimeter export)
    """
    from tachimeter.cli.options import store_path
    from tachimeter.cli.output import plain_console

    errors = plain_console(stderr=True)
    with reported_errors():
        chosen = _format_of(file, format)
        decoder, config = _decoder()
        path = store_path(store) if store is not None else Path(config.storage.path).expanduser()
        try:
            if file == "-":
                stream: BinaryIO = typer.get_binary_stream("stdin")
                total: int | None = None
            else:
                stream = open(file, "rb")  # noqa: SIM115 - closed below
                total = Path(file).stat().st_size
        except OSError as exc:
            typer.echo(f"error: cannot read {file}: {exc.strerror or exc}", err=True)
            raise typer.Exit(2) from None
        reject = _RejectPrinter(errors, max_reported)
        try:
            report = _run(
                stream, chosen, path, config, decoder, batch_size, reject, total, errors, quiet
            )
        finally:
            if file != "-":
                stream.close()
    if reject.hidden:
        errors.print(f"... and {reject.hidden:,} more rejected records", markup=False)
    typer.echo(f"{report.summary()} -> {path}")
    if report.rejected and not allow_rejects:
        typer.echo(
            f"error: {report.rejected:,} of {report.read:,} records were rejected (listed "
            "above); the valid ones are stored. Fix them and ingest again (stored events are "
            "skipped), or pass --allow-rejects",
            err=True,
        )
        raise typer.Exit(1)


def _run(
    stream: BinaryIO,
    chosen: InputFormat,
    path: Path,
    config: AnalyticsConfig,
    decoder: IngestDecoder,
    batch_size: int,
    reject: Callable[[str, str], None],
    total: int | None,
    console: Console,
    quiet: bool,
) -> IngestReport:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from tachimeter.defaults import default_projections
    from tachimeter.store.sqlite import SQLiteStore

    with SQLiteStore(path, config) as opened:
        projections = default_projections(config)

        def run(on_progress: Callable[[int], None] | None = None) -> IngestReport:
            return ingest_stream(
                stream,
                chosen,
                opened,
                projections=projections,
                decoder=decoder,
                batch_size=batch_size,
                on_reject=reject,
                on_progress=on_progress,
            )

        if quiet or not console.is_terminal:
            return run()
        by_bytes = total is not None
        columns = (
            (BarColumn(), DownloadColumn(), TimeRemainingColumn())
            if by_bytes
            else (MofNCompleteColumn(), TextColumn("records"), TimeElapsedColumn())
        )
        # The bar and the rejected records share one console: rich keeps the bar below
        # the lines printed while it runs.
        with Progress(TextColumn("ingesting"), *columns, console=console, transient=True) as bar:
            task = bar.add_task("ingest", total=total)

            def progress(records: int) -> None:
                bar.update(task, completed=stream.tell() if by_bytes else records)

            return run(progress)
