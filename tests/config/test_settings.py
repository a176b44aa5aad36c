"""The configuration schema: defaults, bounds checked at construction, helpers."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import msgspec
import platformdirs
import pytest

from tachimeter.config import (
    AnalyticsConfig,
    CollectionSettings,
    PriceSettings,
    PrivacySettings,
    RetentionSettings,
    SamplingSettings,
    StorageSettings,
    default_store_path,
)
from tachimeter.config.settings import DEFAULT_RETENTION_DAYS, RETENTION_TARGETS, format_key
from tachimeter.errors import ConfigError
from tachimeter.model.event_types import (
    EventCategory,
    EventPriority,
    EventType,
    SamplingConfig,
    register_event_type,
)
from tachimeter.model.prices import ModelPrice
from tachimeter.model.validation import ValidationLimits

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
SALT = "0123456789abcdef"


def test_defaults_are_the_documented_ones() -> None:
    config = AnalyticsConfig.default()
    assert config.enabled is True
    assert config.disabled_categories == frozenset()
    assert config.disabled_event_types == frozenset()
    assert config.min_priority is EventPriority.LOW
    assert config.strict is False
    assert config.app_version is None
    assert config.sampling == SamplingSettings(per_category={}, per_event_type={}, seed=None)
    assert msgspec.structs.asdict(config.collection) == {
        "buffer_size": 100,
        "flush_interval": 5.0,
        "queue_capacity": 10_000,
        "backpressure": "drop_lowest_priority",
        "block_timeout": 0.05,
        "spool_dir": None,
        "spool_fsync": "batch",
        "dead_letter_path": None,
        "shutdown_timeout": 2.0,
        "subscriber_capacity": 1000,
    }
    assert config.privacy == PrivacySettings(
        extra_patterns=(), drop_keys=(), sensitive_key_action="mask", hash_user_ids=False
    )
    assert config.storage.synchronous == "NORMAL"
    assert config.storage.busy_timeout_ms == 5000
    assert config.retention.days == {
        "analytics_events": 90,
        "metrics": 15,
        "metric_aggregates_hourly": 90,
        "metric_aggregates_daily": 730,
        "metric_aggregates_weekly": 1825,
        "metric_aggregates_monthly": 3650,
        "user_activity": 730,
        "feature_usage": 730,
        "analytics_sessions": 365,
        "funnel_conversions": 365,
        "missions": 365,
    }
    assert config.validation == ValidationLimits(
        clock_skew_seconds=5.0,
        max_age_days_warning=7,
        max_property_depth=10,
        max_event_bytes=65536,
        max_string_length=32768,
        max_batch_events=10_000,
        max_batch_bytes=10 * 1024 * 1024,
    )
    assert config.prices.overrides == {}


def test_default_store_path_is_in_the_platform_user_data_dir() -> None:
    expected = Path(platformdirs.user_data_dir("tachimeter", appauthor=False)) / "analytics.db"
    assert Path(default_store_path()) == expected
    assert Path(AnalyticsConfig.default().storage.path) == expected


def test_tilde_is_expanded_in_every_path_setting() -> None:
    home = os.path.expanduser("~")
    assert StorageSettings(path="~/a.db").path == os.path.join(home, "a.db")
    collection = CollectionSettings(spool_dir="~/spool", dead_letter_path="~/dead.jsonl")
    assert collection.spool_dir == os.path.join(home, "spool")
    assert collection.dead_letter_path == os.path.join(home, "dead.jsonl")


def test_spool_dir_defaults_to_beside_the_database() -> None:
    config = AnalyticsConfig(storage=StorageSettings(path="/data/app.db"))
    assert config.spool_dir == "/data/app.db-spool"
    spooled = AnalyticsConfig(collection=CollectionSettings(spool_dir="/var/spool/tm"))
    assert spooled.spool_dir == "/var/spool/tm"


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: CollectionSettings(buffer_size=0), "collection.buffer_size = 0: must be > 0"),
        (lambda: CollectionSettings(queue_capacity=-1), "collection.queue_capacity = -1"),
        (lambda: CollectionSettings(subscriber_capacity=0), "collection.subscriber_capacity"),
        (lambda: CollectionSettings(flush_interval=0.0), "collection.flush_interval = 0.0"),
        (lambda: CollectionSettings(block_timeout=float("inf")), "collection.block_timeout"),
        (lambda: CollectionSettings(shutdown_timeout=float("nan")), "shutdown_timeout"),
        (lambda: CollectionSettings(spool_dir=" "), "collection.spool_dir = ' '"),
        (lambda: StorageSettings(path=""), "storage.path = ''"),
        (lambda: StorageSettings(busy_timeout_ms=0), "storage.busy_timeout_ms = 0"),
        (lambda: RetentionSettings(days={"metrics": 0}), "retention.days.metrics = 0"),
        (lambda: PrivacySettings(drop_keys=("",)), "privacy.drop_keys[0] = ''"),
        (lambda: PriceSettings(overrides={" ": ModelPrice(input_per_mtok=1, output_per_mtok=1)}),
         'prices.overrides." " = \' \''),
        (lambda: AnalyticsConfig(validation=ValidationLimits(max_batch_events=0)),
         "validation.max_batch_events = 0: must be > 0"),
        (lambda: AnalyticsConfig(validation=ValidationLimits(clock_skew_seconds=-1.0)),
         "validation.clock_skew_seconds = -1.0: must be a finite number >= 0"),
        (lambda: AnalyticsConfig(validation=ValidationLimits(max_event_bytes=2, max_batch_bytes=1)),
         "validation.max_event_bytes = 2: must be <= validation.max_batch_bytes (1)"),
        (lambda: AnalyticsConfig(collection=CollectionSettings(buffer_size=11),
                                 validation=ValidationLimits(max_batch_events=10)),
         "collection.buffer_size = 11: must be <= validation.max_batch_events (10)"),
    ],
)  # fmt: skip
def test_out_of_range_values_raise_config_error_naming_the_key(
    build: Callable[[], object], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        build()


def test_retention_keeps_defaults_for_tables_not_given() -> None:
    days = RetentionSettings(days={"analytics_events": 30}).days
    assert days == {**DEFAULT_RETENTION_DAYS, "analytics_events": 30}


def test_unknown_retention_table_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        RetentionSettings(days={"events": 3})
    assert "retention.days.events = 'events': is not a retention target" in str(info.value)
    for target in RETENTION_TARGETS:
        assert target in str(info.value)


def test_extra_pattern_that_does_not_compile_is_named() -> None:
    with pytest.raises(ConfigError) as info:
        PrivacySettings(extra_patterns=(r"\d+", "(unclosed"))
    assert str(info.value).startswith(
        "privacy.extra_patterns[1] = '(unclosed': is not a valid regular expression"
    )


def test_hashing_user_ids_needs_a_salt() -> None:
    with pytest.raises(ConfigError, match=r"privacy\.hash_user_ids = True: needs privacy\.salt"):
        PrivacySettings(hash_user_ids=True)
    assert PrivacySettings(hash_user_ids=True, salt=SALT).salt == SALT


def test_short_salt_is_rejected_without_showing_it() -> None:
    with pytest.raises(ConfigError) as info:
        PrivacySettings(hash_user_ids=True, salt="tiny-salt")
    assert "tiny-salt" not in str(info.value)
    assert "privacy.salt = <hidden>: must be at least 16 characters" in str(info.value)


def test_salt_is_hidden_in_repr_of_the_section_and_the_whole_config() -> None:
    privacy = PrivacySettings(hash_user_ids=True, salt=SALT)
    assert SALT not in repr(privacy)
    assert SALT not in repr(AnalyticsConfig(privacy=privacy))
    assert ("salt", "<hidden>") in privacy.__rich_repr__()
    assert "salt=None" in repr(PrivacySettings())


def test_event_names_are_checked_but_unregistered_custom_names_are_allowed() -> None:
    config = AnalyticsConfig(disabled_event_types=frozenset({"cpu_usage", "testcfg.not.yet"}))
    assert "testcfg.not.yet" in config.disabled_event_types
    with pytest.raises(ConfigError, match=r"disabled_event_types = 'CPU Usage': is not a built"):
        AnalyticsConfig(disabled_event_types=frozenset({"CPU Usage"}))
    with pytest.raises(ConfigError, match=r'sampling\.per_event_type\."a b" = \'a b\''):
        SamplingSettings(per_event_type={"a b": SamplingConfig()})


def test_unknown_fields_are_rejected_when_decoding() -> None:
    with pytest.raises(msgspec.ValidationError, match="unknown field `bufer_size`"):
        msgspec.convert({"bufer_size": 1}, CollectionSettings)


def test_config_round_trips_through_builtins() -> None:
    config = AnalyticsConfig(
        disabled_categories=frozenset({EventCategory.SYSTEM}),
        sampling=SamplingSettings(per_category={EventCategory.ERROR: SamplingConfig(rate=0.5)}),
        prices=PriceSettings(
            overrides={"m": ModelPrice(input_per_mtok=Decimal("0.3"), output_per_mtok=1)}
        ),
    )
    assert msgspec.convert(msgspec.to_builtins(config), AnalyticsConfig) == config


def test_should_collect_and_get_sampling_on_the_config_itself() -> None:
    config = AnalyticsConfig(
        disabled_categories=frozenset({EventCategory.SYSTEM}),
        min_priority=EventPriority.NORMAL,
        sampling=SamplingSettings(per_category={EventCategory.USAGE: SamplingConfig(rate=0.2)}),
    )
    assert config.should_collect(EventType.FEATURE_USED, EventPriority.NORMAL)
    assert not config.should_collect(EventType.FEATURE_USED, EventPriority.LOW)
    assert not config.should_collect(EventType.PLUGIN_LOADED, EventPriority.CRITICAL)
    assert config.get_sampling(EventType.FEATURE_USED).rate == 0.2
    assert config.get_sampling(EventType.ERROR_OCCURRED).min_per_window == 100
    custom = register_event_type("testcfg.settings.usage", EventCategory.USAGE)  # idempotent
    assert config.get_sampling(custom).rate == 0.2


def test_format_key_quotes_keys_with_dots_like_toml() -> None:
    assert format_key(("sampling", "per_event_type", "a.b", "rate")) == (
        'sampling.per_event_type."a.b".rate'
    )
    assert format_key(("prices", "overrides", "gpt-4o")) == "prices.overrides.gpt-4o"
    assert format_key(()) == ""


def _setting_keys(struct: type[msgspec.Struct], prefix: str = "") -> list[str]:
    keys = []
    for field in msgspec.structs.fields(struct):
        if isinstance(field.type, type) and issubclass(field.type, msgspec.Struct):
            keys += _setting_keys(field.type, f"{prefix}{field.name}.")
        else:
            keys.append(prefix + field.name)
    return keys


def test_every_setting_and_retention_target_is_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    keys = _setting_keys(AnalyticsConfig)
    assert len(keys) > 30
    for key in keys:
        assert f"`{key}`" in text, key
    for target in RETENTION_TARGETS:
        assert f"`{target}`" in text, target
