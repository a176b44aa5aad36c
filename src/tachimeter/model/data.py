"""Event data payloads and metadata (spec 406).

``EventData`` is one of:

==================  =================================  ===========
variant             Python value                       data_kind
==================  =================================  ===========
Empty               ``None``                           ``empty``
KeyValue            ``dict[str, Any]``                 ``key_value``
Usage               :class:`UsageEventData`            ``usage``
Performance         :class:`PerformanceEventData`      ``performance``
Error               :class:`ErrorEventData`            ``error``
Business            :class:`BusinessEventData`         ``business``
Custom              :class:`CustomData`                ``custom``
==================  =================================  ===========

On the wire the payload is untagged, as in spec 406 (``UsageEventData.extra`` and
``EventMetadata.custom`` are flattened into their parent object). Our encoder adds a
``data_kind`` beside it so our own round trips are exact; input without it (from a
spec-shaped producer) is classified by shape, see ``tachimeter.model.codec``.
"""

from __future__ import annotations

import enum
import functools
import os
import sys
import time
from typing import Any, Final, Literal

import msgspec

__all__ = [
    "DATA_KINDS",
    "BusinessEventData",
    "BusinessMetricType",
    "CustomData",
    "DataKind",
    "ErrorEventData",
    "ErrorSeverity",
    "EventData",
    "EventMetadata",
    "PerformanceEventData",
    "UsageEventData",
    "data_kind",
    "library_version",
]


class ErrorSeverity(enum.Enum):
    """Severity of an error event."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


class BusinessMetricType(enum.Enum):
    """Kinds of business metric (spec 406)."""

    INPUT_TOKENS = "input_tokens"
    OUTPUT_TOKENS = "output_tokens"
    TOTAL_TOKENS = "total_tokens"
    COST_USD = "cost_usd"
    COST_CREDITS = "cost_credits"
    QUOTA_USED = "quota_used"
    QUOTA_REMAINING = "quota_remaining"


class UsageEventData(msgspec.Struct, frozen=True, kw_only=True):
    """What a user or agent did: ``feature`` / ``action`` / ``target``.

    >>> UsageEventData(feature="search", action="query", success=True, extra={"hits": 3}).extra
    {'hits': 3}
    """

    feature: str
    action: str
    success: bool = True
    target: str | None = None
    duration_ms: int | None = None
    extra: dict[str, Any] = {}


class PerformanceEventData(msgspec.Struct, frozen=True, kw_only=True):
    """One performance measurement with dimensional tags.

    >>> PerformanceEventData(metric="latency", value=12.5, unit="ms").unit
    'ms'
    """

    metric: str
    value: int | float  # a number; an integer stays one through storage and the wire
    unit: str
    tags: dict[str, str] = {}


class ErrorEventData(msgspec.Struct, frozen=True, kw_only=True):
    """Details of an error; ``message`` and ``stack_trace`` are scrubbed before storage.

    >>> ErrorEventData(code="E1", message="boom", severity=ErrorSeverity.ERROR,
    ...                component="tools").recovered
    False
    """

    code: str
    message: str
    severity: ErrorSeverity
    component: str
    stack_trace: str | None = None
    recovered: bool = False


class BusinessEventData(msgspec.Struct, frozen=True, kw_only=True):
    """A business figure: tokens, cost or quota.

    >>> BusinessEventData(metric_type=BusinessMetricType.TOTAL_TOKENS, value=1500,
    ...                   unit="tokens", model="claude-sonnet-4").value
    1500
    """

    metric_type: BusinessMetricType
    value: int | float  # a number; an integer (tokens) stays one through storage and the wire
    unit: str
    backend: str | None = None
    model: str | None = None


class CustomData(msgspec.Struct, frozen=True):
    """Any JSON value from a plugin (spec 406's ``Custom(serde_json::Value)``).

    >>> CustomData([1, 2, 3]).value
    [1, 2, 3]
    """

    value: Any


EventData = (
    None
    | dict[str, Any]
    | UsageEventData
    | PerformanceEventData
    | ErrorEventData
    | BusinessEventData
    | CustomData
)
"""An event's payload: one of the variants in the module docstring."""

DataKind = Literal["empty", "key_value", "usage", "performance", "error", "business", "custom"]
DATA_KINDS: Final[tuple[DataKind, ...]] = (
    "empty",
    "key_value",
    "usage",
    "performance",
    "error",
    "business",
    "custom",
)
_KIND_OF_TYPE: Final[dict[type, DataKind]] = {
    type(None): "empty",
    dict: "key_value",
    UsageEventData: "usage",
    PerformanceEventData: "performance",
    ErrorEventData: "error",
    BusinessEventData: "business",
    CustomData: "custom",
}


def data_kind(data: object) -> DataKind:
    """The variant name of an ``EventData`` value; raises ``TypeError`` for anything else."""
    kind = _KIND_OF_TYPE.get(type(data))
    if kind is None:
        raise TypeError(
            f"event data must be None, a dict or one of the *EventData types, "
            f"got {type(data).__name__}"
        )
    return kind


class EventMetadata(msgspec.Struct, frozen=True, kw_only=True):
    """Where an event came from. ``custom`` is flattened beside the named fields on the wire.

    >>> EventMetadata(os="linux").with_custom("region", "eu").custom
    {'region': 'eu'}
    """

    app_version: str | None = None
    os: str | None = None
    arch: str | None = None
    locale: str | None = None
    timezone_offset: int | None = None
    custom: dict[str, Any] = {}

    @classmethod
    def from_environment(cls, app_version: str | None = None) -> EventMetadata:
        """Metadata of this process: app version, OS, architecture, locale, UTC offset.

        ``app_version`` defaults to ``$TACHIMETER_APP_VERSION``, else Tachimeter's own
        version. The timezone offset is the real local offset in minutes, taken now
        (it changes with daylight saving time).
        """
        os_name, arch, env_locale = _static_environment()
        version = app_version or os.environ.get("TACHIMETER_APP_VERSION") or library_version()
        return cls(
            app_version=version,
            os=os_name,
            arch=arch,
            locale=env_locale,
            timezone_offset=time.localtime().tm_gmtoff // 60,
        )

    def with_custom(self, key: str, value: Any) -> EventMetadata:
        """A copy with ``custom[key] = value``."""
        return msgspec.structs.replace(self, custom={**self.custom, key: value})


@functools.cache
def _static_environment() -> tuple[str, str, str | None]:
    import locale  # deferred: keeps `import tachimeter` cheap
    import platform

    env_locale = os.environ.get("LC_ALL") or os.environ.get("LANG")
    if not env_locale:
        env_locale = locale.getlocale()[0]
    os_name = {"darwin": "macos", "win32": "windows"}.get(sys.platform, sys.platform)
    if os_name.startswith("linux"):
        os_name = "linux"
    return os_name, platform.machine().lower() or "unknown", env_locale or None


@functools.cache
def library_version() -> str:
    """Tachimeter's installed version ("0+unknown" when run from a source tree)."""
    import importlib.metadata  # deferred: about 40 ms of imports

    try:
        return importlib.metadata.version("tachimeter")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"
