"""The mission lifecycle: statuses and the transitions between them (spec 414).

Allowed transitions (row: from, column: to; the cell names the tracker method):

=============  ==========  ===============  =========  ==========  ========  ==========  ===========
from \\ to      planning    executing        paused     completed   failed    cancelled   abandoned
=============  ==========  ===============  =========  ==========  ========  ==========  ===========
created        plan        start            .          .           fail      cancel      abandon
planning       .           start            pause      .           fail      cancel      abandon
executing      plan        retry            pause      complete    fail      cancel      abandon
paused         resume      resume, retry    .          .           fail      cancel      abandon
completed      .           .                .          .           .         .           .
failed         .           .                .          .           .         .           .
cancelled      .           .                .          .           .         .           .
abandoned      .           .                .          .           .         .           .
=============  ==========  ===============  =========  ==========  ========  ==========  ===========

* ``plan`` from executing is re-planning; ``resume`` returns to the status the mission
  was paused from (planning or executing).
* ``retry`` (executing -> executing, paused -> executing) is a new attempt after a
  recoverable error and increments ``retry_count``. A failed mission is final: retrying
  a whole mission is a new mission.
* Completed, failed, cancelled and abandoned are terminal: nothing leaves them.
  ``abandoned`` is never chosen by user code; the store marks it on missions a crashed
  process left active (see :func:`tachimeter.missions.projection.abandon_stale_missions`).
* A mission completes only from executing: one that never started did no work to
  complete (cancel it instead).

Any other move raises :class:`~tachimeter.errors.InvalidStateTransition` naming both
statuses.

>>> check_transition(MissionStatus.CREATED, MissionStatus.EXECUTING)
>>> try:
...     check_transition(MissionStatus.COMPLETED, MissionStatus.EXECUTING)
... except InvalidStateTransition as exc:
...     print(exc)
invalid mission transition: completed -> executing is not allowed
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from tachimeter.errors import InvalidStateTransition

__all__ = [
    "ACTIVE_STATUSES",
    "TERMINAL_STATUSES",
    "TRANSITIONS",
    "MissionStatus",
    "allowed_transitions",
    "check_transition",
]


class MissionStatus(enum.Enum):
    """Where a mission is in its lifecycle; serialized as its snake_case value.

    >>> MissionStatus("completed").is_terminal
    True
    """

    CREATED = "created"
    PLANNING = "planning"
    EXECUTING = "executing"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ABANDONED = "abandoned"

    # Members are singletons: identity hashing is exact and avoids Enum's Python __hash__.
    __hash__ = object.__hash__

    @property
    def is_terminal(self) -> bool:
        """True for completed, failed, cancelled and abandoned."""
        return self in TERMINAL_STATUSES


_S = MissionStatus
TERMINAL_STATUSES: Final = frozenset({_S.COMPLETED, _S.FAILED, _S.CANCELLED, _S.ABANDONED})
ACTIVE_STATUSES: Final = frozenset(set(_S) - TERMINAL_STATUSES)
_ENDINGS: Final = frozenset({_S.FAILED, _S.CANCELLED, _S.ABANDONED})

TRANSITIONS: Final[Mapping[MissionStatus, frozenset[MissionStatus]]] = MappingProxyType(
    {
        _S.CREATED: frozenset({_S.PLANNING, _S.EXECUTING}) | _ENDINGS,
        _S.PLANNING: frozenset({_S.EXECUTING, _S.PAUSED}) | _ENDINGS,
        _S.EXECUTING: frozenset({_S.PLANNING, _S.EXECUTING, _S.PAUSED, _S.COMPLETED}) | _ENDINGS,
        _S.PAUSED: frozenset({_S.PLANNING, _S.EXECUTING}) | _ENDINGS,
        _S.COMPLETED: frozenset(),
        _S.FAILED: frozenset(),
        _S.CANCELLED: frozenset(),
        _S.ABANDONED: frozenset(),
    }
)
"""For each status, the statuses it may move to (the table in the module docstring)."""


def allowed_transitions(status: MissionStatus) -> frozenset[MissionStatus]:
    """The statuses ``status`` may move to."""
    return TRANSITIONS[status]


def check_transition(
    current: MissionStatus, target: MissionStatus, mission_id: str | None = None
) -> None:
    """Raise :class:`~tachimeter.errors.InvalidStateTransition` unless the move is allowed."""
    if target not in TRANSITIONS[current]:
        raise InvalidStateTransition(current.value, target.value, mission_id)
