"""Per-event cost of build + validate + sanitize + encode to JSON (issue: foundation).

Three competitors, interleaved in one run, medians of repeats:

* tachimeter: ``AnalyticsEvent`` (msgspec), ``validate_event``, ``Scrubber.sanitize_event``,
  ``encode_event``;
* pydantic v2: an equivalent model with field validators, the same scrubber applied to
  its strings, ``model_dump_json``;
* dataclass + stdlib json: a dataclass, hand-written checks, the same scrubber,
  ``json.dumps``.

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
from typing import Any

import pydantic

from bench.harness import compare, print_table, ratios, write_results
from tachimeter.model import AnalyticsEvent, EventMetadata, EventType, encode_event, validate_event
from tachimeter.model.ids import uuid7_from_ns
from tachimeter.model.timestamps import from_ns
from tachimeter.privacy import Scrubber

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
        event = AnalyticsEvent(
            id=uuid7_from_ns(ns),
            category=EventType.FEATURE_USED.category(),
            event_type=EventType.FEATURE_USED,
            timestamp=from_ns(ns),
            session_id="s-1",
            data=props(),
            metadata=METADATA,
            user_id="user-42",
        )
        if validate_event(event).valid:
            encode_event(SCRUBBER.sanitize_event(event))


class PydanticMetadata(pydantic.BaseModel):
    app_version: str | None = None
    os: str | None = None
    arch: str | None = None
    locale: str | None = None
    timezone_offset: int | None = None


class PydanticEvent(pydantic.BaseModel):
    id: uuid.UUID
    category: str
    event_type: str
    timestamp: dt.datetime
    session_id: str | None
    priority: str = "normal"
    data: dict[str, Any]
    metadata: PydanticMetadata
    user_id: str | None

    @pydantic.field_validator("timestamp")
    @classmethod
    def not_in_future(cls, value: dt.datetime) -> dt.datetime:
        if value - dt.datetime.now(dt.UTC) > dt.timedelta(seconds=5):
            raise ValueError("timestamp is in the future")
        return value

    @pydantic.field_validator("data")
    @classmethod
    def finite_numbers(cls, value: dict[str, Any]) -> dict[str, Any]:
        for item in value.values():
            if isinstance(item, float) and not math.isfinite(item):
                raise ValueError("not a finite number")
        return value


PYDANTIC_METADATA = PydanticMetadata(**dataclasses.asdict(METADATA) if False else {
    "app_version": "1.2.3", "os": "linux", "arch": "x86_64", "locale": "en_US.UTF-8",
    "timezone_offset": 0})  # fmt: skip


def pydantic_event(n: int, props: Callable[[], dict[str, Any]] = _same_props) -> None:
    for _ in range(n):
        event = PydanticEvent(
            id=uuid.uuid4(),
            category="usage",
            event_type="feature_used",
            timestamp=dt.datetime.now(dt.UTC),
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


def dataclass_event(n: int, props: Callable[[], dict[str, Any]] = _same_props) -> None:
    for _ in range(n):
        now = dt.datetime.now(dt.UTC)
        data = props()
        for item in data.values():
            if isinstance(item, float) and not math.isfinite(item):
                raise ValueError("not a finite number")
        event = DataclassEvent(
            id=str(uuid.uuid4()),
            category="usage",
            event_type="feature_used",
            timestamp=now.isoformat(),
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
    results = compare(cases, n=2_000, repeats=21)
    rel = _table(
        "build + validate + sanitize + encode JSON, per event (medians of 21 interleaved runs)",
        results,
    )
    speedup = results["pydantic_v2"]["median_ns"] / results["tachimeter"]["median_ns"]
    print(f"tachimeter is {speedup:.2f}x faster than pydantic v2 (goal: >= 3x)")
    fresh_cases = {name: functools.partial(run, props=_fresh_props) for name, run in cases.items()}
    fresh = compare(fresh_cases, n=1_000, repeats=15)
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
