"""Plotly helpers shared by the chapters.

Figures are built from precomputed traces so that their sliders work on the static book page (no kernel needed).
Other modules may add helpers at the end of this file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

__all__ = ["heatmap_grid", "history_figure", "slider_figure", "to_rgb", "wrap_title"]


def to_rgb(image: torch.Tensor | np.ndarray, value_range: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """``(3, H, W)`` float image in ``value_range`` -> ``(H, W, 3)`` uint8 for ``go.Image``."""
    arr = image.detach().float().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image, np.float32)
    if arr.ndim != 3 or arr.shape[0] != 3:
        raise ValueError(f"to_rgb: image must be (3, H, W); got {arr.shape}")
    lo, hi = value_range
    arr = np.clip((arr - lo) / (hi - lo), 0.0, 1.0)
    return (arr.transpose(1, 2, 0) * 255).round().astype(np.uint8)


def slider_figure(steps: Sequence[Sequence[go.BaseTraceType]], labels: Sequence[str], prefix: str = "",
                  active: int = 0, fig: go.Figure | None = None,
                  positions: Sequence[Sequence[tuple[int, int] | None]] | None = None) -> go.Figure:
    """A figure whose slider switches between groups of traces (one group per slider step).

    Args:
        steps: ``steps[s]`` is the list of traces shown at slider step ``s`` (all steps must have the same count).
        labels: one label per step.
        prefix: text before the current label.
        active: the step shown first.
        fig: an existing figure (e.g. from ``make_subplots``) to add the traces to.
        positions: optional ``(row, col)`` per trace, for subplot figures.

    Returns:
        the figure, with ``layout.sliders`` set.
    """
    if not steps or len(steps) != len(labels):
        raise ValueError(f"slider_figure: need one label per step; got {len(steps)} steps, {len(labels)} labels")
    per = len(steps[0])
    if any(len(s) != per for s in steps):
        raise ValueError("slider_figure: every step must have the same number of traces")
    fig = go.Figure() if fig is None else fig
    for s, traces in enumerate(steps):
        for t, trace in enumerate(traces):
            trace.visible = s == active
            where = positions[s][t] if positions is not None else None
            if where is None:
                fig.add_trace(trace)
            else:
                fig.add_trace(trace, row=where[0], col=where[1])
    n = len(steps) * per
    slider_steps = []
    for s, label in enumerate(labels):
        vis = [False] * n
        vis[s * per : (s + 1) * per] = [True] * per
        slider_steps.append({"method": "update", "label": label, "args": [{"visible": vis}]})
    # inset from both edges so that the first and last step labels stay inside the figure
    fig.update_layout(sliders=[{"active": active, "currentvalue": {"prefix": prefix}, "steps": slider_steps,
                                "pad": {"t": 40}, "x": 0.04, "len": 0.92, "font": {"size": 10}}])
    return fig


def display_range(heat: np.ndarray | torch.Tensor) -> np.ndarray:
    """A heatmap min-max normalised to [0, 1] for display (a constant map becomes 0): maps whose values span a narrow
    band (AVOL-Net's lie in 0.2-0.6) otherwise show as one uniform tint on a fixed 0-1 colour scale. Say so in the
    figure's caption: the colours then compare places within a map, not values across maps."""
    h = np.asarray(heat, dtype=np.float64)
    lo, hi = np.nanmin(h), np.nanmax(h)
    return (h - lo) / (hi - lo) if hi > lo else np.zeros_like(h)


PAGE_WIDTH_PX = 700  # the book page's content column, where a figure is drawn at full width
TITLE_FONT_PX = 11


def wrap_title(title: str, width: int) -> str:
    """``title`` broken at spaces into lines of at most ``width`` characters, joined by ``<br>`` (plotly's line
    break); a single longer word stays whole."""
    lines: list[str] = []
    for word in title.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return "<br>".join(lines)


def heatmap_grid(images: Sequence[np.ndarray], heatmaps: Sequence[np.ndarray | None], titles: Sequence[str],
                 cols: int = 4, opacity: float = 0.55, colorscale: str = "Inferno",
                 height_per_row: int | None = None, normalize: bool = True, title: str | None = None,
                 colorbar_title: str | None = None) -> go.Figure:
    """A grid of images, each with an optional heatmap drawn over it, and one colour bar for all of them.

    Panel titles are wrapped to the panel's width on the book page (:data:`PAGE_WIDTH_PX`), and the space between
    rows grows with the longest title, so titles neither collide nor run into the figure's ``title``.

    Args:
        images: ``(H, W, 3)`` uint8 arrays (see :func:`to_rgb`).
        heatmaps: ``(H, W)`` arrays at the image's size, or None for the bare image.
        titles: one per panel.
        cols: panels per row.
        height_per_row: pixel height of a row of images (default: square panels at the page's width).
        normalize: draw each heatmap min-max normalised (:func:`display_range`); ``False`` keeps the values on a
            fixed 0-1 scale (for maps that are probabilities compared across panels).
        title: the figure's title, above the panel titles.
        colorbar_title: the colour bar's label (default: says whether each map was normalised).
    """
    if not (len(images) == len(heatmaps) == len(titles)) or not images:
        raise ValueError("heatmap_grid: images, heatmaps and titles must be non-empty and of equal length")
    rows = (len(images) + cols - 1) // cols
    panel_px = (PAGE_WIDTH_PX - 90) / cols  # the colour bar takes the right edge
    wrapped = [wrap_title(t, max(8, int(panel_px / (0.58 * TITLE_FONT_PX)))) for t in titles]
    lines = max(w.count("<br>") + 1 for w in wrapped)
    title_px = lines * (TITLE_FONT_PX + 3) + 8
    row_px = height_per_row or int(panel_px)
    height = rows * (row_px + title_px) + (40 if title else 10) + 10
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=wrapped, horizontal_spacing=0.02,
                        vertical_spacing=title_px / height if rows > 1 else 0.0)
    fig.update_annotations(font_size=TITLE_FONT_PX)
    shown_scale = False
    for i, (img, heat) in enumerate(zip(images, heatmaps, strict=True)):
        r, c = i // cols + 1, i % cols + 1
        fig.add_trace(go.Image(z=img), row=r, col=c)
        if heat is not None:
            z = display_range(heat) if normalize else np.asarray(heat)
            bar = {"title": {"text": colorbar_title or ("map, min-max<br>per panel" if normalize else "map value"),
                             "side": "right"}, "thickness": 10, "len": min(1.0, 300 / height + 0.2)}
            fig.add_trace(go.Heatmap(z=z, colorscale=colorscale, opacity=opacity, showscale=not shown_scale,
                                     colorbar=bar, zmin=0.0, zmax=1.0), row=r, col=c)
            shown_scale = True
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, autorange="reversed")
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": title_px + (40 if title else 0), "b": 10})
    if title:
        fig.update_layout(title={"text": title, "y": 1.0, "yanchor": "top", "pad": {"t": 8}})
    return fig


def history_figure(history: Sequence[Mapping[str, float]], keys: Sequence[str] = ("loss",),
                   title: str = "training") -> go.Figure:
    """Line plot of logged values against ``step`` from a training history (list of dicts); ``keys``: name(s)."""
    if isinstance(keys, str):
        keys = (keys,)
    fig = go.Figure()
    for key in keys:
        pts = [(h["step"], h[key]) for h in history if key in h]
        if pts:
            x, y = zip(*pts, strict=True)
            fig.add_trace(go.Scatter(x=list(x), y=list(y), mode="lines", name=key))
    fig.update_layout(title=title, xaxis_title="step", height=320, margin={"l": 40, "r": 10, "t": 40, "b": 40})
    return fig
