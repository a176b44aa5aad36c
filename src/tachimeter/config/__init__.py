"""Configuration: :class:`AnalyticsConfig`, where it comes from, and its hot-path view.

``load_config()`` merges defaults < ``tachimeter.toml`` (or ``[tool.tachimeter]`` in
``pyproject.toml``) < ``TACHIMETER_*`` environment variables < keyword arguments;
``AnalyticsConfigManager`` answers the collector's per-event questions in O(1).
``docs/configuration.md`` lists every key.
"""

from __future__ import annotations

from tachimeter.config.manager import AnalyticsConfigManager
from tachimeter.config.settings import (
    AnalyticsConfig,
    Backpressure,
    CollectionSettings,
    PriceSettings,
    PrivacySettings,
    RetentionSettings,
    RetentionTarget,
    SamplingSettings,
    SensitiveKeyAction,
    SpoolFsync,
    StorageSettings,
    Synchronous,
    default_store_path,
)
from tachimeter.config.sources import env_var_name, load_config

__all__ = [
    "AnalyticsConfig",
    "AnalyticsConfigManager",
    "Backpressure",
    "CollectionSettings",
    "PriceSettings",
    "PrivacySettings",
    "RetentionSettings",
    "RetentionTarget",
    "SamplingSettings",
    "SensitiveKeyAction",
    "SpoolFsync",
    "StorageSettings",
    "Synchronous",
    "default_store_path",
    "env_var_name",
    "load_config",
]
