"""Terminal and HTML tables and tidy pandas tables of attribution outputs.

The table has one row per source token (every token up to the last attributed target), one
column per target token (one per step), like Inseq's ``show``; step scores and extras follow
as extra rows. Cells a step cannot see are blank. The grid goes to :mod:`hooklab.output.view`,
which colours every output with one scale and puts one legend under every HTML table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from hooklab.output.view import (
    ColorScale,
    display_token,
    html_grid,
    number_format,
    text_grid,
    use_color,
)

if TYPE_CHECKING:
    import pandas as pd

    from hooklab.attribution.output import AttributionOutput, SequenceAttribution

__all__ = ["attribution_frame", "attribution_grid", "sequence_frame", "to_html", "to_text"]


# ---- attribution ---------------------------------------------------------------------------
def attribution_grid(
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
    labels, grid, n_source = attribution_grid(seq, reduce, normalize, hide_special)
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
        fmt=number_format(grid, *(values for _, values in footer), digits=digits),
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
    labels, grid, n_source = attribution_grid(seq, reduce, normalize, hide_special)
    footer = _footer(seq)
    rows = (grid, *(values for _, values in footer))
    return html_grid(
        labels,
        seq.target_tokens,
        grid,
        scale=ColorScale.fit(grid),
        fmt=number_format(*rows, significant=3, digits=digits),
        title=_attribution_title(seq, reduce, normalize),
        kind="attribution",
        legend="attribution",
        footer=footer,
        rule_before=n_source if seq.encoder_decoder else seq.target_start,
        notes=() if labels else ["prompt: " + "".join(seq.prompt_tokens)],
    )


# ---- pandas ----------------------------------------------------------------------------
def sequence_frame(seq: SequenceAttribution, reduce: str | None = None) -> pd.DataFrame:
    """One row per (step, visible source position) of one attributed sequence.

    Columns: ``step``; ``target_pos`` and ``target_token`` (the token step ``step`` predicts);
    ``pos`` and ``token`` (the source token); ``score`` (``seq.scores(reduce)[step, pos]``,
    trailing dims reduced with ``reduce``, not normalised); then one column per step score and
    extra (repeated on every row of the step). Positions a step cannot see (NaN) are left
    out. Without attributions: one row per step, ``pos`` and ``token`` missing, ``score`` NaN.

    Encoder–decoder outputs have a column ``side`` after ``score``: ``"source"`` rows (``pos``
    and ``token`` index the source tokens) come first, then ``"target"`` rows (the decoder
    input).
    """
    import pandas as pd

    sides = [("target", seq.tokens, seq.scores(reduce))]
    if seq.encoder_decoder and seq.attributions is not None:
        sides.insert(0, ("source", seq.source_tokens, seq.scores(reduce, side="source")))
    cells = []  # (side, step, pos, score, token)
    for side, tokens, scores in sides:
        if scores is None:
            cells += [(side, t, None, float("nan"), None) for t in range(seq.n_steps)]
            break
        grid = scores.detach().to("cpu", torch.float64)
        cells += [
            (side, t, k, grid[t, k].item(), tokens[k])
            for t, k in (~grid.isnan()).nonzero().tolist()
        ]
    start = seq.target_start
    frame = pd.DataFrame(
        {
            "step": [c[1] for c in cells],
            "target_pos": [start + c[1] for c in cells],
            "target_token": [seq.tokens[start + c[1]] for c in cells],
            "pos": pd.array([c[2] for c in cells], dtype="Int64"),
            "token": [c[4] for c in cells],
            "score": [c[3] for c in cells],
        }
    )
    if seq.encoder_decoder:
        frame["side"] = [c[0] for c in cells]
    for name, values in {**seq.step_scores, **seq.extras}.items():
        per_step = values.detach().to("cpu", torch.float64).tolist()
        frame[name] = [per_step[c[1]] for c in cells]
    return frame


def attribution_frame(out: AttributionOutput, reduce: str | None = None) -> pd.DataFrame:
    """:func:`sequence_frame` of every sequence, with a first column ``example`` (its index)."""
    import pandas as pd

    frames = [sequence_frame(s, reduce).assign(example=i) for i, s in enumerate(out)]
    if not frames:
        return pd.DataFrame(columns=["example", "step", "pos", "score"])
    frame = pd.concat(frames, ignore_index=True)
    return frame[["example", *(c for c in frame.columns if c != "example")]]
