"""System and process metrics from psutil, as a registry collector sampled every 15 s.

:class:`SystemMetrics` is a :class:`~tachimeter.metrics.registry.Collector`: register it
on a registry and every scrape returns its latest snapshot. A snapshot is taken at most
once per ``interval`` (15 s by default, a usual scrape interval): by a background thread
after :meth:`SystemMetrics.start`, or else lazily by the first scrape after the last one
grew stale, so a scrape never waits on more than one sampling (about 3 ms).

Names follow Prometheus conventions; the process and Python families are those of
``prometheus_client``'s own collectors, so dashboards built for them work unchanged:

* ``system_cpu_usage_ratio``: CPU busy since the previous sample, 0..1;
  ``system_cpus``: logical CPUs; ``system_load1``, ``system_load5``, ``system_load15``;
* ``system_memory_{total,used,available}_bytes``, ``system_swap_{total,used}_bytes``;
* ``system_disk_{total,used,free}_bytes`` per ``mountpoint`` (the configured paths);
  ``system_disk_{read,written}_bytes_total`` and ``system_disk_{reads,writes}_total``
  over all disks;
* ``system_network_{received,transmitted}_bytes_total`` over all interfaces;
* ``process_resident_memory_bytes``, ``process_virtual_memory_bytes``,
  ``process_cpu_seconds_total`` (user + system), ``process_open_fds``,
  ``process_max_fds``, ``process_threads``, ``process_start_time_seconds``;
* ``python_gc_collections_total`` and ``python_gc_objects_collected_total`` per
  ``generation``, and ``python_info`` (1, labelled with the Python version).

A figure psutil cannot read on this platform (disk I/O in some containers, file
descriptors on Windows) is left out rather than reported as zero.

>>> from tachimeter.metrics import Registry, generate_latest
>>> registry = Registry()
>>> system = SystemMetrics(registry=registry)
>>> b"process_resident_memory_bytes" in generate_latest(registry)
True
"""

from __future__ import annotations

import functools
import gc
import importlib
import logging
import os
import platform
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final

from tachimeter.errors import ConfigError
from tachimeter.metrics.family import MetricFamily, MetricKind, Sample

if TYPE_CHECKING:
    from tachimeter.metrics.registry import Registry

__all__ = ["DEFAULT_INTERVAL", "SystemMetrics"]

_log = logging.getLogger("tachimeter.metrics")

# Prometheus' usual scrape interval: finer sampling would only cost CPU, coarser would
# blur CPU usage (a ratio over the interval) beyond what a scrape shows.
DEFAULT_INTERVAL: Final = 15.0
_LOADS: Final = (("system_load1", 0), ("system_load5", 1), ("system_load15", 2))


class SystemMetrics:
    """Samples psutil every ``interval`` seconds and exposes the latest snapshot.

    ``paths`` are the mount points (or any path on them) whose disk usage is reported;
    ``clock`` is injectable for tests. Thread-safe and fork-safe (a child samples its
    own process and restarts the thread on ``start()``).
    """

    __slots__ = (
        "__weakref__",
        "_clock",
        "_interval",
        "_lock",
        "_paths",
        "_pid",
        "_process",
        "_psutil",
        "_snapshot",
        "_stop",
        "_taken_at",
        "_thread",
    )

    def __init__(
        self,
        interval: float = DEFAULT_INTERVAL,
        *,
        paths: Sequence[str] = ("/",),
        registry: Registry | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (isinstance(interval, int | float) and interval > 0):
            raise ConfigError(f"SystemMetrics interval must be seconds > 0, got {interval!r}")
        if isinstance(paths, str):
            raise ConfigError(
                f"SystemMetrics paths must be a list of paths, got the string {paths!r}; "
                f"write [{paths!r}]"
            )
        # Imported here: about 10 ms, paid only by programs that want these figures.
        psutil: Any = importlib.import_module("psutil")
        self._psutil = psutil
        self._interval = float(interval)
        self._paths = tuple(paths)
        self._clock = clock
        self._lock = threading.Lock()
        self._snapshot: list[MetricFamily] = []
        self._taken_at: float | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._pid = os.getpid()
        self._process = psutil.Process()
        # The first cpu_percent() call only starts the measurement; it returns 0.0.
        psutil.cpu_percent(interval=None)
        _instances.add(self)
        if registry is not None:
            registry.register_collector(self)

    @property
    def interval(self) -> float:
        """Seconds between samples."""
        return self._interval

    def __call__(self) -> list[MetricFamily]:
        """The latest snapshot, sampled first if it is older than the interval."""
        with self._lock:
            now = self._clock()
            if self._taken_at is None or now - self._taken_at >= self._interval:
                self._sample_locked(now)
            return list(self._snapshot)

    def sample(self) -> list[MetricFamily]:
        """Take a snapshot now and return it."""
        with self._lock:
            self._sample_locked(self._clock())
            return list(self._snapshot)

    def start(self) -> None:
        """Sample every ``interval`` seconds on a daemon thread (idempotent)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._run, name="tachimeter-system-metrics", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 1.0) -> bool:
        """Stop the thread; returns whether it ended within ``timeout`` seconds."""
        self._stop.set()
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.sample()
            except Exception:  # the thread must survive a failing platform call
                _log.exception("system metrics sampling failed; retrying in %ss", self._interval)

    def _reset_after_fork(self) -> None:
        self._lock = threading.Lock()
        self._thread = None
        self._stop = threading.Event()
        self._pid = os.getpid()
        self._process = self._psutil.Process()
        self._taken_at = None

    def _sample_locked(self, now: float) -> None:
        families: list[MetricFamily] = []
        add = _Adder(families)
        psutil = self._psutil
        add.one(
            "system_cpu_usage_ratio",
            "gauge",
            "CPU busy since the previous sample (0..1)",
            _call(lambda: psutil.cpu_percent(interval=None) / 100.0),
        )
        add.one("system_cpus", "gauge", "Logical CPUs", _call(psutil.cpu_count))
        loads = _call(psutil.getloadavg)
        if loads is not None:
            for name, index in _LOADS:
                add.one(name, "gauge", f"Load average over {name[11:]} minute(s)", loads[index])
        memory = _call(psutil.virtual_memory)
        if memory is not None:
            add.one("system_memory_total_bytes", "gauge", "Physical memory", memory.total)
            add.one("system_memory_used_bytes", "gauge", "Physical memory in use", memory.used)
            add.one(
                "system_memory_available_bytes",
                "gauge",
                "Physical memory available without swapping",
                memory.available,
            )
        swap = _call(psutil.swap_memory)
        if swap is not None:
            add.one("system_swap_total_bytes", "gauge", "Swap space", swap.total)
            add.one("system_swap_used_bytes", "gauge", "Swap space in use", swap.used)
        usage = []
        for path in self._paths:
            found = _call(functools.partial(psutil.disk_usage, path))
            if found is not None:
                usage.append((path, found))
        if usage:
            for field, text in (
                ("total", "Disk size"),
                ("used", "Disk space in use"),
                ("free", "Disk space free"),
            ):
                add.many(
                    f"system_disk_{field}_bytes",
                    "gauge",
                    f"{text}, per mount point",
                    [((("mountpoint", p),), getattr(u, field)) for p, u in usage],
                )
        disk = _call(psutil.disk_io_counters)
        if disk is not None:
            add.one("system_disk_read_bytes", "counter", "Bytes read from disks", disk.read_bytes)
            add.one(
                "system_disk_written_bytes", "counter", "Bytes written to disks", disk.write_bytes
            )
            add.one("system_disk_reads", "counter", "Disk read operations", disk.read_count)
            add.one("system_disk_writes", "counter", "Disk write operations", disk.write_count)
        net = _call(psutil.net_io_counters)
        if net is not None:
            add.one("system_network_received_bytes", "counter", "Bytes received", net.bytes_recv)
            add.one("system_network_transmitted_bytes", "counter", "Bytes sent", net.bytes_sent)
        self._sample_process(add)
        self._snapshot = families
        self._taken_at = now

    def _sample_process(self, add: _Adder) -> None:
        if os.getpid() != self._pid:
            self._reset_after_fork()
        process = self._process
        memory = _call(process.memory_info)
        if memory is not None:
            add.one(
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes",
                memory.rss,
            )
            add.one(
                "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes", memory.vms
            )
        cpu = _call(process.cpu_times)
        if cpu is not None:
            add.one(
                "process_cpu_seconds",
                "counter",
                "Total user and system CPU time in seconds",
                cpu.user + cpu.system,
            )
        fds = _call(process.num_fds) if hasattr(process, "num_fds") else None
        if fds is not None:
            add.one("process_open_fds", "gauge", "Number of open file descriptors", fds)
        limit = _max_fds()
        if limit is not None:
            add.one("process_max_fds", "gauge", "Maximum number of open file descriptors", limit)
        add.one("process_threads", "gauge", "Number of OS threads", _call(process.num_threads))
        add.one(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since the Unix epoch in seconds",
            _call(process.create_time),
        )
        stats = gc.get_stats()
        add.many(
            "python_gc_collections",
            "counter",
            "Collections per generation",
            [((("generation", str(g)),), s["collections"]) for g, s in enumerate(stats)],
        )
        add.many(
            "python_gc_objects_collected",
            "counter",
            "Objects collected per generation",
            [((("generation", str(g)),), s["collected"]) for g, s in enumerate(stats)],
        )
        major, minor, patch = platform.python_version_tuple()
        add.many(
            "python_info",
            "gauge",
            "Python platform information",
            [
                (
                    (
                        ("implementation", platform.python_implementation()),
                        ("major", major),
                        ("minor", minor),
                        ("patchlevel", patch),
                        ("version", platform.python_version()),
                    ),
                    1.0,
                )
            ],
        )


class _Adder:
    """Builds families, leaving out values that could not be read."""

    __slots__ = ("families",)

    def __init__(self, families: list[MetricFamily]) -> None:
        self.families = families

    def one(self, name: str, kind: MetricKind, documentation: str, value: object) -> None:
        self.many(name, kind, documentation, [((), value)])

    def many(
        self,
        name: str,
        kind: MetricKind,
        documentation: str,
        values: Iterable[tuple[tuple[tuple[str, str], ...], object]],
    ) -> None:
        sample_name = name + "_total" if kind == "counter" else name
        samples = []
        for labels, value in values:
            if isinstance(value, int | float) and not isinstance(value, bool):
                samples.append(Sample(sample_name, labels, float(value)))
        if samples:
            unit = (
                "bytes"
                if name.endswith("_bytes")
                else ("seconds" if name.endswith("_seconds") else "")
            )
            self.families.append(MetricFamily(name, kind, documentation, tuple(samples), unit))


def _call(read: Callable[[], Any]) -> Any:
    """``read()``, or None when the platform does not support it."""
    try:
        return read()
    except (OSError, AttributeError, NotImplementedError, RuntimeError):
        return None
    except Exception as exc:  # psutil.Error and its subclasses (AccessDenied...)
        if type(exc).__module__.startswith("psutil"):
            return None
        raise


def _max_fds() -> int | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else int(soft)


_instances: weakref.WeakSet[SystemMetrics] = weakref.WeakSet()


def _reset_all_after_fork() -> None:
    for instance in list(_instances):
        instance._reset_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_all_after_fork)
