"""Terminal and HTML tables of attribution, mixing and knockout outputs.

Each renderer picks the grid to show and hands it to :mod:`hooklab.output.view`, which colours
every output with one scale and puts one legend under every HTML table (PECoRe's token views
are in :mod:`hooklab.pecore.render`, on the same scale).

- Attribution: one row per source token (every token up to the last attributed target), one
  column per target token (one per step), like Inseq's ``show``; step scores and extras follow
  as extra rows. Cells a step cannot see are blank.
- Mixing: one layer's ``[query_pos, key_pos]`` matrix; keys a query cannot see are blank.
- Knockout: the relative change (%) of P(target) per source set (rows) and window (columns).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from hooklab.output.view import (
    ColorScale,
    decimals,
    display_token,
    html_grid,
    text_grid,
    use_color,
)

if TYPE_CHECKING:
    from hooklab.mixing.knockout_output import KnockoutOutput
    from hooklab.mixing.output import MixingOutput
    from hooklab.output.sequence import SequenceAttribution

__all__ = [
    "display_token",
    "knockout_html",
    "knockout_text",
    "mixing_html",
    "mixing_text",
    "to_html",
    "to_text",
]


def _number_format(digits: int | None, *rows: Any, significant: int = 2) -> Callable[[float], str]:
    """A formatter with ``digits`` decimals; None: the most that any of ``rows`` needs to show
    its largest ``|value|`` with ``significant`` digits (:func:`~hooklab.output.view.decimals`).
    """
    if digits is None:
        digits = max((decimals(row, significant) for row in rows), default=significant)
    elif isinstance(digits, bool) or not isinstance(digits, int) or digits < 0:
        raise ValueError(
            f"digits must be None (chosen from the values shown) or an int >= 0, got {digits!r}."
        )
    return lambda v: f"{v:.{digits}f}"


# ---- attribution ---------------------------------------------------------------------------
def _attribution_grid(
    seq: SequenceAttribution, reduce: str | None, normalize: bool, hide_special: bool = False
) -> tuple[list[str], list[list[float]], int]:
    """Return row labels, the ``[row, step]`` grid (NaN = not visible) and the number of
    source-side rows (encoder–decoder: the source tokens, above the decoder tokens; 0 for
    decoder-only). ``hide_special`` drops the rows of ``seq.special_tokens``."""
    side = "both" if seq.encoder_decoder else "target"
    scores = seq.scores(reduce, normalize=normalize, side=side)
    if scores is None:
        return [], [], 0
    n_rows = seq.target_start + seq.n_steps
    source = list(seq.source_tokens or ())
    labels = source + list(seq.tokens[:n_rows])
    grid = scores[:, : len(source) + n_rows].T.detach().to("cpu", torch.float64).tolist()
    hidden = set(seq.special_tokens) if hide_special else set()
    keep = [i for i, t in enumerate(labels) if t not in hidden]
    n_source = sum(1 for i in keep if i < len(source))
    return [labels[i] for i in keep], [grid[i] for i in keep], n_source


def _footer(seq: SequenceAttribution) -> list[tuple[str, list[float]]]:
    rows = [(name, v.tolist()) for name, v in seq.step_scores.items()]
    return rows + [(name, v.tolist()) for name, v in seq.extras.items()]


def _attribution_title(seq: SequenceAttribution, reduce: str | None, normalize: bool) -> str:
    head = f"{seq.method}"
    if normalize and seq.attributions is not None:
        head += "  (each step normalised to sum |scores| = 1)"
    if seq.attributions is not None and seq.attributions.ndim >= 3:
        head += f"  (trailing dims reduced with {reduce or seq.default_reduce!r})"
    if "aggregation" in seq.parameters:
        head += f"  [aggregated: {seq.parameters['aggregation'].get('how', '?')}]"
    return head


def to_text(
    seq: SequenceAttribution,
    *,
    reduce: str | None = None,
    normalize: bool = True,
    color: bool | None = None,
    digits: int | None = None,
    max_width: int | None = None,
    hide_special: bool = False,
) -> str:
    """Return a terminal table of the scores (what ``seq.show()`` prints).

    Args:
        seq: the attribution to render.
        reduce: how to reduce a ``d_model`` dimension (see ``aggregate.reduce_hidden``).
        normalize: show each step's scores as shares of their absolute sum.
        color: colour cells with 24-bit ANSI backgrounds on the scale of
            :class:`~hooklab.output.view.ColorScale`; None: only on a terminal without
            ``NO_COLOR`` (see :func:`~hooklab.output.view.use_color`).
        digits: decimals shown; None: chosen from the values shown, enough for the largest
            ``|score|`` and each step-score row's largest to show two significant digits
            (so a table of 1e-4 scores does not read ``0.00``).
        max_width: if set, split the target columns into blocks whose lines fit in this many
            characters (each block repeats the row labels).
        hide_special: leave out the rows of special tokens (``seq.special_tokens``, e.g.
            ``</s>`` and the decoder start token); the stored scores are unchanged.

    Encoder–decoder outputs show the source rows first, then a rule, then the decoder-side rows.

    Returns:
        The table as one string (no trailing newline).
    """
    labels, grid, n_source = _attribution_grid(seq, reduce, normalize, hide_special)
    if n_source:  # a rule row between the source and the target side
        labels.insert(n_source, "─" * 3)
        grid.insert(n_source, [float("nan")] * seq.n_steps)
    title = [_attribution_title(seq, reduce, normalize)]
    targets = list(seq.target_tokens)
    if not labels or not targets:
        title.append("prompt: " + " ".join(display_token(t) for t in seq.prompt_tokens))
    if not targets:
        return "\n".join([*title, "(no attributed target tokens)"])
    footer = _footer(seq)
    return text_grid(
        labels,
        targets,
        grid,
        scale=ColorScale.fit(grid),
        color=use_color(color),
        fmt=_number_format(digits, grid, *(values for _, values in footer)),
        title=title,
        footer=footer,
        max_width=max_width,
    )


def to_html(
    seq: SequenceAttribution,
    *,
    reduce: str | None = None,
    normalize: bool = True,
    digits: int | None = None,
    hide_special: bool = False,
) -> str:
    """Return a self-contained HTML ``<div>``: the table of :func:`to_text` and a legend.

    ``digits`` None: chosen as in :func:`to_text` but with three significant digits; each
    cell's tooltip holds the full-precision value.
    """
    labels, grid, n_source = _attribution_grid(seq, reduce, normalize, hide_special)
    footer = _footer(seq)
    rows = (grid, *(values for _, values in footer))
    return html_grid(
        labels,
        seq.target_tokens,
        grid,
        scale=ColorScale.fit(grid),
        fmt=_number_format(digits, *rows, significant=3),
        title=_attribution_title(seq, reduce, normalize),
        kind="attribution",
        legend="attribution",
        footer=footer,
        rule_before=n_source if seq.encoder_decoder else seq.target_start,
        notes=() if labels else ["prompt: " + "".join(seq.prompt_tokens)],
    )


# ---- mixing --------------------------------------------------------------------------------
def _mixing_grid(out: MixingOutput, layer: int | None, rollout: bool) -> list[list[float]]:
    grid = out.matrix(layer, rollout=rollout).detach().to("cpu", torch.float64).clone()
    grid[~out.visible()] = float("nan")
    return grid.tolist()


def _mixing_title(out: MixingOutput, layer: int | None, rollout: bool) -> str:
    shown = out.layers[out.layer_index(layer)]
    return f"{out.method} {'rollout' if rollout else 'scores'}, layer {shown}"


def mixing_text(
    out: MixingOutput,
    layer: int | None = None,
    *,
    rollout: bool = False,
    digits: int | None = None,
    color: bool | None = None,
    max_width: int | None = None,
) -> str:
    """Return a terminal table of one layer's matrix: query rows, key columns.

    ``digits`` None: decimals chosen from the matrix (two significant digits at its largest).
    """
    grid = _mixing_grid(out, layer, rollout)
    return text_grid(
        out.tokens,
        out.keys,
        grid,
        scale=ColorScale.fit(grid),
        color=use_color(color),
        fmt=_number_format(digits, grid),
        title=[_mixing_title(out, layer, rollout)],
        max_width=max_width,
    )


def mixing_html(
    out: MixingOutput, layer: int | None = None, *, rollout: bool = False, digits: int | None = None
) -> str:
    """Return an HTML table of one layer's matrix, with the legend.

    ``digits`` None: decimals chosen from the matrix (three significant digits at its largest).
    """
    grid = _mixing_grid(out, layer, rollout)
    return html_grid(
        out.tokens,
        out.keys,
        grid,
        scale=ColorScale.fit(grid),
        fmt=_number_format(digits, grid, significant=3),
        title=_mixing_title(out, layer, rollout),
        kind="mixing",
        legend="rollout" if rollout else "mixing score",
        rule_before=out.target_start if out.key_tokens is None else None,
    )


# ---- knockout ------------------------------------------------------------------------------
def _knockout_title(out: KnockoutOutput) -> str:
    query = ", ".join(display_token(out.tokens[q]) for q in out.queries)
    return (
        f"attention knockout: P({display_token(out.target_token)!r}) = "
        f"{out.base_probability:.4f}; relative change (%) when {query} cannot attend to the "
        "source"
    )


def _knockout_columns(out: KnockoutOutput) -> list[str]:
    if out.centres is None:
        return [f"layers {w[0]}-{w[-1]}" for w in out.windows]
    return [str(c) for c in out.centres]


def knockout_text(out: KnockoutOutput, *, digits: int = 1, color: bool | None = None) -> str:
    """Return the relative changes (%) as a table: source sets by window (centre layer)."""
    grid = (100 * out.relative_change).double().tolist()
    return text_grid(
        list(out.sources),
        _knockout_columns(out),
        grid,
        scale=ColorScale.fit(grid, signed=True),
        color=use_color(color),
        fmt=lambda v: f"{v:+.{digits}f}",
        title=[_knockout_title(out), "source \\ " + ("centre layer" if out.centres else "window")],
    )


def knockout_html(out: KnockoutOutput, *, digits: int = 1) -> str:
    """Return the table of relative changes (%) as HTML, with the legend."""
    grid = (100 * out.relative_change).double().tolist()
    return html_grid(
        list(out.sources),
        _knockout_columns(out),
        grid,
        scale=ColorScale.fit(grid, signed=True),
        fmt=lambda v: f"{v:+.{digits}f}",
        title=_knockout_title(out),
        kind="knockout",
        legend="relative change of P(target) (%)",
    )
