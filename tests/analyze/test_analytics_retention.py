"""Retention cohorts equal a recomputation, from the daily rollup and from raw events."""

from __future__ import annotations

import datetime as dt
from typing import Any

import analytics_reference as ref
import pytest
from analytics_fixtures import Seeded, at, make_event

from tachimeter.analyze import retention_cohorts
from tachimeter.errors import QueryError


@pytest.mark.parametrize("use_summaries", [True, False])
@pytest.mark.parametrize(
    ("start_event", "return_event", "period", "periods", "origin"),
    [
        ("session_started", None, "week", 5, dt.date(2024, 2, 26)),
        ("mission_created", "mission_completed", "day", 14, dt.date(2024, 3, 2)),
        ("user_identified", "feature_used", "month", 2, dt.date(2024, 2, 1)),
        ("feature_used", "search_performed", "week", 3, dt.date(2024, 3, 11)),
    ],
)
def test_matrix_equals_recomputation(
    seeded: Seeded,
    start_event: str,
    return_event: str | None,
    period: str,
    periods: int,
    origin: dt.date,
    use_summaries: bool,
) -> None:
    """Cohort sizes and returning users per period match the raw events."""
    matrix = retention_cohorts(
        seeded.conn,
        start_event,
        return_event=return_event,
        start=origin,
        period=period,  # type: ignore[arg-type]
        periods=periods,
        use_summaries=use_summaries,
    )
    want = ref.retention(
        seeded.events, start_event, return_event or start_event, origin, period, periods
    )
    assert [c.counts for c in matrix.cohorts] == want
    assert sum(c.size for c in matrix.cohorts) > 0
    for cohort in matrix.cohorts:
        assert len(cohort.percentages) == len(cohort.counts)
        if cohort.size:
            assert cohort.percentages[0] == 100.0
            assert cohort.percentages == pytest.approx(
                [c / cohort.size * 100 for c in cohort.counts]
            )


def test_cohorts_use_the_first_ever_occurrence(small_db: Any) -> None:
    """A user who started before the window is in no cohort; same-period returns are not
    counted as coming back; a week starts on Monday 00:00 UTC."""
    events = [
        make_event("signup", "2024-02-20 10:00", user="old"),
        make_event("signup", "2024-03-04 10:00", user="old"),
        make_event("signup", "2024-03-04 00:00", user="a"),  # Monday midnight: week 0
        make_event("signup", "2024-03-10 23:59:59.999999", user="b"),  # Sunday: still week 0
        make_event("signup", "2024-03-11 00:00", user="c"),  # week 1
        make_event("signup", "2024-03-05 12:00", user="a"),  # same week: not a return
        make_event("signup", "2024-03-12 12:00", user="a"),  # week 1
        make_event("signup", "2024-03-19 12:00", user="b"),  # week 2
        make_event("signup", "2024-03-20 12:00", user="c"),  # week 2 = c's week 1
    ]
    conn = small_db(events)
    for use_summaries in (True, False):
        matrix = retention_cohorts(
            conn, "signup", start=dt.date(2024, 3, 6), periods=3, use_summaries=use_summaries
        )
        assert matrix.start == at("2024-03-04")
        assert [c.counts for c in matrix.cohorts] == [[2, 1, 1], [1, 1], [0]]
        assert matrix.cohorts[2].percentages == [None]


def test_months_of_different_lengths(small_db: Any) -> None:
    """Monthly cohorts follow calendar months (UTC)."""
    events = [
        make_event("s", "2024-01-31 23:59", user="jan"),
        make_event("s", "2024-02-29 23:59", user="jan"),
        make_event("s", "2024-02-01 00:00", user="feb"),
        make_event("s", "2024-03-01 00:00", user="feb"),
    ]
    matrix = retention_cohorts(
        small_db(events), "s", start=dt.date(2024, 1, 15), period="month", periods=3
    )
    assert [c.start.month for c in matrix.cohorts] == [1, 2, 3]
    assert [c.counts for c in matrix.cohorts] == [[1, 1, 0], [1, 1], [0]]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"period": "year"}, "period must be"),
        ({"periods": 0}, "periods must be"),
        ({"return_event": ""}, "return_event must be"),
        ({"start": "2024-03-01"}, "start must be a datetime"),
    ],
)
def test_bad_arguments(seeded: Seeded, kwargs: dict[str, Any], message: str) -> None:
    """Bad retention arguments raise QueryError naming the parameter."""
    args: dict[str, Any] = {"start": dt.date(2024, 3, 4), **kwargs}
    with pytest.raises(QueryError, match=message):
        retention_cohorts(seeded.conn, "session_started", **args)
