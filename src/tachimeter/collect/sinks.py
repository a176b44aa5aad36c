"""Event sinks: where delivered batches go (spec 408's ``EventSink``).

A sink is anything with ``name``, ``process(batch)`` and ``flush()``. Each registered
sink gets its own delivery thread in the collector, so a slow or failing sink never
holds up the others. ``flush()`` returning normally means the sink made everything it
was given durable (for file sinks: written and fsynced): that is when events count as
acknowledged.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import IO, Protocol, runtime_checkable

import msgspec

from tachimeter.errors import SinkError
from tachimeter.model.codec import event_to_builtins
from tachimeter.model.events import AnalyticsEvent, EventBatch

__all__ = ["ConsoleSink", "EventSink", "JsonlFileSink", "MemorySink"]


@runtime_checkable
class EventSink(Protocol):
    """Receives batches of events. Raise :class:`SinkError` (or anything) on failure."""

    @property
    def name(self) -> str:
        """Unique name among a collector's sinks (used by ``unregister_sink``)."""
        ...

    def process(self, batch: EventBatch) -> None:
        """Take one batch."""
        ...

    def flush(self) -> None:
        """Make everything taken so far durable."""
        ...


class MemorySink:
    """Keeps batches in memory (tests, notebooks).

    >>> sink = MemorySink(); sink.events()
    []
    """

    __slots__ = ("_batches", "_lock", "name")

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self._batches: list[EventBatch] = []
        self._lock = threading.Lock()

    def process(self, batch: EventBatch) -> None:
        """Keep the batch."""
        with self._lock:
            self._batches.append(batch)

    def flush(self) -> None:
        """Nothing to do."""

    def get_events(self) -> list[EventBatch]:
        """The batches received so far (spec 408's name)."""
        with self._lock:
            return list(self._batches)

    def events(self) -> list[AnalyticsEvent]:
        """All events received so far, in delivery order."""
        with self._lock:
            return [e for b in self._batches for e in b.events]

    def clear(self) -> None:
        """Forget everything received."""
        with self._lock:
            self._batches.clear()


class ConsoleSink:
    """Prints one line per event (debugging).

    >>> ConsoleSink("app").name
    'console'
    """

    __slots__ = ("_stream", "name", "prefix")

    def __init__(self, prefix: str = "tachimeter", stream: IO[str] | None = None) -> None:
        self.name = "console"
        self.prefix = prefix
        self._stream = stream

    def process(self, batch: EventBatch) -> None:
        """Print the batch's events."""
        stream = self._stream or sys.stderr
        lines = [f"[{self.prefix}] {e.event_type.event_name}: {e.data!r}\n" for e in batch.events]
        stream.write("".join(lines))

    def flush(self) -> None:
        """Flush the stream."""
        (self._stream or sys.stderr).flush()


class JsonlFileSink:
    """Appends one JSON object per event to a file, rotating by size.

    When the file would pass ``max_bytes`` it is renamed to ``<name>.1`` (older files
    shift up to ``backups``) and a new file is started. ``flush()`` writes and fsyncs.
    After ``os.fork()`` the child reopens the file rather than share the parent's handle.

    >>> import tempfile, pathlib
    >>> sink = JsonlFileSink(pathlib.Path(tempfile.mkdtemp()) / "events.jsonl")
    >>> sink.name
    'jsonl'
    """

    __slots__ = ("_backups", "_file", "_lock", "_max_bytes", "_path", "_pid", "_size", "name")

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = 100 * 1024 * 1024,
        backups: int = 5,
        name: str = "jsonl",
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"JsonlFileSink max_bytes must be > 0, got {max_bytes}")
        self.name = name
        self._path = Path(path).expanduser()
        self._max_bytes = max_bytes
        self._backups = backups
        self._lock = threading.Lock()
        self._file: IO[bytes] | None = None
        self._pid = os.getpid()
        self._size = 0

    @property
    def path(self) -> Path:
        """The current file."""
        return self._path

    def _open(self) -> IO[bytes]:
        if self._file is None or self._pid != os.getpid():
            self._pid = os.getpid()
            try:
                self._path.parent.mkdir(parents=True, exist_ok=True)
                self._file = open(self._path, "ab")  # noqa: SIM115 - kept open between batches
            except OSError as exc:
                raise SinkError(f"jsonl sink cannot open {str(self._path)!r}: {exc}") from exc
            self._size = self._file.seek(0, os.SEEK_END)
        return self._file

    def _rotate(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
        for i in range(self._backups - 1, 0, -1):
            older = self._path.with_name(f"{self._path.name}.{i}")
            if older.exists():
                older.replace(self._path.with_name(f"{self._path.name}.{i + 1}"))
        if self._backups > 0:
            self._path.replace(self._path.with_name(f"{self._path.name}.1"))
        else:
            self._path.unlink()

    def process(self, batch: EventBatch) -> None:
        """Append the batch's events as JSON lines (buffered until ``flush``)."""
        encode = msgspec.json.encode
        data = b"".join(encode(event_to_builtins(e)) + b"\n" for e in batch.events)
        with self._lock:
            try:
                handle = self._open()
                if self._size and self._size + len(data) > self._max_bytes:
                    self._rotate()
                    handle = self._open()
                handle.write(data)
                self._size += len(data)
            except OSError as exc:
                raise SinkError(f"jsonl sink cannot write {str(self._path)!r}: {exc}") from exc

    def flush(self) -> None:
        """Write buffered lines and fsync."""
        with self._lock:
            if self._file is None:
                return
            try:
                self._file.flush()
                os.fsync(self._file.fileno())
            except OSError as exc:
                raise SinkError(f"jsonl sink cannot flush {str(self._path)!r}: {exc}") from exc

    def close(self) -> None:
        """Flush and close the file."""
        self.flush()
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
