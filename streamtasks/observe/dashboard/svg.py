"""Charts drawn on the server as SVG: no JavaScript library to ship, audit or keep current,
and the charts are there with scripts off. A chart is a few polylines and labels."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from html import escape

from markupsafe import Markup

WIDTH, HEIGHT = 560, 200
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 56, 12, 22, 36
#: Series colours, in order (colour-blind safe).
COLOURS = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00")
GRID_LINES = 4


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.0f}"
    return f"{value:.3g}"


def _hhmm(t: float) -> str:
    return time.strftime("%H:%M", time.gmtime(t))


def line_chart(
    title: str, unit: str, x: Sequence[float], series: Mapping[str, Sequence[float | None]]
) -> Markup:
    """An SVG line chart of ``series`` over ``x`` (seconds since the epoch, UTC labels)."""
    values = [v for ys in series.values() for v in ys if v is not None and math.isfinite(v)]
    label = escape(f"{title} ({unit})" if unit else title)
    head = f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{label}">'
    if not x or not values:
        return Markup(
            f'{head}<text x="{WIDTH // 2}" y="{HEIGHT // 2}" text-anchor="middle">no data</text></svg>'
        )
    x0, x1 = min(x), max(x)
    top = max(values) or 1.0
    top *= 1.1
    inner_w, inner_h = WIDTH - PAD_LEFT - PAD_RIGHT, HEIGHT - PAD_TOP - PAD_BOTTOM

    def px(t: float) -> float:
        return PAD_LEFT + (inner_w * (t - x0) / (x1 - x0) if x1 > x0 else inner_w / 2)

    def py(v: float) -> float:
        return PAD_TOP + inner_h * (1 - v / top)

    parts = [head]
    for i in range(GRID_LINES + 1):
        v = top * i / GRID_LINES
        y = py(v)
        parts.append(
            f'<line class="grid" x1="{PAD_LEFT}" x2="{WIDTH - PAD_RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
        )
        parts.append(
            f'<text class="tick" x="{PAD_LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">{_fmt(v)}</text>'
        )
    for t in (x0, (x0 + x1) / 2, x1):
        parts.append(
            f'<text class="tick" x="{px(t):.1f}" y="{HEIGHT - 18}" text-anchor="middle">{_hhmm(t)}</text>'
        )
    legend_x = PAD_LEFT
    for n, (name, ys) in enumerate(series.items()):
        colour = COLOURS[n % len(COLOURS)]
        pts = [
            f"{px(t):.1f},{py(v):.1f}"
            for t, v in zip(x, ys, strict=True)
            if v is not None and math.isfinite(v)
        ]
        if len(pts) == 1:
            cx, cy = pts[0].split(",")
            parts.append(f'<circle cx="{cx}" cy="{cy}" r="3" fill="{colour}"/>')
        elif pts:
            line = " ".join(pts)
            parts.append(
                f'<polyline class="series" fill="none" stroke="{colour}" stroke-width="2" points="{line}"/>'
            )
        parts.append(
            f'<text class="legend" x="{legend_x}" y="{HEIGHT - 4}" fill="{colour}">■ {escape(name)}</text>'
        )
        legend_x += 30 + 8 * len(name)
    parts.append(f'<text class="tick" x="4" y="12">{escape(unit)}</text></svg>')
    return Markup("".join(parts))
