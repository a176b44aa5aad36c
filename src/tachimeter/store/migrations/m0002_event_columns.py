"""Migration 2: what analysis needs beyond spec 355 on ``analytics_events``.

Added columns (documented in docs/schema.md):

* ``category`` and ``priority``: the spec 406 category and priority, also in ``context``
  but as columns so filters use an index instead of parsing JSON;
* ``mission_id``: the mission an event belongs to (from ``properties.mission_id``),
  for mission timelines;
* ``received_at``: when the store wrote the row (fixed-width UTC), for late-arrival
  analysis and incremental processing.

Added indexes: ``(event_name, timestamp)`` serves a trend of one event over a range
without touching other events' rows; ``(timestamp, event_name)`` covers counts by name
over a range; ``(user_id, timestamp)`` serves per-user timelines, sessions and funnels;
``mission_id`` serves mission timelines.
"""

from tachimeter.store.migrations import Migration

UP = """
ALTER TABLE analytics_events ADD COLUMN category TEXT;
ALTER TABLE analytics_events ADD COLUMN priority TEXT;
ALTER TABLE analytics_events ADD COLUMN mission_id TEXT;
ALTER TABLE analytics_events ADD COLUMN received_at TEXT;
CREATE INDEX IF NOT EXISTS idx_events_name_time ON analytics_events(event_name, timestamp);
CREATE INDEX IF NOT EXISTS idx_events_time_name ON analytics_events(timestamp, event_name);
CREATE INDEX IF NOT EXISTS idx_events_user_time ON analytics_events(user_id, timestamp);
CREATE INDEX IF NOT EXISTS idx_events_mission ON analytics_events(mission_id)
    WHERE mission_id IS NOT NULL;
"""

DOWN = """
DROP INDEX IF EXISTS idx_events_mission;
DROP INDEX IF EXISTS idx_events_user_time;
DROP INDEX IF EXISTS idx_events_time_name;
DROP INDEX IF EXISTS idx_events_name_time;
ALTER TABLE analytics_events DROP COLUMN received_at;
ALTER TABLE analytics_events DROP COLUMN mission_id;
ALTER TABLE analytics_events DROP COLUMN priority;
ALTER TABLE analytics_events DROP COLUMN category;
"""

MIGRATION = Migration(version=2, name="event_columns", up=UP, down=DOWN)
