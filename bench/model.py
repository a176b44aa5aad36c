"""Per-event cost of build + validate + sanitize + encode to JSON (issue: foundation).

Three competitors, interleaved in one run, medians of repeats of the process's CPU time
(a shared machine's other load then counts for none of them):

* tachimeter: ``AnalyticsEvent`` (msgspec), ``prepare_event`` (the pipeline's
  ``validate_event`` then ``Scrubber.sanitize_event``, in one pass for the common event),
  ``encode_event``;
* pydantic v2: an equivalent model with validators, the same scrubber applied to its
  strings, ``model_dump_json``;
* dataclass + stdlib json: a dataclass, the same hand-written checks, the same scrubber,
  ``json.dumps``.

The competitors do the same work: the same id and timestamp source (a UUIDv7 and the
timestamp from one ``time.time_ns()``), and the checks ``validate_event`` makes of such
an event: timestamp not beyond the clock skew (an old one warns), finite numbers,
string keys, strings and ids within ``max_string_length``, nesting within
``max_property_depth``, data and metadata within ``max_event_bytes`` (the same upper
bound of the encoded size), and the category matching the event type (a warning).

Every competitor builds the same typical agent event: a usage event with a name, five
properties (one holding a secret), a user id, a session id and metadata.

Two tables. In the first, every event repeats the same property strings, as telemetry
mostly does; the scrubber's cache of scrubbed strings then serves all of them. In the
second, the secret-bearing string is new in every event (it carries a counter), so every
competitor pays the full scan of that string: the cost of text seen for the first time.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import itertools
import json
import math
import time
import uuid
from collections.abc import Callable
from typing import Annotated, Any

import pydantic

from bench.harness import compare, print_table, ratios, write_results
from tachimeter.model import AnalyticsEvent, EventMetadata, EventType, encode_event
from tachimeter.model.ids import uuid7_from_ns
from tachimeter.model.timestamps import from_ns
from tachimeter.model.validation import DEFAULT_LIMITS
from tachimeter.privacy import Scrubber, prepare_event

SECRET = "sk-" + "Zx9" * 16
PROPS = {
    "feature": "search",
    "query": f"failing call with key {SECRET}",
    "results": 12,
    "latency_ms": 83.5,
    "cached": False,
}
METADATA = EventMetadata(app_version="1.2.3", os="linux", arch="x86_64", locale="en_US.UTF-8",
                         timezone_offset=0)  # fmt: skip
SCRUBBER = Scrubber()
_serial = itertools.count()


def _same_props() -> dict[str, Any]:
    return dict(PROPS)


def _fresh_props() -> dict[str, Any]:
    props = dict(PROPS)
    props["query"] = f"failing call {next(_serial)} with key {SECRET}"
    return props


def tachimeter_event(n: int, props: Callable[[], dict[str, Any]] = _same_props) -> None:
    for _ in range(n):
        ns = time.time_ns()
        kind = EventType.FEATURE_USED
        event = AnalyticsEvent(
            id=uuid7_from_ns(ns),
            category=kind.category(),
            event_type=kind,
            timestamp=from_ns(ns),
            session_id="s-1",
            data=props(),
            metadata=METADATA,
            user_id="user-42",
        )
        prepared, result = prepare_event(event, SCRUBBER)
        if result is None or result.valid:
            encode_event(prepared)


# The checks validate_event makes, written once for both competitors.
LIMITS = DEFAULT_LIMITS
CATEGORY_OF = {kind.value: kind.category().value for kind in EventType}
MAX_STRING = LIMITS.max_string_length
WARNINGS: list[str] = []  # what validate_event would report as warnings


def check_timestamp(value: dt.datetime) -> None:
    ahead = value.timestamp() - time.time()
    if ahead > LIMITS.clock_skew_seconds:
        raise ValueError("timestamp is in the future")
    if -ahead > LIMITS.max_age_days_warning * 86_400:
        WARNINGS.append("event is old")


def check_category(category: str, event_type: str) -> None:
    if CATEGORY_OF.get(event_type) != category:
        WARNINGS.append("category differs from the event type's")


def data_size(value: Any, depth: int = 0) -> int:
    """An upper bound of the JSON size of ``value`` (as validate_event estimates it);
    raises ValueError where validate_event finds an error."""
    kind = type(value)
    if kind is str:
        if len(value) > MAX_STRING:
            raise ValueError("string longer than max_string_length")
        return 6 * len(value) + 6
    if kind is float:
        if not math.isfinite(value):
            raise ValueError("not a finite number")
        return 30
    if kind is int or kind is bool or value is None:
        return 26
    if kind is dict or kind is list:
        if depth >= LIMITS.max_property_depth:
            raise ValueError("nested deeper than max_property_depth")
        size = 2
        if kind is dict:
            for key, item in value.items():
                if type(key) is not str:
                    raise ValueError("keys must be strings")
                size += 6 * len(key) + data_size(item, depth + 1)
        else:
            for item in value:
                size += data_size(item, depth + 1)
        return size
    raise ValueError("not a JSON value")


class PydanticMetadata(pydantic.BaseModel):
    app_version: str | None = None
    os: str | None = None
    arch: str | None = None
    locale: str | None = None
    timezone_offset: int | None = None


BoundedStr = Annotated[str, pydantic.Field(max_length=MAX_STRING)]


class PydanticEvent(pydantic.BaseModel):
    id: uuid.UUID
    category: str
    event_type: str
    timestamp: dt.datetime
    session_id: BoundedStr | None
    priority: str = "normal"
    data: dict[str, Any]
    metadata: PydanticMetadata
    user_id: BoundedStr | None

    @pydantic.field_validator("timestamp")
    @classmethod
    def recent(cls, value: dt.datetime) -> dt.datetime:
        check_timestamp(value)
        return value

    @pydantic.field_validator("data")
    @classmethod
    def json_data(cls, value: dict[str, Any]) -> dict[str, Any]:
        if data_size(value) + PYDANTIC_METADATA_BYTES > LIMITS.max_event_bytes:
            raise ValueError("data and metadata exceed max_event_bytes")
        return value

    @pydantic.model_validator(mode="after")
    def category_matches(self) -> PydanticEvent:
        check_category(self.category, self.event_type)
        return self


PYDANTIC_METADATA = PydanticMetadata(
    app_version="1.2.3", os="linux", arch="x86_64", locale="en_US.UTF-8", timezone_offset=0
)
PYDANTIC_METADATA_BYTES = len(PYDANTIC_METADATA.model_dump_json())


def pydantic_event(n: int, props: Callable[[], dict[str, Any]] = _same_props) -> None:
    for _ in range(n):
        ns = time.time_ns()
        event = PydanticEvent(
            id=uuid7_from_ns(ns),
            category="usage",
            event_type="feature_used",
            timestamp=from_ns(ns),
            session_id="s-1",
            data=SCRUBBER.scrub_value(props()),
            metadata=PYDANTIC_METADATA,
            user_id="user-42",
        )
        event.model_dump_json()


@dataclasses.dataclass(frozen=True, slots=True)
class DataclassEvent:
    id: str
    category: str
    event_type: str
    timestamp: str
    session_id: str | None
    data: dict[str, Any]
    metadata: dict[str, Any]
    user_id: str | None
    priority: str = "normal"


DC_METADATA = {"app_version": "1.2.3", "os": "linux", "arch": "x86_64", "locale": "en_US.UTF-8",
               "timezone_offset": 0}  # fmt: skip
DC_METADATA_BYTES = len(json.dumps(DC_METADATA))


def dataclass_event(n: int, props: Callable[[], dict[str, Any]] = _same_props) -> None:
    for _ in range(n):
        ns = time.time_ns()
        when = from_ns(ns)
        check_timestamp(when)
        data = props()
        if data_size(data) + DC_METADATA_BYTES > LIMITS.max_event_bytes:
            raise ValueError("data and metadata exceed max_event_bytes")
        for value in ("s-1", "user-42"):
            if len(value) > MAX_STRING:
                raise ValueError("id longer than max_string_length")
        check_category("usage", "feature_used")
        event = DataclassEvent(
            id=str(uuid7_from_ns(ns)),
            category="usage",
            event_type="feature_used",
            timestamp=when.isoformat(),
            session_id="s-1",
            data=SCRUBBER.scrub_value(data),
            metadata=DC_METADATA,
            user_id="user-42",
        )
        json.dumps(dataclasses.asdict(event))


def _table(title: str, results: dict[str, dict[str, float]]) -> dict[str, float]:
    rel = ratios(results, "tachimeter")
    rows = [
        (name, f"{r['median_ns'] / 1000:.2f}", f"{r['p25_ns'] / 1000:.2f}",
         f"{r['p75_ns'] / 1000:.2f}", f"{rel[name]:.2f}x")
        for name, r in results.items()
    ]  # fmt: skip
    print_table(title, rows, ("case", "median us", "p25 us", "p75 us", "vs tachimeter"))
    return rel


def main() -> None:
    cases: dict[str, Callable[..., None]] = {
        "tachimeter": tachimeter_event,
        "pydantic_v2": pydantic_event,
        "dataclass_json": dataclass_event,
    }
    results = compare(cases, n=2_000, repeats=21, clock=time.process_time_ns)
    rel = _table(
        "build + validate + sanitize + encode JSON, per event (medians of 21 interleaved runs)",
        results,
    )
    speedup = results["pydantic_v2"]["median_ns"] / results["tachimeter"]["median_ns"]
    print(f"tachimeter is {speedup:.2f}x faster than pydantic v2 (goal: >= 3x)")
    fresh_cases = {name: functools.partial(run, props=_fresh_props) for name, run in cases.items()}
    fresh = compare(fresh_cases, n=1_000, repeats=15, clock=time.process_time_ns)
    fresh_rel = _table("the same with a new secret-bearing string in every event", fresh)
    fresh_speedup = fresh["pydantic_v2"]["median_ns"] / fresh["tachimeter"]["median_ns"]
    print(f"tachimeter is {fresh_speedup:.2f}x faster than pydantic v2 on new strings")
    path = write_results(
        "model",
        {
            "unit": "ns per event",
            "results": results,
            "ratio_to_tachimeter": rel,
            "speedup_vs_pydantic": speedup,
            "fresh_strings": {
                "results": fresh,
                "ratio_to_tachimeter": fresh_rel,
                "speedup_vs_pydantic": fresh_speedup,
            },
            "goal": "tachimeter at least 3x faster than the pydantic path",
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
