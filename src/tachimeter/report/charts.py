"""Inline SVG charts drawn from numbers: no script, no library, no network.

The SVG carries structure and class names only (``chart``, ``axis``, ``grid``,
``series-0``...); colours come from the embedding page's stylesheet, so one chart reads
in light and dark mode. Every bar has a ``<title>``: hovering shows its exact value.

>>> svg = stacked_bars(["2025-03-01", "2025-03-02"], [BarSeries("events", [3, 5])],
...                    title="Events per day")
>>> svg.startswith("<svg") and svg.count("<rect") >= 2
True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from html import escape
from typing import Final, NamedTuple

__all__ = ["BarSeries", "horizontal_bars", "nice_ticks", "stacked_bars"]

_WIDTH: Final = 720
_HEIGHT: Final = 260
_LEFT: Final = 56  # room for y-axis labels such as "12.5k"
_RIGHT: Final = 12
_TOP: Final = 30  # the legend
_BOTTOM: Final = 34  # x-axis labels
# At most this many x-axis labels: more would overlap at 720 px.
_MAX_X_LABELS: Final = 12
_ROW_HEIGHT: Final = 22
_LABEL_WIDTH: Final = 170


class BarSeries(NamedTuple):
    """One stacked series: its legend name and one value per bar."""

    name: str
    values: Sequence[float]


def nice_ticks(maximum: float, count: int = 4) -> list[float]:
    """Evenly spaced round tick values from 0 covering ``maximum`` (steps 1, 2, 2.5, 5 x 10^k).

    >>> nice_ticks(87)
    [0.0, 25.0, 50.0, 75.0, 100.0]
    >>> nice_ticks(0)
    [0.0, 1.0]
    """
    if not maximum > 0 or not math.isfinite(maximum):
        return [0.0, 1.0]
    raw = maximum / count
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    steps = math.ceil(maximum / step - 1e-9)
    return [round(i * step, 10) for i in range(steps + 1)]


def _short(value: float) -> str:
    """A tick label: 950, 1.5k, 2M, 0.25."""
    magnitude = abs(value)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if magnitude >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.4g}"


def _legend(names: Sequence[str], x: float, y: float) -> list[str]:
    out = []
    for i, name in enumerate(names):
        out.append(
            f'<rect class="series-{i}" x="{x:.1f}" y="{y - 9:.1f}" width="10" height="10"/>'
            f'<text class="legend" x="{x + 14:.1f}" y="{y:.1f}">{escape(name)}</text>'
        )
        x += 24 + 7.5 * len(name)
    return out


def stacked_bars(
    labels: Sequence[str],
    series: Sequence[BarSeries],
    *,
    title: str,
    label_format: Callable[[str], str] = lambda day: day[5:],
) -> str:
    """A vertical bar chart, one bar per label, the series stacked bottom-up.

    ``label_format`` shortens x labels (default: ``YYYY-MM-DD`` -> ``MM-DD``); labels are
    thinned to at most 12 so they never overlap.
    """
    n = len(labels)
    for s in series:
        if len(s.values) != n:
            raise ValueError(f"series {s.name!r} has {len(s.values)} values for {n} labels")
    totals = [sum(float(s.values[i]) for s in series) for i in range(n)]
    ticks = nice_ticks(max(totals, default=0.0))
    top = ticks[-1]
    plot_w = _WIDTH - _LEFT - _RIGHT
    plot_h = _HEIGHT - _TOP - _BOTTOM
    base = _TOP + plot_h
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {_WIDTH} '
        f'{_HEIGHT}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    for tick in ticks:
        y = base - plot_h * tick / top
        parts.append(
            f'<line class="grid" x1="{_LEFT}" x2="{_WIDTH - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="axis" x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{_short(tick)}</text>"
        )
    band = plot_w / n if n else plot_w
    bar = max(1.0, band * 0.8)
    every = max(1, math.ceil(n / _MAX_X_LABELS))
    for i, label in enumerate(labels):
        x = _LEFT + band * i + (band - bar) / 2
        y = float(base)
        for k, s in enumerate(series):
            value = float(s.values[i])
            if value <= 0:
                continue
            h = plot_h * value / top
            y -= h
            parts.append(
                f'<rect class="series-{k}" x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" '
                f'height="{h:.1f}"><title>{escape(label)} {escape(s.name)}: '
                f"{_number(value)}</title></rect>"
            )
        if i % every == 0:
            parts.append(
                f'<text class="axis" x="{x + bar / 2:.1f}" y="{base + 16}" '
                f'text-anchor="middle">{escape(label_format(label))}</text>'
            )
    parts.append(
        f'<line class="baseline" x1="{_LEFT}" x2="{_WIDTH - _RIGHT}" y1="{base}" y2="{base}"/>'
    )
    parts.extend(_legend([s.name for s in series], _LEFT, 16))
    parts.append("</svg>")
    return "".join(parts)


def horizontal_bars(
    items: Sequence[tuple[str, float]],
    *,
    title: str,
    value_format: Callable[[float], str] = _number,
) -> str:
    """A horizontal bar chart, one row per ``(label, value)``, in the given order."""
    height = _TOP + _ROW_HEIGHT * max(1, len(items)) + 8
    top = max((float(v) for _, v in items), default=0.0) or 1.0
    plot_w = _WIDTH - _LABEL_WIDTH - _RIGHT - 90  # room for the value after the bar
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {_WIDTH} '
        f'{height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<text class="legend" x="0" y="16">{escape(title)}</text>',
    ]
    for i, (label, value) in enumerate(items):
        y = _TOP + _ROW_HEIGHT * i
        w = max(0.0, plot_w * float(value) / top)
        shown = value_format(float(value))
        parts.append(
            f'<text class="axis" x="{_LABEL_WIDTH - 8}" y="{y + 14}" text-anchor="end">'
            f"{escape(label)}</text>"
            f'<rect class="series-0" x="{_LABEL_WIDTH}" y="{y + 3}" width="{w:.1f}" '
            f'height="{_ROW_HEIGHT - 6}"><title>{escape(label)}: {escape(shown)}</title></rect>'
            f'<text class="axis" x="{_LABEL_WIDTH + w + 6:.1f}" y="{y + 14}">'
            f"{escape(shown)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
