"""Value zeroing against its one-forward-per-token reference, in float64, on both tiny models."""

from __future__ import annotations

import importlib

import pytest
import torch
from matplotlib.figure import Figure
from torch.testing import assert_close

import hooklab
from hooklab.hooks import count_hooks, hook_name, pattern_holders, recorder, temporary_hooks
from hooklab.mixing import MixingOutput, rollout_scores, value_zeroing
from tests.reference.mixing import ref_value_zeroing, ref_value_zeroing_per_token

PROMPT = "George was sick yesterday."
TARGET = " His colleagues asked him"
TOL = {"atol": 1e-5, "rtol": 1e-5}
vz_module = importlib.import_module("hooklab.mixing.value_zeroing")  # the package attribute
fast_module = importlib.import_module("hooklab.mixing.value_zeroing_fast")
# `hooklab.mixing.value_zeroing` is the function


@pytest.fixture(scope="module", params=["gpt2_dir", "llama_dir"])
def model64(request):
    return hooklab.load(request.getfixturevalue(request.param), device="cpu", dtype="float64")


def _ids(out: MixingOutput) -> list[int]:
    return out.token_ids.tolist()


@pytest.mark.parametrize("fast_path", [True, False])
@pytest.mark.parametrize(("metric", "normalize"), [("cosine", True), ("euclidean", False)])
def test_matches_reference(model64, metric, normalize, fast_path):
    options = {"metric": metric, "normalize": normalize, "fast_path": fast_path}
    (out,) = value_zeroing(model64, PROMPT, targets=TARGET, **options)
    assert out.layers == (0, 1)
    for row, layer in enumerate(out.layers):
        expected = ref_value_zeroing(model64, _ids(out), layer, metric=metric, normalize=normalize)
        assert_close(out.scores[row], expected, **TOL)
    assert torch.all(out.scores.triu(1) == 0)  # causal: no token mixes in later ones


def test_rows_sum_to_one_and_rollout(model64):
    outs = value_zeroing(model64, [PROMPT, "It rained"], targets=[TARGET, ""], rollout=True)
    for out in outs:
        assert_close(out.scores.sum(-1), torch.ones(2, len(out.tokens), dtype=out.scores.dtype))
        assert_close(out.rollout[0], out.scores[0])
        assert_close(out.rollout[1], out.scores[1] @ out.scores[0])
        assert_close(out.rollout.sum(-1), torch.ones_like(out.rollout.sum(-1)))
    assert outs[1].target_start == len(outs[1].tokens)  # "" adds no target


def test_equals_inseq_style_reference(model64):
    (out,) = value_zeroing(model64, PROMPT, targets=TARGET)
    expected = ref_value_zeroing_per_token(model64, _ids(out), [0, 1])
    assert_close(out.scores, expected, **TOL)


@pytest.mark.parametrize("heads", [1, [0], {0: [1], 1: range(0, 1)}])
def test_head_selection_changes_exactly_the_selected_heads(model64, heads):
    (out,) = value_zeroing(model64, PROMPT, targets=TARGET, heads=heads)
    (full,) = value_zeroing(model64, PROMPT, targets=TARGET)
    for row, layer in enumerate(out.layers):
        chosen = heads.get(layer, None) if isinstance(heads, dict) else heads
        chosen = [chosen] if isinstance(chosen, int) else list(chosen)
        expected = ref_value_zeroing(model64, _ids(out), layer, heads=chosen)
        assert_close(out.scores[row], expected, **TOL)
        assert not torch.allclose(out.scores[row], full.scores[row])


def test_hook_v_holds_true_values_with_bias(model64):
    hooks, kept = recorder([hook_name("v", 0)])
    ids = hooklab.encode_prompt(model64, PROMPT)
    with temporary_hooks(model64, hooks):
        out = model64.original_model(torch.tensor([ids]), output_hidden_states=True)
    x = out.hidden_states[0][0]
    hf = model64.original_model
    if hasattr(hf, "transformer"):  # GPT-2: c_attn packs q, k, v; ln_1 first
        block = hf.transformer.h[0]
        qkv = block.attn.c_attn
        d = x.shape[-1]
        v = block.ln_1(x) @ qkv.weight[:, 2 * d :] + qkv.bias[2 * d :]
    else:
        layer = hf.model.layers[0]
        v = layer.self_attn.v_proj(layer.input_layernorm(x))
    assert_close(kept[hook_name("v", 0)][0].flatten(1), v, atol=1e-10, rtol=1e-10)


def test_float32_self_checks_pass_and_agree(model64, gpt2_dir, llama_dir):
    # (A float32 reference is itself too imprecise: 1 - cos cancels near 0.)
    (exact,) = value_zeroing(model64, PROMPT, targets=TARGET)
    name = model64.original_model.config.model_type
    model = hooklab.load(gpt2_dir if name == "gpt2" else llama_dir, device="cpu")
    (out,) = value_zeroing(model, PROMPT, targets=TARGET)
    assert out.scores.dtype == torch.float32
    assert_close(out.scores.double(), exact.scores, atol=1e-4, rtol=1e-3)


def test_generated_target_and_layer_selection(gpt2):
    (out,) = value_zeroing(gpt2, PROMPT, layers=-1, generation_kwargs={"max_new_tokens": 3})
    n_prompt = len(hooklab.encode_prompt(gpt2, PROMPT))
    assert out.layers == (1,)
    assert out.target_start == n_prompt
    assert n_prompt < len(out.tokens) <= n_prompt + 3


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_model_unchanged_and_hooks_removed(gpt2, monkeypatch):
    before, hooks = _weights(gpt2), count_hooks(gpt2)
    value_zeroing(gpt2, PROMPT, targets=TARGET, heads={1: 0})
    assert count_hooks(gpt2) == hooks

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    # Fail inside the method, after the hooked forward pass...
    monkeypatch.setattr(vz_module, "layer_scores", boom)  # the general path
    monkeypatch.setattr(fast_module, "analytic_layer_scores", boom)  # the fast path
    for fast_path in (False, True):
        with pytest.raises(RuntimeError, match="boom"):
            value_zeroing(gpt2, PROMPT, targets=TARGET, fast_path=fast_path)
    monkeypatch.undo()
    # ...and inside a hook, during the method's own hooked forward pass: a hook of the caller
    # on the last block raises while value zeroing's recording hooks are attached.
    fired = []

    def explode(x, hook):
        fired.append(count_hooks(gpt2))
        raise RuntimeError("boom in a hook")

    with temporary_hooks(gpt2, [(hook_name("resid_post", 1), explode)]):
        with pytest.raises(RuntimeError, match="boom in a hook"):
            value_zeroing(gpt2, PROMPT, targets=TARGET)
        assert fired and fired[0] > hooks + 1  # the method's hooks were attached then
        # only the caller's own hook is left (with its context's pattern-release hooks)
        assert count_hooks(gpt2) == hooks + 1 + len(pattern_holders(gpt2))
    assert count_hooks(gpt2) == hooks
    after = _weights(gpt2)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_hooks_removed_when_a_hook_raises(gpt2, monkeypatch):
    hooks = count_hooks(gpt2)
    real = vz_module.capture_block_calls

    def failing(adapter, example, layers):
        def fail(x, hook):
            raise RuntimeError("hook failed")

        with temporary_hooks(adapter.model, [(hook_name("v", 0), fail)]):
            return real(adapter, example, layers)

    monkeypatch.setattr(vz_module, "capture_block_calls", failing)
    with pytest.raises(RuntimeError, match="hook failed"):
        value_zeroing(gpt2, PROMPT, targets=TARGET, fast_path=False)
    assert count_hooks(gpt2) == hooks
    # the pre-hooks that capture the blocks' arguments are gone too
    assert not any(block._forward_pre_hooks for block in gpt2.blocks)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"layers": 5}, r"Invalid layers 5: choose from 0\.\.1"),
        ({"part": "encoder"}, "decoder-only model has no 'encoder' attention"),
        ({"max_batch_tokens": 0}, "max_batch_tokens must be a positive int"),
        ({"targets": [TARGET, TARGET]}, "2 targets for 1 prompts"),
        ({"heads": 4}, r"Invalid heads .* 4: choose from 0\.\.3"),
        ({"heads": {3: 0}}, r"layers \[3\].*computed layers: \[0, 1\]"),
        ({"metric": "cosin"}, r"metric must be one of 'cosine', 'euclidean', got 'cosin'. Did you"),
        ({"rollout": True, "normalize": False}, "normalize=True"),
    ],
)
def test_bad_options(gpt2, options, match):
    with pytest.raises(ValueError, match=match):
        value_zeroing(gpt2, PROMPT, **{"targets": TARGET, **options})


def test_gqa_heads_index_key_value_heads(llama):
    with pytest.raises(ValueError, match=r"key/value heads 0\.\.1"):
        value_zeroing(llama, PROMPT, targets=TARGET, heads=2)


def test_output_display_save_load(gpt2, tmp_path):
    (out,) = value_zeroing(gpt2, PROMPT, targets=TARGET, rollout=True)
    text = out.to_text(color=False)
    assert "layer 1" in text and "George" in text
    assert "<table" in out.to_html(layer=0) and out._repr_html_()
    for fig in (out.plot(), out.plot(layer=0), out.plot(rollout=True)):
        assert isinstance(fig, Figure)
    from hooklab.mixing.plot import plot_token_mixing

    assert isinstance(plot_token_mixing(out, -1, rollout=True), Figure)
    path = out.save(tmp_path / "vz")
    with pytest.raises(FileExistsError):
        out.save(path)
    back = MixingOutput.load(path)
    assert back.tokens == out.tokens and back.layers == out.layers
    assert torch.equal(back.scores, out.scores) and torch.equal(back.rollout, out.rollout)
    assert back.target_start == out.target_start and back.to_dict() == out.to_dict()
    with pytest.raises((ValueError, TypeError)):  # TypeError from jaxtyping when it checks
        MixingOutput(out.tokens, out.token_ids, out.scores[:, 1:], out.layers)
    with pytest.raises(ValueError, match="not computed"):
        out.matrix(7)
    assert_close(rollout_scores(out.scores), out.rollout)


def test_provenance_and_resolved_parameters(gpt2):
    (out,) = value_zeroing(gpt2, PROMPT, targets=TARGET)
    assert out.model["name_or_path"] and out.model["architecture"]
    p = out.parameters
    assert p["metric"] == "cosine" and p["normalize"] is True and p["rollout"] is False
    assert p["max_batch_tokens"] == 2048 and p["part"] == "decoder" and p["targets"] == TARGET
    assert p["layers"] == (0, 1) and p["heads"] == {"0": (0, 1, 2, 3), "1": (0, 1, 2, 3)}


def test_refuses_compatibility_mode(gpt2_dir):
    # compatibility mode folds the value bias away: hook_v no longer holds the true values
    model = hooklab.load(gpt2_dir, device="cpu", compatibility_mode=True)
    for fast_path in (True, False):
        with pytest.raises(ValueError, match="compatibility_mode=True"):
            value_zeroing(model, PROMPT, targets=TARGET, fast_path=fast_path)


@pytest.mark.parametrize("fast_path", [1, None, "yes"])
def test_fast_path_must_be_a_bool(gpt2, fast_path):
    with pytest.raises(TypeError, match="fast_path"):  # the type check or ours
        value_zeroing(gpt2, PROMPT, targets=TARGET, fast_path=fast_path)
