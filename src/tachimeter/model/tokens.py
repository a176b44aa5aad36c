"""Token usage of one LLM call, with OpenTelemetry GenAI semantics.

Cache tokens are *included* in ``input_tokens`` and reasoning tokens are *included* in
``output_tokens``, as the OpenTelemetry GenAI conventions specify. Providers disagree:
Anthropic's ``input_tokens`` excludes cache reads and writes, OpenAI's ``prompt_tokens``
includes its cached tokens. :meth:`TokenUsage.from_anthropic` and
:meth:`TokenUsage.from_openai` normalize both, so each token is counted once (Langfuse
#5568, cached tokens counted twice, is the bug this shape rules out).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Final

import msgspec

from tachimeter.errors import ValidationError

__all__ = [
    "GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS",
    "GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS",
    "GEN_AI_USAGE_INPUT_TOKENS",
    "GEN_AI_USAGE_OUTPUT_TOKENS",
    "GEN_AI_USAGE_REASONING_OUTPUT_TOKENS",
    "TokenUsage",
]

GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: Final = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: Final = "gen_ai.usage.cache_creation.input_tokens"
# The semantic-conventions registry (and opentelemetry-js ATTR_GEN_AI_USAGE_REASONING_OUTPUT_TOKENS)
# name it so; the value is included in gen_ai.usage.output_tokens.
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: Final = "gen_ai.usage.reasoning.output_tokens"

_Count = Annotated[int, msgspec.Meta(ge=0)]
_FIELDS: Final = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "reasoning_tokens",
)


class TokenUsage(msgspec.Struct, frozen=True, kw_only=True):
    """Tokens used by one or more LLM calls; cache tokens are part of ``input_tokens``.

    Raises :class:`~tachimeter.errors.ValidationError` at construction when a count is
    negative or not an int, when ``cache_read_tokens + cache_creation_tokens`` exceeds
    ``input_tokens``, or when ``reasoning_tokens`` exceeds ``output_tokens``.

    >>> usage = TokenUsage(input_tokens=1200, output_tokens=300, cache_read_tokens=1000)
    >>> usage.uncached_input_tokens, usage.total_tokens
    (200, 1500)
    >>> (usage + TokenUsage(input_tokens=10, output_tokens=5)).input_tokens
    1210
    >>> TokenUsage.from_anthropic({"input_tokens": 200, "output_tokens": 300,
    ...                            "cache_read_input_tokens": 1000}) == usage
    True
    """

    input_tokens: _Count = 0
    output_tokens: _Count = 0
    cache_read_tokens: _Count = 0
    cache_creation_tokens: _Count = 0
    reasoning_tokens: _Count = 0

    def __post_init__(self) -> None:
        # msgspec checks types and bounds when decoding, not when user code constructs.
        for name in _FIELDS:
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise ValidationError(
                    f"TokenUsage.{name} must be an int >= 0, got {value!r}", path=name
                )
        cached = self.cache_read_tokens + self.cache_creation_tokens
        if cached > self.input_tokens:
            raise ValidationError(
                f"TokenUsage.cache_read_tokens ({self.cache_read_tokens}) + "
                f"cache_creation_tokens ({self.cache_creation_tokens}) = {cached} exceeds "
                f"input_tokens ({self.input_tokens}); input_tokens must include cache tokens "
                "(OpenTelemetry GenAI): pass the total input, or build Anthropic usage "
                "with TokenUsage.from_anthropic()",
                path="input_tokens",
            )
        if self.reasoning_tokens > self.output_tokens:
            raise ValidationError(
                f"TokenUsage.reasoning_tokens ({self.reasoning_tokens}) exceeds "
                f"output_tokens ({self.output_tokens}); output_tokens must include "
                "reasoning tokens (OpenTelemetry GenAI): pass the total output",
                path="output_tokens",
            )

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens (cache and reasoning tokens are already inside them)."""
        return self.input_tokens + self.output_tokens

    @property
    def uncached_input_tokens(self) -> int:
        """Input tokens neither read from nor written to the prompt cache."""
        return self.input_tokens - self.cache_read_tokens - self.cache_creation_tokens

    def __add__(self, other: object) -> TokenUsage:
        if not isinstance(other, TokenUsage):
            return NotImplemented
        return TokenUsage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            cache_creation_tokens=self.cache_creation_tokens + other.cache_creation_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
        )

    def __radd__(self, other: object) -> TokenUsage:
        # sum(usages) starts from the int 0.
        if other == 0 and type(other) is int:
            return self
        return NotImplemented

    def to_gen_ai_attributes(self) -> dict[str, int]:
        """The five counts under their OpenTelemetry ``gen_ai.usage.*`` names, zeros included."""
        return {
            GEN_AI_USAGE_INPUT_TOKENS: self.input_tokens,
            GEN_AI_USAGE_OUTPUT_TOKENS: self.output_tokens,
            GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: self.cache_read_tokens,
            GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: self.cache_creation_tokens,
            GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: self.reasoning_tokens,
        }

    @classmethod
    def from_anthropic(cls, usage: object) -> TokenUsage:
        """Build from an Anthropic Messages ``usage`` (a dict or the SDK's object).

        Anthropic's ``input_tokens`` excludes the cache, so the OpenTelemetry input is
        ``input_tokens + cache_read_input_tokens + cache_creation_input_tokens``.
        """
        uncached = _count(usage, "input_tokens", "Anthropic usage")
        cache_read = _count(usage, "cache_read_input_tokens", "Anthropic usage")
        cache_creation = _count(usage, "cache_creation_input_tokens", "Anthropic usage")
        output = _count(usage, "output_tokens", "Anthropic usage")
        # Thinking is billed as output and already counted in output_tokens; the split, when
        # the API reports one, is where genai-prices' Anthropic extractor reads it.
        reasoning = _count(
            _field(usage, "output_tokens_details"), "thinking_tokens", "Anthropic usage"
        )
        return _build(
            "Anthropic usage",
            input_tokens=uncached + cache_read + cache_creation,
            output_tokens=output,
            cache_read_tokens=cache_read,
            cache_creation_tokens=cache_creation,
            reasoning_tokens=reasoning,
        )

    @classmethod
    def from_openai(cls, usage: object) -> TokenUsage:
        """Build from an OpenAI ``usage`` (Chat Completions or Responses; dict or SDK object).

        OpenAI's input count already includes cached tokens and its output count already
        includes reasoning tokens, which is the OpenTelemetry shape; OpenAI reports no
        cache-creation tokens.
        """
        if _field(usage, "prompt_tokens") is not None:
            where = "OpenAI chat usage"
            input_key, output_key = "prompt_tokens", "completion_tokens"
        elif _field(usage, "input_tokens") is not None:
            where = "OpenAI responses usage"
            input_key, output_key = "input_tokens", "output_tokens"
        else:
            raise ValidationError(
                "OpenAI usage has neither 'prompt_tokens' (Chat Completions) nor "
                "'input_tokens' (Responses); pass response.usage",
                path="prompt_tokens",
            )
        return _build(
            where,
            input_tokens=_count(usage, input_key, where),
            output_tokens=_count(usage, output_key, where),
            cache_read_tokens=_count(_field(usage, f"{input_key}_details"), "cached_tokens", where),
            reasoning_tokens=_count(
                _field(usage, f"{output_key}_details"), "reasoning_tokens", where
            ),
        )


def _field(obj: object, name: str) -> object:
    """``obj[name]`` for mappings, ``obj.name`` for SDK objects, None when absent."""
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _count(obj: object, name: str, where: str) -> int:
    value = _field(obj, name)
    if value is None:
        return 0
    if type(value) is not int or value < 0:
        raise ValidationError(f"{where}: '{name}' must be an int >= 0, got {value!r}", path=name)
    return value


def _build(where: str, **counts: int) -> TokenUsage:
    try:
        return TokenUsage(**counts)
    except ValidationError as exc:
        raise ValidationError(f"{where}: {exc}", path=exc.path) from None
