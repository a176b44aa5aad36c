"""Schemathesis against the server's own OpenAPI document, over real HTTP: no 5xx, and
every answer matches the documented schema (a bounded number of examples per operation)."""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks
from serving import ServerProcess

# The contract: no 5xx, every answer documented and matching its schema. Not
# positive_data_acceptance: the event schema is deliberately loose (any name, any payload)
# and the server's validation (clock skew, enums, sizes) refuses much of what fits it.
_CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]
# Operations whose answers never end (the live stream) cannot be checked by a client
# that reads the whole answer.
_ENDLESS = "/v1/stream"


def test_the_api_answers_every_generated_request_as_documented(server: ServerProcess) -> None:
    # Operations are driven one by one with their own Hypothesis strategy (schemathesis'
    # pytest plugin does not run under this pytest).
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json").exclude(path=_ENDLESS)
    checked = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=6,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            case.call_and_validate(timeout=30, checks=_CHECKS)

        check()
        checked += 1
    assert checked >= 25


def test_the_document_lists_the_main_operations(server: ServerProcess) -> None:
    paths = server.get("/openapi.json").json()["paths"]
    for path in (
        "/v1/events",
        "/v1/events/search",
        "/v1/trends",
        "/v1/metrics/query",
        "/v1/missions",
        "/v1/funnels",
        "/v1/retention",
        "/v1/sql",
        "/v1/stream",
        "/metrics",
        "/healthz",
        "/readyz",
    ):
        assert path in paths, path
    assert server.get("/docs").status in (200, 302, 307)


def test_metrics_exposition_names_its_format_once_and_parses(server: ServerProcess) -> None:
    """The Content-Type of /metrics has each parameter once (a repeated charset makes
    Go's mime.ParseMediaType, and so a Prometheus 3 scrape, refuse it), and the body
    parses with prometheus_client's parsers."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as om
    from prometheus_client.parser import text_string_to_metric_families as text

    plain = server.get("/metrics")
    assert plain.status == 200
    assert plain.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert any(f.name.startswith("tachimeter_server") for f in text(plain.body.decode()))
    negotiated = server.get("/metrics", {"Accept": "application/openmetrics-text"})
    assert negotiated.headers["content-type"] == (
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    )
    assert any(f.name.startswith("tachimeter_server") for f in om(negotiated.body.decode()))


def test_alert_intervals_from_the_first_year_are_an_empty_answer(server: ServerProcess) -> None:
    answer = server.get("/v1/alerts/intervals?start=0001-01-01")
    assert answer.status == 200, answer.body
    assert answer.json() == []


def test_dashboard_files_name_their_charset_once(server: ServerProcess) -> None:
    page = server.get("/")
    assert page.status == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    script = server.get("/static/app.js")
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"


def test_retention_by_default_ends_with_the_current_period(server: ServerProcess) -> None:
    import datetime as dt

    today = dt.datetime.now(dt.UTC).date()
    for period, periods, first in (
        ("day", 8, today - dt.timedelta(days=7)),
        ("week", 8, today - dt.timedelta(days=today.weekday(), weeks=7)),
    ):
        matrix = server.get(
            f"/v1/retention?start_event=session_started&period={period}&periods={periods}"
        ).json()
        starts = [c["start"][:10] for c in matrix["cohorts"]]
        assert starts[0] == first.isoformat(), (period, starts)
        assert len(starts) == periods
