"""Migration 4: the mission tables of spec 414, maintained by ``MissionProjection``.

Documented in docs/missions.md. ``missions`` has one row per mission (an integer
``mission_key`` that the child tables reference, and the text ``mission_id``); the child
tables hold one row per event, keyed by ``(mission_key, seq)`` (``seq`` numbers a
mission's events in the order the tracker recorded them), which makes a replayed event
a no-op. ``mission_tool_usage`` is spec 414's per-mission ``ToolUsage``, keyed by tool
first so that per-tool totals read one index range instead of every tool call.
``missions``' counters and ``mission_tool_usage`` are recomputed from the child tables
for every mission a batch touches, so they always equal a recomputation from the events.
``idx_missions_stats`` covers the aggregate of ``calculate_metrics`` in group order, so it
needs neither the table nor a sort; ``idx_mission_tool_usage_mission`` covers the per-tool
totals of a filtered set of missions.

Times are fixed-width UTC text like ``analytics_events.timestamp``; durations are
milliseconds (REAL: tool calls are often shorter than one); money is USD (REAL).
"""

from tachimeter.store.migrations import Migration

UP = """
CREATE TABLE IF NOT EXISTS missions (
    mission_key INTEGER PRIMARY KEY,
    mission_id TEXT NOT NULL UNIQUE,
    backend TEXT,
    model TEXT,
    tags TEXT NOT NULL DEFAULT '[]',
    session_id TEXT,
    user_id TEXT,
    status TEXT NOT NULL CHECK (status IN ('created', 'planning', 'executing', 'paused',
        'completed', 'failed', 'cancelled', 'abandoned')),
    status_seq INTEGER NOT NULL DEFAULT -1,
    created_at TEXT NOT NULL,
    started_at TEXT,
    ended_at TEXT,
    last_event_at TEXT NOT NULL,
    last_seq INTEGER NOT NULL DEFAULT -1,
    execution_time_ms REAL,
    paused_ms REAL NOT NULL DEFAULT 0,
    retry_count INTEGER NOT NULL DEFAULT 0,
    step_count INTEGER NOT NULL DEFAULT 0,
    steps_completed INTEGER NOT NULL DEFAULT 0,
    steps_failed INTEGER NOT NULL DEFAULT 0,
    tool_calls INTEGER NOT NULL DEFAULT 0,
    tool_failures INTEGER NOT NULL DEFAULT 0,
    tool_time_ms REAL NOT NULL DEFAULT 0,
    distinct_tools INTEGER NOT NULL DEFAULT 0,
    llm_calls INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens INTEGER NOT NULL DEFAULT 0,
    cache_creation_tokens INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens INTEGER NOT NULL DEFAULT 0,
    total_tokens INTEGER NOT NULL DEFAULT 0,
    total_cost REAL NOT NULL DEFAULT 0,
    unpriced_llm_calls INTEGER NOT NULL DEFAULT 0,
    error_code TEXT,
    error_message TEXT,
    error_type TEXT,
    error_step_index INTEGER,
    error_recoverable INTEGER,
    end_reason TEXT
);
CREATE INDEX IF NOT EXISTS idx_missions_created ON missions(created_at);
CREATE INDEX IF NOT EXISTS idx_missions_status ON missions(status, created_at);
CREATE INDEX IF NOT EXISTS idx_missions_backend ON missions(backend, created_at);
CREATE INDEX IF NOT EXISTS idx_missions_model ON missions(model, created_at);
CREATE INDEX IF NOT EXISTS idx_missions_active ON missions(last_event_at)
    WHERE status IN ('created', 'planning', 'executing', 'paused');
CREATE INDEX IF NOT EXISTS idx_missions_stats ON missions(status, backend, model,
    execution_time_ms, step_count, total_tokens, total_cost, unpriced_llm_calls);

CREATE TABLE IF NOT EXISTS mission_tags (
    tag TEXT NOT NULL,
    mission_key INTEGER NOT NULL,
    PRIMARY KEY (tag, mission_key)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS mission_steps (
    mission_key INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    step_index INTEGER NOT NULL,
    name TEXT,
    success INTEGER NOT NULL,
    duration_ms REAL,
    recorded_at TEXT NOT NULL,
    PRIMARY KEY (mission_key, seq)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS mission_tool_calls (
    mission_key INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    tool_name TEXT NOT NULL,
    duration_ms REAL NOT NULL,
    success INTEGER NOT NULL,
    error_code TEXT,
    step_index INTEGER,
    called_at TEXT NOT NULL,
    PRIMARY KEY (mission_key, seq)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS mission_tool_usage (
    tool_name TEXT NOT NULL,
    mission_key INTEGER NOT NULL,
    invocations INTEGER NOT NULL,
    failures INTEGER NOT NULL,
    total_ms REAL NOT NULL,
    PRIMARY KEY (tool_name, mission_key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idx_mission_tool_usage_mission ON mission_tool_usage(mission_key,
    tool_name, invocations, failures, total_ms);

CREATE TABLE IF NOT EXISTS mission_llm_calls (
    mission_key INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    model TEXT NOT NULL,
    provider TEXT,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cache_read_tokens INTEGER NOT NULL,
    cache_creation_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    cost REAL,
    cost_source TEXT NOT NULL,
    duration_ms REAL,
    called_at TEXT NOT NULL,
    PRIMARY KEY (mission_key, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idx_mission_llm_calls_model ON mission_llm_calls(model);
"""

DOWN = """
DROP INDEX IF EXISTS idx_mission_llm_calls_model;
DROP TABLE IF EXISTS mission_llm_calls;
DROP INDEX IF EXISTS idx_mission_tool_usage_mission;
DROP TABLE IF EXISTS mission_tool_usage;
DROP TABLE IF EXISTS mission_tool_calls;
DROP TABLE IF EXISTS mission_steps;
DROP TABLE IF EXISTS mission_tags;
DROP INDEX IF EXISTS idx_missions_stats;
DROP INDEX IF EXISTS idx_missions_active;
DROP INDEX IF EXISTS idx_missions_model;
DROP INDEX IF EXISTS idx_missions_backend;
DROP INDEX IF EXISTS idx_missions_status;
DROP INDEX IF EXISTS idx_missions_created;
DROP TABLE IF EXISTS missions;
"""

MIGRATION = Migration(version=4, name="missions", up=UP, down=DOWN)
