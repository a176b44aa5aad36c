"""The chunk codec: lossless for every float, compact on scraped data, strict on bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from bench.tsgen import generate

from tachimeter.errors import StoreError
from tachimeter.store.chunks import decode_chunk, encode_chunk, frame_header

US = 1_000_000


def _frame(series: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, ...]:
    ids = np.arange(1, len(series) + 1, dtype=np.int64) * 3
    offsets = np.concatenate([[0], np.cumsum([len(t) for t, _ in series])])
    ts = np.concatenate([t for t, _ in series])
    values = np.concatenate([v for _, v in series])
    return ids, offsets, ts, values


def _assert_round_trip(
    ids: np.ndarray, offsets: np.ndarray, ts: np.ndarray, values: np.ndarray
) -> bytes:
    blob = encode_chunk(ids, offsets, ts, values)
    out = decode_chunk(blob)
    assert out.series_ids.tolist() == ids.tolist()
    assert out.offsets.tolist() == offsets.tolist()
    assert out.timestamps.tolist() == ts.tolist()
    # Bit for bit: NaN payloads and the sign of zero survive.
    assert out.values.view(np.uint64).tolist() == values.view(np.uint64).tolist()
    assert frame_header(blob) == (len(ids), len(ts))
    return blob


@pytest.mark.parametrize("seed", range(6))
def test_random_frames_round_trip_bit_exact(seed: int) -> None:
    """Every kind of value (integers, decimals, arbitrary floats, NaN, +-inf, -0.0, huge
    magnitudes) and every timestamp shape decode to the same bits."""
    rng = np.random.default_rng(seed)
    series = []
    for k in range(int(rng.integers(1, 12))):
        n = int(rng.integers(1, 400))
        shape = k % 4
        if shape == 0:  # regular with jitter, ms precision
            ts = 1_767_225_600 * US + np.arange(n) * 15 * US + rng.integers(0, 50, n) * 1000
        elif shape == 1:  # irregular, us precision
            ts = np.cumsum(rng.integers(1, 10**7, n)) + 10**15
        elif shape == 2:  # negative and tiny steps
            ts = np.cumsum(rng.integers(1, 3, n)) - 10**9
        else:  # identical to the first series' stamps when lengths allow
            ts = series[0][0] if series and len(series[0][0]) == n else np.arange(n) * US
        kind = int(rng.integers(0, 6))
        if kind == 0:
            values = np.cumsum(rng.poisson(30, n)).astype(float)
        elif kind == 1:
            values = np.round(np.cumsum(rng.normal(0, 1, n)), 3)
        elif kind == 2:
            values = rng.normal(0, 1e6, n)
        elif kind == 3:
            values = rng.choice([math.nan, math.inf, -math.inf, -0.0, 0.0, 1e308, -5e-324], n)
        elif kind == 4:
            values = np.full(n, 42.0)
        else:
            values = rng.integers(-(2**62), 2**62, n).astype(float)
        series.append((np.asarray(ts, dtype=np.int64), np.asarray(values, dtype=float)))
    _assert_round_trip(*_frame(series))


def test_nan_payloads_and_negative_zero_are_kept() -> None:
    """A Prometheus stale marker (a NaN with a payload) is not turned into another NaN."""
    stale = np.array([0x7FF0000000000002], dtype=np.uint64).view(np.float64)[0]
    values = np.array([1.0, stale, -0.0, 2.5])
    _assert_round_trip(*_frame([(np.arange(4, dtype=np.int64) * US, values)]))


def test_scraped_data_takes_under_one_byte_per_sample() -> None:
    """On scrape-shaped data (the benchmark's generator) a 2-hour frame per metric name
    stays under 1 byte per sample; Prometheus needs about 4.7 on the same data."""
    data = generate(n_series=100, hours=2, seed=5)
    by_name: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for s in data.series:
        by_name.setdefault(s.name, []).append((s.timestamps_ms * 1000, s.values))
    total = samples = 0
    for series in by_name.values():
        blob = _assert_round_trip(*_frame(series))
        total += len(blob)
        samples += sum(len(t) for t, _ in series)
    assert total / samples < 1.0


def test_shared_timestamps_are_stored_once() -> None:
    """Series scraped together cost little more than one series' timestamps."""
    ts = (
        1_767_225_600 * US
        + np.arange(480) * 15 * US
        + np.random.default_rng(1).integers(0, 900, 480) * 1000
    )
    one = len(encode_chunk(*_frame([(ts, np.zeros(480))])))
    many = len(encode_chunk(*_frame([(ts, np.zeros(480))] * 50)))
    assert many < one + 50 * 40


@pytest.mark.parametrize(
    ("ids", "offsets", "ts", "values", "needle"),
    [
        ([], [0], [], [], "at least one series"),
        ([1, 2], [0, 1], [5], [1.0], "offsets must have 3 entries"),
        ([2, 1], [0, 1, 2], [5, 6], [1.0, 1.0], "strictly increasing"),
        ([1], [0, 2], [5, 5], [1.0, 1.0], "timestamps must be strictly increasing"),
        ([1, 2], [0, 0, 1], [5], [1.0], "at least one sample"),
        ([1], [0, 1], [5], [1.0, 2.0], "they pair up"),
    ],
)
def test_bad_input_is_refused_with_the_rule(
    ids: list[int], offsets: list[int], ts: list[int], values: list[float], needle: str
) -> None:
    with pytest.raises(StoreError, match=needle):
        encode_chunk(ids, offsets, ts, values)


def test_corrupt_frames_raise_store_error() -> None:
    blob = encode_chunk([1], [0, 3], [1, 2, 3], [1.0, 2.0, 3.0])
    with pytest.raises(StoreError, match="magic"):
        decode_chunk(b"XXXX" + blob[4:])
    with pytest.raises(StoreError, match="format version"):
        decode_chunk(blob[:4] + bytes([9]) + blob[5:])
    with pytest.raises(StoreError, match="corrupt"):
        decode_chunk(blob[:-3])
    with pytest.raises(StoreError, match="shorter than a header"):
        decode_chunk(blob[:5])
