"""Metrics of several processes of one application (gunicorn workers...), aggregated.

How it works, and why it has none of ``prometheus_client``'s multiprocess-mode problems
(files of dead workers accumulating and skewing gauges, #115; totals going backwards
when such files are cleaned up, #495; a new process reusing a dead one's pid and file,
#568):

* Each worker runs a :class:`MultiprocessWriter`: it publishes a snapshot of its
  registry to ``<directory>/<token>.snap`` every ``interval`` seconds, at ``flush()``
  and at exit, atomically (write a temporary file, then rename). The token is random
  per process *incarnation*, never the pid, so a reused pid starts a new file.
* Liveness is a lock, not a guess: the worker holds an exclusive ``flock`` on
  ``<token>.lock`` for its whole life. The kernel releases it when the process ends,
  however it ends (``SIGKILL`` included); nobody has to clean up after a crash.
* The process serving ``/metrics`` registers a :class:`MultiprocessCollector`. On each
  scrape it tries each worker's lock: held means alive, and its snapshot counts as is;
  free means dead, and the dead worker's counters, histograms and summary counts are
  folded into ``<directory>/archive.snap`` (under a lock, exactly once) and its files
  are deleted. Totals therefore never go backwards and the directory holds one file pair
  per live worker, plus the archive. Gauges of dead workers are dropped.
* A forked child gets a new token, and publishes only what it counted itself: the
  values its registry inherited at the fork are subtracted, so they are not counted
  twice.

Gauges are combined by ``gauge_mode``: ``sum`` (default), ``max``, ``min``, or ``all``
(one series per worker, labelled ``pid``). Summary quantiles cannot be combined across
processes and are left out (their ``_count`` and ``_sum`` are summed). Increments made
after a worker's last snapshot are lost if it is killed: at most ``interval`` seconds
(1 s by default) of them; a clean exit flushes.

Unix only (``fcntl``). The directory must be empty of other files and private to the
application (one per deployment), like ``PROMETHEUS_MULTIPROC_DIR``.

>>> import tempfile
>>> from tachimeter.metrics import Registry, generate_latest
>>> directory = tempfile.mkdtemp()
>>> worker = Registry()
>>> worker.counter("jobs", "Jobs done").inc(3)
>>> writer = MultiprocessWriter(directory, worker, interval=None)
>>> writer.flush()
>>> served = Registry()
>>> _ = served.register_collector(MultiprocessCollector(directory))
>>> b"jobs_total 3.0" in generate_latest(served)
True
>>> writer.close()
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import secrets
import threading
import weakref
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias

import msgspec

from tachimeter.errors import ConfigError
from tachimeter.metrics.family import MetricFamily, MetricKind, Sample
from tachimeter.metrics.registry import REGISTRY, Registry

__all__ = ["GaugeMode", "MultiprocessCollector", "MultiprocessWriter"]

_log = logging.getLogger("tachimeter.metrics")

GaugeMode: TypeAlias = Literal["sum", "max", "min", "all"]

# One snapshot a second: what a SIGKILL can lose, and the staleness of a live worker's
# figures, against a few hundred microseconds of work per second per worker.
DEFAULT_INTERVAL: Final = 1.0
_ARCHIVE: Final = "archive"
_LABELS = tuple[tuple[str, str], ...]


class _Family(msgspec.Struct, array_like=True):
    name: str
    kind: str
    documentation: str
    unit: str
    samples: list[tuple[str, list[tuple[str, str]], float]]


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(list[_Family]).decode


def _fcntl() -> Any:
    try:
        import fcntl
    except ImportError:  # Windows
        raise ConfigError(
            "multiprocess metrics need fcntl file locks (Unix); on Windows run one process "
            "or push each worker's metrics elsewhere"
        ) from None
    return fcntl


def _cumulative(family_kind: str, sample_name: str, family_name: str) -> bool:
    """Samples that only go up within a process: counters, histogram parts, summary
    counts and sums (and untyped ``_total`` samples)."""
    if family_kind == "counter":
        return not sample_name.endswith("_created")
    if family_kind == "histogram":
        return sample_name != family_name and not sample_name.endswith("_created")
    if family_kind == "summary":
        return sample_name in (family_name + "_count", family_name + "_sum")
    return False


class MultiprocessWriter:
    """Publishes one worker's registry to the shared directory (see the module docstring).

    ``interval=None`` starts no thread: snapshots are written by ``flush()`` and at exit.
    """

    __slots__ = (
        "__weakref__",
        "_baseline",
        "_closed",
        "_directory",
        "_interval",
        "_lock",
        "_lock_fd",
        "_registry",
        "_stop",
        "_thread",
        "_token",
    )

    def __init__(
        self,
        directory: str | os.PathLike[str],
        registry: Registry | None = None,
        *,
        interval: float | None = DEFAULT_INTERVAL,
    ) -> None:
        if interval is not None and not (isinstance(interval, int | float) and interval > 0):
            raise ConfigError(f"MultiprocessWriter interval must be seconds > 0, got {interval!r}")
        self._directory = Path(directory)
        if not self._directory.is_dir():
            raise ConfigError(
                f"MultiprocessWriter directory {str(self._directory)!r} does not exist; "
                "create it (empty, private to this application) before the workers start"
            )
        _fcntl()
        self._registry = REGISTRY if registry is None else registry
        self._interval = interval
        self._lock = threading.Lock()
        self._closed = False
        self._baseline: dict[tuple[str, _LABELS], float] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock_fd = -1
        self._token = ""
        self._open()
        _writers.add(self)
        atexit.register(_flush_at_exit, weakref.ref(self))

    @property
    def token(self) -> str:
        """This process incarnation's file name stem."""
        return self._token

    def _open(self) -> None:
        """Take a fresh token and its lock; the lock file appears already locked."""
        fcntl = _fcntl()
        token = f"{os.getpid()}-{secrets.token_hex(8)}"
        temporary = self._directory / f".{token}.lock.tmp"
        fd = os.open(temporary, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        # Renaming keeps the locked inode: a collector never sees this lock file unlocked.
        os.replace(temporary, self._directory / f"{token}.lock")
        self._token = token
        self._lock_fd = fd
        if self._interval is not None:
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._run, name="tachimeter-multiprocess-writer", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        assert self._interval is not None
        while not self._stop.wait(self._interval):
            try:
                self.flush()
            except Exception:  # the worker must keep running; the next flush retries
                _log.exception("could not publish metrics to %s", self._directory)

    def flush(self) -> None:
        """Write this process's snapshot now."""
        with self._lock:
            if self._closed:
                return
            families = []
            for family in self._registry.collect():
                samples = []
                for sample in family.samples:
                    value = sample.value
                    if _cumulative(family.kind, sample.name, family.name):
                        value -= self._baseline.get((sample.name, sample.labels), 0.0)
                    samples.append((sample.name, list(sample.labels), value))
                families.append(
                    _Family(family.name, family.kind, family.documentation, family.unit, samples)
                )
            target = self._directory / f"{self._token}.snap"
            temporary = self._directory / f".{self._token}.snap.tmp"
            temporary.write_bytes(_encode(families))
            os.replace(temporary, target)

    def close(self, timeout: float = 1.0) -> None:
        """Write a last snapshot and release the lock: a collector then folds it in."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self.flush()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            os.close(self._lock_fd)

    def _after_fork_in_child(self) -> None:
        # The parent's lock and thread do not belong to this process: what the registry
        # holds now was counted by the parent, and stays the parent's to publish.
        self._lock = threading.Lock()
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)
        self._baseline = {
            (sample.name, sample.labels): sample.value
            for family in self._registry.collect()
            for sample in family.samples
            if _cumulative(family.kind, sample.name, family.name)
        }
        self._thread = None
        if not self._closed:
            self._open()


class MultiprocessCollector:
    """A registry collector combining every worker's published metrics.

    >>> MultiprocessCollector("/nonexistent", gauge_mode="median")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tachimeter.errors.ConfigError: MultiprocessCollector gauge_mode must be ...
    """

    __slots__ = ("_directory", "_gauge_mode")

    def __init__(self, directory: str | os.PathLike[str], *, gauge_mode: GaugeMode = "sum") -> None:
        if gauge_mode not in ("sum", "max", "min", "all"):
            raise ConfigError(
                f"MultiprocessCollector gauge_mode must be one of sum, max, min, all; "
                f"got {gauge_mode!r}"
            )
        _fcntl()
        self._directory = Path(directory)
        self._gauge_mode = gauge_mode

    def __call__(self) -> list[MetricFamily]:
        """Fold dead workers into the archive, then combine the archive and live workers."""
        live: list[tuple[str, list[_Family]]] = []
        for snap in sorted(self._directory.glob("*.snap")):
            token = snap.stem
            if token == _ARCHIVE:
                continue
            if self._alive(token):
                with contextlib.suppress(FileNotFoundError):
                    live.append((token, _decode(snap.read_bytes())))
            else:
                self._fold(token)
        archive = self._read_archive()
        return self._combine(archive, live)

    def _alive(self, token: str) -> bool:
        fcntl = _fcntl()
        try:
            fd = os.open(self._directory / f"{token}.lock", os.O_RDWR)
        except FileNotFoundError:
            return False  # its lock is gone: it ended, and is being folded
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    @contextlib.contextmanager
    def _archive_lock(self) -> Iterator[None]:
        fcntl = _fcntl()
        fd = os.open(self._directory / f"{_ARCHIVE}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read_archive(self) -> list[_Family]:
        with contextlib.suppress(FileNotFoundError):
            return _decode((self._directory / f"{_ARCHIVE}.snap").read_bytes())
        return []

    def _fold(self, token: str) -> None:
        """Add a dead worker's cumulative samples to the archive, once, then delete it."""
        snap = self._directory / f"{token}.snap"
        with self._archive_lock():
            try:
                dead = _decode(snap.read_bytes())
            except FileNotFoundError:
                dead = None  # another collector folded it first
            if dead is not None:
                merged = _merge_cumulative([self._read_archive(), dead])
                temporary = self._directory / f".{_ARCHIVE}.snap.tmp"
                temporary.write_bytes(_encode(merged))
                os.replace(temporary, self._directory / f"{_ARCHIVE}.snap")
                snap.unlink()
            with contextlib.suppress(FileNotFoundError):
                (self._directory / f"{token}.lock").unlink()

    def _combine(
        self, archive: list[_Family], live: list[tuple[str, list[_Family]]]
    ) -> list[MetricFamily]:
        meta: dict[str, _Family] = {}
        totals: dict[str, dict[tuple[str, _LABELS], float]] = {}
        for token, families in [("", archive), *live]:
            pid = token.split("-")[0]
            for family in families:
                known = meta.setdefault(family.name, family)
                if known.kind != family.kind:
                    continue  # one name, two kinds across versions: keep the first
                bucket = totals.setdefault(family.name, {})
                for name, pairs, value in family.samples:
                    labels: _LABELS = tuple(pairs)
                    if _cumulative(family.kind, name, family.name):
                        bucket[(name, labels)] = bucket.get((name, labels), 0.0) + value
                    elif family.kind == "summary" or not token:
                        continue  # quantiles do not combine; the archive has no gauges
                    elif self._gauge_mode == "all":
                        bucket[(name, (*labels, ("pid", pid)))] = value
                    else:
                        key = (name, labels)
                        old = bucket.get(key)
                        if old is None:
                            bucket[key] = value
                        elif self._gauge_mode == "sum":
                            bucket[key] = old + value
                        elif self._gauge_mode == "max":
                            bucket[key] = max(old, value)
                        else:
                            bucket[key] = min(old, value)
        out = []
        for name, bucket in totals.items():
            family = meta[name]
            samples = tuple(Sample(n, labels, v) for (n, labels), v in bucket.items())
            if samples:
                kind: MetricKind = family.kind  # type: ignore[assignment]
                out.append(MetricFamily(name, kind, family.documentation, samples, family.unit))
        return out


def _merge_cumulative(snapshots: Iterable[list[_Family]]) -> list[_Family]:
    """Sum the cumulative samples of several snapshots (gauges and quantiles dropped)."""
    meta: dict[str, _Family] = {}
    sums: dict[str, dict[tuple[str, _LABELS], float]] = {}
    for families in snapshots:
        for family in families:
            known = meta.setdefault(family.name, family)
            if known.kind != family.kind:
                continue
            bucket = sums.setdefault(family.name, {})
            for name, pairs, value in family.samples:
                if _cumulative(family.kind, name, family.name):
                    key = (name, tuple(pairs))
                    bucket[key] = bucket.get(key, 0.0) + value
    return [
        _Family(
            name,
            meta[name].kind,
            meta[name].documentation,
            meta[name].unit,
            [(n, list(labels), v) for (n, labels), v in bucket.items()],
        )
        for name, bucket in sums.items()
        if bucket
    ]


_writers: weakref.WeakSet[MultiprocessWriter] = weakref.WeakSet()


def _flush_at_exit(ref: weakref.ReferenceType[MultiprocessWriter]) -> None:
    writer = ref()
    if writer is not None and writer._token.startswith(f"{os.getpid()}-"):
        with contextlib.suppress(Exception):
            writer.close(timeout=0.5)


def _reset_writers_after_fork() -> None:
    for writer in list(_writers):
        writer._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_writers_after_fork)
