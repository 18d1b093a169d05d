"""Soft sufficiency / comprehensiveness against hand computations; random importance ~ chance."""

from __future__ import annotations

import json
import math

import torch

import hooklab
from hooklab.faithfulness import random_attribution, sequence_metrics
from hooklab.forward import step_logits
from hooklab.inputs import make_batch
from hooklab.toy import EVAL_EXAMPLES

PROMPT, TARGET = "George was sick yesterday. His colleagues asked him to come", " to the"


def _seq(toy):
    return hooklab.attribute(toy, PROMPT, TARGET, method="attention")[0]


def _p(toy, seq, keep):
    """p(target of each step) with token embeddings zeroed where ``keep`` [pos] is False."""
    ids = seq.token_ids.tolist()
    batch = make_batch([ids[: seq.target_start]], [ids[seq.target_start :]])
    x = toy.embed(batch.tokens) * keep[None, :, None].float()
    probs = step_logits(toy, batch, x).softmax(-1)
    return probs.gather(-1, batch.target_ids[..., None])[0, :, 0]


def test_soft_metrics_equal_a_hand_computation(toy):
    seq = _seq(toy)
    T, L = seq.n_steps, len(seq.tokens)
    cue = seq.tokens.index(" sick")
    importance = torch.zeros(T, L)
    importance[:, cue] = 1.0  # 0/1 importance: the Bernoulli masks are deterministic
    got = sequence_metrics(toy, seq, importance, torch.Generator().manual_seed(0))
    with torch.no_grad():
        everything = torch.ones(L, dtype=torch.bool)
        nothing = torch.zeros(L, dtype=torch.bool)
        nothing[0] = True  # BOS stays
        only_cue, all_but_cue = nothing.clone(), everything.clone()
        only_cue[cue], all_but_cue[cue] = True, False
        p, p0 = _p(toy, seq, everything), _p(toy, seq, nothing)
        p_suff, p_comp = _p(toy, seq, only_cue), _p(toy, seq, all_but_cue)
    s0 = 1 - (p - p0).clamp(min=0)
    suff = 1 - (p - p_suff).clamp(min=0)
    torch.testing.assert_close(got["soft_ns"], (suff - s0) / (1 - s0), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(
        got["soft_nc"], (p - p_comp).clamp(min=0) / (1 - s0), atol=1e-5, rtol=1e-4
    )


def test_all_or_nothing_importance(toy):
    seq = _seq(toy)
    shape = (seq.n_steps, len(seq.tokens))
    gen = torch.Generator().manual_seed(0)
    full = sequence_metrics(toy, seq, torch.ones(shape), gen)
    none = sequence_metrics(toy, seq, torch.zeros(shape), gen)
    torch.testing.assert_close(full["soft_ns"], torch.ones(seq.n_steps))  # keeps everything
    torch.testing.assert_close(none["soft_ns"], torch.zeros(seq.n_steps))  # = the masked input
    torch.testing.assert_close(none["soft_nc"], torch.zeros(seq.n_steps))  # removes nothing


def test_random_importance_has_log_ratio_near_zero(toy):
    rows = [json.loads(line) for line in EVAL_EXAMPLES.read_text().splitlines()][:20]
    prompts = [f"{r['input_context_text']} {r['input_current_text']}".strip() for r in rows]
    out = hooklab.attribute(toy, prompts, [r["output_current_text"] for r in rows])
    ns, nc = [], []
    for seed in range(5):
        res = hooklab.evaluate_faithfulness(
            toy, random_attribution(out, seed=100 + seed), seed=seed
        )
        ns.append(res.log_ratio("soft_ns"))
        nc.append(res.log_ratio("soft_nc"))
    assert all(math.isfinite(r) for r in ns + nc)
    # Measured over 10 seeds on these 20 examples: Soft-NS log-ratio mean -0.03, sd 0.09;
    # Soft-NC mean 0.10, sd 0.27 (its random mean is small, so the ratio is noisier).
    assert abs(sum(ns) / len(ns)) < 0.1 and max(map(abs, ns)) < 0.3, ns
    assert abs(sum(nc) / len(nc)) < 0.3 and max(map(abs, nc)) < 0.6, nc


def test_result_summary_and_seed(toy):
    out = hooklab.attribute(toy, PROMPT, TARGET, method="occlusion")
    a = hooklab.evaluate_faithfulness(toy, out, seed=1)
    b = hooklab.evaluate_faithfulness(toy, out, seed=1)
    assert a.summary() == b.summary()
    assert set(a.to_dict()["summary"]) >= {"soft_ns", "soft_nc", "log_ratio_soft_ns"}
    assert a.scores["soft_ns"][0].shape == (out[0].n_steps,)
