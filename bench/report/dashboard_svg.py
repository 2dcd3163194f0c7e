"""Trend charts of the dashboard as inline SVG: one figure of one cell across runs.

SVG rather than PNG so that each point is a link to its run's report with a tooltip
(``<title>``) naming the run, its commit and the figure with its interval, and so that a
year of nights stays small and needs no plotting library. Everything is escaped text the
page embeds; nothing refers outside the page but the points' relative links.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

#: Colours (matplotlib's tab10 blue, and red/green for worse/better steps).
LINE = "#1f77b4"
BAND = "#1f77b4"
WORSE = "#d62728"
BETTER = "#2ca02c"


@dataclass(frozen=True)
class Point:
    """One run's figure: ``value`` with its interval ``lo``..``hi`` (NaN: none), the
    report it links to, its tooltip, ``hollow`` for runs said apart (adaptive, random
    weights) and ``step`` ("worse", "better" or "") for a step change at this run."""

    value: float
    lo: float
    hi: float
    href: str
    title: str
    hollow: bool = False
    step: str = ""


def trend_svg(points: Sequence[Point], *, width: int, height: int, unit: str = "",
              labels: Sequence[str] = (), links: bool = True, axis: bool = True) -> str:
    """A line of ``points`` in run order with its interval band, step markers and (with
    ``axis``) y ticks and the run ``labels`` under a few x positions. ``links``: every
    point an ``<a>`` to its run; without, only the steps are drawn as markers."""
    left, right, top, bottom = (58, 34, 8, 22) if axis else (4, 4, 4, 4)
    finite = [p for p in points if math.isfinite(p.value)]
    if not finite:
        return (f'<svg class="trend" width="{width}" height="{height}" role="img">'
                f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" '
                'class="none">not recorded</text></svg>')
    ys = [v for p in finite for v in (p.value, p.lo, p.hi) if math.isfinite(v)]
    y_min, y_max = min(ys), max(ys)
    pad = (y_max - y_min) * 0.08 or abs(y_max) * 0.05 or 1.0
    y_min, y_max = y_min - pad, y_max + pad
    n = len(points)

    def x(i: int) -> float:
        return left + (width - left - right) * (i / (n - 1) if n > 1 else 0.5)

    def y(v: float) -> float:
        return top + (height - top - bottom) * (1 - (v - y_min) / (y_max - y_min))

    parts = [f'<svg class="trend" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img">']
    if axis:
        parts += _axes(left, width - right, top, height - bottom, y_min, y_max, y, unit)
        parts += _x_labels(labels, x, height - bottom)
    parts += _band(points, x, y)
    segments = _segments(points, x, y)
    parts += [f'<polyline fill="none" stroke="{LINE}" stroke-width="1.5" points="{s}"/>'
              for s in segments]
    for i, p in enumerate(points):
        if not math.isfinite(p.value):
            continue
        cx, cy = x(i), y(p.value)
        if p.step:
            color = WORSE if p.step == "worse" else BETTER
            parts.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{top}" y2="{height - bottom}" '
                         f'stroke="{color}" stroke-dasharray="4 3" stroke-width="1.2"/>')
        if not links and not p.step:
            continue
        marker = _marker(cx, cy, p, small=not axis)
        title = f"<title>{escape(p.title)}</title>"
        parts.append(f'<a href="{escape(p.href)}">{marker}{title}</a>' if links
                     else f"<g>{marker}{title}</g>")
    parts.append("</svg>")
    return "".join(parts)


def _marker(cx: float, cy: float, p: Point, *, small: bool) -> str:
    if p.step:
        color = WORSE if p.step == "worse" else BETTER
        r = 5 if small else 7
        tip = -r if p.step == "worse" else r  # worse points up, better down
        return (f'<path class="step {p.step}" d="M{cx:.1f},{cy + tip:.1f} '
                f'L{cx - r:.1f},{cy - tip:.1f} L{cx + r:.1f},{cy - tip:.1f} Z" '
                f'fill="{color}" stroke="#000" stroke-width="0.6"/>')
    fill = "#fff" if p.hollow else LINE
    return (f'<circle class="pt{" hollow" if p.hollow else ""}" cx="{cx:.1f}" cy="{cy:.1f}" '
            f'r="{2.2 if small else 3}" fill="{fill}" stroke="{LINE}" stroke-width="1"/>')


XMap = Callable[[int], float]
YMap = Callable[[float], float]


def _segments(points: Sequence[Point], fx: XMap, fy: YMap) -> list[str]:
    """Polyline point lists, broken where a run has no figure."""
    out: list[str] = []
    current: list[str] = []
    for i, p in enumerate(points):
        if math.isfinite(p.value):
            current.append(f"{fx(i):.1f},{fy(p.value):.1f}")
        elif current:
            out.append(" ".join(current))
            current = []
    if current:
        out.append(" ".join(current))
    return out


def _band(points: Sequence[Point], fx: XMap, fy: YMap) -> list[str]:
    """The interval band (lo..hi) as polygons over runs that have both bounds."""
    out: list[str] = []
    run: list[tuple[int, Point]] = []

    def close() -> None:
        if run:
            upper = [f"{fx(i):.1f},{fy(p.hi):.1f}" for i, p in run]
            lower = [f"{fx(i):.1f},{fy(p.lo):.1f}" for i, p in reversed(run)]
            if len(run) == 1:  # a lone run: a whisker instead of a polygon
                i, p = run[0]
                out.append(f'<line x1="{fx(i):.1f}" x2="{fx(i):.1f}" y1="{fy(p.lo):.1f}" '
                           f'y2="{fy(p.hi):.1f}" stroke="{BAND}" stroke-opacity="0.4"/>')
            else:
                out.append(f'<polygon class="band" points="{" ".join(upper + lower)}" '
                           f'fill="{BAND}" fill-opacity="0.18" stroke="none"/>')
        run.clear()

    for i, p in enumerate(points):
        if math.isfinite(p.lo) and math.isfinite(p.hi):
            run.append((i, p))
        else:
            close()
    close()
    return out


def _axes(x0: float, x1: float, y0: float, y1: float, lo: float, hi: float, fy: YMap,
          unit: str) -> list[str]:
    parts = [f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" fill="#fafafa" '
             'stroke="#ccc"/>']
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        py = fy(v)
        parts.append(f'<line x1="{x0}" x2="{x1}" y1="{py:.1f}" y2="{py:.1f}" stroke="#e4e4e4"/>')
        parts.append(f'<text x="{x0 - 4}" y="{py + 4:.1f}" text-anchor="end" '
                     f'class="tick">{escape(_fmt(v))}{escape(unit)}</text>')
    return parts


def _x_labels(labels: Sequence[str], fx: XMap, y_axis: float) -> list[str]:
    """At most 7 run labels (dates), first and last always."""
    n = len(labels)
    if not n:
        return []
    picks = sorted({round(k * (n - 1) / 6) for k in range(7)}) if n > 7 else range(n)
    return [f'<text x="{fx(i):.1f}" y="{y_axis + 15:.1f}" text-anchor="middle" '
            f'class="tick">{escape(labels[i])}</text>' for i in picks]


def _fmt(v: float) -> str:
    """Tick values with three significant digits."""
    return f"{v:.3g}"
