"""How report figures are shown in text: the same in Markdown and HTML.

A missing figure (no finished mission, no events) is shown as an en dash, never as 0.

>>> show_count(12345), show_rate(0.0123), show_ms(81234.5), show_usd(1.5), show_rate(None)
('12,345', '1.23 %', '1m 21s', '$1.50', '–')
"""

from __future__ import annotations

from typing import Final

__all__ = ["MISSING", "show_count", "show_ms", "show_rate", "show_time", "show_usd"]

MISSING: Final = "–"


def show_count(value: int | float) -> str:
    """An integer with thousands separators."""
    return f"{value:,.0f}"


def show_rate(value: float | None) -> str:
    """A fraction as a percentage with two decimals."""
    return MISSING if value is None else f"{value * 100:.2f} %"


def show_ms(value: float | None) -> str:
    """Milliseconds as ``850 ms``, ``12.3 s``, ``4m 05s`` or ``2h 03m``."""
    if value is None:
        return MISSING
    if value < 1000:
        return f"{value:.0f} ms"
    seconds = value / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m {int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h {int(seconds % 3600 // 60):02d}m"


def show_usd(value: float | None) -> str:
    """US dollars: cents, or four decimals below one dollar's hundredth."""
    if value is None:
        return MISSING
    if value != 0 and abs(value) < 0.01:
        return f"${value:.4f}"
    return f"${value:,.2f}"


def show_time(value: str | None) -> str:
    """A stored timestamp (``2025-03-01T12:34:56.789012Z``) to the second, UTC."""
    if value is None:
        return MISSING
    return f"{value[:10]} {value[11:19]}"
