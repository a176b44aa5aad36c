"""The configuration schema: :class:`AnalyticsConfig` and its sections.

Every section is a frozen, keyword-only msgspec ``Struct`` whose ``__post_init__`` checks
its bounds, so a bad value raises :class:`~tachimeter.errors.ConfigError` however the
configuration was built: by :func:`~tachimeter.config.load_config` from files and the
environment, or directly in code. ``docs/configuration.md`` lists every key.

The structs hold plain dicts for the keyed tables (``sampling.per_category``,
``retention.days``, ...): treat a configuration as read-only once built.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, Final, Literal, TypeAlias, get_args

import msgspec

from tachimeter.errors import ConfigError
from tachimeter.model.event_types import (
    Custom,
    EventCategory,
    EventPriority,
    EventType,
    SamplingConfig,
    check_custom_name,
)
from tachimeter.model.prices import ModelPrice
from tachimeter.model.validation import ValidationLimits

__all__ = [
    "DEFAULT_RETENTION_DAYS",
    "MIN_SALT_LENGTH",
    "RETENTION_TARGETS",
    "AnalyticsConfig",
    "Backpressure",
    "CollectionSettings",
    "PriceSettings",
    "PrivacySettings",
    "RetentionSettings",
    "RetentionTarget",
    "SamplingSettings",
    "SensitiveKeyAction",
    "SettingError",
    "SpoolFsync",
    "StorageSettings",
    "Synchronous",
    "default_store_path",
    "format_key",
    "show_value",
]

Backpressure: TypeAlias = Literal["drop_lowest_priority", "block", "spill"]
"""What the collector does when its queue is full."""

SpoolFsync: TypeAlias = Literal["always", "batch", "never"]
"""When the spill spool calls fsync."""

SensitiveKeyAction: TypeAlias = Literal["mask", "drop"]
"""What the privacy layer does with a key that looks sensitive (``password``, ``token``)."""

Synchronous: TypeAlias = Literal["NORMAL", "FULL"]
"""SQLite ``PRAGMA synchronous`` of the store (always in WAL mode)."""

RetentionTarget: TypeAlias = Literal[
    "analytics_events",
    "metrics",
    "metric_aggregates_hourly",
    "metric_aggregates_daily",
    "metric_aggregates_weekly",
    "metric_aggregates_monthly",
    "user_activity",
    "feature_usage",
    "analytics_sessions",
    "funnel_conversions",
    "missions",
]
"""What ``retention.days`` can bound: a table, or ``metric_aggregates`` per resolution."""

RETENTION_TARGETS: Final[tuple[str, ...]] = get_args(RetentionTarget)

# Days kept per target. Raw data is the bulk of the file and the summary tables and rollups
# answer long-range questions without it, so raw data goes first and rollups stay longest.
DEFAULT_RETENTION_DAYS: Final[Mapping[RetentionTarget, int]] = MappingProxyType(
    {
        # Raw events for a quarter: enough for quarter-over-quarter funnels and ad-hoc
        # questions; at ~500 bytes per event this is the largest table by far.
        "analytics_events": 90,
        # Raw metric points are the head of the time-series store; 15 days is Prometheus's
        # default retention, and older ranges are served by the rollups below.
        "metrics": 15,
        # Hourly rollups as long as the raw events they are compared with.
        "metric_aggregates_hourly": 90,
        # Daily rollups for two years: year-over-year comparisons need a full prior year.
        "metric_aggregates_daily": 730,
        # Weekly and monthly rollups are a few hundred rows per series: keep them for years.
        "metric_aggregates_weekly": 1825,
        "metric_aggregates_monthly": 3650,
        # One row per user (or feature) per day: small, and the basis of year-over-year
        # retention cohorts, so two years.
        "user_activity": 730,
        "feature_usage": 730,
        # One row per session or funnel entry: bigger than daily summaries, one year.
        "analytics_sessions": 365,
        "funnel_conversions": 365,
        # Missions with their steps, tool calls and LLM calls (spec 414): a year of agent
        # runs for success-rate and cost trends.
        "missions": 365,
    }
)

# A salt shorter than this can be guessed, and then every hashed user id can be reversed by
# hashing candidate ids; 16 characters from a password generator is far out of reach.
MIN_SALT_LENGTH: Final = 16


def format_key(key: Iterable[str | int]) -> str:
    """A setting's path as written in TOML: ``sampling.per_event_type."a.b".rate``.

    >>> format_key(("privacy", "extra_patterns", 2))
    'privacy.extra_patterns[2]'
    """
    text = ""
    for part in key:
        if isinstance(part, int):
            text += f"[{part}]"
            continue
        bare = re.fullmatch(r"[A-Za-z0-9_-]+", part) is not None
        written = part if bare else msgspec.json.encode(part).decode()
        text += f".{written}" if text else written
    return text


class SettingError(ConfigError):
    """A setting failed its check; the loader adds where the value came from (internal).

    ``key`` is the setting's path from the top of :class:`AnalyticsConfig`, ``value`` the
    rejected value and ``expected`` what would be accepted. ``secret`` hides the value.
    """

    def __init__(
        self, key: tuple[str | int, ...], value: object, expected: str, *, secret: bool = False
    ) -> None:
        self.key = key
        self.value = value
        self.expected = expected
        self.secret = secret
        super().__init__(f"{format_key(key)} = {show_value(value, secret=secret)}: {expected}")


def show_value(value: object, *, secret: bool = False) -> str:
    """How an error message shows a value: its repr, or a placeholder for a secret."""
    return "<hidden>" if secret else repr(value)


def _check_positive(section: str, settings: msgspec.Struct, names: Iterable[str]) -> None:
    for name in names:
        value = getattr(settings, name)
        if not value > 0:  # `not >` also rejects NaN
            raise SettingError((section, name), value, "must be > 0")


def _check_seconds(section: str, settings: msgspec.Struct, names: Iterable[str]) -> None:
    for name in names:
        value = getattr(settings, name)
        if not (value > 0 and math.isfinite(value)):
            raise SettingError((section, name), value, "must be a finite number of seconds > 0")


def _check_path(section: str, settings: msgspec.Struct, name: str) -> None:
    """Expand ``~`` in a path setting; reject the empty string (None means the default)."""
    value = getattr(settings, name)
    if value is None:
        return
    if not value.strip():
        raise SettingError((section, name), value, "must be a non-empty path")
    msgspec.structs.force_setattr(settings, name, os.path.expanduser(value))


def _check_event_name(key: tuple[str | int, ...], name: str) -> None:
    if name in _BUILT_IN_NAMES:
        return
    problem = check_custom_name(name)
    if problem is not None:
        raise SettingError(
            key, name, f"is not a built-in event name, and as a custom name {problem}"
        )


_BUILT_IN_NAMES: Final = frozenset(t.event_name for t in EventType)


def default_store_path() -> str:
    """``analytics.db`` in the platform's per-user data directory (XDG on Linux).

    >>> default_store_path().endswith("analytics.db")
    True
    """
    # Deferred: platformdirs takes ~8 ms to import, a sixth of the import budget, and is
    # needed only when a configuration is built.
    import platformdirs

    # Per user and outside the working directory: the database must not land in a
    # project's source tree, and it outlives reinstalls of the application.
    return os.path.join(platformdirs.user_data_dir("tachimeter", appauthor=False), "analytics.db")


class SamplingSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Overrides of spec 406's default sampling, per category and per event name.

    ``get_sampling`` looks up the event's name in ``per_event_type``, then its category in
    ``per_category``, then falls back to the event type's own default.

    >>> from tachimeter.model.event_types import EventCategory, SamplingConfig
    >>> s = SamplingSettings(per_category={EventCategory.PERFORMANCE: SamplingConfig(rate=0.5)})
    >>> s.per_category[EventCategory.PERFORMANCE].rate
    0.5
    """

    per_category: dict[EventCategory, SamplingConfig] = {}
    per_event_type: dict[str, SamplingConfig] = {}
    # None seeds the sampler from the OS: sampled-out sets differ between runs, as they
    # should in production. An int makes them reproducible, for tests.
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in self.per_event_type:
            _check_event_name(("sampling", "per_event_type", name), name)


class CollectionSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How the collector buffers, batches, flushes and sheds load (spec 408).

    >>> CollectionSettings(buffer_size=500, backpressure="block").block_timeout
    0.05
    """

    # Events per batch, and the size that triggers a flush. One transaction per 100 events
    # amortizes the commit; at ~500 bytes per event a batch is ~50 KB, written in
    # milliseconds, so a crash loses little and events appear in the store quickly.
    buffer_size: int = 100
    # Seconds before a partial batch is flushed anyway: a trickle of events still reaches
    # the store (and the live dashboard) within 5 s, and is still written in batches.
    flush_interval: float = 5.0
    # Events waiting for the worker thread. 10 000 is about 5 MB at ~500 bytes per event
    # and about one second of a 10 000 events/s burst: enough to ride out a slow disk write
    # or a long query holding the lock, bounded so a stalled worker cannot eat memory.
    queue_capacity: int = 10_000
    # Dropping the lowest-priority queued event never blocks the caller (track() must not
    # block on I/O) and keeps errors and critical events over routine noise.
    backpressure: Backpressure = "drop_lowest_priority"
    # With backpressure="block": the longest a tracking call may stall the caller before
    # the event is dropped. 50 ms lets the worker drain a batch, and is short enough that
    # an application under load degrades rather than hangs.
    block_timeout: float = 0.05
    # With backpressure="spill": the spool directory. None means "<storage.path>-spool"
    # beside the database (see AnalyticsConfig.spool_dir), so two applications with two
    # databases never replay each other's events.
    spool_dir: str | None = None
    # fsync once per spooled batch: spilled events survive power loss up to the last batch
    # at one fsync per batch; "always" pays one per event, "never" leaves it to the OS.
    spool_fsync: SpoolFsync = "batch"
    # Where events that fail validation are written as JSON lines. None: they are counted
    # (events_dead_lettered) and logged once, not written; a file that grows with every
    # bad event should be asked for.
    dead_letter_path: str | None = None
    # Seconds the exit hook may spend flushing. Enough to commit a few batches, short
    # enough that a process never appears hung at exit.
    shutdown_timeout: float = 2.0
    # Events a live subscriber (the dashboard's stream) may fall behind before its oldest
    # are dropped: about 0.5 MB per subscriber, so a stalled reader costs bounded memory.
    subscriber_capacity: int = 1000

    def __post_init__(self) -> None:
        _check_positive(
            "collection", self, ("buffer_size", "queue_capacity", "subscriber_capacity")
        )
        _check_seconds("collection", self, ("flush_interval", "block_timeout", "shutdown_timeout"))
        _check_path("collection", self, "spool_dir")
        _check_path("collection", self, "dead_letter_path")


class PrivacySettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the privacy layer removes or masks before an event is stored.

    ``extra_patterns`` are Python regular expressions added to the built-in secret shapes;
    ``drop_keys`` are property keys removed wherever they appear. ``salt`` is required
    when ``hash_user_ids`` is on and is never shown in ``repr`` or error messages.

    >>> p = PrivacySettings(hash_user_ids=True, salt="s3cr3t-s3cr3t-s3cr3t")
    >>> "s3cr3t" in repr(p)
    False
    """

    extra_patterns: tuple[str, ...] = ()
    drop_keys: tuple[str, ...] = ()
    # Masking keeps the key, so the shape of the data stays visible in analyses while the
    # value is gone; "drop" removes the key as well.
    sensitive_key_action: SensitiveKeyAction = "mask"
    # Off by default: user ids are usually the application's own opaque ids, and hashing
    # them loses the join with the application's data. Turn on for emails and names.
    hash_user_ids: bool = False
    salt: str | None = None

    def __post_init__(self) -> None:
        for index, pattern in enumerate(self.extra_patterns):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise SettingError(
                    ("privacy", "extra_patterns", index),
                    pattern,
                    f"is not a valid regular expression: {exc}",
                ) from exc
        for index, key in enumerate(self.drop_keys):
            if not key:
                raise SettingError(("privacy", "drop_keys", index), key, "must be non-empty")
        if self.salt is not None and len(self.salt) < MIN_SALT_LENGTH:
            raise SettingError(
                ("privacy", "salt"),
                self.salt,
                f"must be at least {MIN_SALT_LENGTH} characters (a short salt can be guessed)",
                secret=True,
            )
        if self.hash_user_ids and self.salt is None:
            raise SettingError(
                ("privacy", "hash_user_ids"),
                True,
                "needs privacy.salt (TACHIMETER_PRIVACY__SALT): an unsalted hash of a user "
                "id is reversed by hashing candidate ids",
            )

    def __repr__(self) -> str:
        salt = None if self.salt is None else "<hidden>"
        return (
            f"PrivacySettings(extra_patterns={self.extra_patterns!r}, "
            f"drop_keys={self.drop_keys!r}, "
            f"sensitive_key_action={self.sensitive_key_action!r}, "
            f"hash_user_ids={self.hash_user_ids!r}, salt={salt!s})"
        )

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        hidden = {"salt": None if self.salt is None else "<hidden>"}
        return [(name, hidden.get(name, getattr(self, name))) for name in self.__struct_fields__]


class StorageSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where and how the embedded SQLite store writes.

    >>> StorageSettings(path="~/analytics.db").path.startswith("~")
    False
    """

    # "~" is expanded; see default_store_path for why the default lives where it does.
    path: str = msgspec.field(default_factory=default_store_path)
    # In WAL mode NORMAL never corrupts the database and loses nothing on a process crash;
    # only a power failure can lose the last commits. FULL fsyncs every commit to close
    # that gap, at a large cost in write throughput.
    synchronous: Synchronous = "NORMAL"
    # Milliseconds a connection waits for a lock held by another one (the CLI, the server,
    # a checkpoint) before failing: rides out a long query, still surfaces a real deadlock.
    busy_timeout_ms: int = 5000

    def __post_init__(self) -> None:
        _check_path("storage", self, "path")
        _check_positive("storage", self, ("busy_timeout_ms",))


class RetentionSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Days of data kept per table (and per rollup resolution); others keep their default.

    >>> r = RetentionSettings(days={"analytics_events": 30})
    >>> r.days["analytics_events"], r.days["metrics"]
    (30, 15)
    """

    days: dict[RetentionTarget, int] = msgspec.field(
        default_factory=lambda: dict(DEFAULT_RETENTION_DAYS)
    )

    def __post_init__(self) -> None:
        for target, days in self.days.items():
            if target not in DEFAULT_RETENTION_DAYS:
                raise SettingError(
                    ("retention", "days", target),
                    target,
                    f"is not a retention target; known: {', '.join(RETENTION_TARGETS)}",
                )
            if not days > 0:
                raise SettingError(("retention", "days", target), days, "must be > 0 days")
        msgspec.structs.force_setattr(self, "days", {**DEFAULT_RETENTION_DAYS, **self.days})


class MissionSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Mission bookkeeping.

    >>> MissionSettings().abandon_after_seconds
    3600.0
    """

    # A mission with no event for this long, found active when a store opens, was left by
    # a process that died: it is marked abandoned. An hour outlasts any single agent step
    # (long LLM calls, slow tools) while keeping the active-missions figure honest.
    abandon_after_seconds: float = 3600.0

    def __post_init__(self) -> None:
        _check_seconds("missions", self, ("abandon_after_seconds",))


class PriceSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Per-model price overrides in USD per million tokens, on top of the bundled snapshot.

    >>> from decimal import Decimal
    >>> from tachimeter.model.prices import ModelPrice
    >>> p = PriceSettings(overrides={"my-model": ModelPrice(input_per_mtok=2, output_per_mtok=8)})
    >>> p.overrides["my-model"].output_per_mtok
    Decimal('8')
    """

    overrides: dict[str, ModelPrice] = {}

    def __post_init__(self) -> None:
        for model in self.overrides:
            if not model.strip():
                raise SettingError(("prices", "overrides", model), model, "must be a model name")


_POSITIVE_LIMITS: Final = (
    "max_age_days_warning",
    "max_property_depth",
    "max_event_bytes",
    "max_string_length",
    "max_batch_events",
    "max_batch_bytes",
)


class AnalyticsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The whole configuration: switches at the top, one section per concern.

    Build it with :func:`~tachimeter.config.load_config` (defaults < file < environment <
    keyword arguments) or directly; both validate. :class:`AnalyticsConfigManager` wraps
    it for the collector's hot path.

    >>> from tachimeter.model.event_types import EventPriority, EventType
    >>> config = AnalyticsConfig(min_priority=EventPriority.NORMAL)
    >>> config.should_collect(EventType.CPU_USAGE, EventPriority.LOW)
    False
    >>> config.get_sampling(EventType.CPU_USAGE).rate
    0.1
    """

    # Master switch: False makes every tracking call a no-op (events counted as filtered).
    enabled: bool = True
    disabled_categories: frozenset[EventCategory] = frozenset()
    # Event names (built-in or custom) never collected.
    disabled_event_types: frozenset[str] = frozenset()
    # LOW keeps everything: filtering by priority is an explicit choice.
    min_priority: EventPriority = EventPriority.LOW
    # Debug mode: tracking calls raise on bad events and full queues instead of counting
    # and returning. Off, because telemetry must never break the application.
    strict: bool = False
    # Recorded in each event's metadata. None: the model's fallback ($TACHIMETER_APP_VERSION,
    # else Tachimeter's own version).
    app_version: str | None = None
    sampling: SamplingSettings = msgspec.field(default_factory=SamplingSettings)
    collection: CollectionSettings = msgspec.field(default_factory=CollectionSettings)
    privacy: PrivacySettings = msgspec.field(default_factory=PrivacySettings)
    storage: StorageSettings = msgspec.field(default_factory=StorageSettings)
    retention: RetentionSettings = msgspec.field(default_factory=RetentionSettings)
    validation: ValidationLimits = msgspec.field(default_factory=ValidationLimits)
    prices: PriceSettings = msgspec.field(default_factory=PriceSettings)
    missions: MissionSettings = msgspec.field(default_factory=MissionSettings)
    # The `[server]` table of `tachimeter serve` (listen address, API keys, limits). The
    # server layer owns and validates it (tachimeter.server.settings); it is accepted
    # here so that one file configures everything.
    server: dict[str, Any] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in self.disabled_event_types:
            _check_event_name(("disabled_event_types",), name)
        limits = self.validation
        # ValidationLimits belongs to the model layer, which does not check its bounds.
        _check_positive("validation", limits, _POSITIVE_LIMITS)
        skew = limits.clock_skew_seconds
        if not (skew >= 0 and math.isfinite(skew)):
            raise SettingError(
                ("validation", "clock_skew_seconds"), skew, "must be a finite number >= 0"
            )
        if limits.max_event_bytes > limits.max_batch_bytes:
            raise SettingError(
                ("validation", "max_event_bytes"),
                limits.max_event_bytes,
                f"must be <= validation.max_batch_bytes ({limits.max_batch_bytes}), "
                "or no event would fit in a batch",
            )
        if self.collection.buffer_size > limits.max_batch_events:
            raise SettingError(
                ("collection", "buffer_size"),
                self.collection.buffer_size,
                f"must be <= validation.max_batch_events ({limits.max_batch_events}), "
                "or every full batch would fail validation",
            )

    @classmethod
    def default(cls) -> AnalyticsConfig:
        """The built-in defaults, ignoring files and the environment."""
        return cls()

    @property
    def spool_dir(self) -> str:
        """``collection.spool_dir``, else ``<storage.path>-spool`` beside the database."""
        return self.collection.spool_dir or f"{self.storage.path}-spool"

    def allows_type(self, event_type: EventType | Custom) -> bool:
        """Whether events of this type are collected at all (any priority)."""
        return (
            self.enabled
            and event_type.event_name not in self.disabled_event_types
            and event_type.category() not in self.disabled_categories
        )

    def should_collect(self, event_type: EventType | Custom, priority: EventPriority) -> bool:
        """Whether an event of this type and priority is collected (uncached)."""
        return priority >= self.min_priority and self.allows_type(event_type)

    def get_sampling(self, event_type: EventType | Custom) -> SamplingConfig:
        """Sampling for this type: by name, else by category, else the type's default."""
        rule = self.sampling.per_event_type.get(event_type.event_name)
        if rule is None:
            rule = self.sampling.per_category.get(event_type.category())
        return rule if rule is not None else event_type.default_sampling()
