"""LLM prices and cost estimates from the bundled ``genai-prices`` snapshot.

Which price wins, first match first:

1. ``cost`` given by the caller (Langfuse's rule: the caller knows its invoice);
2. a :class:`ModelPrice` override from config, matched on the exact model name;
3. the ``genai-prices`` snapshot bundled with the installed package, at the time of the
   call (``at``; default now; naive datetimes are UTC), matched by genai-prices' own rules
   (case-insensitive, dated aliases such as ``claude-sonnet-4-20250514``);
4. otherwise no cost (``None``), and the model is counted in
   :attr:`PriceTable.unknown_models`. An unknown model is never priced as zero.

Money is :class:`decimal.Decimal` in USD, exact: prices are per million tokens and
``count * price / 10**6`` needs no rounding.

Token semantics. genai-prices' ``input_tokens`` is the *total* input, cache reads and
writes included, and its ``cache_read_tokens``/``cache_write_tokens`` are priced as parts
of it; likewise ``output_reasoning_tokens`` is part of ``output_tokens``. That is the
OpenTelemetry shape of :class:`~tachimeter.model.tokens.TokenUsage`, so the mapping is
one to one (``cache_creation_tokens`` -> ``cache_write_tokens``,
``reasoning_tokens`` -> ``output_reasoning_tokens``) and uncached input is charged once:
``uncached * input + cache_read * cache_read_price + cache_creation * cache_write_price``.
A category the model has no price for falls back as genai-prices does: cache tokens to the
input price, reasoning tokens to the output price, and input or output without any price
(embeddings have no output price) costs nothing. ``TokenUsage`` has one cache-creation
count, so Anthropic's 1-hour cache writes are priced as 5-minute writes (the snapshot's
``cache_write_mtok``), as genai-prices does when it is not given the split.

No network, ever. genai-prices fetches newer prices only inside ``UpdatePrices`` (its
background thread) and serves them through a process-wide "custom snapshot". This module
never starts ``UpdatePrices`` and does not read the process-wide snapshot: it builds its
own ``DataSnapshot`` from ``genai_prices.data.providers``, the data shipped in the wheel,
so prices are reproducible for a given package version even when another library in the
process auto-updates genai-prices.

Cost of use. ``genai_prices`` takes about 0.3-0.5 s to import (it pulls pydantic and
httpx2), so it is imported at the first snapshot lookup, never at import time; call
:meth:`PriceTable.preload` on a worker thread to pay it early. genai-prices' own
``calc_price`` takes about 250 us per call, so only the model lookup and the choice of the
time-versioned price go through it; the arithmetic above runs on prices resolved once per
model and price period (an estimate takes about 7 us), and tests check it equals
``genai_prices`` ``calc`` for every model in the snapshot.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Final, Literal, TypeAlias

import msgspec

from tachimeter.errors import ConfigError, ValidationError
from tachimeter.model.tokens import TokenUsage

if TYPE_CHECKING:
    from genai_prices.data_snapshot import DataSnapshot
    from genai_prices.types import ModelPrice as SnapshotPrice
    from genai_prices.types import TieredPrices

__all__ = [
    "DEFAULT_PRICE_TABLE",
    "CostEstimate",
    "CostSource",
    "ModelPrice",
    "PriceTable",
    "infer_cost",
]

CostSource: TypeAlias = Literal["caller", "override", "genai-prices", "unknown"]

_PER_MTOK: Final = Decimal(1_000_000)
_PER_KREQUEST: Final = Decimal(1_000)
_ZERO: Final = Decimal(0)
# Distinct unknown names tracked one by one; later ones are counted under one key so that a
# caller sending ids as model names cannot grow the table without bound.
_MAX_UNKNOWN_NAMES: Final = 1_000
_UNKNOWN_OVERFLOW_KEY: Final = "<other>"
# Bounds the snapshot caches the same way; the snapshot has about 2 300 models.
_MAX_CACHED: Final = 10_000


class ModelPrice(msgspec.Struct, frozen=True, kw_only=True):
    """A user's price for one model, in USD per million tokens (overrides the snapshot).

    Prices are :class:`~decimal.Decimal`. From config, ``msgspec.convert`` accepts numbers
    and numeric strings; ints and floats given directly are converted as written (``0.3``
    becomes ``Decimal('0.3')``, not the binary float). A missing cache price charges those
    tokens at ``input_per_mtok``, a missing reasoning price at ``output_per_mtok``.
    Raises :class:`~tachimeter.errors.ConfigError` for a negative or non-finite price.

    >>> table = PriceTable(overrides={"my-model": ModelPrice(
    ...     input_per_mtok=Decimal("2"), output_per_mtok=Decimal("8"),
    ...     cache_read_per_mtok=Decimal("0.5"))})
    >>> table.estimate("my-model", TokenUsage(input_tokens=1_000_000,
    ...     cache_read_tokens=500_000, output_tokens=1_000)).total
    Decimal('1.258')
    """

    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cache_read_per_mtok: Decimal | None = None
    cache_write_per_mtok: Decimal | None = None
    reasoning_per_mtok: Decimal | None = None

    def __post_init__(self) -> None:
        for name in (
            "input_per_mtok",
            "output_per_mtok",
            "cache_read_per_mtok",
            "cache_write_per_mtok",
            "reasoning_per_mtok",
        ):
            value = getattr(self, name)
            if value is not None:
                msgspec.structs.force_setattr(self, name, _price_decimal(name, value))


class CostEstimate(msgspec.Struct, frozen=True, kw_only=True):
    """The cost of one usage and where it came from; amounts in USD.

    ``input`` is the uncached input only; ``cache_read`` and ``cache_creation`` are the
    cached parts of the input; ``output`` includes reasoning. ``total`` is their sum plus
    any per-request fee the snapshot has (Perplexity's sonar models). With
    ``source="caller"`` only ``total`` is set; with ``source="unknown"`` nothing is.
    ``provider`` and ``matched_model`` are the snapshot's ids when it priced the call.

    >>> estimate = PriceTable().estimate("gpt-4o-mini", TokenUsage(input_tokens=1000))
    >>> estimate.source, estimate.matched_model, estimate.total
    ('genai-prices', 'gpt-4o-mini', Decimal('0.00015'))
    """

    source: CostSource
    model: str
    total: Decimal | None = None
    input: Decimal | None = None
    output: Decimal | None = None
    cache_read: Decimal | None = None
    cache_creation: Decimal | None = None
    provider: str | None = None
    matched_model: str | None = None


# A price in USD per million tokens (per thousand requests for the request fee) as
# (base, ((threshold, price), ...)) with the highest threshold first. The first tier whose
# threshold the call's input tokens exceed applies to every unit, else the base: that is
# genai-prices' "cliff" tiering. A flat price has no tiers.
_Rate: TypeAlias = tuple[Decimal, tuple[tuple[int, Decimal], ...]]


class _Rates:
    """The prices of one model at one time, resolved once and reused for every call."""

    __slots__ = ("cache_read", "cache_write", "input", "output", "per_request", "reasoning")

    def __init__(
        self,
        *,
        input: _Rate | None,
        output: _Rate | None,
        cache_read: _Rate | None,
        cache_write: _Rate | None,
        reasoning: _Rate | None,
        per_request: _Rate | None,
    ) -> None:
        # None means "no price": input/output/per_request then cost nothing, the cache
        # prices fall back to input and reasoning to output (genai-prices' decomposition).
        self.input = input
        self.output = output
        self.cache_read = cache_read
        self.cache_write = cache_write
        self.reasoning = reasoning
        self.per_request = per_request

    def estimate(
        self,
        usage: TokenUsage,
        source: CostSource,
        model: str,
        provider: str | None,
        matched_model: str,
    ) -> CostEstimate:
        tier = usage.input_tokens
        input_price = _price_at(self.input, tier)
        output_price = _price_at(self.output, tier)
        cache_read_price = (
            input_price if self.cache_read is None else _price_at(self.cache_read, tier)
        )
        cache_write_price = (
            input_price if self.cache_write is None else _price_at(self.cache_write, tier)
        )
        reasoning_price = (
            output_price if self.reasoning is None else _price_at(self.reasoning, tier)
        )

        input_cost = _tokens_cost(usage.uncached_input_tokens, input_price)
        cache_read_cost = _tokens_cost(usage.cache_read_tokens, cache_read_price)
        cache_creation_cost = _tokens_cost(usage.cache_creation_tokens, cache_write_price)
        output_cost = _tokens_cost(
            usage.output_tokens - usage.reasoning_tokens, output_price
        ) + _tokens_cost(usage.reasoning_tokens, reasoning_price)
        total = input_cost + cache_read_cost + cache_creation_cost + output_cost
        if self.per_request is not None:
            total += _price_at(self.per_request, tier) / _PER_KREQUEST
        return CostEstimate(
            source=source,
            model=model,
            total=total,
            input=input_cost,
            output=output_cost,
            cache_read=cache_read_cost,
            cache_creation=cache_creation_cost,
            provider=provider,
            matched_model=matched_model,
        )


def _price_at(rate: _Rate | None, input_tokens: int) -> Decimal:
    if rate is None:
        return _ZERO
    base, tiers = rate
    for threshold, price in tiers:
        if input_tokens > threshold:
            return price
    return base


def _tokens_cost(tokens: int, price_per_mtok: Decimal) -> Decimal:
    # Multiply, then divide: the quotient is exact and Decimal keeps it free of trailing
    # zeros (Decimal('0.00015'), not Decimal('0.000150000')), as genai-prices' own results.
    return tokens * price_per_mtok / _PER_MTOK


def _flat(price: Decimal | None) -> _Rate | None:
    return None if price is None else (price, ())


class PriceTable:
    """Prices LLM calls: caller cost, then config overrides, then the genai-prices snapshot.

    Override names match the model name exactly (case-sensitive, no aliases; the provider
    is not considered). Thread-safe; one table is meant to be shared.

    >>> table = PriceTable()
    >>> usage = TokenUsage(input_tokens=2000, cache_read_tokens=1500, output_tokens=100)
    >>> table.estimate("gpt-4o", usage).source
    'genai-prices'
    >>> table.estimate("gpt-4o", usage, cost=Decimal("0.01")).total
    Decimal('0.01')
    >>> table.estimate("in-house-llm", usage).total is None
    True
    >>> table.unknown_models
    {'in-house-llm': 1}
    """

    __slots__ = ("_lock", "_overrides", "_unknown")

    def __init__(self, overrides: Mapping[str, ModelPrice] | None = None) -> None:
        rates: dict[str, _Rates] = {}
        for name, price in (overrides or {}).items():
            if not isinstance(name, str) or not name:
                raise ConfigError(f"pricing override names must be non-empty strings, got {name!r}")
            if not isinstance(price, ModelPrice):
                raise ConfigError(
                    f"pricing override for {name!r} must be a ModelPrice, got "
                    f"{type(price).__name__}; use msgspec.convert(value, ModelPrice)"
                )
            rates[name] = _Rates(
                input=_flat(price.input_per_mtok),
                output=_flat(price.output_per_mtok),
                cache_read=_flat(price.cache_read_per_mtok),
                cache_write=_flat(price.cache_write_per_mtok),
                reasoning=_flat(price.reasoning_per_mtok),
                per_request=None,
            )
        self._overrides = rates
        self._unknown: Counter[str] = Counter()
        self._lock = threading.Lock()

    def estimate(
        self,
        model: str,
        usage: TokenUsage,
        *,
        provider: str | None = None,
        at: datetime | None = None,
        cost: float | Decimal | None = None,
    ) -> CostEstimate:
        """Price ``usage`` of ``model``.

        ``provider`` narrows the snapshot lookup (genai-prices ids or OpenTelemetry
        ``gen_ai.provider.name`` values such as ``aws.bedrock``); a provider the snapshot
        does not know makes the call unknown. ``at`` picks the price in force then.
        ``cost`` (USD) wins over everything; a negative or non-finite ``cost`` raises
        :class:`~tachimeter.errors.ValidationError`.
        """
        if cost is not None:
            return CostEstimate(
                source="caller",
                model=model,
                total=_caller_cost(model, cost),
                provider=provider,
            )
        override = self._overrides.get(model)
        if override is not None:
            return override.estimate(usage, "override", model, provider, model)
        found = _bundled_prices().lookup(model, provider, at)
        if found is None:
            self._count_unknown(model)
            return CostEstimate(source="unknown", model=model, provider=provider)
        provider_id, matched_model, rates = found
        return rates.estimate(usage, "genai-prices", model, provider_id, matched_model)

    @property
    def unknown_models(self) -> dict[str, int]:
        """Models priced as unknown so far, with how many times (a copy).

        At most 1 000 names are tracked; later ones are counted under ``"<other>"``.
        """
        with self._lock:
            return dict(self._unknown)

    def preload(self) -> None:
        """Import genai-prices and load its snapshot now rather than at the first lookup."""
        _bundled_prices()

    def _count_unknown(self, model: str) -> None:
        with self._lock:
            if model in self._unknown or len(self._unknown) < _MAX_UNKNOWN_NAMES:
                self._unknown[model] += 1
            else:
                self._unknown[_UNKNOWN_OVERFLOW_KEY] += 1


def infer_cost(
    model: str,
    usage: TokenUsage,
    *,
    provider: str | None = None,
    at: datetime | None = None,
    cost: float | Decimal | None = None,
    table: PriceTable | None = None,
) -> Decimal | None:
    """Total cost in USD, ``cost`` itself when given, None for an unknown model.

    >>> infer_cost("claude-sonnet-4", TokenUsage(input_tokens=1000, output_tokens=1000))
    Decimal('0.018')
    """
    chosen = DEFAULT_PRICE_TABLE if table is None else table
    return chosen.estimate(model, usage, provider=provider, at=at, cost=cost).total


def _price_decimal(name: str, value: object) -> Decimal:
    price = _money(value)
    if price is None:
        raise ConfigError(
            f"ModelPrice.{name} must be a finite number >= 0 in USD per million tokens, "
            f"got {value!r}"
        )
    return price


def _caller_cost(model: str, cost: object) -> Decimal:
    amount = _money(cost)
    if amount is None:
        raise ValidationError(
            f"cost for model {model!r} must be a finite number >= 0 in USD, got {cost!r}",
            path="cost",
        )
    return amount


def _money(value: object) -> Decimal | None:
    """``value`` as an exact Decimal, or None unless it is a finite number >= 0."""
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, int) and not isinstance(value, bool):
        amount = Decimal(value)
    elif isinstance(value, float):
        # repr() is the shortest decimal that round-trips: 0.3 -> Decimal('0.3').
        amount = Decimal(repr(value))
    else:
        return None
    return amount if amount.is_finite() and amount >= 0 else None


class _BundledPrices:
    """The genai-prices data shipped in the wheel, with lookup caches (never network)."""

    __slots__ = ("_misses", "_rates", "_snapshot")

    def __init__(self) -> None:
        from genai_prices.data import providers
        from genai_prices.data_snapshot import DataSnapshot

        # Our own snapshot, not genai_prices.data_snapshot.get_snapshot(): that one is
        # replaced by whatever UpdatePrices fetched if anything in the process started it.
        self._snapshot: DataSnapshot = DataSnapshot(providers=providers, from_auto_update=False)
        self._misses: set[tuple[str, str | None]] = set()
        # id(price) -> (price, rates). Keeping the price object alive stops its id from
        # being reused; snapshot prices live as long as the process anyway.
        self._rates: dict[int, tuple[SnapshotPrice, _Rates]] = {}

    def lookup(
        self, model: str, provider: str | None, at: datetime | None
    ) -> tuple[str, str, _Rates] | None:
        """(provider id, model id, rates) at time ``at``, or None when not in the snapshot."""
        # Plain set and dict operations are atomic under the GIL; two threads missing the
        # same key compute the same value twice, which is harmless.
        key = (model, provider)
        if key in self._misses:
            return None
        try:
            found_provider, info = self._snapshot.find_provider_model(model, None, provider, None)
        except LookupError:
            if len(self._misses) < _MAX_CACHED:
                self._misses.add(key)
            return None
        price = info.get_prices(datetime.now(tz=UTC) if at is None else at)
        cached = self._rates.get(id(price))
        if cached is not None and cached[0] is price:
            rates = cached[1]
        else:
            rates = _snapshot_rates(price)
            if len(self._rates) < _MAX_CACHED:
                self._rates[id(price)] = (price, rates)
        return found_provider.id, info.id, rates


def _snapshot_rates(price: SnapshotPrice) -> _Rates:
    return _Rates(
        input=_snapshot_rate(price.input_mtok),
        output=_snapshot_rate(price.output_mtok),
        cache_read=_snapshot_rate(price.cache_read_mtok),
        cache_write=_snapshot_rate(price.cache_write_mtok),
        reasoning=_snapshot_rate(price.output_reasoning_mtok),
        per_request=_snapshot_rate(price.requests_kcount),
    )


def _snapshot_rate(price: Decimal | TieredPrices | None) -> _Rate | None:
    if price is None or isinstance(price, Decimal):
        return _flat(price)
    tiers = sorted(price.tiers, key=lambda tier: tier.start, reverse=True)
    return price.base, tuple((tier.start, tier.price) for tier in tiers)


_bundled: _BundledPrices | None = None
_bundled_lock = threading.Lock()


def _bundled_prices() -> _BundledPrices:
    global _bundled
    bundled = _bundled
    if bundled is None:
        with _bundled_lock:
            if _bundled is None:
                _bundled = _BundledPrices()
            bundled = _bundled
    return bundled


DEFAULT_PRICE_TABLE: Final = PriceTable()
