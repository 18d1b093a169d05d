"""Plot a :class:`SequenceAttribution` as a heatmap with matplotlib (headless-safe).

Figures are built with :class:`matplotlib.figure.Figure` directly, never through pyplot, so
nothing is shown, no global figure list grows, and any backend (Agg included) works.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import Colormap
from matplotlib.figure import Figure

from hooklab.attribution.views import attribution_grid  # the rows of the text and HTML views
from hooklab.output.style import (
    DOUBLE_COLUMN,
    FONT_SIZE,
    SINGLE_COLUMN,
    colorbar,
    label_size,
    new_figure,
    paper_style,
    rotate_ticks,
    token_labels,
)
from hooklab.output.view import ColorScale, number_format

if TYPE_CHECKING:
    from hooklab.attribution.output import SequenceAttribution

_ANNOTATE_MAX = 20  # annotate values by default when both grid sides are at most this


def _size(n_cols: int, n_rows: int) -> tuple[float, float]:
    """Single column up to 8 targets, double column beyond; rows 0.16 in each (max 9 in)."""
    w = SINGLE_COLUMN if n_cols <= 8 else DOUBLE_COLUMN
    return w, min(max(1.6, 0.9 + 0.16 * n_rows), 9.0)


def _colorbar_label(seq: SequenceAttribution, reduce: str | None, normalize: bool) -> str:
    parts = []
    if seq.attributions is not None and seq.attributions.ndim == 3:
        parts.append(f"{reduce or seq.default_reduce} over hidden dims")
    if normalize:
        sides = " over source + target" if seq.encoder_decoder else ""
        parts.append(f"per step, Σ|score| = 1{sides}")
    attributed = seq.parameters.get("attributed_fn")
    name = f"{seq.method} of {attributed}" if isinstance(attributed, str) else seq.method
    return f"{name}" + (f"\n({'; '.join(parts)})" if parts else "")


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
    spaces: str = "thin",
    hide_special: bool = False,
) -> Figure:
    """Return a Figure with a heatmap of the scores: source tokens (y) by target tokens (x).

    Rows are every token up to the last attributed target, columns are the target tokens (one
    per step), as in :func:`hooklab.attribution.views.to_text`. Cells a step cannot see are blank.
    Encoder–decoder outputs show the encoder tokens (labelled "source") above the decoder
    tokens (labelled "target"), separated by a rule, on one colour scale (with ``normalize``,
    each step's shares sum to 1 over both sides). Colours follow
    :class:`~hooklab.output.view.ColorScale` (as the text and HTML views): with
    negative scores (e.g. a difference ``a - b``) diverging (``"RdBu_r"``) centred at 0,
    otherwise sequential (``"Reds"``) from 0; the colour bar names the method, the explained
    function and the normalisation. Without attributions, the step scores are plotted per
    target token instead (one bar panel per score, or lines on ``ax``). The style is
    :mod:`hooklab.output.style`'s: single-column width (3.3 in) up to 8 targets, else
    double-column (6.9 in); TrueType fonts in PDF.

    Args:
        seq: the attribution to plot.
        reduce: how to reduce a ``d_model`` dimension (see ``aggregate.reduce_hidden``).
        normalize: show each step's scores as shares of their absolute sum.
        ax: draw into these axes (and return their figure) instead of a new figure.
        cmap: colormap name or object; by default chosen from the sign of the scores.
        annotate: write the values in the cells; by default when the grid is at most 20x20.
        title: axes title; the method name by default.
        figsize: size of a new figure in inches; by default from the number of tokens.
        spaces: how leading-space markers show (``"thin"``, ``"strip"``, ``"raw"``; see
            :func:`~hooklab.output.style.token_label`).
        hide_special: leave out the rows of special tokens (``seq.special_tokens``, e.g.
            ``</s>`` and the decoder start token ``<pad>``); the scores (and the
            normalisation) are unchanged.

    Returns:
        The :class:`~matplotlib.figure.Figure` (never shown; save it with ``fig.savefig``).
    """
    title = seq.method if title is None else title
    scores = seq.scores(reduce, normalize=normalize)
    with paper_style():
        if scores is None or seq.n_steps == 0:
            return _plot_step_scores(seq, ax=ax, title=title, figsize=figsize, spaces=spaces)
        return _heatmap(
            seq, reduce, normalize, ax, cmap, annotate, title, figsize, spaces, hide_special
        )


def _heatmap(seq, reduce, normalize, ax, cmap, annotate, title, figsize, spaces, hide_special):
    labels, rows, n_source = attribution_grid(seq, reduce, normalize, hide_special)
    grid = np.array(rows, dtype=np.float64).reshape(len(labels), seq.n_steps)  # [row, step]
    n_src, n_steps = grid.shape
    scale = ColorScale.fit(grid)
    style = scale.mpl()
    if cmap is not None:
        style["cmap"] = matplotlib.colormaps.get_cmap(cmap).with_extremes(bad=(0, 0, 0, 0))

    if ax is None:
        fig = new_figure(figsize or _size(n_steps, n_src))
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    image = ax.imshow(grid, aspect="auto", interpolation="nearest", **style)
    colorbar(fig, image, ax, _colorbar_label(seq, reduce, normalize), shrink=0.9, pad=0.02)
    w_in, h_in = fig.get_size_inches()
    x_size = label_size(n_steps, 0.8 * w_in)
    y_size = label_size(n_src, 0.85 * h_in)
    xlabels = token_labels(seq.target_tokens, spaces)
    ax.set_xticks(range(n_steps), xlabels, fontsize=x_size)
    ax.set_yticks(range(n_src), token_labels(labels, spaces), fontsize=y_size)
    rotate_ticks(ax, xlabels, x_size)
    ax.set_xlabel("target (generated or forced)")
    hidden = set(seq.special_tokens) if hide_special else set()
    n_prompt = sum(t not in hidden for t in seq.tokens[: seq.target_start])  # kept prefix rows
    if seq.encoder_decoder:
        _side_labels(ax, n_source, n_src)
        if 0 < n_source < n_src:
            ax.axhline(n_source - 0.5, color="black", linewidth=0.9)
        if seq.target_start > 1 and 0 < n_prompt < n_src - n_source:  # a forced prefix
            ax.axhline(n_source + n_prompt - 0.5, color="0.5", linewidth=0.6)
    else:
        ax.set_ylabel("source")
        if 0 < n_prompt < n_src:
            ax.axhline(n_prompt - 0.5, color="0.5", linewidth=0.6)
    ax.set_title(title)

    if annotate is None:
        annotate = n_src <= _ANNOTATE_MAX and n_steps <= _ANNOTATE_MAX
    if annotate:
        fmt = number_format(grid)
        cell_pt = min(72 * 0.8 * w_in / n_steps, 72 * 0.85 * h_in / n_src)
        size = max(3.5, min(6.0, cell_pt / 3.2))
        for i in range(n_src):
            for j in range(n_steps):
                v = grid[i, j]
                if math.isnan(v):
                    continue
                ink = tuple(c / 255 for c in scale.ink(v))  # readable on dark cells
                ax.text(j, i, fmt(v), ha="center", va="center", fontsize=size, color=ink)
    return fig


def _side_labels(ax: Axes, n_source: int, n_rows: int) -> None:
    """Label the row blocks "source" (encoder) and "target" (decoder) left of the tick labels."""
    from matplotlib.textpath import text_to_path

    widest = max(  # points; measured from the font, so no renderer (or canvas) is needed
        (
            text_to_path.get_text_width_height_descent(t.get_text(), t.get_fontproperties(), False)[
                0
            ]
            for t in ax.get_yticklabels()
        ),
        default=0.0,
    )
    tick = ax.yaxis.get_major_ticks()[0]
    offset = widest + tick.get_pad() + tick.get_tick_padding() + 3  # points left of the axes
    blocks = (("source", 0, n_source), ("target", n_source, n_rows))
    for name, first, stop in blocks:
        if stop > first:
            ax.annotate(
                name, xy=(0, (first + stop - 1) / 2), xycoords=ax.get_yaxis_transform(),
                xytext=(-offset, 0), textcoords="offset points", rotation=90, ha="right",
                va="center", fontsize=FONT_SIZE, annotation_clip=False,
            )  # fmt: skip


def _plot_step_scores(
    seq: SequenceAttribution,
    *,
    ax: Axes | None,
    title: str,
    figsize: tuple[float, float] | None,
    spaces: str = "thin",
) -> Figure:
    """Plot each step score per target token: bar panels, or lines on a given ``ax``."""
    scores = {**seq.step_scores, **seq.extras}
    labels = token_labels(seq.target_tokens, spaces)
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
        w = SINGLE_COLUMN if len(labels) <= 12 else DOUBLE_COLUMN
        fig = new_figure(figsize or (w, 0.6 + 0.8 * k))
        axes = list(fig.subplots(k, 1, sharex=True, squeeze=False)[:, 0])
        for a, (name, values) in zip(axes, scores.items()):
            a.bar(x, values.detach().cpu().double().numpy(), color="tab:red")
            a.set_ylabel(name)
    if not scores or not labels:
        axes[0].text(0.5, 0.5, "no scores", ha="center", va="center", transform=axes[0].transAxes)
    size = label_size(len(labels), 0.85 * fig.get_figwidth())
    axes[-1].set_xticks(x, labels, fontsize=size)
    rotate_ticks(axes[-1], labels, size)
    axes[0].set_title(title)
    return fig
