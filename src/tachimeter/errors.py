"""The one exception hierarchy of Tachimeter.

Every error raised by the library derives from :class:`TachimeterError`. Messages say
what was wrong, where, and how to fix it, for example
``"sampling.rate for 'performance' must be in [0, 1], got 1.5"``.
"""

from __future__ import annotations

__all__ = [
    "CollectorError",
    "ConfigError",
    "InvalidStateTransition",
    "QueryError",
    "SinkError",
    "StoreError",
    "TachimeterError",
    "ValidationError",
]


class TachimeterError(Exception):
    """Base class of every error Tachimeter raises."""


class ConfigError(TachimeterError, ValueError):
    """Configuration is invalid: raised at construction, never at record time."""


class ValidationError(TachimeterError, ValueError):
    """An event, a batch or a decoded payload failed validation.

    ``path`` is the location of the first bad field (``$.data.feature``) when known.
    """

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class StoreError(TachimeterError):
    """The store could not read or write (disk full, read-only, corrupt, newer schema)."""


class QueryError(TachimeterError):
    """A query was malformed, forbidden (custom SQL that writes) or timed out.

    ``parameter`` names the query parameter at fault (``end``) when one is.
    """

    def __init__(self, message: str, parameter: str | None = None) -> None:
        super().__init__(message)
        self.parameter = parameter


class CollectorError(TachimeterError):
    """The collector refused an event (queue full in strict mode, shut down)."""


class SinkError(TachimeterError):
    """A sink failed to process or flush a batch."""


class InvalidStateTransition(TachimeterError):
    """A mission was asked to move between two states the lifecycle does not allow."""

    def __init__(self, from_state: str, to_state: str, mission_id: str | None = None) -> None:
        where = f" for mission {mission_id}" if mission_id else ""
        super().__init__(
            f"invalid mission transition{where}: {from_state} -> {to_state} is not allowed"
        )
        self.from_state = from_state
        self.to_state = to_state
        self.mission_id = mission_id
