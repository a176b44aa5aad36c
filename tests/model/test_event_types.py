"""Event types, categories, priorities and default sampling (spec 406)."""

from __future__ import annotations

import pytest
from hypothesis import given
from strategies import event_types

from tachimeter.errors import ConfigError
from tachimeter.model import (
    Custom,
    EventCategory,
    EventPriority,
    EventType,
    SamplingConfig,
    register_event_type,
)
from tachimeter.model.event_types import event_type_from_name, registered_event_types

SPEC_406 = {
    EventCategory.USAGE: [
        "session_started", "session_ended", "mission_created", "mission_completed",
        "mission_failed", "mission_cancelled", "command_executed", "feature_used",
        "backend_selected", "tool_invoked",
    ],
    EventCategory.PERFORMANCE: [
        "response_latency", "memory_usage", "cpu_usage", "disk_usage", "network_latency",
        "cache_hit", "cache_miss",
    ],
    EventCategory.ERROR: [
        "error_occurred", "warning_raised", "panic_caught", "validation_failed",
        "timeout_occurred", "retry_attempted",
    ],
    EventCategory.BUSINESS: ["tokens_consumed", "cost_incurred", "quota_checked", "budget_alerted"],
    EventCategory.SECURITY: ["auth_attempted", "permission_denied", "sensitive_data_accessed"],
    EventCategory.SYSTEM: [
        "config_changed", "plugin_loaded", "plugin_unloaded", "update_available",
        "system_started", "system_shutdown",
    ],
}  # fmt: skip
MISSION_VARIANTS = [
    "mission_started",
    "mission_step_completed",
    "mission_paused",
    "mission_resumed",
    "mission_abandoned",
]


def test_all_36_spec_variants_map_to_their_category() -> None:
    named = [name for names in SPEC_406.values() for name in names]
    assert len(named) == 36
    for category, names in SPEC_406.items():
        for name in names:
            assert EventType(name).category() is category


def test_mission_variants_are_usage_and_nothing_else_exists() -> None:
    for name in MISSION_VARIANTS:
        assert EventType(name).category() is EventCategory.USAGE
    assert len(EventType) == 36 + len(MISSION_VARIANTS)


@pytest.mark.parametrize(
    ("category", "expected"),
    [
        (EventCategory.ERROR, SamplingConfig(rate=1.0, min_per_window=100, window_seconds=60)),
        (EventCategory.SECURITY, SamplingConfig(rate=1.0, min_per_window=100, window_seconds=60)),
        (EventCategory.PERFORMANCE, SamplingConfig(rate=0.1, min_per_window=10, window_seconds=60)),
        (EventCategory.USAGE, SamplingConfig(rate=1.0, min_per_window=1, window_seconds=60)),
        (EventCategory.BUSINESS, SamplingConfig()),
        (EventCategory.SYSTEM, SamplingConfig()),
    ],
)
def test_default_sampling_is_the_spec_table(
    category: EventCategory, expected: SamplingConfig
) -> None:
    for name in SPEC_406[category]:
        assert EventType(name).default_sampling() == expected


def test_custom_events_default_to_custom_category_and_full_rate() -> None:
    kind = Custom("unregistered.thing")
    assert kind.category() is EventCategory.CUSTOM
    assert kind.default_sampling() == SamplingConfig()


def test_priority_is_ordered_by_rank_not_by_text() -> None:
    ordered = [EventPriority.LOW, EventPriority.NORMAL, EventPriority.HIGH, EventPriority.CRITICAL]
    shuffled = [ordered[2], ordered[0], ordered[3], ordered[1]]
    assert sorted(shuffled) == ordered
    assert EventPriority.CRITICAL > EventPriority.HIGH >= EventPriority.HIGH
    assert [p.rank for p in ordered] == [0, 1, 2, 3]


def test_sampling_config_rejects_bad_values_with_the_field_name() -> None:
    with pytest.raises(ConfigError, match=r"sampling.rate must be in \[0, 1\], got 1.5"):
        SamplingConfig(rate=1.5)
    with pytest.raises(ConfigError, match="rate"):
        SamplingConfig(rate=float("nan"))
    with pytest.raises(ConfigError, match="window_seconds"):
        SamplingConfig(window_seconds=0)


def test_plugins_register_custom_types_with_category_and_sampling() -> None:
    sampling = SamplingConfig(rate=0.5, min_per_window=3)
    kind = register_event_type("testplugin.index.rebuilt", EventCategory.SYSTEM, sampling)
    assert kind == Custom("testplugin.index.rebuilt")
    assert kind.category() is EventCategory.SYSTEM
    assert kind.default_sampling() == sampling
    assert registered_event_types()["testplugin.index.rebuilt"] is EventCategory.SYSTEM
    # same category again: fine (a plugin reloading)
    register_event_type("testplugin.index.rebuilt", EventCategory.SYSTEM)
    assert kind.default_sampling() == sampling


def test_registering_a_name_twice_with_another_category_is_an_error() -> None:
    register_event_type("testplugin.twice", EventCategory.USAGE)
    with pytest.raises(ConfigError, match="already registered with category 'usage'"):
        register_event_type("testplugin.twice", EventCategory.ERROR)


@pytest.mark.parametrize("bad", ["Bad", "has space", "trailing.", ".lead", "x" * 129, "a-b", ""])
def test_custom_names_follow_the_naming_rule(bad: str) -> None:
    with pytest.raises(ConfigError, match="custom event name"):
        register_event_type(bad)


def test_builtin_names_cannot_be_registered_as_custom() -> None:
    with pytest.raises(ConfigError, match=r"EventType\.FEATURE_USED"):
        register_event_type("feature_used")


def test_names_resolve_to_named_types_first() -> None:
    assert event_type_from_name("cpu_usage") is EventType.CPU_USAGE
    assert event_type_from_name("search_performed") == Custom("search_performed")


@given(event_types)
def test_every_event_type_maps_to_a_valid_category(kind: EventType | Custom) -> None:
    assert isinstance(kind.category(), EventCategory)
    assert isinstance(kind.default_sampling(), SamplingConfig)
