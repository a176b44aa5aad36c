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
