"""In-memory metrics: Counter, Gauge, Histogram, Summary, Timer, registries, exposition.

Pure in-memory state with Prometheus semantics; the only I/O is the optional
``/metrics`` server (``start_http_server``) and the ASGI/WSGI apps. ``tachimeter``
re-exports the everyday names (``counter``, ``gauge``, ``histogram``, ``summary``,
``timer``, ``generate_latest``).

>>> from tachimeter.metrics import Registry, generate_latest
>>> registry = Registry()
>>> tokens = registry.counter("llm_tokens_used", "LLM tokens", ["token_type"])
>>> tokens.labels("prompt").inc(500)
>>> print(generate_latest(registry).decode(), end="")
# HELP llm_tokens_used_total LLM tokens
# TYPE llm_tokens_used_total counter
llm_tokens_used_total{token_type="prompt"} 500.0
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tachimeter.metrics.agent import (
    ERROR_TYPES,
    LOOP_DURATION_BUCKETS,
    AgentMetrics,
    ErrorType,
    classify_error,
)
from tachimeter.metrics.exposition import (
    CONTENT_TYPE_OPENMETRICS,
    CONTENT_TYPE_TEXT,
    choose_encoder,
    encode_openmetrics,
    encode_text,
    generate_latest,
)
from tachimeter.metrics.family import MetricFamily, MetricKind, Sample
from tachimeter.metrics.multiprocess import GaugeMode, MultiprocessCollector, MultiprocessWriter
from tachimeter.metrics.primitives import (
    DEFAULT_BUCKETS,
    DEFAULT_QUANTILES,
    OVERFLOW_LABEL_VALUE,
    Counter,
    CounterChild,
    Gauge,
    GaugeChild,
    Histogram,
    HistogramChild,
    Metric,
    Summary,
    SummaryChild,
    Timer,
    exponential_buckets,
    linear_buckets,
)
from tachimeter.metrics.registry import (
    REGISTRY,
    Collector,
    Registry,
    counter,
    gauge,
    histogram,
    summary,
    timer,
)
from tachimeter.metrics.sketch import QuantileSketch
from tachimeter.metrics.system import SystemMetrics

if TYPE_CHECKING:
    from tachimeter.metrics.http import make_asgi_app, make_wsgi_app, start_http_server

# The HTTP serving code pulls in http.server, email and ssl (about 40 ms): it loads
# on first use, so that `import tachimeter` stays cheap for the many programs that
# never serve /metrics themselves.
_LAZY = frozenset(("make_asgi_app", "make_wsgi_app", "start_http_server"))


def __getattr__(name: str) -> object:
    if name in _LAZY:
        from tachimeter.metrics import http

        return getattr(http, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CONTENT_TYPE_OPENMETRICS",
    "CONTENT_TYPE_TEXT",
    "DEFAULT_BUCKETS",
    "DEFAULT_QUANTILES",
    "ERROR_TYPES",
    "LOOP_DURATION_BUCKETS",
    "OVERFLOW_LABEL_VALUE",
    "REGISTRY",
    "AgentMetrics",
    "Collector",
    "Counter",
    "CounterChild",
    "ErrorType",
    "Gauge",
    "GaugeChild",
    "GaugeMode",
    "Histogram",
    "HistogramChild",
    "Metric",
    "MetricFamily",
    "MetricKind",
    "MultiprocessCollector",
    "MultiprocessWriter",
    "QuantileSketch",
    "Registry",
    "Sample",
    "Summary",
    "SummaryChild",
    "SystemMetrics",
    "Timer",
    "choose_encoder",
    "classify_error",
    "counter",
    "encode_openmetrics",
    "encode_text",
    "exponential_buckets",
    "gauge",
    "generate_latest",
    "histogram",
    "linear_buckets",
    "make_asgi_app",
    "make_wsgi_app",
    "start_http_server",
    "summary",
    "timer",
]
