"""Migration 1: spec 355's analytics schema, verbatim (version 20240101000006 there).

The SQL below is copied character for character from spec 355's migration
``006_create_analytics``; a test compares ``sqlite_master`` with it. Its ``datetime('now')``
defaults are never relied on: Tachimeter always writes fixed-width UTC timestamps.
"""

from tachimeter.store.migrations import Migration

UP = r"""-- Analytics events
CREATE TABLE IF NOT EXISTS analytics_events (
    id TEXT PRIMARY KEY NOT NULL,
    event_type TEXT NOT NULL,
    event_name TEXT NOT NULL,
    timestamp TEXT NOT NULL DEFAULT (datetime('now')),
    session_id TEXT,
    user_id TEXT,
    properties TEXT,
    context TEXT,
    page_url TEXT,
    referrer TEXT
);

CREATE INDEX IF NOT EXISTS idx_analytics_events_type ON analytics_events(event_type);
CREATE INDEX IF NOT EXISTS idx_analytics_events_name ON analytics_events(event_name);
CREATE INDEX IF NOT EXISTS idx_analytics_events_timestamp ON analytics_events(timestamp);
CREATE INDEX IF NOT EXISTS idx_analytics_events_user ON analytics_events(user_id);
CREATE INDEX IF NOT EXISTS idx_analytics_events_session ON analytics_events(session_id);

-- Time-series metrics
CREATE TABLE IF NOT EXISTS metrics (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    metric_type TEXT NOT NULL DEFAULT 'gauge'
        CHECK (metric_type IN ('counter', 'gauge', 'histogram', 'timer')),
    value REAL NOT NULL,
    timestamp TEXT NOT NULL DEFAULT (datetime('now')),
    tags TEXT,
    unit TEXT
);

CREATE INDEX IF NOT EXISTS idx_metrics_name ON metrics(name);
CREATE INDEX IF NOT EXISTS idx_metrics_timestamp ON metrics(timestamp);
CREATE INDEX IF NOT EXISTS idx_metrics_name_time ON metrics(name, timestamp);

-- Aggregated metrics
CREATE TABLE IF NOT EXISTS metric_aggregates (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    period_start TEXT NOT NULL,
    period_type TEXT NOT NULL CHECK (period_type IN ('hourly', 'daily', 'weekly', 'monthly')),
    count INTEGER NOT NULL DEFAULT 0,
    sum REAL NOT NULL DEFAULT 0,
    min REAL NOT NULL DEFAULT 0,
    max REAL NOT NULL DEFAULT 0,
    avg REAL NOT NULL DEFAULT 0,
    p50 REAL,
    p90 REAL,
    p99 REAL,
    tags TEXT,
    UNIQUE(name, period_start, period_type, tags)
);

CREATE INDEX IF NOT EXISTS idx_metric_agg_name ON metric_aggregates(name);
CREATE INDEX IF NOT EXISTS idx_metric_agg_period ON metric_aggregates(period_start, period_type);

-- User activity summary
CREATE TABLE IF NOT EXISTS user_activity (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL,
    date TEXT NOT NULL,  -- YYYY-MM-DD
    session_count INTEGER NOT NULL DEFAULT 0,
    event_count INTEGER NOT NULL DEFAULT 0,
    total_duration_ms INTEGER NOT NULL DEFAULT 0,
    first_seen_at TEXT NOT NULL,
    last_seen_at TEXT NOT NULL,
    events_breakdown TEXT,
    UNIQUE(user_id, date)
);

CREATE INDEX IF NOT EXISTS idx_user_activity_user ON user_activity(user_id);
CREATE INDEX IF NOT EXISTS idx_user_activity_date ON user_activity(date);

-- Feature usage tracking
CREATE TABLE IF NOT EXISTS feature_usage (
    id TEXT PRIMARY KEY NOT NULL,
    feature_name TEXT NOT NULL,
    date TEXT NOT NULL,
    usage_count INTEGER NOT NULL DEFAULT 0,
    unique_users INTEGER NOT NULL DEFAULT 0,
    avg_duration_ms REAL,
    success_rate REAL,
    UNIQUE(feature_name, date)
);

CREATE INDEX IF NOT EXISTS idx_feature_usage_name ON feature_usage(feature_name);
CREATE INDEX IF NOT EXISTS idx_feature_usage_date ON feature_usage(date);

-- Dashboard metrics (pre-computed for fast loading)
CREATE TABLE IF NOT EXISTS dashboard_metrics (
    id TEXT PRIMARY KEY NOT NULL,
    widget_id TEXT NOT NULL,
    metric_key TEXT NOT NULL,
    value REAL NOT NULL,
    previous_value REAL,
    change_percent REAL,
    updated_at TEXT NOT NULL DEFAULT (datetime('now')),
    UNIQUE(widget_id, metric_key)
);

CREATE INDEX IF NOT EXISTS idx_dashboard_metrics_widget ON dashboard_metrics(widget_id);

-- Session tracking
CREATE TABLE IF NOT EXISTS analytics_sessions (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT,
    started_at TEXT NOT NULL DEFAULT (datetime('now')),
    ended_at TEXT,
    duration_ms INTEGER,
    event_count INTEGER NOT NULL DEFAULT 0,
    device_type TEXT,
    browser TEXT,
    os TEXT,
    country TEXT,
    city TEXT,
    referrer TEXT,
    landing_page TEXT,
    exit_page TEXT
);

CREATE INDEX IF NOT EXISTS idx_sessions_user ON analytics_sessions(user_id);
CREATE INDEX IF NOT EXISTS idx_sessions_started ON analytics_sessions(started_at);

-- Funnel tracking
CREATE TABLE IF NOT EXISTS funnels (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL UNIQUE,
    description TEXT,
    steps TEXT NOT NULL,  -- JSON array of step definitions
    created_at TEXT NOT NULL DEFAULT (datetime('now'))
);

CREATE TABLE IF NOT EXISTS funnel_conversions (
    id TEXT PRIMARY KEY NOT NULL,
    funnel_id TEXT NOT NULL REFERENCES funnels(id) ON DELETE CASCADE,
    user_id TEXT,
    session_id TEXT,
    started_at TEXT NOT NULL,
    completed_at TEXT,
    current_step INTEGER NOT NULL DEFAULT 0,
    completed INTEGER NOT NULL DEFAULT 0,
    step_timestamps TEXT  -- JSON array of timestamps for each step
);

CREATE INDEX IF NOT EXISTS idx_funnel_conv_funnel ON funnel_conversions(funnel_id);
CREATE INDEX IF NOT EXISTS idx_funnel_conv_user ON funnel_conversions(user_id);
"""

DOWN = r"""
DROP TABLE IF EXISTS funnel_conversions;
DROP TABLE IF EXISTS funnels;
DROP TABLE IF EXISTS analytics_sessions;
DROP TABLE IF EXISTS dashboard_metrics;
DROP TABLE IF EXISTS feature_usage;
DROP TABLE IF EXISTS user_activity;
DROP TABLE IF EXISTS metric_aggregates;
DROP TABLE IF EXISTS metrics;
DROP TABLE IF EXISTS analytics_events;
"""

MIGRATION = Migration(version=1, name="create_analytics", up=UP, down=DOWN)
