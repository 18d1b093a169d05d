"""Every plot function: paper style (TrueType fonts in PDF), readable tokens, labelled scales."""

from __future__ import annotations

import io
import itertools
import re

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

from hooklab.attribution import SequenceAttribution
from hooklab.mixing.knockout_output import KnockoutOutput
from hooklab.mixing.output import MixingOutput
from hooklab.mixing.plot import (
    attention_name,
    plot_knockout,
    plot_layers,
    plot_matrix,
    plot_query_layers,
    plot_token_mixing,
)
from hooklab.output.style import DOUBLE_COLUMN, SINGLE_COLUMN, token_label
from hooklab.output.view import decimals, number_format
from hooklab.pecore.result import ContextSensitiveToken, Cue, PecoreResult

WORDS = [" the", " cat", " sat", " on", " a", " mat", "."]


def tokens(n: int) -> tuple[str, ...]:
    return ("<|endoftext|>", *(WORDS[i % len(WORDS)] for i in range(n - 1)))


def sequence(n: int = 12, steps: int = 4, signed: bool = False) -> SequenceAttribution:
    g = torch.Generator().manual_seed(0)
    attr = torch.rand(steps, n, generator=g) * (2 if signed else 1) - (1 if signed else 0)
    for t in range(steps):
        attr[t, n - steps + t :] = float("nan")
    return SequenceAttribution(
        tokens=tokens(n),
        token_ids=torch.arange(n),
        target_start=n - steps,
        attributions=attr,
        step_scores={"probability": torch.rand(steps, generator=g)},
        method="saliency",
        parameters={"attributed_fn": "probability"},
    )


def mixing(n: int = 10, layers: int = 4, part: str = "decoder", model=None) -> MixingOutput:
    scores = torch.rand(layers, n, n, generator=torch.Generator().manual_seed(1)).tril()
    scores = scores / scores.sum(-1, keepdim=True)
    return MixingOutput(
        tokens=tokens(n), token_ids=torch.arange(n), scores=scores, layers=tuple(range(layers)),
        rollout=scores, parameters={"part": part, "metric": "cosine", "normalize": True},
        target_start=n - 3, model=model,
    )  # fmt: skip


def knockout(layers: int = 4) -> KnockoutOutput:
    n = 12
    probs = torch.full((3, layers), 0.5, dtype=torch.float64)
    probs[0, 0] = 0.1
    return KnockoutOutput(
        tokens=tokens(n), token_ids=torch.arange(n), target_id=3, target_token=" mat",
        queries=(n - 1,), sources={"cue": (2,), "context": (1, 3, 4), "last": (n - 1,)},
        windows=tuple((c,) for c in range(layers)), centres=tuple(range(layers)),
        base_probability=0.5, probabilities=probs, parameters={"window": 1, "part": "decoder"},
    )  # fmt: skip


def pecore(n_context: int = 23) -> PecoreResult:
    context = tokens(n_context)[1:]
    scores = tuple(float(x) for x in torch.linspace(1e-6, 0.02, len(context)))
    target = ContextSensitiveToken(
        index=2, token=" mat", score=2.08, contextless_token=" rug",
        input_context_tokens=context, input_context_scores=scores,
        cues=(Cue(index=len(context) - 1, token=context[-1], score=scores[-1]),),
    )  # fmt: skip
    return PecoreResult(
        input_context="".join(context), input_current="The cat sat on the",
        output_current=" a big mat.", input_context_tokens=context,
        output_current_tokens=(" a", " big", " mat", "."), cti_metric="kl_divergence",
        cti_scores=(6.12e-06, 1.6e-05, 2.08, 5e-06), cti_threshold=1.42,
        context_sensitive=(target,),
    )  # fmt: skip


FIGURES = {
    "plot_sequence": lambda: sequence().plot(),
    "plot_sequence_signed_40": lambda: sequence(40, 12, signed=True).plot(),
    "step_scores": lambda: sequence().with_(attributions=None).plot(),
    "plot_matrix": lambda: plot_matrix(mixing()),
    "plot_layers": lambda: plot_layers(mixing()),
    "plot_query_layers": lambda: plot_query_layers(mixing(layers=80)),
    "plot_token_mixing": lambda: plot_token_mixing(mixing(), -1),
    "plot_knockout": lambda: plot_knockout(knockout()),
    "pecore": lambda: pecore().plot(),
}


def fonts(pdf: bytes) -> set[str]:
    """The ``/Subtype`` of every font dictionary in a PDF (matplotlib writes them uncompressed)."""
    return set(re.findall(rb"/Type\s*/Font\b.*?/Subtype\s*/(\w+)", pdf, re.S)) | set(
        re.findall(rb"/Subtype\s*/(\w+)\s*/Type\s*/Font\b", pdf, re.S)
    )


@pytest.mark.parametrize("name", list(FIGURES))
def test_pdf_has_truetype_fonts_not_type3(name):
    buffer = io.BytesIO()
    with matplotlib.rc_context({"pdf.fonttype": 3}):  # a global setting does not leak in
        FIGURES[name]().savefig(buffer, format="pdf")
    found = fonts(buffer.getvalue())
    assert found and b"Type3" not in found, found
    assert matplotlib.rcParams["pdf.fonttype"] == 3  # nothing changed globally


@pytest.mark.parametrize("name", list(FIGURES))
def test_paper_width(name):
    width = FIGURES[name]().get_figwidth()
    assert width in (SINGLE_COLUMN, DOUBLE_COLUMN), width


def _overlaps(fig, texts) -> int:
    """Pairs of texts whose boxes overlap (rotated 45°: closer than their font height)."""
    fig.canvas.draw()
    texts = [t for t in texts if t.get_text()]
    if texts and texts[0].get_rotation() == 45:  # neighbours are pitch * sin 45° apart
        xs = sorted(t.get_window_extent().x1 for t in texts)
        gaps = [(b - a) * 0.7071 * 72 / fig.dpi for a, b in itertools.pairwise(xs)]
        return sum(g < texts[0].get_fontsize() for g in gaps)
    boxes = [t.get_window_extent() for t in texts]
    return sum(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


def test_no_overlapping_labels_at_40_tokens():
    fig = sequence(40, 12, signed=True).plot()
    ax = fig.axes[0]
    assert _overlaps(fig, ax.get_yticklabels()) == 0
    assert _overlaps(fig, ax.get_xticklabels()) == 0
    assert not any(t.get_rotation() == 90 for t in ax.get_xticklabels())
    wide = sequence(41, 40).plot()  # 40 target tokens: rotated 45°, small enough not to touch
    assert _overlaps(wide, wide.axes[0].get_xticklabels()) == 0
    page = pecore(40).plot()
    assert _overlaps(page, page.axes[0].texts) == 0


def test_colour_bars_are_labelled_and_signed_maps_centred():
    fig = sequence(signed=True).plot()
    image = fig.axes[0].images[0]
    low, high = image.get_clim()
    assert low == -high and image.get_cmap().name.startswith("RdBu_r")
    assert "saliency of probability" in fig.axes[1].get_ylabel()
    assert "Σ|score| = 1" in fig.axes[1].get_ylabel()
    for fig in (plot_matrix(mixing()), plot_layers(mixing()), plot_matrix(mixing(), rollout=True)):
        assert "value zeroing (cosine distance)" in fig.axes[-1].get_ylabel()


def test_pecore_figure_draws_the_threshold_and_readable_scores():
    fig = pecore().plot()
    bars = [ax for ax in fig.axes[1:]]
    assert [ax.get_ylabel().split("\n")[0] for ax in bars] == ["CTI", "CCI"]
    assert any(t.get_text() == "λ 1.42" for t in bars[0].get_yticklabels())
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "2.1" in texts and not any("e-0" in t for t in texts)


def test_layer_views_scale_to_deep_models():
    deep = mixing(layers=80)
    fig = plot_layers(deep)
    assert len([ax for ax in fig.axes if ax.get_title().startswith("layer")]) == 12
    assert "12 of 80" in fig._suptitle.get_text()
    assert len(plot_layers(deep, layers=[0, 40, 79]).axes) == 3 + 1  # 3 panels, the colour bar
    assert plot_query_layers(deep).axes[0].images[0].get_array().shape == (80, 10)
    assert len(plot_layers(mixing(layers=2)).axes) == 3


def test_knockout_legend_names_the_blocked_tokens():
    fig = plot_knockout(knockout())
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[0] == "cue: cat" and legend[-1].startswith("last:")


def test_titles_say_which_attention():
    model = {"architecture": "MarianMTModel"}
    assert attention_name("cross", model) == "cross-attention (decoder → encoder)"
    assert attention_name("encoder", model) == "encoder self-attention"
    assert attention_name("decoder", model) == "decoder self-attention"
    assert attention_name("decoder", {"architecture": "GPT2LMHeadModel"}) == ""
    title = plot_matrix(mixing(part="encoder", model=model)).axes[0].get_title()
    assert "encoder self-attention" in title


def test_tokens_and_digits():
    assert token_label(" was") == "\u2009was" and token_label("Ġwas", "strip") == "was"
    assert token_label("▁was", "raw") == "▁was" and token_label("  ") == "␣␣"
    assert token_label("a\n") == "a\\n"
    assert [decimals([x]) for x in (0.44, 0.0188, 6e-6, 28.0)] == [2, 3, 7, 0]
    assert number_format([0.0188, 0.001])(0.0188) == "0.019"


def test_difference_is_a_signed_map_of_reduced_scores():
    from hooklab.attribution.aggregate import difference

    a = sequence()
    hidden = torch.stack([a.attributions, a.attributions], -1)  # L2 = sqrt(2) * scores
    a = a.with_(attributions=hidden)
    b = a.with_(attributions=hidden * 2)
    d = difference(a, b)  # raw: reduced first, then subtracted
    expected = a.scores() - b.scores()
    torch.testing.assert_close(d.attributions, expected, equal_nan=True)
    assert (d.attributions.nan_to_num() <= 0).all() and (d.attributions < 0).any()
    same_shares = (a - b).attributions  # a - b compares shares: equal here
    torch.testing.assert_close(same_shares, expected * 0, equal_nan=True)


def test_ixg_minus_saliency_compares_shares(toy):
    import hooklab

    prompt, targets = "George was sick yesterday. His colleagues asked him to", " come"
    (ixg,) = hooklab.attribute(toy, prompt, targets, method="input_x_gradient")
    (sal,) = hooklab.attribute(toy, prompt, targets, method="saliency")
    d = (ixg - sal).attributions
    visible = d[~d.isnan()]
    assert (visible > 0).any() and (visible < 0).any()
    assert visible.abs().max() <= 1
    # shares on both sides: each row sums to 0, and a raw difference would be all negative
    torch.testing.assert_close(d.nansum(-1), torch.zeros(d.shape[0]), atol=1e-5, rtol=0)
    assert (ixg.scores() - sal.scores()).nan_to_num().max() <= 0


# ---- encoder-decoder figures ---------------------------------------------------------------
MT_SOURCE, MT_TARGET = (
    "The table was old. <brk> It was broken.",
    "Der Tisch war alt. <brk> Er war kaputt.",
)


@pytest.fixture(scope="module")
def tiny_marian(tmp_path_factory):
    import hooklab
    from tests.test_mixing_encoder_decoder import build_seq2seq

    model = hooklab.load(build_seq2seq(tmp_path_factory.mktemp("marian")), device="cpu")
    (seq,) = hooklab.attribute(model, "the cat sat", " a cat", method="saliency")
    return seq


@pytest.fixture(scope="module")
def toy_mt():
    import hooklab

    return hooklab.load("toy-mt", device="cpu")


@pytest.fixture(scope="module")
def mt_attribution(toy_mt):
    import hooklab

    (seq,) = hooklab.attribute(toy_mt, MT_SOURCE, MT_TARGET, method="input_x_gradient")
    return seq


def _pdf_fonts(fig) -> set[bytes]:
    buffer = io.BytesIO()
    with matplotlib.rc_context({"pdf.fonttype": 3}):
        fig.savefig(buffer, format="pdf")
    return fonts(buffer.getvalue())


def _check_source_and_target_blocks(seq, hide_special: bool) -> None:
    before = seq.scores(side="both").clone()
    fig = seq.plot(hide_special=hide_special)
    ax = fig.axes[0]
    hidden = set(seq.special_tokens) if hide_special else set()
    source = [t for t in seq.source_tokens if t not in hidden]
    target = [t for t in seq.tokens[: seq.target_start + seq.n_steps] if t not in hidden]
    expected = [token_label(t) for t in [*source, *target]]
    assert [t.get_text() for t in ax.get_yticklabels()] == expected
    assert len(fig.axes) == 2 and len(ax.images) == 1  # one heatmap, one colour bar
    rules = [line.get_ydata()[0] for line in ax.lines]
    assert len(source) - 0.5 in rules  # the rule between the source and the target block
    blocks = {t.get_text(): t.xy[1] for t in ax.texts if t.get_text() in ("source", "target")}
    assert blocks == {
        "source": (len(source) - 1) / 2,
        "target": len(source) + (len(target) - 1) / 2,
    }
    assert ax.get_ylabel() == ""  # the block labels replace the decoder-only "source"
    image = ax.images[0].get_array()
    assert image.shape == (len(expected), seq.n_steps)
    low, high = ax.images[0].get_clim()  # one image, one colour scale, fitted to both blocks
    shown = np.abs(np.ma.filled(image.astype(float), np.nan))
    assert (low, high) == (0.0, pytest.approx(np.nanmax(shown)))
    if hide_special:
        assert not hidden & {t.get_text() for t in ax.get_yticklabels()}
    torch.testing.assert_close(seq.scores(side="both"), before, equal_nan=True)  # data unchanged
    assert b"Type3" not in _pdf_fonts(fig)
    assert "over source + target" in fig.axes[1].get_ylabel()


@pytest.mark.parametrize("hide_special", [False, True])
def test_encoder_decoder_heatmap_on_tiny_marian(tiny_marian, hide_special):
    assert {"</s>", "<pad>"} <= set(tiny_marian.special_tokens)
    _check_source_and_target_blocks(tiny_marian, hide_special)
    shown = [
        t.get_text() for t in tiny_marian.plot(hide_special=hide_special).axes[0].get_yticklabels()
    ]
    assert ("</s>" in shown) != hide_special and ("<pad>" in shown) != hide_special


@pytest.mark.parametrize("hide_special", [False, True])
def test_encoder_decoder_heatmap_on_toy_mt(mt_attribution, hide_special):
    _check_source_and_target_blocks(mt_attribution, hide_special)
    fig = mt_attribution.plot(hide_special=hide_special)
    assert fig.get_figwidth() == DOUBLE_COLUMN  # 11 target columns
    assert _overlaps(fig, fig.axes[0].get_yticklabels()) == 0


def test_decoder_only_heatmap_keeps_its_source_label():
    ax = sequence().plot().axes[0]
    assert ax.get_ylabel() == "source" and not [t for t in ax.texts if t.get_text() == "target"]


def pecore_mt(selected: int = 1) -> PecoreResult:
    """A translation-like result: an input and an output context, the cue on the output side."""
    src, out = (" The", " table", " was", " old", "."), (" Der", " Tisch", " war", " alt", ".")
    targets = tuple(
        ContextSensitiveToken(
            index=i,
            token=tok,
            score=0.9,
            contextless_token=" Sie",
            input_context_tokens=src,
            input_context_scores=(0.0018, 0.0014, 7e-4, 7e-4, 4e-4),
            output_context_tokens=out,
            output_context_scores=(0.0031, 0.0011, 7e-4, 4e-4, 2e-4),
            cues=(Cue(index=0, token=" Der", score=0.0031, side="output"),),
        )
        for i, tok in zip(range(selected), (" Er", " war"))
    )
    return PecoreResult(
        input_context="The table was old.", input_current="It was broken.",
        output_current=" Er war kaputt.", input_context_tokens=src,
        output_current_tokens=(" Er", " war", " kaputt", "."), cti_metric="kl_divergence",
        cti_scores=(0.93, 0.001, 0.001, 0.001), cti_threshold=0.64, context_sensitive=targets,
        output_context="Der Tisch war alt.",
    )  # fmt: skip


def _boxed(fig) -> list[str]:
    """The token texts of the boxed (selected) tokens, top to bottom."""
    from matplotlib.patches import FancyBboxPatch

    ax = fig.axes[0]
    boxes = [p for p in ax.patches if isinstance(p, FancyBboxPatch) and p.get_linewidth() > 0
             and p.get_edgecolor()[3] > 0]  # fmt: skip
    out = []
    for p in boxes:
        cx, cy = p.get_x() + p.get_width() / 2, p.get_y() + p.get_height() / 2
        out += [t.get_text() for t in ax.texts if t.get_position() == (cx, cy)]
    return out


@pytest.mark.parametrize("size", ["single", "double"])
def test_pecore_figure_shows_input_and_output_context(size):
    fig = pecore_mt().plot(size=size)
    texts = {t.get_text(): t.get_position()[1] for t in fig.axes[0].texts}
    assert "input context" in texts and "output context" in texts
    assert texts["input context"] < texts["output context"]  # y grows downwards
    assert any("input and output context" in t for t in texts)
    assert _boxed(fig) == ["Er", "Der"]  # the output-side cue is boxed in the output row
    cue_y = [t.get_position()[1] for t in fig.axes[0].texts if t.get_text() == "Der"]
    assert cue_y[0] > texts["output context"]
    bars = fig.axes[1:]  # one colour bar (one scale) for CTI, one for both contexts
    assert [ax.get_ylabel().split("\n")[0] for ax in bars] == ["CTI", "CCI"]
    assert bars[1].get_ylim()[1] == pytest.approx(0.0031)  # the scale covers the output side
    assert _overlaps(fig, fig.axes[0].texts) == 0
    assert b"Type3" not in _pdf_fonts(fig)


def test_pecore_figure_has_a_cci_section_per_selected_token():
    result = pecore_mt(selected=2)
    assert [ax.get_ylabel().split("\n")[0] for ax in result.plot().axes[1:]] == [
        "CTI",
        "CCI",
        "CCI",
    ]
    assert len(result.plot(target=1).axes) == 1 + 2
    assert _boxed(result.plot(target=1))[:2] == ["Er", "war"]


def test_pecore_figure_without_output_context_has_no_row_headings():
    texts = [t.get_text() for t in pecore().plot().axes[0].texts]
    assert "input context" not in texts and "output context" not in texts


@pytest.mark.parametrize("name", ["toy", "toy-mt"])
def test_pecore_default_example_figures(name, toy_mt, toy):
    from hooklab.pecore import pecore as run_pecore
    from hooklab.pecore.examples import release_example

    ex = release_example(name)
    result = run_pecore(
        toy_mt if name == "toy-mt" else toy, ex["input_context_text"], ex["input_current_text"],
        output_context_text=ex["output_context_text"], **ex["options"],
    )  # fmt: skip
    for size, width in (("single", SINGLE_COLUMN), ("double", DOUBLE_COLUMN)):
        fig = result.plot(size=size)
        assert fig.get_figwidth() == width
        texts = [t.get_text() for t in fig.axes[0].texts]
        assert ("output context" in texts) == (name == "toy-mt")
        assert _overlaps(fig, fig.axes[0].texts) == 0
        assert b"Type3" not in _pdf_fonts(fig)
    if name == "toy-mt":
        assert "Er" in _boxed(fig) and "Der" in _boxed(fig)  # target; its output-side cue


def test_style_save_embeds_truetype_fonts_only(tmp_path):
    # Type 3 fonts are rejected by some publishers; the style writes TrueType (pdf.fonttype 42)
    # whatever the global rcParams say.
    from hooklab.output.style import new_figure, paper_style, save

    with matplotlib.rc_context({"pdf.fonttype": 3}):  # the global setting must not leak in
        with paper_style():
            fig = new_figure((3.3, 1.5))
            ax = fig.add_subplot()
            ax.plot([0, 1], [1, 0], label="Soft-NS ▁was Ġx")
            ax.set_title("log(metric / random) – α")
            ax.legend()
        (pdf,) = save(fig, tmp_path / "fig", formats=("pdf",))
        fig.savefig(tmp_path / "direct.pdf")  # a PaperFigure saves in the style too
    for path in (pdf, tmp_path / "direct.pdf"):
        data = path.read_bytes()
        assert b"/Subtype /Type3" not in data and b"/FontFile2" in data
