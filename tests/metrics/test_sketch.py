"""QuantileSketch: accuracy against numpy, exact merges, bounded memory, serialization."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tachimeter.errors import ValidationError
from tachimeter.metrics import QuantileSketch

ALPHA = 0.01
# Float rounding in log() may put a value on a bucket boundary one bucket over, which
# moves the estimate by a few ulps past the exact bound.
SLACK = 1e-9
QUANTILES = (0.0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0)


def _datasets() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(20240611)
    n = 20_000
    return {
        "lognormal": rng.lognormal(mean=-2.0, sigma=1.5, size=n),
        "uniform": rng.uniform(0.0, 1000.0, size=n),
        "bimodal": np.concatenate(
            [rng.normal(0.05, 0.01, size=n // 2), rng.normal(3.0, 0.5, size=n // 2)]
        ),
        "signed": rng.normal(0.0, 50.0, size=n),
        "with_zeros": np.concatenate([np.zeros(n // 10), rng.exponential(2.0, size=n)]),
    }


def _sketch_of(values: np.ndarray | list[float]) -> QuantileSketch:
    sketch = QuantileSketch()
    for value in values:
        sketch.add(float(value))
    return sketch


@pytest.mark.parametrize("name", list(_datasets()))
def test_quantiles_are_within_one_percent_of_numpy_bracket(name: str) -> None:
    """Each estimate lies in numpy's exact [lower, higher] bracket widened by 1%."""
    data = _datasets()[name]
    sketch = _sketch_of(data)
    estimates = sketch.quantiles(QUANTILES)
    for q, estimate in zip(QUANTILES, estimates, strict=True):
        lower = float(np.quantile(data, q, method="lower"))
        higher = float(np.quantile(data, q, method="higher"))
        tolerance = ALPHA * (1 + SLACK)
        assert lower - tolerance * abs(lower) <= estimate <= higher + tolerance * abs(higher), (
            name,
            q,
        )
    assert sketch.count == len(data)
    assert sketch.sum == pytest.approx(float(np.sum(data)), rel=1e-9, abs=1e-6)
    assert sketch.min == float(np.min(data))
    assert sketch.max == float(np.max(data))


def test_quantile_agrees_with_quantiles() -> None:
    """The one-quantile call answers the same as the many-quantile pass."""
    sketch = _sketch_of(_datasets()["lognormal"])
    assert [sketch.quantile(q) for q in QUANTILES] == sketch.quantiles(QUANTILES)


def test_merge_equals_sketch_of_concatenation() -> None:
    """Merging sketches of parts gives the sketch of the whole, byte for byte."""
    data = [float(round(v)) for v in _datasets()["signed"]]
    parts = [data[:5000], data[5000:12000], data[12000:]]
    merged = QuantileSketch()
    for part in parts:
        merged.merge(_sketch_of(part))
    whole = _sketch_of(data)
    assert merged.to_bytes() == whole.to_bytes()
    assert merged.quantiles(QUANTILES) == whole.quantiles(QUANTILES)


def test_empty_sketch_answers_nan() -> None:
    """No data: quantiles, min and max are NaN, count and sum zero."""
    sketch = QuantileSketch()
    assert math.isnan(sketch.quantile(0.5))
    assert math.isnan(sketch.min) and math.isnan(sketch.max)
    assert (sketch.count, sketch.sum) == (0, 0.0)


def test_extremes_are_exact() -> None:
    """Quantiles 0 and 1 are the exact minimum and maximum."""
    sketch = _sketch_of([3.3, 1.7, 250.25, -4.5])
    assert sketch.quantile(0.0) == -4.5
    assert sketch.quantile(1.0) == 250.25


def test_memory_is_bounded_by_max_bins() -> None:
    """Values over 200 decades use at most max_bins buckets per sign; high quantiles
    keep their accuracy because only the lowest buckets are folded."""
    sketch = QuantileSketch(max_bins=64)
    values = [10.0 ** (e / 10) for e in range(-1000, 1000)]
    for value in values:
        sketch.add(value)
    assert sketch.num_bins <= 64
    top = sorted(values)[int(0.99 * (len(values) - 1))]
    assert abs(sketch.quantile(0.99) - top) <= ALPHA * (1 + SLACK) * top


def test_folding_does_not_depend_on_order() -> None:
    """With folding active, merged parts still equal the sketch of the whole."""
    values = [1.5**e for e in range(-60, 60)]
    whole = QuantileSketch(max_bins=16)
    for value in values:
        whole.add(value)
    left, right = QuantileSketch(max_bins=16), QuantileSketch(max_bins=16)
    for value in values[::2]:
        left.add(value)
    for value in reversed(values[1::2]):
        right.add(value)
    left.merge(right)
    assert left.num_bins == whole.num_bins == 16
    assert left.quantiles(QUANTILES) == whole.quantiles(QUANTILES)


def test_weighted_add_counts_repeats() -> None:
    """add(v, count=n) is the same as n single adds."""
    weighted, single = QuantileSketch(), QuantileSketch()
    weighted.add(2.5, count=4)
    for _ in range(4):
        single.add(2.5)
    assert weighted.to_bytes() == single.to_bytes()


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_values_are_rejected(bad: float) -> None:
    """The sketch refuses NaN and infinities (summaries filter them before)."""
    with pytest.raises(ValidationError, match="finite"):
        QuantileSketch().add(bad)


def test_merging_different_accuracies_is_refused() -> None:
    """Buckets of different widths cannot be added together."""
    with pytest.raises(ValidationError, match="relative accuracies differ"):
        QuantileSketch(0.01).merge(QuantileSketch(0.02))


@pytest.mark.parametrize(("accuracy", "max_bins"), [(0.0, 10), (1.0, 10), (0.01, 1), (0.01, 2.5)])
def test_bad_parameters_are_refused(accuracy: float, max_bins: int) -> None:
    """Relative accuracy must be in (0, 1) and max_bins an integer >= 2."""
    with pytest.raises(ValidationError):
        QuantileSketch(accuracy, max_bins)


def test_bytes_round_trip_is_exact() -> None:
    """from_bytes(to_bytes()) restores every count, the sum and the extremes."""
    sketch = _sketch_of(_datasets()["signed"])
    copy = QuantileSketch.from_bytes(sketch.to_bytes())
    assert copy.to_bytes() == sketch.to_bytes()
    assert (copy.count, copy.sum, copy.min, copy.max) == (
        sketch.count,
        sketch.sum,
        sketch.min,
        sketch.max,
    )
    assert copy.quantiles(QUANTILES) == sketch.quantiles(QUANTILES)


def test_serialized_size_is_compact() -> None:
    """20 000 lognormal values spanning 6 decades fit in a few KB."""
    assert len(_sketch_of(_datasets()["lognormal"]).to_bytes()) < 4096


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:10], "shorter than"),
        (lambda b: b"XYZ" + b[3:], "bad magic"),
        (lambda b: b[:3] + bytes([9]) + b[4:], "unsupported version"),
        (lambda b: b + b"\x00", "trailing"),
        (lambda b: b[:-1], "truncated"),
    ],
)
def test_malformed_bytes_raise_validation_error(mutate: object, message: str) -> None:
    """Corrupt input is refused with a message saying what is wrong."""
    good = _sketch_of([1.0, 2.0, 3.0]).to_bytes()
    assert callable(mutate)
    with pytest.raises(ValidationError, match=message):
        QuantileSketch.from_bytes(mutate(good))


finite = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False, allow_infinity=False)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(finite, min_size=1, max_size=300),
    st.lists(finite, max_size=300),
    st.floats(min_value=0.0, max_value=1.0),
)
def test_property_accuracy_and_merge(left: list[float], right: list[float], q: float) -> None:
    """For any data: the estimate is in numpy's [lower, higher] bracket widened by 1%,
    and the merged sketch answers exactly like the sketch of the concatenation."""
    whole = _sketch_of(left + right)
    merged = _sketch_of(left)
    merged.merge(_sketch_of(right))
    data = np.array(left + right)
    lower = float(np.quantile(data, q, method="lower"))
    higher = float(np.quantile(data, q, method="higher"))
    estimate = whole.quantile(q)
    tolerance = ALPHA * (1 + SLACK)
    assert lower - tolerance * abs(lower) <= estimate <= higher + tolerance * abs(higher)
    assert merged.quantile(q) == estimate
    assert merged.count == whole.count
    assert QuantileSketch.from_bytes(whole.to_bytes()).quantile(q) == estimate
