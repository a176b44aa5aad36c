"""The process-wide collector and the module-level API (spec 408's global instance and
``track_event!``).

>>> import tachimeter as tm
>>> from tachimeter.testing import MemorySink
>>> sink = MemorySink()
>>> _ = tm.configure(sinks=[sink], env={})
>>> tm.track("feature_used", {"feature": "search"}, user_id="u1")
>>> tm.flush()
True
>>> [e.event_name for e in sink.events()]
['feature_used']
>>> tm.shutdown()
True
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import msgspec

from tachimeter.collect.collector import EventCollector
from tachimeter.collect.sinks import EventSink
from tachimeter.config.manager import AnalyticsConfigManager
from tachimeter.config.settings import AnalyticsConfig
from tachimeter.config.sources import load_config
from tachimeter.model.event_types import EventKind, EventPriority

__all__ = [
    "configure",
    "current_collector",
    "flush",
    "global_collector",
    "identify",
    "init_global_collector",
    "page",
    "shutdown",
    "track",
]

_global: EventCollector | None = None
_lock = threading.Lock()
# Sinks of a collector made without explicit ones: set by the package above this layer
# (tachimeter.defaults: the embedded store), so the collector never imports the store.
_default_sinks: Callable[[AnalyticsConfig], list[EventSink]] | None = None
_log = logging.getLogger("tachimeter.collect")


def set_default_sinks(factory: Callable[[AnalyticsConfig], list[EventSink]] | None) -> None:
    """Choose the sinks ``configure()`` and a first ``track()`` use when given none."""
    global _default_sinks
    _default_sinks = factory


_NORMAL = EventPriority.NORMAL


def init_global_collector(
    config: AnalyticsConfig | AnalyticsConfigManager | None = None,
    *,
    sinks: Iterable[EventSink] | None = None,
) -> EventCollector:
    """The global collector, created with ``config`` and ``sinks`` on the first call.

    Without ``sinks`` (None) events go to the default sinks, as after a first ``track()``
    (the embedded store at ``storage.path``); ``sinks=()`` keeps none.
    """
    if config is None and sinks is None:
        return current_collector()
    global _global
    with _lock:
        if _global is None:
            if sinks is None:
                chosen = config.config if isinstance(config, AnalyticsConfigManager) else config
                sinks = _sinks_for(chosen or AnalyticsConfig.default())
            _global = EventCollector(config, sinks=sinks)
        _expose_metrics()
        return _global


def current_collector() -> EventCollector:
    """The global collector; the first call (or a first ``track()``) makes it from the
    configuration files and environment, with the default sinks."""
    return _global or _auto_collector()


def _sinks_for(config: AnalyticsConfig) -> list[EventSink]:
    """The default sinks for ``config``; none (logged) when they cannot be opened."""
    if _default_sinks is None:
        return []
    try:
        return _default_sinks(config)
    except Exception as exc:
        _log.warning("tachimeter store unavailable, events are not kept: %s", exc)
        return []


def _auto_collector() -> EventCollector:
    """The collector a first ``track()`` creates: configuration from files and the
    environment, default sinks. Telemetry must not break the application, so a bad
    configuration or an unopenable store is logged and the defaults (or no sink) used."""
    global _global
    with _lock:
        if _global is not None:
            return _global
        try:
            config = load_config()
        except Exception as exc:
            _log.warning("tachimeter configuration invalid, using defaults: %s", exc)
            config = AnalyticsConfig.default()
        _global = EventCollector(config, sinks=_sinks_for(config))
        _expose_metrics()
        return _global


def _expose_metrics() -> None:
    from tachimeter.collect.metrics import register_global_collector_metrics

    register_global_collector_metrics()


def global_collector() -> EventCollector | None:
    """The global collector, or None before ``configure``/``init_global_collector``/``track``."""
    return _global


def configure(
    path: str | os.PathLike[str] | None = None,
    *,
    sinks: Iterable[EventSink] | None = None,
    config: AnalyticsConfig | None = None,
    env: Mapping[str, str] | None = None,
    **settings: Any,
) -> EventCollector:
    """(Re)build the global collector from configuration.

    ``path`` is the store path (``storage.path``); ``settings`` are configuration keys
    (``flush_interval=1`` is ``collection.flush_interval``; dotted keys work too), applied
    over ``tachimeter.toml``/``pyproject.toml`` and ``TACHIMETER_*`` variables (or ``env``).
    A previous global collector is flushed and shut down first. Without ``sinks``,
    events go to the default sinks (the embedded SQLite store at ``storage.path``).
    """
    global _global
    if config is None:
        overrides = {_SHORT_KEYS.get(key, key): value for key, value in settings.items()}
        if path is not None:
            overrides["storage.path"] = os.fspath(path)
        config = load_config(env=env, **overrides)
    if sinks is None:
        sinks = _default_sinks(config) if _default_sinks is not None else ()
    collector = EventCollector(config, sinks=sinks)
    with _lock:
        previous, _global = _global, collector
    _expose_metrics()
    if previous is not None:
        previous.shutdown(timeout=config.collection.shutdown_timeout)
    return collector


def _short_keys() -> dict[str, str]:
    """Leaf names unique across sections: ``flush_interval`` -> ``collection.flush_interval``."""
    top = set(AnalyticsConfig.__struct_fields__)
    seen: dict[str, list[str]] = {}
    for section in msgspec.structs.fields(AnalyticsConfig):
        section_type = section.type
        if isinstance(section_type, type) and issubclass(section_type, msgspec.Struct):
            for leaf in section_type.__struct_fields__:
                seen.setdefault(leaf, []).append(f"{section.name}.{leaf}")
    return {leaf: paths[0] for leaf, paths in seen.items() if len(paths) == 1 and leaf not in top}


_SHORT_KEYS = _short_keys()


def _collector() -> EventCollector:
    return _global or _auto_collector()


def track(
    event: EventKind | str,
    properties: dict[str, Any] | None = None,
    *,
    user_id: str | None = None,
    session_id: str | None = None,
    data: Any = None,
    priority: EventPriority = _NORMAL,
    timestamp: dt.datetime | None = None,
) -> None:
    """Record an event on the global collector; never blocks, never raises for telemetry."""
    (_global or _auto_collector()).track(
        event,
        properties,
        user_id=user_id,
        session_id=session_id,
        data=data,
        priority=priority,
        timestamp=timestamp,
    )


def identify(user_id: str, traits: dict[str, Any] | None = None) -> None:
    """Record who the user is (``identify`` call, event ``user_identified``)."""
    _collector().track("user_identified", traits, user_id=user_id, call="identify")


def page(
    url: str,
    properties: dict[str, Any] | None = None,
    *,
    user_id: str | None = None,
    referrer: str | None = None,
) -> None:
    """Record a page view (``page`` call, event ``page_view``)."""
    _collector().track(
        "page_view", properties, user_id=user_id, call="page", page_url=url, referrer=referrer
    )


def flush(timeout: float | None = 5.0) -> bool:
    """Flush the global collector; True when everything was delivered and acknowledged."""
    collector = _global
    return True if collector is None else collector.flush(timeout)


def shutdown(timeout: float | None = 2.0) -> bool:
    """Shut the global collector down (also done at exit, within
    ``collection.shutdown_timeout``).

    It stays the global collector: a later ``track()`` (a background thread, another
    exit hook) is dropped and counted as ``shutdown``, not sent to a new collector with
    the default configuration. ``configure()`` starts a new one.
    """
    collector = _global
    return True if collector is None else collector.shutdown(timeout)
