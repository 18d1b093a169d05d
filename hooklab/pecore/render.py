"""Text, HTML and matplotlib views of a :class:`~hooklab.pecore.result.PecoreResult`.

Views only read the result; nothing here changes the scores that get saved.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch

from hooklab.output.view import ColorScale, ansi, html_legend, html_tokens, use_color

if TYPE_CHECKING:
    from hooklab.pecore.result import PecoreResult


def _fmt(x: float | None) -> str:
    return "None" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def _mark(
    tokens: Sequence[str],
    marks: dict[int, float],
    left: str,
    right: str,
    scores: Sequence[float] | None = None,
) -> str:
    """Join ``tokens``, marking ``marks`` as ``{left}token{right}(score)``; with ``scores``,
    colour every token on its :class:`~hooklab.output.view.ColorScale`."""
    scale = None if scores is None else ColorScale.fit(scores)
    out = []
    for i, tok in enumerate(tokens):
        stripped = tok.lstrip()
        space = tok[: len(tok) - len(stripped)]
        text = f"{left}{stripped}{right}({marks[i]:.2f})" if i in marks else stripped
        if scale is not None and scores is not None:
            text = ansi(text, scores[i], scale)
        out.append(space + text)
    return "".join(out)


def to_text(result: PecoreResult, *, color: bool | None = None) -> str:
    """Inseq-like text: the output with ``{targets}(score)``, the context with ``[cues](score)``.

    With colour (``color=True``, or None on a terminal without ``NO_COLOR``), output tokens
    are coloured by their CTI scores and context tokens by their CCI scores.
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
        f'"{result.cci_attributed_fn}" target; CTI threshold = {_fmt(result.cti_threshold)})',
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
        f"{html.escape(_fmt(result.cti_threshold))}):</p>",
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


def _token_row(ax, tokens, scores, scale: ColorScale, selected: set, x: float = 0.0) -> float:
    """Draw tokens as boxes coloured by score with the score below; return the end x."""
    for i, (tok, s) in enumerate(zip(tokens, scores, strict=True)):
        width = max(len(tok.strip()), 1) * 0.55 + 0.6
        scored = s is not None and math.isfinite(s)
        face = tuple(c / 255 for c in scale.rgb(s)) if scored else (0.93, 0.93, 0.93)
        box = FancyBboxPatch(
            (x, -0.35), width - 0.15, 0.7, boxstyle="round,pad=0.02", facecolor=face,
            edgecolor="black" if i in selected else "none", linewidth=1.8,
        )  # fmt: skip
        ax.add_patch(box)
        ink = tuple(c / 255 for c in scale.ink(s)) if scored else "0.4"
        ax.text(x + (width - 0.15) / 2, 0, tok.strip() or "␣", ha="center", va="center",
                fontsize=10, color=ink)  # fmt: skip
        if scored:
            ax.text(x + (width - 0.15) / 2, -0.55, f"{s:.3g}", ha="center", va="center",
                    fontsize=7, color="0.3")  # fmt: skip
        x += width
    return x


def plot(result: PecoreResult, *, target: int = 0, figsize=None) -> Figure:
    """Paper-ready figure: output tokens coloured by CTI, context tokens by CCI of one target.

    The current input is drawn in grey before the output; boxed tokens are the selected
    context-sensitive targets (top) and the cues of the shown target (bottom). Colours follow
    :class:`~hooklab.output.view.ColorScale`, as in the text and HTML views.

    Args:
        target: which context-sensitive token's cues to show (index into ``context_sensitive``).
    """
    fig = Figure(figsize=figsize or (11, 2.8), constrained_layout=True)
    axes = fig.subplots(2, 1)
    current = [" " + w for w in result.input_current.split()]
    ends = [
        _token_row(
            axes[0],
            [*current, *result.output_current_tokens],
            [None] * len(current) + list(result.cti_scores),
            ColorScale.fit(result.cti_scores),
            {len(current) + c.index for c in result.context_sensitive},
        )
    ]
    axes[0].set_title(
        f"CTI ({result.cti_metric}) of the output tokens; boxed: context-sensitive", fontsize=10
    )
    if result.context_sensitive:
        c = result.context_sensitive[target]
        scale = ColorScale.fit(c.input_context_scores)
        cues = {q.index for q in c.cues}
        ends.append(
            _token_row(axes[1], c.input_context_tokens, c.input_context_scores, scale, cues)
        )
        axes[1].set_title(
            f"CCI ({result.cci_method}, {result.cci_attributed_fn}) of the context for "
            f"{c.token.strip()!r} vs {c.contextless_token.strip()!r}; boxed: cues",
            fontsize=10,
        )
    else:
        axes[1].set_title("No context-sensitive token selected", fontsize=10)
    for ax in axes:
        ax.set_xlim(-0.2, max(ends) + 0.2)
        ax.set_ylim(-0.75, 0.45)
        ax.axis("off")
    return fig
