"""An append-only on-disk spool of encoded events, for the ``spill`` back-pressure policy.

Record format: a 4-byte little-endian payload length, a 4-byte CRC-32 of the payload,
then the payload (one event, MessagePack). A torn or corrupt record ends the readable
part of the file: replay stops there, counts the skipped bytes' records as corrupt, and
the next write truncates them away, so one bad tail never poisons later records.

Only the collector's worker thread touches a spool; it needs no lock.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import Literal

from tachimeter.errors import StoreError

__all__ = ["Spool"]

_HEADER = struct.Struct("<II")
FsyncPolicy = Literal["always", "batch", "never"]
# A record larger than this is corruption, not an event (events are capped at 64 KiB).
_MAX_RECORD = 16 * 1024 * 1024


class Spool:
    """Durable FIFO of encoded records in ``directory/name`` (default ``spool.bin``).

    >>> import tempfile
    >>> spool = Spool(tempfile.mkdtemp())
    >>> spool.append([b"a", b"b"]); spool.read(10)
    [b'a', b'b']
    """

    __slots__ = ("_corrupt", "_file", "_fsync", "_path", "_pending", "_read_offset")

    def __init__(
        self,
        directory: str | os.PathLike[str],
        fsync: FsyncPolicy = "batch",
        *,
        name: str = "spool.bin",
    ) -> None:
        path = Path(directory).expanduser()
        try:
            path.mkdir(parents=True, exist_ok=True)
            self._file = open(path / name, "a+b")  # noqa: SIM115 - kept open for appends
        except OSError as exc:
            raise StoreError(
                f"cannot open the spool in {str(path)!r}: {exc}; set collection.spool_dir "
                "to a writable directory"
            ) from exc
        self._path = path / name
        self._fsync = fsync
        self._read_offset = 0
        self._corrupt = 0
        records, end = self._read_from(0, limit=None)
        self._pending = len(records)
        if end < self._size():
            self._corrupt += 1
            self._file.truncate(end)  # drop a torn tail so later appends stay readable

    @property
    def path(self) -> Path:
        """The spool file."""
        return self._path

    @property
    def pending(self) -> int:
        """Records written and not yet read back."""
        return self._pending

    @property
    def corrupt_records(self) -> int:
        """Torn or corrupt tails dropped since opening."""
        return self._corrupt

    def _size(self) -> int:
        return os.fstat(self._file.fileno()).st_size

    def _read_from(self, offset: int, limit: int | None) -> tuple[list[bytes], int]:
        """Valid records from ``offset`` (at most ``limit``) and the offset after them."""
        size = self._size()
        self._file.seek(offset)
        records: list[bytes] = []
        while offset + _HEADER.size <= size and (limit is None or len(records) < limit):
            length, crc = _HEADER.unpack(self._file.read(_HEADER.size))
            if length > _MAX_RECORD or offset + _HEADER.size + length > size:
                break
            payload = self._file.read(length)
            if zlib.crc32(payload) != crc:
                break
            offset += _HEADER.size + length
            records.append(payload)
        return records, offset

    def append(self, payloads: list[bytes]) -> None:
        """Append records; durable per the fsync policy ("batch": one fsync per call)."""
        if not payloads:
            return
        self._file.seek(0, os.SEEK_END)
        if self._fsync == "always":
            for payload in payloads:
                self._file.write(_HEADER.pack(len(payload), zlib.crc32(payload)) + payload)
                self._file.flush()
                os.fsync(self._file.fileno())
        else:
            parts = []
            for payload in payloads:
                parts.append(_HEADER.pack(len(payload), zlib.crc32(payload)))
                parts.append(payload)
            self._file.write(b"".join(parts))
            self._file.flush()
            if self._fsync == "batch":
                os.fsync(self._file.fileno())
        self._pending += len(payloads)

    def read(self, limit: int) -> list[bytes]:
        """Take up to ``limit`` records in write order, advancing the read position.

        When everything has been read the file is truncated to empty, so the spool never
        grows past its backlog. (A crash before the records taken were delivered replays
        them on the next start: delivery is at least once; stores de-duplicate by id.)
        """
        records, self._read_offset = self._read_from(self._read_offset, limit)
        self._pending = max(0, self._pending - len(records))
        if self._pending == 0:
            self.reset()
        return records

    def reset(self) -> None:
        """Forget everything (after it was delivered)."""
        self._file.truncate(0)
        self._file.flush()
        if self._fsync != "never":
            os.fsync(self._file.fileno())
        self._read_offset = 0
        self._pending = 0

    def close(self) -> None:
        """Close the file (records stay for the next start)."""
        self._file.close()
