"""Tiny inline-SVG chart helpers (no plotting dependency): horizontal bars, stacked horizontal bars,
vertical bars. Every text is escaped; the output is an ``<svg>`` element to inline into HTML."""
from __future__ import annotations

import math
from html import escape

FONT = "DejaVu Sans, Liberation Sans, Helvetica, Arial, sans-serif"

# Palette (also asserted by the screenshot test: keep in sync with tests/test_inspect.py).
BLUE = "#2f6fdf"     # question types, concepts
TEAL = "#0f9d9a"     # granularity, label prevalence
PINK = "#d6336c"     # answer-length histogram
YES = "#2ca25f"
NO = "#de2d26"
OTHER = "#b0b0b0"
SPLIT_COLORS = {"train": "#2f6fdf", "validate": "#f59e0b", "test": "#8b5cf6"}
FALLBACK = "#6b7280"


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def fmt(value: float) -> str:
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{int(value):,}"


def compact(value: float) -> str:
    """Short number for axis ticks and bar labels: 950, 12.5k, 333k, 1.2M."""
    v = abs(value)
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= div * (10 if suffix == "k" else 1):
            q = value / div
            return f"{q:.1f}{suffix}".replace(".0" + suffix, suffix) if abs(q) < 100 else f"{q:.0f}{suffix}"
    return fmt(value)


def nice_ticks(vmax: float, target: int = 5) -> list[float]:
    """0 and round multiples of 1/2/2.5/5 x 10^k covering ``vmax``."""
    if vmax <= 0:
        return [0.0, 1.0]
    raw = vmax / target
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    if step < 1:
        step = 1.0
    top = math.ceil(vmax / step - 1e-9) * step
    return [i * step for i in range(int(round(top / step)) + 1)]


def truncate(text: str, n: int) -> str:
    text = str(text)
    return text if len(text) <= n else text[: n - 1] + "…"


def _label_chars(label_width: int) -> int:
    """How many characters of a 12px label fit left of the bars."""
    return max(6, int((label_width - 14) / 7.6))


def _open(width: int, height: int, title: str) -> str:
    return (f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'role="img" aria-label="{_e(title)}" font-family="{FONT}" font-size="12">')


def empty_chart(title: str, width: int = 560, message: str = "no data") -> str:
    return (_open(width, 40, title) + f'<text x="8" y="24" fill="#888">{_e(message)}</text></svg>')


def hbar_chart(rows: list[tuple[str, float]], *, color: str, title: str, width: int = 560,
               label_width: int = 180, bar_height: int = 18, gap: int = 5) -> str:
    if not rows:
        return empty_chart(title, width)
    value_width = 64
    plot_w = width - label_width - value_width
    vmax = max(v for _, v in rows) or 1
    height = len(rows) * (bar_height + gap) + gap
    out = [_open(width, height, title)]
    for i, (label, value) in enumerate(rows):
        y = gap + i * (bar_height + gap)
        w = round(plot_w * value / vmax)
        w = max(w, 1) if value > 0 else 0
        cy = y + bar_height // 2
        out.append(
            f'<g><title>{_e(label)}: {fmt(value)}</title>'
            f'<text x="{label_width - 8}" y="{cy}" text-anchor="end" dominant-baseline="central" fill="#222">'
            f'{_e(truncate(label, _label_chars(label_width)))}</text>'
            f'<rect x="{label_width}" y="{y}" width="{w}" height="{bar_height}" fill="{color}" '
            f'shape-rendering="crispEdges"/>'
            f'<text x="{label_width + w + 6}" y="{cy}" dominant-baseline="central" fill="#444">{fmt(value)}</text></g>')
    out.append("</svg>")
    return "".join(out)


def stacked_hbar_chart(rows: list[tuple[str, list[float]]], *, series: list[str], colors: list[str],
                       title: str, width: int = 560, label_width: int = 180, bar_height: int = 18,
                       gap: int = 5) -> str:
    """One 100%-stacked bar per row (share of each series), with the row total on the right."""
    if not rows:
        return empty_chart(title, width)
    value_width = 64
    plot_w = width - label_width - value_width
    legend_h = 22
    height = legend_h + len(rows) * (bar_height + gap) + gap
    out = [_open(width, height, title)]
    x = label_width
    for name, color in zip(series, colors):
        out.append(f'<rect x="{x}" y="4" width="12" height="12" fill="{color}"/>'
                   f'<text x="{x + 16}" y="10" dominant-baseline="central" fill="#222">{_e(name)}</text>')
        x += 24 + 8 * len(name) + 12
    for i, (label, values) in enumerate(rows):
        y = legend_h + gap + i * (bar_height + gap)
        cy = y + bar_height // 2
        total = sum(values)
        tip = ", ".join(f"{s} {fmt(v)}" for s, v in zip(series, values))
        out.append(f'<g><title>{_e(label)}: {_e(tip)}</title>'
                   f'<text x="{label_width - 8}" y="{cy}" text-anchor="end" dominant-baseline="central" '
                   f'fill="#222">{_e(truncate(label, _label_chars(label_width)))}</text>')
        x = label_width
        acc = 0.0
        for value, color in zip(values, colors):
            if total <= 0 or value <= 0:
                continue
            acc += value
            x_end = label_width + round(plot_w * acc / total)
            w = x_end - x
            if w > 0:
                out.append(f'<rect x="{x}" y="{y}" width="{w}" height="{bar_height}" fill="{color}" '
                           f'shape-rendering="crispEdges"/>')
                if w >= 28:
                    out.append(f'<text x="{x + w // 2}" y="{cy}" text-anchor="middle" dominant-baseline="central" '
                               f'fill="#fff" font-size="11">{fmt(value)}</text>')
            x = x_end
        out.append(f'<text x="{label_width + plot_w + 6}" y="{cy}" dominant-baseline="central" fill="#444">'
                   f'n={fmt(total)}</text></g>')
    out.append("</svg>")
    return "".join(out)


def vbar_chart(rows: list[tuple[str, float]], *, colors: str | list[str], title: str, width: int = 560,
               height: int = 220, x_title: str | None = None) -> str:
    if not rows:
        return empty_chart(title, width)
    color_list = [colors] * len(rows) if isinstance(colors, str) else list(colors)
    ticks = nice_ticks(max(v for _, v in rows))
    vmax = ticks[-1]
    tick_labels = [compact(t) for t in ticks]
    left, right, top = 14 + 7 * max(len(t) for t in tick_labels), 10, 18
    bottom = 40 if x_title else 24
    plot_w, plot_h = width - left - right, height - top - bottom
    slot = plot_w / len(rows)
    bar_w = max(2, int(slot * 0.8))
    every = max(1, -(-len(rows) * 40 // plot_w))  # show a label every `every` bars so they don't collide
    out = [_open(width, height, title)]
    for tick, tick_label in zip(ticks, tick_labels):
        y = top + plot_h - round(plot_h * tick / vmax)
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y}" y2="{y}" stroke="#e3e3e3"/>'
                   f'<text x="{left - 6}" y="{y}" text-anchor="end" dominant-baseline="central" fill="#666" '
                   f'font-size="11">{tick_label}</text>')
    for i, ((label, value), color) in enumerate(zip(rows, color_list)):
        x = left + int(i * slot + (slot - bar_w) / 2)
        h = round(plot_h * value / vmax)
        h = max(h, 1) if value > 0 else 0
        y = top + plot_h - h
        out.append(f'<g><title>{_e(label)}: {fmt(value)}</title>'
                   f'<rect x="{x}" y="{y}" width="{bar_w}" height="{h}" fill="{color}" shape-rendering="crispEdges"/>')
        if len(rows) <= 12:
            out.append(f'<text x="{x + bar_w // 2}" y="{y - 4}" text-anchor="middle" fill="#444" font-size="11">'
                       f'{fmt(value) if bar_w >= 8 * len(fmt(value)) else compact(value)}</text>')
        if i % every == 0:
            out.append(f'<text x="{x + bar_w // 2}" y="{top + plot_h + 14}" text-anchor="middle" fill="#222" '
                       f'font-size="11">{_e(truncate(label, 12))}</text>')
        out.append("</g>")
    out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#999"/>')
    if x_title:
        out.append(f'<text x="{left + plot_w // 2}" y="{height - 6}" text-anchor="middle" fill="#444">'
                   f'{_e(x_title)}</text>')
    out.append("</svg>")
    return "".join(out)
