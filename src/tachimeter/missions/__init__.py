"""Missions (spec 414): the lifecycle tracker, the ``mission()`` API, the store projection.

Users import the public names from ``tachimeter`` (``mission``, ``tool``,
``MissionTracker``, ``MissionStatus``, ...); the analysis of stored missions is in
``tachimeter.analyze.missions``.
"""

from tachimeter.missions.api import (
    Mission,
    ToolCall,
    current_mission,
    default_tracker,
    mission,
    tool,
)
from tachimeter.missions.errors import CollectionFailed, MissionNotFound
from tachimeter.missions.lifecycle import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    TRANSITIONS,
    MissionStatus,
    allowed_transitions,
    check_transition,
)
from tachimeter.missions.projection import (
    DEFAULT_ABANDON_AFTER,
    MISSION_TABLES,
    MissionProjection,
    abandon_stale_missions,
    delete_missions,
    read_mission,
)
from tachimeter.missions.records import (
    PERCENTILE_METHOD,
    MissionAnalytics,
    MissionError,
    MissionMetrics,
    ToolUsage,
)
from tachimeter.missions.tracker import DEFAULT_RECENT_MISSIONS, MissionTracker

__all__ = [
    "ACTIVE_STATUSES",
    "DEFAULT_ABANDON_AFTER",
    "DEFAULT_RECENT_MISSIONS",
    "MISSION_TABLES",
    "PERCENTILE_METHOD",
    "TERMINAL_STATUSES",
    "TRANSITIONS",
    "CollectionFailed",
    "Mission",
    "MissionAnalytics",
    "MissionError",
    "MissionMetrics",
    "MissionNotFound",
    "MissionProjection",
    "MissionStatus",
    "MissionTracker",
    "ToolCall",
    "ToolUsage",
    "abandon_stale_missions",
    "allowed_transitions",
    "check_transition",
    "current_mission",
    "default_tracker",
    "delete_missions",
    "mission",
    "read_mission",
    "tool",
]
