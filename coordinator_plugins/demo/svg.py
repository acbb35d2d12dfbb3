"""Tiny inline-SVG charts for the demo report (no network, no plotting library)."""

from __future__ import annotations

from html import escape

W, H, PAD = 640, 220, 40
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf"]


def _frame(title: str, body: str, xlabel: str, ylabel: str) -> str:
    return (f'<figure><figcaption>{escape(title)}</figcaption>'
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}">'
            f'<rect x="0" y="0" width="{W}" height="{H}" fill="white"/>'
            f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - 10}" y2="{H - PAD}" stroke="#333"/>'
            f'<line x1="{PAD}" y1="10" x2="{PAD}" y2="{H - PAD}" stroke="#333"/>'
            f'<text x="{W // 2}" y="{H - 8}" font-size="11" text-anchor="middle">{escape(xlabel)}</text>'
            f'<text x="12" y="{H // 2}" font-size="11" transform="rotate(-90 12 {H // 2})" '
            f'text-anchor="middle">{escape(ylabel)}</text>{body}</svg></figure>')


def _ticks(lo: float, hi: float, axis: str) -> str:
    out = []
    for i in range(5):
        v = lo + (hi - lo) * i / 4
        if axis == "y":
            y = H - PAD - (H - PAD - 10) * i / 4
            out.append(f'<text x="{PAD - 4}" y="{y + 3:.0f}" font-size="9" text-anchor="end">{v:.3g}</text>')
        else:
            x = PAD + (W - PAD - 10) * i / 4
            out.append(f'<text x="{x:.0f}" y="{H - PAD + 12}" font-size="9" text-anchor="middle">{v:.3g}</text>')
    return "".join(out)


def line_chart(title: str, series: dict[str, list[tuple[float, float]]], xlabel: str, ylabel: str) -> str:
    pts = [p for s in series.values() for p in s]
    if not pts:
        return _frame(title, '<text x="300" y="110" font-size="12">no data</text>', xlabel, ylabel)
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts) or 1.0
    y1 = max(p[1] for p in pts) or 1.0
    sx = lambda x: PAD + (W - PAD - 10) * ((x - x0) / ((x1 - x0) or 1))  # noqa: E731
    sy = lambda y: H - PAD - (H - PAD - 10) * (y / y1)  # noqa: E731
    body = [_ticks(x0, x1, "x"), _ticks(0, y1, "y")]
    for i, (name, s) in enumerate(series.items()):
        c = COLORS[i % len(COLORS)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s)
        body.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{path}"/>')
        body.append(f'<text x="{W - 120}" y="{20 + 14 * i}" font-size="10" fill="{c}">{escape(name)}</text>')
    return _frame(title, "".join(body), xlabel, ylabel)


def scatter(title: str, series: dict[str, list[tuple[float, float]]], xlabel: str, ylabel: str,
            y_max: float | None = None) -> str:
    pts = [p for s in series.values() for p in s]
    if not pts:
        return _frame(title, '<text x="300" y="110" font-size="12">no data</text>', xlabel, ylabel)
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y1 = y_max or max(p[1] for p in pts) or 1.0
    sx = lambda x: PAD + (W - PAD - 10) * ((x - x0) / ((x1 - x0) or 1))  # noqa: E731
    sy = lambda y: H - PAD - (H - PAD - 10) * (y / y1)  # noqa: E731
    body = [_ticks(x0, x1, "x"), _ticks(0, y1, "y")]
    for i, (name, s) in enumerate(series.items()):
        c = COLORS[i % len(COLORS)]
        body += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{c}" fill-opacity="0.7"/>' for x, y in s]
        body.append(f'<text x="{W - 120}" y="{20 + 14 * i}" font-size="10" fill="{c}">{escape(name)}</text>')
    return _frame(title, "".join(body), xlabel, ylabel)


def bars(title: str, values: dict[str, float], xlabel: str, ylabel: str, y_max: float | None = None) -> str:
    if not values:
        return _frame(title, '<text x="300" y="110" font-size="12">no data</text>', xlabel, ylabel)
    top = y_max or max(values.values()) or 1.0
    n = len(values)
    bw = (W - PAD - 20) / n
    body = [_ticks(0, top, "y")]
    for i, (label, v) in enumerate(values.items()):
        h = (H - PAD - 10) * (v / top)
        x = PAD + 5 + i * bw
        body.append(f'<rect x="{x:.1f}" y="{H - PAD - h:.1f}" width="{bw * 0.8:.1f}" height="{h:.1f}" '
                    f'fill="{COLORS[i % len(COLORS)]}"><title>{escape(label)}: {v:.3g}</title></rect>')
        body.append(f'<text x="{x + bw * 0.4:.1f}" y="{H - PAD + 12}" font-size="8" text-anchor="middle">'
                    f'{escape(label[:18])}</text>')
    return _frame(title, "".join(body), xlabel, ylabel)


def histogram(title: str, samples: list[float], xlabel: str, bins: int = 15) -> str:
    if not samples:
        return bars(title, {}, xlabel, "count")
    lo, hi = min(samples), max(samples)
    width = (hi - lo) / bins or 1.0
    counts = [0] * bins
    for s in samples:
        counts[min(bins - 1, int((s - lo) / width))] += 1
    return bars(title, {f"{lo + width * i:.2g}": float(c) for i, c in enumerate(counts)}, xlabel, "count")
