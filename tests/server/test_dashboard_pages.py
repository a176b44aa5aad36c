"""The dashboard in Debian's Chromium (Playwright): every page loads cleanly, charts draw
data points, and an event posted through the API appears on the live page."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import pytest
from dashboard_browser import ARTIFACTS, PageWatch, headless_chromium
from serving import ServerProcess, wire_events

PAGES = ("overview", "events", "metrics", "missions", "funnels", "alerts", "api")
# A uPlot chart has drawn data points: a series holds a value above 0, and its canvas has
# painted pixels (not only the axes' background).
_DRAWN = """(() => {{
  const node = document.getElementById("{chart}");
  const u = node && node._uplot;
  if (!u || !u.data.slice(1).some((s) => s.some((v) => v > 0))) return false;
  const c = node.querySelector("canvas");
  const px = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let painted = 0;
  for (let i = 3; i < px.length; i += 4) if (px[i] > 0) painted++;
  return painted > 100;
}})()"""
# Generous guard for the live event to show up: ingest, commit, stream, render.
_LIVE_WAIT_MS = 10_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with headless_chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def seeded(server: ServerProcess) -> ServerProcess:
    """The module's server with some events, errors among them."""
    events = wire_events(40, "feature_used") + wire_events(5, "tool_called", duration_ms=120)
    errors = []
    for error in wire_events(3, "error_occurred"):
        error["category"] = "error"
        errors.append(error)
    assert server.post_json("/v1/events", events + errors).status == 200
    return server


def _open(browser: Any, server: ServerProcess, name: str) -> tuple[Any, Any, PageWatch]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    watch = PageWatch(page)
    page.goto(f"{server.url}/#/{name}")
    page.wait_for_load_state("load")  # never "networkidle": the live stream stays open
    return context, page, watch


def test_every_page_loads_without_errors_and_is_screenshotted(
    browser: Any, seeded: ServerProcess
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    for name in PAGES:
        context, page, watch = _open(browser, seeded, name)
        try:
            page.wait_for_selector(f"main[data-page={name}] h1")
            page.wait_for_timeout(300)  # late fetches of the page
            page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=True)
            assert not watch.problems, (name, watch.problems)
            assert not page.locator(".error-box").count(), (
                name,
                page.locator(".error-box").all_inner_texts(),
            )
        finally:
            context.close()


def test_charts_draw_data_points_in_both_themes(browser: Any, seeded: ServerProcess) -> None:
    context, page, watch = _open(browser, seeded, "overview")
    try:
        page.wait_for_function(_DRAWN.format(chart="chart-per-minute"), timeout=10_000)
        page.click("#theme")
        page.wait_for_timeout(200)
        page.screenshot(path=str(ARTIFACTS / "dashboard-overview-other-theme.png"), full_page=True)
        page.goto(f"{seeded.url}/#/events")
        page.wait_for_function(_DRAWN.format(chart="chart-trend"), timeout=10_000)
        assert not watch.problems, watch.problems
    finally:
        context.close()


def test_an_event_posted_through_the_api_appears_on_the_live_page(
    browser: Any, seeded: ServerProcess
) -> None:
    context, page, watch = _open(browser, seeded, "events")
    try:
        page.wait_for_selector("#live.on", timeout=_LIVE_WAIT_MS)
        (event,) = wire_events(1, "live_dashboard_event")
        started = time.monotonic()
        assert seeded.post_json("/v1/events", [event]).status == 200
        page.wait_for_selector(f"#tail-body tr[data-id='{event['id']}']", timeout=_LIVE_WAIT_MS)
        assert time.monotonic() - started < _LIVE_WAIT_MS / 1000
        page.click(f"#tail-body tr[data-id='{event['id']}']")
        page.wait_for_function(
            f"document.getElementById('detail-body').textContent.includes('{event['id']}')"
        )
        assert not watch.problems, watch.problems
    finally:
        context.close()


def test_retention_and_funnels_show_what_the_api_answers(
    browser: Any, seeded: ServerProcess
) -> None:
    """Retention percentages are shown as sent (0.5 % once showed as 50 %), the current
    period is the last cohort; funnel charts fill their panels (all but the last were
    drawn detached, 240 px wide)."""
    now = dt.datetime.now(dt.UTC)
    cohort = []
    for i in range(200):
        (event,) = wire_events(1, "retention_probe")
        event["user_id"] = f"ret-{i}"
        event["timestamp"] = (now - dt.timedelta(days=1)).isoformat().replace("+00:00", "Z")
        cohort.append(event)
    (back,) = wire_events(1, "retention_probe")
    back["user_id"] = "ret-0"
    assert seeded.post_json("/v1/events", [*cohort, back]).status == 200
    for name in ("probe-a", "probe-b"):
        body = {"name": name, "steps": [{"event": "retention_probe"}, {"event": "feature_used"}]}
        assert seeded.post_json("/v1/funnels?replace=true", body).status == 201
    context, page, watch = _open(browser, seeded, "funnels")
    try:
        page.fill("#r-start", "retention_probe")
        page.select_option("#r-period", "day")
        page.click("text=Show")
        page.wait_for_function(
            "document.getElementById('retention-table').textContent.includes('0.5%')"
        )
        rows = page.locator("#retention-table tbody tr").all_inner_texts()
        assert "200" in rows[-2] and "0.5%" in rows[-2]  # yesterday's cohort, day 1
        widths = page.evaluate(
            "[...document.querySelectorAll('[id^=funnel-] canvas')].map((c) => c.clientWidth)"
        )
        assert len(widths) >= 2 and min(widths) > 400, widths
        assert not watch.problems, watch.problems
    finally:
        context.close()


def test_a_zoom_survives_live_redraws_and_a_paused_tail_keeps_its_events(
    browser: Any, seeded: ServerProcess
) -> None:
    """A live event redraws the overview's chart: the range the user zoomed into stays
    (it was reset on every event). Events that arrive while the tail is paused show on
    resume (they were dropped)."""
    context, page, watch = _open(browser, seeded, "overview")
    try:
        page.wait_for_function(_DRAWN.format(chart="chart-per-minute"), timeout=10_000)
        zoomed = page.evaluate(
            """(() => {
              const u = document.getElementById("chart-per-minute")._uplot;
              const xs = u.data[0];
              const min = xs[0] + (xs[xs.length - 1] - xs[0]) * 0.25;
              const max = xs[0] + (xs[xs.length - 1] - xs[0]) * 0.5;
              u.setScale("x", { min, max });
              window.__firstChart = u;
              return [min, max];
            })()"""
        )
        assert seeded.post_json("/v1/events", wire_events(1, "zoom_probe")).status == 200
        page.wait_for_function(
            "document.getElementById('chart-per-minute')._uplot !== window.__firstChart",
            timeout=_LIVE_WAIT_MS,
        )
        scale = page.evaluate(
            "(() => { const s = document.getElementById('chart-per-minute')._uplot.scales.x;"
            " return [s.min, s.max]; })()"
        )
        assert scale == pytest.approx(zoomed)
        page.goto(f"{seeded.url}/#/events")
        page.wait_for_selector("#live.on", timeout=_LIVE_WAIT_MS)
        page.click("#tail-pause")
        (event,) = wire_events(1, "paused_tail_event")
        assert seeded.post_json("/v1/events", [event]).status == 200
        page.wait_for_timeout(1_000)
        assert page.locator(f"#tail-body tr[data-id='{event['id']}']").count() == 0
        page.click("#tail-pause")
        page.wait_for_selector(f"#tail-body tr[data-id='{event['id']}']", timeout=_LIVE_WAIT_MS)
        assert not watch.problems, watch.problems
    finally:
        context.close()
