"""Inline-SVG charts for the demo report (no network, no plotting library).

Every time chart takes the same ``span`` (seconds since the run started, from 0), so that the
charts line up one above the other; an axis of counts or levels gets integer ticks; faults can
be marked on any time chart as vertical lines.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

W, H = 760, 230
L, R, T, B = 56, 16, 18, 40  # margins
PW, PH = W - L - R, H - T - B
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#e377c2", "#7f7f7f",
          "#bcbd22"]
# Faults are marked in darker colours than the series, each with its initial at the top.
FAULT_COLORS = {"kill": "#7a0019", "hang": "#54278f", "network": "#08519c", "database": "#8c510a",
                "scheduler": "#c51b7d", "burst": "#404040", "rehang": "#3f007d"}
Series = dict[str, list[tuple[float, float]]]
Marker = tuple[float, str]  # (seconds since start, fault kind)


def nice_step(raw: float, integer: bool = False) -> float:
    """1, 2, 2.5 or 5 times a power of ten, at least ``raw``; never below 1 on an integer axis."""
    if raw <= 0 or not math.isfinite(raw):
        return 1.0
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        step = m * mag
        if step >= raw * (1 - 1e-9) and not (integer and step != int(step)):
            return max(1.0, step) if integer else step
    return 10 * mag


def ticks(top: float, integer: bool = False, count: int = 4, lo: float = 0.0) -> list[float]:
    """Round ticks from ``lo`` to the first one at or above ``top`` (about ``count`` intervals)."""
    top = max(top, lo + (1.0 if integer else 1e-9))
    step = nice_step((top - lo) / count, integer)
    n = math.ceil((top - lo) / step - 1e-9)
    return [round(lo + i * step, 10) for i in range(n + 1)]


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


class _Plot:
    def __init__(self, x_ticks: list[float], y_ticks: list[float]) -> None:
        self.x0, self.x1 = x_ticks[0], x_ticks[-1]
        self.y0, self.y1 = y_ticks[0], y_ticks[-1]
        self.x_ticks, self.y_ticks = x_ticks, y_ticks
        self.parts: list[str] = []

    def x(self, v: float) -> float:
        return L + PW * (v - self.x0) / ((self.x1 - self.x0) or 1)

    def y(self, v: float) -> float:
        return T + PH - PH * (v - self.y0) / ((self.y1 - self.y0) or 1)

    def add(self, svg: str) -> None:
        self.parts.append(svg)

    def render(self, title: str, xlabel: str, ylabel: str, legend: Sequence[tuple[str, str]] = ()) -> str:
        axes = []
        for v in self.y_ticks:
            y = self.y(v)
            grid = "#888" if v == self.y0 else "#eee"
            axes.append(f'<line x1="{L}" x2="{W - R}" y1="{y:.1f}" y2="{y:.1f}" stroke="{grid}"/>'
                        f'<text x="{L - 6}" y="{y + 3:.1f}" font-size="10" text-anchor="end">{_fmt(v)}</text>')
        for v in self.x_ticks:
            x = self.x(v)
            axes.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{T + PH}" y2="{T + PH + 4}" stroke="#888"/>'
                        f'<text x="{x:.1f}" y="{T + PH + 16}" font-size="10" text-anchor="middle">{_fmt(v)}</text>')
        axes.append(f'<line x1="{L}" x2="{L}" y1="{T}" y2="{T + PH}" stroke="#888"/>')
        axes.append(f'<text x="{L + PW / 2:.0f}" y="{H - 6}" font-size="11" text-anchor="middle">'
                    f'{escape(xlabel)}</text>')
        axes.append(f'<text x="14" y="{T + PH / 2:.0f}" font-size="11" text-anchor="middle" '
                    f'transform="rotate(-90 14 {T + PH / 2:.0f})">{escape(ylabel)}</text>')
        keys = "".join(f'<span class="key"><i style="background:{c}"></i>{escape(name)}</span>' for name, c in legend)
        return (f'<figure><figcaption>{escape(title)}</figcaption>'
                f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
                f'font-family="system-ui, sans-serif">{"".join(axes)}{"".join(self.parts)}</svg>'
                f'<div class="legend">{keys}</div></figure>')


def _empty(title: str, text: str) -> str:
    return (f'<figure><figcaption>{escape(title)}</figcaption><svg xmlns="http://www.w3.org/2000/svg" width="{W}" '
            f'height="60" viewBox="0 0 {W} 60"><text x="{W / 2:.0f}" y="34" font-size="12" text-anchor="middle" '
            f'font-style="italic">{escape(text)}</text></svg></figure>')


def _markers(plot: _Plot, markers: Sequence[Marker]) -> list[tuple[str, str]]:
    for t, kind in markers:
        x = plot.x(t)
        color = FAULT_COLORS.get(kind, "#555")
        plot.add(f'<g><title>{t:.1f} s: fault {escape(kind)}</title>'
                 f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{T}" y2="{T + PH}" stroke="{color}" stroke-width="1" '
                 f'stroke-dasharray="2 3" opacity="0.7"/>'
                 f'<text x="{x:.1f}" y="{T - 3}" font-size="8" fill="{color}" text-anchor="middle">'
                 f'{escape(kind[:1].upper())}</text></g>')
    kinds = sorted({k for _, k in markers})
    return [(f"fault {k[:1].upper()}: {k}", FAULT_COLORS.get(k, "#555")) for k in kinds]


def time_lines(title: str, span: float, series: Series, ylabel: str, markers: Sequence[Marker] = (),
               integer: bool = True, colors: dict[str, str] | None = None) -> str:
    """Stepped lines over seconds since the start, with fault markers."""
    values = [v for pts in series.values() for _, v in pts]
    plot = _Plot(ticks(span, True, 8), ticks(max(values, default=0.0), integer))
    legend = []
    for i, (name, pts) in enumerate(series.items()):
        c = (colors or {}).get(name, COLORS[i % len(COLORS)])
        # a step: each value holds until the next sample
        d = "".join(f"H{plot.x(t):.1f}V{plot.y(v):.1f}" if j else f"M{plot.x(t):.1f},{plot.y(v):.1f}"
                    for j, (t, v) in enumerate(pts))
        plot.add(f'<path d="{d}" fill="none" stroke="{c}" stroke-width="1.6"/>')
        legend.append((name, c))
    legend += _markers(plot, markers)
    return plot.render(title, "seconds since the start", ylabel, legend)


def time_bars(title: str, span: float, stacks: dict[str, list[float]], ylabel: str,
              markers: Sequence[Marker] = (), colors: dict[str, str] | None = None) -> str:
    """Stacked bars, one per second since the start (``stacks``: name -> value per second)."""
    n = max((len(v) for v in stacks.values()), default=0)
    totals = [sum(v[i] if i < len(v) else 0.0 for v in stacks.values()) for i in range(n)]
    plot = _Plot(ticks(span, True, 8), ticks(max(totals, default=0.0), True))
    legend = []
    base = [0.0] * n
    for i, (name, vals) in enumerate(stacks.items()):
        c = (colors or {}).get(name, COLORS[i % len(COLORS)])
        for s, v in enumerate(vals):
            if v:
                x0, x1 = plot.x(s), plot.x(s + 1)
                plot.add(f'<rect x="{x0:.1f}" width="{max(1.0, x1 - x0 - 0.5):.1f}" y="{plot.y(base[s] + v):.1f}" '
                         f'height="{plot.y(base[s]) - plot.y(base[s] + v):.1f}" fill="{c}">'
                         f'<title>{s}-{s + 1} s: {escape(name)} {_fmt(v)}</title></rect>')
                base[s] += v
        legend.append((name, c))
    legend += _markers(plot, markers)
    return plot.render(title, "seconds since the start", ylabel, legend)


def time_dots(title: str, span: float, series: Series, ylabel: str, y_max: int, markers: Sequence[Marker] = (),
              colors: dict[str, str] | None = None) -> str:
    """Points over seconds since the start on an integer axis from 1 to ``y_max`` (levels)."""
    plot = _Plot(ticks(span, True, 8), [float(v) for v in range(0, y_max + 1)])
    legend = []
    for i, (name, pts) in enumerate(series.items()):
        c = (colors or {}).get(name, COLORS[i % len(COLORS)])
        for t, v in pts:
            plot.add(f'<circle cx="{plot.x(t):.1f}" cy="{plot.y(v):.1f}" r="4" fill="{c}" fill-opacity="0.75">'
                     f'<title>{t:.1f} s: {escape(name)} at L{_fmt(v)}</title></circle>')
        legend.append((f"{name} ({len(pts)})", c))
    legend += _markers(plot, markers)
    return plot.render(title, "seconds since the start", ylabel, legend)


def histogram(title: str, samples: Sequence[float], xlabel: str, bins: int = 12) -> str:
    if not samples:
        return _empty(title, "no successful recovery")
    hi = max(samples)
    x_ticks = ticks(hi if hi > 0 else 1.0, False, 6)
    width = (x_ticks[-1] - x_ticks[0]) / bins
    counts = [0] * bins
    for s in samples:
        counts[min(bins - 1, int(s / width))] += 1
    plot = _Plot(x_ticks, ticks(max(counts), True))
    for i, c in enumerate(counts):
        if c:
            x0, x1 = plot.x(i * width), plot.x((i + 1) * width)
            plot.add(f'<rect x="{x0 + 0.5:.1f}" width="{max(1.0, x1 - x0 - 1):.1f}" y="{plot.y(c):.1f}" '
                     f'height="{plot.y(0) - plot.y(c):.1f}" fill="{COLORS[0]}">'
                     f'<title>{i * width:.2f}-{(i + 1) * width:.2f} s: {c}</title></rect>')
    return plot.render(title, xlabel, "recoveries")


def hbars(title: str, rows: Sequence[tuple[str, float, str]], xlabel: str) -> str:
    """Horizontal bars of fractions (0..1), each with its full label on the left and its value
    written out, so that a 0% bar is as visible as a 100% one."""
    if not rows:
        return _empty(title, "no strategy ran")
    row_h = 22
    label_w = min(320, 12 + 7 * max(len(label) for label, _, _ in rows))
    width = 760
    bar_w = width - label_w - 190
    height = 30 + row_h * len(rows)
    parts = []
    for k in (0, 0.25, 0.5, 0.75, 1.0):
        x = label_w + bar_w * k
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="8" y2="{height - 18}" stroke="#eee"/>'
                     f'<text x="{x:.1f}" y="{height - 6}" font-size="10" text-anchor="middle">{k:.0%}</text>')
    for i, (label, frac, note) in enumerate(rows):
        y = 10 + i * row_h
        w = bar_w * max(0.0, min(1.0, frac))
        parts.append(f'<text x="{label_w - 8}" y="{y + 13}" font-size="11" text-anchor="end">{escape(label)}</text>'
                     f'<rect x="{label_w}" y="{y + 3}" width="{bar_w}" height="14" fill="none" stroke="#ccc"/>'
                     f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="14" fill="{COLORS[2]}"/>'
                     f'<text x="{label_w + bar_w + 8}" y="{y + 13}" font-size="11">{escape(note)}</text>')
    return (f'<figure><figcaption>{escape(title)}</figcaption><svg xmlns="http://www.w3.org/2000/svg" '
            f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="system-ui, sans-serif">'
            f'{"".join(parts)}</svg><div class="legend">{escape(xlabel)}</div></figure>')
