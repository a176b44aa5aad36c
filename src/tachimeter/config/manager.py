"""The collector's view of the configuration: precomputed answers for the hot path."""

from __future__ import annotations

from typing import Final

from tachimeter.config.settings import AnalyticsConfig
from tachimeter.model.event_types import (
    Custom,
    EventPriority,
    EventType,
    SamplingConfig,
)

__all__ = ["AnalyticsConfigManager"]

_EVENT_TYPES: Final = tuple(EventType)


class AnalyticsConfigManager:
    """An :class:`AnalyticsConfig` with its filtering and sampling answers precomputed.

    ``should_collect`` and ``get_sampling`` run on the caller's thread for every event,
    so for the named ``EventType`` members both answers are computed once here and looked
    up in a dict. ``Custom`` types are answered from the configuration on each call: their
    category and default sampling come from the plugin registry, which can gain a name
    after this manager was built, and a per-name cache would grow with every name a caller
    invents. That path is still a few dict lookups. The manager never changes after
    construction, so threads share it freely; to change the configuration, build a new one.

    >>> from tachimeter.model.event_types import EventPriority, EventType
    >>> manager = AnalyticsConfigManager(AnalyticsConfig(min_priority=EventPriority.HIGH))
    >>> manager.should_collect(EventType.ERROR_OCCURRED, EventPriority.CRITICAL)
    True
    >>> manager.get_sampling(EventType.CPU_USAGE).rate
    0.1
    """

    __slots__ = ("_allowed_priorities", "_config", "_sampling", "_type_allowed")

    def __init__(self, config: AnalyticsConfig | None = None) -> None:
        config = config if config is not None else AnalyticsConfig.default()
        self._config = config
        self._allowed_priorities = frozenset(p for p in EventPriority if p >= config.min_priority)
        # Keyed by the wider type so a Custom can be looked up (and missed) without a
        # type check first.
        self._type_allowed: dict[EventType | Custom, bool] = {
            t: config.allows_type(t) for t in _EVENT_TYPES
        }
        self._sampling: dict[EventType | Custom, SamplingConfig] = {
            t: config.get_sampling(t) for t in _EVENT_TYPES
        }

    @property
    def config(self) -> AnalyticsConfig:
        """The configuration this manager answers for."""
        return self._config

    def should_collect(self, event_type: EventType | Custom, priority: EventPriority) -> bool:
        """Whether an event of this type and priority is collected."""
        allowed = self._type_allowed.get(event_type)
        if allowed is None:
            return self._config.should_collect(event_type, priority)
        return allowed and priority in self._allowed_priorities

    def get_sampling(self, event_type: EventType | Custom) -> SamplingConfig:
        """Sampling for this type: by name, else by category, else the type's default."""
        rule = self._sampling.get(event_type)
        return rule if rule is not None else self._config.get_sampling(event_type)

    def __repr__(self) -> str:
        return f"AnalyticsConfigManager({self._config!r})"
