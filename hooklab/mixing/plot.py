"""Figures of context mixing: per-layer heatmaps, rollout, per-token lines, knockout curves.

Figures are built in the style of :mod:`hooklab.output.style` (paper widths, TrueType fonts,
readable tokens, labelled colour bars), never through pyplot: nothing is shown and any backend
(Agg included) works. Every function returns the Figure. Heatmaps are coloured with
:class:`~hooklab.output.view.ColorScale`, the scale of the text and HTML views. Titles of
encoder–decoder outputs say which attention: encoder self-attention, decoder self-attention or
decoder → encoder cross-attention.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from hooklab.output.style import (
    DOUBLE_COLUMN,
    SINGLE_COLUMN,
    colorbar,
    label_size,
    new_figure,
    paper_style,
    rotate_ticks,
    token_label,
    token_labels,
)
from hooklab.output.view import ColorScale, number_format

if TYPE_CHECKING:
    from hooklab.mixing.knockout_output import KnockoutOutput
    from hooklab.mixing.output import MixingOutput

_ANNOTATE_MAX = 16  # write values in the cells when the matrix is at most this wide
MAX_PANELS = 12  # plot_layers shows at most this many layers unless asked (evenly spaced)
_ENC_DEC = ("ConditionalGeneration", "MTModel", "Seq2Seq", "EncoderDecoder")


def attention_name(part: str | None, model: Mapping[str, Any] | None = None) -> str:
    """Which attention an output is about, in words (empty for a decoder-only model)."""
    if part == "cross":
        return "cross-attention (decoder → encoder)"
    if part == "encoder":
        return "encoder self-attention"
    arch = str((model or {}).get("architecture", ""))
    if part == "decoder" and any(k in arch for k in _ENC_DEC):
        return "decoder self-attention"
    return ""


def _method_title(out: MixingOutput, rollout: bool) -> str:
    name = out.method.replace("_", " ") + (" rollout" if rollout else "")
    which = attention_name(out.parameters.get("part"), out.model)
    return f"{name}, {which}" if which else name


def _score_label(out: MixingOutput, rollout: bool) -> str:
    metric = out.parameters.get("metric")
    name = out.method.replace("_", " ") + (f" ({metric} distance)" if metric else "")
    if rollout:
        return f"{name}\nrolled out (rows sum to 1)"
    return name + ("\n(rows sum to 1)" if out.parameters.get("normalize", True) else "")


def _grid(out: MixingOutput, layer: int | None, rollout: bool) -> np.ndarray:
    grid = out.matrix(layer, rollout=rollout).double().numpy().copy()
    grid[~out.visible().numpy()] = np.nan
    return grid


def _heatmap(ax: Axes, out: MixingOutput, grid, scale: ColorScale, cmap, labels: bool, spaces: str):
    style = scale.mpl()
    if cmap is not None:
        style["cmap"] = matplotlib.colormaps.get_cmap(cmap).with_extremes(bad=(0, 0, 0, 0))
    image = ax.imshow(grid, interpolation="nearest", **style)
    n_q, n_k = grid.shape
    fig_w, fig_h = ax.figure.get_size_inches()
    box = ax.get_position()
    size = min(label_size(n_k, fig_w * box.width), label_size(n_q, fig_h * box.height))
    if labels and size >= 4:
        keys = token_labels(out.keys, spaces)
        ax.set_xticks(range(n_k), keys, fontsize=size)
        ax.set_yticks(range(n_q), token_labels(out.tokens, spaces), fontsize=size)
        ax.tick_params(axis="x", labelrotation=90 if n_k > 6 else 0, length=1.5, pad=1)
        ax.tick_params(axis="y", length=1.5, pad=1)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    if out.target_start is not None and 0 < out.target_start < n_q and out.key_tokens is None:
        for line in (ax.axhline, ax.axvline):
            line(out.target_start - 0.5, color="0.4", linewidth=0.5, linestyle="--")
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
    spaces: str = "thin",
) -> Figure:
    """Heatmap of one layer's mixing matrix (query tokens as rows, key tokens as columns).

    Single-column width (3.3 in) up to 16 tokens, double-column (6.9 in) beyond.

    Args:
        out: the mixing output.
        layer: the model layer (the last computed one when None).
        rollout: plot the rolled-out matrix instead of the layer's own.
        ax: draw into these axes instead of a new figure.
        cmap: colormap name; by default the scale's (``"Reds"``, or ``"RdBu_r"`` with
            negative scores).
        annotate: write the values in the cells; by default for matrices up to 16 wide.
        spaces: how leading-space markers show (see :func:`~hooklab.output.style.token_label`).
    """
    grid = _grid(out, layer, rollout)
    with paper_style():
        if ax is None:
            side = SINGLE_COLUMN if max(grid.shape) <= _ANNOTATE_MAX else DOUBLE_COLUMN
            fig = new_figure(figsize or (side, side * 0.85))
            ax = fig.add_subplot()
        fig = ax.figure
        scale = ColorScale.fit(grid)
        image = _heatmap(ax, out, grid, scale, cmap, True, spaces)
        colorbar(fig, image, ax, _score_label(out, rollout), shrink=0.8)
        shown = out.layers[out.layer_index(layer)]
        where = f"up to layer {shown}" if rollout else f"layer {shown}"
        ax.set_title(f"{_method_title(out, rollout)}, {where}" if title is None else title)
        ax.set_xlabel("key (mixed in)")
        ax.set_ylabel("query")
        if annotate if annotate is not None else max(grid.shape) <= _ANNOTATE_MAX:
            fmt = number_format(grid, significant=1)
            size = max(3.0, min(5.5, label_size(grid.shape[1], 0.8 * fig.get_figwidth()) / 1.8))
            for (i, j), v in np.ndenumerate(grid):
                if not math.isnan(v):
                    ink = tuple(c / 255 for c in scale.ink(v))
                    ax.text(j, i, fmt(v), ha="center", va="center", fontsize=size,
                            color=ink)  # fmt: skip
    return fig


def spaced_layers(layers: Sequence[int], most: int = MAX_PANELS) -> list[int]:
    """At most ``most`` of ``layers``, evenly spaced, first and last included."""
    layers = list(layers)
    if len(layers) <= most:
        return layers
    picks = np.linspace(0, len(layers) - 1, most).round().astype(int)
    return [layers[i] for i in sorted(set(picks.tolist()))]


def plot_layers(
    out: MixingOutput,
    *,
    layers: Sequence[int] | None = None,
    rollout: bool = False,
    ncols: int | None = None,
    cmap: str | None = None,
    labels: bool = True,
    figsize: tuple[float, float] | None = None,
    spaces: str = "thin",
    max_panels: int = MAX_PANELS,
) -> Figure:
    """Grid of per-layer heatmaps on one shared colour scale, double-column wide.

    A model of 2 to ``max_panels`` layers gets one panel per layer; a deeper one gets
    ``max_panels`` evenly spaced layers (named in the title) unless ``layers`` chooses them.
    :func:`plot_query_layers` shows every layer at once for one query token.

    Args:
        layers: model layers to show (default: all computed ones, at most ``max_panels``).
        rollout: show the rolled-out matrices.
        ncols: panels per row (up to 4 by default).
        labels: token labels on the panels (dropped when they would be smaller than 4 pt).
        spaces: how leading-space markers show (see :func:`~hooklab.output.style.token_label`).
        max_panels: the most layers shown when ``layers`` is None.
    """
    chosen = spaced_layers(out.layers, max_panels) if layers is None else list(layers)
    grids = [_grid(out, layer, rollout) for layer in chosen]
    ncols = ncols or min(4, len(chosen))
    nrows = math.ceil(len(chosen) / ncols)
    panel = (DOUBLE_COLUMN - 0.6) / ncols
    with paper_style():
        fig = new_figure(figsize or (DOUBLE_COLUMN, nrows * panel + 0.4))
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        scale = ColorScale.fit(grids)
        image = None
        for ax, layer, grid in zip(axes, chosen, grids):
            image = _heatmap(ax, out, grid, scale, cmap, labels, spaces)
            ax.set_title(f"layer {layer}", fontsize=7, pad=2)
        for ax in axes[len(chosen) :]:
            ax.set_axis_off()
        if image is not None:
            colorbar(fig, image, list(axes), _score_label(out, rollout), shrink=0.6)
        note = "" if len(chosen) == len(out.layers) else f" ({len(chosen)} of {len(out.layers)})"
        fig.suptitle(f"{_method_title(out, rollout)}: query (rows) mixes in key (columns){note}")
    return fig


def plot_query_layers(
    out: MixingOutput,
    query: int = -1,
    *,
    rollout: bool = False,
    ax: Axes | None = None,
    figsize: tuple[float, float] | None = None,
    spaces: str = "thin",
) -> Figure:
    """Layer × key heatmap of one query token's row: every layer in one panel (2 to 80+ layers).

    Args:
        query: position of the query token (negative counts from the end).
        rollout: the rolled-out scores.
        spaces: how leading-space markers show (see :func:`~hooklab.output.style.token_label`).
    """
    q = query % len(out.tokens)
    values = _token_scores(out, q, rollout).copy()  # [layer, key_pos]
    values[:, ~out.visible()[q].numpy()] = np.nan
    n_layers, n_keys = values.shape
    with paper_style():
        if ax is None:
            width = SINGLE_COLUMN if n_keys <= 16 else DOUBLE_COLUMN
            fig = new_figure(figsize or (width, min(1.2 + 0.09 * n_layers, 7.5)))
            ax = fig.add_subplot()
        fig = ax.figure
        scale = ColorScale.fit(values)
        image = ax.imshow(values, aspect="auto", interpolation="nearest", **scale.mpl())
        keys = token_labels(out.keys, spaces)
        size = label_size(n_keys, 0.8 * fig.get_figwidth())
        ax.set_xticks(range(n_keys), keys, fontsize=size)
        rotate_ticks(ax, keys, size)
        ax.yaxis.set_major_locator(MaxNLocator(nbins=min(n_layers, 10), integer=True))
        ax.set_yticklabels([])
        ticks = [int(t) for t in ax.get_yticks() if 0 <= t < n_layers]
        ax.set_yticks(ticks, [str(out.layers[t]) for t in ticks])
        ax.set_ylabel("layer")
        ax.set_xlabel("key (mixed in)")
        colorbar(fig, image, ax, _score_label(out, rollout), shrink=0.9)
        label = token_label(out.tokens[q], "strip")
        ax.set_title(f"{_method_title(out, rollout)}: what {label!r} ({q}) mixes in")
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
    figsize: tuple[float, float] = (SINGLE_COLUMN, 2.4),
    spaces: str = "thin",
) -> Figure:
    """Lines over layers: how much token ``query`` mixes in each key token (single column).

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
    with paper_style():
        if ax is None:
            fig = new_figure(figsize)
            ax = fig.add_subplot()
        fig = ax.figure
        for n, k in enumerate(keys):
            label = f"{token_label(out.keys[k], 'strip')} ({k})"
            width = 2.2 if k in highlight else 1.0
            ax.plot(out.layers, values[:, k], marker=_MARKERS[n % len(_MARKERS)], markersize=3,
                    linewidth=width, label=label)  # fmt: skip
        ax.set_xlabel("layer")
        ax.set_ylabel(_score_label(out, rollout).split("\n")[0])
        ax.xaxis.set_major_locator(MaxNLocator(nbins=10, integer=True))
        ax.set_title(f"What {token_label(out.tokens[q], 'strip')!r} ({q}) mixes in, per layer")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), handlelength=1.6)
    return fig


_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_LINESTYLES = ("-", "--", "-.", ":")


def _source_label(name: str, positions: Sequence[int], tokens: Sequence[str], most: int = 28):
    """``name: the tokens`` (shortened to ``most`` characters), e.g. ``cue: sick``."""
    text = "".join(tokens[p] for p in positions).strip().replace("\n", " ")
    if len(text) > most:
        text = text[: most - 1] + "…"
    return f"{name}: {text}" if text else name


def plot_knockout(
    out: KnockoutOutput,
    *,
    ax: Axes | None = None,
    title: str | None = None,
    figsize: tuple[float, float] = (SINGLE_COLUMN, 2.2),
) -> Figure:
    """Geva et al.'s curves: relative change (%) of P(target) per centre layer, per source set.

    Each source set has its own colour, marker and line style (curves that overlap on 0 stay
    distinguishable; points are also dodged by up to ±0.1 layer), and the legend names the
    blocked tokens. With a single window (all
    layers blocked at once), one bar per source set instead.
    """
    change = 100 * out.relative_change.double().numpy()  # [source, window]
    names = list(out.sources)
    key_tokens = out.key_tokens or out.tokens
    labels = [_source_label(n, out.sources[n], key_tokens) for n in names]
    own_figure = ax is None
    with paper_style():
        if ax is None:
            rows = len(names) if max(map(len, labels)) > 20 else math.ceil(len(names) / 2)
            fig = new_figure((figsize[0], figsize[1] + 0.13 * rows))
            ax = fig.add_subplot()
        fig = ax.figure
        if out.centres is None:
            colours = [f"C{i}" for i in range(len(names))]
            ax.bar(range(len(names)), change[:, 0], color=colours)
            ax.set_xticks(range(len(names)), labels)
            rotate_ticks(ax, labels, 6.5)
            ax.set_xlabel(f"source (blocked in layers {out.windows[0][0]}-{out.windows[0][-1]})")
        else:
            dodge = 0.2 / max(len(labels) - 1, 1)  # markers on the same value stay visible
            for n, (label, values) in enumerate(zip(labels, change)):
                x = np.asarray(out.centres) + (n - (len(labels) - 1) / 2) * dodge
                ax.plot(x, values, marker=_MARKERS[n % len(_MARKERS)],
                        linestyle=_LINESTYLES[n % len(_LINESTYLES)], markersize=3.5,
                        linewidth=1.1, label=label, zorder=3 + len(labels) - n,
                        markerfacecolor="none" if n % 2 else None)  # fmt: skip
            window = out.parameters.get("window")
            ax.xaxis.set_major_locator(MaxNLocator(nbins=10, integer=True))
            ax.set_xlabel(f"centre layer (window of {window} layer{'s' if window != 1 else ''})")
            ncol = 2 if max(map(len, labels)) <= 20 else 1
            if own_figure:  # below the axes, inside the figure's layout
                fig.legend(loc="outside lower center", ncol=ncol, handlelength=2.2)
            else:
                ax.legend(ncol=ncol, handlelength=2.2)
        ax.axhline(0, color="0.6", linewidth=0.5, zorder=1)
        ax.set_ylabel("change in P(target) (%)")
        query = ", ".join(token_label(out.tokens[q], "strip") for q in out.queries)
        target = token_label(out.target_token, "strip")
        which = attention_name(out.parameters.get("part"), out.model)
        default = f"{query!r} cannot attend to source; P({target!r}) = {out.base_probability:.2g}"
        ax.set_title(title or (f"{default}\n{which}" if which else default))
    return fig
