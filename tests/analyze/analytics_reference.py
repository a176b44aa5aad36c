"""Independent recomputation of the analytics answers, in plain Python over raw rows.

Written separately from ``tachimeter.analyze`` and ``tachimeter.store.summaries`` (no
imports from them): stdlib ``json`` and ``datetime``, straightforward loops, no indexes,
no bisect. The tests compare every analytics answer with these functions.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

UTC = dt.UTC
MISSING = object()
COLUMNS = (
    "id",
    "event_type",
    "event_name",
    "timestamp",
    "session_id",
    "user_id",
    "properties",
    "context",
    "page_url",
    "referrer",
    "category",
    "priority",
    "mission_id",
    "received_at",
)


class Ev:
    """One raw row with parsed JSON and time."""

    __slots__ = (*COLUMNS, "_ctx", "props", "t")

    def __init__(self, row: Sequence[Any]) -> None:
        for name, value in zip(COLUMNS, row, strict=True):
            setattr(self, name, value)
        self.props = json.loads(row[6]) if row[6] is not None else None
        self._ctx: Any = MISSING
        self.t = dt.datetime.fromisoformat(row[3].replace("Z", "+00:00"))

    @property
    def ctx(self) -> Any:
        if self._ctx is MISSING:
            self._ctx = json.loads(self.context) if self.context else {}
        return self._ctx

    @property
    def key(self) -> tuple[dt.datetime, str]:
        return (self.t, self.id)


def load(rows: Iterable[Sequence[Any]]) -> list[Ev]:
    return [Ev(r) for r in rows]


# -- property predicates ---------------------------------------------------------------------


def value_at(props: Any, segments: Sequence[str | int]) -> Any:
    current = props
    for s in segments:
        if isinstance(s, int):
            if type(current) is not list or s >= len(current):
                return MISSING
            current = current[s]
        else:
            if type(current) is not dict or s not in current:
                return MISSING
            current = current[s]
    return current


def json_equal(stored: Any, wanted: Any) -> bool:
    if wanted is None:
        return stored is None
    if type(wanted) is bool:
        return type(stored) is bool and stored == wanted
    if type(wanted) in (int, float):
        return type(stored) in (int, float) and stored == wanted
    return type(stored) is str and stored == wanted


def matches(props: Any, segments: Sequence[str | int], op: str, value: Any) -> bool:
    v = value_at(props, segments)
    if op == "exists":
        return v is not MISSING
    if op == "not_exists":
        return v is MISSING
    if op == "eq":
        return v is not MISSING and json_equal(v, value)
    if op == "ne":
        return v is MISSING or not json_equal(v, value)
    if op == "in":
        return v is not MISSING and any(json_equal(v, x) for x in value)
    if op == "not_in":
        return v is MISSING or not any(json_equal(v, x) for x in value)
    if op == "contains":
        if type(v) is str and type(value) is str:
            return value in v
        if type(v) is list:
            return any(json_equal(x, value) for x in v)
        return False
    if type(v) not in (int, float):
        return False
    return {
        "gt": v > value,
        "gte": v >= value,
        "lt": v < value,
        "lte": v <= value,
    }[op]


# -- time buckets -----------------------------------------------------------------------------


def bucket_of(t: dt.datetime, interval: str) -> dt.datetime:
    if interval == "minute":
        return dt.datetime(t.year, t.month, t.day, t.hour, t.minute, tzinfo=UTC)
    if interval == "hour":
        return dt.datetime(t.year, t.month, t.day, t.hour, tzinfo=UTC)
    day = dt.datetime(t.year, t.month, t.day, tzinfo=UTC)
    if interval == "day":
        return day
    if interval == "week":
        iso_year, iso_week, _ = t.isocalendar()
        monday = dt.date.fromisocalendar(iso_year, iso_week, 1)
        return dt.datetime(monday.year, monday.month, monday.day, tzinfo=UTC)
    return dt.datetime(t.year, t.month, 1, tzinfo=UTC)


def all_buckets(start: dt.datetime, end: dt.datetime, interval: str) -> list[dt.datetime]:
    out = []
    current = bucket_of(start, interval)
    while current < end:
        out.append(current)
        # step well into the next bucket, then round down: month lengths differ
        step = {"minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400, "month": 32 * 86400}
        current = bucket_of(current + dt.timedelta(seconds=step[interval]), interval)
    return out


def percentile(values: list[float], q: float) -> float | None:
    """Type 7 (linear) percentile, computed the textbook way."""
    if not values:
        return None
    xs = sorted(values)
    h = (len(xs) - 1) * q
    lower = xs[math.floor(h)]
    upper = xs[math.ceil(h)]
    return lower + (h - math.floor(h)) * (upper - lower)


def measure_of(events: list[Ev], measure: str, prop: Sequence[str | int] | None) -> float | None:
    if measure == "count":
        return float(len(events))
    if measure == "unique_users":
        return float(len({e.user_id for e in events if e.user_id is not None}))
    if measure == "unique_sessions":
        return float(len({e.session_id for e in events if e.session_id is not None}))
    assert prop is not None
    nums = []
    for e in events:
        v = value_at(e.props, prop)
        if type(v) in (int, float):
            nums.append(float(v))
    if measure == "sum":
        return math.fsum(nums)
    if not nums:
        return None
    if measure == "avg":
        return math.fsum(nums) / len(nums)
    if measure == "min":
        return min(nums)
    if measure == "max":
        return max(nums)
    return percentile(nums, float(measure[1:]) / 100)


def select(
    events: Iterable[Ev],
    *,
    name: str | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    filters: Sequence[tuple[Sequence[str | int], str, Any]] = (),
) -> list[Ev]:
    out = []
    for e in events:
        if name is not None and e.event_name != name:
            continue
        if start is not None and e.t < start:
            continue
        if end is not None and e.t >= end:
            continue
        if all(matches(e.props, seg, op, val) for seg, op, val in filters):
            out.append(e)
    return out


def breakdown_label(props: Any, segments: Sequence[str | int]) -> str | None:
    v = value_at(props, segments)
    if v is MISSING or v is None:
        return None
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, dict | list):
        return json.dumps(v, separators=(",", ":"), ensure_ascii=False)
    return v if isinstance(v, str) else str(v)


# -- funnels --------------------------------------------------------------------------------


def funnel_attempts(
    events: list[Ev],
    steps: Sequence[tuple[str, Sequence[tuple[Sequence[str | int], str, Any]]]],
    window: dt.timedelta,
    strict: bool,
    exclusions: Sequence[tuple[str, Sequence[Any], int, int]] = (),
) -> list[list[Ev]]:
    """For one user's events (any order), every entry's matched steps (excluded dropped)."""
    evs = sorted(events, key=lambda e: e.key)

    def is_step(e: Ev, k: int) -> bool:
        name, flt = steps[k]
        return e.event_name == name and all(matches(e.props, s, o, v) for s, o, v in flt)

    out = []
    for i, first in enumerate(evs):
        if not is_step(first, 0):
            continue
        deadline = first.t + window
        reached = [i]
        for k in range(1, len(steps)):
            found = None
            j = reached[-1] + 1
            while j < len(evs) and evs[j].t <= deadline:
                if is_step(evs[j], k):
                    found = j
                    break
                if strict:
                    break
                j += 1
            if found is None:
                break
            reached.append(found)
        excluded = False
        for name, flt, frm, to in exclusions:
            if len(reached) <= frm:
                continue
            lo = reached[frm]
            for j in range(lo + 1, len(evs)):
                if len(reached) > to and j >= reached[to]:
                    break
                if len(reached) <= to and evs[j].t > deadline:
                    break
                e = evs[j]
                if e.event_name == name and all(matches(e.props, s, o, v) for s, o, v in flt):
                    excluded = True
        if not excluded:
            out.append([evs[j] for j in reached])
    return out


def funnel(
    events: Iterable[Ev],
    steps: Sequence[tuple[str, Sequence[Any]]],
    window: dt.timedelta,
    start: dt.datetime,
    end: dt.datetime,
    strict: bool = False,
    exclusions: Sequence[tuple[str, Sequence[Any], int, int]] = (),
) -> dict[str, Any]:
    """Per step: users entered and the sorted seconds to the next step; completion times."""
    per_user: dict[str, list[Ev]] = defaultdict(list)
    for e in events:
        if e.user_id is not None:
            per_user[e.user_id].append(e)
    entered = [0] * len(steps)
    gaps: list[list[float]] = [[] for _ in steps]
    totals: list[float] = []
    for evs in per_user.values():
        attempts = [
            a
            for a in funnel_attempts(evs, steps, window, strict, exclusions)
            if start <= a[0].t < end
        ]
        if not attempts:
            continue
        best = sorted(attempts, key=lambda a: (-len(a), [e.t for e in a]))[0]
        for k in range(len(best)):
            entered[k] += 1
            if k + 1 < len(best):
                gaps[k].append((best[k + 1].t - best[k].t).total_seconds())
        if len(best) == len(steps):
            totals.append((best[-1].t - best[0].t).total_seconds())
    return {"entered": entered, "gaps": gaps, "totals": totals}


# -- sessions and daily summaries ------------------------------------------------------------

GAP = dt.timedelta(minutes=30)
_CTX = ("device_type", "browser", "os", "country", "city")


def _session_row(sid: str, evs: list[Ev]) -> tuple[Any, ...]:
    evs = sorted(evs, key=lambda e: e.key)

    def first(values: Iterable[Any]) -> Any:
        return next((v for v in values if v is not None), None)

    def ctx(e: Ev, field: str) -> Any:
        v = e.ctx.get(field) if isinstance(e.ctx, dict) else None
        if field == "device_type" and v is None and isinstance(e.ctx, dict):
            v = e.ctx.get("device")
        return v if isinstance(v, str) else None

    return (
        sid,
        first(e.user_id for e in evs),
        evs[0].timestamp,
        evs[-1].timestamp,
        int((evs[-1].t - evs[0].t) / dt.timedelta(milliseconds=1)),
        len(evs),
        *(first(ctx(e, f) for e in evs) for f in _CTX),
        first(e.referrer for e in evs),
        first(e.page_url for e in evs),
        first(e.page_url for e in reversed(evs)),
    )


def sessions(events: Iterable[Ev]) -> dict[str, tuple[Any, ...]]:
    given: dict[str, list[Ev]] = defaultdict(list)
    loose: dict[str, list[Ev]] = defaultdict(list)
    for e in events:
        if e.session_id is not None:
            given[e.session_id].append(e)
        elif e.user_id is not None:
            loose[e.user_id].append(e)
    out = {sid: _session_row(sid, evs) for sid, evs in given.items()}
    for evs in loose.values():
        evs.sort(key=lambda e: e.key)
        group: list[Ev] = []
        for e in evs:
            if group and e.t - group[-1].t > GAP:
                sid = "derived:" + group[0].id
                out[sid] = _session_row(sid, group)
                group = []
            group.append(e)
        if group:
            sid = "derived:" + group[0].id
            out[sid] = _session_row(sid, group)
    return out


def user_activity(events: Iterable[Ev]) -> dict[tuple[str, str], tuple[Any, ...]]:
    days: dict[tuple[str, str], list[Ev]] = defaultdict(list)
    for e in events:
        if e.user_id is not None:
            days[(e.user_id, e.timestamp[:10])].append(e)
    out = {}
    for (user, date), evs in days.items():
        evs.sort(key=lambda e: e.t)
        spans: dict[str, list[dt.datetime]] = defaultdict(list)
        segments: list[list[dt.datetime]] = []
        for e in evs:
            if e.session_id is not None:
                spans[e.session_id].append(e.t)
            elif segments and e.t - segments[-1][-1] <= GAP:
                segments[-1].append(e.t)
            else:
                segments.append([e.t])
        duration = sum(
            int((max(ts) - min(ts)) / dt.timedelta(milliseconds=1))
            for ts in [*spans.values(), *segments]
        )
        out[(user, date)] = (
            len(spans) + len(segments),
            len(evs),
            duration,
            evs[0].timestamp,
            evs[-1].timestamp,
            dict(Counter(e.event_name for e in evs)),
        )
    return out


def feature_usage(events: Iterable[Ev]) -> dict[tuple[str, str], tuple[Any, ...]]:
    groups: dict[tuple[str, str], list[Ev]] = defaultdict(list)
    for e in events:
        if isinstance(e.props, dict) and isinstance(e.props.get("feature"), str):
            groups[(e.props["feature"], e.timestamp[:10])].append(e)
    out = {}
    for key, evs in groups.items():
        durations = [
            e.props["duration_ms"]
            for e in evs
            if type(e.props.get("duration_ms")) in (int, float) and e.props["duration_ms"] >= 0
        ]
        outcomes = [e.props["success"] for e in evs if type(e.props.get("success")) is bool]
        out[key] = (
            len(evs),
            len({e.user_id for e in evs if e.user_id is not None}),
            sum(durations) / len(durations) if durations else None,
            sum(outcomes) / len(outcomes) if outcomes else None,
        )
    return out


def retention(
    events: Iterable[Ev],
    start_event: str,
    return_event: str,
    origin: dt.date,
    period: str,
    periods: int,
) -> list[list[int]]:
    def index(d: dt.date) -> int:
        if period == "day":
            return (d - origin).days
        if period == "week":
            return (d - origin).days // 7
        return (d.year - origin.year) * 12 + d.month - origin.month

    first: dict[str, dt.date] = {}
    came: dict[str, set[int]] = defaultdict(set)
    evs = list(events)
    for e in evs:
        if e.user_id is None:
            continue
        if e.event_name == start_event:
            d = e.t.date()
            if e.user_id not in first or d < first[e.user_id]:
                first[e.user_id] = d
    for e in evs:
        if e.user_id is not None and e.event_name == return_event:
            came[e.user_id].add(index(e.t.date()))
    matrix = []
    for i in range(periods):
        cohort = [u for u, d in first.items() if index(d) == i and d >= origin]
        row = [len(cohort)]
        for k in range(1, periods - i):
            row.append(sum(1 for u in cohort if i + k in came[u]))
        matrix.append(row)
    return matrix
