"""Prometheus text format 0.0.4 and OpenMetrics 1.0 encoders, and content negotiation.

Output follows prometheus_client's rules so that its parsers, promtool and Prometheus
read it: floats as Go prints them (``+Inf``, ``NaN``, ``1.0``, ``1.5e+09``), label
values escaped (backslash, double quote, newline), HELP escaped per format. The text
format leaves out ``_created`` samples (Prometheus would store each as one more
series); OpenMetrics carries them, with ``# UNIT`` lines and a closing ``# EOF``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from tachimeter.metrics.family import MetricFamily, Sample
from tachimeter.metrics.primitives import format_float
from tachimeter.metrics.registry import REGISTRY, Registry

__all__ = [
    "CONTENT_TYPE_OPENMETRICS",
    "CONTENT_TYPE_TEXT",
    "choose_encoder",
    "encode_openmetrics",
    "encode_text",
    "generate_latest",
    "gzip_accepted",
]

CONTENT_TYPE_TEXT = "text/plain; version=0.0.4; charset=utf-8"
CONTENT_TYPE_OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"

_TEXT_TYPES = {
    "counter": "counter",
    "gauge": "gauge",
    "histogram": "histogram",
    "summary": "summary",
    "unknown": "untyped",
}
_HAS_CREATED = frozenset(("counter", "histogram", "summary"))

# OpenMetrics 1.0 and its 0.0.1 draft (which Prometheus 2 still offers): both are
# answered in 1.0.0. Plain text is answered in 0.0.4 whatever version was asked.
_OPENMETRICS_VERSIONS = frozenset(("", "1.0.0", "0.0.1"))

Encoder = Callable[[Registry], bytes]


def _escape_label_value(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def _label_text(pairs: tuple[tuple[str, str], ...]) -> str:
    if not pairs:
        return ""
    return "{" + ",".join([f'{k}="{_escape_label_value(v)}"' for k, v in pairs]) + "}"


def _sample_lines(out: list[str], samples: Iterable[Sample], skip: str | None) -> None:
    # Consecutive samples of one series share their label tuple: render it once.
    last_pairs: tuple[tuple[str, str], ...] | None = None
    last_text = ""
    for sample in samples:
        name = sample.name
        if name == skip:
            continue
        pairs = sample.labels
        if pairs is not last_pairs:
            last_pairs = pairs
            last_text = _label_text(pairs)
        out.append(f"{name}{last_text} {format_float(sample.value)}\n")


def encode_text(families: Iterable[MetricFamily]) -> bytes:
    """Families in the Prometheus text format 0.0.4."""
    out: list[str] = []
    for family in families:
        kind = family.kind
        name = family.name
        # The text format names a counter by its sample name, with _total.
        shown = name + "_total" if kind == "counter" else name
        documentation = family.documentation.replace("\\", "\\\\").replace("\n", "\\n")
        out.append(f"# HELP {shown} {documentation}\n# TYPE {shown} {_TEXT_TYPES[kind]}\n")
        _sample_lines(out, family.samples, name + "_created" if kind in _HAS_CREATED else None)
    # "replace": a lone surrogate in a label value must not fail the whole scrape.
    return "".join(out).encode("utf-8", "replace")


def encode_openmetrics(families: Iterable[MetricFamily]) -> bytes:
    """Families in OpenMetrics 1.0 text, ending with ``# EOF``."""
    out: list[str] = []
    for family in families:
        name = family.name
        documentation = (
            family.documentation.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        )
        out.append(f"# HELP {name} {documentation}\n# TYPE {name} {family.kind}\n")
        if family.unit:
            out.append(f"# UNIT {name} {family.unit}\n")
        _sample_lines(out, family.samples, None)
    out.append("# EOF\n")
    return "".join(out).encode("utf-8", "replace")


def _text_of(registry: Registry) -> bytes:
    return encode_text(registry.collect())


def _openmetrics_of(registry: Registry) -> bytes:
    return encode_openmetrics(registry.collect())


def generate_latest(registry: Registry | None = None, openmetrics: bool = False) -> bytes:
    """The exposition of ``registry`` (default: ``REGISTRY``) in text 0.0.4, or
    OpenMetrics 1.0 when ``openmetrics`` is true."""
    target = REGISTRY if registry is None else registry
    return _openmetrics_of(target) if openmetrics else _text_of(target)


def _media_ranges(header: str | None) -> Iterable[tuple[str, dict[str, str], float]]:
    """(media type, parameters, q) for each comma-separated part of an Accept header."""
    for part in (header or "").split(","):
        media, *raw_params = part.split(";")
        params: dict[str, str] = {}
        for raw in raw_params:
            key, _, value = raw.partition("=")
            params[key.strip().lower()] = value.strip().strip('"')
        try:
            q = float(params.pop("q", "1"))
        except ValueError:
            q = 0.0
        yield media.strip().lower(), params, q


def choose_encoder(accept_header: str | None) -> tuple[Encoder, str]:
    """The encoder and Content-Type answering an HTTP ``Accept`` header.

    The highest-``q`` acceptable choice wins (the first on ties): OpenMetrics for
    ``application/openmetrics-text`` (versions 1.0.0 and 0.0.1, or none), text 0.0.4
    otherwise, and text 0.0.4 when nothing offered is acceptable.
    """
    best: tuple[Encoder, str] = (_text_of, CONTENT_TYPE_TEXT)
    best_q = 0.0
    for media, params, q in _media_ranges(accept_header):
        if media == "application/openmetrics-text":
            if params.get("version", "") not in _OPENMETRICS_VERSIONS:
                continue
            choice: tuple[Encoder, str] = (_openmetrics_of, CONTENT_TYPE_OPENMETRICS)
        elif media in ("text/plain", "text/*", "*/*"):
            choice = (_text_of, CONTENT_TYPE_TEXT)
        else:
            continue
        if q > best_q:
            best, best_q = choice, q
    return best


def gzip_accepted(accept_encoding_header: str | None) -> bool:
    """Whether an ``Accept-Encoding`` header allows gzip (``gzip`` or ``*``, q > 0)."""
    return any(
        media in ("gzip", "x-gzip", "*") and q > 0
        for media, _, q in _media_ranges(accept_encoding_header)
    )
