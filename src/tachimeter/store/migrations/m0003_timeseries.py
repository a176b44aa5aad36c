"""Migration 3: the time-series store (documented in docs/schema.md, "Migration 3").

* ``metric_series``: one row per series (name + labels as canonical JSON: keys sorted,
  compact), with its spec 355 type, temporality (a spec 355 counter point is an
  *increment*: ``delta``; a Prometheus counter is ``cumulative``), unit and first/last
  seen. Queries find series here by name and label matchers without touching points.
* ``metric_points``: the raw head, one row per sample (``ts`` in integer microseconds),
  clustered by ``(series_id, ts)``. It replaces spec 355's ``metrics`` table, which
  costs about five times more per point to write and to keep (a UUID text key, text
  timestamps and tags, four B-trees; measured in bench/tsdb.py).
* ``metrics`` stays readable and writable with spec 355's columns: it becomes a view over
  the head, and an ``INSTEAD OF INSERT`` trigger files spec-shaped inserts into
  ``metric_series`` and ``metric_points``. Rows already in the table move over.
* ``metric_chunks``: compressed frames of closed windows (see ``store/chunks.py``).
* ``metric_aggregates`` (spec 355) gains ``series_id``, ``period_start_us``, ``last`` and
  ``last_ts_us`` (the period's last sample, for counter increases across periods and
  instant values at rollup resolution) and ``sketch`` (a serialized ``QuantileSketch``).
* ``metric_rollup_state`` and ``metric_rollup_dirty``: how far hourly rollups are
  complete, and the (series, hour) pairs that late samples invalidated.
"""

from tachimeter.store.migrations import Migration

# Microseconds -> spec 355's fixed-width text, and back (the stored form, or spec 355's
# 'YYYY-MM-DD HH:MM:SS'; NULL means now, as spec 355's default did).
_US_TO_TEXT = (
    "strftime('%Y-%m-%dT%H:%M:%S', p.ts / 1000000, 'unixepoch') || printf('.%06dZ', p.ts % 1000000)"
)
_TS = "COALESCE(NEW.timestamp, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"
_TEXT_TO_US = (
    f"(CAST(strftime('%s', {_TS}) AS INTEGER) * 1000000 + CASE WHEN substr({_TS}, 20, 1) = '.' "
    f"THEN CAST(substr(replace(substr({_TS}, 21), 'Z', '') || '000000', 1, 6) AS INTEGER) "
    "ELSE 0 END)"
)
_TEXT = f"(strftime('%Y-%m-%dT%H:%M:%S', {_TEXT_TO_US} / 1000000, 'unixepoch') " + (
    f"|| printf('.%06dZ', {_TEXT_TO_US} % 1000000))"
)
# Same canonical form as tachimeter.store.timeseries.canonical_labels: sorted keys, compact.
_LABELS = (
    "(SELECT json_group_object(key, CAST(value AS TEXT)) "
    "FROM (SELECT key, value FROM json_each(COALESCE(NEW.tags, '{}')) ORDER BY key))"
)

UP = f"""
CREATE TABLE IF NOT EXISTS metric_series (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    metric_type TEXT NOT NULL DEFAULT 'gauge'
        CHECK (metric_type IN ('counter', 'gauge', 'histogram', 'timer')),
    temporality TEXT NOT NULL DEFAULT 'cumulative'
        CHECK (temporality IN ('cumulative', 'delta')),
    unit TEXT,
    labels TEXT NOT NULL DEFAULT '{{}}',
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    UNIQUE (name, labels)
);

CREATE TABLE IF NOT EXISTS metric_points (
    series_id INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (series_id, ts)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS metric_chunks (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    window_end INTEGER NOT NULL,
    min_ts INTEGER NOT NULL,
    max_ts INTEGER NOT NULL,
    min_series_id INTEGER NOT NULL,
    max_series_id INTEGER NOT NULL,
    series_count INTEGER NOT NULL,
    sample_count INTEGER NOT NULL,
    data BLOB NOT NULL
);

CREATE INDEX IF NOT EXISTS idx_metric_chunks_name_window ON metric_chunks(name, window_start);
CREATE INDEX IF NOT EXISTS idx_metric_chunks_window_end ON metric_chunks(window_end);

ALTER TABLE metric_aggregates ADD COLUMN series_id INTEGER;
ALTER TABLE metric_aggregates ADD COLUMN period_start_us INTEGER;
ALTER TABLE metric_aggregates ADD COLUMN last REAL;
ALTER TABLE metric_aggregates ADD COLUMN last_ts_us INTEGER;
ALTER TABLE metric_aggregates ADD COLUMN sketch BLOB;

CREATE UNIQUE INDEX IF NOT EXISTS idx_metric_agg_series
    ON metric_aggregates(series_id, period_type, period_start_us);

CREATE TABLE IF NOT EXISTS metric_rollup_state (
    period_type TEXT PRIMARY KEY NOT NULL,
    complete_until INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS metric_rollup_dirty (
    series_id INTEGER NOT NULL,
    hour_start INTEGER NOT NULL,
    PRIMARY KEY (series_id, hour_start)
) WITHOUT ROWID;

ALTER TABLE metrics RENAME TO metrics_spec355;

CREATE VIEW metrics (id, name, metric_type, value, timestamp, tags, unit) AS
SELECT
    s.id || ':' || p.ts,
    s.name,
    s.metric_type,
    p.value,
    {_US_TO_TEXT},
    CASE WHEN s.labels = '{{}}' THEN NULL ELSE s.labels END,
    s.unit
FROM metric_points AS p JOIN metric_series AS s ON s.id = p.series_id;

CREATE TRIGGER metrics_insert INSTEAD OF INSERT ON metrics
BEGIN
    INSERT INTO metric_series (name, metric_type, temporality, unit, labels, first_seen,
                               last_seen)
    VALUES (
        NEW.name,
        COALESCE(NEW.metric_type, 'gauge'),
        CASE WHEN NEW.metric_type = 'counter' THEN 'delta' ELSE 'cumulative' END,
        NEW.unit,
        {_LABELS},
        {_TEXT},
        {_TEXT}
    )
    ON CONFLICT (name, labels) DO UPDATE SET
        first_seen = min(first_seen, excluded.first_seen),
        last_seen = max(last_seen, excluded.last_seen);
    INSERT INTO metric_points (series_id, ts, value)
    VALUES (
        (SELECT id FROM metric_series WHERE name = NEW.name AND labels = {_LABELS}),
        {_TEXT_TO_US},
        NEW.value
    )
    ON CONFLICT (series_id, ts) DO UPDATE SET value = CASE
        WHEN (SELECT temporality FROM metric_series WHERE id = series_id) = 'delta'
        THEN value + excluded.value ELSE excluded.value END;
END;

INSERT INTO metrics (id, name, metric_type, value, timestamp, tags, unit)
SELECT id, name, metric_type, value, timestamp, tags, unit FROM metrics_spec355;

DROP TABLE metrics_spec355;
"""

DOWN = """
CREATE TABLE metrics_restored (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    metric_type TEXT NOT NULL DEFAULT 'gauge'
        CHECK (metric_type IN ('counter', 'gauge', 'histogram', 'timer')),
    value REAL NOT NULL,
    timestamp TEXT NOT NULL DEFAULT (datetime('now')),
    tags TEXT,
    unit TEXT
);
INSERT INTO metrics_restored SELECT id, name, metric_type, value, timestamp, tags, unit
FROM metrics;
DROP TRIGGER IF EXISTS metrics_insert;
DROP VIEW IF EXISTS metrics;
ALTER TABLE metrics_restored RENAME TO metrics;
CREATE INDEX IF NOT EXISTS idx_metrics_name ON metrics(name);
CREATE INDEX IF NOT EXISTS idx_metrics_timestamp ON metrics(timestamp);
CREATE INDEX IF NOT EXISTS idx_metrics_name_time ON metrics(name, timestamp);
DROP TABLE IF EXISTS metric_rollup_dirty;
DROP TABLE IF EXISTS metric_rollup_state;
DELETE FROM metric_aggregates WHERE series_id IS NOT NULL;
DROP INDEX IF EXISTS idx_metric_agg_series;
ALTER TABLE metric_aggregates DROP COLUMN sketch;
ALTER TABLE metric_aggregates DROP COLUMN last_ts_us;
ALTER TABLE metric_aggregates DROP COLUMN last;
ALTER TABLE metric_aggregates DROP COLUMN period_start_us;
ALTER TABLE metric_aggregates DROP COLUMN series_id;
DROP INDEX IF EXISTS idx_metric_chunks_window_end;
DROP INDEX IF EXISTS idx_metric_chunks_name_window;
DROP TABLE IF EXISTS metric_chunks;
DROP TABLE IF EXISTS metric_points;
DROP TABLE IF EXISTS metric_series;
"""

MIGRATION = Migration(version=3, name="timeseries", up=UP, down=DOWN)
