"""Figures of context mixing: per-layer heatmaps, rollout, per-token lines, knockout curves.

Figures are built with :class:`matplotlib.figure.Figure` directly, never through pyplot: nothing
is shown and any backend (Agg included) works. Every function returns the Figure. Heatmaps are
coloured with :class:`~hooklab.output.view.ColorScale`, the scale of the text and HTML views.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from hooklab.output.view import ColorScale, display_token

if TYPE_CHECKING:
    from hooklab.mixing.knockout_output import KnockoutOutput
    from hooklab.mixing.output import MixingOutput

_ANNOTATE_MAX = 16  # write values in the cells when the matrix is at most this wide


def _grid(out: MixingOutput, layer: int | None, rollout: bool) -> np.ndarray:
    grid = out.matrix(layer, rollout=rollout).double().numpy().copy()
    grid[~out.visible().numpy()] = np.nan
    return grid


def _heatmap(ax: Axes, out: MixingOutput, grid: np.ndarray, scale: ColorScale, cmap, labels: bool):
    style = scale.mpl()
    if cmap is not None:
        style["cmap"] = matplotlib.colormaps.get_cmap(cmap).with_extremes(bad=(0, 0, 0, 0))
    image = ax.imshow(grid, interpolation="nearest", **style)
    n_q, n_k = grid.shape
    size = 8 if max(n_q, n_k) <= 20 else 6
    if labels:
        ax.set_xticks(range(n_k), [display_token(t) for t in out.keys], rotation=90, fontsize=size)
        ax.set_yticks(range(n_q), [display_token(t) for t in out.tokens], fontsize=size)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    if out.target_start is not None and 0 < out.target_start < n_q and out.key_tokens is None:
        for line in (ax.axhline, ax.axvline):
            line(out.target_start - 0.5, color="0.4", linewidth=0.6, linestyle="--")
    return image


def plot_matrix(
    out: MixingOutput,
    layer: int | None = None,
    *,
    rollout: bool = False,
    ax: Axes | None = None,
    cmap: str | None = None,
    annotate: bool | None = None,
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Heatmap of one layer's mixing matrix (query tokens as rows, key tokens as columns).

    Args:
        out: the mixing output.
        layer: the model layer (the last computed one when None).
        rollout: plot the rolled-out matrix instead of the layer's own.
        ax: draw into these axes instead of a new figure.
        cmap: colormap name; by default the scale's (``"Reds"``, or ``"RdBu_r"`` with
            negative scores).
        annotate: write the values in the cells; by default for matrices up to 16 wide.
    """
    grid = _grid(out, layer, rollout)
    if ax is None:
        side = min(2.5 + 0.32 * max(grid.shape), 30)
        fig = Figure(figsize=figsize or (side + 1, side), layout="constrained")
        ax = fig.add_subplot()
    fig = ax.figure
    scale = ColorScale.fit(grid)
    image = _heatmap(ax, out, grid, scale, cmap, labels=True)
    fig.colorbar(image, ax=ax, shrink=0.8)
    shown = out.layers[out.layer_index(layer)]
    default = f"{out.method}{' rollout up to' if rollout else ','} layer {shown}"
    ax.set_title(default if title is None else title)
    ax.set_xlabel("key (mixed in)")
    ax.set_ylabel("query")
    if annotate if annotate is not None else max(grid.shape) <= _ANNOTATE_MAX:
        for (i, j), v in np.ndenumerate(grid):
            if not math.isnan(v):
                ink = tuple(c / 255 for c in scale.ink(v))
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color=ink)
    return fig


def plot_layers(
    out: MixingOutput,
    *,
    layers: Sequence[int] | None = None,
    rollout: bool = False,
    ncols: int | None = None,
    cmap: str | None = None,
    labels: bool = True,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Grid of per-layer heatmaps on one shared colour scale, with token labels.

    Args:
        layers: model layers to show (all computed layers when None).
        rollout: show the rolled-out matrices.
        ncols: panels per row (about square by default).
        labels: token labels on every panel's axes.
    """
    layers = list(out.layers if layers is None else layers)
    grids = [_grid(out, layer, rollout) for layer in layers]
    ncols = ncols or math.ceil(math.sqrt(len(layers)))
    nrows = math.ceil(len(layers) / ncols)
    side = min(1.5 + 0.22 * len(out.tokens), 8)
    fig = Figure(figsize=figsize or (ncols * side + 1, nrows * side), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    scale = ColorScale.fit(grids)
    image = None
    for ax, layer, grid in zip(axes, layers, grids):
        image = _heatmap(ax, out, grid, scale, cmap, labels)
        ax.set_title(f"layer {layer}", fontsize=10)
    for ax in axes[len(layers) :]:
        ax.set_axis_off()
    if image is not None:
        fig.colorbar(image, ax=list(axes), shrink=0.6)
    fig.suptitle(f"{out.method}{' rollout' if rollout else ''}: query (rows) mixes key (cols)")
    return fig


def top_keys(out: MixingOutput, query: int, top_k: int = 6, *, rollout: bool = False) -> list[int]:
    """The ``top_k`` key positions with the largest peak score of ``query`` over layers."""
    values = _token_scores(out, query, rollout)
    q = query % len(out.tokens)
    peak = np.where(out.visible()[q].numpy(), values.max(0), -np.inf)
    if out.key_tokens is None:
        peak[q] = -np.inf  # the query itself
    return sorted(int(k) for k in np.argsort(-peak)[:top_k] if np.isfinite(peak[k]))


def _token_scores(out: MixingOutput, query: int, rollout: bool) -> np.ndarray:
    source = out.rollout if rollout else out.scores
    if source is None:
        raise ValueError("This output has no rollout; compute it with rollout=True.")
    return source[:, query % len(out.tokens)].double().numpy()  # [layer, key_pos]


def plot_token_mixing(
    out: MixingOutput,
    query: int = -1,
    *,
    keys: Sequence[int] | None = None,
    top_k: int = 6,
    highlight: Sequence[int] = (),
    rollout: bool = False,
    ax: Axes | None = None,
    figsize: tuple[float, float] = (7, 4),
) -> Figure:
    """Lines over layers: how much token ``query`` mixes in each key token.

    Args:
        query: position of the query token (e.g. a target token; negative counts from the end).
        keys: key positions to draw; by default the ``top_k`` with the largest peak score
            (the query itself excluded, see :func:`top_keys`).
        highlight: key positions drawn with thick lines (e.g. a context cue).
        rollout: draw the rolled-out scores.
    """
    q = query % len(out.tokens)
    values = _token_scores(out, q, rollout)
    keys = top_keys(out, q, top_k, rollout=rollout) if keys is None else keys
    if ax is None:
        fig = Figure(figsize=figsize, layout="constrained")
        ax = fig.add_subplot()
    fig = ax.figure
    for k in keys:
        label = f"{display_token(out.keys[k])} ({k})"
        width = 2.6 if k in highlight else 1.2
        ax.plot(out.layers, values[:, k], marker="o", markersize=3, linewidth=width, label=label)
    ax.set_xlabel("layer")
    ax.set_ylabel("mixing score" + (" (rollout)" if rollout else ""))
    ax.set_xticks(out.layers)
    ax.set_title(f"How much {display_token(out.tokens[q])!r} ({q}) mixes in each token")
    ax.legend(fontsize=8, frameon=False)
    return fig


def plot_knockout(
    out: KnockoutOutput,
    *,
    ax: Axes | None = None,
    title: str | None = None,
    figsize: tuple[float, float] = (6, 3.5),
) -> Figure:
    """Geva et al.'s curves: relative change (%) of P(target) per centre layer, per source set.

    With a single window (all layers blocked at once), one bar per source set instead.
    """
    if ax is None:
        fig = Figure(figsize=figsize, layout="constrained")
        ax = fig.add_subplot()
    fig = ax.figure
    change = 100 * out.relative_change.double().numpy()  # [source, window]
    names = list(out.sources)
    if out.centres is None:
        ax.bar(range(len(names)), change[:, 0], color="tab:red")
        ax.set_xticks(range(len(names)), names)
        ax.set_xlabel(f"source (blocked in layers {out.windows[0][0]}-{out.windows[0][-1]})")
    else:
        for name, values in zip(names, change):
            ax.plot(out.centres, values, marker="o", markersize=3, label=name)
        window = out.parameters.get("window")
        ax.set_xticks(out.centres)
        ax.set_xlabel(f"centre layer (window of {window} layer{'s' if window != 1 else ''})")
        ax.legend(fontsize=8, frameon=False)
    ax.axhline(0, color="0.5", linewidth=0.6)
    ax.set_ylabel("% change in P(target)")
    query = ", ".join(display_token(out.tokens[q]) for q in out.queries)
    target = display_token(out.target_token)
    ax.set_title(title or f"Knockout: {query} ← source, target {target!r}", fontsize=10)
    return fig
