"""TokenUsage: OpenTelemetry GenAI semantics, validation, sums and provider shapes."""

from __future__ import annotations

from types import SimpleNamespace

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tachimeter.errors import ValidationError
from tachimeter.model.tokens import TokenUsage

counts = st.integers(min_value=0, max_value=10**9)


@st.composite
def usages(draw: st.DrawFn) -> TokenUsage:
    """Valid usages built from their disjoint parts, so cache and reasoning fit inside."""
    uncached, cache_read, cache_creation = draw(counts), draw(counts), draw(counts)
    plain_output, reasoning = draw(counts), draw(counts)
    return TokenUsage(
        input_tokens=uncached + cache_read + cache_creation,
        output_tokens=plain_output + reasoning,
        cache_read_tokens=cache_read,
        cache_creation_tokens=cache_creation,
        reasoning_tokens=reasoning,
    )


def test_all_counts_default_to_zero() -> None:
    usage = TokenUsage()
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (0, 0, 0)
    assert usage.uncached_input_tokens == 0


def test_cache_tokens_are_part_of_input_and_reasoning_part_of_output() -> None:
    usage = TokenUsage(
        input_tokens=1000,
        cache_read_tokens=600,
        cache_creation_tokens=300,
        output_tokens=500,
        reasoning_tokens=200,
    )
    assert usage.uncached_input_tokens == 100
    assert usage.total_tokens == 1500  # cache and reasoning are not added again


def test_cache_tokens_exceeding_input_are_rejected_with_names_values_and_fix() -> None:
    with pytest.raises(ValidationError) as caught:
        TokenUsage(input_tokens=100, cache_read_tokens=80, cache_creation_tokens=30)
    message = str(caught.value)
    assert "cache_read_tokens (80)" in message
    assert "cache_creation_tokens (30)" in message
    assert "input_tokens (100)" in message
    assert "must include cache tokens" in message
    assert "from_anthropic" in message
    assert caught.value.path == "input_tokens"


def test_reasoning_tokens_exceeding_output_are_rejected() -> None:
    with pytest.raises(
        ValidationError, match=r"reasoning_tokens \(11\) exceeds output_tokens \(10\)"
    ):
        TokenUsage(output_tokens=10, reasoning_tokens=11)


@pytest.mark.parametrize("bad", [-1, 1.0, True, "3", None])
def test_counts_must_be_non_negative_ints(bad: object) -> None:
    with pytest.raises(ValidationError, match=r"TokenUsage\.output_tokens must be an int >= 0"):
        TokenUsage(output_tokens=bad)  # type: ignore[arg-type]


def test_usage_is_frozen() -> None:
    usage = TokenUsage(input_tokens=1)
    with pytest.raises(AttributeError):
        usage.input_tokens = 2  # type: ignore[misc]


def test_gen_ai_attributes_use_the_opentelemetry_names_verbatim() -> None:
    usage = TokenUsage(
        input_tokens=10,
        output_tokens=20,
        cache_read_tokens=3,
        cache_creation_tokens=4,
        reasoning_tokens=5,
    )
    assert usage.to_gen_ai_attributes() == {
        "gen_ai.usage.input_tokens": 10,
        "gen_ai.usage.output_tokens": 20,
        "gen_ai.usage.cache_read.input_tokens": 3,
        "gen_ai.usage.cache_creation.input_tokens": 4,
        "gen_ai.usage.reasoning.output_tokens": 5,
    }


def test_adding_a_non_usage_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        TokenUsage() + 1
    with pytest.raises(TypeError):
        1 + TokenUsage()


@given(st.lists(usages(), max_size=6))
def test_sum_of_usages_adds_each_field(parts: list[TokenUsage]) -> None:
    total = sum(parts, TokenUsage())
    if parts:
        assert sum(parts) == total  # sum() starting from the int 0 works too
    for field in (
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_creation_tokens",
        "reasoning_tokens",
    ):
        assert getattr(total, field) == sum(getattr(part, field) for part in parts)


@given(usages())
def test_json_and_msgpack_round_trip_exactly(usage: TokenUsage) -> None:
    assert msgspec.json.decode(msgspec.json.encode(usage), type=TokenUsage) == usage
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(usage), type=TokenUsage) == usage


@pytest.mark.parametrize(
    "payload",
    [
        b'{"input_tokens": -1}',
        b'{"input_tokens": 5, "cache_read_tokens": 6}',
        b'{"output_tokens": 1, "reasoning_tokens": 2}',
    ],
)
def test_decoding_invalid_usage_fails(payload: bytes) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(payload, type=TokenUsage)


def test_anthropic_input_tokens_exclude_the_cache_so_they_are_added() -> None:
    usage = TokenUsage.from_anthropic(
        {
            "input_tokens": 50,
            "cache_read_input_tokens": 1000,
            "cache_creation_input_tokens": 200,
            "output_tokens": 300,
        }
    )
    assert usage == TokenUsage(
        input_tokens=1250,
        cache_read_tokens=1000,
        cache_creation_tokens=200,
        output_tokens=300,
    )


def test_anthropic_cached_tokens_are_counted_once() -> None:
    """Langfuse #5568: cached tokens must not be counted in input twice."""
    usage = TokenUsage.from_anthropic(
        {"input_tokens": 10, "cache_read_input_tokens": 990, "output_tokens": 1}
    )
    assert usage.uncached_input_tokens == 10
    assert usage.input_tokens == 1000  # not 10 + 990 + 990


def test_anthropic_sdk_object_with_null_cache_fields() -> None:
    sdk_usage = SimpleNamespace(
        input_tokens=12,
        output_tokens=7,
        cache_read_input_tokens=None,
        cache_creation_input_tokens=None,
    )
    assert TokenUsage.from_anthropic(sdk_usage) == TokenUsage(input_tokens=12, output_tokens=7)


def test_anthropic_thinking_tokens_are_reasoning_inside_output() -> None:
    usage = TokenUsage.from_anthropic(
        {"input_tokens": 1, "output_tokens": 90, "output_tokens_details": {"thinking_tokens": 60}}
    )
    assert (usage.output_tokens, usage.reasoning_tokens) == (90, 60)


@given(usages())
def test_anthropic_shape_round_trips(usage: TokenUsage) -> None:
    anthropic = {
        "input_tokens": usage.uncached_input_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
        "cache_creation_input_tokens": usage.cache_creation_tokens,
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"thinking_tokens": usage.reasoning_tokens},
    }
    assert TokenUsage.from_anthropic(anthropic) == usage


def test_anthropic_bad_value_names_the_provider_field() -> None:
    with pytest.raises(ValidationError, match=r"Anthropic usage: 'cache_read_input_tokens'") as c:
        TokenUsage.from_anthropic({"input_tokens": 1, "cache_read_input_tokens": -5})
    assert c.value.path == "cache_read_input_tokens"


def test_openai_chat_prompt_tokens_already_include_cached_tokens() -> None:
    usage = TokenUsage.from_openai(
        {
            "prompt_tokens": 2000,
            "completion_tokens": 500,
            "total_tokens": 2500,
            "prompt_tokens_details": {"cached_tokens": 1536, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 320},
        }
    )
    assert usage == TokenUsage(
        input_tokens=2000, cache_read_tokens=1536, output_tokens=500, reasoning_tokens=320
    )
    assert usage.uncached_input_tokens == 464
    assert usage.total_tokens == 2500


def test_openai_sdk_object_without_details() -> None:
    sdk_usage = SimpleNamespace(
        prompt_tokens=9,
        completion_tokens=4,
        prompt_tokens_details=None,
        completion_tokens_details=None,
    )
    assert TokenUsage.from_openai(sdk_usage) == TokenUsage(input_tokens=9, output_tokens=4)


def test_openai_responses_shape() -> None:
    usage = TokenUsage.from_openai(
        {
            "input_tokens": 300,
            "input_tokens_details": {"cached_tokens": 200},
            "output_tokens": 80,
            "output_tokens_details": {"reasoning_tokens": 64},
            "total_tokens": 380,
        }
    )
    assert usage == TokenUsage(
        input_tokens=300, cache_read_tokens=200, output_tokens=80, reasoning_tokens=64
    )


def test_openai_usage_without_counts_is_rejected() -> None:
    with pytest.raises(ValidationError, match="neither 'prompt_tokens'"):
        TokenUsage.from_openai({"total_tokens": 3})


def test_openai_cached_tokens_exceeding_prompt_are_rejected_with_context() -> None:
    with pytest.raises(ValidationError, match=r"^OpenAI chat usage: .*exceeds input_tokens \(5\)"):
        TokenUsage.from_openai(
            {
                "prompt_tokens": 5,
                "completion_tokens": 1,
                "prompt_tokens_details": {"cached_tokens": 6},
            }
        )
