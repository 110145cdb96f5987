"""Small server-side SVG charts for the admin page: no JavaScript, no CDN.

Pure functions: data in, an SVG string out. Every label is XML-escaped, so a
workshop name can never inject markup into the page.
"""

from __future__ import annotations

from collections.abc import Sequence
from xml.sax.saxutils import escape

# colour-blind safe palette (Okabe-Ito), cycled per series
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")


def _nice_max(value: float) -> int:
    """The smallest 1/2/5 x 10^n at or above ``value`` (at least 1)."""
    if value <= 1:
        return 1
    step = 1
    while True:
        for m in (1, 2, 5):
            if m * step >= value:
                return m * step
        step *= 10


def _attr(value) -> str:
    return escape(str(value), {'"': "&quot;"})


def stacked_bars_svg(
    labels: Sequence[str],
    series: dict[str, Sequence[int]],
    *,
    title: str,
    width: int = 760,
    height: int = 240,
    label_every: int | None = None,
    element_id: str = "",
) -> str:
    """Vertical stacked bars: one bar per label, one colour per series (with a legend).

    ``series`` maps a series name to one value per label. Each bar carries a
    ``<title>`` (tooltip) with its figures.
    """
    n = len(labels)
    for name, values in series.items():
        if len(values) != n:
            raise ValueError(f"series {name!r} has {len(values)} values for {n} labels")
    left, right, top, bottom = 36, 10, 28, 46
    legend_h = 16 * ((len(series) + 3) // 4) if len(series) > 1 else 0
    plot_w = width - left - right
    plot_h = height - top - bottom - legend_h
    totals = [sum(values[i] for values in series.values()) for i in range(n)]
    ymax = _nice_max(max(totals, default=0))
    slot = plot_w / max(n, 1)
    bar_w = max(1.0, slot * 0.75)
    every = label_every or max(1, (n + 11) // 12)

    ident = f' id="{_attr(element_id)}"' if element_id else ""
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg"{ident} class="wod-chart" role="img" '
        f'viewBox="0 0 {width} {height}" width="100%" preserveAspectRatio="xMidYMid meet" '
        f'aria-label="{_attr(title)}" font-family="sans-serif" font-size="11">',
        f"<title>{escape(title)}</title>",
        f'<text x="{left}" y="16" font-size="13" font-weight="bold" fill="currentColor">{escape(title)}</text>',
    ]
    # gridlines at 0, 1/2, 1 of the scale
    for frac in (0, 0.5, 1):
        y = top + plot_h - frac * plot_h
        out.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#999" stroke-opacity="0.4"/>'
        )
        out.append(
            f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" fill="currentColor">{int(ymax * frac)}</text>'
        )
    colours = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(series)}
    for i, label in enumerate(labels):
        x = left + i * slot + (slot - bar_w) / 2
        y = top + plot_h
        parts = []
        for name, values in series.items():
            v = values[i]
            if v <= 0:
                continue
            h = v / ymax * plot_h
            y -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" fill="{colours[name]}"/>'
            )
        detail = ", ".join(f"{name}: {series[name][i]}" for name in series if series[name][i])
        tip = f"{label}: {totals[i]}" + (f" ({detail})" if len(series) > 1 and detail else "")
        out.append(
            f'<g class="wod-bar" data-label="{_attr(label)}" data-value="{totals[i]}">'
            f"<title>{escape(tip)}</title>{''.join(parts)}</g>"
        )
        if i % every == 0:
            lx = left + i * slot + slot / 2
            out.append(
                f'<text x="{lx:.1f}" y="{top + plot_h + 14}" text-anchor="middle" fill="currentColor">{escape(label)}</text>'
            )
    if legend_h:
        for j, name in enumerate(series):
            lx = left + (j % 4) * (plot_w / 4)
            ly = height - legend_h + 4 + 16 * (j // 4)
            out.append(
                f'<rect x="{lx:.1f}" y="{ly}" width="10" height="10" fill="{colours[name]}"/>'
            )
            out.append(
                f'<text x="{lx + 14:.1f}" y="{ly + 9}" fill="currentColor">{escape(name)}</text>'
            )
    out.append("</svg>")
    return "".join(out)


def horizontal_bars_svg(
    items: Sequence[tuple[str, int]],
    *,
    title: str,
    width: int = 480,
    bar_height: int = 20,
    element_id: str = "",
) -> str:
    """One horizontal bar per (label, value), longest first as given."""
    top, label_w, right = 28, 150, 40
    height = top + max(len(items), 1) * (bar_height + 6) + 8
    plot_w = width - label_w - right
    vmax = max((v for _, v in items), default=0) or 1
    ident = f' id="{_attr(element_id)}"' if element_id else ""
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg"{ident} class="wod-chart" role="img" '
        f'viewBox="0 0 {width} {height}" width="100%" preserveAspectRatio="xMidYMid meet" '
        f'aria-label="{_attr(title)}" font-family="sans-serif" font-size="11">',
        f"<title>{escape(title)}</title>",
        f'<text x="4" y="16" font-size="13" font-weight="bold" fill="currentColor">{escape(title)}</text>',
    ]
    if not items:
        out.append(f'<text x="4" y="{top + 12}" fill="currentColor">No data yet.</text>')
    for i, (label, value) in enumerate(items):
        y = top + i * (bar_height + 6)
        w = value / vmax * plot_w
        short = label if len(label) <= 24 else label[:23] + "…"
        out.append(
            f'<g class="wod-bar" data-label="{_attr(label)}" data-value="{value}"><title>{escape(label)}: {value}</title>'
            f'<text x="{label_w - 6}" y="{y + bar_height - 5}" text-anchor="end" fill="currentColor">{escape(short)}</text>'
            f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_height}" fill="{PALETTE[0]}"/>'
            f'<text x="{label_w + w + 4:.1f}" y="{y + bar_height - 5}" fill="currentColor">{value}</text></g>'
        )
    out.append("</svg>")
    return "".join(out)
