"""Text 0.0.4 and OpenMetrics output, read back by prometheus_client's parsers and the
real promtool; content negotiation."""

from __future__ import annotations

import math
import random
import re
import subprocess
import time
from collections.abc import Iterable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.utils import floatToGoString

from tachimeter.metrics import (
    CONTENT_TYPE_OPENMETRICS,
    CONTENT_TYPE_TEXT,
    MetricFamily,
    Registry,
    Sample,
    Summary,
    choose_encoder,
    encode_openmetrics,
    encode_text,
    generate_latest,
)
from tachimeter.metrics.exposition import gzip_accepted
from tachimeter.metrics.primitives import format_float

TRICKY_VALUES = [
    "plain",
    'quote"inside',
    "back\\slash",
    "new\nline",
    "ünïcødé ✓ 日本",
    "",
    " spaced ",
    "{braces}=,;#",
    '\\"\n',
]
HELP = 'Help with \\ backslash,\na newline and "quotes"'
BUCKETS = [0.001, 0.01, 0.1, 1.0, 10.0]

SeriesKey = tuple[str, frozenset[tuple[str, str]]]


def _populate(
    registry: Registry, rng: random.Random, help_text: str = HELP
) -> dict[SeriesKey, float]:
    """Record seeded random data; return the expected value of every sample, computed
    here in plain Python from the raw inputs."""
    expected: dict[SeriesKey, float] = {}

    def expect(name: str, labels: dict[str, str], value: float) -> None:
        expected[(name, frozenset(labels.items()))] = value

    requests = registry.counter("http_requests_total", help_text, ["route", "method"])
    for route in TRICKY_VALUES:
        total = 0.0
        for _ in range(rng.randint(1, 20)):
            amount = rng.choice([1, 1, 2, rng.uniform(0, 1000), rng.random() * 1e-9])
            requests.labels(route, "GET").inc(amount)
            total += amount
        expect("http_requests_total", {"route": route, "method": "GET"}, total)

    memory = registry.gauge("memory", "Memory in use", ["pool"], unit="bytes")
    for pool, value in [
        ("heap", 123456789.5),
        ("huge", 1e22),
        ("tiny", 1.5e-300),
        ("neg", -42.25),
        ("big_int", 2.0**53),
        ("seven_digits", 1234567.0),
        ("zero", 0.0),
    ]:
        memory.labels(pool).set(value)
        expect("memory_bytes", {"pool": pool}, value)

    latency = registry.timer("tool_latency", "Tool latency", ["tool"], buckets=BUCKETS)
    for tool in ("search", 'ed"it'):
        values = [rng.lognormvariate(-3, 2) for _ in range(rng.randint(50, 200))]
        for v in values:
            latency.labels(tool).observe(v)
        for bound in [*BUCKETS, math.inf]:
            le = "+Inf" if bound == math.inf else repr(bound)
            count = sum(1 for v in values if v <= bound)
            expect("tool_latency_seconds_bucket", {"tool": tool, "le": le}, count)
        expect("tool_latency_seconds_count", {"tool": tool}, len(values))
        total = 0.0
        for v in values:
            total += v
        expect("tool_latency_seconds_sum", {"tool": tool}, total)

    tokens = registry.summary("prompt_tokens", "Prompt tokens", ["model"], quantiles=(0.5, 0.99))
    values = [float(rng.randint(1, 5000)) for _ in range(500)]
    for v in values:
        tokens.labels("claude").observe(v)
    expect("prompt_tokens_count", {"model": "claude"}, 500)
    expect("prompt_tokens_sum", {"model": "claude"}, sum(values))
    for q in (0.5, 0.99):
        # Estimates: their accuracy is test_primitives' subject; here only the series
        # must exist (their round trip is checked against the summary itself).
        expect("prompt_tokens", {"model": "claude", "quantile": repr(q)}, math.nan)
    registry.gauge("idle", "A labelled gauge with no series yet", ["k"])
    registry.counter("plain", "No labels").inc(3)
    expect("plain_total", {}, 3.0)
    return expected


def _samples(families: Iterable[object]) -> dict[SeriesKey, float]:
    out: dict[SeriesKey, float] = {}
    for family in families:
        for s in family.samples:  # type: ignore[attr-defined]
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def _check_values(parsed: dict[SeriesKey, float], expected: dict[SeriesKey, float]) -> None:
    for key, value in expected.items():
        assert key in parsed, key
        if math.isnan(value):
            continue
        assert parsed[key] == value, key


def test_text_format_round_trips_through_prometheus_client_parser(registry: Registry) -> None:
    """Every value, name, type and label (with escapes) reads back exactly."""
    expected = _populate(registry, random.Random(11))
    text = generate_latest(registry).decode("utf-8")
    families = {f.name: f for f in parse_text(text)}
    assert {name: f.type for name, f in families.items()} == {
        "http_requests": "counter",
        "memory_bytes": "gauge",
        "tool_latency_seconds": "histogram",
        "prompt_tokens": "summary",
        "idle": "gauge",
        "plain": "counter",
    }
    assert families["http_requests"].documentation == HELP
    parsed = _samples(families.values())
    _check_values(parsed, expected)
    assert set(parsed) == set(expected)  # no _created samples in the text format
    quantile = parsed[("prompt_tokens", frozenset({("model", "claude"), ("quantile", "0.5")}))]
    summary = registry.get("prompt_tokens")
    assert isinstance(summary, Summary)
    assert quantile == summary.labels("claude").quantile(0.5)


def test_openmetrics_round_trips_through_prometheus_client_parser(registry: Registry) -> None:
    """The strict OpenMetrics parser accepts the output; values, units and _created
    timestamps read back."""
    before = time.time()
    expected = _populate(registry, random.Random(12))
    after = time.time()
    text = generate_latest(registry, openmetrics=True).decode("utf-8")
    assert text.endswith("# EOF\n")
    families = {f.name: f for f in parse_openmetrics(text)}
    assert families["memory_bytes"].unit == "bytes"
    assert families["tool_latency_seconds"].unit == "seconds"
    assert families["http_requests"].type == "counter"
    assert families["http_requests"].documentation == HELP
    parsed = _samples(families.values())
    _check_values(parsed, expected)
    created = {key: v for key, v in parsed.items() if key[0].endswith("_created")}
    expected_created = {
        name[: -len("_count")] + "_created" for name, _ in expected if name.endswith("_count")
    } | {"http_requests_created", "plain_created"}
    assert {name for name, _ in created} == expected_created
    assert all(before - 1e-3 <= v <= after + 1e-3 for v in created.values())


def test_text_format_layout(registry: Registry) -> None:
    """HELP/TYPE name counters by their _total sample; untyped collectors say untyped."""
    registry.counter("jobs", "Jobs run").inc()
    registry.register_collector(
        lambda: [MetricFamily("legacy", "unknown", "From elsewhere", (Sample("legacy", (), 2),))]
    )
    assert generate_latest(registry).decode() == (
        "# HELP jobs_total Jobs run\n"
        "# TYPE jobs_total counter\n"
        "jobs_total 1.0\n"
        "# HELP legacy From elsewhere\n"
        "# TYPE legacy untyped\n"
        "legacy 2.0\n"
    )


def test_empty_registry_encodings() -> None:
    """Nothing registered: empty text, and OpenMetrics with just # EOF."""
    assert generate_latest(Registry()) == b""
    assert generate_latest(Registry(), openmetrics=True) == b"# EOF\n"


def test_lone_surrogate_in_a_label_value_does_not_break_the_scrape() -> None:
    """A label value that is not valid UTF-8 is replaced, not raised."""
    family = MetricFamily("g", "gauge", "d", (Sample("g", (("k", "bad\udc80"),), 1.0),))
    assert encode_text([family]).endswith(b'g{k="bad?"} 1.0\n')
    assert encode_openmetrics([family]).endswith(b'g{k="bad?"} 1.0\n# EOF\n')


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_float_format_matches_prometheus_client(value: float) -> None:
    """Floats are written exactly as prometheus_client writes them."""
    assert format_float(value) == floatToGoString(value)


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        (None, CONTENT_TYPE_TEXT),
        ("", CONTENT_TYPE_TEXT),
        ("text/plain", CONTENT_TYPE_TEXT),
        ("*/*", CONTENT_TYPE_TEXT),
        ("application/json", CONTENT_TYPE_TEXT),
        ("application/openmetrics-text", CONTENT_TYPE_OPENMETRICS),
        ("application/openmetrics-text; version=1.0.0; charset=utf-8", CONTENT_TYPE_OPENMETRICS),
        # What Prometheus 2.x sends.
        (
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
            "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            CONTENT_TYPE_OPENMETRICS,
        ),
        # What Prometheus 3.x sends.
        (
            "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
            "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;"
            "escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1",
            CONTENT_TYPE_OPENMETRICS,
        ),
        ("text/plain;q=1, application/openmetrics-text;q=0.5", CONTENT_TYPE_TEXT),
        ("application/openmetrics-text;q=0, text/plain;q=0.1", CONTENT_TYPE_TEXT),
        ("application/openmetrics-text;version=2.0.0", CONTENT_TYPE_TEXT),
        ("application/openmetrics-text;q=bogus,text/plain;q=0.1", CONTENT_TYPE_TEXT),
    ],
)
def test_choose_encoder_negotiates_the_format(accept: str | None, content_type: str) -> None:
    """The highest-q acceptable format wins; anything else falls back to text 0.0.4."""
    encoder, chosen = choose_encoder(accept)
    assert chosen == content_type
    registry = Registry()
    registry.gauge("g", "d").set(1)
    body = encoder(registry)
    assert body.endswith(b"# EOF\n") == (content_type == CONTENT_TYPE_OPENMETRICS)


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        (None, False),
        ("", False),
        ("gzip", True),
        ("deflate, gzip;q=0.8", True),
        ("GZIP", True),
        ("gzip;q=0", False),
        ("identity", False),
        ("*", True),
        ("br, x-gzip", True),
    ],
)
def test_gzip_accepted(header: str | None, accepted: bool) -> None:
    """gzip is used when Accept-Encoding allows it with q > 0."""
    assert gzip_accepted(header) is accepted


def _promtool(promtool: str, body: bytes) -> tuple[int, list[str]]:
    done = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, timeout=60, check=False
    )
    lines = (done.stdout + done.stderr).decode().splitlines()
    return done.returncode, [line for line in lines if line.strip()]


def test_promtool_accepts_the_text_format(registry: Registry, promtool: str) -> None:
    """The real promtool parses and lints the text format without a single finding."""
    _populate(registry, random.Random(13))
    code, findings = _promtool(promtool, generate_latest(registry))
    assert (code, findings) == (0, [])


def test_promtool_parses_the_openmetrics_format(registry: Registry, promtool: str) -> None:
    """promtool 2.42 reads its input with the text-format parser. It parses our
    OpenMetrics output without error (given help text without '"', which OpenMetrics
    escapes and the text format does not), and its only findings are the
    OpenMetrics-only sample names (_total, _created) lacking a text-format HELP line.
    The Prometheus server's own OpenMetrics parser is exercised in test_http."""
    _populate(registry, random.Random(14), help_text="Requests served, with \\ and\n")
    code, findings = _promtool(promtool, generate_latest(registry, openmetrics=True))
    assert code in (0, 3), findings  # 1 would be a parse error
    assert findings
    for line in findings:
        assert re.fullmatch(r"\w+_(total|created) no help text", line), line
