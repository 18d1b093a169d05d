"""Render a :class:`SequenceAttribution` as a terminal table or an HTML table.

Both tables have one row per source token (every token up to the last attributed target) and
one column per target token (one per step), like Inseq's ``show``; step scores and extras
follow as extra rows. Cells are coloured red (positive) or blue (negative), with intensity
proportional to ``|score| / max |score|`` over the visible cells; cells a step cannot see are
blank.
"""

from __future__ import annotations

import html
import math

import torch

from hooklab.output.sequence import SequenceAttribution

_POSITIVE = (214, 39, 40)  # red
_NEGATIVE = (31, 119, 180)  # blue


def display_token(token: str) -> str:
    """Return ``token`` made readable: newlines/tabs escaped, leading spaces shown as ``▁``."""
    token = token.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    stripped = token.lstrip(" ")
    return "▁" * (len(token) - len(stripped)) + stripped


def _colors(value: float, vmax: float) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Return (background, foreground) RGB for ``value`` on a white -> red / blue scale."""
    alpha = min(abs(value) / vmax, 1.0) if vmax > 0 else 0.0
    end = _POSITIVE if value >= 0 else _NEGATIVE
    r, g, b = (round(255 + (c - 255) * alpha) for c in end)
    fg = (255, 255, 255) if alpha > 0.55 else (0, 0, 0)  # white text on dark cells
    return (r, g, b), fg


def _table(
    seq: SequenceAttribution, reduce: str | None, normalize: bool
) -> tuple[list[str], list[list[float]], float]:
    """Return source-row labels, the ``[source, step]`` grid (NaN = not visible) and vmax."""
    scores = seq.scores(reduce, normalize=normalize)
    if scores is None:
        return [], [], 0.0
    n_rows = seq.target_start + seq.n_steps
    grid = scores[:, :n_rows].T.detach().to("cpu", torch.float64)  # [source, step]
    visible = grid[~torch.isnan(grid)]
    vmax = float(visible.abs().max()) if visible.numel() else 0.0
    return list(seq.tokens[:n_rows]), grid.tolist(), vmax


def _score_rows(seq: SequenceAttribution) -> list[tuple[str, list[float]]]:
    rows = [(name, v.tolist()) for name, v in seq.step_scores.items()]
    return rows + [(name, v.tolist()) for name, v in seq.extras.items()]


def _header(seq: SequenceAttribution, reduce: str | None, normalize: bool = False) -> str:
    head = f"{seq.method}"
    if normalize and seq.attributions is not None:
        head += "  (each step normalised to sum |scores| = 1)"
    if seq.attributions is not None and seq.attributions.ndim >= 3:
        head += f"  (trailing dims reduced with {reduce or seq.default_reduce!r})"
    if "aggregation" in seq.parameters:
        head += f"  [aggregated: {seq.parameters['aggregation'].get('how', '?')}]"
    return head


def _fmt(value: float, digits: int) -> str:
    return "" if math.isnan(value) else f"{value:.{digits}f}"


def to_text(
    seq: SequenceAttribution,
    *,
    reduce: str | None = None,
    normalize: bool = True,
    color: bool = True,
    digits: int = 2,
    max_width: int | None = None,
) -> str:
    """Return a terminal table of the scores (what ``seq.show()`` prints).

    Args:
        seq: the attribution to render.
        reduce: how to reduce a ``d_model`` dimension (see ``aggregate.reduce_hidden``).
        normalize: show each step's scores as shares of their absolute sum.
        color: colour cells with 24-bit ANSI backgrounds (red positive, blue negative).
        digits: decimals shown.
        max_width: if set, split the target columns into blocks whose lines fit in this many
            characters (each block repeats the row labels).

    Returns:
        The table as one string (no trailing newline).
    """
    labels, grid, vmax = _table(seq, reduce, normalize)
    score_rows = _score_rows(seq)
    targets = [display_token(t) for t in seq.target_tokens]
    row_labels = [display_token(t) for t in labels] + [name for name, _ in score_rows]
    label_w = max([len(x) for x in row_labels] + [1])
    cells = [[_fmt(v, digits) for v in row] for row in grid]
    score_cells = [[_fmt(v, digits) for v in values] for _, values in score_rows]
    widths = [
        max([len(targets[j])] + [len(row[j]) for row in cells + score_cells])
        for j in range(len(targets))
    ]

    blocks: list[list[int]] = [[]]
    used = label_w + 2
    for j, w in enumerate(widths):
        if max_width is not None and blocks[-1] and used + w + 1 > max_width:
            blocks.append([])
            used = label_w + 2
        blocks[-1].append(j)
        used += w + 1

    def cell(text: str, j: int, value: float | None) -> str:
        padded = text.rjust(widths[j])
        if not color or value is None or math.isnan(value):
            return padded
        (r, g, b), (fr, fg, fb) = _colors(value, vmax)
        return f"\x1b[48;2;{r};{g};{b}m\x1b[38;2;{fr};{fg};{fb}m{padded}\x1b[0m"

    lines = [_header(seq, reduce, normalize)]
    if not labels or not targets:
        lines.append("prompt: " + " ".join(display_token(t) for t in seq.prompt_tokens))
    if not targets:
        return "\n".join([*lines, "(no attributed target tokens)"])
    for cols in blocks:
        lines.append(" " * label_w + " │ " + " ".join(targets[j].rjust(widths[j]) for j in cols))
        rule = "─" * label_w + "─┼─" + "─".join("─" * widths[j] for j in cols)
        lines.append(rule)
        for i, lab in enumerate(labels):
            row = " ".join(cell(cells[i][j], j, grid[i][j]) for j in cols)
            lines.append(display_token(lab).ljust(label_w) + " │ " + row)
        if labels and score_rows:
            lines.append(rule)
        for (name, _), values in zip(score_rows, score_cells):
            lines.append(
                name.ljust(label_w) + " │ " + " ".join(cell(values[j], j, None) for j in cols)
            )
        lines.append("")
    return "\n".join(line.rstrip() for line in lines).rstrip("\n")


def to_html(
    seq: SequenceAttribution,
    *,
    reduce: str | None = None,
    normalize: bool = True,
    digits: int = 3,
) -> str:
    """Return a self-contained HTML ``<div>`` with a ``<table>`` of the scores.

    Same layout and colours as :func:`to_text`; inline styles only, every token escaped.
    Hovering a cell shows the source and target tokens and the full-precision score.
    """
    labels, grid, vmax = _table(seq, reduce, normalize)
    esc = html.escape
    targets = [display_token(t) for t in seq.target_tokens]
    cell_style = "padding:2px 6px;text-align:right;border:1px solid #eee;"
    head_style = "padding:2px 6px;white-space:pre;font-weight:bold;"
    parts = [
        '<div class="hooklab-attribution" style="font-family:monospace;font-size:12px;'
        'margin:8px 0">',
        '<div style="font-weight:bold;margin-bottom:4px">'
        f"{esc(_header(seq, reduce, normalize))}</div>",
    ]
    if not labels:
        prompt = esc("".join(seq.prompt_tokens))
        parts.append(f'<div style="white-space:pre-wrap;margin-bottom:4px">prompt: {prompt}</div>')
    parts.append('<table style="border-collapse:collapse">')
    parts.append("<tr><th></th>")
    parts.extend(f'<th style="{head_style}text-align:right">{esc(t)}</th>' for t in targets)
    parts.append("</tr>")
    for i, lab in enumerate(labels):
        top = "border-top:2px solid #999;" if i == seq.target_start else ""
        parts.append(
            f'<tr style="{top}"><th style="{head_style}text-align:left">'
            f"{esc(display_token(lab))}</th>"
        )
        for j, v in enumerate(grid[i]):
            if math.isnan(v):
                parts.append(f'<td style="{cell_style}"></td>')
                continue
            (r, g, b), (fr, fg, fb) = _colors(v, vmax)
            tip = esc(f"{display_token(lab)} → {targets[j]}: {v:.6g}", quote=True)
            parts.append(
                f'<td title="{tip}" style="{cell_style}background-color:rgb({r},{g},{b});'
                f'color:rgb({fr},{fg},{fb})">{_fmt(v, digits)}</td>'
            )
        parts.append("</tr>")
    for k, (name, values) in enumerate(_score_rows(seq)):
        top = "border-top:2px solid #999;" if k == 0 and labels else ""
        parts.append(
            f'<tr style="{top}"><th style="{head_style}text-align:left;font-style:italic">'
            f"{esc(name)}</th>"
        )
        parts.extend(f'<td style="{cell_style}">{_fmt(v, digits)}</td>' for v in values)
        parts.append("</tr>")
    parts.append("</table></div>")
    return "\n".join(parts)
