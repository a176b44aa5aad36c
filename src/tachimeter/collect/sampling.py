"""Sampling: keep ``rate`` of an event type's events, but never fewer than
``min_per_window`` per window (spec 406/408).

A :class:`Sampler` is built once per event type from its :class:`SamplingConfig` and
called with the caller's timestamp under the collector's lock, so counts are exact
across threads. With ``seed`` set, decisions are reproducible (tests).
"""

from __future__ import annotations

import random

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

    __slots__ = ("_count", "_min", "_random", "_rate", "_window_ns", "_window_start")

    def __init__(self, config: SamplingConfig, *, seed: int | None = None) -> None:
        self._rate = config.rate
        self._min = config.min_per_window
        self._window_ns = config.window_seconds * 1_000_000_000
        self._window_start: int | None = None
        self._count = 0
        self._random = random.Random(seed).random

    @property
    def always_keeps(self) -> bool:
        """True when every event is kept (rate 1.0): the collector skips the sampler."""
        return self._rate >= 1.0

    def keep(self, now_ns: int) -> bool:
        """Whether to keep an event seen at ``now_ns`` (monotonic nanoseconds)."""
        start = self._window_start
        if start is None or now_ns - start >= self._window_ns:
            self._window_start = now_ns
            self._count = 0
        if self._count < self._min:
            self._count += 1
            return True
        if self._random() < self._rate:
            self._count += 1
            return True
        return False
