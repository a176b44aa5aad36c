"""The codec of ``metric_chunks``: many series of one time window in one compressed frame.

A frame holds the samples of several series (one metric name, one window). Encoding:

* **Timestamps** (integer microseconds): series scraped together have identical
  timestamps, so each distinct timestamp vector is stored once and series point to it.
  A vector is divided by its greatest common tick (1000 for millisecond data), then
  delta-coded; the encoder keeps, per vector, the cheaper of delta-of-delta and
  delta-minus-median-delta (the second wins for independent scrape jitter, whose
  delta-of-delta has three times the variance).
* **Values**: a series whose values are all exactly ``k / 10**d`` for integers ``k`` and
  some ``d <= 9`` (counters, gauges with few decimals) is stored as the integers ``k``,
  delta-coded like timestamps; any other series as the XOR of consecutive float64 bit
  patterns (Gorilla's idea at byte granularity). Both are lossless, NaN payloads and
  ``-0.0`` included.
* The integer streams are zigzag-coded, cut to the bytes the largest needs, and
  **byte-shuffled** (all first bytes, then all second bytes, ...), so that the mostly
  zero high bytes form long runs; the whole frame is then compressed with **zstd**.

Encoding and decoding are numpy array operations over all series of the frame at once
(segmented cumulative sums and XORs): there is no per-sample Python loop.

>>> import numpy as np
>>> ts = np.array([0, 15_000_000, 30_000_000, 0, 15_000_000, 30_000_000], dtype=np.int64)
>>> values = np.array([1.5, 2.25, 2.5, 10.0, 12.0, 8.0])
>>> blob = encode_chunk(np.array([7, 9]), np.array([0, 3, 6]), ts, values)
>>> chunk = decode_chunk(blob)
>>> chunk.series_ids.tolist(), chunk.offsets.tolist()
([7, 9], [0, 3, 6])
>>> bool((chunk.timestamps == ts).all() and (chunk.values == values).all())
True
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt
import zstandard

from tachimeter.errors import StoreError

__all__ = ["DEFAULT_LEVEL", "SeriesArrays", "decode_chunk", "encode_chunk", "frame_header"]

Int64Array = npt.NDArray[np.int64]
Float64Array = npt.NDArray[np.float64]
_U64 = npt.NDArray[np.uint64]

_MAGIC: Final = b"TQCK"
_VERSION: Final = 1
# magic, version, n_series, n_vectors, unique timestamps, int-coded samples, XOR-coded
# samples, timestamp width, integer width (bytes per value after cutting).
_HEADER: Final = struct.Struct("<4sBIIIIIBB")
# zstd level 9: within 3% of level 19's size on scraped data at 8x its encoding speed;
# decoding speed does not depend on the level.
DEFAULT_LEVEL: Final = 9
# Values with up to 9 decimals are stored as integers; 10**9 keeps k within 2**53 for
# magnitudes up to about 9e6, and the exactness check covers anything beyond.
_MAX_DECIMALS: Final = 9
_XOR: Final = 255
_POW10: Final = 10.0 ** np.arange(_MAX_DECIMALS + 1)
_MODE_DELTA: Final = 0
_MODE_DOD: Final = 1
_EXACT_LIMIT: Final = float(2**53)


class SeriesArrays(NamedTuple):
    """Decoded samples: series ``i`` is ``timestamps[offsets[i]:offsets[i + 1]]`` (us)."""

    series_ids: Int64Array
    offsets: Int64Array
    timestamps: Int64Array
    values: Float64Array


def frame_header(blob: bytes) -> tuple[int, int]:
    """``(series, samples)`` of an encoded frame, read from its header only."""
    _, _, n_series, _, _, n_int, n_xor, _, _ = _parse_header(blob)
    return n_series, n_int + n_xor


def encode_chunk(
    series_ids: npt.ArrayLike,
    offsets: npt.ArrayLike,
    timestamps: npt.ArrayLike,
    values: npt.ArrayLike,
    *,
    level: int = DEFAULT_LEVEL,
) -> bytes:
    """Encode series ``i`` = ``timestamps/values[offsets[i]:offsets[i + 1]]``.

    Series ids must be strictly increasing, every series non-empty, and its timestamps
    strictly increasing; ``StoreError`` says which rule was broken.
    """
    ids = np.ascontiguousarray(series_ids, dtype=np.int64)
    bounds = np.ascontiguousarray(offsets, dtype=np.int64)
    ts = np.ascontiguousarray(timestamps, dtype=np.int64)
    vals = np.ascontiguousarray(values, dtype=np.float64)
    _check_input(ids, bounds, ts, vals)
    n = len(ids)
    starts = bounds[:-1]
    lengths = np.diff(bounds)

    # One stored vector per distinct timestamp sequence.
    vector_of: dict[bytes, int] = {}
    series_vector = np.empty(n, dtype=np.uint32)
    unique_slices: list[Int64Array] = []
    for i in range(n):
        piece = ts[starts[i] : starts[i] + lengths[i]]
        key = piece.tobytes()
        found = vector_of.get(key)
        if found is None:
            found = len(unique_slices)
            vector_of[key] = found
            unique_slices.append(piece)
        series_vector[i] = found
    vec_lengths = np.array([len(p) for p in unique_slices], dtype=np.int64)
    vec_ts = np.concatenate(unique_slices)
    vec_starts = _starts(vec_lengths)
    ts_first = vec_ts[vec_starts]
    relative = vec_ts - np.repeat(ts_first, vec_lengths)
    ticks = np.gcd.reduceat(relative, vec_starts)
    ticks[ticks == 0] = 1
    ts_mode, ts_bias, ts_stream = _encode_ints(
        relative // np.repeat(ticks, vec_lengths), vec_starts, vec_lengths
    )

    decimals = _choose_decimals(vals, starts, lengths)
    is_int = decimals != _XOR
    per_sample_int = np.repeat(is_int, lengths)
    int_lengths = lengths[is_int]
    int_starts = _starts(int_lengths)
    scaled = np.round(vals[per_sample_int] * np.repeat(_POW10[decimals[is_int]], int_lengths))
    int_values = scaled.astype(np.int64)
    val_first = np.zeros(n, dtype=np.int64)
    val_mode = np.zeros(n, dtype=np.uint8)
    val_bias = np.zeros(n, dtype=np.int64)
    int_mode, int_bias, int_stream = _encode_ints(
        int_values - np.repeat(int_values[int_starts], int_lengths)
        if len(int_values)
        else int_values,
        int_starts,
        int_lengths,
    )
    if len(int_values):
        val_first[is_int] = int_values[int_starts]
    val_mode[is_int] = int_mode
    val_bias[is_int] = int_bias

    xor_lengths = lengths[~is_int]
    xor_bits = vals[~per_sample_int].view(np.uint64)
    xor_stream = xor_bits.copy()
    if len(xor_bits):
        xor_starts = _starts(xor_lengths)
        xor_stream[1:] ^= xor_bits[:-1]
        xor_stream[xor_starts] = 0
        val_first[~is_int] = xor_bits[xor_starts].view(np.int64)

    ts_width, ts_planes = _shuffle(ts_stream)
    int_width, int_planes = _shuffle(int_stream)
    _, xor_planes = _shuffle(xor_stream, width=8)
    payload = b"".join(
        (
            ids.astype("<i8").tobytes(),
            series_vector.astype("<u4").tobytes(),
            vec_lengths.astype("<u4").tobytes(),
            ts_first.astype("<i8").tobytes(),
            ticks.astype("<i8").tobytes(),
            ts_mode.astype(np.uint8).tobytes(),
            ts_bias.astype("<i8").tobytes(),
            decimals.astype(np.uint8).tobytes(),
            val_mode.tobytes(),
            val_bias.astype("<i8").tobytes(),
            val_first.astype("<i8").tobytes(),
            ts_planes,
            int_planes,
            xor_planes,
        )
    )
    header = _HEADER.pack(
        _MAGIC,
        _VERSION,
        n,
        len(unique_slices),
        len(vec_ts),
        len(int_values),
        len(xor_bits),
        ts_width,
        int_width,
    )
    return header + zstandard.ZstdCompressor(level=level).compress(payload)


def decode_chunk(blob: bytes) -> SeriesArrays:
    """Decode an ``encode_chunk`` frame; ``StoreError`` if it is not one."""
    _, _, n, m, n_ts, n_int, n_xor, ts_width, int_width = _parse_header(blob)
    expected = _payload_size(n, m, n_ts, n_int, n_xor, ts_width, int_width)
    try:
        payload = zstandard.ZstdDecompressor().decompress(
            memoryview(blob)[_HEADER.size :], max_output_size=expected
        )
    except zstandard.ZstdError as exc:
        raise StoreError(f"metric chunk is corrupt: zstd says {exc}") from None
    if len(payload) != expected:
        raise StoreError(
            f"metric chunk is corrupt: payload of {len(payload)} bytes, header says {expected}"
        )
    reader = _Reader(payload)
    ids = reader.array("<i8", n).astype(np.int64)
    series_vector = reader.array("<u4", n).astype(np.int64)
    vec_lengths = reader.array("<u4", m).astype(np.int64)
    ts_first = reader.array("<i8", m).astype(np.int64)
    ticks = reader.array("<i8", m).astype(np.int64)
    ts_mode = reader.array("u1", m).astype(np.uint8)
    ts_bias = reader.array("<i8", m).astype(np.int64)
    decimals = reader.array("u1", n).astype(np.uint8)
    val_mode = reader.array("u1", n).astype(np.uint8)
    val_bias = reader.array("<i8", n).astype(np.int64)
    val_first = reader.array("<i8", n).astype(np.int64)
    ts_stream = _unshuffle(reader.take(ts_width * n_ts), ts_width, n_ts)
    int_stream = _unshuffle(reader.take(int_width * n_int), int_width, n_int)
    xor_stream = _unshuffle(reader.take(8 * n_xor), 8, n_xor)

    if m and (vec_lengths.min() < 1 or series_vector.max(initial=0) >= m):
        raise StoreError("metric chunk is corrupt: bad timestamp vector table")
    if int(vec_lengths.sum()) != n_ts:
        raise StoreError("metric chunk is corrupt: timestamp vector lengths do not add up")
    vec_starts = _starts(vec_lengths)
    vec_ts = _decode_ints(ts_stream, ts_mode, ts_bias, vec_starts, vec_lengths, ts_first, ticks)

    lengths = vec_lengths[series_vector]
    bounds = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=bounds[1:])
    total = int(bounds[-1])
    if total != n_int + n_xor:
        raise StoreError(f"metric chunk is corrupt: {total} timestamps for {n_int + n_xor} values")
    if m == n and (series_vector == np.arange(n)).all():
        timestamps = vec_ts
    else:
        gather = np.arange(total, dtype=np.int64)
        gather += np.repeat(vec_starts[series_vector] - bounds[:-1], lengths)
        timestamps = vec_ts[gather]

    is_int = decimals != _XOR
    if (decimals[is_int] > _MAX_DECIMALS).any():
        raise StoreError("metric chunk is corrupt: bad decimals")
    int_values: Float64Array | None = None
    if n_int:
        int_lengths = lengths[is_int]
        ints = _decode_ints(
            int_stream,
            val_mode[is_int],
            val_bias[is_int],
            _starts(int_lengths),
            int_lengths,
            val_first[is_int],
            None,
        )
        int_values = ints.astype(np.float64)
        used = decimals[is_int]
        if used.min() == used.max():
            if used[0]:
                int_values /= _POW10[used[0]]
        else:
            int_values /= np.repeat(_POW10[used], int_lengths)
    xor_values: Float64Array | None = None
    if n_xor:
        xor_lengths = lengths[~is_int]
        xor_starts = _starts(xor_lengths)
        running = np.bitwise_xor.accumulate(xor_stream)
        # Each series' stream starts at 0, so the running XOR at its start is what the
        # series before it left behind: XOR it away, then apply the series' first value.
        base = running[xor_starts] ^ val_first[~is_int].view(np.uint64)
        running ^= np.repeat(base, xor_lengths)
        xor_values = running.view(np.float64)
    if xor_values is None:
        assert int_values is not None
        values = int_values
    elif int_values is None:
        values = xor_values
    else:
        values = np.empty(total, dtype=np.float64)
        per_sample_int = np.repeat(is_int, lengths)
        values[per_sample_int] = int_values
        values[~per_sample_int] = xor_values
    return SeriesArrays(ids, bounds, timestamps, values)


def _check_input(ids: Int64Array, bounds: Int64Array, ts: Int64Array, vals: Float64Array) -> None:
    n = len(ids)
    if n == 0:
        raise StoreError("encode_chunk: a chunk needs at least one series")
    if len(bounds) != n + 1 or bounds[0] != 0 or bounds[-1] != len(ts):
        raise StoreError(
            f"encode_chunk: offsets must have {n + 1} entries from 0 to {len(ts)} "
            f"(one more than series ids), got {len(bounds)}"
        )
    if len(vals) != len(ts):
        raise StoreError(f"encode_chunk: {len(ts)} timestamps but {len(vals)} values; they pair up")
    if (np.diff(bounds) < 1).any():
        raise StoreError("encode_chunk: every series needs at least one sample")
    if n > 1 and (np.diff(ids) <= 0).any():
        raise StoreError("encode_chunk: series ids must be strictly increasing")
    steps = np.diff(ts)
    inner = np.ones(len(steps), dtype=bool)
    inner[bounds[1:-1] - 1] = False
    if (steps[inner] <= 0).any():
        raise StoreError(
            "encode_chunk: timestamps must be strictly increasing within each series "
            "(sort the samples and drop duplicates first)"
        )


def _choose_decimals(
    vals: Float64Array, starts: Int64Array, lengths: Int64Array
) -> npt.NDArray[np.uint8]:
    """Per series the fewest decimals that store it exactly as integers, or ``_XOR``."""
    chosen = np.full(len(starts), _XOR, dtype=np.uint8)
    candidates = np.arange(len(starts))
    sub_lengths = lengths
    sub_starts = starts
    # -0.0 would come back as +0.0 from an integer: such series are XOR-coded.
    sub_vals = np.where((vals == 0.0) & np.signbit(vals), np.nan, vals)
    for d in range(_MAX_DECIMALS + 1):
        # inf * 10**d and NaN are expected here: they fail the exactness test below.
        with np.errstate(invalid="ignore", over="ignore"):
            scaled = np.round(sub_vals * _POW10[d])
            exact = (scaled / _POW10[d] == sub_vals) & (np.abs(scaled) <= _EXACT_LIMIT)
        ok = np.add.reduceat(exact.astype(np.int64), sub_starts) == sub_lengths
        chosen[candidates[ok]] = d
        if ok.all():
            break
        # Only the series still undecided are tried with more decimals.
        keep = ~ok
        sub_vals = sub_vals[np.repeat(keep, sub_lengths)]
        candidates = candidates[keep]
        sub_lengths = sub_lengths[keep]
        sub_starts = _starts(sub_lengths)
    return chosen


def _encode_ints(
    x: Int64Array, starts: Int64Array, lengths: Int64Array
) -> tuple[npt.NDArray[np.uint8], Int64Array, _U64]:
    """Zigzag stream of integer sequences that start at 0, one mode per sequence.

    Mode delta: ``x[i] - x[i-1] - bias`` with ``bias`` the sequence's median step;
    mode dod: ``(x[i] - x[i-1]) - (x[i-1] - x[i-2])``. The first element is 0 in both.
    """
    count = len(starts)
    if len(x) == 0:
        return np.zeros(count, np.uint8), np.zeros(count, np.int64), np.zeros(0, np.uint64)
    first = np.zeros(len(x), dtype=bool)
    first[starts] = True
    delta = np.empty_like(x)
    delta[0] = 0
    np.subtract(x[1:], x[:-1], out=delta[1:])
    delta[first] = 0
    dod = np.empty_like(x)
    dod[0] = 0
    np.subtract(delta[1:], delta[:-1], out=dod[1:])
    dod[first] = 0
    segment = np.repeat(np.arange(count), lengths)
    bias = _segment_medians(delta, first, segment, count)
    shifted = delta - np.repeat(bias, lengths)
    shifted[first] = 0
    cost_delta = np.add.reduceat(np.log2(1.0 + np.abs(shifted.astype(np.float64))), starts)
    cost_dod = np.add.reduceat(np.log2(1.0 + np.abs(dod.astype(np.float64))), starts)
    mode = np.where(cost_dod < cost_delta, _MODE_DOD, _MODE_DELTA).astype(np.uint8)
    bias[mode == _MODE_DOD] = 0
    stream = np.where(np.repeat(mode == _MODE_DOD, lengths), dod, shifted)
    return mode, bias, _zigzag(stream)


def _decode_ints(
    stream: _U64,
    mode: npt.NDArray[np.uint8],
    bias: Int64Array,
    starts: Int64Array,
    lengths: Int64Array,
    first: Int64Array,
    scale: Int64Array | None,
) -> Int64Array:
    """Inverse of ``_encode_ints``, then ``first + scale * sequence`` per sequence."""
    if len(stream) == 0:
        return np.zeros(0, dtype=np.int64)
    if (mode > _MODE_DOD).any():
        raise StoreError("metric chunk is corrupt: unknown integer coding mode")
    y = _unzigzag(stream)
    is_dod = mode == _MODE_DOD
    if is_dod.all():
        delta = _segmented_cumsum(y, starts)
    else:
        delta = y.copy() if is_dod.any() else y
        if bias.any():
            delta += np.repeat(bias, lengths)
        if is_dod.any():
            delta = np.where(np.repeat(is_dod, lengths), _segmented_cumsum(y, starts), delta)
    if scale is not None:
        if scale.min() == scale.max():
            if scale[0] != 1:
                delta *= scale[0]
        else:
            delta *= np.repeat(scale, lengths)
    # The first element of every sequence is 0: put the sequence's start value there.
    delta[starts] = first
    return _segmented_cumsum(delta, starts)


def _segment_medians(
    values: Int64Array, first: npt.NDArray[np.bool_], segment: Int64Array, count: int
) -> Int64Array:
    """Median of each segment's values, leaving out its first element."""
    medians = np.zeros(count, dtype=np.int64)
    keep = ~first
    if not keep.any():
        return medians
    kept_values = values[keep]
    kept_segment = segment[keep]
    order = np.lexsort((kept_values, kept_segment))
    sizes = np.bincount(kept_segment, minlength=count)
    begins = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    has = sizes > 0
    middle = begins[has] + sizes[has] // 2
    medians[has] = kept_values[order[middle]]
    return medians


def _segmented_cumsum(x: Int64Array, starts: Int64Array) -> Int64Array:
    """Cumulative sums restarting at every segment start, in place over ``x``.

    Subtracting from each segment's first element the sum of the segment before it makes
    one global ``cumsum`` restart there (by induction it ends every segment at that
    segment's own sum); int64 arithmetic wraps, so it is exact.
    """
    if len(starts) > 1:
        sums = np.add.reduceat(x, starts)
        x[starts[1:]] -= sums[:-1]
    return np.cumsum(x, out=x)


def _starts(lengths: Int64Array) -> Int64Array:
    starts = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    return starts


def _zigzag(x: Int64Array) -> _U64:
    return ((x << 1) ^ (x >> 63)).view(np.uint64)


def _unzigzag(z: _U64) -> Int64Array:
    half = (z >> np.uint64(1)).view(np.int64)
    sign = (z & np.uint64(1)).view(np.int64)
    # In place on a named array: numpy's temporary elision check on the negation of a
    # view of a temporary costs about a millisecond per call (it inspects the C stack).
    np.negative(sign, out=sign)
    half ^= sign
    return half


def _shuffle(stream: _U64, width: int | None = None) -> tuple[int, bytes]:
    """Cut to ``width`` bytes (the fewest that hold the largest) and byte-shuffle."""
    if width is None:
        top = int(stream.max()) if len(stream) else 0
        width = (top.bit_length() + 7) // 8
    if width == 0 or len(stream) == 0:
        return width, b""
    as_bytes = stream.astype("<u8", copy=False).view(np.uint8).reshape(-1, 8)
    return width, b"".join(as_bytes[:, k].tobytes() for k in range(width))


def _unshuffle(planes: bytes, width: int, count: int) -> _U64:
    if width > 8:
        raise StoreError(f"metric chunk is corrupt: integer width {width} > 8")
    out = np.zeros((count, 8), dtype=np.uint8)
    if width and count:
        source = np.frombuffer(planes, dtype=np.uint8).reshape(width, count)
        # Plane by plane: numpy copies one strided column much faster than a transpose.
        for k in range(width):
            out[:, k] = source[k]
    return out.view("<u8").reshape(count).astype(np.uint64, copy=False)


def _payload_size(n: int, m: int, n_ts: int, n_int: int, n_xor: int, tw: int, iw: int) -> int:
    return (
        n * (8 + 4 + 1 + 1 + 8 + 8) + m * (4 + 8 + 8 + 1 + 8) + n_ts * tw + n_int * iw + 8 * n_xor
    )


def _parse_header(blob: bytes) -> tuple[bytes, int, int, int, int, int, int, int, int]:
    if len(blob) < _HEADER.size:
        raise StoreError(f"metric chunk is corrupt: {len(blob)} bytes is shorter than a header")
    fields = _HEADER.unpack_from(blob)
    if fields[0] != _MAGIC:
        raise StoreError(f"metric chunk is corrupt: bad magic {fields[0]!r}")
    if fields[1] != _VERSION:
        raise StoreError(
            f"metric chunk has format version {fields[1]}; this version of Tachimeter "
            f"reads version {_VERSION}: upgrade Tachimeter to read this store"
        )
    return fields


class _Reader:
    __slots__ = ("data", "offset")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def take(self, size: int) -> bytes:
        piece = self.data[self.offset : self.offset + size]
        self.offset += size
        return piece

    def array(self, dtype: str, count: int) -> npt.NDArray[np.generic]:
        size = np.dtype(dtype).itemsize * count
        out = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.offset)
        self.offset += size
        return out
