"""Views of a :class:`~hooklab.cite.CitationResult`: hover HTML and a paper figure.

Both show, per context-sensitive answer token, its **document scores**
(:func:`token_document_scores`): the sum of its CCI scores over each document's tokens, raw
and after the CCI filter (the filtered sums are what the citations add up,
:mod:`hooklab.cite.aggregate`).

HTML (:func:`to_html`): a self-contained ``<div>`` (inline CSS, no script, nothing loaded).
The documents are numbered; the answer shows ``[n]`` markers after each sentence. Hovering an
answer token shows a box with its CTI score and, for a selected token, its raw and filtered
score on every document; in browsers with CSS ``:has()`` the documents are then also coloured
by that token's CCI scores.

Figure (:func:`plot`): the answer with citation markers above a heat strip, one row per
selected token and, after each sentence's tokens, one row for the sentence's total, one column
per document, coloured by the filtered CCI mass on the document (its share of the row); the
cited documents are framed in the total row.
"""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING

from hooklab.cite.aggregate import filter_scores
from hooklab.output.view import ColorScale, html_legend, html_style, html_tokens, number_format

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from hooklab.cite.result import CitationResult

_CSS = """
.hooklab-cite{font-family:sans-serif;line-height:1.8;position:relative}
.hooklab-cite .docs{position:relative}
.hooklab-cite .docs-token{display:none;position:absolute;top:0;left:0;right:0;background:#fff}
.hooklab-cite .docs-hint{font-size:85%;color:#555;margin:4px 0}
.hooklab-cite .tok{position:relative;cursor:default;border-radius:2px}
.hooklab-cite .tok.sel{border-bottom:2px solid black;font-weight:bold}
.hooklab-cite .pop{display:none;position:absolute;left:0;top:1.7em;z-index:10;
  background:#fff;border:1px solid #999;padding:4px 6px;font-weight:normal;
  color:#000;white-space:nowrap;box-shadow:0 2px 6px rgba(0,0,0,.2);line-height:1.3;font-size:90%}
.hooklab-cite .tok:hover .pop{display:block}
.hooklab-cite .pop td{padding:0 4px;text-align:right}
.hooklab-cite .marker{font-weight:bold;color:#1f4e9c}
"""


def token_document_scores(result: CitationResult, index: int) -> tuple[list[float], list[float]]:
    """For answer token ``index``, its (raw, filtered) CCI sum over each document's tokens;
    two lists of zeros when the token has no CCI scores (not selected)."""
    n = len(result.documents)
    entry = next((c for c in result.pecore.context_sensitive if c.index == index), None)
    raw, kept = [0.0] * n, [0.0] * n
    if entry is None:
        return raw, kept
    p = result.parameters
    filtered = filter_scores(
        entry.input_context_scores,
        top_p=p["cci_top_p"] if p["cci_filter"] == "top_p" else None,
        top_k=p["cci_top_k"] if p["cci_filter"] == "top_k" else None,
    ).tolist()
    for j, d in enumerate(result.document_of_token):
        if d is not None:
            x = entry.input_context_scores[j]
            raw[d] += x if math.isfinite(x) else 0.0
            kept[d] += filtered[j]
    return raw, kept


def _selected(result: CitationResult) -> list[int]:
    return sorted(i for s in result.sentences for i in s.selected)


def _popup(result: CitationResult, index: int, fmt) -> str:
    cti = result.pecore.cti_scores[index]
    head = f"CTI {fmt(cti)}"
    if index not in _selected(result):
        return f'<span class="pop">{head}: not selected, no CCI</span>'
    raw, kept = token_document_scores(result, index)
    scale = ColorScale.fit(kept)
    fmt = number_format([*raw, *kept])
    rows = "".join(
        f'<tr><td>[{d + 1}]</td><td>{fmt(r)}</td><td style="{html_style(k, scale)}">'
        f"{fmt(k)}</td></tr>"
        for d, (r, k) in enumerate(zip(raw, kept, strict=True))
    )
    return (
        f'<span class="pop">{head}: selected<table><tr><td>doc</td><td>CCI</td>'
        f"<td>filtered</td></tr>{rows}</table></span>"
    )


def _answer_html(result: CitationResult) -> tuple[str, str]:
    """The answer tokens (hover boxes), ``[n]`` markers after each sentence; the legend."""
    pec = result.pecore
    tokens, selected = pec.output_current_tokens, set(_selected(result))
    cti = ColorScale.fit(pec.cti_scores)
    fmt = number_format(pec.cti_scores)
    last = {max(s.tokens): s for s in result.sentences if s.tokens}
    out = []
    for i, tok in enumerate(tokens):
        cls = "tok sel" if i in selected else "tok"
        out.append(
            f'<span class="{cls} tok-{i}" style="{html_style(pec.cti_scores[i], cti)}">'
            f"{html.escape(tok)}{_popup(result, i, fmt)}</span>"
        )
        if i in last:
            s = last[i]
            marks = "".join(f"[{d + 1}]" for d in s.citations) or "[-]"
            title = "cited by filtered CCI mass" if s.citations else s.reason.replace("_", " ")
            out.append(f' <span class="marker" title="{title}">{marks}</span>')
    return "".join(out), html_legend(cti, f"CTI ({pec.cti_metric})")


def _documents_html(result: CitationResult, scores=None, scale=None) -> str:
    """The context, document by document (coloured by ``scores`` when given)."""
    tokens = result.pecore.input_context_tokens
    if scores is None:
        return html.escape("".join(tokens)).replace("\n", "<br>")
    return html_tokens(tokens, scores, scale).replace("\n", "<br>")


def to_html(result: CitationResult) -> str:
    """A self-contained HTML ``<div>`` (see the module doc)."""
    selected = _selected(result)
    rules, docs = [], []
    for i in selected:
        c = next(c for c in result.pecore.context_sensitive if c.index == i)
        scale = ColorScale.fit(c.input_context_scores)
        coloured = _documents_html(result, c.input_context_scores, scale)
        legend = html_legend(scale, f"CCI of {c.token.strip()!r}")
        docs.append(f'<div class="docs-token docs-{i}">{coloured}{legend}</div>')
        rules.append(f".hooklab-cite:has(.tok-{i}:hover) .docs-{i}{{display:block}}")
    answer, legend = _answer_html(result)
    return "\n".join(
        [
            f'<div class="hooklab-cite"><style>{_CSS}{"".join(rules)}</style>',
            f'<div class="docs"><div class="docs-plain">{_documents_html(result)}<div '
            'class="docs-hint">Hover an underlined answer token: the documents are coloured by '
            "its CCI scores.</div></div>",
            *docs,
            "</div>",
            f"<p><b>Question:</b> {html.escape(result.question)}</p>",
            f'<div class="answer"><b>Answer:</b> {answer}</div>',
            legend,
            "<p style='font-size:85%;color:#555'>Hover an answer token: its CTI score and, for "
            "a selected (underlined) token, its CCI score summed over each document, raw and "
            "filtered.</p>",
            "</div>",
        ]
    )


# ---- figure --------------------------------------------------------------------------------
def _short(text: str, n: int = 28) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _heat_rows(result: CitationResult):
    """The strip's rows (each selected token's, then its sentence's total share of filtered
    CCI mass), their labels, (row, sentence) of every row and of each total row."""
    from hooklab.output.style import token_label

    rows, labels, bounds, totals = [], [], [], []

    def share(values):
        total = sum(values)
        return [x / total if total > 0 else 0.0 for x in values]

    for k, s in enumerate(result.sentences):
        for i in s.selected:
            rows.append(share(token_document_scores(result, i)[1]))
            labels.append(f"S{k + 1} {token_label(result.pecore.output_current_tokens[i])}")
            bounds.append((len(rows) - 1, k))
        if s.selected:  # the sentence's own mass: what its citations rank
            rows.append(share(s.mass))
            labels.append(f"S{k + 1} total")
            bounds.append((len(rows) - 1, k))
            totals.append((len(rows) - 1, k))
    return rows, labels, bounds, totals


def plot(result: CitationResult, *, size: str | float = "double") -> Figure:
    """The answer with citation markers above a heat strip of the selected tokens' filtered
    CCI mass per document (see the module doc). Returns the Figure (never shown)."""
    import numpy as np
    from matplotlib.patches import Rectangle

    from hooklab.output.style import FONT_SIZE, colorbar, new_figure, paper_style
    from hooklab.output.style import width as figure_width

    rows, labels, bounds, totals = _heat_rows(result)
    n_docs = len(result.documents)
    w = figure_width(size)
    text = [
        f"S{k + 1}. {s.text} " + ("".join(f"[{d + 1}]" for d in s.citations) or "[no citation]")
        for k, s in enumerate(result.sentences)
    ]
    heat_h = 0.22 * max(len(rows), 1) + 0.9
    text_h = 0.16 * (len(text) + 2)
    with paper_style():
        fig = new_figure((w, text_h + heat_h))
        top, ax = fig.subplots(2, 1, height_ratios=[text_h, heat_h])
        top.axis("off")
        top.text(0, 1, f"Q: {result.question}", va="top", fontsize=FONT_SIZE, style="italic")
        for k, line in enumerate(text):
            top.text(0, 1 - (k + 1) / (len(text) + 1), line, va="top", fontsize=FONT_SIZE + 0.5)
        data = np.array(rows if rows else [[np.nan] * n_docs], dtype=float)
        image = ax.imshow(data, aspect="auto", cmap="Reds", vmin=0, vmax=1)
        for (r, d), x in np.ndenumerate(data):
            if rows and x >= 0.005:
                ink = "white" if x > 0.6 else "black"
                ax.text(
                    d, r, f"{x:.2f}", ha="center", va="center", color=ink, fontsize=FONT_SIZE - 1
                )
        for r, k in totals:
            for d in result.sentences[k].citations:
                ax.add_patch(Rectangle((d - 0.5, r - 0.5), 1, 1, fill=False, lw=1.2, ec="#1f4e9c"))
        for r in range(1, len(bounds)):
            if bounds[r][1] != bounds[r - 1][1]:
                ax.axhline(r - 0.5, color="black", lw=0.8)
        names = [f"[{d + 1}] {_short(t)}" for d, t in enumerate(result.documents)]
        ax.set_xticks(range(n_docs), names, rotation=20, ha="right", fontsize=FONT_SIZE - 0.5)
        ax.set_yticks(
            range(len(labels)), labels or ["(no selected token)"], fontsize=FONT_SIZE - 0.5
        )
        ax.set_title("filtered CCI mass of each selected token and each sentence's total "
                     "(framed: cited)", fontsize=FONT_SIZE)  # fmt: skip
        for r, _ in totals:
            ax.get_yticklabels()[r].set_fontweight("bold")
        colorbar(fig, image, ax, "filtered CCI mass (share of row)", shrink=0.9)
    return fig
