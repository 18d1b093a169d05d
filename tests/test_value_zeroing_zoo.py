"""Value zeroing on every family of the model zoo, against references that share no mixing code.

Decoder-only: :func:`~tests.reference.mixing.value_zeroing_by_pattern` (one forward per key,
the key's attention column zeroed at ``hook_pattern``; on OPT and GPT-J, whose bridges drop
pattern edits, ``ref_value_zeroing``: one forward per key, its values zeroed). Encoder–decoder,
each part: :func:`~tests.reference.mixing.value_zeroing_seq2seq_by_forward` (one forward per
key, its values zeroed at ``hook_v``). Float32, unnormalised distances, atol 1e-5; the same
matrices for any ``max_batch_tokens``; the fast path equal to the general one where it applies.
"""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

import hooklab
from hooklab.architecture import n_kv_heads
from hooklab.hooks import hook_name, recorder, temporary_hooks
from hooklab.mixing import value_zeroing
from hooklab.mixing.adapter import DecoderOnly, Example
from hooklab.mixing.value_zeroing import metric_fn, mixing_matrices, part_matrices, select_heads
from hooklab.mixing.value_zeroing_fast import analytic_matrices
from hooklab.zoo import DECODER_ONLY, ENCODER_DECODER, TEXTS, build
from tests.reference.mixing import (
    ref_value_zeroing,
    value_zeroing_by_pattern,
    value_zeroing_seq2seq_by_forward,
)

TOL = {"atol": 1e-5, "rtol": 0}
SAME = {"atol": 1e-6, "rtol": 0}  # one algorithm, other batch sizes or the fast path
LAYERS = [0, 1]
HEADS = {1: [0]}  # layer 0: all key/value heads; layer 1: a subset
BUDGETS = (1, 11, 100_000)  # one key per call, a few, all at once
#: Families whose blocks the fast path proves to be pre-norm, attention then MLP.
FAST = {
    "gpt2", "llama", "mistral", "qwen2", "qwen3", "gemma", "phi3", "gpt_bigcode", "starcoder2",
    "stablelm",
}  # fmt: skip
#: Families whose bridge runs attention inside the Hugging Face module (pattern edits dropped).
PATTERN_DISCARDED = {"opt", "gptj"}


@pytest.fixture(scope="module", params=DECODER_ONLY)
def decoder(request, tmp_path_factory):
    path = build(request.param, tmp_path_factory.mktemp(request.param))
    model = hooklab.load(path, device="cpu")
    return request.param, model, hooklab.encode_prompt(model, TEXTS[0])[:8]


@pytest.fixture(scope="module", params=ENCODER_DECODER)
def seq2seq(request, tmp_path_factory):
    path = build(request.param, tmp_path_factory.mktemp(request.param))
    return hooklab.load(path, device="cpu")


def _heads(model):
    return select_heads(HEADS, LAYERS, n_kv_heads(model))


def _reference(name, model, ids, layer):
    """The pattern-edit reference, or, where the bridge discards pattern edits (it says so,
    and the reference checks it), the one-forward-per-key ``hook_v`` reference."""
    heads = HEADS.get(layer)
    if name not in PATTERN_DISCARDED:
        return value_zeroing_by_pattern(model, ids, layer, heads=heads)
    discarded = pytest.warns(UserWarning, match="The edit is discarded")
    with discarded, pytest.raises(RuntimeError, match="did not take effect"):
        value_zeroing_by_pattern(model, ids, layer, heads=heads)
    return ref_value_zeroing(model, ids, layer, heads=heads, normalize=False)


def test_resid_post_is_the_block_output(decoder):
    _, model, ids = decoder
    assert model.hook_dict[hook_name("resid_post", 0)] is model.hook_dict["blocks.0.hook_out"]
    hooks, seen = recorder([hook_name("resid_post", 0), hook_name("resid_pre", 1)])
    with temporary_hooks(model, hooks):
        model(torch.tensor([ids]), prepend_bos=False)
    assert torch.equal(seen[hook_name("resid_post", 0)], seen[hook_name("resid_pre", 1)])


def test_decoder_only_matches_reference(decoder):
    name, model, ids = decoder
    heads = _heads(model)
    got = mixing_matrices(model, ids, layers=LAYERS, heads=heads, normalize=False, fast_path=False)
    for row, layer in enumerate(LAYERS):
        expected = _reference(name, model, ids, layer)
        assert_close(got[row], expected, **TOL, msg=lambda m, la=layer: f"{name} layer {la}: {m}")
    assert got.max() > 1e-4  # something was zeroed
    for budget in BUDGETS:
        again = mixing_matrices(
            model, ids, layers=LAYERS, heads=heads, normalize=False, max_batch_tokens=budget,
            fast_path=False,
        )  # fmt: skip
        assert_close(again, got, **SAME)


def test_fast_path_equals_general_path(decoder):
    name, model, ids = decoder
    heads = _heads(model)
    fast = analytic_matrices(model, ids, heads, metric_fn("cosine"), 2048)
    assert (fast is not None) == (name in FAST)
    options = {"layers": LAYERS, "heads": heads, "normalize": False}
    general = mixing_matrices(model, ids, **options, fast_path=False)
    assert_close(mixing_matrices(model, ids, **options), general, **SAME)


@pytest.mark.parametrize("fast_path", [True, False])
def test_query_rows_equal_the_full_rows(decoder, fast_path):
    """``rows=`` (what the attribution method asks for: its steps' query rows) gives exactly
    those rows of the full matrices, on both paths, in the order asked."""
    _, model, ids = decoder
    heads = _heads(model)
    kw = {"metric": "cosine", "normalize": True, "fast_path": fast_path}
    full = part_matrices(DecoderOnly(model), Example(tuple(ids)), heads, **kw)
    rows = [len(ids) - 1, 2, 5]
    got = part_matrices(DecoderOnly(model), Example(tuple(ids)), heads, rows=rows, **kw)
    assert got.shape == (len(LAYERS), len(rows), len(ids))
    assert_close(got, full[:, rows], atol=1e-6, rtol=0)


def test_encoder_decoder_parts_match_reference(seq2seq):
    source, target = TEXTS[0][:24], " His colleagues"
    outs = {
        part: value_zeroing(
            seq2seq, source, targets=target, part=part, layers=LAYERS, heads=HEADS,
            normalize=False,
        )[0]
        for part in ("encoder", "decoder", "cross")
    }  # fmt: skip
    src, tgt = outs["cross"].key_token_ids.tolist(), outs["cross"].token_ids.tolist()
    for part, out in outs.items():
        for row, layer in enumerate(LAYERS):
            expected = value_zeroing_seq2seq_by_forward(
                seq2seq, src, tgt, part, layer, heads=HEADS.get(layer)
            )
            assert_close(out.scores[row], expected, **TOL)
            # some parts' distances are ~1e-5 on these random models: relative to the largest
            # too (float32 cosine distances of near-equal vectors carry ~1e-5 relative noise)
            scale = expected.abs().max()
            assert_close(out.scores[row] / scale, expected / scale, atol=1e-4, rtol=0)
        for budget in BUDGETS:
            (again,) = value_zeroing(
                seq2seq, source, targets=target, part=part, layers=LAYERS, heads=HEADS,
                normalize=False, max_batch_tokens=budget,
            )  # fmt: skip
            assert_close(again.scores, out.scores, **SAME)
