"""The contract every registered method keeps, through hooklab.testing.check_method.

Parametrised over the registry, so a new method is tested by registering it. A method
registered by a user gets the same checks from the same helper; the last tests show that the
helper passes a correct user method and catches broken ones.
"""

from __future__ import annotations

import pytest
import torch

import hooklab
from hooklab.forward import step_logits, token_embeddings
from hooklab.hooks import count_hooks, hook_name
from hooklab.methods import METHODS, MethodResult
from hooklab.testing import PROMPTS, TARGETS, check_method

BUILTIN = hooklab.list_methods()
# Options that keep the slow methods cheap; the contract does not depend on them.
FAST = {"integrated_gradients": {"n_steps": 4}, "gradient_shap": {"n_samples": 3, "stdevs": 0.1}}


@pytest.mark.parametrize("name", BUILTIN)
@pytest.mark.parametrize("model_name", ["gpt2", "llama", "toy"])
def test_every_method_keeps_the_contract(request, name, model_name):
    model = request.getfixturevalue(model_name)
    out = check_method(model, name, **FAST.get(name, {}))
    spec = hooklab.method_info(name)
    for seq in out:
        assert seq.parameters["reduce"] == spec.reduce
        for option, default in spec.defaults.items():
            expected = FAST.get(name, {}).get(option, default)
            assert seq.parameters[option] == expected, option


@pytest.mark.parametrize("name", BUILTIN)
def test_to_pandas(gpt2, name):
    out = hooklab.attribute(
        gpt2, list(PROMPTS), list(TARGETS), method=name, step_scores=["probability"],
        **FAST.get(name, {}),
    )  # fmt: skip
    frame = out.to_pandas()
    assert len(frame) > 0


def test_every_spec_says_what_it_is():
    for name in BUILTIN:
        spec = hooklab.method_info(name)
        assert spec.name == name and spec.kind in hooklab.methods.KINDS
        assert spec.encoder_decoder  # every built-in method runs on encoder-decoder models
        assert spec.needs_gradients == (spec.kind == "gradient")
    assert hooklab.method_info("attention").final_step_only
    assert hooklab.method_info("value_zeroing").final_step_only
    assert not hooklab.method_info("saliency").final_step_only


# ---- a user-registered method gets the same contract ---------------------------------------------
def embedding_norm(model, batch, *, attributed_fn, power: float = 1.0):
    """A correct toy method: each visible token's embedding norm, for every step."""
    del attributed_fn
    norms = token_embeddings(model, batch).norm(dim=-1) ** power  # [batch, pos]
    return MethodResult(norms[:, None, :].expand(-1, batch.n_steps, -1).clone())


def wrong_shape(model, batch, *, attributed_fn):
    return MethodResult(torch.zeros(batch.size, batch.n_steps))  # no pos dimension


def nan_everywhere(model, batch, *, attributed_fn):
    shape = (batch.size, batch.n_steps, batch.tokens.shape[1])
    return MethodResult(torch.full(shape, torch.nan))


def depends_on_batch(model, batch, *, attributed_fn):
    out = embedding_norm(model, batch, attributed_fn=attributed_fn).attributions
    return MethodResult(out * batch.size)


def leaves_a_hook(model, batch, *, attributed_fn):
    model.hook_dict[hook_name("embed")].add_hook(lambda x, hook: None)
    return embedding_norm(model, batch, attributed_fn=attributed_fn)


def leaks_on_error(model, batch, *, attributed_fn):
    """Adds a hook without try/finally: removed on success, left behind when forward raises."""
    handle = model.hook_dict[hook_name("embed")].add_hook(lambda x, hook: None)
    step_logits(model, batch)
    handle.hook.remove()
    return embedding_norm(model, batch, attributed_fn=attributed_fn)


@pytest.fixture
def user_method():
    """Register ``fn`` as a user method for one test; unregister it afterwards."""
    names = []

    def register(fn, **flags):
        names.append(hooklab.register_method(f"test_{fn.__name__}", fn, **flags).name)
        return names[-1]

    yield register
    for name in names:
        METHODS.unregister(name)


def _clear_embed_hooks(model):
    model.hook_dict[hook_name("embed")].remove_hooks("fwd", including_permanent=True)


def test_check_method_passes_a_correct_user_method(tiny, user_method):
    name = user_method(embedding_norm, kind="other")
    out = check_method(tiny, name, power=2.0)
    assert out[0].parameters["power"] == 2.0
    assert hooklab.attribute(tiny, PROMPTS[0], TARGETS[0], method=name)[0].parameters["power"] == 1


@pytest.mark.parametrize(
    ("fn", "match"),
    [
        (wrong_shape, "shape"),
        (nan_everywhere, "NaN at visible"),
        (depends_on_batch, "batched != alone"),
        (leaves_a_hook, "hooks left attached after it returned"),
        (leaks_on_error, "hooks left after an exception"),
    ],
)
def test_check_method_catches_a_broken_method(gpt2, user_method, fn, match):
    name = user_method(fn)
    before = count_hooks(gpt2)
    try:
        with pytest.raises(AssertionError, match=match) as err:
            check_method(gpt2, name)
    finally:
        _clear_embed_hooks(gpt2)
    assert name in str(err.value)
    assert count_hooks(gpt2) == before
