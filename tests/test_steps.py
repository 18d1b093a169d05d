"""Step functions against hand-written formulas on known logits, and through the model."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

import hooklab
from hooklab.forward import forward
from hooklab.inputs import encode_prompt, encode_target, make_batch
from hooklab.scoring import compute_step_scores, make_contrast
from hooklab.steps import STEP_FUNCTIONS, StepArgs

# Two examples, two steps, vocabulary of 3, written out by hand.
LOGITS = torch.tensor(
    [[[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]], [[0.0, 1.0, 3.0], [1.0, 1.0, 1.0]]], dtype=torch.float64
)
C_LOGITS = torch.tensor(
    [[[0.0, 0.0, 0.0], [1.0, -1.0, 2.0]], [[3.0, 1.0, 0.0], [0.0, 2.0, 0.0]]], dtype=torch.float64
)
TARGETS = torch.tensor([[0, 1], [2, 0]])
C_TARGETS = torch.tensor([[1, 2], [0, 1]])


def _softmax(row):
    z = sum(math.exp(x) for x in row)
    return [math.exp(x) / z for x in row]


def _args(contrast=True, c_targets=False):
    return StepArgs(
        model=None,
        batch=None,
        logits=LOGITS,
        target_ids=TARGETS,
        step_mask=torch.ones(2, 2, dtype=torch.bool),
        contrast_logits=C_LOGITS if contrast else None,
        contrast_target_ids=C_TARGETS if c_targets else None,
    )


def _expected(name: str) -> torch.Tensor:
    out = torch.zeros(2, 2, dtype=torch.float64)
    for b in range(2):
        for t in range(2):
            row, crow = LOGITS[b, t].tolist(), C_LOGITS[b, t].tolist()
            p, q = _softmax(row), _softmax(crow)
            y, yc = int(TARGETS[b, t]), int(C_TARGETS[b, t])
            value = {
                "logit": row[y],
                "probability": p[y],
                "entropy": -sum(pi * math.log(pi) for pi in p),
                "crossentropy": -math.log(p[y]),
                "perplexity": 1 / p[y],
                "contrast_logits": crow[y],
                "contrast_prob": q[y],
                "contrast_logits_diff": row[y] - crow[y],
                "contrast_prob_diff": p[y] - q[y],
                "pcxmi": math.log2(p[y]) - math.log2(q[y]),
                "in_context_pvi": -math.log2(q[y]) + math.log2(p[y]),
                "kl_divergence": sum(pi * math.log(pi / qi) for pi, qi in zip(p, q)),
                # contrast target only (same prefix, same logits): P(y) - P(y')
                "prob_diff_targets": p[y] - p[yc],
            }[name]
            out[b, t] = value
    return out


@pytest.mark.parametrize(
    "name",
    [
        "logit",
        "probability",
        "entropy",
        "crossentropy",
        "perplexity",
        "contrast_logits",
        "contrast_prob",
        "contrast_logits_diff",
        "contrast_prob_diff",
        "pcxmi",
        "in_context_pvi",
        "kl_divergence",
    ],
)
def test_step_function_matches_formula(name):
    assert_close(STEP_FUNCTIONS.get(name)(_args()), _expected(name), atol=1e-12, rtol=1e-12)


def test_contrast_targets_score_alternative_after_same_prefix():
    got = STEP_FUNCTIONS.get("contrast_prob_diff")(_args(contrast=False, c_targets=True))
    assert_close(got, _expected("prob_diff_targets"), atol=1e-12, rtol=1e-12)


def test_kl_top_k_renormalises_over_contrast_top_tokens():
    got = STEP_FUNCTIONS.get("kl_divergence")(_args(), top_k=2)
    b, t = 0, 1  # contrast logits [1, -1, 2]: top-2 are tokens 2 and 0
    p = _softmax([LOGITS[b, t, 2].item(), LOGITS[b, t, 0].item()])
    q = _softmax([C_LOGITS[b, t, 2].item(), C_LOGITS[b, t, 0].item()])
    expected = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    assert got[b, t].item() == pytest.approx(expected, abs=1e-12)


def test_top_p_size_counts_nucleus():
    logits = torch.log(torch.tensor([[[0.5, 0.3, 0.15, 0.05]]]))
    args = StepArgs(None, None, logits, torch.tensor([[0]]), torch.ones(1, 1, dtype=torch.bool))
    fn = STEP_FUNCTIONS.get("top_p_size")
    assert fn(args, top_p=0.5).item() == 1
    assert fn(args, top_p=0.8).item() == 2  # 0.5 + 0.3 reaches 0.8
    assert fn(args, top_p=0.81).item() == 3
    assert fn(args, top_p=1.0).item() == 4
    with pytest.raises(ValueError, match="top_p"):
        fn(args, top_p=1.5)


def test_step_scores_equal_explicit_forward(tiny):
    prompts = ["George was sick yesterday.", "It rained"]
    targets = [" His colleagues asked", " all morning. She took"]
    p_ids = [encode_prompt(tiny, p) for p in prompts]
    t_ids = [encode_target(tiny, t) for t in targets]
    c_ids = [encode_prompt(tiny, "His"), encode_prompt(tiny, "morning")]
    batch = make_batch(p_ids, t_ids, pad_id=0)
    contrast = make_contrast(tiny, batch, t_ids, contrast_prompts=c_ids)
    got = compute_step_scores(tiny, batch, ["probability", "kl_divergence"], contrast=contrast)
    for i in range(2):
        with torch.no_grad():
            full = tiny(torch.tensor([p_ids[i] + t_ids[i]]), prepend_bos=False)[0]
            cfull = tiny(torch.tensor([c_ids[i] + t_ids[i]]), prepend_bos=False)[0]
        n, nc = len(p_ids[i]), len(c_ids[i])
        for t, y in enumerate(t_ids[i]):
            lp = torch.log_softmax(full[n + t - 1], -1)
            lq = torch.log_softmax(cfull[nc + t - 1], -1)
            assert got["probability"][i, t].item() == pytest.approx(lp[y].exp().item(), abs=1e-5)
            kl = (lp.exp() * (lp - lq)).sum().item()
            assert got["kl_divergence"][i, t].item() == pytest.approx(kl, abs=1e-5)
        assert torch.isnan(got["probability"][i, len(t_ids[i]) :]).all()


def test_mc_dropout_restores_mode_and_is_seeded(toy):
    batch = make_batch([encode_prompt(toy, "George was sick")], [encode_target(toy, " yesterday")])
    kwargs = {"mc_dropout_prob_avg": {"n_mcd_steps": 4}}
    a = compute_step_scores(toy, batch, ["mc_dropout_prob_avg"], step_scores_kwargs=kwargs)
    b = compute_step_scores(toy, batch, ["mc_dropout_prob_avg"], step_scores_kwargs=kwargs)
    assert not toy.training
    assert_close(a["mc_dropout_prob_avg"], b["mc_dropout_prob_avg"])
    plain = compute_step_scores(toy, batch, ["probability"])["probability"]
    # dropout is on: the noisy mean differs from the clean probability, but not wildly
    assert not torch.equal(a["mc_dropout_prob_avg"], plain)
    assert (a["mc_dropout_prob_avg"] - plain).abs().max() < 0.5


def test_registry_errors_and_custom_function(gpt2):
    with pytest.raises(KeyError, match="probability"):
        hooklab.attribute(gpt2, "George", " was", step_scores=["probabilty"])
    with pytest.raises(ValueError, match="already registered"):
        hooklab.register_step_function("logit", lambda args: args.logits[..., 0])
    with pytest.raises(ValueError, match="contrast"):
        hooklab.attribute(gpt2, "George", " was", step_scores=["kl_divergence"])

    def max_logit(args):
        return args.logits.max(-1).values

    hooklab.register_step_function("test_max_logit", max_logit, overwrite=True)
    out = hooklab.attribute(gpt2, "George", " was sick", step_scores=["test_max_logit"])
    with torch.no_grad():
        ids = out[0].token_ids[None]
        expected = gpt2(ids, prepend_bos=False)[0, out[0].target_start - 1 : -1].max(-1).values
    assert_close(out[0].step_scores["test_max_logit"], expected)


def test_forward_padding_equals_alone(tiny):
    a, b = encode_prompt(tiny, "George was sick yesterday."), encode_prompt(tiny, "It")
    batch = make_batch([a, b], pad_id=0)
    with torch.no_grad():
        both = forward(tiny, batch)
        alone = forward(tiny, make_batch([b], pad_id=0))
    assert_close(both[1, -len(b) :], alone[0], atol=1e-5, rtol=1e-5)
