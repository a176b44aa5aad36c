"""A mergeable quantile sketch with relative-error guarantees (DDSketch, Masson et al. 2019).

Values are counted in logarithmic buckets: bucket ``k`` holds the values in
``(gamma**(k-1), gamma**k]`` with ``gamma = (1 + a) / (1 - a)``, and answers with one
representative value that is within relative error ``a`` of every value in it. So a
quantile estimate is within ``a`` of a true sample value of that rank, whatever the
distribution, and two sketches merge exactly by adding bucket counts: a sketch of
several windows is the sketch of their concatenation. Summaries use it for their
sliding window; the store reuses it (``to_bytes``/``from_bytes``) for rollups.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence

from tachimeter.errors import ValidationError

__all__ = ["QuantileSketch"]

_INF = math.inf

# 1% relative error: p99 of a 2 s latency is reported within +-20 ms, and a value range
# of 1 us .. 1 h (9.5 decades) needs about 1100 buckets.
DEFAULT_RELATIVE_ACCURACY = 0.01
# Bound on buckets per sign. 2048 buckets at 1% cover 18 decades before the lowest
# buckets are folded together (only the smallest values then lose accuracy); a full
# store is about 150 KB of dict entries and about 4 KB serialized.
DEFAULT_MAX_BINS = 2048

_MAGIC = b"TQS"
_VERSION = 1
_HEADER = struct.Struct("<3sBdIddd")


class _Store:
    """Counts per bucket key for one sign, folding the lowest keys once full."""

    __slots__ = ("bins", "floor", "max_bins")

    def __init__(self, max_bins: int) -> None:
        self.bins: dict[int, int] = {}
        # Set while the store is full: the lowest key, into which lower keys fold.
        self.floor: int | None = None
        self.max_bins = max_bins

    def add_new(self, key: int, count: int) -> None:
        """Count ``count`` values in ``key``, which is not a bucket yet."""
        bins = self.bins
        floor = self.floor
        if floor is not None and key < floor:
            bins[floor] += count
            return
        bins[key] = count
        size = len(bins)
        if size > self.max_bins:
            # Fold the lowest bucket into the next one: the result is the same whatever
            # order values arrived or sketches were merged in.
            lowest = min(bins)
            folded = bins.pop(lowest)
            floor = min(bins)
            bins[floor] += folded
            self.floor = floor
        elif size == self.max_bins:
            self.floor = min(bins)

    def add(self, key: int, count: int) -> None:
        """Count ``count`` values in ``key``."""
        current = self.bins.get(key)
        if current is None:
            self.add_new(key, count)
        else:
            self.bins[key] = current + count

    def clear(self) -> None:
        """Forget every count."""
        self.bins = {}
        self.floor = None


class QuantileSketch:
    """Quantiles of a stream within 1% relative error, in bounded memory, mergeable.

    >>> s = QuantileSketch()
    >>> for v in range(1, 1001):
    ...     s.add(float(v))
    >>> abs(s.quantile(0.5) - 500) <= 0.01 * 500
    True
    >>> other = QuantileSketch()
    >>> other.add(5000.0)
    >>> s.merge(other)
    >>> s.count, s.max
    (1001, 5000.0)
    >>> QuantileSketch.from_bytes(s.to_bytes()).quantile(0.99) == s.quantile(0.99)
    True

    Negative values and zero are supported. ``quantile(q)`` returns the estimate of the
    sample of rank ``q * (count - 1)`` (numpy's ``method="lower"``), clamped to the
    exact minimum and maximum; an empty sketch answers NaN. Not thread-safe: callers
    that share one sketch hold their own lock (``Summary`` does).
    """

    __slots__ = (
        "_count",
        "_gamma",
        "_inv_log_gamma",
        "_log_gamma",
        "_max",
        "_min",
        "_negative",
        "_positive",
        "_relative_accuracy",
        "_representative",
        "_sum",
        "_zero_count",
    )

    def __init__(
        self,
        relative_accuracy: float = DEFAULT_RELATIVE_ACCURACY,
        max_bins: int = DEFAULT_MAX_BINS,
    ) -> None:
        if not 0.0 < relative_accuracy < 1.0:
            raise ValidationError(
                f"QuantileSketch relative_accuracy must be in (0, 1), got {relative_accuracy!r}"
            )
        if isinstance(max_bins, bool) or not isinstance(max_bins, int) or max_bins < 2:
            raise ValidationError(
                f"QuantileSketch max_bins must be an integer >= 2, got {max_bins!r}"
            )
        self._relative_accuracy = float(relative_accuracy)
        self._gamma = (1.0 + relative_accuracy) / (1.0 - relative_accuracy)
        self._log_gamma = math.log(self._gamma)
        self._inv_log_gamma = 1.0 / self._log_gamma
        # gamma**k * (1 - a) is the point of (gamma**(k-1), gamma**k] whose relative
        # distance to both ends is exactly a.
        self._representative = 1.0 - relative_accuracy
        self._positive = _Store(max_bins)
        self._negative = _Store(max_bins)
        self._zero_count = 0
        self._count = 0
        self._sum = 0.0
        self._min = _INF
        self._max = -_INF

    @property
    def relative_accuracy(self) -> float:
        """The guaranteed relative error of quantile estimates."""
        return self._relative_accuracy

    @property
    def max_bins(self) -> int:
        """The bound on buckets per sign."""
        return self._positive.max_bins

    @property
    def count(self) -> int:
        """How many values were added."""
        return self._count

    @property
    def sum(self) -> float:
        """The sum of the values added."""
        return self._sum

    @property
    def min(self) -> float:
        """The smallest value added (NaN when empty)."""
        return self._min if self._count else math.nan

    @property
    def max(self) -> float:
        """The largest value added (NaN when empty)."""
        return self._max if self._count else math.nan

    @property
    def num_bins(self) -> int:
        """How many buckets are in use (memory is proportional to it)."""
        return len(self._positive.bins) + len(self._negative.bins)

    def add(self, value: float, count: int = 1) -> None:
        """Add ``value`` ``count`` times; ``value`` must be finite."""
        if value > 0.0:
            if value == _INF:
                raise ValidationError(f"QuantileSketch.add: value must be finite, got {value!r}")
            store = self._positive
            key = math.ceil(math.log(value) * self._inv_log_gamma)
        elif value < 0.0:
            if value == -_INF:
                raise ValidationError(f"QuantileSketch.add: value must be finite, got {value!r}")
            store = self._negative
            key = math.ceil(math.log(-value) * self._inv_log_gamma)
        elif value == 0.0:
            store = None
            key = 0
        else:
            raise ValidationError(f"QuantileSketch.add: value must be finite, got {value!r}")
        if count != 1 and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise ValidationError(
                f"QuantileSketch.add: count must be an integer >= 1, got {count!r}"
            )
        if store is None:
            self._zero_count += count
        else:
            bins = store.bins
            current = bins.get(key)
            if current is None:
                store.add_new(key, count)
            else:
                bins[key] = current + count
        self._count += count
        self._sum += value * count
        if value < self._min:
            self._min = value
        if value > self._max:
            self._max = value

    def merge(self, other: QuantileSketch) -> None:
        """Add every value counted by ``other`` (same relative accuracy) to this sketch."""
        if other._relative_accuracy != self._relative_accuracy:
            raise ValidationError(
                "QuantileSketch.merge: relative accuracies differ "
                f"({self._relative_accuracy!r} and {other._relative_accuracy!r}); "
                "only sketches built with the same relative_accuracy can be merged"
            )
        if other._count == 0:
            return
        for key, count in other._positive.bins.items():
            self._positive.add(key, count)
        for key, count in other._negative.bins.items():
            self._negative.add(key, count)
        self._zero_count += other._zero_count
        self._count += other._count
        self._sum += other._sum
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)

    def copy(self) -> QuantileSketch:
        """An independent sketch with the same contents."""
        twin = QuantileSketch(self._relative_accuracy, self._positive.max_bins)
        twin.merge(self)
        return twin

    def clear(self) -> None:
        """Forget every value."""
        self._positive.clear()
        self._negative.clear()
        self._zero_count = 0
        self._count = 0
        self._sum = 0.0
        self._min = _INF
        self._max = -_INF

    def quantile(self, q: float) -> float:
        """The estimate of quantile ``q`` in [0, 1] (NaN when empty)."""
        return self.quantiles((q,))[0]

    def quantiles(self, qs: Sequence[float]) -> list[float]:
        """Estimates of several quantiles in one pass over the buckets."""
        for q in qs:
            if not 0.0 <= q <= 1.0:
                raise ValidationError(f"QuantileSketch: quantile must be in [0, 1], got {q!r}")
        if self._count == 0:
            return [math.nan] * len(qs)
        order = sorted(range(len(qs)), key=lambda i: qs[i])
        out = [math.nan] * len(qs)
        targets = iter(order)
        target = next(targets, None)
        last = self._count - 1
        cumulative = 0
        for value, count in self._buckets_ascending():
            cumulative += count
            # The bucket holds the samples of ranks [cumulative - count, cumulative - 1].
            while target is not None and qs[target] * last < cumulative:
                out[target] = min(max(value, self._min), self._max)
                target = next(targets, None)
            if target is None:
                break
        # The extremes are known exactly, so the estimate need not stand in for them.
        for i, q in enumerate(qs):
            if q == 0.0:
                out[i] = self._min
            elif q == 1.0:
                out[i] = self._max
        return out

    def _buckets_ascending(self) -> Iterable[tuple[float, int]]:
        """(representative value, count) for every bucket, smallest value first."""
        scale = self._representative
        log_gamma = self._log_gamma
        negative = self._negative.bins
        for key in sorted(negative, reverse=True):
            yield -math.exp(key * log_gamma) * scale, negative[key]
        if self._zero_count:
            yield 0.0, self._zero_count
        positive = self._positive.bins
        for key in sorted(positive):
            yield math.exp(key * log_gamma) * scale, positive[key]

    def to_bytes(self) -> bytes:
        """A compact, versioned binary encoding (keys delta-coded as varints)."""
        out = bytearray(
            _HEADER.pack(
                _MAGIC,
                _VERSION,
                self._relative_accuracy,
                self._positive.max_bins,
                self._sum,
                self._min,
                self._max,
            )
        )
        _write_varint(out, self._zero_count)
        _write_store(out, self._positive.bins)
        _write_store(out, self._negative.bins)
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> QuantileSketch:
        """Decode ``to_bytes`` output; raises ``ValidationError`` on malformed input."""
        if len(data) < _HEADER.size:
            raise ValidationError(
                f"QuantileSketch.from_bytes: {len(data)} bytes is shorter than the "
                f"{_HEADER.size}-byte header"
            )
        magic, version, accuracy, max_bins, total, low, high = _HEADER.unpack_from(data)
        if magic != _MAGIC:
            raise ValidationError(
                f"QuantileSketch.from_bytes: bad magic {magic!r}, expected {_MAGIC!r}"
            )
        if version != _VERSION:
            raise ValidationError(
                f"QuantileSketch.from_bytes: unsupported version {version}, "
                f"this build reads version {_VERSION}"
            )
        sketch = cls(accuracy, max_bins)
        reader = _Reader(data, _HEADER.size)
        sketch._zero_count = reader.varint()
        count = sketch._zero_count
        for store in (sketch._positive, sketch._negative):
            bins = reader.store()
            if len(bins) > max_bins:
                raise ValidationError(
                    f"QuantileSketch.from_bytes: {len(bins)} buckets exceed max_bins {max_bins}"
                )
            store.bins = bins
            if len(bins) == max_bins:
                store.floor = min(bins)
            count += sum(bins.values())
        if reader.offset != len(data):
            raise ValidationError(
                f"QuantileSketch.from_bytes: {len(data) - reader.offset} trailing bytes"
            )
        sketch._count = count
        sketch._sum = total
        if count:
            sketch._min = low
            sketch._max = high
        return sketch

    def __repr__(self) -> str:
        return (
            f"QuantileSketch(relative_accuracy={self._relative_accuracy!r}, "
            f"count={self._count}, bins={self.num_bins})"
        )


def _write_varint(out: bytearray, value: int) -> None:
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _write_store(out: bytearray, bins: dict[int, int]) -> None:
    keys = sorted(bins)
    _write_varint(out, len(keys))
    previous = 0
    for i, key in enumerate(keys):
        if i == 0:
            # Zigzag: the first key may be negative (values below 1).
            _write_varint(out, (key << 1) ^ (key >> 63))
        else:
            _write_varint(out, key - previous)
        previous = key
    for key in keys:
        _write_varint(out, bins[key])


class _Reader:
    __slots__ = ("data", "offset")

    def __init__(self, data: bytes, offset: int) -> None:
        self.data = data
        self.offset = offset

    def varint(self) -> int:
        data = self.data
        result = 0
        shift = 0
        while True:
            if self.offset >= len(data):
                raise ValidationError("QuantileSketch.from_bytes: truncated varint")
            byte = data[self.offset]
            self.offset += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result
            shift += 7
            if shift > 63:
                raise ValidationError("QuantileSketch.from_bytes: varint longer than 64 bits")

    def store(self) -> dict[int, int]:
        n = self.varint()
        keys: list[int] = []
        for i in range(n):
            raw = self.varint()
            if i == 0:
                keys.append((raw >> 1) ^ -(raw & 1))
            else:
                if raw == 0:
                    raise ValidationError("QuantileSketch.from_bytes: bucket keys not increasing")
                keys.append(keys[-1] + raw)
        bins: dict[int, int] = {}
        for key in keys:
            count = self.varint()
            if count == 0:
                raise ValidationError(f"QuantileSketch.from_bytes: empty bucket {key}")
            bins[key] = count
        return bins
