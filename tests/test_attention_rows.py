"""The attention method keeps only the attributed steps' query rows (issue 23's memory rule):
the rows it keeps equal the same rows of the full patterns, exactly (a padded float64 batch)."""

from __future__ import annotations

import pytest
import torch

import hooklab
from hooklab.encoding import encode
from hooklab.forward import step_logits
from hooklab.hooks import count_hooks, hook_name, recorder, temporary_hooks
from hooklab.inputs import make_batch, pad_token_id
from hooklab.methods.attention import attention


@pytest.fixture(scope="module", params=["gpt2_dir", "llama_dir"])
def model64(request):
    return hooklab.load(request.getfixturevalue(request.param), device="cpu", dtype="float64")


def test_kept_rows_equal_the_full_patterns(model64):
    prompts = ["George was sick yesterday.", "It rained"]
    targets = [" His colleagues asked", " all morning. She took"]
    enc = encode(model64, prompts, targets)
    batch = make_batch(enc.prefixes, enc.steps, pad_id=pad_token_id(model64))
    got = attention(model64, batch, attributed_fn=None, heads=[1, 3]).attributions
    names = [hook_name("pattern", la) for la in range(model64.cfg.n_layers)]
    hooks, cache = recorder(names)
    with temporary_hooks(model64, hooks):
        step_logits(model64, batch)
    full = torch.stack([cache[n][:, [1, 3]] for n in names], dim=1)  # [b, layer, head, q, k]
    for i in range(batch.size):
        rows = full[i][:, :, batch.target_rows[i]]  # [layer, head, step, key_pos]
        assert torch.equal(got[i].permute(2, 3, 0, 1), rows)


def test_pass_stopped_early_keeps_the_selected_layers_rows(model64):
    """The pass stops at the last selected layer's pattern hook: the rows of a layer subset
    (kept in layer order) equal those of all layers, and the model is left with no hook and gives
    the same logits as before."""
    enc = encode(model64, ["George was sick yesterday.", "It rained"], [" His", " all day"])
    batch = make_batch(enc.prefixes, enc.steps, pad_id=pad_token_id(model64))
    before = step_logits(model64, batch)
    every = attention(model64, batch, attributed_fn=None).attributions
    for layers in ([0], [1], [1, 0]):
        got = attention(model64, batch, attributed_fn=None, layers=layers).attributions
        assert torch.equal(got, every[..., sorted(layers), :])
    assert count_hooks(model64) == 0
    assert torch.equal(step_logits(model64, batch), before)


def test_stored_patterns_are_released_layer_by_layer(model64):
    """TransformerLens's joint-QKV attention (GPT-2) stores its last full pattern
    (``_pattern``); in hooklab's passes each one is dropped once its layer has run, and none is
    left after, so a pass without gradients holds one layer's pattern at a time (hooks.py)."""
    from hooklab.hooks import pattern_holders

    holders = [module for _, module in pattern_holders(model64)]
    enc = encode(model64, ["George was sick yesterday."], [" His colleagues asked"])
    batch = make_batch(enc.prefixes, enc.steps, pad_id=pad_token_id(model64))
    last = model64.cfg.n_layers - 1
    stored = []

    def look(x, hook):  # at the last layer's pattern: what do the layers still hold?
        stored.append([m._pattern is not None for m in holders])

    # without hooklab's context, the component keeps every layer's pattern (the reason)
    model64.run_with_hooks(batch.tokens, fwd_hooks=[(hook_name("pattern", last), look)])
    if not any(m._pattern is not None for m in holders):
        pytest.skip("this family's attention component stores no pattern")
    assert len(holders) == model64.cfg.n_layers
    assert stored.pop() == [True] * last + [False]  # the last one is stored after its hook
    attention(model64, batch, attributed_fn=None)  # the method's own hooked pass
    assert all(m._pattern is None for m in holders)
    with temporary_hooks(model64, [(hook_name("pattern", last), look)]):
        step_logits(model64, batch)
    assert stored == [[False] * model64.cfg.n_layers]
    assert all(m._pattern is None for m in holders)


@pytest.mark.parametrize("fast_path", [True, False])
def test_value_zeroing_rows_equal_the_full_matrices(model64, fast_path):
    """The value-zeroing attribution method computes only its steps' query rows (the fast
    path recomputes only their (query, key) pairs); in float64 they equal the same rows of
    the full mixing matrices to 1e-10, on a padded batch."""
    from hooklab.architecture import n_kv_heads
    from hooklab.methods.value_zeroing import value_zeroing as vz_method
    from hooklab.mixing.value_zeroing import mixing_matrices, select_heads

    prompts = ["George was sick yesterday.", "It rained"]
    targets = [" His colleagues asked", " all morning. She took"]
    enc = encode(model64, prompts, targets)
    batch = make_batch(enc.prefixes, enc.steps, pad_id=pad_token_id(model64))
    layers = list(range(model64.cfg.n_layers))
    got = vz_method(model64, batch, attributed_fn=None, fast_path=fast_path).attributions
    heads = select_heads(None, layers, n_kv_heads(model64))
    for i in range(batch.size):
        ids = batch.sequence(i).tolist()
        full = mixing_matrices(model64, ids, layers=layers, heads=heads, fast_path=fast_path)
        start, steps = batch.prompt_lengths[i], batch.target_lengths[i]
        real = batch.real_positions(i).cpu()
        for t in range(steps):
            expected = full[:, start - 1 + t].T  # [key_pos, layer]
            assert torch.allclose(got[i, t, real], expected, atol=1e-10, rtol=0)


@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_chunked_queries_equal_one_pass(model64, chunk):
    """With ``query_chunk`` below the width, queries run in chunks over the KV cache: the kept
    rows equal the one-pass rows (float64, padded batch, a layer and head subset too)."""
    prompts = ["George was sick yesterday.", "It rained"]
    targets = [" His colleagues asked", " all morning. She took"]
    enc = encode(model64, prompts, targets)
    batch = make_batch(enc.prefixes, enc.steps, pad_id=pad_token_id(model64))
    for kw in ({}, {"layers": [0], "heads": [1, 3]}):
        full = attention(model64, batch, attributed_fn=None, **kw).attributions
        got = attention(model64, batch, attributed_fn=None, query_chunk=chunk, **kw).attributions
        assert torch.allclose(got, full, atol=1e-10, rtol=0)
    assert count_hooks(model64) == 0
