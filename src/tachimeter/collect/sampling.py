"""Sampling: keep ``rate`` of an event type's events, but never fewer than
``min_per_window`` per window (spec 406/408).

A :class:`Sampler` is built once per event type from its :class:`SamplingConfig` and
called on the caller thread without the collector's lock. A decision is one draw from a
private generator (a C call, atomic under the GIL) compared with the rate; only a sampler
with a per-window minimum also counts the window's events, with ``next()`` on an
``itertools.count`` (atomic too), and takes its own lock once per window to start the
next one. With ``seed`` set, decisions are reproducible (tests).
"""

from __future__ import annotations

import itertools
import random
import threading
from collections.abc import Callable

from tachimeter.model.event_types import SamplingConfig

__all__ = ["Sampler"]


class Sampler:
    """Decides, per event, whether to keep it.

    The first ``min_per_window`` events of each window are always kept; after that an
    event is kept with probability ``rate``. A window starts with the first event seen
    after the previous window ended (spec 408's reset).

    >>> s = Sampler(SamplingConfig(rate=0.0, min_per_window=2, window_seconds=60), seed=1)
    >>> [s.keep(t) for t in (0, 1, 2, 60 * 10**9)]
    [True, True, False, True]
    """

    __slots__ = ("_lock", "_min", "_random", "_rate", "_seen", "_window_ns", "_window_start")

    def __init__(self, config: SamplingConfig, *, seed: int | None = None) -> None:
        self._rate = config.rate
        self._min = config.min_per_window
        self._window_ns = config.window_seconds * 1_000_000_000
        self._window_start: int | None = None
        self._seen = itertools.count()  # events of the current window
        self._lock = threading.Lock()
        self._random = random.Random(seed).random

    @property
    def always_keeps(self) -> bool:
        """True when every event is kept (rate 1.0): the collector skips the sampler."""
        return self._rate >= 1.0

    @property
    def single_draw(self) -> tuple[Callable[[], float], float] | None:
        """``(draw, rate)`` when a decision is just ``draw() < rate`` (no per-window minimum,
        so no clock is needed): the collector inlines it. None otherwise."""
        return None if self._min else (self._random, self._rate)

    def keep(self, now_ns: int) -> bool:
        """Whether to keep an event seen at ``now_ns`` (monotonic nanoseconds)."""
        if self._min:
            start = self._window_start
            if start is None or now_ns - start >= self._window_ns:
                self._next_window(now_ns)
            # Events past the minimum keep counting: the window's number is all we need.
            if next(self._seen) < self._min:
                return True
        return self._random() < self._rate

    def _next_window(self, now_ns: int) -> None:
        with self._lock:  # once per window; the re-check makes racing callers start one
            start = self._window_start
            if start is None or now_ns - start >= self._window_ns:
                self._seen = itertools.count()
                self._window_start = now_ns
