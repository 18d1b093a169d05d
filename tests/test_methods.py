"""Every attribution method against its slow per-step reference, in float64.

The contract all methods share (shapes, NaN, batching, cleanup, save/load) is in test_contract.py.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.testing import assert_close

import hooklab
from hooklab.architecture import n_kv_heads
from hooklab.inputs import make_batch, pad_token_id
from hooklab.methods.base import AttributedFn
from hooklab.methods.integrated_gradients import integrated_gradients, quadrature
from hooklab.mixing.value_zeroing import mixing_matrices, select_heads
from tests.reference.attribution import (
    ref_attention,
    ref_gradient,
    ref_integrated_gradients,
    ref_occlusion,
    ref_value_zeroing,
)
from tests.test_alti import (  # tiny64: the fixture the reference test runs on
    test_alti_logit_matches_the_reference_and_the_logit,
    tiny64,  # noqa: F401
)
from tests.test_mixing_encoder_decoder import build_seq2seq
from tests.test_reagent import test_reagent_matches_the_slow_reference

PROMPTS = ["George was sick yesterday.", "It rained"]
TARGETS = [" His colleagues asked", " all morning. She took"]
TOL = {"atol": 1e-5, "rtol": 1e-5}


@pytest.fixture(scope="module", params=["gpt2_dir", "llama_dir"])
def model64(request):
    return hooklab.load(request.getfixturevalue(request.param), device="cpu", dtype="float64")


def _ids(seq):
    return seq.token_ids.tolist(), seq.target_start


def _check(out, reference):
    for seq in out:
        ids, start = _ids(seq)
        expected = reference(ids, start)
        got = seq.attributions.double()
        assert torch.equal(got.isnan(), expected.isnan())
        assert_close(got.nan_to_num(), expected.nan_to_num(), **TOL)


@pytest.mark.parametrize("vjp", ["loop", "batched"])
def test_saliency(model64, vjp):
    out = hooklab.attribute(model64, PROMPTS, TARGETS, method="saliency", vjp=vjp)
    _check(out, lambda ids, s: ref_gradient(model64, ids, s).abs())


def test_input_x_gradient(model64):
    out = hooklab.attribute(model64, PROMPTS, TARGETS, method="input_x_gradient")
    _check(out, lambda ids, s: ref_gradient(model64, ids, s, times_input=True))


@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_middle"])
def test_integrated_gradients(model64, rule):
    out = hooklab.attribute(
        model64, PROMPTS, TARGETS, method="integrated_gradients", n_steps=5, rule=rule
    )
    _check(out, lambda ids, s: ref_integrated_gradients(model64, ids, s, 5, rule))


def test_occlusion(model64):
    out = hooklab.attribute(model64, PROMPTS, TARGETS, method="occlusion", internal_batch_size=7)
    _check(out, lambda ids, s: ref_occlusion(model64, ids, s))


def test_attention(model64):
    out = hooklab.attribute(model64, PROMPTS, TARGETS, method="attention")
    _check(out, lambda ids, s: ref_attention(model64, ids, s))
    assert out[0].parameters["final_step_only"]


@pytest.mark.parametrize(("metric", "normalize"), [("cosine", True), ("euclidean", False)])
def test_value_zeroing(model64, metric, normalize):
    out = hooklab.attribute(
        model64, PROMPTS, TARGETS, method="value_zeroing", metric=metric, normalize=normalize
    )
    _check(
        out, lambda ids, s: ref_value_zeroing(model64, ids, s, metric=metric, normalize=normalize)
    )
    assert out[0].default_reduce == "mean"


def test_value_zeroing_rows_equal_the_mixing_matrices(toy):
    """Step t's row is the query position that predicts target t (as for ``attention``)."""
    prompt = "George was sick yesterday. His colleagues asked him to come"
    out = hooklab.attribute(toy, prompt, method="value_zeroing", layers=[0, 2], heads={2: [1]})
    (seq,) = out
    layers, heads = [0, 2], select_heads({2: [1]}, [0, 2], n_kv_heads(toy))
    matrices = mixing_matrices(toy, seq.token_ids.tolist(), layers=layers, heads=heads)
    start = seq.target_start
    for t in range(seq.n_steps):
        expected = matrices[:, start + t - 1, : start + t].T  # [key_pos, layer]
        assert_close(seq.attributions[t, : start + t], expected, atol=1e-6, rtol=0)
        assert seq.attributions[t, start + t :].isnan().all()
    assert out[0].parameters["heads"] == {"2": (1,)}


def test_value_zeroing_refuses_compatibility_mode(gpt2_dir):
    model = hooklab.load(gpt2_dir, device="cpu", compatibility_mode=True)
    with pytest.raises(ValueError, match="compatibility_mode=True"):
        hooklab.attribute(model, PROMPTS[0], TARGETS[0], method="value_zeroing")


def test_contrastive_target_equals_reference(model64):
    """P(ŷ) - P(ỹ) with alternative tokens, from the same forward pass (PECoRe's CCI target)."""
    tok = model64.tokenizer
    targets = [tok(t, add_special_tokens=False)["input_ids"] for t in TARGETS]
    alt = [[(i * 7 + 3) % model64.cfg.d_vocab for i in t] for t in targets]
    out = hooklab.attribute(
        model64, PROMPTS, targets, method="saliency", attributed_fn="contrast_prob_diff",
        contrast_targets=alt,
    )  # fmt: skip
    for seq, c_ids in zip(out, alt):
        ids, start = _ids(seq)
        expected = ref_gradient(model64, ids, start, "contrast_prob_diff", (None, c_ids)).abs()
        assert_close(seq.attributions.double().nan_to_num(), expected.nan_to_num(), **TOL)


def test_contrast_prompt_target_equals_reference(model64):
    """KL(P_ctx || P_noctx) as the attributed function, contrast = the prompt without context."""
    contrast = ["His", "morning"]
    tok = model64.tokenizer
    out = hooklab.attribute(
        model64, PROMPTS, TARGETS, method="occlusion", attributed_fn="kl_divergence",
        contrast_prompts=contrast,
    )  # fmt: skip
    for seq, c in zip(out, contrast):
        ids, start = _ids(seq)
        c_ids = [tok.bos_token_id, *tok(c, add_special_tokens=False)["input_ids"]]
        expected = ref_occlusion(model64, ids, start, "kl_divergence", (c_ids, None))
        assert_close(seq.attributions.double().nan_to_num(), expected.nan_to_num(), **TOL)


def test_ig_completeness_improves_with_steps(model64):
    deltas = []
    for n in (2, 8, 32):
        out = hooklab.attribute(
            model64, PROMPTS[0], TARGETS[0], method="integrated_gradients", n_steps=n,
            rule="riemann_trapezoid",
        )  # fmt: skip
        deltas.append(out[0].extras["completeness_delta"].abs().max().item())
    assert deltas[2] < deltas[1] < deltas[0]
    gl = (
        hooklab.attribute(
            model64, PROMPTS[0], TARGETS[0], method="integrated_gradients", n_steps=16
        )[0]
        .extras["completeness_delta"]
        .abs()
        .max()
        .item()
    )
    assert gl < 1e-6


def _ig_batch(model):
    tok = model.tokenizer
    ids = [[tok.bos_token_id, *tok(p + t, add_special_tokens=False)["input_ids"]]
           for p, t in zip(PROMPTS, TARGETS)]  # fmt: skip
    prompts = [i[: len(tok(p, add_special_tokens=False)["input_ids"]) + 1]
               for i, p in zip(ids, PROMPTS)]  # fmt: skip
    return make_batch(prompts, [i[len(p) :] for i, p in zip(ids, prompts)], pad_id=0)


@pytest.fixture(scope="module")
def marian64(tmp_path_factory):
    path = build_seq2seq(tmp_path_factory.mktemp("marian"), "marian")
    return hooklab.load(path, device="cpu", dtype="float64")


@pytest.mark.parametrize("which", ["decoder_only", "encoder_decoder"])
def test_ig_batched_points_equal_the_per_point_path(model64, marian64, which):
    if which == "decoder_only":
        model, batch = model64, _ig_batch(model64)
    else:  # decoder start token, then the targets; the prompts are the sources
        model, tok = marian64, marian64.tokenizer
        start = marian64.original_model.config.decoder_start_token_id
        batch = make_batch(
            [[start]] * 2, [tok(t, add_special_tokens=False)["input_ids"] for t in TARGETS],
            sources=[tok(p)["input_ids"] for p in PROMPTS], pad_id=pad_token_id(model),
        )  # fmt: skip
    fn = AttributedFn()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # 5 points leave a large delta
        runs = [  # per point; 5 and 3 points per pass; the default; 1 point and 1 step per pass
            integrated_gradients(model, batch, attributed_fn=fn, n_steps=5, **kw)
            for kw in ({"internal_batch_size": 1, "vjp": "loop"},
                       {"internal_batch_size": 5, "vjp": "batched"},
                       {"internal_batch_size": 3, "vjp": "batched"}, {},
                       {"max_batch_tokens": 1})
        ]  # fmt: skip
    assert runs[0].attributions.dtype == torch.float64
    for run in runs[1:]:
        assert_close(run.attributions, runs[0].attributions, atol=1e-10, rtol=0, equal_nan=True)
        delta = run.extras["completeness_delta"]
        assert_close(delta, runs[0].extras["completeness_delta"], atol=1e-10, rtol=0,
                     equal_nan=True)  # fmt: skip


TOY_EXAMPLE = "George was sick yesterday. His colleagues asked him to come"


def test_ig_auto_reaches_the_tolerance_where_16_points_do_not(toy):
    kw = {"method": "integrated_gradients", "generation_kwargs": {"max_new_tokens": 6}}
    with pytest.warns(UserWarning, match=r"completeness delta.* 16 gausslegendre points"):
        fixed = hooklab.attribute(toy, TOY_EXAMPLE, n_steps=16, **kw)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the default reaches the tolerance
        auto = hooklab.attribute(toy, TOY_EXAMPLE, **kw)[0]
    gap = auto.attributions.double().nansum(dim=(1, 2)) - auto.extras["completeness_delta"]
    allowed = 1e-3 * gap.abs().clamp(min=1)
    assert (fixed.extras["completeness_delta"].abs() > allowed).any()
    assert (auto.extras["completeness_delta"].abs() <= allowed + 1e-6).all()  # float32 output
    n = auto.extras["n_points"]
    assert (n == n[0]).all() and 16 < n[0] <= 256 and auto.parameters["n_steps"] == "auto"
    assert auto.parameters["tolerance"] == 1e-3 and auto.parameters["max_steps"] == 256


def test_ig_warns_about_a_large_delta_only(model64):
    kw = {"method": "integrated_gradients", "n_steps": 4}
    with pytest.warns(UserWarning, match=r"delta.*= [0-9.e+-]+ > tolerance.*n_steps='auto'"):
        hooklab.attribute(model64, PROMPTS, TARGETS, tolerance=1e-12, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        out = hooklab.attribute(model64, PROMPTS, TARGETS, tolerance=10.0, **kw)
    assert out[0].extras["n_points"].eq(4).all()
    with pytest.warns(UserWarning, match=r"raise max_steps \(now 2\)"):
        hooklab.attribute(model64, PROMPTS, TARGETS, method="integrated_gradients",
                          n_steps="auto", max_steps=2, tolerance=1e-12)  # fmt: skip
    for bad in ({"n_steps": "many"}, {"tolerance": 0.0}, {"max_steps": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            hooklab.attribute(model64, PROMPTS, TARGETS, method="integrated_gradients", **bad)


def test_gradient_shap_is_seeded_and_close_to_ig(gpt2):
    a = hooklab.attribute(gpt2, PROMPTS[0], TARGETS[0], method="gradient_shap", seed=1)
    b = hooklab.attribute(gpt2, PROMPTS[0], TARGETS[0], method="gradient_shap", seed=1)
    assert_close(a[0].attributions, b[0].attributions, equal_nan=True)
    # with many samples and no noise, gradient SHAP estimates IG (same path, random alphas)
    shap = hooklab.attribute(gpt2, PROMPTS[0], TARGETS[0], method="gradient_shap", n_samples=400)
    ig = hooklab.attribute(gpt2, PROMPTS[0], TARGETS[0], method="integrated_gradients")
    s, i = shap[0].attributions.sum(-1), ig[0].attributions.sum(-1)
    mask = ~i.isnan()
    assert torch.corrcoef(torch.stack([s[mask], i[mask]]))[0, 1] > 0.95


def test_quadrature_weights():
    for rule in ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_middle"):
        alphas, weights = quadrature(6, rule)
        assert weights.sum().item() == pytest.approx(1.0)
        # exact for f(a) = a on [0, 1]: integral 1/2
        assert (alphas * weights).sum().item() == pytest.approx(
            0.5, abs=0.1 if "left" in rule else 1e-12
        )
    with pytest.raises(ValueError, match="gausslegendre"):
        quadrature(4, "simpson")


def test_attention_scores_default_to_mean_over_layers_and_heads(gpt2):
    seq = hooklab.attribute(gpt2, PROMPTS[0], TARGETS[0], method="attention")[0]
    assert seq.attributions.ndim == 4 and seq.default_reduce == "mean"
    expected = seq.attributions.flatten(2).mean(-1)
    assert_close(seq.scores(), expected, equal_nan=True)
    rows = seq.scores()[:, : seq.target_start].nansum(-1)
    assert_close(rows[0], torch.tensor(1.0))  # the first step sees only the prompt
    assert "<table" in seq.to_html()
    assert seq.plot().axes


# Each built-in method's own reference (or estimator) test; dummy computes no attributions.
REFERENCE_TESTS = {
    "saliency": test_saliency,
    "input_x_gradient": test_input_x_gradient,
    "integrated_gradients": test_integrated_gradients,
    "gradient_shap": test_gradient_shap_is_seeded_and_close_to_ig,
    "occlusion": test_occlusion,
    "attention": test_attention,
    "value_zeroing": test_value_zeroing,
    "reagent": test_reagent_matches_the_slow_reference,
    "alti_logit": test_alti_logit_matches_the_reference_and_the_logit,
}
BUILTIN = hooklab.list_methods()


def test_every_registered_method_has_a_reference_test():
    assert set(REFERENCE_TESTS) == set(BUILTIN) - {"dummy"}
