"""What ``tachimeter.configure()`` and a first ``tachimeter.track()`` set up by default.

Events go to the embedded SQLite store at ``storage.path``, with every projection that
keeps a derived table in step: the spec 355 summaries (daily rollups, user activity,
feature usage, sessions, funnel conversions), the mission tables and the time series
fed by performance and business events. This module sits above every layer (it is
imported by ``tachimeter/__init__``), so the collector itself never imports the store.
"""

from __future__ import annotations

from tachimeter.collect.sinks import EventSink
from tachimeter.config.settings import AnalyticsConfig
from tachimeter.store.projection import Projection

__all__ = ["default_projections", "default_sinks"]


def default_projections(config: AnalyticsConfig | None = None) -> list[Projection]:
    """Every projection of the embedded store, in a working order."""
    from tachimeter.missions.projection import MissionProjection
    from tachimeter.model.prices import PriceTable
    from tachimeter.store.summaries import summary_projections
    from tachimeter.store.timeseries import EventMetricsProjection

    prices = PriceTable(config.prices.overrides) if config is not None else None
    return [*summary_projections(), MissionProjection(prices), EventMetricsProjection()]


def default_sinks(config: AnalyticsConfig) -> list[EventSink]:
    """A ``StoreSink`` on ``config.storage.path`` with :func:`default_projections`."""
    from tachimeter.store.sink import StoreSink

    sink = StoreSink.open(config.storage.path, config, projections=default_projections(config))
    return [sink]
