"""Migration 7: what the analytics summaries need beyond spec 355 (documented in docs/schema.md).

* ``analytics_daily_events``: events per (event name, UTC day, user), ``user_id`` ``''``
  for events without a user. Trends by day, week or month and retention cohorts read it
  instead of the raw events: at 1M events it has about 250k rows and answers "unique users
  of one event per day" from its primary key alone.
* ``analytics_daily_counts``: events per (UTC day, event name), a few thousand rows a
  year. "Events per day" of one event or of all of them reads it instead of counting
  half a million index entries for a month at 1M events.
* ``analytics_first_events``: the first day each user did each event. Retention cohorts
  are "users whose first X was in this week": reading it is a range on
  ``(event_name, first_date)`` instead of a minimum over every day of every user.
* ``feature_usage_users``: per (feature, day, user) counts and integer sums behind each
  ``feature_usage`` row, so the row's unique users, average duration and success rate
  stay exact when events arrive in any order (durations summed as integer microseconds:
  no floating-point drift between incremental updates and a rebuild).
* ``user_activity_spans``: per user and day, the first and last instant of each session
  and of each inactivity segment of events without a session, so a ``user_activity``
  row's session count and active time are updated from a batch alone (rereading the
  day's events would cost a heavy user's whole day on every batch).
* ``analytics_session_sources``: for each session, the sort key
  (timestamp then id) of the event each derived column came from, so a late event can
  replace the landing page, device or user of a session exactly, without rereading it.
* ``funnels`` gains the conversion window, the order mode and the exclusion steps
  (``steps`` stays spec 355's JSON array of step definitions).
* ``user_activity`` gains a covering ``(date, user_id)`` index: daily unique users over a
  month read a few thousand index entries and no rows.
* ``funnel_conversions`` gains a covering index for "entries of a funnel in a time range"
  (a report reads the index alone: at 1M events a month holds about 25 000 entries,
  whose row lookups cost several times the rest of the report) and one for the per-user
  recomputation its projection does when a user's events arrive.
"""

from tachimeter.store.migrations import Migration

UP = """
CREATE TABLE IF NOT EXISTS analytics_daily_events (
    event_name TEXT NOT NULL,
    date TEXT NOT NULL,
    user_id TEXT NOT NULL,
    event_count INTEGER NOT NULL,
    PRIMARY KEY (event_name, date, user_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS analytics_daily_counts (
    date TEXT NOT NULL,
    event_name TEXT NOT NULL,
    event_count INTEGER NOT NULL,
    PRIMARY KEY (date, event_name)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS analytics_first_events (
    event_name TEXT NOT NULL,
    user_id TEXT NOT NULL,
    first_date TEXT NOT NULL,
    PRIMARY KEY (event_name, user_id)
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS idx_first_events_date ON analytics_first_events(event_name, first_date);

CREATE INDEX IF NOT EXISTS idx_user_activity_date_user ON user_activity(date, user_id);

CREATE TABLE IF NOT EXISTS feature_usage_users (
    feature_name TEXT NOT NULL,
    date TEXT NOT NULL,
    user_id TEXT NOT NULL,
    usage_count INTEGER NOT NULL,
    duration_us_sum INTEGER NOT NULL,
    duration_count INTEGER NOT NULL,
    success_count INTEGER NOT NULL,
    outcome_count INTEGER NOT NULL,
    PRIMARY KEY (feature_name, date, user_id)
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS idx_feature_usage_users_date ON feature_usage_users(date);

CREATE TABLE IF NOT EXISTS user_activity_spans (
    user_id TEXT NOT NULL,
    date TEXT NOT NULL,
    kind INTEGER NOT NULL,
    span_key TEXT NOT NULL,
    first_at TEXT NOT NULL,
    last_at TEXT NOT NULL,
    PRIMARY KEY (user_id, date, kind, span_key)
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS idx_user_activity_spans_date ON user_activity_spans(date);

CREATE TABLE IF NOT EXISTS analytics_session_sources (
    session_id TEXT PRIMARY KEY NOT NULL,
    sources TEXT NOT NULL
) WITHOUT ROWID;

ALTER TABLE funnels ADD COLUMN conversion_window_seconds INTEGER NOT NULL DEFAULT 86400;
ALTER TABLE funnels ADD COLUMN order_mode TEXT NOT NULL DEFAULT 'ordered';
ALTER TABLE funnels ADD COLUMN exclusions TEXT;

CREATE INDEX IF NOT EXISTS idx_funnel_conv_funnel_started
    ON funnel_conversions(funnel_id, started_at, user_id, current_step, step_timestamps);
CREATE INDEX IF NOT EXISTS idx_funnel_conv_funnel_user
    ON funnel_conversions(funnel_id, user_id, started_at);
"""

DOWN = """
DROP INDEX IF EXISTS idx_funnel_conv_funnel_user;
DROP INDEX IF EXISTS idx_funnel_conv_funnel_started;
ALTER TABLE funnels DROP COLUMN exclusions;
ALTER TABLE funnels DROP COLUMN order_mode;
ALTER TABLE funnels DROP COLUMN conversion_window_seconds;
DROP TABLE IF EXISTS analytics_session_sources;
DROP INDEX IF EXISTS idx_user_activity_spans_date;
DROP TABLE IF EXISTS user_activity_spans;
DROP INDEX IF EXISTS idx_feature_usage_users_date;
DROP TABLE IF EXISTS feature_usage_users;
DROP INDEX IF EXISTS idx_user_activity_date_user;
DROP INDEX IF EXISTS idx_first_events_date;
DROP TABLE IF EXISTS analytics_first_events;
DROP TABLE IF EXISTS analytics_daily_counts;
DROP TABLE IF EXISTS analytics_daily_events;
"""

MIGRATION = Migration(version=7, name="analytics_rollups", up=UP, down=DOWN)
