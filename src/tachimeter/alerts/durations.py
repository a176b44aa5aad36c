"""Durations as alert rules write them: ``"90s"``, ``"5m"``, ``"1h30m"``, ``"7d"``, seconds.

Internal: the public constructors accept a ``datetime.timedelta``, a number of seconds
or this text; everything else works in float seconds.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Final, TypeAlias

from tachimeter.errors import ConfigError

__all__ = ["DurationLike", "format_duration", "parse_duration"]

DurationLike: TypeAlias = "dt.timedelta | float | int | str"
"""A duration: a ``timedelta``, seconds, or text such as ``"5m"`` or ``"1h30m"``."""

_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 604_800.0}
# Prometheus' duration syntax: one or more <number><unit>, largest unit first.
_DURATION: Final = re.compile(r"^(?:(\d+(?:\.\d+)?)(ms|s|m|h|d|w))+$")
_PART: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_HINT: Final = "write a number of seconds or text such as '90s', '5m', '1h30m', '7d'"


def parse_duration(value: object, where: str, *, allow_zero: bool = True) -> float:
    """Seconds in ``value``; ``ConfigError`` naming ``where`` if it is not a duration.

    >>> parse_duration("1h30m", "rules[0].for"), parse_duration(15, "interval")
    (5400.0, 15.0)
    >>> parse_duration("5 minutes", "rules[0].for")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tachimeter.errors.ConfigError: rules[0].for = '5 minutes' is not a duration; write ...
    """
    seconds: float
    if isinstance(value, dt.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        if text in ("0", "0s"):
            seconds = 0.0
        elif _DURATION.fullmatch(text):
            seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(text))
        else:
            raise ConfigError(f"{where} = {value!r} is not a duration; {_HINT}")
    else:
        raise ConfigError(f"{where} = {value!r} is not a duration; {_HINT}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(f"{where} = {value!r} must be a duration >= 0; {_HINT}")
    if not allow_zero and seconds == 0:
        raise ConfigError(f"{where} = {value!r} must be a duration > 0; {_HINT}")
    return seconds


def format_duration(seconds: float) -> str:
    """Seconds as the shortest text ``parse_duration`` reads back.

    >>> format_duration(5400), format_duration(0.5), format_duration(0)
    ('1h30m', '500ms', '0s')
    """
    if seconds <= 0:
        return "0s"
    ms = round(seconds * 1000)
    parts: list[str] = []
    for unit in ("w", "d", "h", "m", "s", "ms"):
        size = round(_UNITS[unit] * 1000)
        count, ms = divmod(ms, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
