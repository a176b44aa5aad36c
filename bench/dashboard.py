"""The dashboard at 1M events: overview API latency, first render, ingest-to-display delay.

A store of ``bench.datagen`` data (1M events of 10 000 users over the 30 days before it
was built) is bulk-loaded raw, then every derived table is filled exactly as
``tachimeter rebuild`` fills it (the default projections: daily rollups, user activity,
feature usage, sessions, funnels, missions, time series) and ``dashboard_metrics`` is
refreshed, so the overview reads realistic summary data. It is built once into a cache
under the temp directory keyed by size, generator version and schema (about four
minutes), and each run works on a copy of it. A real server (``tachimeter serve``,
uvicorn on 127.0.0.1, a free port) serves the copy; the run first posts the last hour
of traffic through ``POST /v1/events`` (the cache is older than "now"), then measures:

* **API**: each call the Overview page makes (read from ``static/app.js``), cold-ish
  (the first call after a server start, over ``COLD_STARTS`` restarts) and warm
  (``WARM_CALLS`` calls in a row); median and p95. Goal: median under 100 ms.
* **First render**: headless Debian Chromium (Playwright) opens the Overview; from
  navigation start (``performance.now()`` origin) to the ``tachimeter:rendered`` mark
  app.js sets when the overview's charts have drawn. Median of ``PAGE_LOADS`` loads in
  fresh browser contexts. Goal: under 1 s.
* **Ingest to display**: the Events page's live tail is open; an event is posted and the
  page records (MutationObserver, page clock) when its row appears; the delay is taken on
  the page's clock from just before the POST. Median of ``LIVE_EVENTS`` events.

Run alone with ``python -m bench.dashboard``; ``TACHIMETER_BENCH_DASHBOARD_EVENTS``
scales the store down (default 1 000 000).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any, Final

from bench.datagen import GENERATOR_VERSION, create_database, generate, insert_rows
from bench.harness import print_table, write_results

__all__ = ["ensure_store", "main"]

DEFAULT_EVENTS: Final = 1_000_000
USERS_PER_EVENT: Final = 100  # 1M events: 10 000 users, as bench/queries.py
DAYS: Final = 30
SEED: Final = 0
COLD_STARTS: Final = 20
WARM_CALLS: Final = 30
PAGE_LOADS: Final = 9
LIVE_EVENTS: Final = 20
# The last hour posted through the API before measuring: 40 events a minute (the
# stored month's daytime rate is about 25), 3 % of them errors.
TOP_UP_PER_MINUTE: Final = 40
GOAL_API_MEDIAN_MS: Final = 100
GOAL_FIRST_RENDER_MS: Final = 1000
CHROMIUM: Final = "/usr/bin/chromium"
STATIC: Final = Path(__file__).resolve().parents[1] / "src" / "tachimeter" / "server" / "static"
# Starting the interpreter and the server on a migrated store: seconds; a guard only.
_START_SECONDS: Final = 120.0
_SERVER_TOML: Final = "[server]\nrate_limit_per_second = 0\n"


# -- the store ------------------------------------------------------------------------------


def _schema_key() -> str:
    from tachimeter.store.migrations import all_migrations

    return hashlib.sha256("".join(m.checksum for m in all_migrations()).encode()).hexdigest()[:16]


def cache_path(events: int) -> Path:
    """Where the store of ``events`` events is cached."""
    folder = Path(tempfile.gettempdir()) / "tachimeter-bench"
    return folder / f"dashboard-{events}-seed{SEED}-v{GENERATOR_VERSION}-{_schema_key()}.db"


def ensure_store(events: int = DEFAULT_EVENTS) -> tuple[Path, dict[str, Any]]:
    """The cached store of ``events`` events (built when missing) and its manifest."""
    from tachimeter.config.sources import load_config
    from tachimeter.defaults import default_projections
    from tachimeter.store.summaries import refresh_dashboard_metrics

    path = cache_path(events)
    manifest_path = path.with_suffix(".json")
    if path.exists() and manifest_path.exists():
        return path, dict(json.loads(manifest_path.read_text()))
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in (path, manifest_path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        stale.unlink(missing_ok=True)
    building = path.with_suffix(".building")
    building.unlink(missing_ok=True)
    timings: dict[str, float] = {}
    now = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    started = time.perf_counter()
    data = generate(
        seed=SEED,
        events=events,
        users=max(1, events // USERS_PER_EVENT),
        days=DAYS,
        start=now - dt.timedelta(days=DAYS),
    )
    timings["generate_seconds"] = time.perf_counter() - started
    conn = create_database(building)
    started = time.perf_counter()
    insert_rows(conn, data.rows, batch_sizes=[5000])
    timings["insert_seconds"] = time.perf_counter() - started
    stored = len(data.rows)
    del data
    started = time.perf_counter()
    # What `tachimeter rebuild` does: every default projection, one transaction.
    conn.execute("BEGIN IMMEDIATE")
    names = []
    for projection in default_projections(load_config(env={}, cwd=str(path.parent))):
        projection.rebuild(conn)
        names.append(projection.name)
    conn.execute("COMMIT")
    timings["rebuild_seconds"] = time.perf_counter() - started
    refresh_dashboard_metrics(conn, dt.datetime.now(dt.UTC))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    os.replace(building, path)
    manifest = {
        "events": events,
        "stored_events": stored,
        "seed": SEED,
        "generator": GENERATOR_VERSION,
        "days": DAYS,
        "end": now.isoformat(),
        "projections": names,
        "file_bytes": path.stat().st_size,
        **{k: round(v, 1) for k, v in timings.items()},
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path, manifest


def _table_rows(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        return {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in (
                "analytics_events",
                "analytics_daily_counts",
                "user_activity",
                "analytics_sessions",
                "dashboard_metrics",
                "missions",
                "metric_series",
            )
        }
    finally:
        conn.close()


# -- the server -----------------------------------------------------------------------------


class _Server:
    """``tachimeter serve`` on a free port of 127.0.0.1, rate limiting off."""

    def __init__(self, db: Path) -> None:
        (db.parent / "tachimeter.toml").write_text(_SERVER_TOML)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tachimeter.cli",
                "serve",
                "--db",
                str(db),
                "--port",
                "0",
                "--config",
                str(db.parent / "tachimeter.toml"),
                "--log-level",
                "warning",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=db.parent,
            env={k: v for k, v in os.environ.items() if not k.startswith("TACHIMETER_")},
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + _START_SECONDS
        self.url = ""
        while time.monotonic() < deadline and not self.url:
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.startswith("tachimeter server listening on "):
                self.url = line.rsplit(" ", 1)[1].strip()
        if not self.url:
            self.proc.kill()
            raise RuntimeError("the server did not start")
        parts = urllib.parse.urlsplit(self.url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
        try:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + _START_SECONDS
        while time.monotonic() < deadline:
            if self.request("GET", "/readyz")[0] == 200:
                return
            time.sleep(0.05)
        raise RuntimeError("the server never became ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)


def _wire(name: str, when: dt.datetime, user: str, properties: dict[str, Any]) -> dict[str, Any]:
    import msgspec

    from tachimeter.model.codec import event_to_builtins
    from tachimeter.model.events import AnalyticsEvent
    from tachimeter.model.ids import uuid7_from_ns

    ns = int(when.timestamp() * 1e9)
    event = AnalyticsEvent.new(name, properties)
    event = msgspec.structs.replace(
        event, id=uuid7_from_ns(ns), timestamp=when, user_id=user, session_id=f"s-{user}"
    )
    return event_to_builtins(event)


def top_up(server: _Server, minutes: int = 60) -> int:
    """Post the last ``minutes`` of traffic through the API; the number of events."""
    import random

    rng = random.Random(SEED)
    now = dt.datetime.now(dt.UTC)
    events = []
    for i in range(minutes * TOP_UP_PER_MINUTE):
        when = now - dt.timedelta(seconds=rng.uniform(1, minutes * 60))
        user = f"topup-{rng.randrange(200):03d}"
        if rng.random() < 0.03:
            events.append(_wire("error_occurred", when, user, {"code": "E42", "message": "x"}))
        else:
            name = rng.choice(("feature_used", "tool_invoked", "page_view", "search_performed"))
            events.append(_wire(name, when, user, {"i": i}))
    for lo in range(0, len(events), 500):
        status, body = server.request(
            "POST", "/v1/events", json.dumps(events[lo : lo + 500]).encode()
        )
        if status != 200:
            raise RuntimeError(f"top-up refused: {status} {body[:300]!r}")
    return len(events)


# -- (a) API latency ------------------------------------------------------------------------


def overview_calls() -> dict[str, str]:
    """The API calls the Overview page makes, as app.js spells them (the stream aside)."""
    script = (STATIC / "app.js").read_text()
    body = script[script.index("function pageOverview") :]
    body = body[: body.index("\n}\n")]
    paths = sorted(set(re.findall(r'api\("(/v1/[^"]+)"', body)))
    if not paths:
        raise RuntimeError("no API call found in pageOverview of app.js")
    return {p.split("?")[0]: p for p in paths}


def _quantiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))], 2),
        "min_ms": round(ordered[0], 2),
        "calls": len(ordered),
    }


def _timed(server: _Server, path: str) -> float:
    started = time.perf_counter()
    status, _ = server.request("GET", path)
    elapsed = (time.perf_counter() - started) * 1000
    if status != 200:
        raise RuntimeError(f"{path} answered {status}")
    return elapsed


def api_latency(db: Path, server: _Server, calls: dict[str, str]) -> dict[str, Any]:
    """Warm on ``server``; cold-ish over ``COLD_STARTS`` fresh servers on the same file."""
    warm: dict[str, list[float]] = {name: [] for name in calls}
    for path in calls.values():
        _timed(server, path)  # the first call is the cold-ish measurement's, not warm
    for _ in range(WARM_CALLS):
        for name, path in calls.items():
            warm[name].append(_timed(server, path))
    cold: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(COLD_STARTS):
        fresh = _Server(db)
        try:
            fresh.wait_ready()
            for name, path in calls.items():
                cold[name].append(_timed(fresh, path))
        finally:
            fresh.stop()
    return {
        name: {"path": calls[name], "warm": _quantiles(warm[name]), "cold": _quantiles(cold[name])}
        for name in calls
    }


# -- (b) first render and (c) ingest to display ----------------------------------------------

_RENDERED = "() => performance.getEntriesByName('tachimeter:rendered').length > 0"
_RENDER_MS = "() => performance.getEntriesByName('tachimeter:rendered')[0].startTime"
_OBSERVE = """() => {
  window.__seen = {};
  const body = document.getElementById("tail-body");
  new MutationObserver((records) => {
    const t = performance.now();
    for (const r of records) for (const n of r.addedNodes) {
      const id = n.dataset && n.dataset.id;
      if (id && !(id in window.__seen)) window.__seen[id] = t;
    }
  }).observe(body, { childList: true });
}"""


def _launch(playwright: Any) -> Any:
    return playwright.chromium.launch(
        executable_path=CHROMIUM,
        headless=True,
        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
    )


def first_render(server: _Server) -> dict[str, Any]:
    """Navigation start to the overview's charts drawn, in fresh contexts."""
    from playwright.sync_api import sync_playwright

    times: list[float] = []
    with sync_playwright() as playwright:
        browser = _launch(playwright)
        try:
            for _ in range(PAGE_LOADS + 1):
                context = browser.new_context(viewport={"width": 1400, "height": 900})
                page = context.new_page()
                page.goto(f"{server.url}/#/overview")
                page.wait_for_function(_RENDERED, timeout=60_000)
                times.append(float(page.evaluate(_RENDER_MS)))
                context.close()
        finally:
            browser.close()
    # The first load warms the browser's own caches (uPlot is cached for a day): dropped.
    return {**_quantiles(times[1:]), "first_load_ms": round(times[0], 1)}


def ingest_to_display(server: _Server) -> dict[str, Any]:
    """Post one event at a time with the live tail open; page clock from POST to row."""
    from playwright.sync_api import sync_playwright

    delays: list[float] = []
    with sync_playwright() as playwright:
        browser = _launch(playwright)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            page = context.new_page()
            page.goto(f"{server.url}/#/events")
            page.wait_for_selector("#live.on", timeout=60_000)
            page.wait_for_timeout(500)  # the first page of recent events is in
            page.evaluate(_OBSERVE)
            for i in range(LIVE_EVENTS):
                event = _wire("live_bench_event", dt.datetime.now(dt.UTC), "bench", {"i": i})
                body = json.dumps([event]).encode()
                before = float(page.evaluate("() => performance.now()"))
                status, _ = server.request("POST", "/v1/events", body)
                if status != 200:
                    raise RuntimeError(f"ingest answered {status}")
                page.wait_for_function(f"() => '{event['id']}' in window.__seen", timeout=30_000)
                seen = float(page.evaluate(f"() => window.__seen['{event['id']}']"))
                delays.append(seen - before)
                page.wait_for_timeout(200)
            context.close()
        finally:
            browser.close()
    return _quantiles(delays)


# -- main -----------------------------------------------------------------------------------


def main() -> None:
    events = int(os.environ.get("TACHIMETER_BENCH_DASHBOARD_EVENTS", DEFAULT_EVENTS))
    started = time.perf_counter()
    cached, manifest = ensure_store(events)
    build_seconds = time.perf_counter() - started
    calls = overview_calls()
    results: dict[str, Any] = {
        "events": events,
        "store": manifest,
        "store_ready_seconds": round(build_seconds, 1),
        "goals": {"api_median_ms": GOAL_API_MEDIAN_MS, "first_render_ms": GOAL_FIRST_RENDER_MS},
    }
    with tempfile.TemporaryDirectory(prefix="tachimeter-dashboard-") as tmp:
        db = Path(tmp) / "analytics.db"
        shutil.copyfile(cached, db)
        server = _Server(db)
        try:
            server.wait_ready()
            results["top_up_events"] = top_up(server)
            results["tables"] = _table_rows(db)
            results["api"] = api_latency(db, server, calls)
            results["first_render"] = first_render(server)
            results["ingest_to_display"] = ingest_to_display(server)
        finally:
            server.stop()
    print_table(
        f"Overview API at {results['tables']['analytics_events']:,} events (ms)",
        [
            (
                v["path"],
                f"{v['cold']['median_ms']:.1f}",
                f"{v['cold']['p95_ms']:.1f}",
                f"{v['warm']['median_ms']:.1f}",
                f"{v['warm']['p95_ms']:.1f}",
            )
            for v in results["api"].values()
        ],
        ("call", "cold p50", "cold p95", "warm p50", "warm p95"),
    )
    render, live = results["first_render"], results["ingest_to_display"]
    print_table(
        "browser (ms)",
        [
            (
                "first render of the overview",
                f"{render['median_ms']:.0f}",
                f"{render['p95_ms']:.0f}",
            ),
            ("ingest to display (live tail)", f"{live['median_ms']:.0f}", f"{live['p95_ms']:.0f}"),
        ],
        ("measure", "median", "p95"),
    )
    print(f"results: {write_results('dashboard', results)}")


if __name__ == "__main__":
    main()
