"""Aggregation, difference, text/HTML rendering and plotting of hand-built attributions."""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.figure import Figure

from hooklab.attribution import SequenceAttribution
from hooklab.attribution.aggregate import (
    HIDDEN_REDUCTIONS,
    aggregate,
    difference,
    merge_groups,
    reduce_hidden,
    word_groups,
)
from hooklab.attribution.views import to_html, to_text

NAN = math.nan
TOKENS = ("<|endoftext|>", "Ge", "orge", " was", " sick", ".", " His", " col", "leagues")
WORDS = ("<|endoftext|>", "George", " was", " sick", ".", " His", " colleagues")


def _seq(hidden: bool = False, **changes) -> SequenceAttribution:
    """Steps predict ' His', ' col', 'leagues'; visible cell (t, k) holds 10 * t + k + 1."""
    attr = torch.full((3, 9), NAN)
    for t in range(3):
        attr[t, : 6 + t] = torch.arange(6 + t) + 1 + 10 * t
    if hidden:  # d_model = 2 with L2 norm equal to the 2-d scores: (0.6 x, 0.8 x)
        attr = torch.stack([0.6 * attr, 0.8 * attr], dim=-1)
    fields = dict(
        tokens=TOKENS,
        token_ids=torch.tensor([50256, 10, 11, 12, 13, 14, 15, 16, 17]),
        target_start=6,
        attributions=attr,
        step_scores={
            "probability": torch.tensor([0.5, 0.4, 0.5]),
            "crossentropy": torch.tensor([1.0, 2.0, 3.0]),
            "perplexity": torch.tensor([2.0, 2.0, 8.0]),
            "logit": torch.tensor([1.0, 2.0, 4.0]),
        },
        extras={"delta": torch.tensor([0.1, 0.2, 0.3])},
        method="saliency",
        parameters={"abs": True},
    )
    return SequenceAttribution(**{**fields, **changes})


# Columns summed within words, then the rows of ' col' and 'leagues' averaged (by hand).
EXPECTED_WORDS = torch.tensor(
    [
        [1.0, 2 + 3, 4, 5, 6, NAN, NAN],
        [(11 + 21) / 2, (12 + 13 + 22 + 23) / 2, (14 + 24) / 2, 20, 21, (17 + 27) / 2, 28],
    ]
)


# ---- reduce_hidden ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("reduce", "expected"),
    [("l2", 5.0), ("sum", -1.0), ("mean", -0.5), ("max", 3.0), ("absmax", -4.0)],
)
def test_reduce_hidden_values_and_nan(reduce, expected):
    x = torch.tensor([[[3.0, -4.0], [NAN, NAN]]])  # [step=1, key_pos=2, d_model=2]
    out = reduce_hidden(x, reduce)
    assert out.shape == (1, 2)
    assert out[0, 0].item() == pytest.approx(expected)
    assert math.isnan(out[0, 1].item())


def test_reduce_hidden_2d_passthrough_and_unknown_name():
    x = torch.randn(2, 3)
    assert reduce_hidden(x, "sum") is x
    assert set(HIDDEN_REDUCTIONS) == {"l2", "sum", "mean", "max", "absmax"}
    with pytest.raises(KeyError, match="'l2'"):
        reduce_hidden(torch.randn(2, 3, 4), "l3")


# ---- aggregation -----------------------------------------------------------------------------
def test_word_groups():
    assert word_groups(_seq()) == [[0], [1, 2], [3], [4], [5], [6], [7, 8]]
    odd = _seq(
        tokens=("<s>", "a", "\n", "b", "'s", "!!", "c", "\ufffd", "\ufffd"),
        target_start=7,
        attributions=None,
        step_scores={},
        extras={},
    )
    assert word_groups(odd) == [[0], [1], [2], [3, 4], [5], [6], [7, 8]]


@pytest.mark.parametrize("hidden", [False, True])
def test_aggregate_words(hidden):
    out = aggregate(_seq(hidden), "words")
    assert out.tokens == WORDS
    assert out.target_start == 5 and out.n_steps == 2
    assert out.token_ids.tolist() == [50256, 10, 12, 13, 14, 15, 16]
    torch.testing.assert_close(out.attributions, EXPECTED_WORDS, equal_nan=True)
    torch.testing.assert_close(out.step_scores["probability"], torch.tensor([0.5, 0.2]))
    torch.testing.assert_close(out.step_scores["crossentropy"], torch.tensor([1.0, 5.0]))
    torch.testing.assert_close(out.step_scores["perplexity"], torch.tensor([2.0, 4.0]))
    torch.testing.assert_close(out.step_scores["logit"], torch.tensor([1.0, 3.0]))
    torch.testing.assert_close(out.extras["delta"], torch.tensor([0.1, 0.5]))
    agg = out.parameters["aggregation"]
    assert agg["how"] == "words" and agg["groups"][-1] == (7, 9)
    assert out.parameters["abs"] is True


def test_aggregate_options():
    out = aggregate(
        _seq(), "words", source_reduce="max", target_reduce="max", step_reduce={"logit": "sum"}
    )
    torch.testing.assert_close(out.attributions[1, :2], torch.tensor([21.0, 23.0]))
    torch.testing.assert_close(out.step_scores["logit"], torch.tensor([1.0, 6.0]))
    with pytest.raises(KeyError, match="'words'"):
        aggregate(_seq(), "word")
    with pytest.raises(KeyError, match="'sum'"):
        aggregate(_seq(), "words", source_reduce="summ")
    with pytest.raises(KeyError, match="'logit'"):
        aggregate(_seq(), "words", step_reduce={"logits": "sum"})


def test_aggregate_spans_matches_words_and_keeps_tail_without_steps():
    out = aggregate(_seq(), "spans", spans=[(7, 9), (1, 3)])
    assert out.tokens == WORDS
    torch.testing.assert_close(out.attributions, EXPECTED_WORDS, equal_nan=True)
    # One step only: 'leagues' has no step, so the merged word takes the ' col' row alone.
    short = _seq(attributions=_seq().attributions[:2], step_scores={}, extras={})
    out = aggregate(short, "spans", spans=[(7, 9)])
    assert out.n_steps == 2
    torch.testing.assert_close(out.attributions[1, :3], torch.tensor([11.0, 12.0, 13.0]))


@pytest.mark.parametrize(
    ("spans", "bad"),
    [
        ([(5, 7)], "(5, 7)"),
        ([(0, 10)], "(0, 10)"),
        ([(3, 3)], "(3, 3)"),
        ([(1, 3), (2, 4)], "(2, 4)"),
    ],
)
def test_bad_spans(spans, bad):
    with pytest.raises(ValueError, match=bad.replace("(", r"\(").replace(")", r"\)")):
        aggregate(_seq(), "spans", spans=spans)


def test_merge_groups_rejects_bad_groups():
    with pytest.raises(ValueError, match="crosses target_start"):
        merge_groups(_seq(), [[0], [1], [2], [3], [4], [5, 6], [7], [8]])
    with pytest.raises(ValueError, match="contiguous"):
        merge_groups(_seq(), [[0], [2]])


def test_aggregate_without_attributions():
    out = aggregate(_seq(attributions=None), "words")
    assert out.attributions is None
    torch.testing.assert_close(out.step_scores["crossentropy"], torch.tensor([1.0, 5.0]))


# ---- difference ------------------------------------------------------------------------------
def test_difference():
    a = _seq()
    b = a.with_(attributions=a.attributions * 0.25, method="grad")
    d = difference(a, b)  # raw scores
    assert d.method == "saliency-grad"
    torch.testing.assert_close(d.attributions, a.attributions * 0.75, equal_nan=True)
    torch.testing.assert_close(d.step_scores["logit"], torch.zeros(3))
    mixed = difference(_seq(hidden=True), b)  # hidden dims are reduced (L2) first
    torch.testing.assert_close(mixed.attributions, d.attributions, equal_nan=True)
    # a - b compares shares: same shares on another scale give 0, whatever the scales.
    shares = a - b
    assert shares.parameters["difference"]["normalize"] is True
    torch.testing.assert_close(shares.attributions, d.attributions * 0, equal_nan=True)
    flat = a.with_(attributions=torch.where(a.attributions.isnan(), NAN, 1.0))
    expected = a.scores(normalize=True) - flat.scores(normalize=True)
    torch.testing.assert_close((a - flat).attributions, expected, equal_nan=True)
    with pytest.raises(ValueError, match="tokens"):
        difference(a, a.with_(tokens=("x", *TOKENS[1:])))
    with pytest.raises(ValueError, match="target_start"):
        difference(a, a.with_(target_start=5, attributions=None, step_scores={}, extras={}))


# ---- rendering -------------------------------------------------------------------------------
def test_to_text_plain_and_colour():
    seq = _seq()
    text = to_text(seq, color=False, normalize=False, digits=2)
    assert "saliency" in text.splitlines()[0]
    assert "<|endoftext|>" in text and "▁His" in text and "leagues" in text
    assert "17.00" in text and "28.00" in text and "nan" not in text
    assert "\x1b[" not in text
    row = next(line for line in text.splitlines() if line.startswith("orge"))
    assert row.split("│")[1].split() == ["3.00", "13.00", "23.00"]
    assert any(line.startswith("probability") and "0.40" in line for line in text.splitlines())
    assert "\x1b[48;2;" in to_text(seq, color=True, normalize=False)
    narrow = to_text(seq, color=False, max_width=30, normalize=False, digits=2)
    assert max(len(line) for line in narrow.splitlines()[1:]) <= 30
    assert "28.00" in narrow
    no_attr = to_text(seq.with_(attributions=None), color=False, digits=3)
    assert "0.400" in no_attr and "prompt:" in no_attr
    assert "\\n" in to_text(seq.with_(tokens=(*TOKENS[:5], ".\n", *TOKENS[6:])), color=False)


def test_to_html_escapes_and_colours():
    out = to_html(_seq(hidden=True), normalize=False, digits=3)
    assert out.startswith("<div") and "<table" in out and out.endswith("</div>")
    assert "&lt;|endoftext|&gt;" in out and "<|endoftext|>" not in out
    assert "background-color:rgb(" in out and "28.000" in out and "crossentropy" in out


def test_show_prints(capsys):
    _seq().show(color=False, normalize=False, digits=2)
    assert "13.00" in capsys.readouterr().out


def _cells(text: str, label: str) -> list[str]:
    return next(line for line in text.splitlines() if line.startswith(label)).split("│")[1].split()


def test_digits_follow_the_scores_magnitude():
    seq = _seq()
    small = seq.with_(attributions=seq.attributions * 1e-5, step_scores={}, extras={})  # 1e-5..3e-4
    text = to_text(small, color=False, normalize=False)
    assert _cells(text, "orge") == ["0.00003", "0.00013", "0.00023"]
    assert all(float(c) > 0 for c in _cells(text, "<|endoftext|>"))
    assert _cells(to_text(small, color=False, normalize=False, digits=2), "orge") == ["0.00"] * 3
    page = to_html(small, normalize=False)
    assert ">0.000280<" in page and ">0.00<" not in to_html(small, normalize=False, digits=3)
    # large raw scores: no decimals needed for them, but the step scores keep theirs
    text = to_text(seq, color=False, normalize=False)
    assert _cells(text, "orge") == ["3.00", "13.00", "23.00"]
    assert "0.40" in _cells(text, "probability")
    bare = seq.with_(step_scores={}, extras={})
    assert _cells(to_text(bare, color=False, normalize=False), "orge") == ["3", "13", "23"]
    assert _cells(to_text(seq, color=False), "orge")[0] == "0.14"  # shares: 3 / 21
    with pytest.raises(ValueError, match="digits must be None"):
        to_text(seq, digits=-1)


# ---- plotting --------------------------------------------------------------------------------
def test_plot_returns_figure_without_pyplot():
    before = len(plt.get_fignums())
    fig = _seq().plot()
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    rows = [
        "<|endoftext|>",
        "Ge",
        "orge",
        "\u2009was",
        "\u2009sick",
        ".",
        "\u2009His",
        "\u2009col",
        "leagues",
    ]  # fmt: skip  (a leading space is a thin space in figures)
    assert [t.get_text() for t in ax.get_yticklabels()] == rows
    assert [t.get_text() for t in ax.get_xticklabels()] == rows[-3:]
    assert ax.get_title() == "saliency"
    assert ax.images[0].get_cmap().name.startswith("Reds")
    assert len(ax.texts) == 6 + 7 + 8  # annotated visible cells
    fig.savefig(io.BytesIO(), format="png")
    assert len(plt.get_fignums()) == before


def test_plot_diverging_no_annotation_and_step_scores():
    seq = _seq(attributions=-_seq().attributions)
    fig = seq.plot(annotate=False, title="neg", normalize=False)
    image = fig.axes[0].images[0]
    assert image.get_cmap().name.startswith("RdBu_r")
    assert image.get_clim() == (-28.0, 28.0)
    assert not fig.axes[0].texts and fig.axes[0].get_title() == "neg"
    bars = _seq(attributions=None).plot()
    assert len(bars.axes) == 5  # four step scores and one extra
    labels = [t.get_text() for t in bars.axes[-1].get_xticklabels()]
    assert labels == ["\u2009His", "\u2009col", "leagues"]
    bars.savefig(io.BytesIO(), format="png")


def test_normalized_scores_sum_to_one_per_step():
    seq = _seq(hidden=True)
    norm = seq.scores(normalize=True)
    torch.testing.assert_close(norm.abs().nansum(-1), torch.ones(seq.n_steps, dtype=norm.dtype))
    raw = seq.scores()
    torch.testing.assert_close(norm * raw.abs().nansum(-1, keepdim=True), raw, equal_nan=True)
    assert "normalised" in to_text(seq, color=False)
