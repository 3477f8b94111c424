"""Server-rendered SVG charts for the dashboard (pure: no Django, no database).

The same frame, scale and styling as the ledger page's chart (``ledger.charts``; its CSS is in
templates/base.html): stacked bars per day, lines per day with gaps where a day has no value, and
horizontal bars. Each SVG is ``role="img"`` with a ``<title>`` and a ``<desc>``; each bar or point
has a ``<title>`` with its exact value. Every value that reaches the markup is escaped: callers
may insert the returned string as-is. The page also shows the numbers in a table.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from html import escape

from ledger.charts import BOTTOM, HEIGHT, LEFT, RIGHT, TOP, WIDTH, nice_ceiling

Fmt = Callable[[float], str]

# Okabe-Ito and neighbours: told apart by most colour-blind readers; the tables carry the numbers.
STATUS_COLORS: dict[str, str] = {
    "received": "#9ecae1",
    "verifying": "#0072b2",
    "needs_review": "#e69f00",
    "verified": "#56b4e9",
    "info_requested": "#f0e442",
    "approved": "#cc79a7",
    "paid": "#009e73",
    "denied": "#d55e00",
    "rejected": "#a12a2a",
    "superseded": "#bdbdbd",
    "voided": "#6b6b6b",
}
SERIES_COLORS = ("#2456a6", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9")


@dataclass(frozen=True)
class Series:
    """One named run of values, one per day (``None``: no value that day)."""

    key: str
    label: str
    values: Sequence[float | None]
    color: str


def fmt_count(v: float) -> str:
    return f"{v:,.0f}" if float(v).is_integer() else f"{v:,.1f}"


def fmt_amount(v: float) -> str:
    return f"{v:,.2f}" if v and abs(v) < 100 else f"{v:,.0f}"


def fmt_duration(seconds: float) -> str:
    """A duration in the unit that reads best: ms, s, min, h or days."""
    s = abs(seconds)
    if s == 0:
        return "0 s"
    if s < 1:
        return f"{seconds * 1000:.0f} ms"
    if s < 120:
        return f"{seconds:.3g} s"
    if s < 2 * 3600:
        return f"{seconds / 60:.3g} min"
    if s < 2 * 86400:
        return f"{seconds / 3600:.3g} h"
    return f"{seconds / 86400:.3g} days"


def nice_max(v: float) -> float:
    """The smallest of 1, 2, 5 times a power of ten that is at least ``v`` (1 when v <= 0)."""
    if v <= 0:
        return 1
    if v >= 1:
        return nice_ceiling(math.ceil(v))
    scale = 10 ** math.ceil(-math.log10(v))
    return nice_ceiling(math.ceil(v * scale)) / scale


def _ticks(y_max: float, *, whole: bool) -> list[float]:
    """Gridline values from 0 to ``y_max`` (a ``nice_max``): fifths of 1 and 5 times a power of
    ten, quarters of 2 times one; only whole numbers when ``whole`` (counts of things)."""
    lead = y_max / 10 ** math.floor(math.log10(y_max))
    parts = 4 if round(lead) == 2 else 5
    values = [y_max * i / parts for i in range(parts + 1)]
    if whole:
        values = [v for v in values if abs(v - round(v)) < 1e-9]
    return values


def _day_label(d: date) -> str:
    return d.strftime("%b %d").replace(" 0", " ")


def _head(chart_id: str, title: str, desc: str, height: int = HEIGHT) -> str:
    cid = escape(chart_id)
    return (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-labelledby="{cid}-title" aria-describedby="{cid}-desc" '
        f'xmlns="http://www.w3.org/2000/svg" '
        f'data-chart="{cid}">'
        f'<title id="{cid}-title">{escape(title)}</title>'
        f'<desc id="{cid}-desc">{escape(desc)}</desc>'
    )


def _empty(head: str, message: str, height: int = HEIGHT) -> str:
    return (
        f'{head}<text class="muted empty" x="{WIDTH / 2}" y="{height / 2}" text-anchor="middle">'
        f"{escape(message)}</text></svg>"
    )


class _DayFrame:
    """Axes for values per day: one slot per day along x, 0..y_max up y."""

    x0, x1 = LEFT, WIDTH - RIGHT
    y0, y1 = HEIGHT - BOTTOM, TOP  # y grows downwards: 0 sits on the x axis

    def __init__(self, dates: Sequence[date], y_max: float):
        self.dates, self.y_max = list(dates), y_max
        self.slot = (self.x1 - self.x0) / max(1, len(self.dates))

    def x(self, i: int) -> float:
        """The centre of day ``i``'s slot."""
        return self.x0 + (i + 0.5) * self.slot

    def y(self, v: float) -> float:
        return self.y0 - v / self.y_max * (self.y0 - self.y1)

    def axes(self, fmt: Fmt, y_label: str) -> list[str]:
        parts = []
        for value in _ticks(self.y_max, whole=fmt is fmt_count):
            label = fmt(value)
            yy = self.y(value)
            parts.append(
                f'<line class="grid" x1="{self.x0}" y1="{yy:.1f}" x2="{self.x1}" y2="{yy:.1f}"/>'
                f'<text class="tick" x="{self.x0 - 8}" y="{yy + 4:.1f}" text-anchor="end">'
                f"{escape(label)}</text>"
            )
        parts.append(
            f'<line class="axis" x1="{self.x0}" y1="{self.y0}" x2="{self.x1}" y2="{self.y0}"/>'
            f'<line class="axis" x1="{self.x0}" y1="{self.y0}" x2="{self.x0}" y2="{self.y1}"/>'
        )
        n = len(self.dates)
        step = max(1, math.ceil(n / 8))  # at most about eight date labels
        for i in range(0, n, step):
            parts.append(
                f'<text class="tick" x="{self.x(i):.1f}" y="{self.y0 + 18}" '
                f'text-anchor="middle">{escape(_day_label(self.dates[i]))}</text>'
            )
        mid = (self.y0 + self.y1) / 2
        parts.append(
            f'<text class="axis-label" x="{(self.x0 + self.x1) / 2}" y="{HEIGHT - 6}" '
            f'text-anchor="middle">day (UTC)</text>'
            f'<text class="axis-label" x="14" y="{mid}" text-anchor="middle" '
            f'transform="rotate(-90 14 {mid})">{escape(y_label)}</text>'
        )
        return parts


def stacked_bars_svg(
    *,
    chart_id: str,
    title: str,
    desc: str,
    dates: Sequence[date],
    series: Sequence[Series],
    y_label: str,
    fmt: Fmt = fmt_count,
    empty: str = "Nothing to show yet",
) -> str:
    """One bar per day, the series stacked bottom-up in the order given. Each non-zero segment
    is a ``<rect class="bar" data-series=...>`` whose ``<title>`` gives its day and value."""
    head = _head(chart_id, title, desc)
    totals = [sum(s.values[i] or 0 for s in series) for i in range(len(dates))]
    if not dates or not any(totals):
        return _empty(head, empty)
    frame = _DayFrame(dates, nice_max(max(totals)))
    parts = [head, *frame.axes(fmt, y_label)]
    width = max(1.0, min(frame.slot * 0.72, 48))
    for i, day in enumerate(dates):
        base = 0.0
        for s in series:
            v = s.values[i] or 0
            if v <= 0:
                continue
            top, bottom = frame.y(base + v), frame.y(base)
            parts.append(
                f'<rect class="bar" data-series="{escape(s.key)}" style="fill:{escape(s.color)}" '
                f'x="{frame.x(i) - width / 2:.1f}" y="{top:.1f}" width="{width:.1f}" '
                f'height="{max(bottom - top, 0.5):.1f}"><title>{escape(_day_label(day))}: '
                f"{escape(fmt(v))} {escape(s.label)}</title></rect>"
            )
            base += v
    parts.append("</svg>")
    return "".join(parts)


def lines_svg(
    *,
    chart_id: str,
    title: str,
    desc: str,
    dates: Sequence[date],
    series: Sequence[Series],
    y_label: str,
    fmt: Fmt = fmt_count,
    empty: str = "Nothing to show yet",
) -> str:
    """A line per series across the days (solid, then dashed); a day without a value breaks the
    line. Each value is a ``<circle class="dot" data-series=...>`` whose ``<title>`` gives its
    day and value."""
    head = _head(chart_id, title, desc)
    values = [v for s in series for v in s.values if v is not None]
    if not dates or not values:
        return _empty(head, empty)
    frame = _DayFrame(dates, nice_max(max(values)))
    parts = [head, *frame.axes(fmt, y_label)]
    for n, s in enumerate(series):
        # The second and later lines are dashed: told apart without colour.
        dash = ' stroke-dasharray="6 4"' if n else ""
        run: list[str] = []
        runs = [run]
        for i, v in enumerate(s.values):
            if v is None:
                run = []
                runs.append(run)
            else:
                run.append(f"{frame.x(i):.1f},{frame.y(v):.1f}")
        for r in runs:
            if len(r) > 1:
                parts.append(
                    f'<polyline class="trend" fill="none" style="stroke:{escape(s.color)}" '
                    f'stroke-width="2"{dash} data-series="{escape(s.key)}" '
                    f'points="{" ".join(r)}"/>'
                )
        for i, v in enumerate(s.values):
            if v is not None:
                parts.append(
                    f'<circle class="dot" data-series="{escape(s.key)}" '
                    f'style="fill:{escape(s.color)}" cx="{frame.x(i):.1f}" cy="{frame.y(v):.1f}" '
                    f'r="3.5"><title>{escape(_day_label(dates[i]))}: {escape(s.label)} '
                    f"{escape(fmt(v))}</title></circle>"
                )
    parts.append("</svg>")
    return "".join(parts)


_ROW, _BAR = 44, 18


def hbars_svg(
    *,
    chart_id: str,
    title: str,
    desc: str,
    rows: Sequence[tuple[str, float]],
    fmt: Fmt = fmt_count,
    color: str = "#a12a2a",
    empty: str = "Nothing to show yet",
) -> str:
    """Horizontal bars, largest first as given: each label above its bar, the value at its end.
    Each bar is a ``<rect class="bar">`` whose ``<title>`` gives the label and value."""
    if not rows or not any(v for _, v in rows):
        return _empty(_head(chart_id, title, desc, 120), empty, 120)
    height = 12 + len(rows) * _ROW
    parts = [_head(chart_id, title, desc, height)]
    x0, x1 = 16, WIDTH - 80
    v_max = max(v for _, v in rows)
    for i, (label, v) in enumerate(rows):
        top = 8 + i * _ROW
        w = max((x1 - x0) * v / v_max, 1.0 if v else 0.0)
        parts.append(
            f'<g class="hbar"><text x="{x0}" y="{top + 12}">{escape(label)}</text>'
            f'<rect class="bar" fill="{escape(color)}" x="{x0}" y="{top + 18}" '
            f'width="{w:.1f}" height="{_BAR}" rx="2"><title>{escape(label)}: '
            f"{escape(fmt(v))}</title></rect>"
            f'<text class="value" x="{x0 + w + 6:.1f}" y="{top + 18 + _BAR - 4}">'
            f"{escape(fmt(v))}</text></g>"
        )
    parts.append("</svg>")
    return "".join(parts)
