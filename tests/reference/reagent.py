"""Slow ReAGent: one probe, one step, one prefix per forward pass, explicit loops.

Consumes the same random draws in the same order as ``hooklab.methods.reagent`` (per example:
initial logits [probe, step, pos]; then per probe step: replacement mask [probe, pos], replacement
draws [probe, pos], stopping-check draws [probe, step, pos], over the replaceable positions), so
the two agree to float tolerance. Target function: the probability of the target token.
"""

from __future__ import annotations

import math

import torch

from hooklab.methods.replacements import special_ids


def _probs(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids]), prepend_bos=False)[0].float().softmax(-1)


def ref_reagent(model, ids, n_prompt, *, keep_top_n=5, top_k=3, ratio=0.3, steps=3000,
                probes=16, seed=0):  # fmt: skip
    """ReAGent scores [step, pos] of one unpadded sequence (BOS first), NaN where unseen."""
    L, T, P = len(ids), len(ids) - n_prompt, probes
    first = 1  # BOS is never replaced
    gen = torch.Generator().manual_seed(seed)
    full = _probs(model, ids)  # row j-1 predicts position j
    dists = []
    for j in range(first, L):
        d = full[j - 1].clone()
        d[special_ids(model)] = 0.0
        d[ids[j]] = 0.0
        dists.append((d / d.sum()).cumsum(0))

    def alternatives(u):  # u [..., L - first] -> token ids, one per replaceable position
        out = torch.zeros(u.shape, dtype=torch.long)
        for j in range(L - first):
            cdf = dists[j]
            out[..., j] = torch.searchsorted(cdf, u[..., j].contiguous() * cdf[-1], right=True)
        return out.clamp(max=full.shape[-1] - 1)

    p_clean = [full[n_prompt + t - 1, ids[n_prompt + t]].item() for t in range(T)]
    rank_clean = [int((full[n_prompt + t - 1] > p_clean_logit).sum()) + 1
                  for t, p_clean_logit in enumerate(p_clean)]  # fmt: skip
    need = [max(top_k, r) for r in rank_clean]
    s = torch.rand(P, T, L - first, generator=gen)
    stopped = [[False] * T for _ in range(P)]
    for _ in range(steps):
        if all(all(row) for row in stopped):
            break
        u_mask = torch.rand(P, L - first, generator=gen)
        alt = alternatives(torch.rand(P, L - first, generator=gen))
        alt_stop = alternatives(torch.rand(P, T, L - first, generator=gen))
        for p in range(P):
            if all(stopped[p]):
                continue
            mask = (u_mask[p] < ratio).tolist()
            new = ids[:first] + [int(a) if m else i for i, a, m in
                                 zip(ids[first:], alt[p].tolist(), mask)]  # fmt: skip
            for t in range(T):
                if stopped[p][t]:
                    continue
                end = n_prompt + t
                delta = p_clean[t] - _probs(model, new[:end])[-1, ids[end]].item()
                for j in range(end - first):
                    sign = delta if mask[j] else -delta
                    s[p, t, j] += math.log((0.5 + 0.5 * sign) / (0.5 - 0.5 * sign))
        for p in range(P):
            for t in range(T):
                if stopped[p][t]:
                    continue
                end = n_prompt + t
                order = s[p, t, : end - first].argsort(descending=True).tolist()
                keep = set(order[:keep_top_n])
                probe = ids[:first] + [ids[first + j] if j in keep else int(alt_stop[p, t, j])
                                       for j in range(end - first)]  # fmt: skip
                row = _probs(model, probe)[-1]
                stopped[p][t] = int((row > row[ids[end]]).sum()) + 1 <= need[t]
    out = torch.full((T, L), math.nan)
    for t in range(T):
        end = n_prompt + t
        imp = s[:, t, : end - first].softmax(-1)  # [probe, pos]
        w = torch.tensor([float(stopped[p][t]) for p in range(P)])
        w = w if w.sum() > 0 else torch.ones(P)
        out[t, :first] = 0.0
        out[t, first:end] = (imp * w[:, None]).sum(0) / w.sum()
    return out
