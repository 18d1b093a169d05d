"""Text, HTML and matplotlib views of a :class:`~hooklab.pecore.result.PecoreResult`.

Views only read the result; nothing here changes the scores that get saved.
"""

from __future__ import annotations

import html
import math
import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING

from hooklab.output.view import (
    ColorScale,
    ansi,
    html_legend,
    html_tokens,
    number_format,
    use_color,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from hooklab.pecore.result import PecoreResult


def _number(x: float | None) -> str:
    """One number on its own: two significant digits (0.0018, 0.019, 2.1); None as ``None``."""
    return number_format(x, missing="None")(x)


def _mark(
    tokens: Sequence[str],
    marks: dict[int, float],
    left: str,
    right: str,
    scores: Sequence[float] | None = None,
) -> str:
    """Join ``tokens``, marking ``marks`` as ``{left}token{right}(score)``; with ``scores``,
    colour every token on its :class:`~hooklab.output.view.ColorScale`.

    The marked scores share one number of decimals: two significant digits for the largest
    (:func:`~hooklab.output.view.number_format`), so a cue of 0.0018 reads ``(0.0018)``, not
    ``(0.00)``, and a CTI score of 2.08 reads ``(2.1)``.
    """
    scale = None if scores is None else ColorScale.fit(scores)
    fmt = number_format(list(marks.values()), missing="None")
    out = []
    for i, tok in enumerate(tokens):
        stripped = tok.lstrip()
        space = tok[: len(tok) - len(stripped)]
        text = f"{left}{stripped}{right}({fmt(marks[i])})" if i in marks else stripped
        if scale is not None and scores is not None:
            text = ansi(text, scores[i], scale)
        out.append(space + text)
    return "".join(out)


def to_text(result: PecoreResult, *, color: bool | None = None) -> str:
    """Inseq-like text: the output with ``{targets}(score)``, the context with ``[cues](score)``.

    With colour (``color=True``, or None on a terminal without ``NO_COLOR``), output tokens
    are coloured by their CTI scores and context tokens by their CCI scores. Scores print
    with two significant digits (the marks of one line share their decimals): ``(2.1)``,
    ``(0.019)``, ``(0.0018)``.
    """
    color = use_color(color)
    s = result.parameters
    targets = {c.index: c.score for c in result.context_sensitive}
    cti = result.cti_scores if color else None
    lines = [
        f"Context with [contextual cues] (std λ={s.get('attribution_std_threshold')}, "
        f"top-k={s.get('attribution_topk')}) followed by output sentence with "
        f"{{context-sensitive target spans}} (std λ={s.get('context_sensitivity_std_threshold')}, "
        f"top-k={s.get('context_sensitivity_topk')})",
        f'(CTI = "{result.cti_metric}", CCI = "{result.cci_method}" w/ '
        f'"{result.cci_attributed_fn}" target; CTI threshold = {_number(result.cti_threshold)})',
        "",
        f"Input context:  {result.input_context}",
        f"Input current:  {result.input_current}",
        f"Output current: {_mark(result.output_current_tokens, targets, '{', '}', cti).strip()}",
    ]
    if not result.context_sensitive:
        lines.append("\nNo context-sensitive output token stands out.")
    if result.output_context is not None:
        lines.insert(5, f"Output context: {result.output_context}")
    for c in result.context_sensitive:
        one = {c.index: c.score}
        lines += [
            "",
            f"#{c.index} {c.token.strip()!r} (contextless alternative {c.contextless_token!r}):",
            f"  Output: {_mark(result.output_current_tokens, one, '{', '}', cti).strip()}",
        ]
        for side, label in (("input", "Context"), ("output", "Output context")):
            tokens = getattr(c, f"{side}_context_tokens")
            if not tokens:
                continue
            cues = {q.index: q.score for q in c.cues if q.side == side}
            cci = getattr(c, f"{side}_context_scores") if color else None
            lines.append(f"  {label}: {_mark(tokens, cues, '[', ']', cci).strip()}")
    return "\n".join(lines)


def to_html(result: PecoreResult) -> str:
    """A self-contained HTML ``<div>``: CTI on the output, CCI on the context per target.

    Tokens are coloured on :class:`~hooklab.output.view.ColorScale` (one scale per row of
    tokens), each row followed by its legend; selected targets and cues are underlined.
    """
    targets = {c.index for c in result.context_sensitive}
    cti = ColorScale.fit(result.cti_scores)
    parts = [
        '<div class="hooklab-pecore" style="font-family:sans-serif;line-height:1.8">',
        f"<p><b>CTI</b> ({html.escape(result.cti_metric)}, threshold "
        f"{html.escape(_number(result.cti_threshold))}):</p>",
        f"<p>{html.escape(result.input_current)} "
        f"{html_tokens(result.output_current_tokens, result.cti_scores, cti, selected=targets)}"
        "</p>",
        html_legend(cti, f"CTI ({result.cti_metric})"),
    ]
    for c in result.context_sensitive:
        cci = ColorScale.fit([*c.input_context_scores, *c.output_context_scores])
        rows = []
        for side in ("input", "output"):
            tokens = getattr(c, f"{side}_context_tokens")
            if tokens:
                chosen = [q.index for q in c.cues if q.side == side]
                scores = getattr(c, f"{side}_context_scores")
                rows.append(f"{side} context: {html_tokens(tokens, scores, cci, selected=chosen)}")
        parts += [
            f"<p><b>CCI</b> for {html.escape(repr(c.token))} (contextless: "
            f"{html.escape(repr(c.contextless_token))}):<br>{'<br>'.join(rows)}</p>",
            html_legend(cci, f"CCI ({result.cci_method})"),
        ]
    parts.append("</div>")
    return "\n".join(parts)


# ---- figure --------------------------------------------------------------------------------
_TOKEN_PT = 7.0  # token text size
_SCORE_PT = 5.5  # score under each token
_TITLE_PT = 7.5
_SUB_PT = 6.0  # the row heading (input / output context)
_BOX_H, _SCORE_H, _LINE_GAP, _TITLE_H, _SUB_H = 0.2, 0.13, 0.07, 0.22, 0.14  # inches
_BAR_SPACE = 1.0  # inches on the right for the colour bars


def _wrap(text: str, width: float) -> list[str]:
    """``text`` wrapped to lines of ``width`` inches at the title size."""
    return textwrap.wrap(text, max(int(width / _text_width("x", _TITLE_PT)), 20)) or [""]


def _text_width(text: str, points: float) -> float:
    """Approximate width in inches of ``text`` in DejaVu Sans at ``points``."""
    return 0.6 * points / 72 * max(len(text), 1)


def _layout(labels, scores, fmt, width: float) -> list[list[tuple[float, float]]]:
    """Wrap token boxes into lines of ``width`` inches; ``(x, box width)`` per token per line."""
    lines: list[list[tuple[float, float]]] = [[]]
    x = 0.0
    for label, s in zip(labels, scores, strict=True):
        text_w = _text_width(label, _TOKEN_PT)
        if s is not None and math.isfinite(s):
            text_w = max(text_w, _text_width(fmt(s), _SCORE_PT))
        w = text_w + 0.08
        if x + w > width and lines[-1]:
            lines.append([])
            x = 0.0
        lines[-1].append((x, w))
        x += w + 0.03
    return lines


def _token_rows(ax, y: float, labels, scores, scale, selected, fmt, width) -> float:
    """Draw tokens as boxes coloured by score (score below), wrapped; return the y below."""
    from matplotlib.patches import FancyBboxPatch

    lines = _layout(labels, scores, fmt, width)
    i = 0
    for line in lines:
        for x, w in line:
            s = scores[i]
            scored = s is not None and math.isfinite(s)
            face = tuple(c / 255 for c in scale.rgb(s)) if scored else (0.93, 0.93, 0.93)
            ax.add_patch(FancyBboxPatch(
                (x, y), w, _BOX_H, boxstyle="round,pad=0,rounding_size=0.03", facecolor=face,
                edgecolor="black" if i in selected else "none", linewidth=1.2,
            ))  # fmt: skip
            ink = tuple(c / 255 for c in scale.ink(s)) if scored else "0.35"
            ax.text(x + w / 2, y + _BOX_H / 2, labels[i], ha="center", va="center",
                    fontsize=_TOKEN_PT, color=ink)  # fmt: skip
            if scored:
                ax.text(x + w / 2, y + _BOX_H + _SCORE_H / 2, fmt(s), ha="center",
                        va="center", fontsize=_SCORE_PT, color="0.3")  # fmt: skip
            i += 1
        y += _BOX_H + _SCORE_H + _LINE_GAP
    return y


def _rows_height(rows, text_w: float) -> float:
    """Height in inches of a section's token rows (sub-headings included), wrapped to text_w."""
    h = 0.0
    for heading, labels, scores, _ in rows:
        finite = [s for s in scores if s is not None and math.isfinite(s)]
        n = len(_layout(labels, scores, number_format(finite), text_w))
        h += (_SUB_H if heading else 0.0) + n * (_BOX_H + _SCORE_H + _LINE_GAP)
    return max(h, 0.45 + _LINE_GAP)


def _section(ax, fig, y, title, rows, bar_label, size, threshold=None):
    """A title, rows of wrapped token boxes on one colour scale and a labelled colour bar on
    the right; return the y below. ``rows``: ``(heading or None, labels, scores, selected)``."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.ticker import MaxNLocator

    from hooklab.output.style import colorbar

    finite = [s for _, _, scores, _ in rows for s in scores if s is not None and math.isfinite(s)]
    scale = ColorScale.fit(finite)
    fmt = number_format(finite)
    lines = _wrap(title, size[0] - _BAR_SPACE)
    ax.text(0, y + _TITLE_H * len(lines) / 2, "\n".join(lines), ha="left", va="center",
            fontsize=_TITLE_PT, linespacing=1.1)  # fmt: skip
    top = bottom = y + _TITLE_H * len(lines)
    for heading, labels, scores, selected in rows:
        if heading:  # which context the row shows
            ax.text(0, bottom + _SUB_H / 2, heading, ha="left", va="center", fontsize=_SUB_PT,
                    color="0.35", style="italic")  # fmt: skip
            bottom += _SUB_H
        bottom = _token_rows(ax, bottom, labels, scores, scale, selected, fmt,
                             size[0] - _BAR_SPACE)  # fmt: skip
    h = max(bottom - top - _LINE_GAP, 0.45)
    cax = fig.add_axes([
        (size[0] - _BAR_SPACE + 0.15) / size[0], 1 - (top + h) / size[1], 0.08 / size[0],
        h / size[1],
    ])  # fmt: skip
    mappable = ScalarMappable(Normalize(scale.vmin, scale.vmax), scale.colormap())
    bar = colorbar(fig, mappable, None, bar_label, cax=cax)
    bar.ax.yaxis.label.set_size(5.5)
    bar.ax.tick_params(labelsize=5)
    ticks = MaxNLocator(3).tick_values(scale.vmin, scale.vmax)
    ticks = [t for t in ticks if scale.vmin <= t <= scale.vmax]
    labels = [f"{t:.3g}" for t in ticks]
    if threshold is not None and math.isfinite(threshold):  # the CTI selection threshold
        at = min(max(threshold, scale.vmin), scale.vmax)
        bar.ax.axhline(at, color="black", linewidth=1.2)
        near = [i for i, t in enumerate(ticks) if abs(t - at) < 0.12 * (scale.vmax - scale.vmin)]
        ticks = [t for i, t in enumerate(ticks) if i not in near] + [at]
        labels = [x for i, x in enumerate(labels) if i not in near] + [f"λ {threshold:.3g}"]
    bar.set_ticks(ticks, labels=labels)
    return max(bottom, top + h + _LINE_GAP)


def _cci_section(result: PecoreResult, c) -> tuple:
    """The CCI section of one context-sensitive token: a row per context, one colour scale."""
    from hooklab.output.style import token_label

    both = bool(c.output_context_tokens)
    rows = []
    for side in ("input", "output"):
        tokens = getattr(c, f"{side}_context_tokens")
        if tokens:
            rows.append((
                f"{side} context" if both else None,
                [token_label(t, "strip") for t in tokens],
                list(getattr(c, f"{side}_context_scores")),
                {q.index for q in c.cues if q.side == side},
            ))  # fmt: skip
    where = "input and output context" if both else "context"
    title = (
        f"CCI ({result.cci_method} of {result.cci_attributed_fn}) of the {where} for "
        f"{c.token.strip()!r} vs {c.contextless_token.strip()!r}; boxed: cues"
    )
    return title, rows, f"CCI\n{result.cci_method}", None


def plot(result: PecoreResult, *, target: int | None = None, figsize=None, size="double") -> Figure:
    """Paper-ready figure: output tokens coloured by CTI, context tokens by CCI.

    The current input is drawn in grey before the output; boxed tokens are the selected
    context-sensitive targets (top) and, below, each selected target's cues. A target's CCI
    scores over the input context and, when there is one, the output context (each row
    labelled) share one colour scale. Colours follow :class:`~hooklab.output.view.ColorScale`,
    as in the text and HTML views; each section has a colour bar naming its score, and the
    CTI bar marks the selection threshold. Tokens wrap onto more lines instead of shrinking,
    so long contexts stay readable; scores print with decimals chosen from the section's
    largest. The style is :mod:`hooklab.output.style`'s.

    Args:
        target: show only this context-sensitive token's cues (index into
            ``context_sensitive``); None: a CCI section for every selected token.
        figsize: ``(width, height)`` in inches; the height is computed when None or 0.
        size: the width when ``figsize`` is None: ``"single"`` (3.3 in), ``"double"`` (6.9 in)
            or inches.
    """
    from hooklab.output.style import new_figure, paper_style, token_label
    from hooklab.output.style import width as paper_width

    w = figsize[0] if figsize else paper_width(size)
    current = [" " + x for x in result.input_current.split()]
    cti_labels = [token_label(t, "strip") for t in [*current, *result.output_current_tokens]]
    cti_scores = [None] * len(current) + list(result.cti_scores)
    sections = [(
        f"CTI ({result.cti_metric}) of the output tokens; boxed: context-sensitive "
        "(above the threshold λ)",
        [(None, cti_labels, cti_scores,
          {len(current) + c.index for c in result.context_sensitive})],
        f"CTI\n{result.cti_metric}", result.cti_threshold,
    )]  # fmt: skip
    shown = result.context_sensitive if target is None else [result.context_sensitive[target]]
    sections += [_cci_section(result, c) for c in shown]
    text_w = w - _BAR_SPACE

    def height(title, rows, *_) -> float:
        return _TITLE_H * len(_wrap(title, text_w)) + _rows_height(rows, text_w)

    h = (figsize[1] if figsize and figsize[1] else 0) or sum(height(*s) for s in sections)
    if not result.context_sensitive:
        h += _TITLE_H
    with paper_style():
        fig = new_figure((w, h), layout=None)
        ax = fig.add_axes((0, 0, 1, 1))
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)  # inches, downwards
        ax.axis("off")
        y = 0.0
        for title, rows, bar_label, threshold in sections:
            y = _section(ax, fig, y, title, rows, bar_label, (w, h), threshold)
        if not result.context_sensitive:
            ax.text(0, y + _TITLE_H / 2, "No context-sensitive token selected", fontsize=7.5,
                    va="center")  # fmt: skip
    return fig
