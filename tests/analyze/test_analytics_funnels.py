"""Funnels: stored (funnel_conversions) and raw answers equal an independent recomputation."""

from __future__ import annotations

import datetime as dt
import random
import sqlite3
from pathlib import Path
from typing import Any

import analytics_reference as ref
import pytest
from analytics_fixtures import MISSIONS, SEEDED_FUNNELS, Seeded, at, make_event
from bench.datagen import row_of

from tachimeter.analyze import (
    FunnelDefinition,
    FunnelExclusion,
    FunnelReport,
    FunnelStep,
    PropertyFilter,
    define_funnel,
    delete_funnel,
    funnel_report,
    get_funnel,
    list_funnels,
    rebuild_summaries,
    summary_projections,
)
from tachimeter.errors import QueryError
from tachimeter.store import SQLiteStore
from tachimeter.store.summaries import parse_property_path

HOUR = dt.timedelta(hours=1)


def ref_steps(definition: FunnelDefinition) -> list[tuple[str, list[Any]]]:
    return [
        (s.event, [(list(parse_property_path(f.path)), f.op, f.value) for f in s.where])
        for s in definition.steps
    ]


def ref_exclusions(definition: FunnelDefinition) -> list[tuple[str, list[Any], int, int]]:
    last = len(definition.steps) - 1
    return [
        (
            x.event,
            [(list(parse_property_path(f.path)), f.op, f.value) for f in x.where],
            x.from_step,
            last if x.to_step is None else x.to_step,
        )
        for x in definition.exclusions
    ]


def check(report: FunnelReport, events: list[ref.Ev], definition: FunnelDefinition) -> None:
    want = ref.funnel(
        events,
        ref_steps(definition),
        definition.conversion_window,
        report.start,
        report.end,
        strict=definition.order == "strict",
        exclusions=ref_exclusions(definition),
    )
    entered = want["entered"]
    assert [s.entered for s in report.steps] == entered
    assert report.entered == entered[0] and report.completed == entered[-1]
    for k, step in enumerate(report.steps):
        converted = entered[k + 1] if k + 1 < len(entered) else entered[k]
        assert step.converted == converted
        assert step.drop_off == entered[k] - converted
        if entered[0]:
            assert step.conversion_from_start == pytest.approx(entered[k] / entered[0])
        if k + 1 < len(entered):
            assert step.median_seconds_to_convert == pytest.approx(
                ref.percentile(want["gaps"][k], 0.5)
            )
            assert step.p90_seconds_to_convert == pytest.approx(
                ref.percentile(want["gaps"][k], 0.9)
            )
        else:
            assert step.median_seconds_to_convert is None
    assert report.median_seconds_to_complete == pytest.approx(ref.percentile(want["totals"], 0.5))
    assert report.p90_seconds_to_complete == pytest.approx(ref.percentile(want["totals"], 0.9))


@pytest.mark.parametrize("definition", SEEDED_FUNNELS, ids=lambda d: d.name)
@pytest.mark.parametrize(
    ("start", "end"), [("2024-02-26", "2024-03-27"), ("2024-03-04 06:30", "2024-03-11 18:00")]
)
def test_stored_and_raw_funnels_equal_the_recomputation(
    seeded: Seeded, definition: FunnelDefinition, start: str, end: str
) -> None:
    """Entered, converted, drop-offs and times per step, from summaries and from raw events."""
    summary = funnel_report(seeded.conn, definition.name, start=at(start), end=at(end))
    raw = funnel_report(seeded.conn, definition, start=at(start), end=at(end), use_summaries=False)
    assert (summary.source, raw.source) == ("summary", "raw")
    check(summary, seeded.events, definition)
    assert summary.steps == raw.steps
    assert summary.entered > 100 and 0 < summary.completed < summary.entered


def test_an_unstored_definition_is_computed_from_raw_events(seeded: Seeded) -> None:
    """A definition that differs from the stored one of its name is answered from raw events."""
    ad_hoc = FunnelDefinition(
        name="missions",
        steps=(
            FunnelStep("mission_created", (PropertyFilter("model", "eq", "gpt-4o"),)),
            FunnelStep("tool_invoked", (PropertyFilter("success", "eq", False),)),
            FunnelStep("mission_completed"),
        ),
        conversion_window=dt.timedelta(days=1),
    )
    report = funnel_report(seeded.conn, ad_hoc, start=seeded.start, end=seeded.end)
    assert report.source == "raw"
    check(report, seeded.events, ad_hoc)


def report_of(conn: Any, definition: FunnelDefinition, start: str, end: str) -> FunnelReport:
    summary = funnel_report(conn, definition.name, start=at(start), end=at(end))
    raw = funnel_report(conn, definition, start=at(start), end=at(end), use_summaries=False)
    assert summary.steps == raw.steps
    return summary


ABC = FunnelDefinition(
    name="abc",
    steps=(FunnelStep("a"), FunnelStep("b"), FunnelStep("c")),
    conversion_window=dt.timedelta(minutes=30),
)


def test_conversion_window_is_inclusive_and_later_steps_do_not_count(small_db: Any) -> None:
    """A step exactly at the window's end converts; one microsecond later does not."""
    events = [
        make_event("a", "2024-03-05 10:00", user="on_time"),
        make_event("b", "2024-03-05 10:10", user="on_time"),
        make_event("c", "2024-03-05 10:30", user="on_time"),
        make_event("a", "2024-03-05 10:00", user="late"),
        make_event("b", "2024-03-05 10:10", user="late"),
        make_event("c", "2024-03-05 10:30:00.000001", user="late"),
    ]
    conn = small_db(events, funnels=[ABC])
    report = report_of(conn, ABC, "2024-03-05", "2024-03-06")
    assert [s.entered for s in report.steps] == [2, 2, 1]
    assert report.steps[1].median_seconds_to_convert == 1200.0
    assert report.median_seconds_to_complete == 1800.0


def test_steps_after_the_range_end_count_within_the_window(small_db: Any) -> None:
    """Entry inside the range, conversion after its end but inside the window: converted."""
    events = [
        make_event("a", "2024-03-05 23:50"),
        make_event("b", "2024-03-06 00:05"),
        make_event("c", "2024-03-06 00:15"),
        make_event("a", "2024-03-06 00:01", user="u2"),  # entry after the range: not counted
    ]
    conn = small_db(events, funnels=[ABC])
    assert [s.entered for s in report_of(conn, ABC, "2024-03-05", "2024-03-06").steps] == [1, 1, 1]


def test_each_user_counts_once_with_the_entry_that_got_furthest(small_db: Any) -> None:
    """Two entries: the one reaching more steps wins, and its own times are reported."""
    events = [
        make_event("a", "2024-03-05 09:00"),
        make_event("b", "2024-03-05 09:01"),
        make_event("a", "2024-03-05 11:00"),
        make_event("b", "2024-03-05 11:10"),
        make_event("c", "2024-03-05 11:20"),
    ]
    conn = small_db(events, funnels=[ABC])
    report = report_of(conn, ABC, "2024-03-05", "2024-03-06")
    assert [s.entered for s in report.steps] == [1, 1, 1]
    assert report.steps[0].median_seconds_to_convert == 600.0


def test_strict_order_needs_consecutive_events(small_db: Any) -> None:
    """In strict order any other event between two steps breaks the chain."""
    strict = FunnelDefinition(
        name="strict",
        steps=ABC.steps,
        conversion_window=dt.timedelta(hours=1),
        order="strict",
    )
    ordered = FunnelDefinition(name="ordered", steps=ABC.steps, conversion_window=HOUR)
    events = [
        make_event("a", "2024-03-05 10:00", user="clean"),
        make_event("b", "2024-03-05 10:01", user="clean"),
        make_event("c", "2024-03-05 10:02", user="clean"),
        make_event("a", "2024-03-05 10:00", user="noisy"),
        make_event("b", "2024-03-05 10:01", user="noisy"),
        make_event("noise", "2024-03-05 10:01:30", user="noisy"),
        make_event("c", "2024-03-05 10:02", user="noisy"),
    ]
    conn = small_db(events, funnels=[strict, ordered])
    assert [s.entered for s in report_of(conn, strict, "2024-03-05", "2024-03-06").steps] == [
        2,
        2,
        1,
    ]
    assert [s.entered for s in report_of(conn, ordered, "2024-03-05", "2024-03-06").steps] == [
        2,
        2,
        2,
    ]


def test_exclusion_drops_the_entry_but_not_a_clean_later_one(small_db: Any) -> None:
    """An excluded event between the steps voids that entry; another clean entry counts."""
    funnel = FunnelDefinition(
        name="excl",
        steps=ABC.steps,
        conversion_window=HOUR,
        exclusions=(FunnelExclusion("x", from_step=0, to_step=1),),
    )
    events = [
        # excluded: x between a and b
        make_event("a", "2024-03-05 10:00", user="u1"),
        make_event("x", "2024-03-05 10:05", user="u1"),
        make_event("b", "2024-03-05 10:10", user="u1"),
        # x after b is outside [a, b): not excluded
        make_event("a", "2024-03-05 10:00", user="u2"),
        make_event("b", "2024-03-05 10:10", user="u2"),
        make_event("x", "2024-03-05 10:15", user="u2"),
        # never reached b: x within the window still excludes
        make_event("a", "2024-03-05 10:00", user="u3"),
        make_event("x", "2024-03-05 10:50", user="u3"),
        # excluded first entry, clean second one
        make_event("a", "2024-03-05 12:00", user="u4"),
        make_event("x", "2024-03-05 12:01", user="u4"),
        make_event("a", "2024-03-05 14:00", user="u4"),
        make_event("b", "2024-03-05 14:01", user="u4"),
        make_event("c", "2024-03-05 14:02", user="u4"),
    ]
    conn = small_db(events, funnels=[funnel])
    report = report_of(conn, funnel, "2024-03-05", "2024-03-06")
    assert [s.entered for s in report.steps] == [2, 2, 1]
    check(report, ref.load(row_of(e, "2024-01-01T00:00:00.000000Z") for e in events), funnel)


def test_one_event_never_fills_two_steps(small_db: Any) -> None:
    """Steps of the same event name need distinct events, in order."""
    funnel = FunnelDefinition(
        name="pages",
        steps=(
            FunnelStep("page_view"),
            FunnelStep("page_view", (PropertyFilter("path", "eq", "/pricing"),)),
        ),
        conversion_window=HOUR,
    )
    events = [
        make_event("page_view", "2024-03-05 10:00", user="one", props={"path": "/pricing"}),
        make_event("page_view", "2024-03-05 10:00", user="two", props={"path": "/"}),
        make_event("page_view", "2024-03-05 10:05", user="two", props={"path": "/pricing"}),
    ]
    conn = small_db(events, funnels=[funnel])
    assert [s.entered for s in report_of(conn, funnel, "2024-03-05", "2024-03-06").steps] == [2, 1]


def test_empty_range_and_unknown_funnel(small_db: Any) -> None:
    """An empty range has no entries; an unknown name says how to define it."""
    conn = small_db([make_event("a", "2024-03-05 10:00")], funnels=[ABC])
    report = report_of(conn, ABC, "2024-03-05", "2024-03-05")
    assert report.entered == 0 and report.conversion_rate is None
    assert report.steps[1].conversion_from_start is None
    with pytest.raises(QueryError, match="define_funnel"):
        funnel_report(conn, "nope", start=at("2024-03-05"), end=at("2024-03-06"))


def test_defining_funnels(small_db: Any) -> None:
    """Same definition again is a no-op; another under the same name needs replace=True."""
    events = [make_event("a", "2024-03-05 10:00"), make_event("b", "2024-03-05 10:01")]
    conn = small_db(events, funnels=[ABC])
    first = get_funnel(conn, "abc")
    assert define_funnel(conn, ABC) == first
    wider = FunnelDefinition(name="abc", steps=ABC.steps[:2], conversion_window=HOUR)
    with pytest.raises(QueryError, match="replace=True"):
        define_funnel(conn, wider)
    replaced = define_funnel(conn, wider, replace=True)
    assert replaced.id == first.id and get_funnel(conn, "abc").definition == wider
    assert funnel_report(conn, "abc", start=at("2024-03-05"), end=at("2024-03-06")).completed == 1
    assert [f.definition.name for f in list_funnels(conn)] == ["abc"]
    assert delete_funnel(conn, "abc") and not delete_funnel(conn, "abc")
    assert conn.execute("SELECT count(*) FROM funnel_conversions").fetchone()[0] == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": (FunnelStep("a"),)}, "needs 2 to 20 steps"),
        ({"conversion_window": dt.timedelta(0)}, "conversion_window"),
        ({"conversion_window": dt.timedelta(seconds=1.5)}, "whole seconds"),
        ({"order": "any"}, "order must be"),
        ({"exclusions": (FunnelExclusion("x", from_step=2, to_step=1),)}, "from_step < to_step"),
        ({"exclusions": (FunnelExclusion("b"),)}, "same event as step 1"),
        ({"name": " "}, "funnel name"),
    ],
)
def test_bad_definitions_are_refused(kwargs: dict[str, Any], message: str) -> None:
    """Funnel definitions are validated when built."""
    args: dict[str, Any] = {"name": "f", "steps": ABC.steps, **kwargs}
    with pytest.raises(QueryError, match=message):
        FunnelDefinition(**args)


def test_arrival_order_does_not_change_the_stored_entries(tmp_path: Path) -> None:
    """Events written in shuffled batches give the same funnel_conversions as a rebuild."""
    rng = random.Random(3)
    events = []
    for u in range(30):
        base = dt.datetime(2024, 3, 5, 10, tzinfo=dt.UTC) + dt.timedelta(minutes=rng.randrange(600))
        for name in ("a", "b", "x", "c", "a", "b", "c"):
            base += dt.timedelta(minutes=rng.choice((1, 5, 20, 40)))
            if rng.random() < 0.8:
                events.append(make_event(name, base, user=f"u{u}"))
    rng.shuffle(events)
    funnels = [
        MISSIONS,
        FunnelDefinition(
            name="abc_strict", steps=ABC.steps, conversion_window=HOUR, order="strict"
        ),
        FunnelDefinition(
            name="abc_excl",
            steps=ABC.steps,
            conversion_window=HOUR,
            exclusions=(FunnelExclusion("x", from_step=1),),
        ),
    ]
    with SQLiteStore(tmp_path / "a.db") as store:
        for f in funnels:
            define_funnel(store, f)
        projections = summary_projections()
        i = 0
        while i < len(events):
            n = rng.randint(1, 15)
            store.write_batch(events[i : i + n], projections=projections)
            i += n
        with store.reader() as conn:
            incremental = sorted(conn.execute("SELECT * FROM funnel_conversions").fetchall())
            reports = [
                funnel_report(conn, f.name, start=at("2024-03-05"), end=at("2024-03-07"))
                for f in funnels[1:]
            ]
            raws = [
                funnel_report(
                    conn, f, start=at("2024-03-05"), end=at("2024-03-07"), use_summaries=False
                )
                for f in funnels[1:]
            ]
    assert [r.steps for r in reports] == [r.steps for r in raws]
    writer = sqlite3.connect(tmp_path / "a.db", isolation_level=None)
    rebuild_summaries(writer)
    rebuilt = sorted(writer.execute("SELECT * FROM funnel_conversions").fetchall())
    writer.close()
    assert incremental == rebuilt and len(rebuilt) > 50
