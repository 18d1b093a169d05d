"""Attention knockout on every zoo family, against a reference that recomputes ``z`` by hand.

The reference (:func:`tests.reference.mixing.ref_knockout_by_z`) zeroes the blocked weights of
each recorded pattern, renormalises the rows and puts ``pattern @ v`` in at ``hook_z``: no
score, mask or attention-function edit, so it holds on the bridges that delegate to the Hugging
Face module (OPT, GPT-J) as well as on those that recompute attention. Float64 throughout.
"""

from __future__ import annotations

import pytest
import torch

import hooklab
from hooklab import zoo
from hooklab.mixing import attention_knockout
from hooklab.mixing.adapter import model_adapter
from hooklab.mixing.blocking import blocked_mask_argument
from tests.reference.mixing import ref_knockout_decoder_only, ref_knockout_encoder_decoder

PROMPT = "George was sick yesterday. His"
SOURCE, TARGET = "Mary was hungry at noon.", " Her friends"
# Measured misses: ~1e-18 on most families; up to 3e-10 where the bridge takes its softmax in
# float32 even in a float64 model (PositionEmbeddingsAttentionBridge: Llama, Mistral, Gemma...).
ATOL = 1e-8


def _load(tmp_path_factory, family):
    path = zoo.build(family, tmp_path_factory.mktemp(family))
    return hooklab.load(path, device="cpu", dtype=torch.float64)


@pytest.fixture(scope="module", params=zoo.DECODER_ONLY)
def decoder_only(request, tmp_path_factory):
    return request.param, _load(tmp_path_factory, request.param)


@pytest.fixture(scope="module", params=zoo.ENCODER_DECODER)
def encoder_decoder(request, tmp_path_factory):
    return _load(tmp_path_factory, request.param)


@pytest.fixture(scope="module")
def opt(tmp_path_factory):
    return _load(tmp_path_factory, "opt")


def _check_against_reference(out, reference, atol):
    """Every (source, window) probability equals ``reference(layers, keys)`` within ``atol``,
    and the knockouts move the probability by far more than they miss the reference (the tiny
    random models have small effects, down to 1e-8; float64 misses by ~1e-16)."""
    errors, effects = [], []
    for s, keys in enumerate(out.sources.values()):
        for w, layers in enumerate(out.windows):
            expected = reference(layers, keys)
            assert out.probabilities[s, w].item() == pytest.approx(expected, rel=0, abs=atol)
            errors.append(abs(out.probabilities[s, w].item() - expected))
            effects.append(abs(expected - out.base_probability))
    assert max(effects) > 100 * max(errors), (max(effects), max(errors))


def test_decoder_only_matches_reference(decoder_only):
    family, model = decoder_only
    # Checked per model: the plain AttentionBridge (OPT, GPT-J) runs the Hugging Face module,
    # whose mask argument is edited; every other bridge is blocked at hook_attn_scores.
    delegating = model_adapter(model).delegating_layers
    assert delegating == (frozenset({0, 1}) if family in ("opt", "gptj") else frozenset())
    (out,) = attention_knockout(
        model, PROMPT, sources={"cue": "sick", "first": [0, 1]}, window=1, batch_size=3
    )
    ids = out.token_ids.tolist()

    def reference(layers, keys):
        return ref_knockout_decoder_only(model, ids, layers, out.queries, keys, out.target_id)

    _check_against_reference(out, reference, ATOL)


@pytest.mark.parametrize("part", ["cross", "decoder", "encoder"])
def test_encoder_decoder_matches_reference(encoder_decoder, part):
    model = encoder_decoder
    sources = {"first": [1], "two": [0, 2]}
    (out,) = attention_knockout(model, SOURCE, targets=TARGET, part=part, sources=sources, window=1)
    src = model.tokenizer(SOURCE)["input_ids"]
    start = model.original_model.config.decoder_start_token_id
    tgt = [start, *model.tokenizer(TARGET, add_special_tokens=False)["input_ids"]]
    assert out.token_ids.tolist() == (src if part == "encoder" else tgt)

    def reference(layers, keys):
        return ref_knockout_encoder_decoder(
            model, src, tgt, part, layers, out.queries, keys, out.target_id
        )

    _check_against_reference(out, reference, ATOL)


def test_window_none_and_sweep_on_a_delegating_bridge(opt):
    sources = {"cue": "sick", "last": -1}
    (whole,) = attention_knockout(opt, PROMPT, sources=sources, window=None)
    (sweep,) = attention_knockout(opt, PROMPT, sources=sources, window=2, layers=[0, 1])
    assert whole.windows == ((0, 1),) and sweep.windows == ((0,), (0, 1))
    # the same knockout, batched with other rows: equal up to rounding
    torch.testing.assert_close(sweep.probabilities[:, 1], whole.probabilities[:, 0])
    for out in (whole, sweep):
        ids = out.token_ids.tolist()

        def reference(layers, keys, out=out, ids=ids):
            return ref_knockout_decoder_only(opt, ids, layers, out.queries, keys, out.target_id)

        _check_against_reference(out, reference, ATOL)
    modules = [opt.blocks[la].attn.original_component for la in range(2)]
    assert not any(m._forward_pre_hooks for m in modules)  # the mask edits are gone


def test_mask_edit_raises_without_a_mask_and_is_removed(opt):
    module = opt.blocks[0].attn.original_component
    blocked = torch.ones(1, 2, 2, dtype=torch.bool)
    no_mask = pytest.raises(RuntimeError, match="attention_mask=None, not a 4-d")
    with no_mask, blocked_mask_argument({module: blocked}):
        module(torch.zeros(1, 2, 64, dtype=torch.float64))
    assert not module._forward_pre_hooks
