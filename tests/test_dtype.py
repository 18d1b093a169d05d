"""Reduced precision: reductions run in float32, and bfloat16 / float16 models give float32's
results within tolerances derived from their rounding.

Two kinds of tests:

* Reductions alone (sharp). Step functions, value-zeroing distances and hidden-size reductions
  get half-precision inputs and must equal a float64 computation on the *same* values within
  float32 rounding (rtol 1e-5). Taken in bfloat16 they would be off by ~2^-8 relative, or
  worse (a log-probability near 0 next to logits of 16 has a bfloat16 step of 0.125), so these
  tests fail if a reduction runs in the model's dtype.
* Whole pipelines (bfloat16 model vs the same weights in float32, toy model and tiny GPT-2).
  The model's own rounding is measured as Δ = max |logits_bf16 - logits_fp32| over the steps;
  with n = exp(2Δ) - 1 every probability computed from those logits is within a relative n
  (log p moves by at most 2Δ). Step scores must stay within the first-order bounds that follow
  (times a safety factor 2); methods within ``16 eps`` of their largest score (eps = the dtype's
  machine epsilon: 2^-7 for bfloat16, 2^-10 for float16; measured errors are listed in
  the comment below), plus ``2 n`` for the probability they explain.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import pytest
import torch
from torch.testing import assert_close

import hooklab
from hooklab.attribution.aggregate import reduce_hidden
from hooklab.forward import step_logits
from hooklab.inputs import make_batch
from hooklab.mixing import attention_knockout, value_zeroing
from hooklab.mixing.value_zeroing import cosine_distance, euclidean_distance
from hooklab.pecore import pecore
from hooklab.pecore.select import selection_threshold
from hooklab.steps import CONTRASTIVE, STEP_FUNCTIONS, StepArgs

HALF = [torch.bfloat16, torch.float16]
SAFETY = 2.0
# Measured max errors (bfloat16 vs float32; normalised by the largest |score|), toy / tiny GPT-2:
# saliency 0.022 / 0.006, input_x_gradient 0.015 / 0.008, integrated_gradients 0.038 / 0.005,
# gradient_shap 0.053 / 0.007, occlusion 0.022 / 0.13, attention 0.015 / 0.003,
# value_zeroing 0.012 / 0.15, reagent 0.13 / 0.00003 (float16, toy: all <= 0.01).

# fewer probes and probe steps: the random tiny GPT-2 never ranks its target in the top 3;
# IG with a fixed number of points: "auto" cannot reach its tolerance in bfloat16 (256 points)
OPTIONS = {
    "reagent": {"num_probes": 4, "max_probe_steps": 40},
    "integrated_gradients": {"n_steps": 16},
}
TOY = ("George was sick yesterday. His colleagues asked him to come", " to the hospital.")
TOY_CONTRAST = "His colleagues asked him to come"
GPT2 = ("George was sick yesterday.", " His colleagues asked him")
GPT2_CONTRAST = "yesterday."
PROMPTS = {"toy": TOY, "gpt2": GPT2}
# the built-in registries, read at import: other tests register functions while they run
STEP_NAMES = tuple(hooklab.list_step_functions())
METHODS = tuple(hooklab.list_methods())


def eps(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps


# ---- reductions alone ------------------------------------------------------------------------
def _step_args(dtype, logits, c_logits, targets, c_targets):
    return StepArgs(
        model=None,
        batch=None,
        logits=logits.to(dtype),
        target_ids=targets,
        step_mask=torch.ones(targets.shape, dtype=torch.bool),
        contrast_logits=c_logits.to(dtype),
        contrast_target_ids=c_targets,
    )


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("name", [n for n in STEP_NAMES if n != "mc_dropout_prob_avg"])
def test_step_functions_reduce_in_float32(name, dtype):
    gen = torch.Generator().manual_seed(0)
    # peaked rows over a 2048-token vocabulary: logits up to ~30, a top token near p = 1
    logits = torch.randn(2, 3, 2048, generator=gen) * 4
    logits[..., 7] += 16
    c_logits = torch.randn(2, 3, 2048, generator=gen) * 4
    targets = torch.tensor([[7, 7, 3], [7, 11, 7]])
    c_targets = torch.tensor([[5, 7, 7], [7, 7, 2]])
    half = _step_args(dtype, logits, c_logits, targets, c_targets)
    # the reference: the same (rounded) values, in float64
    ref = _step_args(torch.float64, half.logits, half.contrast_logits, targets, c_targets)
    fn = STEP_FUNCTIONS.get(name)
    got, want = fn(half), fn(ref)
    assert got.dtype == torch.float32, f"{name} returned {got.dtype} for {dtype} logits"
    assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def test_float64_logits_stay_float64():
    logits = torch.randn(1, 2, 50, dtype=torch.float64)
    args = _step_args(torch.float64, logits, logits, torch.zeros(1, 2, dtype=torch.long), None)
    for name in ("probability", "entropy", "kl_divergence", "top_p_size", "logit"):
        assert STEP_FUNCTIONS.get(name)(args).dtype == torch.float64, name


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_value_zeroing_distances_reduce_in_float32(dtype):
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(64, 1024, generator=gen) * 30
    b = a + torch.randn(64, 1024, generator=gen) * 30 * torch.logspace(-3, 0, 64)[:, None]
    a, b = a.to(dtype), b.to(dtype)  # close pairs: cosine distances from ~1e-6 to ~0.5
    for metric in (cosine_distance, euclidean_distance):
        got = metric(a, b)
        assert got.dtype == torch.float32
        assert_close(got.double(), metric(a.double(), b.double()), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("how", ["l2", "sum", "mean"])
def test_hidden_reductions_in_float32(dtype, how):
    x = (torch.rand(3, 5, 4096, generator=torch.Generator().manual_seed(2)) + 0.5).to(dtype)
    got = reduce_hidden(x, how)
    assert got.dtype == torch.float32
    assert_close(got.double(), reduce_hidden(x.double(), how), rtol=1e-5, atol=0)


# ---- whole pipelines: half-precision model vs float32 ---------------------------------------
@pytest.fixture(scope="module")
def pairs(toy, gpt2, gpt2_dir):
    """name -> (float32 model, bfloat16 model, prompt, target, contrast prompt)."""
    return {
        "toy": (toy, hooklab.load("toy", device="cpu", dtype="bf16"), *TOY, TOY_CONTRAST),
        "gpt2": (gpt2, hooklab.load(gpt2_dir, device="cpu", dtype="bf16"), *GPT2, GPT2_CONTRAST),
    }


@pytest.fixture(scope="module")
def toy_fp16():
    return hooklab.load("toy", device="cpu", dtype="fp16")


def _logits(model, seq, prompt_ids=None):
    ids = seq.token_ids.tolist()
    start = seq.target_start
    prefix = ids[:start] if prompt_ids is None else prompt_ids
    with torch.no_grad():
        return step_logits(model, make_batch([prefix], [ids[start:]])).double()


def _bound(name, ref, delta, lp, lq, targets):
    """First-order bound on |score_half - score_fp32| per step, from logits moved by <= delta."""
    n = math.expm1(2 * delta)
    p = lp.exp()
    p_y, q_y = (x.gather(-1, targets[:, None])[:, 0].exp() for x in (lp, lq))
    bounds = {
        "logit": delta,
        "contrast_logits": delta,
        "contrast_logits_diff": 2 * delta,
        "crossentropy": 2 * delta,
        "pcxmi": 4 * delta / math.log(2),
        "in_context_pvi": 4 * delta / math.log(2),
        # relative ones: |dp| <= n p
        "probability": n * ref.abs(),
        "contrast_prob": n * ref.abs(),
        "perplexity": n * ref.abs(),
        "mc_dropout_prob_avg": 2 * n * ref.abs(),  # dropout rows: their own rounding too
        "likelihood_ratio": math.expm1(4 * delta) * ref.abs(),
        "contrast_prob_diff": n * (p_y + q_y),
        # sum_v |dp_v| |log p_v + 1| and sum_v |dp_v| |lp_v - lq_v| + 4 delta
        "entropy": n * (p * (lp + 1).abs()).sum(-1),
        "kl_divergence": n * (p * (lp - lq).abs()).sum(-1) + 4 * delta,
    }
    return torch.as_tensor(bounds[name], dtype=torch.float64)


@pytest.mark.parametrize("model_name", ["toy", "gpt2"])
def test_step_scores_half_vs_float32(pairs, model_name):
    m32, m16, prompt, target, contrast = pairs[model_name]
    (base,) = hooklab.attribute(m32, prompt, target).sequences
    c_ids = hooklab.encode_prompt(m32, contrast)
    l32, l16 = _logits(m32, base), _logits(m16, base)
    c32, c16 = _logits(m32, base, c_ids), _logits(m16, base, c_ids)
    delta = float(torch.maximum((l32 - l16).abs().max(), (c32 - c16).abs().max()))
    # the bfloat16 forward itself stays within a few roundings (measured 0.13 eps / 0.52 eps)
    assert delta <= 4 * eps(torch.bfloat16) * float(l32.abs().max())
    lp, lq = l32[0].log_softmax(-1), c32[0].log_softmax(-1)
    targets = base.token_ids[base.target_start :]
    for name in STEP_NAMES:
        kw = {"contrast_prompts": contrast} if name in CONTRASTIVE else {}
        want = hooklab.attribute(m32, prompt, target, step_scores=[name], **kw)[0]
        got = hooklab.attribute(m16, prompt, target, step_scores=[name], **kw)[0]
        ref, half = want.step_scores[name].double(), got.step_scores[name]
        assert half.dtype == torch.float32 and half.isfinite().all(), name
        err = (half.double() - ref).abs()
        if name == "top_p_size":  # a count: it moves only where the mass is within n of top_p
            n = math.expm1(2 * delta)
            mass = lp.exp().sort(-1, descending=True).values.cumsum(-1)
            assert (err <= ((mass - 0.9).abs() <= 2 * n).sum(-1)).all(), (name, err)
            continue
        bound = SAFETY * _bound(name, ref, delta, lp, lq, targets)
        bound = bound + 1e-5 * ref.abs().clamp(min=1)  # float32 rounding
        assert (err <= bound).all(), f"{name}: error {err.tolist()} > bound {bound.tolist()}"


def _normalised_error(x, y):
    x, y = x.nan_to_num(), y.nan_to_num()
    return float((x.double() - y.double()).abs().max() / x.abs().max().clamp(min=1e-30))


def _noise(m32, mh, prompt, target):
    """n = exp(2Δ) - 1: the relative error bound of a probability from ``mh``'s logits."""
    (base,) = hooklab.attribute(m32, prompt, target).sequences
    return math.expm1(2 * float((_logits(m32, base) - _logits(mh, base)).abs().max()))


def _tolerance(method, model_name, dtype, noise, want):
    """Allowed max |a_half - a_fp32| / max |a_fp32| for ``method``'s attributions ``want``."""
    tol = 16 * eps(dtype) + 2 * noise  # rounding of the pass(es), and of the explained p
    if method == "occlusion":  # p(y) - p'(y): two probabilities each within a relative n
        p_max = float(want.step_scores["probability"].max())
        tol += SAFETY * 2 * noise * p_max / float(want.attributions.nan_to_num().abs().max())
    if method == "reagent":  # a discrete search: a rank that flips changes which probes stop
        tol = max(tol, 0.25)  # measured 0.13 (toy, default options) when one flips
    if method == "value_zeroing" and model_name == "gpt2":
        # the random tiny GPT-2's cosine distances are ~1e-5 (median), at bfloat16's floor
        # (|rounding of a unit vector| ~ 2^-8, squared): normalised rows move by up to ~0.15
        tol = max(tol, 0.3)
    return tol


def _check_method(m32, mh, model_name, method, dtype):
    """Attribute with both models; check dtype, NaN pattern, error and top tokens."""
    prompt, target = PROMPTS[model_name]
    kw = {"method": method, "step_scores": ["probability"], **OPTIONS.get(method, {})}
    with warnings.catch_warnings():
        # IG's completeness and ReAGent's convergence warnings: the same in both dtypes
        warnings.simplefilter("ignore", UserWarning)
        want = hooklab.attribute(m32, prompt, target, **kw)[0]
        got = hooklab.attribute(mh, prompt, target, **kw)[0]
    assert got.token_ids.tolist() == want.token_ids.tolist()
    if want.attributions is None:
        assert got.attributions is None
        return
    a, b = want.attributions, got.attributions
    assert b.dtype == torch.float32 and b.device.type == "cpu"
    assert torch.equal(a.isnan(), b.isnan())  # NaN exactly where a step cannot see
    assert b.nan_to_num().isfinite().all()
    tol = _tolerance(method, model_name, dtype, _noise(m32, mh, prompt, target), want)
    err = _normalised_error(a, b)
    assert err <= tol, f"{method} in {dtype}: normalised error {err:.4f} > {tol:.4f}"
    # the top token of each step agrees wherever float32's top two are further apart than tol
    sa, sb = want.scores().nan_to_num(-math.inf), got.scores().nan_to_num(-math.inf)
    top2 = sa.topk(2, dim=-1).values
    clear = (top2[:, 0] - top2[:, 1]) > 2 * tol * sa.nan_to_num(0).abs().max()
    assert torch.equal(sa.argmax(-1)[clear], sb.argmax(-1)[clear]), method


@pytest.mark.parametrize("model_name", ["toy", "gpt2"])
@pytest.mark.parametrize("method", METHODS)
def test_methods_bf16_vs_float32(pairs, model_name, method):
    m32, m16, *_ = pairs[model_name]
    _check_method(m32, m16, model_name, method, torch.bfloat16)


@pytest.mark.parametrize("method", METHODS)
def test_methods_fp16_on_cpu(toy, toy_fp16, method):
    """float16 runs on the CPU (PyTorch >= 2.1 kernels) and is closer than bfloat16."""
    _check_method(toy, toy_fp16, "toy", method, torch.float16)


@pytest.mark.parametrize("model_name", ["toy", "gpt2"])
def test_pecore_bf16_selects_the_same_tokens(pairs, model_name):
    """CTI scores and CCI scores close; the same tokens and cues selected, except where a
    float32 score lies within the tolerance of the selection threshold."""
    m32, m16, prompt, target, contrast = pairs[model_name]
    context = prompt[: len(prompt) - len(contrast)].strip()
    want = pecore(m32, context, contrast, output_current_text=target)
    got = pecore(m16, context, contrast, output_current_text=target)
    x, y = torch.tensor(want.cti_scores), torch.tensor(got.cti_scores)
    assert y.isfinite().all()
    # KL of probabilities each within n: measured 0.006 (toy) and 0.03 (tiny GPT-2, KL ~1e-4)
    tol = 16 * eps(torch.bfloat16)
    assert _normalised_error(x, y) <= tol
    picked = {c.index: c for c in got.context_sensitive}
    _same_selection(x, want.cti_threshold, [c.index for c in want.context_sensitive], picked, tol)
    if model_name == "toy":
        assert [c.token for c in want.context_sensitive] == [" hospital"]
    for w in want.context_sensitive:
        g = picked[w.index]
        assert g.contextless_token == w.contextless_token
        a = torch.tensor(w.input_context_scores + w.output_context_scores)
        b = torch.tensor(g.input_context_scores + g.output_context_scores)
        assert b.isfinite().all() and _normalised_error(a, b) <= tol  # measured 0.008 (toy)
        _same_selection(a, selection_threshold(a, 1.0), [c.index for c in w.cues],
                        [c.index for c in g.cues], tol)  # fmt: skip


def _same_selection(scores, threshold, want, got, tol):
    """Tokens whose float32 |score| is further than ``tol * max|score|`` from the threshold are
    selected in both runs or in neither (closer ones may flip)."""
    if threshold is None:
        return
    clear = ((scores.abs() - threshold).abs() > tol * scores.abs().max()).nonzero()[:, 0]
    for i in clear.tolist():
        assert (i in want) == (i in got), (i, want, list(got))


@pytest.mark.parametrize("model_name", ["toy", "gpt2"])
def test_value_zeroing_and_knockout_bf16(pairs, model_name):
    m32, m16, prompt, target, _ = pairs[model_name]
    metric = "cosine" if model_name == "toy" else "euclidean"  # see _method_tolerance
    (v32,) = value_zeroing(m32, prompt, targets=target, rollout=True, metric=metric)
    (v16,) = value_zeroing(m16, prompt, targets=target, rollout=True, metric=metric)
    assert v16.scores.dtype == torch.float32 and v16.rollout.dtype == torch.float32
    assert_close(v16.scores.sum(-1), torch.ones_like(v16.scores[..., 0]))  # rows still sum to 1
    # rows sum to 1, so absolute errors: measured 0.012 (toy), 0.018 (GPT-2, euclidean)
    assert float((v32.scores - v16.scores).abs().max()) <= 8 * eps(torch.bfloat16)
    assert float((v32.rollout - v16.rollout).abs().max()) <= 8 * eps(torch.bfloat16)
    sources = {"cue": "sick"} if model_name == "toy" else {"cue": 2}
    (k32,) = attention_knockout(m32, prompt + target, sources=sources, window=1)
    (k16,) = attention_knockout(m16, prompt + target, sources=sources, window=1)
    assert k16.target_id == k32.target_id and k16.probabilities.isfinite().all()
    # (p' - p) / p from two probabilities each within a relative n of float32's
    n = _noise(m32, m16, prompt, target)
    bound = SAFETY * 2 * n * (1 + k32.relative_change.abs())
    assert ((k16.relative_change - k32.relative_change).abs() <= bound).all()


def test_fp16_mixing_and_pecore_run_on_cpu(toy, toy_fp16):
    (v,) = value_zeroing(toy_fp16, TOY[0], targets=TOY[1])
    (k,) = attention_knockout(toy_fp16, TOY[0] + TOY[1], sources={"cue": "sick"}, window=1)
    res = pecore(toy_fp16, "George was sick yesterday.", TOY_CONTRAST, output_current_text=TOY[1])
    assert v.scores.isfinite().all() and k.probabilities.isfinite().all()
    assert [c.token for c in res.context_sensitive] == [" hospital"]


def test_outputs_are_float32_on_cpu_and_save_bf16(pairs, tmp_path):
    _, m16, prompt, target, _ = pairs["toy"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # completeness with 4 points
        out = hooklab.attribute(m16, prompt, target, method="integrated_gradients", n_steps=4,
                                step_scores=["probability"])  # fmt: skip
    seq = out[0]
    tensors = [seq.attributions, *seq.step_scores.values(), *seq.extras.values()]
    assert all(t.dtype == torch.float32 and t.device.type == "cpu" for t in tensors)
    # a bfloat16 copy saves and loads exactly, dtype kept (safetensors stores bfloat16)
    half = dataclasses.replace(seq, attributions=seq.attributions.bfloat16())
    saved = type(out)((half,), out.info, model=out.model)
    saved.save(tmp_path / "bf16.safetensors")
    loaded = hooklab.load_output(tmp_path / "bf16.safetensors")[0]
    assert loaded.attributions.dtype == torch.bfloat16
    assert torch.equal(loaded.attributions.isnan(), half.attributions.isnan())
    assert torch.equal(loaded.attributions.nan_to_num(), half.attributions.nan_to_num())
    assert loaded.scores().dtype == torch.float32  # views reduce in float32
    assert out.model["dtype"] == "bfloat16"  # provenance records the model's dtype


def test_fp16_overflow_is_a_clear_error(gpt2_dir):
    model = hooklab.load(gpt2_dir, device="cpu", dtype="fp16")
    with torch.no_grad():  # logits far beyond float16's 65504
        model.original_model.lm_head.weight.mul_(1e5)
    with pytest.raises(ValueError, match="overflow float16's range"):
        hooklab.attribute(model, *GPT2, step_scores=["probability"])
    with pytest.raises(ValueError, match="overflow float16's range"):
        hooklab.attribute(model, *GPT2, method="saliency")


def test_faithfulness_bf16(pairs):
    m32, m16, prompt, target, _ = pairs["toy"]
    want, got = (
        hooklab.evaluate_faithfulness(m, hooklab.attribute(m, prompt, target, method="saliency"))
        for m in (m32, m16)
    )
    for name, value in got.summary().items():
        assert math.isfinite(value), name
        # means of probability differences, same masks (seed): measured <= 0.006 apart
        if not name.startswith("log_ratio"):
            assert abs(value - want.summary()[name]) <= 16 * eps(torch.bfloat16), name


def test_encoder_decoder_bf16():
    """toy-mt (Marian) in bfloat16: the batched value-zeroing path, knockout and PECoRe."""
    m32 = hooklab.load("toy-mt", device="cpu")
    m16 = hooklab.load("toy-mt", device="cpu", dtype="bf16")
    source, target = "The table was old. <brk> It was broken.", "Der Tisch war alt. <brk> Er"
    for part in ("cross", "decoder", "encoder"):
        (v32,) = value_zeroing(m32, source, targets=target, part=part)
        (v16,) = value_zeroing(m16, source, targets=target, part=part)
        assert v16.scores.dtype == torch.float32
        # rows sum to 1: measured 0.024-0.030
        assert float((v32.scores - v16.scores).abs().max()) <= 8 * eps(torch.bfloat16), part
    (k16,) = attention_knockout(m16, source, targets="Der Tisch war alt. <brk>", window=1)
    assert k16.probabilities.isfinite().all()
    templates = {"input_template": "{context} <brk> {current}",
                 "output_template": "{context} <brk> {current}"}  # fmt: skip
    res = pecore(m16, "The table was old.", "It was broken.",
                 output_context_text="Der Tisch war alt.", **templates)  # fmt: skip
    assert [c.token for c in res.context_sensitive] == [" Er"]
    assert [c.token for c in res.context_sensitive[0].cues] == [" Der"]
