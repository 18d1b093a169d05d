"""Views of a CitationResult: document scores per token, hover HTML, the figure, the CLI files."""

from __future__ import annotations

import math
import re

import pytest
import torch

import hooklab
from hooklab.cite.aggregate import filter_scores
from hooklab.cite.render import token_document_scores
from hooklab.toy_rag import RELEASE_EXAMPLE


@pytest.fixture(scope="module")
def result():
    model = hooklab.load("toy-rag", device="cpu")
    ex = RELEASE_EXAMPLE
    return hooklab.cite(
        model, ex["question"], ex["documents"], answer=ex["answer"], cti_threshold=0.0
    )  # fmt: skip  (every token selected: every hover box)


def test_token_document_scores_by_hand(result):
    for c in result.pecore.context_sensitive:
        raw, kept = token_document_scores(result, c.index)
        want_raw = [0.0] * len(result.documents)
        for j, d in enumerate(result.document_of_token):
            if d is not None and math.isfinite(c.input_context_scores[j]):
                want_raw[d] += c.input_context_scores[j]
        torch.testing.assert_close(torch.tensor(raw), torch.tensor(want_raw))
        f = filter_scores(c.input_context_scores, top_p=5.0, top_k=None)
        assert sum(kept) == pytest.approx(sum(
            f[j].item() for j, d in enumerate(result.document_of_token) if d is not None
        ))  # fmt: skip
    # the filtered sums of a sentence's selected tokens are the sentence's mass
    for s in result.sentences:
        total = [0.0] * len(result.documents)
        for i in s.selected:
            total = [a + b for a, b in zip(total, token_document_scores(result, i)[1], strict=True)]
        torch.testing.assert_close(torch.tensor(total, dtype=torch.float64),
                                   torch.tensor(s.mass, dtype=torch.float64))  # fmt: skip
    n_docs = len(result.documents)
    assert token_document_scores(result, 10_000) == ([0.0] * n_docs, [0.0] * n_docs)


def test_html_is_self_contained_with_a_box_per_token(result):
    page = result.to_html()
    assert result._repr_html_() == page
    assert "<script" not in page and "http" not in page and "src=" not in page
    for i, doc in enumerate(result.documents, 1):
        assert f"[{i}] {doc}" in page
    n_tokens = len(result.pecore.output_current_tokens)
    assert page.count('class="pop"') == n_tokens
    assert page.count("<tr><td>[") == n_tokens * len(result.documents)  # one row per document
    for c in result.pecore.context_sensitive:
        assert f".hooklab-cite:has(.tok-{c.index}:hover) .docs-{c.index}" in page
    markers = re.findall(r'<span class="marker"[^>]*>([^<]*)</span>', page)
    want = ["".join(f"[{d + 1}]" for d in s.citations) or "[-]" for s in result.sentences]
    assert markers == want


def test_plot_heat_strip_rows_are_shares(result):
    from hooklab.output.style import DOUBLE_COLUMN, SINGLE_COLUMN

    fig = result.plot()
    assert fig.get_figwidth() == DOUBLE_COLUMN
    assert result.plot(size="single").get_figwidth() == SINGLE_COLUMN
    heat = fig.axes[1].images[0].get_array()
    rows = []  # by hand: each selected token's share, then its sentence's total share
    for s in result.sentences:
        for i in s.selected:
            kept = token_document_scores(result, i)[1]
            rows.append([x / sum(kept) if sum(kept) else 0.0 for x in kept])
        if s.selected:
            rows.append([x / sum(s.mass) if sum(s.mass) else 0.0 for x in s.mass])
    torch.testing.assert_close(torch.tensor(heat.data), torch.tensor(rows, dtype=torch.float64))
    labels = [t.get_text() for t in fig.axes[1].get_yticklabels()]
    assert labels.count("S1 total") == 1


def test_cli_writes_figure_and_html(tmp_path, capsys):
    from hooklab.cli import main

    fig, page = tmp_path / "cite.png", tmp_path / "cite.html"
    assert main(["cite", "--figure_path", str(fig), "--html_path", str(page)]) == 0
    assert fig.exists() and fig.with_suffix(".pdf").exists()
    assert (
        page.read_text().startswith("<!doctype html>")
        and 'class="hooklab-cite"' in page.read_text()
    )
    assert main(["cite", "--figure_path", str(fig)]) == 2  # exists, no --overwrite
    assert "exists" in capsys.readouterr().err
