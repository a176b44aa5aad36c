"""PriceTable and infer_cost against prices read straight out of the genai-prices snapshot.

Expected costs are computed by hand in each test (``tokens * USD per MTok / 10**6``) from
the snapshot's own data structures, never through the library's calculation.
"""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
import threading
from datetime import UTC, datetime
from decimal import Decimal

import msgspec
import pytest
from genai_prices.data import providers
from genai_prices.data_snapshot import DataSnapshot, set_custom_snapshot
from genai_prices.types import ConditionalPrice, TieredPrices, Usage
from genai_prices.types import ModelPrice as SnapshotPrice
from hypothesis import given, settings
from hypothesis import strategies as st

from tachimeter.errors import ConfigError, ValidationError
from tachimeter.model.prices import CostEstimate, ModelPrice, PriceTable, infer_cost
from tachimeter.model.tokens import TokenUsage

MTOK = Decimal(1_000_000)

# 10 000 input tokens of which 6 000 read from and 2 000 written to the cache;
# 1 500 output tokens of which 500 reasoning.
USAGE = TokenUsage(
    input_tokens=10_000,
    cache_read_tokens=6_000,
    cache_creation_tokens=2_000,
    output_tokens=1_500,
    reasoning_tokens=500,
)


def snapshot_prices(provider_id: str, model_id: str) -> SnapshotPrice | list[ConditionalPrice]:
    """The raw ``prices`` of one model in the bundled snapshot."""
    provider = next(p for p in providers if p.id == provider_id)
    return next(m for m in provider.models if m.id == model_id).prices


def flat_prices(provider_id: str, model_id: str) -> SnapshotPrice:
    """Prices of a model with one price set, no tiers and no per-request fee."""
    prices = snapshot_prices(provider_id, model_id)
    assert isinstance(prices, SnapshotPrice), "test needs a model with one price set"
    for key in ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok"):
        assert not isinstance(getattr(prices, key), TieredPrices), f"{model_id} is tiered"
    assert prices.requests_kcount is None
    assert prices.output_reasoning_mtok is None
    return prices


def decimal(value: object) -> Decimal:
    assert isinstance(value, Decimal)
    return value


@pytest.fixture
def table() -> PriceTable:
    return PriceTable()


@pytest.mark.parametrize(
    ("model", "provider_id", "model_id"),
    [
        ("claude-sonnet-4", "anthropic", "claude-sonnet-4-0"),
        ("claude-sonnet-4-20250514", "anthropic", "claude-sonnet-4-0"),
        ("claude-3-5-haiku", "anthropic", "claude-3-5-haiku-latest"),
        ("gpt-4o", "openai", "gpt-4o"),
        ("gpt-4o-mini", "openai", "gpt-4o-mini"),
    ],
)
def test_cost_matches_hand_computation_from_snapshot_prices(
    table: PriceTable, model: str, provider_id: str, model_id: str
) -> None:
    prices = flat_prices(provider_id, model_id)
    input_price = decimal(prices.input_mtok)
    output_price = decimal(prices.output_mtok)
    cache_read_price = decimal(prices.cache_read_mtok)
    # OpenAI charges no cache write: those tokens are plain input.
    cache_write_price = (
        input_price if prices.cache_write_mtok is None else decimal(prices.cache_write_mtok)
    )
    assert cache_read_price < input_price

    expected_input = 2_000 * input_price / MTOK
    expected_cache_read = 6_000 * cache_read_price / MTOK
    expected_cache_creation = 2_000 * cache_write_price / MTOK
    expected_output = 1_500 * output_price / MTOK

    estimate = table.estimate(model, USAGE)

    assert estimate.source == "genai-prices"
    assert (estimate.provider, estimate.matched_model, estimate.model) == (
        provider_id,
        model_id,
        model,
    )
    assert estimate.input == expected_input
    assert estimate.cache_read == expected_cache_read
    assert estimate.cache_creation == expected_cache_creation
    assert estimate.output == expected_output
    assert estimate.total == (
        expected_input + expected_cache_read + expected_cache_creation + expected_output
    )


def test_claude_sonnet_4_cost_in_dollars(table: PriceTable) -> None:
    """A literal check of the numbers above: $3 in, $0.30 read, $3.75 write, $15 out."""
    prices = flat_prices("anthropic", "claude-sonnet-4-0")
    assert (prices.input_mtok, prices.cache_read_mtok, prices.cache_write_mtok) == (
        Decimal("3"),
        Decimal("0.3"),
        Decimal("3.75"),
    )
    assert prices.output_mtok == Decimal("15")
    # 2000*3 + 6000*0.3 + 2000*3.75 + 1500*15 = 6000 + 1800 + 7500 + 22500 micro-dollars
    assert infer_cost("claude-sonnet-4", USAGE, table=table) == Decimal("0.0378")


def test_cache_creation_costs_more_and_cache_read_less_than_plain_input(
    table: PriceTable,
) -> None:
    plain = table.estimate("claude-sonnet-4", TokenUsage(input_tokens=10_000))
    read = table.estimate(
        "claude-sonnet-4", TokenUsage(input_tokens=10_000, cache_read_tokens=10_000)
    )
    written = table.estimate(
        "claude-sonnet-4", TokenUsage(input_tokens=10_000, cache_creation_tokens=10_000)
    )
    assert decimal(read.total) < decimal(plain.total) < decimal(written.total)


def test_cached_anthropic_tokens_are_not_charged_twice(table: PriceTable) -> None:
    """Langfuse #5568: the cache-read part is charged at the cache price only."""
    usage = TokenUsage.from_anthropic(
        {"input_tokens": 100, "cache_read_input_tokens": 1_000, "output_tokens": 0}
    )
    prices = flat_prices("anthropic", "claude-sonnet-4-0")
    expected = (100 * decimal(prices.input_mtok) + 1_000 * decimal(prices.cache_read_mtok)) / MTOK
    assert infer_cost("claude-sonnet-4", usage, table=table) == expected


def test_price_is_chosen_by_the_time_of_the_call(table: PriceTable) -> None:
    """o3's price dropped on 2025-06-10; ``at`` selects the price in force."""
    conditional = snapshot_prices("openai", "o3")
    assert isinstance(conditional, list)
    launch, cut = conditional[0].prices, conditional[1].prices
    usage = TokenUsage(input_tokens=1_000, output_tokens=1_000)

    def by_hand(prices: SnapshotPrice) -> Decimal:
        return (1_000 * decimal(prices.input_mtok) + 1_000 * decimal(prices.output_mtok)) / MTOK

    before = infer_cost("o3", usage, at=datetime(2025, 6, 1, tzinfo=UTC), table=table)
    after = infer_cost("o3", usage, at=datetime(2025, 6, 20, tzinfo=UTC), table=table)
    naive = infer_cost("o3", usage, at=datetime(2025, 6, 1), table=table)
    assert before == by_hand(launch) == naive
    assert after == by_hand(cut)
    assert decimal(after) < decimal(before)


def test_tiered_price_applies_the_tier_to_every_token_past_the_threshold(
    table: PriceTable,
) -> None:
    prices = snapshot_prices("anthropic", "claude-sonnet-4-5")
    assert isinstance(prices, SnapshotPrice)
    input_mtok = prices.input_mtok
    assert isinstance(input_mtok, TieredPrices)
    [tier] = input_mtok.tiers

    below = TokenUsage(input_tokens=tier.start)
    above = TokenUsage(input_tokens=tier.start + 1)
    assert infer_cost("claude-sonnet-4-5", below, table=table) == (
        tier.start * input_mtok.base / MTOK
    )
    assert infer_cost("claude-sonnet-4-5", above, table=table) == (
        (tier.start + 1) * tier.price / MTOK
    )


def test_per_request_fee_is_in_the_total_but_not_in_the_parts(table: PriceTable) -> None:
    prices = snapshot_prices("perplexity", "sonar")
    assert isinstance(prices, SnapshotPrice)
    fee = decimal(prices.requests_kcount) / 1_000
    usage = TokenUsage(input_tokens=1_000, output_tokens=100)
    estimate = table.estimate("sonar", usage, provider="perplexity")
    parts = decimal(estimate.input) + decimal(estimate.output)
    assert parts == (1_000 * decimal(prices.input_mtok) + 100 * decimal(prices.output_mtok)) / MTOK
    assert estimate.total == parts + fee


def test_provider_narrows_the_lookup_and_accepts_opentelemetry_provider_names(
    table: PriceTable,
) -> None:
    openai = table.estimate("gpt-4o", USAGE, provider="openai")
    otel_azure = table.estimate("gpt-4o", USAGE, provider="azure.ai.openai")
    assert openai.provider == otel_azure.provider == "openai"
    assert openai.total == otel_azure.total == table.estimate("gpt-4o", USAGE).total


def test_unknown_provider_gives_no_cost(table: PriceTable) -> None:
    estimate = table.estimate("gpt-4o", USAGE, provider="no-such-provider")
    assert (estimate.source, estimate.total) == ("unknown", None)
    assert table.unknown_models == {"gpt-4o": 1}


def test_unknown_model_gives_no_cost_and_is_counted(table: PriceTable) -> None:
    estimate = table.estimate("in-house-llm-v2", USAGE, provider=None)
    assert estimate == CostEstimate(source="unknown", model="in-house-llm-v2")
    assert infer_cost("in-house-llm-v2", USAGE, table=table) is None
    assert table.unknown_models == {"in-house-llm-v2": 2}


def test_unknown_models_are_counted_per_table(table: PriceTable) -> None:
    table.estimate("mystery", USAGE)
    assert PriceTable().unknown_models == {}


def test_unknown_models_returns_a_copy(table: PriceTable) -> None:
    table.estimate("mystery", USAGE)
    table.unknown_models["mystery"] = 99
    assert table.unknown_models == {"mystery": 1}


def test_unknown_model_counting_is_thread_safe(table: PriceTable) -> None:
    threads, calls = 8, 500
    barrier = threading.Barrier(threads)

    def worker(index: int) -> None:
        barrier.wait()
        for _ in range(calls):
            table.estimate(f"mystery-{index % 2}", USAGE)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    assert table.unknown_models == {"mystery-0": threads * calls // 2, "mystery-1": 2000}


def test_distinct_unknown_names_are_bounded(table: PriceTable) -> None:
    for index in range(1_005):
        table.estimate(f"run-{index}", TokenUsage())
    counted = table.unknown_models
    assert len(counted) == 1_001
    assert counted["<other>"] == 5
    assert sum(counted.values()) == 1_005


@pytest.mark.parametrize(
    ("cost", "expected"),
    [(Decimal("0.0421"), Decimal("0.0421")), (0.1, Decimal("0.1")), (2, Decimal(2))],
)
def test_cost_given_by_the_caller_wins(
    table: PriceTable, cost: float | Decimal, expected: Decimal
) -> None:
    estimate = table.estimate("gpt-4o", USAGE, provider="openai", cost=cost)
    assert estimate == CostEstimate(
        source="caller", model="gpt-4o", total=expected, provider="openai"
    )


def test_caller_cost_for_an_unknown_model_is_used_and_not_counted(table: PriceTable) -> None:
    assert infer_cost("in-house", USAGE, cost=Decimal("0.5"), table=table) == Decimal("0.5")
    assert table.unknown_models == {}


def test_caller_cost_wins_over_an_override() -> None:
    table = PriceTable(
        overrides={"gpt-4o": ModelPrice(input_per_mtok=Decimal(1), output_per_mtok=Decimal(1))}
    )
    assert table.estimate("gpt-4o", USAGE, cost=Decimal("7")).source == "caller"


@pytest.mark.parametrize("bad", [-0.01, float("nan"), float("inf"), Decimal("NaN"), True, "1"])
def test_invalid_caller_cost_is_rejected(table: PriceTable, bad: object) -> None:
    with pytest.raises(ValidationError, match=r"cost for model 'gpt-4o' must be a finite"):
        table.estimate("gpt-4o", USAGE, cost=bad)  # type: ignore[arg-type]


def test_override_wins_over_the_snapshot() -> None:
    price = ModelPrice(
        input_per_mtok=Decimal("1"),
        output_per_mtok=Decimal("2"),
        cache_read_per_mtok=Decimal("0.25"),
        cache_write_per_mtok=Decimal("1.5"),
        reasoning_per_mtok=Decimal("4"),
    )
    table = PriceTable(overrides={"gpt-4o": price})
    estimate = table.estimate("gpt-4o", USAGE, provider="openai")
    assert estimate == CostEstimate(
        source="override",
        model="gpt-4o",
        total=Decimal("0.0105"),
        input=Decimal("0.002"),  # 2000 * 1
        cache_read=Decimal("0.0015"),  # 6000 * 0.25
        cache_creation=Decimal("0.003"),  # 2000 * 1.5
        output=Decimal("0.004"),  # 1000 * 2 + 500 * 4
        provider="openai",
        matched_model="gpt-4o",
    )


def test_override_without_cache_or_reasoning_prices_uses_input_and_output_prices() -> None:
    table = PriceTable(
        overrides={"mine": ModelPrice(input_per_mtok=Decimal(10), output_per_mtok=Decimal(20))}
    )
    # (10000 * 10 + 1500 * 20) / 10**6
    assert infer_cost("mine", USAGE, table=table) == Decimal("0.13")


def test_override_names_match_exactly() -> None:
    table = PriceTable(
        overrides={"gpt-4o": ModelPrice(input_per_mtok=Decimal(0), output_per_mtok=Decimal(0))}
    )
    assert table.estimate("GPT-4o", USAGE).source == "genai-prices"
    assert table.estimate("gpt-4o-2024-08-06", USAGE).source == "genai-prices"
    assert table.estimate("gpt-4o", USAGE).total == 0


def test_override_prices_accept_ints_floats_and_config_strings() -> None:
    untyped = ModelPrice(input_per_mtok=0.3, output_per_mtok=2)  # type: ignore[arg-type]
    assert untyped.input_per_mtok == Decimal("0.3")  # as written, not 0.29999...
    assert untyped.output_per_mtok == Decimal(2)
    assert isinstance(untyped.output_per_mtok, Decimal)
    from_config = msgspec.convert(
        {"input_per_mtok": "0.3", "output_per_mtok": 1.25, "cache_read_per_mtok": 0.03},
        ModelPrice,
    )
    assert from_config == ModelPrice(
        input_per_mtok=Decimal("0.3"),
        output_per_mtok=Decimal("1.25"),
        cache_read_per_mtok=Decimal("0.03"),
    )


@pytest.mark.parametrize("bad", [-1, Decimal("-0.1"), float("nan"), Decimal("Infinity"), "1"])
def test_invalid_override_price_is_a_config_error(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"ModelPrice.cache_read_per_mtok must be a finite"):
        ModelPrice(
            input_per_mtok=Decimal(1),
            output_per_mtok=Decimal(1),
            cache_read_per_mtok=bad,  # type: ignore[arg-type]
        )


def test_override_must_be_a_model_price() -> None:
    with pytest.raises(ConfigError, match="pricing override for 'm' must be a ModelPrice"):
        PriceTable(overrides={"m": {"input_per_mtok": 1}})  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match="non-empty strings"):
        PriceTable(
            overrides={"": ModelPrice(input_per_mtok=Decimal(1), output_per_mtok=Decimal(1))}
        )


def test_infer_cost_uses_the_default_table_when_none_is_given() -> None:
    assert infer_cost("gpt-4o", USAGE) == PriceTable().estimate("gpt-4o", USAGE).total


def test_prices_ignore_a_snapshot_auto_updated_by_someone_else(table: PriceTable) -> None:
    """genai-prices' process-wide snapshot (set by UpdatePrices) is not what we price from."""
    expected = table.estimate("gpt-4o", USAGE).total
    set_custom_snapshot(DataSnapshot(providers=[], from_auto_update=True))
    try:
        assert PriceTable().estimate("gpt-4o", USAGE).total == expected
    finally:
        set_custom_snapshot(None)


def test_every_snapshot_model_costs_what_genai_prices_calc_price_says() -> None:
    """The fast path equals genai-prices' own calculation for every model in the snapshot."""
    reference = DataSnapshot(providers=providers, from_auto_update=False)
    rng = random.Random(406)
    table = PriceTable()
    at_times = [datetime(2025, 1, 1, tzinfo=UTC), datetime(2027, 6, 1, tzinfo=UTC)]
    checked = unmatched = 0
    for provider in providers:
        for model in provider.models:
            for at in at_times:
                # Small counts and counts past the usual 128k/200k/272k tier thresholds.
                scale = rng.choice([1_000, 400_000])
                cache_read, cache_write = rng.randrange(scale), rng.randrange(scale)
                reasoning = rng.randrange(scale)
                usage = TokenUsage(
                    input_tokens=cache_read + cache_write + rng.randrange(scale),
                    cache_read_tokens=cache_read,
                    cache_creation_tokens=cache_write,
                    output_tokens=reasoning + rng.randrange(scale),
                    reasoning_tokens=reasoning,
                )
                ours = table.estimate(model.id, usage, provider=provider.id, at=at)
                # The mapping onto genai-prices' Usage documented in tachimeter.model.prices.
                genai_usage = Usage(
                    input_tokens=usage.input_tokens,
                    cache_read_tokens=usage.cache_read_tokens,
                    cache_write_tokens=usage.cache_creation_tokens,
                    output_tokens=usage.output_tokens,
                    output_reasoning_tokens=usage.reasoning_tokens,
                )
                try:
                    theirs = reference.calc(genai_usage, model.id, provider.id, None, at)
                except LookupError:
                    # Some ids are not matched by their own model's match rule.
                    assert ours.source == "unknown", (provider.id, model.id)
                    unmatched += 1
                    continue
                assert ours.total == theirs.total_price, (provider.id, model.id, at, usage)
                assert ours.output == theirs.output_price, (provider.id, model.id)
                assert (
                    decimal(ours.input) + decimal(ours.cache_read) + decimal(ours.cache_creation)
                    == theirs.input_price
                ), (provider.id, model.id)
                checked += 1
    assert checked > 20 * unmatched


# gpt-4o-mini has no cache-write price, claude-sonnet-4 has one: both linear, no request fee.
LINEAR_MODELS = [
    ("gpt-4o-mini", "openai", "gpt-4o-mini"),
    ("claude-sonnet-4", "anthropic", "claude-sonnet-4-0"),
]
small = st.integers(min_value=0, max_value=200_000)


@st.composite
def usage_parts(draw: st.DrawFn) -> tuple[int, int, int, int, int]:
    """(uncached input, cache read, cache creation, plain output, reasoning)."""
    return draw(small), draw(small), draw(small), draw(small), draw(small)


def usage_from(parts: tuple[int, int, int, int, int]) -> TokenUsage:
    uncached, cache_read, cache_creation, plain_output, reasoning = parts
    return TokenUsage(
        input_tokens=uncached + cache_read + cache_creation,
        cache_read_tokens=cache_read,
        cache_creation_tokens=cache_creation,
        output_tokens=plain_output + reasoning,
        reasoning_tokens=reasoning,
    )


@pytest.mark.parametrize(("model", "provider_id", "model_id"), LINEAR_MODELS)
@settings(deadline=None)
@given(parts=usage_parts(), which=st.integers(min_value=0, max_value=4), extra=small)
def test_cost_never_decreases_when_tokens_are_added(
    model: str,
    provider_id: str,
    model_id: str,
    parts: tuple[int, int, int, int, int],
    which: int,
    extra: int,
) -> None:
    """Adding tokens of any kind (cache tokens count as input too) never lowers the cost."""
    flat_prices(provider_id, model_id)
    table = PriceTable()
    grown = list(parts)
    grown[which] += extra
    before = infer_cost(model, usage_from(parts), table=table)
    after = infer_cost(
        model, usage_from((grown[0], grown[1], grown[2], grown[3], grown[4])), table=table
    )
    assert before is not None
    assert after is not None
    assert before <= after


@pytest.mark.parametrize(("model", "provider_id", "model_id"), LINEAR_MODELS)
@settings(deadline=None)
@given(a=usage_parts(), b=usage_parts())
def test_cost_of_a_sum_is_the_sum_of_costs_for_linear_prices(
    model: str,
    provider_id: str,
    model_id: str,
    a: tuple[int, int, int, int, int],
    b: tuple[int, int, int, int, int],
) -> None:
    flat_prices(provider_id, model_id)
    table = PriceTable()
    first, second = usage_from(a), usage_from(b)
    cost_a = infer_cost(model, first, table=table)
    cost_b = infer_cost(model, second, table=table)
    assert cost_a is not None
    assert cost_b is not None
    assert infer_cost(model, first + second, table=table) == cost_a + cost_b


def run_isolated(code: str) -> None:
    """Run ``code`` in a fresh interpreter and fail with its output if it fails."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_importing_prices_does_not_import_genai_prices() -> None:
    run_isolated(
        """
        import sys
        from decimal import Decimal
        from tachimeter.model.prices import DEFAULT_PRICE_TABLE, ModelPrice, PriceTable
        from tachimeter.model.tokens import TokenUsage

        assert "genai_prices" not in sys.modules, "imported at import time"
        usage = TokenUsage(input_tokens=10, output_tokens=10)
        one = Decimal(1)
        table = PriceTable(overrides={"mine": ModelPrice(input_per_mtok=one, output_per_mtok=one)})
        assert table.estimate("mine", usage).source == "override"
        assert DEFAULT_PRICE_TABLE.estimate("x", usage, cost=Decimal(1)).source == "caller"
        assert "genai_prices" not in sys.modules, "imported without a snapshot lookup"
        assert DEFAULT_PRICE_TABLE.estimate("gpt-4o", usage).source == "genai-prices"
        assert "genai_prices" in sys.modules
        """
    )


def test_pricing_never_opens_a_network_connection() -> None:
    """Every socket connect and DNS lookup raises; the first lookups must not need one."""
    run_isolated(
        """
        import socket, threading
        from datetime import UTC, datetime

        def refuse(*args, **kwargs):
            raise AssertionError(f"network access attempted: {args!r}")

        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse

        from tachimeter.model.prices import PriceTable
        from tachimeter.model.tokens import TokenUsage

        table = PriceTable()
        table.preload()
        usage = TokenUsage(input_tokens=1000, cache_read_tokens=500, output_tokens=10)
        assert table.estimate("gpt-4o", usage).total is not None
        assert table.estimate("claude-sonnet-4", usage, provider="anthropic").total is not None
        old = datetime(2024, 1, 1, tzinfo=UTC)
        assert table.estimate("o3", usage, at=old).total is not None
        assert table.estimate("no-such-model", usage).total is None
        names = [thread.name for thread in threading.enumerate()]
        assert not any("genai_prices" in name for name in names), names
        """
    )
