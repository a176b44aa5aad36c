"""Property predicates as SQL over ``analytics_events.properties`` (SQLite JSON1).

The SQL has exactly the semantics of :meth:`PropertyFilter.matches` (which funnels use in
Python): booleans equal only booleans, numbers compare numerically, text only with text;
``ne`` and ``not_in`` also match events without the property; comparisons only ever
match numbers. Paths are bound as parameters (``$."key"``), never spliced into SQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tachimeter.errors import QueryError
from tachimeter.store.summaries import PropertyFilter, json_path

__all__ = ["filters_sql", "property_filters"]

_NUMERIC = "('integer', 'real')"


def _equal_any(column: str, path: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
    """SQL true when the value at ``path`` equals one of ``values`` (never NULL)."""
    texts = [v for v in values if isinstance(v, str)]
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    flags = sorted({"true" if v else "false" for v in values if isinstance(v, bool)})
    parts: list[str] = []
    params: list[Any] = []
    if texts:
        marks = ", ".join("?" * len(texts))
        parts.append(
            f"(json_type({column}, ?) = 'text' AND json_extract({column}, ?) IN ({marks}))"
        )
        params += [path, path, *texts]
    if numbers:
        marks = ", ".join("?" * len(numbers))
        parts.append(
            f"(json_type({column}, ?) IN {_NUMERIC} AND json_extract({column}, ?) IN ({marks}))"
        )
        params += [path, path, *numbers]
    types = [*flags, *(["null"] if any(v is None for v in values) else [])]
    if types:
        parts.append(f"json_type({column}, ?) IN ({', '.join('?' * len(types))})")
        params += [path, *types]
    return f"coalesce({' OR '.join(parts)}, 0)", params


def _element_equal(value: Any) -> tuple[str, list[Any]]:
    """SQL over a ``json_each`` row: the element equals ``value``."""
    if isinstance(value, bool):
        return "type = ?", ["true" if value else "false"]
    if isinstance(value, int | float):
        return f"(type IN {_NUMERIC} AND value = ?)", [value]
    return "(type = 'text' AND value = ?)", [value]


def _filter_sql(f: PropertyFilter, column: str) -> tuple[str, list[Any]]:
    path = json_path(f.segments)
    op, value = f.op, f.value
    if op == "exists":
        return f"json_type({column}, ?) IS NOT NULL", [path]
    if op == "not_exists":
        return f"json_type({column}, ?) IS NULL", [path]
    if op in ("eq", "ne", "in", "not_in"):
        values = (value,) if op in ("eq", "ne") else tuple(value)
        sql, params = _equal_any(column, path, values)
        return (sql, params) if op in ("eq", "in") else (f"NOT {sql}", params)
    if op == "contains":
        element, element_params = _element_equal(value)
        array = (
            f"(json_type({column}, ?) = 'array' AND EXISTS "
            f"(SELECT 1 FROM json_each({column}, ?) WHERE {element}))"
        )
        params = [path, path, *element_params]
        if isinstance(value, str):
            text = f"(json_type({column}, ?) = 'text' AND instr(json_extract({column}, ?), ?) > 0)"
            return f"coalesce({text} OR {array}, 0)", [path, path, value, *params]
        return f"coalesce({array}, 0)", params
    symbol = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[op]
    return (
        f"coalesce(json_type({column}, ?) IN {_NUMERIC} AND json_extract({column}, ?) "
        f"{symbol} ?, 0)",
        [path, path, value],
    )


def property_filters(
    where: Sequence[PropertyFilter] | PropertyFilter | None,
) -> tuple[PropertyFilter, ...]:
    """``where`` as a tuple of filters; ``QueryError`` for anything else."""
    if where is None:
        return ()
    if isinstance(where, PropertyFilter):
        return (where,)
    out = tuple(where)
    for i, f in enumerate(out):
        if not isinstance(f, PropertyFilter):
            raise QueryError(
                f"where[{i}] must be a PropertyFilter, got {f!r}; write "
                "PropertyFilter('path', 'eq', value)"
            )
    return out


def filters_sql(
    filters: Sequence[PropertyFilter], column: str = "properties"
) -> tuple[list[str], list[Any]]:
    """SQL conditions (to AND together) and their parameters.

    >>> sql, params = filters_sql([PropertyFilter("duration_ms", "gt", 100)])
    >>> params
    ['$."duration_ms"', '$."duration_ms"', 100]
    """
    clauses: list[str] = []
    params: list[Any] = []
    for f in filters:
        sql, p = _filter_sql(f, column)
        clauses.append(sql)
        params += p
    return clauses, params
