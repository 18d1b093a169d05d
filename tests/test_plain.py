"""The plain twin never changes a number, on every decoder-only family of the zoo.

On each family (:mod:`hooklab.zoo`), :func:`~hooklab.forward.forward`, :func:`step_logits` and
greedy :func:`hooklab.generate` equal the bridge's path exactly (``torch.equal``): normally,
after one MLP weight is replaced by a new ``nn.Parameter`` (the stale twin of issue 19), after a
round trip to float64, with a user hook attached (``model.hooks``, ``temporary_hooks``, a raw
PyTorch hook), and under the switch (:func:`hooklab.no_twin`, ``HOOKLAB_NO_TWIN``). Where the
probe rejects the twin on a family, the bridge runs and the equalities hold all the same.
Gradient passes run on the fused twin (SDPA), within the self-check tolerance of the bridge.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

import hooklab
from hooklab import plain, zoo
from hooklab.forward import bridge_forward, forward, step_logits, twin
from hooklab.generation import generate
from hooklab.hooks import count_hooks, hook_name, temporary_hooks
from hooklab.inputs import make_batch, pad_token_id
from hooklab.selfcheck import tolerance

PROMPTS = ["George was sick yesterday. His", "It rained"]


@pytest.fixture(scope="module", params=zoo.DECODER_ONLY)
def model(request, tmp_path_factory):
    path = zoo.build(request.param, tmp_path_factory.mktemp(request.param))
    return hooklab.load(path, device="cpu")


def _batch(model):
    """Left-padded prompts with a two-token target each."""
    ids = [hooklab.encode_prompt(model, p) for p in PROMPTS]
    targets = [hooklab.encode_target(model, " to the") for _ in ids]
    return make_batch(ids, targets, pad_id=pad_token_id(model), device="cpu")


def _logits(model):
    """(forward's logits at real positions, step logits, greedy tokens and their logits)."""
    batch = _batch(model)
    with torch.no_grad():
        full = forward(model, batch)[batch.attention_mask.bool()]
        steps = step_logits(model, batch)
    out = generate(model, PROMPTS, max_new_tokens=2, stop_at_eos=False, keep_logits=True)
    return full, steps, out.output_ids, out.step_logits


def _equal(a, b) -> bool:
    """Equal bit for bit, NaN where the other is NaN (OPT's bridge gives NaN logits on padded
    float64 batches: its attention discards the padding guard's edit)."""
    nan = a.isnan()
    return torch.equal(nan, b.isnan()) and torch.equal(a[~nan], b[~nan])


def _assert_same(fast, slow):
    assert fast[2] == slow[2]  # generated tokens
    for a, b in zip([*fast[:2], *fast[3]], [*slow[:2], *slow[3]], strict=True):
        assert _equal(a, b)


def _assert_twin_path_is_bridge_path(model):
    """Everything the twin may serve equals the bridge: ``forward`` against ``bridge_forward``
    directly, and all of it against the same calls under :func:`hooklab.no_twin`."""
    batch = _batch(model)
    real = batch.attention_mask.bool()
    with torch.no_grad():
        assert _equal(forward(model, batch)[real], bridge_forward(model, batch)[real])
    fast = _logits(model)
    with hooklab.no_twin():
        slow = _logits(model)
    _assert_same(fast, slow)
    return fast


def _mlp_weight(model) -> tuple[nn.Module, str, nn.Parameter]:
    """The last MLP matrix of the Hugging Face model (an output projection), one the twin
    shares if there is a twin: (its module, name, parameter). Phi-3's bridge runs split views
    of the fused gate/up matrix: a new fused matrix reaches only the twin (the probe then keeps
    the bridge), a new view only the bridge (the same)."""
    hf = model.original_model
    with torch.no_grad():
        module = twin(model)
    shared = {id(p) for p in module.parameters()} if module is not None else None
    name = [
        n
        for n, p in hf.named_parameters()
        if p.ndim == 2 and ("mlp" in n or ".fc" in n) and (shared is None or id(p) in shared)
    ][-1]
    path, _, leaf = name.rpartition(".")
    module = hf.get_submodule(path)
    return module, leaf, getattr(module, leaf)


def _has_twin(model) -> bool:
    with torch.no_grad():
        return twin(model) is not None


def test_twin_equals_bridge(model):
    attached = count_hooks(model)  # some bridges (OPT) attach hooks of their own when loaded
    _assert_twin_path_is_bridge_path(model)
    if _has_twin(model):  # built once: the key does not change from one pass to the next
        entry = getattr(model, plain._ATTRIBUTE)
        _logits(model)
        assert getattr(model, plain._ATTRIBUTE) is entry
    assert count_hooks(model) == attached


def test_a_replaced_weight_rebuilds_the_twin(model):
    """Issue 19: a new ``nn.Parameter`` in place of one MLP weight (weight ablation,
    ``load_state_dict(assign=True)``, adapter merges) reaches the twin's logits too."""
    had_twin = _has_twin(model)
    before = _logits(model)
    module, leaf, weight = _mlp_weight(model)
    noise = torch.randn(weight.shape, generator=torch.Generator().manual_seed(0))
    setattr(module, leaf, nn.Parameter(weight.detach() + 0.5 * noise))
    try:
        after = _assert_twin_path_is_bridge_path(model)
        assert not torch.equal(before[0], after[0])  # the replacement matters
        assert _has_twin(model) == had_twin  # rebuilt, not dropped
    finally:
        setattr(module, leaf, weight)
    _assert_same(_logits(model), before)


def test_a_dtype_round_trip_rebuilds_the_twin(model):
    before = _logits(model)
    model.to(torch.float64)
    try:
        _assert_twin_path_is_bridge_path(model)
    finally:
        model.to(torch.float32)
    _assert_same(_assert_twin_path_is_bridge_path(model), before)


def _scale(x, hook):
    return x * 1.5


@pytest.mark.parametrize("how", ["model.hooks", "temporary_hooks", "register_forward_hook"])
def test_user_hooks_send_every_pass_to_the_bridge(model, how):
    clean, before = _logits(model), count_hooks(model)
    module, _, _ = _mlp_weight(model)
    hooks = [(hook_name("resid_post", 0), _scale)]
    attached = {
        "model.hooks": lambda: model.hooks(fwd_hooks=hooks),
        "temporary_hooks": lambda: temporary_hooks(model, hooks),
        "register_forward_hook": lambda: _raw_hook(module),
    }[how]
    with attached():
        assert not _has_twin(model)
        hooked = _assert_twin_path_is_bridge_path(model)
    assert not torch.equal(clean[0], hooked[0])  # the hook was live
    assert count_hooks(model) == before


@contextlib.contextmanager
def _raw_hook(module: nn.Module):
    handle = module.register_forward_hook(lambda mod, args, out: out * 1.5)
    try:
        yield
    finally:
        handle.remove()


def test_the_switch_turns_the_twin_off(model, monkeypatch):
    had_twin = _has_twin(model)
    with hooklab.no_twin():
        assert not _has_twin(model)
        _assert_twin_path_is_bridge_path(model)
    assert _has_twin(model) == had_twin  # restored on exit
    monkeypatch.setenv("HOOKLAB_NO_TWIN", "1")
    assert not _has_twin(model)
    _assert_twin_path_is_bridge_path(model)
    monkeypatch.setenv("HOOKLAB_NO_TWIN", "0")
    assert _has_twin(model) == had_twin


def test_no_twin_restores_after_an_exception(toy):
    with pytest.raises(KeyError), hooklab.no_twin():
        raise KeyError("boom")
    assert _has_twin(toy)


#: Families whose given-embeddings passes run on the fused twin (SDPA); on the others its probe
#: rejects it or Hugging Face has no SDPA for them, and the bit-exact twin or the bridge runs.
FUSED_TWIN = {
    "gpt2", "gpt_neox", "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma3_text", "phi",
    "phi3", "olmo2", "gpt_bigcode", "starcoder2", "stablelm",
}  # fmt: skip


@pytest.mark.parametrize("method", ["saliency", "occlusion"])
def test_fused_twin_within_tolerance_of_the_bridge(model, method):
    """Passes with given token embeddings (saliency's gradient pass, occlusion's perturbed
    passes) run on the fused twin where listed and give the bridge's attributions within the
    self-check tolerance (measured: at most 7e-7 of the largest saliency score across the
    zoo); the switch sends them to the bridge."""
    targets = [" to the"] * len(PROMPTS)
    fast = hooklab.attribute(model, PROMPTS, targets, method=method)
    entry = getattr(model, "_hooklab_fused_twin", None)
    took = entry is not None and entry.module is not None
    assert took == (model.original_model.config.model_type in FUSED_TWIN)
    with hooklab.no_twin():
        slow = hooklab.attribute(model, PROMPTS, targets, method=method)
    for f, s in zip(fast.sequences, slow.sequences, strict=True):
        x, y = f.attributions, s.attributions
        assert torch.equal(x.isnan(), y.isnan())
        assert float((x - y).nan_to_num().abs().max()) <= tolerance(y.nan_to_num())
