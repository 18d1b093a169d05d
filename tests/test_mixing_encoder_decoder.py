"""Value zeroing and knockout on tiny Marian, BART and T5 models: encoder, decoder, cross."""

from __future__ import annotations

import importlib
from contextlib import nullcontext

import pytest
import torch
from matplotlib.figure import Figure
from torch.testing import assert_close

import hooklab
from hooklab.hooks import count_hooks
from hooklab.mixing import encoder_decoder_knockout, encoder_decoder_value_zeroing, value_zeroing
from tests.reference.mixing import ref_knockout_seq2seq, ref_value_zeroing_seq2seq

ko_module = importlib.import_module("hooklab.mixing.encoder_decoder_knockout")
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


def test_three_score_sets_match_references(seq2seq):
    (out,) = encoder_decoder_value_zeroing(seq2seq, SOURCE, target=TARGET)
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


def test_heads_layers_and_hooks(marian):
    hooks = count_hooks(marian)
    (out,) = encoder_decoder_value_zeroing(
        marian, SOURCE, target=TARGET, parts=["cross"], layers=[1], heads=[0, 2]
    )
    src, tgt = out["cross"].token_ids.tolist(), out["cross"].key_token_ids.tolist()
    src, tgt = tgt, src  # cross: queries are target tokens, keys source tokens
    expected = ref_value_zeroing_seq2seq(marian, src, tgt, "cross", 1, heads=[0, 2])
    assert_close(out["cross"].scores[0], expected, **TOL)
    assert count_hooks(marian) == hooks
    assert isinstance(out["cross"].plot(), Figure) and "layer 1" in out["cross"].to_text()


def test_generated_target_and_errors(marian, gpt2):
    (out,) = encoder_decoder_value_zeroing(
        marian, SOURCE, parts=["decoder"], generation_kwargs={"max_new_tokens": 3}
    )
    assert 1 < len(out["decoder"].tokens) <= 4
    with pytest.raises(ValueError, match="Unknown parts"):
        encoder_decoder_value_zeroing(marian, SOURCE, target=TARGET, parts=["enc"])
    with pytest.raises(TypeError, match="decoder-only"):
        encoder_decoder_value_zeroing(gpt2, SOURCE)
    with pytest.raises(TypeError, match="encoder_decoder_value_zeroing"):
        value_zeroing(marian, SOURCE)


@pytest.mark.parametrize(("part", "window"), [("cross", None), ("cross", 1), ("decoder", 1)])
def test_knockout_matches_hand_masked_reference(seq2seq, part, window):
    sources = {"cue": "sick", "first": [0, 1]} if part == "cross" else {"start": [0, 1]}
    out = encoder_decoder_knockout(
        seq2seq, SOURCE, prefix=TARGET, sources=sources, part=part, window=window
    )
    src = seq2seq.tokenizer(SOURCE)["input_ids"]
    tgt = out.token_ids.tolist()
    assert (out.key_tokens is not None) == (part == "cross")
    for s, keys in enumerate(out.sources.values()):
        for w, layers in enumerate(out.windows):
            expected = ref_knockout_seq2seq(
                seq2seq, src, tgt, part, layers, out.queries, keys, out.target_id
            )
            assert out.probabilities[s, w].item() == pytest.approx(expected, rel=1e-6)
    assert not torch.allclose(out.probabilities, torch.tensor(out.base_probability).double())


def test_knockout_nothing_changes_nothing(seq2seq):
    out = encoder_decoder_knockout(seq2seq, SOURCE, prefix=TARGET, sources={"none": []})
    src = torch.tensor([seq2seq.tokenizer(SOURCE)["input_ids"]])
    logits = seq2seq(src, decoder_input_ids=out.token_ids[None])
    clean = torch.softmax(logits[0, -1], -1)[out.target_id].item()
    assert out.base_probability == pytest.approx(clean, rel=1e-12)
    assert out.probabilities[0, 0].item() == pytest.approx(clean, rel=1e-12)


def test_knockout_restores_everything(marian, monkeypatch):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    hooks, impl = count_hooks(marian), marian.original_model.config._attn_implementation
    encoder_decoder_knockout(marian, SOURCE, prefix=TARGET, sources={"cue": "sick"}, window=1)
    assert ALL_ATTENTION_FUNCTIONS.get("eager") is None
    assert marian.original_model.config._attn_implementation == impl
    assert count_hooks(marian) == hooks

    # Without the shim the edit is discarded: the check raises instead of reporting 0.
    monkeypatch.setattr(ko_module, "blocked_attention", lambda model, masks: nullcontext())
    with pytest.raises(RuntimeError, match="did not take effect"):
        encoder_decoder_knockout(marian, SOURCE, prefix=TARGET, sources={"cue": "sick"})
    monkeypatch.undo()

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(ko_module, "run_seq2seq", boom)
    with pytest.raises(RuntimeError, match="boom"):
        encoder_decoder_knockout(marian, SOURCE, prefix=TARGET, sources={"cue": "sick"})
    assert ALL_ATTENTION_FUNCTIONS.get("eager") is None
    assert marian.original_model.config._attn_implementation == impl
    assert count_hooks(marian) == hooks
