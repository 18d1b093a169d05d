"""HTML of the demo's result panels (pure functions of a :class:`PecoreResult`).

Colours come from :class:`~hooklab.output.view.ColorScale`, as in every hooklab view. Marked
tokens carry classes the page styles and the browser test reads: ``hl-target`` (a
context-sensitive output token, ``data-index`` into ``context_sensitive``) and ``hl-cue``
(a cue of the selected target, ``data-rank`` 1 for the highest score).
"""

from __future__ import annotations

import html

from hooklab.output.view import ColorScale, html_legend, html_tokens, number_format
from hooklab.pecore.result import PecoreResult

CSS = """
.hl-tokens { white-space: pre-wrap; line-height: 2.1; font-size: 1.05em; }
.hl-tokens span, .hl-tokens mark { padding: 1px 0; border-radius: 3px; }
.hl-tokens .hl-given { color: #777; }
.hl-target, .hl-cue { outline: 2px solid #222; font-weight: 600; }
.hl-tokens .hl-score { font-size: 0.75em; margin: 0 3px 0 2px; color: #444; }
.hl-table td, .hl-table th { padding: 2px 10px; text-align: left; }
.hl-error { border: 1px solid #c0392b; background: #fdecea; color: #7b1d12;
            padding: 10px 14px; border-radius: 6px; white-space: pre-wrap; }
"""


def output_html(result: PecoreResult) -> str:
    """The output coloured by CTI, context-sensitive tokens marked with their scores, and a
    table of them with their contextless alternatives and top cues."""
    scale = ColorScale.fit(result.cti_scores)
    marks = {
        c.index: f'<mark class="hl-target" data-index="{k}" data-token="{html.escape(c.token)}"'
        for k, c in enumerate(result.context_sensitive)
    }
    given = html.escape(result.input_current + " ")
    if result.output_context:
        given += html.escape(" ⏎ " + result.output_context + " ")
    line = html_tokens(result.output_current_tokens, result.cti_scores, scale, marks=marks)
    fmt = number_format(result.cti_scores, missing="None")
    threshold = fmt(result.cti_threshold)
    parts = [
        '<div class="hl-output">',
        f'<p class="hl-tokens"><span class="hl-given">{given}</span>{line}</p>',
        html_legend(scale, f"CTI ({result.cti_metric}); threshold {threshold}"),
    ]
    if not result.context_sensitive:
        parts.append("<p><b>No context-sensitive output token stands out.</b></p>")
    else:
        rows = [
            "<tr><th>#</th><th>token</th><th>CTI score</th>"
            "<th>contextless alternative</th><th>top cue</th></tr>"
        ]
        for c in result.context_sensitive:
            top = max(c.cues, key=lambda q: q.score, default=None)
            cue = "—" if top is None else f"{html.escape(repr(top.token))} ({top.score:.3g})"
            rows.append(
                f"<tr><td>{c.index}</td><td>{html.escape(repr(c.token))}</td>"
                f"<td>{fmt(c.score)}</td><td>{html.escape(repr(c.contextless_token))}"
                f"</td><td>{cue}</td></tr>"
            )
        parts.append(f'<table class="hl-table">{"".join(rows)}</table>')
    parts.append("</div>")
    return "\n".join(parts)


def cues_html(result: PecoreResult, target: int | None) -> str:
    """The contexts coloured by the CCI scores of ``context_sensitive[target]``, cues marked
    (ranked by score), and the contextless alternative."""
    if target is None or not result.context_sensitive:
        return "<p>No context-sensitive token selected: no cues to show.</p>"
    c = result.context_sensitive[target]
    scale = ColorScale.fit([*c.input_context_scores, *c.output_context_scores])
    ranked = sorted(c.cues, key=lambda q: -q.score)
    rank = {(q.side, q.index): r for r, q in enumerate(ranked, 1)}
    parts = [
        '<div class="hl-cues">',
        f"<p>Cues of <b>{html.escape(repr(c.token))}</b> (output position {c.index}, CTI "
        f"{c.score:.3g}); without the context the model predicts "
        f'<b class="hl-alternative">{html.escape(repr(c.contextless_token))}</b>.</p>',
    ]
    for side in ("input", "output"):
        tokens = getattr(c, f"{side}_context_tokens")
        if not tokens:
            continue
        marks = {
            q.index: f'<mark class="hl-cue" data-rank="{rank[(side, q.index)]}" '
            f'data-token="{html.escape(q.token)}"'
            for q in c.cues
            if q.side == side
        }
        scores = getattr(c, f"{side}_context_scores")
        parts.append(
            f'<p class="hl-tokens"><b>{side} context:</b> '
            f"{html_tokens(tokens, scores, scale, marks=marks)}</p>"
        )
    parts.append(html_legend(scale, f"CCI ({result.cci_method} of {result.cci_attributed_fn})"))
    if not ranked:
        parts.append("<p>No context token stands out as a cue.</p>")
    parts.append("</div>")
    return "\n".join(parts)


def target_choices(result: PecoreResult) -> list[tuple[str, int]]:
    """(label, index into ``context_sensitive``) of each context-sensitive token."""
    return [
        (f"{c.token.strip() or repr(c.token)} (position {c.index}, CTI {c.score:.3g})", k)
        for k, c in enumerate(result.context_sensitive)
    ]


def error_html(message: str) -> str:
    """The message of a rejected input, as the API raised it."""
    return f'<div class="hl-error" id="hl-error-message"><b>Error:</b> {html.escape(message)}</div>'
