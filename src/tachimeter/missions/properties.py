"""Names of mission events and of their properties: the contract between the tracker,
which emits them, and the projection, which folds them into the mission tables.

Every mission event is a ``track`` event whose properties (a JSON object) carry
``mission_id``, ``backend``, ``model``, ``tags``, ``seq`` and ``retry_count``. ``seq``
numbers the mission's events 0, 1, 2, ... in the order the tracker recorded them, so
the tables are right whatever order the events are stored in, and a replayed event
(same mission, same ``seq``) is never counted twice. Events that change the status also
carry ``status`` (the new one) and ``from_status``.

=========================  ===========================================================
event                      extra properties
=========================  ===========================================================
mission_created            status ``created``
mission_started            status ``planning`` or ``executing`` (also re-planning)
mission_paused             status ``paused``
mission_resumed            status ``planning`` or ``executing``, ``paused_ms`` (all pauses
                           so far)
retry_attempted            status ``executing``, ``error_code``
mission_step_completed     ``step_index``, ``success``, ``step_name``, ``duration_ms``
tool_invoked               ``gen_ai.tool.name``, ``duration_ms``, ``success``,
                           ``error_code``, ``step_index``
tokens_consumed            ``gen_ai.request.model``, ``gen_ai.provider.name``, the five
                           ``gen_ai.usage.*`` counts (cache tokens inside input, reasoning
                           inside output), ``cost_usd`` (null when unpriced),
                           ``cost_source``, ``duration_ms``
mission_completed          status, ``execution_time_ms``, ``paused_ms`` and the totals
mission_failed             as completed, plus ``error_code``, ``error_message``,
                           ``error_type``, ``error_step_index``, ``error_recoverable``
mission_cancelled          as completed, plus ``reason``
mission_abandoned          status ``abandoned``, ``inferred`` true, ``reason``
=========================  ===========================================================

Durations are milliseconds (floats); money is USD (floats, from exact Decimals).
"""

from __future__ import annotations

from typing import Final

from tachimeter.model.event_types import EventType
from tachimeter.model.tokens import (
    GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS,
    GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
    GEN_AI_USAGE_INPUT_TOKENS,
    GEN_AI_USAGE_OUTPUT_TOKENS,
    GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
)

MISSION_ID: Final = "mission_id"
BACKEND: Final = "backend"
MODEL: Final = "model"
TAGS: Final = "tags"
SEQ: Final = "seq"
RETRY_COUNT: Final = "retry_count"
STATUS: Final = "status"
FROM_STATUS: Final = "from_status"
STEP_INDEX: Final = "step_index"
STEP_NAME: Final = "step_name"
SUCCESS: Final = "success"
DURATION_MS: Final = "duration_ms"
TOOL_NAME: Final = "gen_ai.tool.name"
REQUEST_MODEL: Final = "gen_ai.request.model"
PROVIDER: Final = "gen_ai.provider.name"
INPUT_TOKENS: Final = GEN_AI_USAGE_INPUT_TOKENS
OUTPUT_TOKENS: Final = GEN_AI_USAGE_OUTPUT_TOKENS
CACHE_READ_TOKENS: Final = GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS
CACHE_CREATION_TOKENS: Final = GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS
REASONING_TOKENS: Final = GEN_AI_USAGE_REASONING_OUTPUT_TOKENS
COST_USD: Final = "cost_usd"
COST_SOURCE: Final = "cost_source"
ERROR_CODE: Final = "error_code"
ERROR_MESSAGE: Final = "error_message"
ERROR_TYPE: Final = "error_type"
ERROR_STEP_INDEX: Final = "error_step_index"
ERROR_RECOVERABLE: Final = "error_recoverable"
EXECUTION_TIME_MS: Final = "execution_time_ms"
PAUSED_MS: Final = "paused_ms"
TOTAL_TOKENS: Final = "total_tokens"
TOTAL_COST: Final = "total_cost"
UNPRICED_LLM_CALLS: Final = "unpriced_llm_calls"
REASON: Final = "reason"
INFERRED: Final = "inferred"

MISSION_EVENT_TYPES: Final = (
    EventType.MISSION_CREATED,
    EventType.MISSION_STARTED,
    EventType.MISSION_PAUSED,
    EventType.MISSION_RESUMED,
    EventType.RETRY_ATTEMPTED,
    EventType.MISSION_STEP_COMPLETED,
    EventType.TOOL_INVOKED,
    EventType.TOKENS_CONSUMED,
    EventType.MISSION_COMPLETED,
    EventType.MISSION_FAILED,
    EventType.MISSION_CANCELLED,
    EventType.MISSION_ABANDONED,
)
"""Event types that carry mission facts (when their properties have a ``mission_id``)."""

MISSION_EVENT_NAMES: Final = frozenset(t.event_name for t in MISSION_EVENT_TYPES)
