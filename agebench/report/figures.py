"""The plots of the eval and comparison reports, and their conversion to inline SVG.

Figures are built as bare ``matplotlib.figure.Figure`` objects, never through pyplot: they
need no GUI backend or display, are not registered in pyplot's global figure list (nothing
to leak, nothing to close), and do not switch the backend of a caller that uses pyplot
itself (as ``matplotlib.use`` would). No number is computed here beyond the plotted points:
curves, bands and limits come from the summary or the comparison.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

#: above this many points a scatter is drawn as an embedded bitmap, keeping the file small
VECTOR_POINTS = 3000
#: every plot's size in inches: drawn near the size the page shows it (about 24rem), so that
#: text drawn at the sizes below reads at about the page's own size
SIZE = (4.6, 3.3)
#: labels on bars, legends and panel titles: small, still legible at that scale
SMALL_FONT = 9
_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")


def to_svg(fig: Any, index: int) -> str:
    """The figure as an inline <svg> element, ids made unique within the page by ``index``
    (which also salts matplotlib's hashes, so the same page renders to the same bytes)."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": f"agebench-{index}"}):
        fig.savefig(
            buffer,
            format="svg",
            metadata={"Date": None, "Creator": None, "Format": None, "Type": None},
        )
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg") :]
    svg = re.sub(r"<!--.*?-->", "", svg, flags=re.S)  # comments echo label text
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    # namespace declarations are implied for <svg> inside HTML; dropping them leaves the page
    # without a single URL of its own
    svg = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", svg)
    prefix = f"p{index}-"
    svg = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}\1"', svg)
    svg = svg.replace('href="#', f'href="#{prefix}').replace("url(#", f"url(#{prefix}")
    return svg.strip()


def figure(bottom: float = 0.15, *, top: float = 0.95) -> tuple[Any, Any]:
    """A bare matplotlib Figure with fixed margins, for every report's plots: never pyplot (no
    backend switch, nothing global to leak), no layout engine (it would draw each figure
    twice)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=SIZE)
    fig.subplots_adjust(left=0.14, right=0.97, top=top, bottom=bottom)
    return fig, fig.add_subplot()


def _padded(low: float, high: float, share: float = 0.03) -> tuple[float, float]:
    """Axis limits a little beyond the data, so that a point or marker on the edge is drawn
    whole instead of cut in half by the frame."""
    pad = (high - low) * share or 1.0
    return low - pad, high + pad


def _cs_axes(ax: Any, longest: int, ylabel: str) -> None:
    """The CS@L axes: L from 0 to ``longest``, 0..100 %, with room for the end points."""
    ax.set(xlabel="error threshold L (years)", ylabel=ylabel)
    ax.set_xlim(*_padded(0, longest))
    ax.set_ylim(*_padded(0, 100))
    ax.set_xticks(range(0, longest + 1, 2))


# --- one eval target -----------------------------------------------------------------------


def cs_curve(m: Mapping[str, Any]) -> Any:
    """Cumulative score CS@L of one target against L = 0..20 years (or more)."""
    fig, ax = figure()
    curve = [(level, 100 * v) for level, v in enumerate(m.get("cs_curve") or []) if v is not None]
    ax.plot([c[0] for c in curve], [c[1] for c in curve], marker="o", markersize=3)
    _cs_axes(ax, max(20, len(curve) - 1), "CS@L (% of scored)")
    ax.grid(alpha=0.3)
    return fig


def predicted_against_true(true: list[float], pred: list[float], target: str) -> Any:
    """Every scored image, predicted against true, with the line y = x."""
    fig, ax = figure()
    ax.scatter(true, pred, s=6, alpha=0.5, linewidths=0, rasterized=len(true) > VECTOR_POINTS)
    low, high = min(min(true), min(pred), 0.0), max(max(true), max(pred))
    ax.plot([low, high], [low, high], color="#c33", linewidth=1, label="y = x")
    ax.set(xlabel=f"true {target} (years)", ylabel="predicted age (years)", aspect="equal")
    ax.set_xlim(*_padded(low, high))
    ax.set_ylim(*_padded(low, high))
    ax.legend(loc="upper left", fontsize=SMALL_FONT)
    ax.grid(alpha=0.3)
    return fig


def mae_by_band(m: Mapping[str, Any]) -> Any:
    """MAE per true age band, each bar labelled with its number of images."""
    fig, ax = figure(bottom=0.24)
    bands = m.get("by_band") or []
    labels = [b["band"] for b in bands]
    heights = [b["mae"] or 0.0 for b in bands]
    bars = ax.bar(labels, heights, color="#4a7ab5")
    ax.bar_label(bars, labels=[f"n={b['n']}" for b in bands], fontsize=SMALL_FONT)
    ax.set_ylim(0, max(heights, default=0.0) * 1.12 or 1.0)  # room for the labels on top
    ax.set(xlabel="true age band", ylabel="MAE (years)")
    ax.tick_params(axis="x", labelrotation=45)
    ax.grid(axis="y", alpha=0.3)
    return fig


def error_histogram(true: list[float], pred: list[float]) -> Any:
    """The distribution of predicted - true, one bin per year (at most 120)."""
    fig, ax = figure()
    errors = [p - t for t, p in zip(true, pred, strict=True)]
    low, high = math.floor(min(errors)), math.ceil(max(errors))
    bins = max(1, min(high - low, 120))
    ax.hist(errors, bins=bins, range=(low, max(high, low + 1)), color="#4a7ab5")
    ax.axvline(0, color="#c33", linewidth=1)
    ax.set(xlabel="error: predicted - true (years)", ylabel="images")
    ax.grid(axis="y", alpha=0.3)
    return fig


# --- several models on one benchmark -------------------------------------------------------


def _overlay_figure(bottom: float = 0.15) -> tuple[Any, Any]:
    """The report's figure, the same size: comparisons overlay several models on it."""
    return figure(bottom)


def _marker_size(n: int) -> float:
    return 14.0 if n <= 500 else 5.0


def _color(index: int) -> str:
    return _COLORS[index % len(_COLORS)]


def cs_curves(comparison: Mapping[str, Any]) -> Any:
    """Each model's CS@L curve on the intersection, overlaid."""
    fig, ax = _overlay_figure()
    longest = 20
    for i, m in enumerate(comparison.get("models") or []):
        curve = (m.get("metrics") or {}).get("cs_curve") or []
        points = [(level, 100 * v) for level, v in enumerate(curve) if v is not None]
        longest = max(longest, len(curve) - 1)
        ax.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            marker="o",
            markersize=3,
            color=_color(i),
            label=m["label"],
        )
    _cs_axes(ax, longest, "CS@L (% of intersection)")
    ax.legend(loc="lower right", fontsize=SMALL_FONT)
    ax.grid(alpha=0.3)
    return fig


def mae_by_band_grouped(comparison: Mapping[str, Any]) -> Any:
    """MAE per true age band, one bar per model in each band."""
    fig, ax = _overlay_figure(bottom=0.24)
    models = comparison.get("models") or []
    bands = (models[0].get("metrics") or {}).get("by_band") or [] if models else []
    width = 0.8 / max(1, len(models))
    for i, m in enumerate(models):
        by_band = (m.get("metrics") or {}).get("by_band") or []
        heights = [(b.get("mae") or 0.0) for b in by_band]
        offsets = [x - 0.4 + width * (i + 0.5) for x in range(len(heights))]
        ax.bar(offsets, heights, width=width, color=_color(i), label=m["label"])
    ax.set_xticks(range(len(bands)), [b["band"] for b in bands])
    ax.set(xlabel="true age band", ylabel="MAE (years)")
    ax.tick_params(axis="x", labelrotation=45)
    ax.legend(loc="upper left", fontsize=SMALL_FONT)
    ax.grid(axis="y", alpha=0.3)
    return fig


def scatter_grid(
    labels: Sequence[str], true: Sequence[float], preds: Sequence[Sequence[float]], target: str
) -> Any:
    """Predicted against true, one small panel per model on shared axes."""
    from matplotlib.figure import Figure

    cols = min(3, len(labels))
    rows = math.ceil(len(labels) / cols)
    fig = Figure(figsize=(SIZE[1] * cols, SIZE[1] * rows))
    fig.subplots_adjust(left=0.1, right=0.98, top=0.9, bottom=0.15, wspace=0.3, hspace=0.45)
    low = min(0.0, min(true), *(min(p) for p in preds))
    high = max(max(true), *(max(p) for p in preds))
    for i, (label, pred) in enumerate(zip(labels, preds, strict=True)):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.scatter(
            true,
            pred,
            s=_marker_size(len(true)),
            alpha=0.5,
            linewidths=0,
            color=_color(i),
            rasterized=len(true) > VECTOR_POINTS,
        )
        ax.plot([low, high], [low, high], color="#c33", linewidth=1)
        ax.set(xlim=_padded(low, high), ylim=_padded(low, high), aspect="equal", title=label)
        ax.set_xlabel(f"true {target}", fontsize=SMALL_FONT)
        ax.set_ylabel("predicted", fontsize=SMALL_FONT)
        ax.title.set_fontsize(SMALL_FONT)
        ax.grid(alpha=0.3)
    return fig


def bland_altman(pair: Mapping[str, Any], a: Sequence[float], b: Sequence[float]) -> Any:
    """Difference against mean of two models' predictions, with the pair's mean difference
    and limits of agreement (from the comparison)."""
    fig, ax = _overlay_figure()
    fig.subplots_adjust(top=0.9)
    mean = [(x + y) / 2 for x, y in zip(a, b, strict=True)]
    diff = [x - y for x, y in zip(a, b, strict=True)]
    ax.scatter(
        mean,
        diff,
        s=_marker_size(len(a)),
        alpha=0.6,
        linewidths=0,
        rasterized=len(a) > VECTOR_POINTS,
    )
    agreement = pair.get("agreement") or {}
    if agreement.get("ba_mean_diff") is not None:
        ax.axhline(agreement["ba_mean_diff"], color="#c33", linewidth=1)
    for limit in agreement.get("ba_loa") or []:
        ax.axhline(limit, color="#c33", linewidth=1, linestyle="--")
    ax.axhline(0, color="#555", linewidth=0.6)
    ax.set(xlabel="mean of the two predictions (years)", ylabel="pred A - pred B (years)")
    ax.set_title(f"A = {pair['a']}, B = {pair['b']}", fontsize=SMALL_FONT)
    ax.grid(alpha=0.3)
    return fig
