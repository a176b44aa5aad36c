"""Event types, categories, priorities and default sampling (spec 406).

``EventType`` holds the 36 named variants of spec 406 plus the mission variants of
spec 414; anything else is ``Custom(name)``. Plugins register their own names with a
category and default sampling through :func:`register_event_type`.

Naming rule for custom events: lowercase ``snake_case`` words, optionally namespaced
with dots, for example ``search_performed`` or ``myplugin.index.rebuilt``; at most
128 characters (``CUSTOM_NAME_PATTERN``).
"""

from __future__ import annotations

import enum
import re
import threading
import weakref
from typing import Any, Final

import msgspec

from tachimeter.errors import ConfigError

__all__ = [
    "CUSTOM_NAME_PATTERN",
    "Custom",
    "EventCategory",
    "EventKind",
    "EventPriority",
    "EventType",
    "SamplingConfig",
    "event_type_from_name",
    "register_event_type",
    "registered_event_types",
]


class EventCategory(enum.Enum):
    """Category of analytics events."""

    USAGE = "usage"
    PERFORMANCE = "performance"
    ERROR = "error"
    BUSINESS = "business"
    SECURITY = "security"
    SYSTEM = "system"
    CUSTOM = "custom"

    # Members are singletons compared by identity, so identity hashing is exact, and it is
    # C-speed: Enum's default __hash__ is Python code hashing the name, on the hot path.
    __hash__ = object.__hash__


_PRIORITY_RANK: dict[str, int] = {"low": 0, "normal": 1, "high": 2, "critical": 3}


class EventPriority(enum.Enum):
    """Priority of an event, ordered ``LOW < NORMAL < HIGH < CRITICAL``.

    Serialized as its snake_case name, compared by rank.
    """

    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    CRITICAL = "critical"

    __hash__ = object.__hash__  # see EventCategory

    @property
    def rank(self) -> int:
        """0 for LOW up to 3 for CRITICAL."""
        return _PRIORITY_RANK[self.value]

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, EventPriority):
            return NotImplemented
        return self.rank < other.rank

    def __le__(self, other: object) -> bool:
        if not isinstance(other, EventPriority):
            return NotImplemented
        return self.rank <= other.rank

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, EventPriority):
            return NotImplemented
        return self.rank > other.rank

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, EventPriority):
            return NotImplemented
        return self.rank >= other.rank


class SamplingConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Sampling of one event type: keep ``rate`` of events, but never fewer than
    ``min_per_window`` per ``window_seconds``.

    >>> SamplingConfig(rate=0.1, min_per_window=10, window_seconds=60).rate
    0.1
    """

    rate: float = 1.0
    min_per_window: int = 1
    window_seconds: int = 60

    def __post_init__(self) -> None:
        if not (0.0 <= self.rate <= 1.0):  # also rejects NaN
            raise ConfigError(f"sampling.rate must be in [0, 1], got {self.rate!r}")
        if self.min_per_window < 0:
            raise ConfigError(f"sampling.min_per_window must be >= 0, got {self.min_per_window!r}")
        if self.window_seconds <= 0:
            raise ConfigError(f"sampling.window_seconds must be > 0, got {self.window_seconds!r}")


_DEFAULT_SAMPLING: Final = SamplingConfig()
_CATEGORY_SAMPLING: Final[dict[EventCategory, SamplingConfig]] = {
    EventCategory.ERROR: SamplingConfig(rate=1.0, min_per_window=100, window_seconds=60),
    EventCategory.SECURITY: SamplingConfig(rate=1.0, min_per_window=100, window_seconds=60),
    EventCategory.PERFORMANCE: SamplingConfig(rate=0.1, min_per_window=10, window_seconds=60),
}


def default_sampling_for(category: EventCategory) -> SamplingConfig:
    """Spec 406's default sampling for a category."""
    return _CATEGORY_SAMPLING.get(category, _DEFAULT_SAMPLING)


class EventType(enum.Enum):
    """The named event types of spec 406 (and the mission variants of spec 414).

    >>> EventType.TOKENS_CONSUMED.category()
    <EventCategory.BUSINESS: 'business'>
    >>> EventType("feature_used") is EventType.FEATURE_USED
    True
    """

    # Usage
    SESSION_STARTED = "session_started"
    SESSION_ENDED = "session_ended"
    MISSION_CREATED = "mission_created"
    MISSION_COMPLETED = "mission_completed"
    MISSION_FAILED = "mission_failed"
    MISSION_CANCELLED = "mission_cancelled"
    COMMAND_EXECUTED = "command_executed"
    FEATURE_USED = "feature_used"
    BACKEND_SELECTED = "backend_selected"
    TOOL_INVOKED = "tool_invoked"
    # Usage: the mission variants spec 414 needs and its sketch forgets
    MISSION_STARTED = "mission_started"
    MISSION_STEP_COMPLETED = "mission_step_completed"
    MISSION_PAUSED = "mission_paused"
    MISSION_RESUMED = "mission_resumed"
    MISSION_ABANDONED = "mission_abandoned"
    # Performance
    RESPONSE_LATENCY = "response_latency"
    MEMORY_USAGE = "memory_usage"
    CPU_USAGE = "cpu_usage"
    DISK_USAGE = "disk_usage"
    NETWORK_LATENCY = "network_latency"
    CACHE_HIT = "cache_hit"
    CACHE_MISS = "cache_miss"
    # Error
    ERROR_OCCURRED = "error_occurred"
    WARNING_RAISED = "warning_raised"
    PANIC_CAUGHT = "panic_caught"
    VALIDATION_FAILED = "validation_failed"
    TIMEOUT_OCCURRED = "timeout_occurred"
    RETRY_ATTEMPTED = "retry_attempted"
    # Business
    TOKENS_CONSUMED = "tokens_consumed"
    COST_INCURRED = "cost_incurred"
    QUOTA_CHECKED = "quota_checked"
    BUDGET_ALERTED = "budget_alerted"
    # Security
    AUTH_ATTEMPTED = "auth_attempted"
    PERMISSION_DENIED = "permission_denied"
    SENSITIVE_DATA_ACCESSED = "sensitive_data_accessed"
    # System
    CONFIG_CHANGED = "config_changed"
    PLUGIN_LOADED = "plugin_loaded"
    PLUGIN_UNLOADED = "plugin_unloaded"
    UPDATE_AVAILABLE = "update_available"
    SYSTEM_STARTED = "system_started"
    SYSTEM_SHUTDOWN = "system_shutdown"

    __hash__ = object.__hash__  # see EventCategory

    @property
    def event_name(self) -> str:
        """The snake_case name stored in ``analytics_events.event_name``."""
        return self.value

    def category(self) -> EventCategory:
        """The category spec 406 assigns to this type."""
        return _CATEGORY_OF[self]

    def default_sampling(self) -> SamplingConfig:
        """Spec 406's default sampling for this type's category."""
        return _CATEGORY_SAMPLING.get(_CATEGORY_OF[self], _DEFAULT_SAMPLING)


def _categories() -> dict[EventType, EventCategory]:
    groups = {
        EventCategory.USAGE: "SESSION_STARTED SESSION_ENDED MISSION_CREATED MISSION_COMPLETED "
        "MISSION_FAILED MISSION_CANCELLED COMMAND_EXECUTED FEATURE_USED BACKEND_SELECTED "
        "TOOL_INVOKED MISSION_STARTED MISSION_STEP_COMPLETED MISSION_PAUSED MISSION_RESUMED "
        "MISSION_ABANDONED",
        EventCategory.PERFORMANCE: "RESPONSE_LATENCY MEMORY_USAGE CPU_USAGE DISK_USAGE "
        "NETWORK_LATENCY CACHE_HIT CACHE_MISS",
        EventCategory.ERROR: "ERROR_OCCURRED WARNING_RAISED PANIC_CAUGHT VALIDATION_FAILED "
        "TIMEOUT_OCCURRED RETRY_ATTEMPTED",
        EventCategory.BUSINESS: "TOKENS_CONSUMED COST_INCURRED QUOTA_CHECKED BUDGET_ALERTED",
        EventCategory.SECURITY: "AUTH_ATTEMPTED PERMISSION_DENIED SENSITIVE_DATA_ACCESSED",
        EventCategory.SYSTEM: "CONFIG_CHANGED PLUGIN_LOADED PLUGIN_UNLOADED UPDATE_AVAILABLE "
        "SYSTEM_STARTED SYSTEM_SHUTDOWN",
    }
    return {EventType[n]: cat for cat, names in groups.items() for n in names.split()}


_CATEGORY_OF: Final = _categories()

CUSTOM_NAME_PATTERN: Final = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*")
_MAX_NAME_LENGTH: Final = 128


class _Registration(msgspec.Struct, frozen=True):
    category: EventCategory
    sampling: SamplingConfig


_registry: dict[str, _Registration] = {}
_registry_lock = threading.Lock()
# Called after every registration, so caches of categories and sampling (the collector's
# per-name policies) are dropped instead of going stale. Weak: a listener never keeps
# its owner alive.
_listeners: weakref.WeakSet[Any] = weakref.WeakSet()


def add_registry_listener(owner: Any) -> None:
    """Call ``owner.event_types_changed()`` after each registration (held weakly)."""
    _listeners.add(owner)


class Custom(msgspec.Struct, frozen=True):
    """A custom (plugin) event type, serialized as ``{"custom": "<name>"}`` like spec 406.

    Its category and default sampling are those registered for the name with
    :func:`register_event_type`, else ``EventCategory.CUSTOM`` and rate 1.0.

    >>> Custom("search_performed").name
    'search_performed'
    """

    name: str = msgspec.field(name="custom")

    @property
    def event_name(self) -> str:
        """The name stored in ``analytics_events.event_name``."""
        return self.name

    def category(self) -> EventCategory:
        """The registered category, else ``EventCategory.CUSTOM``."""
        reg = _registry.get(self.name)
        return reg.category if reg is not None else EventCategory.CUSTOM

    def default_sampling(self) -> SamplingConfig:
        """The registered sampling, else the category default."""
        reg = _registry.get(self.name)
        return reg.sampling if reg is not None else _DEFAULT_SAMPLING


EventKind = EventType | Custom
"""Any event type: a named ``EventType`` or a ``Custom(name)``."""

_BY_NAME: Final[dict[str, EventType]] = {t.value: t for t in EventType}


def check_custom_name(name: object) -> str | None:
    """Why ``name`` breaks the custom naming rule, or None when it is fine."""
    if not isinstance(name, str):
        return f"must be a string, got {type(name).__name__}"
    if len(name) > _MAX_NAME_LENGTH:
        return f"must be at most {_MAX_NAME_LENGTH} characters, got {len(name)}"
    if CUSTOM_NAME_PATTERN.fullmatch(name) is None:
        return (
            f"{name!r} must be lowercase snake_case words separated by dots, "
            "like 'search_performed' or 'myplugin.index.rebuilt'"
        )
    return None


def register_event_type(
    name: str,
    category: EventCategory = EventCategory.CUSTOM,
    sampling: SamplingConfig | None = None,
) -> Custom:
    """Register a plugin event type and return its ``Custom`` handle.

    Registering the same name again with the same category is a no-op (plugins reload);
    with a different category it raises ``ConfigError``.

    >>> register_event_type("docs.example.ran", EventCategory.USAGE).category()
    <EventCategory.USAGE: 'usage'>
    """
    problem = check_custom_name(name)
    if problem is not None:
        raise ConfigError(f"custom event name {problem}")
    if name in _BY_NAME:
        raise ConfigError(
            f"custom event name {name!r} is a built-in EventType; "
            f"use EventType.{_BY_NAME[name].name}"
        )
    if not isinstance(category, EventCategory):
        raise ConfigError(
            f"category for custom event {name!r} must be an EventCategory, got {category!r}"
        )
    reg = _Registration(category, sampling or default_sampling_for(category))
    with _registry_lock:
        existing = _registry.get(name)
        if existing is not None and existing.category is not category:
            raise ConfigError(
                f"custom event {name!r} is already registered with category "
                f"{existing.category.value!r}, cannot register it again as {category.value!r}"
            )
        if existing is None or sampling is not None:
            _registry[name] = reg
    for owner in list(_listeners):
        owner.event_types_changed()
    return Custom(name)


def registered_event_types() -> dict[str, EventCategory]:
    """Registered custom names and their categories (a copy)."""
    with _registry_lock:
        return {name: reg.category for name, reg in _registry.items()}


def event_type_from_name(name: str) -> EventType | Custom:
    """The ``EventType`` called ``name``, else ``Custom(name)`` (names are not checked here)."""
    named = _BY_NAME.get(name)
    return named if named is not None else Custom(name)


# Names produced by the spec 355 builders (page, identify) and its predefined events.
for _name in (
    "page_view",
    "user_identified",
    "spec_created",
    "forge_item_created",
    "search_performed",
):
    _registry[_name] = _Registration(EventCategory.USAGE, _DEFAULT_SAMPLING)
