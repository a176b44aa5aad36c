"""Migration 5: alert history and alert state (documented in docs/schema.md, "Migration 5").

* ``alert_events``: every state change of every alert, append-only, with the value that
  caused it: ``from_state``/``to_state`` among inactive, pending, firing, resolved and
  error (a rule whose evaluation failed: ``fingerprint`` is then the rule's own,
  ``message`` the error). ``notified`` says whether channels were told.
* ``alert_state``: the live state of each alert (one row per fingerprint), so a
  restarted manager resumes pending and firing alerts instead of starting over.
* ``alert_rule_health``: per rule, whether its last evaluation worked, the last error,
  and counts of evaluations and errors.
* ``alert_marks``: alerts that may notify once per period (budget thresholds) and the
  periods in which they did.

Times are fixed-width UTC text like ``analytics_events.timestamp``; labels and
annotations are JSON objects with sorted keys.
"""

from tachimeter.store.migrations import Migration

UP = """
CREATE TABLE IF NOT EXISTS alert_events (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    rule TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}',
    from_state TEXT NOT NULL
        CHECK (from_state IN ('inactive', 'pending', 'firing', 'resolved', 'error')),
    to_state TEXT NOT NULL
        CHECK (to_state IN ('inactive', 'pending', 'firing', 'resolved', 'error')),
    value REAL,
    threshold REAL,
    severity TEXT,
    message TEXT,
    annotations TEXT NOT NULL DEFAULT '{}',
    notified INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS idx_alert_events_at ON alert_events(at);
CREATE INDEX IF NOT EXISTS idx_alert_events_rule_at ON alert_events(rule, at);
CREATE INDEX IF NOT EXISTS idx_alert_events_fingerprint ON alert_events(fingerprint, at);

CREATE TABLE IF NOT EXISTS alert_state (
    fingerprint TEXT PRIMARY KEY NOT NULL,
    rule TEXT NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}',
    state TEXT NOT NULL CHECK (state IN ('pending', 'firing', 'resolved')),
    value REAL,
    threshold REAL,
    active_at TEXT,
    fired_at TEXT,
    resolved_at TEXT,
    last_active_at TEXT,
    last_notified_at TEXT,
    notified INTEGER NOT NULL DEFAULT 0,
    period TEXT,
    updated_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idx_alert_state_rule ON alert_state(rule);

CREATE TABLE IF NOT EXISTS alert_rule_health (
    rule TEXT PRIMARY KEY NOT NULL,
    health TEXT NOT NULL CHECK (health IN ('ok', 'error')),
    last_error TEXT,
    evaluations_total INTEGER NOT NULL DEFAULT 0,
    errors_total INTEGER NOT NULL DEFAULT 0,
    last_evaluated_at TEXT,
    last_duration_seconds REAL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS alert_marks (
    fingerprint TEXT NOT NULL,
    period TEXT NOT NULL,
    rule TEXT NOT NULL,
    fired_at TEXT NOT NULL,
    value REAL,
    PRIMARY KEY (fingerprint, period)
) WITHOUT ROWID;
"""

DOWN = """
DROP TABLE IF EXISTS alert_marks;
DROP TABLE IF EXISTS alert_rule_health;
DROP INDEX IF EXISTS idx_alert_state_rule;
DROP TABLE IF EXISTS alert_state;
DROP INDEX IF EXISTS idx_alert_events_fingerprint;
DROP INDEX IF EXISTS idx_alert_events_rule_at;
DROP INDEX IF EXISTS idx_alert_events_at;
DROP TABLE IF EXISTS alert_events;
"""

MIGRATION = Migration(version=5, name="alerts", up=UP, down=DOWN)
