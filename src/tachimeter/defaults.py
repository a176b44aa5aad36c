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

__all__ = ["abandon_stale", "default_projections", "default_sinks"]


def default_projections(config: AnalyticsConfig | None = None) -> list[Projection]:
    """Every projection of the embedded store, in a working order."""
    from tachimeter.missions.projection import MissionProjection
    from tachimeter.model.prices import PriceTable
    from tachimeter.store.summaries import summary_projections
    from tachimeter.store.timeseries import EventMetricsProjection

    prices = PriceTable(config.prices.overrides) if config is not None else None
    return [*summary_projections(), MissionProjection(prices), EventMetricsProjection()]


def default_sinks(config: AnalyticsConfig) -> list[EventSink]:
    """A ``StoreSink`` on ``config.storage.path`` with :func:`default_projections`.

    Opening it also marks missions a dead process left active as abandoned
    (``missions.abandon_after_seconds``), so they do not dangle.
    """
    from tachimeter.store.sink import StoreSink

    sink = StoreSink.open(config.storage.path, config, projections=default_projections(config))
    abandon_stale(config.storage.path, config)
    return [sink]


def abandon_stale(path: str, config: AnalyticsConfig) -> list[str]:
    """Mark missions idle past ``missions.abandon_after_seconds`` as abandoned; their ids."""
    import datetime as dt
    import sqlite3

    from tachimeter.missions.projection import abandon_stale_missions

    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        conn.execute("BEGIN IMMEDIATE")
        ids = abandon_stale_missions(
            conn, dt.timedelta(seconds=config.missions.abandon_after_seconds)
        )
        conn.execute("COMMIT")
        return ids
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        conn.close()
