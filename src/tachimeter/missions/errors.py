"""Errors of the mission tracker (spec 414's ``MissionTrackingError`` variants).

``InvalidStateTransition``, the third variant, lives in :mod:`tachimeter.errors` with the
rest of the hierarchy; these two derive from the same root.
"""

from __future__ import annotations

from tachimeter.errors import TachimeterError

__all__ = ["CollectionFailed", "MissionNotFound"]


class MissionNotFound(TachimeterError, LookupError):
    """No active mission has this id (never started, or already finished).

    >>> MissionNotFound("m-1").mission_id
    'm-1'
    """

    def __init__(self, mission_id: str) -> None:
        super().__init__(
            f"no active mission {mission_id!r}: start it with start_mission() first; "
            "a finished mission cannot be changed"
        )
        self.mission_id = mission_id


class CollectionFailed(TachimeterError):
    """The collector refused a mission event (only in strict mode, when its queue is
    full); the tracker's own state was updated before the refusal.

    >>> isinstance(CollectionFailed("tool_invoked for mission m-1: queue full"), TachimeterError)
    True
    """
