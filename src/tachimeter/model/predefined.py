"""Spec 355's predefined events and metrics, on the one builder API.

>>> mission_created("m-1").build().data
{'mission_id': 'm-1'}
>>> api_request("/run", 12.0, 200).build().tags
{'endpoint': '/run', 'status': '200'}
"""

from __future__ import annotations

from tachimeter.model.events import EventBuilder
from tachimeter.model.rows import MetricBuilder

__all__ = [
    "active_users",
    "api_request",
    "database_query",
    "forge_item_created",
    "mission_completed",
    "mission_created",
    "missions_created",
    "search_performed",
    "spec_created",
]


def mission_created(mission_id: str) -> EventBuilder:
    """``mission_created`` with its mission id."""
    return EventBuilder.track("mission_created").property("mission_id", mission_id)


def mission_completed(mission_id: str, duration_ms: int) -> EventBuilder:
    """``mission_completed`` with its mission id and duration."""
    return (
        EventBuilder.track("mission_completed")
        .property("mission_id", mission_id)
        .property("duration_ms", duration_ms)
    )


def spec_created(spec_id: str, mission_id: str) -> EventBuilder:
    """``spec_created`` for a mission."""
    return (
        EventBuilder.track("spec_created")
        .property("spec_id", spec_id)
        .property("mission_id", mission_id)
    )


def forge_item_created(item_id: str, item_type: str) -> EventBuilder:
    """``forge_item_created`` with the item's id and type."""
    return (
        EventBuilder.track("forge_item_created")
        .property("item_id", item_id)
        .property("item_type", item_type)
    )


def search_performed(query: str, result_count: int) -> EventBuilder:
    """``search_performed`` with the query and the number of results."""
    return (
        EventBuilder.track("search_performed")
        .property("query", query)
        .property("result_count", result_count)
    )


def api_request(endpoint: str, duration_ms: float, status: int) -> MetricBuilder:
    """Timer ``api.request.duration`` tagged with endpoint and status."""
    return (
        MetricBuilder.timer("api.request.duration", duration_ms)
        .tag("endpoint", endpoint)
        .tag("status", status)
    )


def active_users(count: float) -> MetricBuilder:
    """Gauge ``users.active``."""
    return MetricBuilder.gauge("users.active", count)


def missions_created() -> MetricBuilder:
    """Counter ``missions.created`` + 1."""
    return MetricBuilder.counter("missions.created", 1.0)


def database_query(query_type: str, duration_ms: float) -> MetricBuilder:
    """Timer ``database.query.duration`` tagged with the query type."""
    return MetricBuilder.timer("database.query.duration", duration_ms).tag("query_type", query_type)
