"""Spec 355 rows: event <-> analytics_events row, metric points, predefined builders."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from strategies import events

from tachimeter.errors import ValidationError
from tachimeter.model import AnalyticsEvent, EventBuilder, EventPriority, EventType, MetricBuilder
from tachimeter.model.predefined import (
    active_users,
    api_request,
    database_query,
    forge_item_created,
    mission_completed,
    mission_created,
    missions_created,
    search_performed,
    spec_created,
)
from tachimeter.model.rows import EventRow, MetricType, event_to_row, row_to_event


def test_row_follows_the_design_mapping() -> None:
    event = (
        EventBuilder.page("/settings")
        .user_id("u1")
        .session("s1")
        .priority(EventPriority.HIGH)
        .property("tab", "keys")
        .context({"browser": "firefox"})
        .referrer("/home")
        .build()
    )
    row = event_to_row(event)
    assert (row.event_type, row.event_name) == ("page", "page_view")
    assert (row.user_id, row.session_id, row.page_url, row.referrer) == (
        "u1",
        "s1",
        "/settings",
        "/home",
    )
    assert json.loads(row.properties or "") == {"tab": "keys"}
    context = json.loads(row.context or "")
    assert context["browser"] == "firefox"
    assert context["category"] == "usage" and context["priority"] == "high"
    assert context["library"]["name"] == "tachimeter"
    assert context["os"] == event.metadata.os
    assert len(row.timestamp) == 27
    assert len(row.astuple()) == 10


@settings(max_examples=200, deadline=None)
@given(events())
def test_row_round_trip_is_exact(event: AnalyticsEvent) -> None:
    assert row_to_event(event_to_row(event)) == event
    assert row_to_event(event_to_row(event).astuple()) == event


def test_rows_from_other_tools_decode_with_defaults() -> None:
    row = EventRow("018f0000-0000-7000-8000-000000000000", "track", "cpu_usage",
                   "2024-01-01 00:00:00", None, None, '{"metric": "cpu", "value": 0.5, '
                   '"unit": "ratio", "tags": {}}', None, None, None)  # fmt: skip
    event = row_to_event(row)
    assert event.event_type is EventType.CPU_USAGE
    assert event.priority is EventPriority.NORMAL
    assert type(event.data).__name__ == "PerformanceEventData"


@pytest.mark.parametrize("column", ["properties", "context"])
def test_malformed_json_in_a_row_is_reported(column: str) -> None:
    values = dict.fromkeys(EventRow.__struct_fields__)
    values.update(id="018f0000-0000-7000-8000-000000000000", event_type="track",
                  event_name="x", timestamp="2024-01-01T00:00:00.000000Z")  # fmt: skip
    values[column] = "{not json"
    with pytest.raises(ValidationError, match=f"{column} is not valid JSON") as info:
        row_to_event(EventRow(**values))
    assert info.value.path == column


def test_metric_builder() -> None:
    point = MetricBuilder.gauge("users.active", 3).tag("region", "eu").unit("users").build()
    assert point.metric_type is MetricType.GAUGE and point.value == 3.0
    row = point.to_row()
    assert row[1:4] == ("users.active", "gauge", 3.0)
    assert json.loads(row[5]) == {"region": "eu"} and row[6] == "users"
    assert MetricBuilder.timer("t", 5).build().unit == "ms"
    assert MetricBuilder.histogram("h", 1).build().metric_type is MetricType.HISTOGRAM
    assert MetricBuilder.counter("c", 1).build().to_row()[5] is None


def test_predefined_events_and_metrics() -> None:
    assert mission_created("m").build().data == {"mission_id": "m"}
    assert mission_completed("m", 5).build().data == {"mission_id": "m", "duration_ms": 5}
    assert mission_completed("m", 5).build().event_type is EventType.MISSION_COMPLETED
    assert spec_created("s", "m").build().data == {"spec_id": "s", "mission_id": "m"}
    assert forge_item_created("i", "t").build().data == {"item_id": "i", "item_type": "t"}
    assert search_performed("q", 3).build().data == {"query": "q", "result_count": 3}
    req = api_request("/run", 12.0, 500).build()
    assert (req.name, req.unit, req.tags) == (
        "api.request.duration",
        "ms",
        {"endpoint": "/run", "status": "500"},
    )
    assert active_users(4).build().name == "users.active"
    assert missions_created().build().value == 1.0
    assert database_query("select", 2.0).build().tags == {"query_type": "select"}
