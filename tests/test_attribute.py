"""attribute() end to end with the dummy method; bad inputs; the hook context manager."""

from __future__ import annotations

import json

import pytest
import torch
from torch.testing import assert_close

import hooklab
from hooklab.hooks import count_hooks, hook_name, pattern_holders, temporary_hooks

PROMPTS = ["George was sick yesterday.", "It rained all"]
TARGETS = [" His colleagues asked him", " morning."]


def test_dummy_end_to_end_forced(tiny):
    out = hooklab.attribute(tiny, PROMPTS, TARGETS, step_scores=["probability", "entropy"])
    assert len(out) == 2
    for seq, prompt, target in zip(out, PROMPTS, TARGETS):
        assert seq.attributions is None
        assert "".join(seq.target_tokens) == target
        assert tiny.tokenizer.decode(seq.token_ids[1 : seq.target_start]) == prompt
        assert seq.step_scores["probability"].shape == (seq.n_steps,)
        assert ((seq.step_scores["probability"] > 0) & (seq.step_scores["probability"] < 1)).all()


def test_batch_equals_one_by_one(tiny):
    names = ["probability", "logit", "entropy", "kl_divergence"]
    contrast = ["His", "morning"]
    both = hooklab.attribute(tiny, PROMPTS, TARGETS, step_scores=names, contrast_prompts=contrast)
    for i in range(2):
        alone = hooklab.attribute(
            tiny, PROMPTS[i], TARGETS[i], step_scores=names, contrast_prompts=contrast[i]
        )
        assert alone[0].tokens == both[i].tokens
        for name in names:
            assert_close(alone[0].step_scores[name], both[i].step_scores[name], atol=1e-5, rtol=0)


def test_generated_targets(gpt2):
    out = hooklab.attribute(gpt2, PROMPTS, generation_kwargs={"max_new_tokens": 3})
    gen = hooklab.generate(gpt2, PROMPTS, max_new_tokens=3)
    for seq, ids in zip(out, gen.output_ids):
        assert seq.token_ids[seq.target_start :].tolist() == ids
    assert out.info["generated"]


def test_target_with_prompt_prefix_is_stripped(gpt2):
    a = hooklab.attribute(gpt2, PROMPTS[0], PROMPTS[0] + TARGETS[0])
    b = hooklab.attribute(gpt2, PROMPTS[0], TARGETS[0])
    assert a[0].tokens == b[0].tokens


def test_attr_pos_span_moves_prefix_into_prompt(gpt2):
    full = hooklab.attribute(gpt2, PROMPTS[0], TARGETS[0], step_scores=["probability"])
    part = hooklab.attribute(
        gpt2, PROMPTS[0], TARGETS[0], step_scores=["probability"], attr_pos_start=1, attr_pos_end=3
    )
    assert part[0].n_steps == 2
    assert part[0].target_start == full[0].target_start + 1
    assert_close(part[0].step_scores["probability"], full[0].step_scores["probability"][1:3])
    with pytest.raises(ValueError, match="attr_pos_start"):
        hooklab.attribute(gpt2, PROMPTS[0], TARGETS[0], attr_pos_start=5, attr_pos_end=2)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"prompts": ""}, ValueError, "empty"),
        ({"prompts": "   "}, ValueError, "empty"),
        ({"prompts": []}, ValueError, "No prompts"),
        ({"targets": ""}, ValueError, "empty"),
        ({"method": "saliencyy"}, KeyError, "dummy"),
        ({"step_scores": ["entropyy"]}, KeyError, "Did you mean 'entropy'"),
        ({"prompts": "word " * 200}, ValueError, "context window of 64"),
        ({"targets": " word" * 100}, ValueError, "context window"),
        ({"prompts": ["a", "b"], "targets": ["x"]}, ValueError, "1 targets for 2 prompts"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"prompts": 3}, TypeError, "prompts"),
    ],
)
def test_bad_inputs(gpt2, kwargs, error, match):
    call = {"prompts": "George was", "targets": " sick", **kwargs}
    with pytest.raises(error, match=match):
        hooklab.attribute(gpt2, call.pop("prompts"), call.pop("targets"), **call)


def test_contrast_targets_must_align(gpt2):
    with pytest.raises(ValueError, match="one alternative token per target token"):
        hooklab.attribute(
            gpt2, "George was", " sick", contrast_targets=" sick today",
            step_scores=["contrast_prob_diff"],
        )  # fmt: skip


def test_output_is_json_serialisable(gpt2):
    out = hooklab.attribute(gpt2, PROMPTS, TARGETS, step_scores=["probability"])
    text = json.dumps(out.to_dict())
    assert json.loads(text)["sequences"][1]["tokens"] == list(out[1].tokens)


def test_hook_name_builder():
    assert hook_name("v", 2) == "blocks.2.attn.hook_v"
    assert hook_name("pattern", 0) == "blocks.0.attn.hook_pattern"
    assert hook_name("embed") == "hook_embed"
    with pytest.raises(KeyError, match="Did you mean 'pattern'"):
        hook_name("patern", 0)
    with pytest.raises(ValueError, match="layer"):
        hook_name("v")


def test_temporary_hooks_removed_after_exception(gpt2):
    ids = torch.tensor([hooklab.encode_prompt(gpt2, "George was sick")])
    with torch.no_grad():
        clean = gpt2(ids, prepend_bos=False)
    before = count_hooks(gpt2)
    params = {k: v.clone() for k, v in gpt2.state_dict().items()}

    def zero_v(v, hook):
        return torch.zeros_like(v)

    with (
        pytest.raises(RuntimeError, match="boom"),
        temporary_hooks(gpt2, [(hook_name("v", 0), zero_v)]),
    ):
        assert count_hooks(gpt2) == before + 1 + len(pattern_holders(gpt2))  # + its releases
        with torch.no_grad():
            changed = gpt2(ids, prepend_bos=False)
        assert not torch.allclose(changed, clean)
        raise RuntimeError("boom")
    assert count_hooks(gpt2) == before
    with torch.no_grad():
        assert torch.equal(gpt2(ids, prepend_bos=False), clean)
    for k, v in gpt2.state_dict().items():
        assert torch.equal(v, params[k])
    with (
        pytest.raises(KeyError, match="hook point"),
        temporary_hooks(gpt2, [("blocks.0.attn.hook_vv", zero_v)]),
    ):
        pass


def test_parameters_are_resolved_frozen_and_per_sequence(gpt2):
    out = hooklab.attribute(gpt2, PROMPTS, TARGETS, method="integrated_gradients", n_steps=3)
    params = out[0].parameters
    assert params["n_steps"] == 3  # given
    assert params["rule"] == "gausslegendre" and params["baseline"] == "zeros"  # defaults
    assert params["reduce"] == "l2" and params["final_step_only"] is False  # from the spec
    assert params is not out[1].parameters and params is not out.info["parameters"]
    assert params == out[1].parameters == out.info["parameters"]
    with pytest.raises(TypeError):
        params["n_steps"] = 5
    assert out.model["name_or_path"] == str(gpt2.hooklab_name)
    assert out.info["method_spec"]["kind"] == "gradient"


def test_unknown_method_option_lists_the_valid_ones(gpt2):
    with pytest.raises(TypeError, match=r"no option 'n_step'.*n_steps"):
        hooklab.attribute(gpt2, PROMPTS[0], TARGETS[0], method="integrated_gradients", n_step=3)


def test_register_method_rules():
    def noop(model, batch, *, attributed_fn, scale: float = 1.0):
        return hooklab.MethodResult()

    with pytest.raises(ValueError, match="already registered"):
        hooklab.register_method("saliency", noop)
    with pytest.raises(ValueError, match=r"Unknown method kind 'gradients'.*'gradient'"):
        hooklab.register_method("test_noop", noop, kind="gradients")
    with pytest.raises(ValueError, match="Unknown reduction"):
        hooklab.register_method("test_noop", noop, reduce="median")
    assert "test_noop" not in hooklab.list_methods()
    spec = hooklab.register_method("test_noop", noop, kind="other")
    try:
        assert hooklab.method_info("test_noop") is spec
        assert dict(spec.defaults) == {"scale": 1.0}
        assert hooklab.register_method("test_noop", noop, overwrite=True).fn is noop
    finally:
        hooklab.methods.METHODS.unregister("test_noop")
    with pytest.raises(KeyError, match="Did you mean 'saliency'"):
        hooklab.method_info("salency")
