"""AnalyticsConfigManager: the collector's precomputed filtering and sampling answers."""

from __future__ import annotations

import itertools
import uuid

import pytest

from tachimeter.config import AnalyticsConfig, AnalyticsConfigManager, SamplingSettings
from tachimeter.model.event_types import (
    Custom,
    EventCategory,
    EventPriority,
    EventType,
    SamplingConfig,
    register_event_type,
)

PRIORITIES = list(EventPriority)


def unique_name(label: str) -> str:
    """A custom event name no other test (or earlier run in this process) registered."""
    return f"testcfg.{label}.e{uuid.uuid4().hex[:12]}"


def expected_collect(
    config: AnalyticsConfig, event_type: EventType | Custom, priority: EventPriority
) -> bool:
    """The rule, written out independently of the code under test."""
    rank = {"low": 0, "normal": 1, "high": 2, "critical": 3}
    return (
        config.enabled
        and event_type.category() not in config.disabled_categories
        and event_type.event_name not in config.disabled_event_types
        and rank[priority.value] >= rank[config.min_priority.value]
    )


CONFIGS = [
    AnalyticsConfig(),
    AnalyticsConfig(enabled=False),
    AnalyticsConfig(disabled_categories=frozenset({EventCategory.PERFORMANCE})),
    AnalyticsConfig(disabled_event_types=frozenset({"cpu_usage", "feature_used"})),
    AnalyticsConfig(min_priority=EventPriority.HIGH),
    AnalyticsConfig(
        min_priority=EventPriority.NORMAL,
        disabled_categories=frozenset({EventCategory.SYSTEM, EventCategory.CUSTOM}),
        disabled_event_types=frozenset({"error_occurred"}),
    ),
]


@pytest.mark.parametrize("config", CONFIGS)
def test_should_collect_truth_table_for_every_type_and_priority(config: AnalyticsConfig) -> None:
    manager = AnalyticsConfigManager(config)
    types: list[EventType | Custom] = [*EventType, Custom("testcfg.unregistered")]
    for event_type, priority in itertools.product(types, PRIORITIES):
        expected = expected_collect(config, event_type, priority)
        assert manager.should_collect(event_type, priority) is expected, (event_type, priority)
        assert config.should_collect(event_type, priority) is expected


def test_disabled_switches_everything_off() -> None:
    manager = AnalyticsConfigManager(AnalyticsConfig(enabled=False))
    assert not manager.should_collect(EventType.PANIC_CAUGHT, EventPriority.CRITICAL)
    assert not manager.should_collect(Custom("testcfg.off"), EventPriority.CRITICAL)


def test_min_priority_compares_by_rank_not_by_name() -> None:
    manager = AnalyticsConfigManager(AnalyticsConfig(min_priority=EventPriority.NORMAL))
    assert manager.should_collect(EventType.FEATURE_USED, EventPriority.CRITICAL)
    assert manager.should_collect(EventType.FEATURE_USED, EventPriority.HIGH)
    assert manager.should_collect(EventType.FEATURE_USED, EventPriority.NORMAL)
    assert not manager.should_collect(EventType.FEATURE_USED, EventPriority.LOW)


def test_sampling_by_event_name_beats_category_beats_type_default() -> None:
    by_name = SamplingConfig(rate=0.3, min_per_window=3, window_seconds=30)
    by_category = SamplingConfig(rate=0.6, min_per_window=6, window_seconds=60)
    config = AnalyticsConfig(
        sampling=SamplingSettings(
            per_event_type={"cpu_usage": by_name},
            per_category={EventCategory.PERFORMANCE: by_category},
        )
    )
    manager = AnalyticsConfigManager(config)
    assert manager.get_sampling(EventType.CPU_USAGE) == by_name
    assert manager.get_sampling(EventType.MEMORY_USAGE) == by_category
    assert (
        manager.get_sampling(EventType.ERROR_OCCURRED)
        == EventType.ERROR_OCCURRED.default_sampling()
    )
    assert manager.get_sampling(EventType.FEATURE_USED) == SamplingConfig()
    for event_type in EventType:
        assert manager.get_sampling(event_type) == config.get_sampling(event_type)


def test_default_manager_uses_spec_406_sampling() -> None:
    manager = AnalyticsConfigManager()
    assert manager.config == AnalyticsConfig.default()
    performance = manager.get_sampling(EventType.RESPONSE_LATENCY)
    assert (performance.rate, performance.min_per_window) == (0.1, 10)
    security = manager.get_sampling(EventType.AUTH_ATTEMPTED)
    assert (security.rate, security.min_per_window) == (1.0, 100)


def test_custom_type_registered_after_the_manager_gets_its_new_category() -> None:
    """A plugin may register its event after the collector was configured."""
    name = unique_name("late")
    late_rule = SamplingConfig(rate=0.05, min_per_window=2, window_seconds=10)
    performance_rule = SamplingConfig(rate=0.5, min_per_window=5, window_seconds=60)
    config = AnalyticsConfig(
        disabled_categories=frozenset({EventCategory.SECURITY}),
        sampling=SamplingSettings(per_category={EventCategory.PERFORMANCE: performance_rule}),
    )
    manager = AnalyticsConfigManager(config)
    event = Custom(name)
    assert manager.get_sampling(event) == SamplingConfig()
    assert manager.should_collect(event, EventPriority.LOW)

    register_event_type(name, EventCategory.PERFORMANCE, late_rule)
    assert manager.get_sampling(event) == performance_rule

    security = Custom(unique_name("late_security"))
    assert manager.should_collect(security, EventPriority.LOW)
    register_event_type(security.name, EventCategory.SECURITY, late_rule)
    assert not manager.should_collect(security, EventPriority.LOW)


def test_custom_type_default_sampling_follows_re_registration() -> None:
    name = unique_name("reregistered")
    manager = AnalyticsConfigManager()
    register_event_type(name, EventCategory.USAGE, SamplingConfig(rate=0.5))
    assert manager.get_sampling(Custom(name)).rate == 0.5
    register_event_type(name, EventCategory.USAGE, SamplingConfig(rate=0.25))
    assert manager.get_sampling(Custom(name)).rate == 0.25


def test_custom_override_by_name_wins_over_its_registration() -> None:
    name = unique_name("named_override")
    register_event_type(name, EventCategory.BUSINESS, SamplingConfig(rate=0.9))
    rule = SamplingConfig(rate=0.01)
    manager = AnalyticsConfigManager(
        AnalyticsConfig(sampling=SamplingSettings(per_event_type={name: rule}))
    )
    assert manager.get_sampling(Custom(name)) == rule
    disabled = AnalyticsConfigManager(AnalyticsConfig(disabled_event_types=frozenset({name})))
    assert not disabled.should_collect(Custom(name), EventPriority.CRITICAL)


def test_manager_has_slots_and_exposes_its_config() -> None:
    config = AnalyticsConfig(strict=True)
    manager = AnalyticsConfigManager(config)
    assert manager.config is config
    assert not hasattr(manager, "__dict__")
    assert "strict=True" in repr(manager)
