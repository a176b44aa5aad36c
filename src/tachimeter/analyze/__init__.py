"""Analytics over the store: events (search, trends, funnels, retention, sessions, SQL),
missions (metrics, tool usage, complexity, patterns, efficiency, comparisons), metric
queries over the time-series store (PromQL-like rate, increase, histogram_quantile) and
anomaly detectors.

Every function takes a *source* to read from, a ``sqlite3.Connection`` or a store
(:class:`~tachimeter.store.SQLiteStore`), plain arguments, and returns msgspec Structs.
Times are UTC; ranges are ``start <= t < end``. Dashboards read the summary tables that
the projections of :func:`summary_projections` keep in step with the events (give them
to the ``StoreSink``); raw-event queries are time-bounded and indexed.

>>> import datetime as dt
>>> import tempfile, pathlib
>>> import tachimeter.analyze as ta
>>> from tachimeter.store import SQLiteStore
>>> from tachimeter.model import AnalyticsEvent
>>> store = SQLiteStore(pathlib.Path(tempfile.mkdtemp()) / "a.db")
>>> event = AnalyticsEvent.new("feature_used", {"feature": "search"})
>>> _ = store.write_batch([event], projections=ta.summary_projections())
>>> day = event.timestamp.date()
>>> ta.trend(store, "feature_used", start=day, end=day + dt.timedelta(days=1)).series[0].total
1.0
>>> store.close()
"""

from __future__ import annotations

from tachimeter.analyze.activity import (
    FeatureUsageDay,
    SessionRecord,
    UserActivityDay,
    dashboard_metrics,
    feature_usage,
    list_sessions,
    user_activity,
)
from tachimeter.analyze.anomalies import (
    AnomalyDetector,
    AnomalyKind,
    AnomalyReport,
    DetectedAnomaly,
    LevelShift,
    RobustZScore,
    SeasonalBaseline,
)
from tachimeter.analyze.events import (
    EventPage,
    EventRecord,
    Measure,
    PropertyStats,
    Trend,
    TrendSeries,
    count_events,
    property_stats,
    search_events,
    trend,
)
from tachimeter.analyze.funnels import (
    FunnelReport,
    FunnelStepResult,
    StoredFunnel,
    define_funnel,
    delete_funnel,
    funnel_report,
    get_funnel,
    list_funnels,
)
from tachimeter.analyze.intervals import Interval
from tachimeter.analyze.metrics import (
    LabelMatcher,
    MetricQuery,
    MetricsEngine,
    MetricSeries,
    PerformanceStats,
    QueryResult,
    TokenUsageReport,
    bucket_quantile,
    loop_performance_stats,
    token_usage_report,
)
from tachimeter.analyze.missions import (
    COMPLEXITY_BUCKETS,
    COMPLEXITY_WEIGHTS,
    EFFICIENCY_WEIGHTS,
    Comparison,
    ComplexityBucket,
    ComplexityReport,
    EfficiencyReport,
    GroupEfficiency,
    GroupSummary,
    LoopStats,
    MissionEfficiency,
    MissionFilter,
    PairComparison,
    PatternReport,
    RecurringError,
    SequencePattern,
    StepFailures,
    ToolPair,
    ToolStats,
    ToolUsageReport,
    bootstrap_medians,
    calculate_metrics,
    compare,
    complexity,
    detect_patterns,
    efficiency,
    tool_usage,
    two_proportion_p_value,
    wilson_interval,
)
from tachimeter.analyze.retention import (
    RetentionCohort,
    RetentionMatrix,
    RetentionPeriod,
    retention_cohorts,
)
from tachimeter.analyze.sql import SqlResult, run_sql
from tachimeter.store.summaries import (
    DashboardMetric,
    FunnelDefinition,
    FunnelExclusion,
    FunnelOrder,
    FunnelStep,
    PropertyFilter,
    PropertyOp,
    RetentionReport,
    TableRetention,
    rebuild_summaries,
    refresh_dashboard_metrics,
    run_retention,
    summary_projections,
)

__all__ = [
    "COMPLEXITY_BUCKETS",
    "COMPLEXITY_WEIGHTS",
    "EFFICIENCY_WEIGHTS",
    "AnomalyDetector",
    "AnomalyKind",
    "AnomalyReport",
    "Comparison",
    "ComplexityBucket",
    "ComplexityReport",
    "DashboardMetric",
    "DetectedAnomaly",
    "EfficiencyReport",
    "EventPage",
    "EventRecord",
    "FeatureUsageDay",
    "FunnelDefinition",
    "FunnelExclusion",
    "FunnelOrder",
    "FunnelReport",
    "FunnelStep",
    "FunnelStepResult",
    "GroupEfficiency",
    "GroupSummary",
    "Interval",
    "LabelMatcher",
    "LevelShift",
    "LoopStats",
    "Measure",
    "MetricQuery",
    "MetricSeries",
    "MetricsEngine",
    "MissionEfficiency",
    "MissionFilter",
    "PairComparison",
    "PatternReport",
    "PerformanceStats",
    "PropertyFilter",
    "PropertyOp",
    "PropertyStats",
    "QueryResult",
    "RecurringError",
    "RetentionCohort",
    "RetentionMatrix",
    "RetentionPeriod",
    "RetentionReport",
    "RobustZScore",
    "SeasonalBaseline",
    "SequencePattern",
    "SessionRecord",
    "SqlResult",
    "StepFailures",
    "StoredFunnel",
    "TableRetention",
    "TokenUsageReport",
    "ToolPair",
    "ToolStats",
    "ToolUsageReport",
    "Trend",
    "TrendSeries",
    "UserActivityDay",
    "bootstrap_medians",
    "bucket_quantile",
    "calculate_metrics",
    "compare",
    "complexity",
    "count_events",
    "dashboard_metrics",
    "define_funnel",
    "delete_funnel",
    "detect_patterns",
    "efficiency",
    "feature_usage",
    "funnel_report",
    "get_funnel",
    "list_funnels",
    "list_sessions",
    "loop_performance_stats",
    "property_stats",
    "rebuild_summaries",
    "refresh_dashboard_metrics",
    "retention_cohorts",
    "run_retention",
    "run_sql",
    "search_events",
    "summary_projections",
    "token_usage_report",
    "tool_usage",
    "trend",
    "two_proportion_p_value",
    "user_activity",
    "wilson_interval",
]
