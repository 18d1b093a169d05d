"""Hook-free forwards on the plain Hugging Face twin equal the bridge's, bit for bit.

See :mod:`hooklab.plain` (and ``tests/test_plain.py`` for every zoo family). Every comparison
here is exact (``torch.equal``): the twin is only worth having if nothing downstream can tell
it from the bridge.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from transformers import AutoModelForCausalLM

import hooklab
from hooklab import plain
from hooklab.forward import (
    _finite_scores,
    _probe,
    bridge_forward,
    forward,
    padding_guard_hooks,
    step_logits,
    token_embeddings,
    twin,
)
from hooklab.generation import generate
from hooklab.hooks import count_hooks, hook_name, temporary_hooks
from hooklab.inputs import make_batch, pad_token_id
from hooklab.selfcheck import tolerance

PROMPTS = ["George was sick yesterday. His", "It rained", "Mary was hungry at noon. Her friends"]


@pytest.fixture(scope="module", params=["gpt2", "llama", "toy"])
def model(request):
    """The tiny GPT-2 (non-zero biases), the tiny Llama (grouped KV heads) and the toy model."""
    return request.getfixturevalue(request.param)


@contextlib.contextmanager
def bridge_only(model):
    """Within the block a (no-op) user hook is attached, so nothing runs on the twin."""
    handle = model.original_model.register_forward_pre_hook(lambda module, args: None)
    try:
        yield
    finally:
        handle.remove()


def _batch(model, padded: bool):
    ids = [hooklab.encode_prompt(model, p) for p in (PROMPTS if padded else PROMPTS[:1])]
    targets = [hooklab.encode_target(model, " to the hospital") for _ in ids]
    return make_batch(ids, targets, pad_id=pad_token_id(model), device="cpu")


@pytest.mark.parametrize("padded", [False, True])
def test_forward_on_twin_equals_bridge(model, padded):
    batch = _batch(model, padded)
    with torch.no_grad():
        assert twin(model) is not None  # the fast path is really taken
        fast = forward(model, batch)
        slow = bridge_forward(model, batch)
    real = batch.attention_mask.bool()
    assert torch.equal(fast[real], slow[real])
    assert count_hooks(model) == 0


@pytest.mark.parametrize("padded", [False, True])
def test_step_logits_on_twin_equal_bridge(model, padded):
    batch = _batch(model, padded)
    with torch.no_grad():
        fast = step_logits(model, batch)
        with bridge_only(model):
            assert twin(model) is None
            slow = step_logits(model, batch)
    assert torch.equal(fast, slow)


@pytest.mark.parametrize("padded", [False, True])
def test_given_embeddings_on_twin_equal_bridge(model, padded):
    """Passes with replaced token embeddings (occlusion, faithfulness under no_grad; saliency
    & co. with gradients) run on the fused twin (SDPA), within the self-check tolerance of the
    bridge, and on the bridge under the switch; the bit-exact twin's embeddings probe still
    holds (it serves the families the fused twin does not)."""
    batch = _batch(model, padded)
    embeds = token_embeddings(model, batch).flip(1) * 0.7  # not the model's own embeddings
    with torch.no_grad():
        fused = twin(model, embeds=True)
        assert fused is not None and fused is not twin(model)  # the fused twin
        fast = step_logits(model, batch, embeds)
        with bridge_only(model):
            slow = step_logits(model, batch, embeds)
        assert plain.twin(model, _probe, embeds=True) is not None  # bit-exact there too
    assert float((fast - slow).abs().max()) <= tolerance(slow)
    leaf = embeds.clone().requires_grad_(True)
    assert twin(model, embeds=True) is fused
    got = step_logits(model, batch, leaf)
    assert float((got.detach() - slow).abs().max()) <= tolerance(slow)
    (grad,) = torch.autograd.grad(got.sum(), leaf)
    with bridge_only(model):
        assert twin(model, embeds=True) is None
        bridge = step_logits(model, batch, leaf)
        assert torch.equal(bridge.detach(), slow)
        (expected,) = torch.autograd.grad(bridge.sum(), leaf)
    assert float((grad - expected).abs().max()) <= tolerance(expected)


def test_generation_on_twin_equals_bridge(model):
    kw = dict(max_new_tokens=6, stop_at_eos=False, keep_logits=True)
    fast = generate(model, PROMPTS, **kw)
    with bridge_only(model):
        slow = generate(model, PROMPTS, **kw)
    assert fast.output_ids == slow.output_ids
    for a, b in zip(fast.step_logits, slow.step_logits, strict=True):
        assert torch.equal(a, b)


def test_generation_equals_hugging_face_generate(model):
    path = model.original_model.config.name_or_path
    hf = AutoModelForCausalLM.from_pretrained(path).eval()
    eos = model.tokenizer.eos_token_id
    for prompt in PROMPTS:
        ours = generate(model, prompt, max_new_tokens=8).output_ids[0]
        ids = torch.tensor([hooklab.encode_prompt(model, prompt)])
        with torch.no_grad():
            theirs = hf.generate(
                ids, max_new_tokens=8, do_sample=False, pad_token_id=eos, eos_token_id=eos
            )[0, ids.shape[1] :].tolist()
        if eos in theirs:
            theirs = theirs[: theirs.index(eos)]
        assert ours == theirs


def _guarded_forward(model, batch):
    """The bridge's logits with the padding guard attached to every layer."""
    guard = [
        (hook_name("attn_scores", layer), _finite_scores) for layer in range(model.cfg.n_layers)
    ]
    with torch.no_grad(), temporary_hooks(model, guard):
        return bridge_forward(model, batch)


@pytest.mark.parametrize("padded", [False, True])
def test_padding_guard_is_not_needed_in_float32(model, padded):
    """In float32 the guard would return every score unchanged, so it is not attached."""
    batch = _batch(model, padded)
    assert padding_guard_hooks(model, batch) == []
    guarded = _guarded_forward(model, batch)
    with torch.no_grad():
        assert torch.equal(guarded, bridge_forward(model, batch))


@pytest.mark.parametrize("directory", ["gpt2_dir", "llama_dir"])
def test_padding_guard_is_not_needed_in_bfloat16(directory, request):
    model = hooklab.load(request.getfixturevalue(directory), device="cpu", dtype="bfloat16")
    batch = _batch(model, True)
    assert padding_guard_hooks(model, batch) == []
    guarded = _guarded_forward(model, batch)
    with torch.no_grad():
        assert torch.equal(guarded, bridge_forward(model, batch))
        assert torch.equal(forward(model, batch)[batch.attention_mask.bool()],
                           guarded[batch.attention_mask.bool()])  # fmt: skip


def test_guard_kept_in_float64(gpt2_dir):
    model = hooklab.load(gpt2_dir, device="cpu", dtype="float64")
    batch = _batch(model, True)
    assert len(padding_guard_hooks(model, batch)) == model.cfg.n_layers
    with torch.no_grad():
        assert torch.equal(forward(model, batch)[batch.attention_mask.bool()],
                           bridge_forward(model, batch)[batch.attention_mask.bool()])  # fmt: skip


def test_logits_to_keep_on_twin(model):
    batch = _batch(model, True)
    keep = torch.arange(batch.tokens.shape[1] - 3, batch.tokens.shape[1])
    with torch.no_grad():
        fast = forward(model, batch, logits_to_keep=keep)
        slow = bridge_forward(model, batch, logits_to_keep=keep)
    assert torch.equal(fast, slow)


def test_hook_on_a_hook_point_sends_forwards_to_the_bridge(toy):
    batch = _batch(toy, False)
    with torch.no_grad():
        clean = forward(toy, batch)
        point = toy.hook_dict[hook_name("embed")]
        point.add_hook(lambda x, hook: x * 0)
        try:
            assert twin(toy) is None
            hooked = forward(toy, batch)
        finally:
            point.remove_hooks("fwd")
        assert twin(toy) is not None
        again = forward(toy, batch)
    assert not torch.equal(clean, hooked)
    assert torch.equal(clean, again)


def test_no_twin_with_gradients_or_in_training_mode(toy):
    assert twin(toy) is None  # gradients are enabled here
    with torch.no_grad():
        toy.train()
        try:
            assert twin(toy) is None
        finally:
            toy.eval()
        assert twin(toy) is not None


def test_no_twin_in_compatibility_mode(gpt2_dir):
    model = hooklab.load(gpt2_dir, device="cpu", compatibility_mode=True)
    batch = _batch(model, True)
    with torch.no_grad():
        assert twin(model) is None
        out = forward(model, batch)
        assert torch.equal(out, bridge_forward(model, batch))


def test_twin_shares_the_bridge_tensors(toy):
    with torch.no_grad():
        module = twin(toy)
    theirs = {p.data_ptr() for p in toy.original_model.parameters()}
    assert {p.data_ptr() for p in module.parameters()} <= theirs


def test_twin_follows_an_in_place_weight_edit(gpt2_dir):
    model = hooklab.load(gpt2_dir, device="cpu")
    batch = _batch(model, True)
    real = batch.attention_mask.bool()
    with torch.no_grad():
        forward(model, batch)  # builds the twin
        model.original_model.lm_head.weight.mul_(0.5)
        assert torch.equal(forward(model, batch)[real], bridge_forward(model, batch)[real])


def test_an_architecture_the_twin_does_not_fit_runs_on_the_bridge(gpt2_dir, monkeypatch):
    def unfit(model):
        raise TypeError("forward() got an unexpected keyword argument 'position_ids'")

    monkeypatch.setattr(plain, "_build", unfit)
    model = hooklab.load(gpt2_dir, device="cpu")
    batch = _batch(model, True)
    with torch.no_grad():
        assert twin(model) is None
        assert torch.equal(forward(model, batch), bridge_forward(model, batch))
    assert generate(model, PROMPTS[0], max_new_tokens=3).output_ids


def test_a_probe_difference_keeps_the_bridge(gpt2_dir, monkeypatch):
    monkeypatch.setattr("hooklab.forward._probe", lambda model, module, embeds: False)
    model = hooklab.load(gpt2_dir, device="cpu")
    with torch.no_grad():
        assert twin(model) is None
