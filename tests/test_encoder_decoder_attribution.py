"""Attribution of tiny Marian, BART and T5 models (float64): step scores, methods, generation."""

from __future__ import annotations

import pytest
import torch
from matplotlib.figure import Figure
from torch.testing import assert_close

import hooklab
from hooklab.inputs import make_batch, pad_token_id
from hooklab.methods import METHODS, list_methods
from hooklab.scoring import compute_step_scores
from hooklab.seq2seq import decoder_start_id, encode_source
from hooklab.steps import CONTRASTIVE, list_step_functions
from hooklab.testing import check_method
from tests.reference import attribution as ref
from tests.test_mixing_encoder_decoder import build_seq2seq

SOURCES = ["George was sick yesterday.", "It rained"]
TARGETS = [" His colleagues asked", " all"]
OUT_TOL = {"atol": 1e-6, "rtol": 1e-4}  # outputs are stored in float32


@pytest.fixture(scope="module", params=["marian", "bart", "t5"])
def seq2seq(request, tmp_path_factory):
    path = build_seq2seq(tmp_path_factory.mktemp(request.param), request.param)
    return hooklab.load(path, device="cpu", dtype="float64")


def _ids(model, source, target):
    src = encode_source(model, source)
    tgt = model.tokenizer(target, add_special_tokens=False)["input_ids"]
    return src, [decoder_start_id(model), *tgt]


def test_step_scores_equal_a_plain_hugging_face_forward(seq2seq):
    pairs = [_ids(seq2seq, s, t) for s, t in zip(SOURCES, TARGETS)]
    batch = make_batch([d[:1] for _, d in pairs], [d[1:] for _, d in pairs],
                       sources=[s for s, _ in pairs], pad_id=pad_token_id(seq2seq))  # fmt: skip
    scores = compute_step_scores(seq2seq, batch, ["probability", "logit", "entropy"])
    for i, (src, dec) in enumerate(pairs):
        with torch.no_grad():
            logits = seq2seq.original_model(
                input_ids=torch.tensor([src]), decoder_input_ids=torch.tensor([dec])
            ).logits[0, :-1]
        n = len(dec) - 1
        probs = logits.softmax(-1)
        y = torch.tensor(dec[1:])
        assert_close(scores["probability"][i, :n], probs[range(n), y], atol=1e-10, rtol=0)
        assert_close(scores["logit"][i, :n], logits[range(n), y], atol=1e-10, rtol=0)
        entropy = -(probs * probs.log()).sum(-1)
        assert_close(scores["entropy"][i, :n], entropy, atol=1e-10, rtol=0)


def test_every_step_function_with_contrasts(seq2seq):
    names = [n for n in list_step_functions() if n != "mc_dropout_prob_avg"]
    contrast_sources = ["Mary was hungry at noon.", "It rained all morning."]
    out = hooklab.attribute(
        seq2seq, SOURCES, TARGETS, step_scores=names, contrast_prompts=contrast_sources,
        contrast_targets=[" Her friends asked", " the"],
    )  # fmt: skip
    for seq, c_src_text, c_tgt in zip(out, contrast_sources, [" Her friends asked", " the"]):
        src, dec = seq.source_token_ids.tolist(), seq.token_ids.tolist()
        c_src = encode_source(seq2seq, c_src_text)
        c_targets = seq2seq.tokenizer(c_tgt, add_special_tokens=False)["input_ids"]
        for name in names:
            contrast = (c_src, c_targets) if name in CONTRASTIVE else None
            expected = torch.stack(
                [ref.seq2seq_step_value(seq2seq, src, dec, 1, t, name, contrast)
                 for t in range(seq.n_steps)]
            ).detach()  # fmt: skip
            assert_close(seq.step_scores[name], expected.float(), **OUT_TOL, msg=name)
    mc = hooklab.attribute(seq2seq, SOURCES, TARGETS, step_scores=["mc_dropout_prob_avg"])
    assert mc[0].step_scores["mc_dropout_prob_avg"].isfinite().all()


REFERENCES = {
    "saliency": lambda m, s, d: _abs(ref.ref_gradient_seq2seq(m, s, d, 1)),
    "input_x_gradient": lambda m, s, d: ref.ref_gradient_seq2seq(m, s, d, 1, times_input=True),
    "integrated_gradients": lambda m, s, d: ref.ref_integrated_gradients_seq2seq(m, s, d, 1, 4),
    "occlusion": lambda m, s, d: ref.ref_occlusion_seq2seq(m, s, d, 1),
    "attention": lambda m, s, d: ref.ref_attention_seq2seq(m, s, d, 1),
    "value_zeroing": lambda m, s, d: ref.ref_value_zeroing_seq2seq(m, s, d, 1),
}
OPTIONS = {"integrated_gradients": {"n_steps": 4}}


def _abs(pair):
    return tuple(x.abs() for x in pair)


@pytest.mark.parametrize("method", list(REFERENCES))
def test_methods_equal_per_step_references(seq2seq, method):
    out = hooklab.attribute(seq2seq, SOURCES, TARGETS, method=method, **OPTIONS.get(method, {}))
    for seq in out:
        assert seq.tokens[0] == seq2seq.tokenizer.decode([decoder_start_id(seq2seq)])
        assert seq.target_start == 1
        src, dec = seq.source_token_ids.tolist(), seq.token_ids.tolist()
        source, target = REFERENCES[method](seq2seq, src, dec)
        assert_close(seq.source_attributions, source.float(), **OUT_TOL, equal_nan=True)
        assert_close(seq.attributions, target.float(), **OUT_TOL, equal_nan=True)


def test_t5_saliency_is_not_zero(tmp_path):
    model = hooklab.load(build_seq2seq(tmp_path, "t5"), device="cpu", dtype="float64")
    out = hooklab.attribute(model, SOURCES[:1], TARGETS[:1], method="saliency")
    assert out[0].source_attributions.abs().sum() > 0
    assert out[0].scores(side="source").min() > 0


def test_generation_cached_uncached_and_hugging_face(seq2seq):
    cached = hooklab.generate(seq2seq, SOURCES, max_new_tokens=6, keep_logits=True)
    plain = hooklab.generate(seq2seq, SOURCES, max_new_tokens=6, use_cache=False,
                             keep_logits=True)  # fmt: skip
    assert cached.output_ids == plain.output_ids
    for a, b in zip(cached.step_logits, plain.step_logits):
        assert_close(a, b, atol=1e-8, rtol=1e-8)
    eos = seq2seq.tokenizer.eos_token_id
    for source, ours in zip(SOURCES, cached.output_ids):
        ids = torch.tensor([encode_source(seq2seq, source)])
        hf = seq2seq.original_model.generate(ids, do_sample=False, max_new_tokens=6)[0].tolist()
        assert hf[0] == decoder_start_id(seq2seq)
        hf = hf[1:]
        assert ours == (hf[: hf.index(eos)] if eos in hf else hf)
    out = hooklab.attribute(seq2seq, SOURCES, generation_kwargs={"max_new_tokens": 3})
    assert [list(s.token_ids[1:]) for s in out] == [o[:3] for o in cached.output_ids]


def test_output_views_tables_and_round_trip(seq2seq, tmp_path):
    out = hooklab.attribute(
        seq2seq, SOURCES, TARGETS, method="saliency", step_scores=["probability"]
    )
    seq = out[0]
    both = seq.scores(side="both", normalize=True)
    assert_close(both.abs().nansum(-1), torch.ones(seq.n_steps))
    frame = out.to_pandas()
    assert set(frame["side"]) == {"source", "target"}
    n_src = len(seq.source_tokens) * seq.n_steps
    assert (frame[(frame.example == 0)]["side"] == "source").sum() == n_src
    text = seq.to_text(color=False)
    rows = [line.split("│")[0].strip() for line in text.splitlines()]
    assert rows.index("George") < rows.index("───") < rows.index("▁His")
    hidden = seq.to_text(color=False, hide_special=True)
    assert "<pad>" in rows and "<pad>" not in hidden and len(hidden) < len(text)
    html = seq.to_html()
    assert "&lt;/s&gt;" in html and "&lt;/s&gt;" not in seq.to_html(hide_special=True)
    assert isinstance(seq.plot(), Figure)
    loaded = hooklab.AttributionOutput.load(out.save(tmp_path / "out.safetensors"))
    assert loaded[0].source_tokens == seq.source_tokens
    assert torch.equal(loaded[0].source_attributions, seq.source_attributions)
    words = out.aggregate("words")[0]
    assert words.source_attributions.shape[:2] == (words.n_steps, len(words.source_tokens))
    assert len(words.source_tokens) <= len(seq.source_tokens)


def test_decoder_only_outputs_have_no_source(gpt2):
    seq = hooklab.attribute(gpt2, "It rained", " all", method="saliency")[0]
    assert seq.source_tokens is None and seq.source_attributions is None
    assert "side" not in seq.to_pandas().columns and "source_tokens" not in seq.to_dict()


@pytest.mark.parametrize(
    "method", [m for m in list_methods() if METHODS.get(m).encoder_decoder and m != "dummy"]
)
def test_contract_on_marian(method, tmp_path_factory):
    model = _marian(tmp_path_factory)
    check_method(model, method, prompts=SOURCES, targets=TARGETS, atol=1e-6, rtol=1e-5,
                 **OPTIONS.get(method, {}))  # fmt: skip


def test_contract_on_bart_and_t5(seq2seq):
    for method in ("saliency", "occlusion", "attention"):
        check_method(seq2seq, method, prompts=SOURCES, targets=TARGETS, atol=1e-6, rtol=1e-5)


_MODELS: dict[str, object] = {}


def _marian(factory):
    if "marian" not in _MODELS:
        path = build_seq2seq(factory.mktemp("marian_contract"), "marian")
        _MODELS["marian"] = hooklab.load(path, device="cpu", dtype="float64")
    return _MODELS["marian"]
