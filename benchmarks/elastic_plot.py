"""A hand-written SVG of an autoscaling run: the backlog (left axis) and the actors desired
and running (right axis) over time, the load's start and end marked. No plotting library."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from xml.sax.saxutils import escape

from attrs import frozen

W, H = 760, 340
LEFT, RIGHT, TOP, BOTTOM = 70, 60, 40, 50
PW, PH = W - LEFT - RIGHT, H - TOP - BOTTOM
BLUE, RED, GREY = "#1f77b4", "#d62728", "#999"


@frozen
class Point:
    t: float  # seconds since the run began
    backlog: int  # undelivered + pending
    desired: int
    running: int


def _nice(top: float) -> float:
    """A round upper bound of an axis (five steps of 1, 2, 2.5 or 5 times a power of ten)."""
    scale = 1.0
    while True:
        for step in (1, 2, 2.5, 5):
            if step * scale * 5 >= top:
                return step * scale * 5
        scale *= 10


def _steps(points: list[tuple[float, float]]) -> str:
    """A step line through ``points`` (a count holds until it changes)."""
    out: list[str] = []
    for i, (x, y) in enumerate(points):
        if i:
            out.append(f"{x:.1f},{points[i - 1][1]:.1f}")
        out.append(f"{x:.1f},{y:.1f}")
    return " ".join(out)


def _axes(
    t_max: float,
    lag_max: float,
    actors_max: int,
    y_lag: Callable[[float], float],
    y_act: Callable[[float], float],
    x: Callable[[float], float],
) -> list[str]:
    parts = [
        f'<line x1="{LEFT}" y1="{TOP + PH}" x2="{LEFT + PW}" y2="{TOP + PH}" stroke="#333"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + PH}" stroke="#333"/>',
        f'<line x1="{LEFT + PW}" y1="{TOP}" x2="{LEFT + PW}" y2="{TOP + PH}" stroke="#333"/>',
    ]
    for i in range(6):
        v = lag_max * i / 5
        parts.append(
            f'<text x="{LEFT - 6}" y="{y_lag(v) + 4:.1f}" text-anchor="end" fill="{BLUE}">{v:,.0f}</text>'
        )
    for n in range(actors_max + 1):
        parts.append(f'<text x="{LEFT + PW + 6}" y="{y_act(n) + 4:.1f}" fill="{RED}">{n}</text>')
    tick = 10 if t_max > 60 else 5
    for t in range(0, int(t_max) + 1, tick):
        parts.append(f'<text x="{x(t):.1f}" y="{TOP + PH + 16}" text-anchor="middle">{t}</text>')
    return parts


def svg(points: Sequence[Point], title: str, marks: dict[str, float], path: Path) -> None:
    """Write the plot of ``points`` to ``path`` (``marks``: label -> time of a vertical line)."""
    t_max = max(p.t for p in points) or 1.0
    lag_max = _nice(max(max(p.backlog for p in points), 1))
    actors_max = max(max(max(p.desired, p.running) for p in points), 1) + 1

    def x(t: float) -> float:
        return LEFT + PW * t / t_max

    def y_lag(v: float) -> float:
        return TOP + PH * (1 - v / lag_max)

    def y_act(v: float) -> float:
        return TOP + PH * (1 - v / actors_max)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
        f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="13">{escape(title)}</text>',
        *_axes(t_max, lag_max, actors_max, y_lag, y_act, x),
    ]
    for label, t in marks.items():
        parts.append(
            f'<line x1="{x(t):.1f}" y1="{TOP}" x2="{x(t):.1f}" y2="{TOP + PH}" stroke="{GREY}" '
            'stroke-dasharray="4 3"/>'
        )
        parts.append(f'<text x="{x(t) + 3:.1f}" y="{TOP + 12}" fill="#666">{escape(label)}</text>')
    lag_line = " ".join(f"{x(p.t):.1f},{y_lag(p.backlog):.1f}" for p in points)
    desired = _steps([(x(p.t), y_act(p.desired)) for p in points])
    running = _steps([(x(p.t), y_act(p.running)) for p in points])
    parts += [
        f'<polyline points="{lag_line}" fill="none" stroke="{BLUE}" stroke-width="1.5"/>',
        f'<polyline points="{desired}" fill="none" stroke="{RED}" stroke-width="2" stroke-dasharray="6 3"/>',
        f'<polyline points="{running}" fill="none" stroke="{RED}" stroke-width="2"/>',
        f'<text x="{LEFT}" y="{H - 12}" fill="{BLUE}">backlog (entries, left)</text>',
        f'<text x="{LEFT + 190}" y="{H - 12}" fill="{RED}">'
        "actors running (solid), desired (dashed): right</text>",
        f'<text x="{LEFT + PW}" y="{H - 12}" text-anchor="end">seconds</text>',
        "</svg>",
    ]
    path.write_text("\n".join(parts) + "\n")
