"""Value zeroing and knockout on tiny Marian, BART and T5 models: encoder, decoder, cross."""

from __future__ import annotations

import contextlib
import importlib

import pytest
import torch
from matplotlib.figure import Figure
from torch.testing import assert_close

import hooklab
from hooklab.hooks import count_hooks
from hooklab.mixing import attention_knockout, value_zeroing
from hooklab.mixing.adapter import EncoderDecoder
from tests.reference.mixing import ref_knockout_seq2seq, ref_value_zeroing_seq2seq

ko_module = importlib.import_module("hooklab.mixing.knockout")
SOURCE = "George was sick yesterday."
TARGET = " His colleagues asked"
TOL = {"atol": 1e-5, "rtol": 1e-5}


def build_seq2seq(path, kind: str = "marian", seed: int = 0):
    """A 2+2-layer Marian, BART or T5 with non-zero biases and a BPE tokenizer, saved."""
    import transformers

    from tests.conftest import _tokenizer, save_tiny

    tok = _tokenizer("</s>", "</s>")
    tok.add_special_tokens({"pad_token": "<pad>"})
    ids = {"pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id}
    if kind == "t5":
        cfg = transformers.T5Config(
            vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
            decoder_start_token_id=tok.pad_token_id, **ids,
        )  # fmt: skip
        cls = transformers.T5ForConditionalGeneration
    else:
        config_cls = transformers.MarianConfig if kind == "marian" else transformers.BartConfig
        cfg = config_cls(
            vocab_size=len(tok), d_model=32, encoder_layers=2, decoder_layers=2,
            encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
            decoder_ffn_dim=64, max_position_embeddings=64, bos_token_id=tok.eos_token_id,
            decoder_start_token_id=tok.pad_token_id, forced_eos_token_id=None, **ids,
        )  # fmt: skip
        cls = (
            transformers.MarianMTModel
            if kind == "marian"
            else transformers.BartForConditionalGeneration
        )
    torch.manual_seed(seed)
    model = cls(cfg).eval()
    return save_tiny(model, tok, path, seed)


@pytest.fixture(scope="module")
def marian(tmp_path_factory):
    path = build_seq2seq(tmp_path_factory.mktemp("marian"))
    return hooklab.load(path, device="cpu", dtype="float64")


@pytest.fixture(scope="module", params=["marian", "bart", "t5"])
def seq2seq(request, tmp_path_factory, marian):
    if request.param == "marian":
        return marian
    path = build_seq2seq(tmp_path_factory.mktemp(request.param), request.param)
    return hooklab.load(path, device="cpu", dtype="float64")


def _parts(model, **options):
    return {p: value_zeroing(model, SOURCE, targets=TARGET, part=p, **options)[0] for p in PARTS}


PARTS = ("encoder", "decoder", "cross")


def test_three_score_sets_match_references(seq2seq):
    out = _parts(seq2seq)
    src, tgt = out["encoder"].token_ids.tolist(), out["decoder"].token_ids.tolist()
    assert tgt[0] == seq2seq.original_model.config.decoder_start_token_id
    shapes = {"encoder": (len(src), len(src)), "decoder": (len(tgt),) * 2}
    shapes["cross"] = (len(tgt), len(src))
    for part, result in out.items():
        assert result.scores.shape == (2, *shapes[part])
        assert_close(result.scores.sum(-1), torch.ones(2, shapes[part][0], dtype=torch.float64))
        for row, layer in enumerate(result.layers):
            expected = ref_value_zeroing_seq2seq(seq2seq, src, tgt, part, layer)
            assert_close(result.scores[row], expected, **TOL)
    assert torch.all(out["decoder"].scores.triu(1) == 0)
    assert out["cross"].keys == out["encoder"].tokens
    assert out["cross"].parameters["part"] == "cross" and out["decoder"].causal


def test_chunked_passes_agree(marian):
    # max_batch_tokens=1: one zeroed key per pass; the default: all keys in one pass.
    for part in PARTS:
        (a,) = value_zeroing(marian, SOURCE, targets=TARGET, part=part, max_batch_tokens=1)
        (b,) = value_zeroing(marian, SOURCE, targets=TARGET, part=part)
        assert_close(a.scores, b.scores, atol=1e-12, rtol=1e-12)


def test_heads_layers_and_hooks(marian):
    hooks = count_hooks(marian)
    (out,) = value_zeroing(marian, SOURCE, targets=TARGET, part="cross", layers=[1], heads=[0, 2])
    tgt, src = out.token_ids.tolist(), out.key_token_ids.tolist()
    expected = ref_value_zeroing_seq2seq(marian, src, tgt, "cross", 1, heads=[0, 2])
    assert_close(out.scores[0], expected, **TOL)
    assert count_hooks(marian) == hooks
    assert isinstance(out.plot(), Figure) and "layer 1" in out.to_text()


def test_generated_target_and_errors(marian):
    (out,) = value_zeroing(marian, SOURCE, part="decoder", generation_kwargs={"max_new_tokens": 3})
    assert 1 < len(out.tokens) <= 4 and out.parameters["targets"] is None
    with pytest.raises(ValueError, match="Unknown part 'enc'.*encoder, decoder, cross"):
        value_zeroing(marian, SOURCE, targets=TARGET, part="enc")
    with pytest.raises(ValueError, match="rollout"):
        value_zeroing(marian, SOURCE, targets=TARGET, rollout=True)
    (rolled,) = value_zeroing(marian, SOURCE, targets=TARGET, part="encoder", rollout=True)
    assert_close(rolled.rollout[1], rolled.scores[1] @ rolled.scores[0])


@pytest.mark.parametrize(
    ("part", "window"), [("cross", None), ("cross", 1), ("decoder", 1), ("encoder", 1)]
)
def test_knockout_matches_hand_masked_reference(seq2seq, part, window):
    sources = {"cue": "sick", "first": [0, 1]} if part != "decoder" else {"start": [0, 1]}
    (out,) = attention_knockout(
        seq2seq, SOURCE, targets=TARGET, sources=sources, part=part, window=window
    )
    src = seq2seq.tokenizer(SOURCE)["input_ids"]
    tgt = seq2seq.tokenizer(TARGET, add_special_tokens=False)["input_ids"]
    tgt = [seq2seq.original_model.config.decoder_start_token_id, *tgt]
    assert out.token_ids.tolist() == (src if part == "encoder" else tgt)
    assert (out.key_tokens is not None) == (part == "cross")
    for s, keys in enumerate(out.sources.values()):
        for w, layers in enumerate(out.windows):
            expected = ref_knockout_seq2seq(
                seq2seq, src, tgt, part, layers, out.queries, keys, out.target_id
            )
            assert out.probabilities[s, w].item() == pytest.approx(expected, rel=1e-6)
    assert (out.probabilities != out.base_probability).any()  # (tiny in the encoder)


def test_knockout_nothing_changes_nothing(seq2seq):
    (out,) = attention_knockout(seq2seq, SOURCE, targets=TARGET, sources={"none": []})
    src = torch.tensor([seq2seq.tokenizer(SOURCE)["input_ids"]])
    logits = seq2seq(src, decoder_input_ids=out.token_ids[None])
    clean = torch.softmax(logits[0, -1], -1)[out.target_id].item()
    assert out.base_probability == pytest.approx(clean, rel=1e-12)
    assert out.probabilities[0, 0].item() == pytest.approx(clean, rel=1e-12)


def test_registered_attention_is_exact(seq2seq):
    # Nothing blocked: the registered attention function gives the eager logits exactly.
    from hooklab.mixing.blocking import ATTENTION, blocked_attention

    src = torch.tensor([seq2seq.tokenizer(SOURCE)["input_ids"]])
    tgt = torch.tensor([[seq2seq.original_model.config.decoder_start_token_id, 5, 6, 7]])
    clean = seq2seq(src, decoder_input_ids=tgt)
    seen = []
    with blocked_attention(seq2seq.original_model, {}):
        seen.append(seq2seq.original_model.config._attn_implementation)
        logits = seq2seq(src, decoder_input_ids=tgt)
    assert seen == [ATTENTION] and logits.dtype == torch.float64
    assert_close(logits, clean, atol=1e-10, rtol=0)


def _implementations(model):
    return [
        m.config._attn_implementation
        for m in model.original_model.modules()
        if hasattr(getattr(m, "config", None), "_attn_implementation")
    ]


def test_knockout_leaves_no_global_or_model_state(marian, monkeypatch):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    eager = ALL_ATTENTION_FUNCTIONS.get("eager")
    hooks, impls = count_hooks(marian), _implementations(marian)
    attention_knockout(marian, SOURCE, targets=TARGET, sources={"cue": "sick"}, window=1)
    registry = dict(ALL_ATTENTION_FUNCTIONS)
    attention_knockout(marian, SOURCE, targets=TARGET, sources={"cue": "sick"}, window=1)
    assert (
        dict(ALL_ATTENTION_FUNCTIONS) == registry and ALL_ATTENTION_FUNCTIONS.get("eager") is eager
    )
    assert _implementations(marian) == impls and set(impls) == {"eager"}
    assert count_hooks(marian) == hooks

    # Without blocking the edit is discarded: the check raises instead of reporting 0.
    @contextlib.contextmanager
    def without_blocking(self, masks):
        yield []

    monkeypatch.setattr(EncoderDecoder, "blocked_edges", without_blocking)
    with pytest.raises(RuntimeError, match="did not take effect"):
        attention_knockout(marian, SOURCE, targets=TARGET, sources={"cue": "sick"})
    monkeypatch.undo()

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("hooklab.forward.temporary_hooks", boom)  # where the adapter runs
    with pytest.raises(RuntimeError, match="boom"):
        attention_knockout(marian, SOURCE, targets=TARGET, sources={"cue": "sick"})
    assert (
        dict(ALL_ATTENTION_FUNCTIONS) == registry and ALL_ATTENTION_FUNCTIONS.get("eager") is eager
    )
    assert _implementations(marian) == impls
    assert count_hooks(marian) == hooks


def test_knockout_lists_validation_and_provenance(marian):
    outs = attention_knockout(marian, [SOURCE, "It rained."], targets=TARGET, part="decoder")
    assert isinstance(outs, list) and len(outs) == 2
    assert outs[1].tokens[0] == "<pad>" and list(outs[0].sources) == ["last", "other"]
    p = outs[0].parameters
    assert p["window"] == 1 and p["batch_size"] == 16 and p["part"] == "decoder"
    assert outs[0].model["architecture"] == "MarianMTModel"
    for bad, match in [
        ({"window": 0}, "window must be a positive int"),
        ({"batch_size": 0}, "batch_size must be a positive int"),
        ({"part": "self"}, "Unknown part 'self'"),
        ({"sources": {"x": 99}}, "Invalid source 'x' 99"),
    ]:
        with pytest.raises(ValueError, match=match):
            attention_knockout(marian, SOURCE, **bad)


def test_one_algorithm_for_both_kinds(marian, gpt2, monkeypatch):
    calls = []
    real = ko_module.knockout_probabilities

    def spy(model, example, *args, **kwargs):
        calls.append((type(model_adapter(model, kwargs.get("part"))).__name__, example))
        return real(model, example, *args, **kwargs)

    from hooklab.mixing import model_adapter

    monkeypatch.setattr(ko_module, "knockout_probabilities", spy)
    attention_knockout(gpt2, "It rained", sources={"last": -1}, window=None)
    attention_knockout(marian, "It rained.", sources={"last": -1}, window=None)
    assert [name for name, _ in calls] == ["DecoderOnly", "EncoderDecoder"]
    assert calls[1][1].decoder_ids is not None and calls[0][1].decoder_ids is None
