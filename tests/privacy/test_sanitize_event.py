"""sanitize_event: every string field of every payload variant, the metadata and the
URLs are scrubbed; an event with nothing to scrub comes back as the same object."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from privacy_strategies import json_values, texts

from tachimeter.model import (
    AnalyticsEvent,
    BusinessEventData,
    BusinessMetricType,
    CustomData,
    ErrorEventData,
    ErrorSeverity,
    EventBuilder,
    EventMetadata,
    EventType,
    PerformanceEventData,
    UsageEventData,
    decode_event,
    encode_event,
)
from tachimeter.privacy import Scrubber, sanitize_event

KEY = "sk-" + "Zq8" * 10  # assembled so that no key-shaped literal sits in the source
TOKEN = "ghp_" + "a1B2c3" * 6
JWT = "eyJhbGciOiJIUzI1NiJ9." + "eyJzdWIiOiIxIn0x" + ".c2lnbmF0dXJlLXNpZ25hdHVyZQ"


def _event(data: Any = None, **fields: Any) -> AnalyticsEvent:
    event = AnalyticsEvent.new(EventType.FEATURE_USED, data)
    return msgspec.structs.replace(event, **fields) if fields else event


def test_spec_406_sanitization() -> None:
    """Port of spec 406's test_sanitization."""
    event = (
        EventBuilder(EventType.ERROR_OCCURRED)
        .error_data(
            "API_ERROR",
            "Failed with key sk-abc123def456ghi789jkl012mno345",
            ErrorSeverity.ERROR,
            "backend",
        )
        .build()
    )
    sanitized = sanitize_event(event)
    assert isinstance(sanitized.data, ErrorEventData)
    assert "[REDACTED_API_KEY]" in sanitized.data.message
    assert "sk-abc123" not in sanitized.data.message


def test_error_payload_is_scrubbed_everywhere() -> None:
    """Code, message, component and stack trace of an error are all scrubbed."""
    data = ErrorEventData(
        code=f"E_{KEY}",
        message=f"401 for Authorization: Bearer {JWT}",
        severity=ErrorSeverity.ERROR,
        component=f"client({TOKEN})",
        stack_trace=f'File "x.py", line 3\n  connect("postgres://app:hunter2@db/prod")\n{KEY}',
        recovered=True,
    )
    result = sanitize_event(_event(data)).data
    assert isinstance(result, ErrorEventData)
    dumped = msgspec.json.encode(result).decode()
    for secret in (KEY, TOKEN, JWT, "hunter2"):
        assert secret not in dumped
    assert result.message == "401 for Authorization: Bearer [REDACTED]"
    assert "postgres://app:[REDACTED]@db/prod" in (result.stack_trace or "")
    assert (result.severity, result.recovered) == (ErrorSeverity.ERROR, True)


def test_usage_payload_strings_and_extra_are_scrubbed() -> None:
    """feature, action, target and extra (values and sensitive keys) are covered."""
    data = UsageEventData(
        feature="search",
        action=f"query with {KEY}",
        target="https://deploy:hunter2@git.example.com/repo",
        duration_ms=12,
        extra={"api_key": "k", "note": f"token={TOKEN}", "input_tokens": 5},
    )
    result = sanitize_event(_event(data)).data
    assert result == UsageEventData(
        feature="search",
        action="query with [REDACTED_API_KEY]",
        target="https://deploy:[REDACTED]@git.example.com/repo",
        duration_ms=12,
        extra={"api_key": "[REDACTED]", "note": "token=[REDACTED]", "input_tokens": 5},
    )


def test_performance_tags_are_scrubbed() -> None:
    """Tag values are scrubbed and tags under sensitive keys masked (or dropped)."""
    data = PerformanceEventData(
        metric="latency", value=1.5, unit="ms", tags={"route": "/run", "token": "t", "u": KEY}
    )
    result = sanitize_event(_event(data)).data
    assert isinstance(result, PerformanceEventData)
    assert result.tags == {"route": "/run", "token": "[REDACTED]", "u": "[REDACTED_API_KEY]"}
    dropped = Scrubber(sensitive_key_action="drop").sanitize_event(_event(data)).data
    assert isinstance(dropped, PerformanceEventData)
    assert dropped.tags == {"route": "/run", "u": "[REDACTED_API_KEY]"}


def test_business_payload_strings_are_scrubbed() -> None:
    """Unit, backend and model of a business payload are strings too."""
    data = BusinessEventData(
        metric_type=BusinessMetricType.COST_USD, value=0.5, unit="usd", backend=KEY, model="m"
    )
    result = sanitize_event(_event(data)).data
    assert isinstance(result, BusinessEventData)
    assert (result.backend, result.value, result.model) == ("[REDACTED_API_KEY]", 0.5, "m")


def test_key_value_and_custom_payloads() -> None:
    """Key-value properties and custom JSON values are scrubbed recursively."""
    properties = {"headers": {"Cookie": "a=b"}, "args": [KEY, 3], "model": "gpt-4o"}
    result = sanitize_event(_event(properties)).data
    assert result == {
        "headers": {"Cookie": "[REDACTED]"},
        "args": ["[REDACTED_API_KEY]", 3],
        "model": "gpt-4o",
    }
    custom = sanitize_event(_event(CustomData([{"password": "p"}, f"Bearer {JWT}"]))).data
    assert custom == CustomData([{"password": "[REDACTED]"}, "Bearer [REDACTED]"])
    assert properties["headers"] == {"Cookie": "a=b"}, "the caller's dict is not modified"


def test_metadata_and_urls_are_scrubbed() -> None:
    """Metadata strings, metadata.custom, page_url and referrer are covered."""
    metadata = EventMetadata(
        app_version="1.0", os="linux", locale=f"en_US {KEY}", custom={"secret": "s", "region": "eu"}
    )
    event = _event(
        None,
        metadata=metadata,
        page_url=f"https://app.example.com/cb?code=1&token={TOKEN}",
        referrer="https://admin:hunter2@intranet.example.com/",
    )
    result = sanitize_event(event)
    assert result.metadata == EventMetadata(
        app_version="1.0",
        os="linux",
        locale="en_US [REDACTED_API_KEY]",
        custom={"secret": "[REDACTED]", "region": "eu"},
    )
    assert result.page_url == "https://app.example.com/cb?code=1&token=[REDACTED]"
    assert result.referrer == "https://admin:[REDACTED]@intranet.example.com/"
    assert (result.id, result.timestamp, result.event_type) == (
        event.id,
        event.timestamp,
        event.event_type,
    )


@pytest.mark.parametrize(
    "data",
    [
        None,
        {"feature": "search", "hits": 3, "nested": [{"model": "claude-sonnet-4-20250514"}]},
        UsageEventData(feature="search", action="query", target="docs", extra={"hits": 3}),
        PerformanceEventData(metric="latency", value=3.0, unit="ms", tags={"route": "/run"}),
        ErrorEventData(
            code="E1",
            message="timeout after 30s",
            severity=ErrorSeverity.WARNING,
            component="tools",
            stack_trace='File "a.py", line 1',
        ),
        BusinessEventData(
            metric_type=BusinessMetricType.TOTAL_TOKENS,
            value=1500,
            unit="tokens",
            model="gpt-4o-mini",
        ),
        CustomData({"steps": [1, 2, 3], "tool": "web_search"}),
    ],
    ids=["empty", "key_value", "usage", "performance", "error", "business", "custom"],
)
def test_clean_events_come_back_unchanged(data: Any) -> None:
    """Nothing to scrub: the very same event object is returned, for every variant."""
    event = _event(
        data,
        metadata=EventMetadata(app_version="1.2.3", os="linux", custom={"region": "eu"}),
        page_url="https://app.example.com/settings?tab=keys",
        user_id="u-1",
    )
    assert sanitize_event(event) is event


def test_fields_of_the_wrong_type_are_passed_through() -> None:
    """Structs are not type-checked when built; sanitizing such an event does not raise."""
    wrong: Any = {"code": 500, "message": None}
    data = ErrorEventData(**wrong, severity=ErrorSeverity.ERROR, component=KEY)
    event = _event(data, page_url=42, metadata=EventMetadata(custom=wrong["message"]))
    result = sanitize_event(event)
    assert isinstance(result.data, ErrorEventData)
    assert (result.data.code, result.data.message, result.data.component) == (
        500,
        None,
        "[REDACTED_API_KEY]",
    )
    assert result.page_url == 42


def test_user_ids_are_hashed_when_enabled() -> None:
    """With hash_user_ids the user id becomes HMAC-SHA256(salt, id)[:32]; None stays."""
    scrubber = Scrubber(hash_user_ids=True, salt="a-long-random-salt")
    event = _event({"feature": "x"}, user_id="ada@example.com")
    expected = hmac.new(b"a-long-random-salt", b"ada@example.com", hashlib.sha256).hexdigest()
    assert scrubber.sanitize_event(event).user_id == expected[:32]
    assert scrubber.sanitize_event(_event(None)).user_id is None
    assert sanitize_event(event).user_id == "ada@example.com"


events = st.builds(
    _event,
    st.none()
    | st.dictionaries(st.text(max_size=10), json_values, max_size=4)
    | st.builds(UsageEventData, feature=texts, action=texts, target=st.none() | texts)
    | st.builds(
        ErrorEventData,
        code=texts,
        message=texts,
        severity=st.sampled_from(ErrorSeverity),
        component=texts,
        stack_trace=st.none() | texts,
    )
    | st.builds(CustomData, json_values),
    page_url=st.none() | texts,
)


@settings(max_examples=100, deadline=None)
@given(events)
def test_sanitized_events_keep_their_structure(event: AnalyticsEvent) -> None:
    """Sanitizing keeps the variant and ids, still encodes, and is idempotent."""
    once = sanitize_event(event)
    assert type(once.data) is type(event.data)
    assert (once.id, once.user_id, once.session_id) == (event.id, event.user_id, event.session_id)
    assert decode_event(encode_event(once)).id == event.id
    assert sanitize_event(once) == once
