"""Adapters from the store and the query engine to the queries conditions read.

Every adapter reads through read-only connections (a store's pooled readers, or the
connection given), so evaluating alerts never holds the store's writer.

======================  =====================================  ==========================
adapter                 reads                                  for
======================  =====================================  ==========================
:class:`MetricSource`   a ``MetricQuery`` of                   MetricThreshold, Anomaly,
                        :mod:`tachimeter.analyze.metrics`      Custom
:class:`MetricErrorRatio`  exact increases of two counters     ErrorRate
:class:`EventErrorRatio`   counts of stored events             ErrorRate
:class:`MetricLastSeen`    ``metric_series.last_seen``         Absence
:class:`EventLastSeen`     the newest stored event of a name   Absence
:class:`EventSpend`        tokens and cost of stored LLM       Budget
                           events (spec 414 missions and
                           spec 406 business events)
======================  =====================================  ==========================
"""

from __future__ import annotations

import datetime as dt
import math
import sqlite3
from collections import defaultdict
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Final

import msgspec

from tachimeter.alerts.conditions import LastSeen, RatioSample, SpendRequest
from tachimeter.alerts.durations import DurationLike, parse_duration
from tachimeter.analyze.connection import ReadSource, read_connection
from tachimeter.analyze.filters import filters_sql
from tachimeter.analyze.metrics import (
    Aggregation,
    LabelMatcher,
    MetricQuery,
    MetricsEngine,
    MetricSeries,
    Resolution,
)
from tachimeter.errors import ConfigError, QueryError
from tachimeter.model.event_types import EventType
from tachimeter.model.prices import DEFAULT_PRICE_TABLE, PriceTable
from tachimeter.model.timestamps import format_timestamp, parse_timestamp
from tachimeter.model.tokens import TokenUsage
from tachimeter.store.summaries import PropertyFilter

__all__ = [
    "EventErrorRatio",
    "EventLastSeen",
    "EventSpend",
    "MetricErrorRatio",
    "MetricLastSeen",
    "MetricSource",
    "metric_catalog",
]

_US: Final = 1_000_000
# About 250 evaluation times per range query when no step is given: a dashboard chart's
# width, and plenty for a detector.
_DEFAULT_POINTS: Final = 250
_decode_json = msgspec.json.Decoder().decode


def _matchers(matchers: Sequence[LabelMatcher | str], owner: str) -> tuple[LabelMatcher, ...]:
    try:
        return tuple(m if isinstance(m, LabelMatcher) else LabelMatcher.parse(m) for m in matchers)
    except QueryError as exc:
        raise ConfigError(f"{owner}.matchers: {exc}") from None


def _names(metric: str | Sequence[str], owner: str) -> tuple[str, ...]:
    names = (metric,) if isinstance(metric, str) else tuple(metric)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"{owner}.metric must name a metric, got {metric!r}")
    return names


class MetricSource:
    """A :class:`~tachimeter.analyze.metrics.MetricQuery` evaluated as of ``now``.

    ``range`` 0 (the default) is an instant query, one value per series at ``now``; a
    range gives the series over ``[now - range, now]`` every ``step`` (default: about
    250 points), for detectors. The other arguments are those of ``MetricQuery``
    (durations also as text: ``window="5m"``).

    >>> import sqlite3, datetime as dt
    >>> from tachimeter.store.migrator import Migrator
    >>> from tachimeter.store.timeseries import TimeSeriesStore
    >>> conn = sqlite3.connect(":memory:", isolation_level=None)
    >>> _ = Migrator(conn).up()
    >>> now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    >>> us = int(now.timestamp()) * 10**6
    >>> _ = TimeSeriesStore(conn).write_samples("queue_depth", {"q": "a"}, [us - 10**6], [7.0])
    >>> [s.values.tolist() for s in MetricSource(conn, "queue_depth")(now)]
    [[7.0]]
    """

    __slots__ = (
        "_engine",
        "aggregation",
        "group_by",
        "lookback",
        "matchers",
        "names",
        "quantiles",
        "range",
        "resolution",
        "step",
        "window",
    )

    def __init__(
        self,
        source: ReadSource | Any,
        metric: str | Sequence[str],
        *,
        matchers: Sequence[LabelMatcher | str] = (),
        aggregation: Aggregation | None = None,
        window: DurationLike | None = None,
        group_by: Sequence[str] | None = None,
        quantiles: Sequence[float] = (0.99,),
        range: DurationLike = 0,
        step: DurationLike | None = None,
        lookback: DurationLike = 300,
        resolution: Resolution = "raw",
    ) -> None:
        owner = "MetricSource"
        self.names = _names(metric, owner)
        self.matchers = _matchers(matchers, owner)
        self.aggregation = aggregation
        self.window = (
            None if window is None else parse_duration(window, f"{owner}.window", allow_zero=False)
        )
        self.group_by = None if group_by is None else tuple(group_by)
        self.quantiles = tuple(quantiles)
        self.range = parse_duration(range, f"{owner}.range")
        self.step = (
            None if step is None else parse_duration(step, f"{owner}.step", allow_zero=False)
        )
        self.lookback = parse_duration(lookback, f"{owner}.lookback", allow_zero=False)
        self.resolution = resolution
        self._engine = MetricsEngine(source)
        try:
            self._query(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
        except QueryError as exc:
            raise ConfigError(f"{owner} for {', '.join(self.names)}: {exc}") from None

    def _query(self, now: dt.datetime) -> MetricQuery:
        end = now.timestamp()
        step = self.step
        if step is None:
            step = max(1.0, math.ceil(self.range / _DEFAULT_POINTS)) if self.range else 60.0
        return MetricQuery(
            names=self.names,
            start=end - self.range,
            end=end,
            matchers=self.matchers,
            step=step,
            aggregation=self.aggregation,
            group_by=self.group_by,
            window=self.window,
            quantiles=self.quantiles,
            resolution=self.resolution,
            lookback=self.lookback,
        )

    def __call__(self, now: dt.datetime) -> list[MetricSeries]:
        """The query's series as of ``now``."""
        return self._engine.query(self._query(now)).series

    def describe(self) -> str:
        """PromQL-like text: ``rate(requests_total{route="api"}[5m])``."""
        selector = "|".join(self.names)
        if self.matchers:
            inner = ",".join(f'{m.label}{m.op}"{m.value}"' for m in self.matchers)
            selector += "{" + inner + "}"
        if self.aggregation is None:
            return selector
        window = f"[{self.window:g}s]" if self.window else ""
        by = f" by ({', '.join(self.group_by)})" if self.group_by else ""
        return f"{self.aggregation}{by}({selector}{window})"


class MetricErrorRatio:
    """Errors and totals from two counters' exact increases over the window.

    ``total`` counts every attempt (errors included), ``errors`` the failed ones; both
    are summed per ``group_by`` labels. A group with errors but no total is skipped.
    """

    __slots__ = ("_engine", "errors", "group_by", "matchers", "total")

    def __init__(
        self,
        source: ReadSource | Any,
        errors: str,
        total: str,
        *,
        matchers: Sequence[LabelMatcher | str] = (),
        group_by: Sequence[str] = (),
    ) -> None:
        self.errors = _names(errors, "MetricErrorRatio")
        self.total = _names(total, "MetricErrorRatio")
        self.matchers = _matchers(matchers, "MetricErrorRatio")
        self.group_by = tuple(group_by)
        self._engine = MetricsEngine(source)

    def __call__(self, start: dt.datetime, end: dt.datetime) -> list[RatioSample]:
        """Errors and totals per group over ``[start, end)``."""
        kwargs: dict[str, Any] = {"matchers": self.matchers, "group_by": self.group_by}
        errors = self._engine.total_increase(self.errors, start, end, **kwargs)
        totals = self._engine.total_increase(self.total, start, end, **kwargs)
        return [
            RatioSample(
                errors=errors.get(key, 0.0),
                total=total,
                labels=dict(zip(self.group_by, key, strict=True)),
            )
            for key, total in sorted(totals.items())
        ]

    def describe(self) -> str:
        """``errors_total / total_total``."""
        return f"{'|'.join(self.errors)} / {'|'.join(self.total)}"


class EventErrorRatio:
    """Errors and totals from stored events over the window.

    ``events`` names the events counted (None: all); among them an error is an event of
    category ``error`` (spec 406), or, when given, one named in ``errors`` or matching
    every ``error_filter`` (``PropertyFilter("success", "eq", False)``). One sample,
    without labels.
    """

    __slots__ = ("_source", "_sql", "errors", "events")

    def __init__(
        self,
        source: ReadSource | Any,
        *,
        events: Sequence[str] | None = None,
        errors: Sequence[str] | None = None,
        error_filter: Sequence[PropertyFilter] | PropertyFilter | None = None,
    ) -> None:
        self._source = source
        self.events = None if events is None else tuple(events)
        self.errors = None if errors is None else tuple(errors)
        filters = (
            ()
            if error_filter is None
            else (error_filter,)
            if isinstance(error_filter, PropertyFilter)
            else tuple(error_filter)
        )
        where: list[str] = ["timestamp >= ?", "timestamp < ?"]
        params: list[Any] = []
        names = None if self.events is None else sorted({*self.events, *(self.errors or ())})
        if names is not None:
            where.append(f"event_name IN ({', '.join('?' * len(names))})")
            params += names
        conditions: list[str] = []
        error_params: list[Any] = []
        if self.errors is not None:
            conditions.append(f"event_name IN ({', '.join('?' * len(self.errors))})")
            error_params += list(self.errors)
        if filters:
            clauses, fparams = filters_sql(filters)
            conditions += clauses
            error_params += fparams
        if not conditions:
            conditions.append("category = 'error'")
        error_sql = " AND ".join(f"({c})" for c in conditions)
        self._sql = (
            f"SELECT count(*), coalesce(sum(CASE WHEN {error_sql} THEN 1 ELSE 0 END), 0) "
            f"FROM analytics_events WHERE {' AND '.join(where)}",
            error_params,
            params,
        )

    def __call__(self, start: dt.datetime, end: dt.datetime) -> list[RatioSample]:
        """Errors and total over ``[start, end)``."""
        sql, error_params, params = self._sql
        with read_connection(self._source) as conn:
            total, errors = conn.execute(
                sql, (*error_params, format_timestamp(start), format_timestamp(end), *params)
            ).fetchone()
        return [RatioSample(errors=float(errors), total=float(total))]

    def describe(self) -> str:
        """``errors among <events>``."""
        names = "all events" if self.events is None else ", ".join(self.events)
        return f"errors among {names}"


class MetricLastSeen:
    """When each series of a metric last had a sample (``metric_series.last_seen``)."""

    __slots__ = ("_engine", "matchers", "names")

    def __init__(
        self,
        source: ReadSource | Any,
        metric: str | Sequence[str],
        *,
        matchers: Sequence[LabelMatcher | str] = (),
    ) -> None:
        self.names = _names(metric, "MetricLastSeen")
        self.matchers = _matchers(matchers, "MetricLastSeen")
        self._engine = MetricsEngine(source)

    def __call__(self, now: dt.datetime) -> list[LastSeen]:
        """One entry per matching series."""
        infos = self._engine.series(self.names, self.matchers)
        return [
            LastSeen(
                at=parse_timestamp(info.last_seen) if info.last_seen else None,
                labels={"__name__": info.name, **info.labels}
                if len(self.names) > 1
                else dict(info.labels),
            )
            for info in infos
        ]

    def describe(self) -> str:
        """The metric names."""
        return "|".join(self.names)


class EventLastSeen:
    """When an event of this name was last stored, labelled ``{"event": name}``."""

    __slots__ = ("_source", "event")

    def __init__(self, source: ReadSource | Any, event: str) -> None:
        if not isinstance(event, str) or not event:
            raise ConfigError(f"EventLastSeen.event must name an event, got {event!r}")
        self._source = source
        self.event = event

    def __call__(self, now: dt.datetime) -> list[LastSeen]:
        """The newest event's time (None: never)."""
        with read_connection(self._source) as conn:
            # Reads the end of the (event_name, timestamp) index: one seek.
            (newest,) = conn.execute(
                "SELECT max(timestamp) FROM analytics_events WHERE event_name = ? "
                "AND timestamp <= ?",
                (self.event, format_timestamp(now)),
            ).fetchone()
        at = None if newest is None else parse_timestamp(newest)
        return [LastSeen(at=at, labels={"event": self.event})]

    def describe(self) -> str:
        """``event <name>``."""
        return f"event {self.event}"


_LLM_EVENTS: Final = (EventType.TOKENS_CONSUMED.event_name, EventType.COST_INCURRED.event_name)
_TOKEN_TYPES: Final = frozenset({"input_tokens", "output_tokens", "total_tokens"})
_SPEND_COLUMNS: Final = """
    user_id,
    timestamp,
    json_extract(properties, '$."gen_ai.usage.input_tokens"'),
    json_extract(properties, '$."gen_ai.usage.output_tokens"'),
    json_extract(properties, '$."gen_ai.usage.cache_read.input_tokens"'),
    json_extract(properties, '$."gen_ai.usage.cache_creation.input_tokens"'),
    json_extract(properties, '$."gen_ai.usage.reasoning.output_tokens"'),
    json_type(properties, '$.cost_usd'),
    json_extract(properties, '$.cost_usd'),
    json_extract(properties, '$.metric_type'),
    json_extract(properties, '$.value'),
    coalesce(json_extract(properties, '$."gen_ai.request.model"'),
             json_extract(properties, '$.model')),
    json_extract(properties, '$."gen_ai.provider.name"'),
    CASE WHEN json_type(properties, '$.tags') = 'array'
         THEN json_extract(properties, '$.tags') END
"""


class EventSpend:
    """Tokens and cost spent, per scope, from the stored LLM events.

    Reads ``tokens_consumed`` and ``cost_incurred`` events in the window (through the
    ``(event_name, timestamp)`` index). Tokens are input + output (cache tokens are part
    of input, reasoning tokens part of output, as OpenTelemetry counts them), from the
    ``gen_ai.usage.*`` properties of mission events or the ``input_tokens``,
    ``output_tokens`` and ``total_tokens`` values of business events. Cost is the
    event's own ``cost_usd`` (missions) or a ``cost_usd`` business event; a mission event
    without any ``cost_usd`` is priced by the price table at its time, and one whose
    ``cost_usd`` is null (an unknown model) is left out: never counted as free.
    Scopes: ``user`` (the event's user id), ``model`` (``gen_ai.request.model`` or the
    business event's model), ``tag`` (the mission's tags), ``total``.

    Emit either a total or its input/output parts for one call, not both: the parts and
    the total are added.
    """

    __slots__ = ("_prices", "_source", "events")

    def __init__(
        self,
        source: ReadSource | Any,
        *,
        prices: PriceTable | None = None,
        events: Sequence[str] = _LLM_EVENTS,
    ) -> None:
        self._source = source
        self._prices = prices
        self.events = tuple(events)
        if not self.events:
            raise ConfigError("EventSpend.events must name at least one event")

    def __call__(self, request: SpendRequest) -> dict[str, float]:
        """Spend per scope value in ``[request.start, request.end)``."""
        marks = ", ".join("?" * len(self.events))
        sql = (
            f"SELECT {_SPEND_COLUMNS} FROM analytics_events "
            f"WHERE event_name IN ({marks}) AND timestamp >= ? AND timestamp < ?"
        )
        params = (*self.events, format_timestamp(request.start), format_timestamp(request.end))
        totals: dict[str, float] = defaultdict(float)
        with read_connection(self._source) as conn:
            rows = conn.execute(sql, params).fetchall()
        for row in rows:
            amount = self._amount(row, request.kind)
            if amount is None or amount == 0:
                continue
            for key in _scope_keys(row, request.scope):
                totals[key] += amount
        return dict(totals)

    def _amount(self, row: Sequence[Any], kind: str) -> float | None:
        (_, stamp, inp, out, cache_read, cache_creation, reasoning, cost_type, cost,
         metric_type, value, model, provider, _) = row  # fmt: skip
        has_usage = inp is not None or out is not None
        if kind == "tokens":
            if has_usage:
                return float(_count(inp) + _count(out))
            if metric_type in _TOKEN_TYPES:
                return _number(value)
            return None
        if cost_type is not None:
            return _number(cost) if cost_type in ("integer", "real") else None
        if metric_type == "cost_usd":
            return _number(value)
        if not has_usage or not isinstance(model, str):
            return None
        try:
            usage = TokenUsage(
                input_tokens=_count(inp),
                output_tokens=_count(out),
                cache_read_tokens=_count(cache_read),
                cache_creation_tokens=_count(cache_creation),
                reasoning_tokens=_count(reasoning),
            )
        except (ValueError, TypeError):
            return None
        prices = self._prices if self._prices is not None else DEFAULT_PRICE_TABLE
        estimate = prices.estimate(
            model,
            usage,
            provider=provider if isinstance(provider, str) else None,
            at=parse_timestamp(stamp),
        )
        total: Decimal | None = estimate.total
        return None if total is None else float(total)

    def describe(self) -> str:
        """``events tokens_consumed, cost_incurred``."""
        return f"events {', '.join(self.events)}"


def _scope_keys(row: Sequence[Any], scope: str) -> list[str]:
    if scope == "total":
        return [""]
    if scope == "user":
        return [row[0]] if isinstance(row[0], str) and row[0] else []
    if scope == "model":
        return [row[11]] if isinstance(row[11], str) and row[11] else []
    tags = row[13]
    if not tags:
        return []
    try:
        decoded = _decode_json(tags)
    except msgspec.DecodeError:
        return []
    return sorted({t for t in decoded if isinstance(t, str) and t})


def _count(value: object) -> int:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return int(value)
    return 0


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def metric_catalog(source: ReadSource | Any) -> frozenset[str]:
    """Names of every metric in the store: what rule files are checked against."""
    connection = getattr(source, "connection", None)
    reader = connection if isinstance(connection, sqlite3.Connection) else source
    with read_connection(reader) as conn:
        try:
            rows = conn.execute("SELECT DISTINCT name FROM metric_series").fetchall()
        except sqlite3.OperationalError as exc:
            raise QueryError(
                f"cannot read the metric catalog ({exc}); is the database migrated?"
            ) from exc
    return frozenset(r[0] for r in rows)
