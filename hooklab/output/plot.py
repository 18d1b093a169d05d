"""Plot a :class:`SequenceAttribution` as a heatmap with matplotlib (headless-safe).

Figures are built with :class:`matplotlib.figure.Figure` directly, never through pyplot, so
nothing is shown, no global figure list grows, and any backend (Agg included) works.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import matplotlib
import torch
from matplotlib.axes import Axes
from matplotlib.colors import Colormap
from matplotlib.figure import Figure

from hooklab.output.view import ColorScale, display_token

if TYPE_CHECKING:
    from hooklab.output.sequence import SequenceAttribution

_ANNOTATE_MAX = 20  # annotate values by default when both grid sides are at most this


def plot_sequence(
    seq: SequenceAttribution,
    *,
    reduce: str | None = None,
    normalize: bool = True,
    ax: Axes | None = None,
    cmap: str | Colormap | None = None,
    annotate: bool | None = None,
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Return a Figure with a heatmap of the scores: source tokens (y) by target tokens (x).

    Rows are every token up to the last attributed target, columns are the target tokens (one
    per step), as in :func:`hooklab.output.render.to_text`. Cells a step cannot see are blank.
    Colours follow :class:`~hooklab.output.view.ColorScale` (as the text and HTML views): with
    negative scores diverging (``"RdBu_r"``) with limits symmetric around 0, otherwise
    sequential (``"Reds"``) from 0. Without attributions, the step scores are
    plotted per target token instead (one bar panel per score, or lines on ``ax``).

    Args:
        seq: the attribution to plot.
        reduce: how to reduce a ``d_model`` dimension (see ``aggregate.reduce_hidden``).
        normalize: show each step's scores as shares of their absolute sum.
        ax: draw into these axes (and return their figure) instead of a new figure.
        cmap: colormap name or object; by default chosen from the sign of the scores.
        annotate: write the values in the cells; by default when the grid is at most 20x20.
        title: axes title; the method name by default.
        figsize: size of a new figure in inches; by default grows with the number of tokens.

    Returns:
        The :class:`~matplotlib.figure.Figure` (never shown; save it with ``fig.savefig``).
    """
    title = seq.method if title is None else title
    scores = seq.scores(reduce, normalize=normalize)
    if scores is None or seq.n_steps == 0:
        return _plot_step_scores(seq, ax=ax, title=title, figsize=figsize)

    n_rows = seq.target_start + seq.n_steps
    grid = scores[:, :n_rows].T.detach().to("cpu", torch.float64).numpy()  # [source, step]
    n_src, n_steps = grid.shape
    scale = ColorScale.fit(grid)
    style = scale.mpl()
    if cmap is not None:
        style["cmap"] = matplotlib.colormaps.get_cmap(cmap).with_extremes(bad=(0, 0, 0, 0))

    if ax is None:
        if figsize is None:
            figsize = (min(2.5 + 0.55 * n_steps, 40), min(1.5 + 0.3 * n_src, 40))
        fig = Figure(figsize=figsize, layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    image = ax.imshow(grid, aspect="auto", interpolation="nearest", **style)
    hidden = seq.attributions is not None and seq.attributions.ndim == 3
    fig.colorbar(
        image,
        ax=ax,
        label=f"attribution ({reduce or seq.default_reduce} over trailing dims)"
        if hidden
        else None,
    )
    ax.set_xticks(range(n_steps), [display_token(t) for t in seq.target_tokens], rotation=90)
    ax.set_yticks(range(n_src), [display_token(t) for t in seq.tokens[:n_rows]])
    ax.set_xlabel("target")
    ax.set_ylabel("source")
    if seq.target_start < n_src:
        ax.axhline(seq.target_start - 0.5, color="0.5", linewidth=0.8)
    ax.set_title(title)

    if annotate is None:
        annotate = n_src <= _ANNOTATE_MAX and n_steps <= _ANNOTATE_MAX
    if annotate:
        for i in range(n_src):
            for j in range(n_steps):
                v = grid[i, j]
                if math.isnan(v):
                    continue
                ink = tuple(c / 255 for c in scale.ink(v))  # readable on dark cells
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color=ink)
    return fig


def _plot_step_scores(
    seq: SequenceAttribution,
    *,
    ax: Axes | None,
    title: str,
    figsize: tuple[float, float] | None,
) -> Figure:
    """Plot each step score per target token: bar panels, or lines on a given ``ax``."""
    scores = {**seq.step_scores, **seq.extras}
    labels = [display_token(t) for t in seq.target_tokens]
    x = range(len(labels))
    if ax is not None:
        fig = ax.figure
        for name, values in scores.items():
            ax.plot(x, values.detach().cpu().double().numpy(), marker="o", label=name)
        if scores:
            ax.legend()
        axes = [ax]
    else:
        k = max(len(scores), 1)
        if figsize is None:
            figsize = (min(2.5 + 0.55 * len(labels), 40), 1.2 + 1.8 * k)
        fig = Figure(figsize=figsize, layout="constrained")
        axes = list(fig.subplots(k, 1, sharex=True, squeeze=False)[:, 0])
        for a, (name, values) in zip(axes, scores.items()):
            a.bar(x, values.detach().cpu().double().numpy(), color="tab:red")
            a.set_ylabel(name)
    if not scores or not labels:
        axes[0].text(0.5, 0.5, "no scores", ha="center", va="center", transform=axes[0].transAxes)
    axes[-1].set_xticks(x, labels, rotation=90)
    axes[0].set_title(title)
    return fig
