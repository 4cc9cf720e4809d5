"""Small charts as inline SVG text, for the retraining report: line and grouped-bar panels with
axes, ticks, a title and a legend, laid side by side in one figure. No plotting library, so
every report has its figures, and drawing them costs milliseconds.

A panel is drawn into a box of ``PANEL`` pixels; values that are None or not finite are left
out (a gap in a line, a missing bar).
"""

import html
import math

#: Width and height of one panel, in pixels.
PANEL = (300, 240)
#: Margins of the plotting area inside a panel: left, right, top (title and legend), bottom.
MARGIN = (52, 10, 36, 40)
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd")


def figure(panels: list[str]) -> str:
    """One ``<svg>`` holding ``panels`` (from :func:`line_panel` / :func:`bar_panel`) in a row."""
    w, h = PANEL
    body = "".join(f'<g transform="translate({i * w},0)">{p}</g>' for i, p in enumerate(panels))
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w * len(panels)}" height="{h}" '
        f'font-family="sans-serif" font-size="11">{body}</svg>'
    )


def line_panel(
    series: list[tuple[str, list, list]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    xlim: tuple[float, float] | None = None,
    ylim: tuple[float, float] | None = None,
    diagonal: bool = False,
    markers: bool = False,
) -> str:
    """A panel of lines, one per ``(label, xs, ys)``; ``diagonal`` adds the grey y = x line."""
    points = [
        [(x, y) for x, y in zip(xs, ys, strict=True) if _ok(x) and _ok(y)] for _, xs, ys in series
    ]
    xs = [x for p in points for x, _ in p]
    ys = [y for p in points for _, y in p]
    x_range = xlim or _span(xs)
    y_range = ylim or _span(ys)
    to_px, parts = _axes(x_range, y_range, title, xlabel, ylabel)
    if diagonal:
        (a, b), (c, d) = to_px(0, 0), to_px(1, 1)
        parts.append(f'<line x1="{a:.1f}" y1="{b:.1f}" x2="{c:.1f}" y2="{d:.1f}" stroke="#999"/>')
    for i, line in enumerate(points):
        color = COLORS[i % len(COLORS)]
        px = [to_px(x, y) for x, y in line]
        if len(px) > 1:
            path = " ".join(f"{a:.1f},{b:.1f}" for a, b in px)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{color}"/>')
        if markers or len(px) == 1:
            parts += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="2.5" fill="{color}"/>' for a, b in px]
    parts.append(_legend([label for label, _, _ in series]))
    return "".join(parts)


def bar_panel(categories: list[str], series: list[tuple[str, list]], *, title: str) -> str:
    """A panel of grouped bars: for each category, one bar per ``(label, values)``."""
    values = [v for _, vs in series for v in vs if _ok(v)]
    lo, hi = _span(values + [0.0])
    to_px, parts = _axes((0, len(categories)), (lo, hi), title, "", "", x_ticks=False)
    width = 0.8 / max(1, len(series))
    for i, (_, vs) in enumerate(series):
        for j, v in enumerate(vs):
            if not _ok(v):
                continue
            (a, top), (b, base) = to_px(j + 0.1 + i * width, v), to_px(j + 0.1 + (i + 1) * width, 0)
            y, height = min(top, base), abs(base - top)
            parts.append(
                f'<rect x="{a:.1f}" y="{y:.1f}" width="{b - a:.1f}" height="{height:.1f}" '
                f'fill="{COLORS[i % len(COLORS)]}"/>'
            )
    for j, name in enumerate(categories):
        x, y = to_px(j + 0.5, lo)
        parts.append(_text(x, y + 14, name, anchor="middle"))
    parts.append(_legend([label for label, _ in series]))
    return "".join(parts)


def _ok(v) -> bool:
    return v is not None and math.isfinite(v)


def _span(values: list[float]) -> tuple[float, float]:
    """The range of ``values``, widened a little (and made non-empty) so nothing sits on the
    frame."""
    if not values:
        return 0.0, 1.0
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.05 or abs(hi) * 0.05 or 0.5
    return lo - pad, hi + pad


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round values between ``lo`` and ``hi``."""
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    for factor in (1, 2, 5, 10):
        if (hi - lo) / (step * factor) <= n:
            step *= factor
            break
    first = math.ceil(lo / step)
    return [k * step for k in range(first, math.floor(hi / step) + 1)]


def _axes(x_range, y_range, title: str, xlabel: str, ylabel: str, x_ticks: bool = True):
    """The frame, ticks and labels of a panel, and the map from data to pixel coordinates."""
    (w, h), (left, right, top, bottom) = PANEL, MARGIN
    (x0, x1), (y0, y1) = x_range, y_range

    def to_px(x: float, y: float) -> tuple[float, float]:
        return (
            left + (x - x0) / (x1 - x0) * (w - left - right),
            h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom),
        )

    parts = [
        f'<rect x="{left}" y="{top}" width="{w - left - right}" height="{h - top - bottom}" '
        'fill="none" stroke="#444"/>',
        _text(w / 2, 12, title, anchor="middle", bold=True),
        _text(w / 2, h - 6, xlabel, anchor="middle"),
        _text(12, h / 2, ylabel, anchor="middle", rotate=True),
    ]
    for y in _ticks(y0, y1):
        _, py = to_px(x0, y)
        parts.append(
            f'<line x1="{left - 4}" y1="{py:.1f}" x2="{left}" y2="{py:.1f}" stroke="#444"/>'
        )
        parts.append(_text(left - 6, py + 4, f"{y:.4g}", anchor="end"))
    for x in _ticks(x0, x1) if x_ticks else []:
        px, _ = to_px(x, y0)
        base = h - bottom
        parts.append(
            f'<line x1="{px:.1f}" y1="{base}" x2="{px:.1f}" y2="{base + 4}" stroke="#444"/>'
        )
        parts.append(_text(px, base + 15, f"{x:.4g}", anchor="middle"))
    return to_px, parts


def _legend(labels: list[str]) -> str:
    """The series' colours and labels in a row above the frame."""
    (x, _, top, _), parts = MARGIN, []
    for i, label in enumerate(labels):
        color = COLORS[i % len(COLORS)]
        parts.append(f'<rect x="{x}" y="{top - 12}" width="10" height="8" fill="{color}"/>')
        parts.append(_text(x + 14, top - 4, label))
        x += 24 + 7 * len(str(label))
    return "".join(parts)


def _text(x: float, y: float, text: str, *, anchor="start", bold=False, rotate=False) -> str:
    extra = ' font-weight="bold"' if bold else ""
    if rotate:
        extra += f' transform="rotate(-90 {x:.1f} {y:.1f})"'
    label = html.escape(str(text))
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{extra}>{label}</text>'
