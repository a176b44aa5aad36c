"""Charts mark what happened: alert firing intervals as shaded bands and detected anomalies
as markers, on the Overview, Alerts and Metrics pages, over the demo's store with its two
planted incidents (an error burst half an hour ago, a token burn six hours ago)."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dashboard_browser import ARTIFACTS, PageWatch, headless_chromium
from serving import ServerProcess

from tachimeter.cli.demo import seed_store

# Waiting for the page's fetches and the chart's first draw: a guard, not a measurement.
_DRAW_WAIT_MS = 15_000
_MARKERS = "(id) => (window.__tachimeterMarkers || {})[id] || null"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server on the store `make demo` fills: 30 days of events, missions, the two
    incidents and the alert history the demo's rules left. (At this size the metric's
    samples are dense enough for the detector's 24-point minimum over a day.)"""
    db = tmp_path_factory.mktemp("demo") / "analytics.db"
    seed_store(str(db), events=20_000, missions=400, seed=7)
    process = ServerProcess(db, {"rate_limit_per_second": 0})
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with headless_chromium() as browser:
        yield browser


def _firing(db: Path) -> dict[str, tuple[float, float | None]]:
    """Each rule's firing interval, read from alert_events with plain sqlite3."""
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT rule, at, from_state, to_state FROM alert_events ORDER BY at, id"
        ).fetchall()
    finally:
        conn.close()
    out: dict[str, tuple[float, float | None]] = {}
    for rule, at, from_state, to_state in rows:
        seconds = dt.datetime.fromisoformat(at).timestamp()
        if to_state == "firing":
            out[rule] = (seconds, None)
        elif from_state == "firing":
            out[rule] = (out[rule][0], seconds)
    return out


def _markers(
    browser: Any, server: ServerProcess, hash_path: str, chart: str, shot: str
) -> list[Any]:
    """Open a page, wait for its chart's marks, screenshot it; the marks drawn."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    watch = PageWatch(page)
    try:
        page.goto(f"{server.url}/#/{hash_path}")
        page.wait_for_function(f"({_MARKERS})('{chart}')", timeout=_DRAW_WAIT_MS)
        page.wait_for_timeout(300)  # the page's last fetches
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / shot), full_page=True)
        marks: list[Any] = page.evaluate(f"({_MARKERS})('{chart}')")
        assert page.get_attribute(f"#{chart}", "data-markers") == str(len(marks))
        legend = page.locator(f"#{chart} .marks-legend").inner_text()
        for mark in marks:
            assert (mark.get("rule") or mark["kind"]) in legend, (mark, legend)
        assert not watch.problems, watch.problems
        assert not page.locator(".error-box").count(), page.locator(".error-box").all_inner_texts()
        return marks
    finally:
        context.close()


def _alerts(marks: list[Any]) -> dict[str, Any]:
    return {m["rule"]: m for m in marks if m["type"] == "alert"}


def test_the_overview_marks_the_error_burst_and_its_alert(
    browser: Any, demo: ServerProcess
) -> None:
    marks = _markers(browser, demo, "overview", "chart-per-minute", "dashboard-marks-overview.png")
    firing = _firing(demo.db)
    alert = _alerts(marks)["HighErrorRate"]
    assert (alert["start"], alert["end"]) == pytest.approx(firing["HighErrorRate"])
    assert alert["x1"] > alert["x0"]
    spikes = [m for m in marks if m["type"] == "anomaly" and m["series"] == "errors"]
    assert spikes and all(m["kind"] == "spike" for m in spikes), marks
    # The error spike lies inside the burst (fifty to thirty-five minutes before seeding).
    assert any(alert["start"] - 600 <= m["timestamp"] <= alert["end"] for m in spikes), marks


def test_the_alerts_timeline_marks_both_incidents(browser: Any, demo: ServerProcess) -> None:
    marks = _markers(browser, demo, "alerts", "chart-alerts", "dashboard-marks-alerts.png")
    firing = _firing(demo.db)
    drawn = _alerts(marks)
    assert set(drawn) == {"HighErrorRate", "TokenBurn"}
    for rule, (start, end) in firing.items():
        assert (drawn[rule]["start"], drawn[rule]["end"]) == pytest.approx((start, end))
    assert any(m["type"] == "anomaly" and m["kind"] == "spike" for m in marks), marks


def test_the_metrics_explorer_marks_the_token_burn(browser: Any, demo: ServerProcess) -> None:
    marks = _markers(
        browser,
        demo,
        "metrics?name=business_total_tokens&range=24h",
        "chart-metric",
        "dashboard-marks-metrics.png",
    )
    burn = _alerts(marks)["TokenBurn"]
    assert (burn["start"], burn["end"]) == pytest.approx(_firing(demo.db)["TokenBurn"])
    anomalies = [m for m in marks if m["type"] == "anomaly"]
    assert any(burn["start"] - 900 <= m["timestamp"] <= burn["end"] for m in anomalies), marks
