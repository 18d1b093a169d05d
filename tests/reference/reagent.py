"""Slow ReAGent: one probe, one step, one prefix per forward pass, explicit loops; decoder-only
(:func:`ref_reagent`) and encoder-decoder (:func:`ref_reagent_seq2seq`).

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


def _seq2seq_probs(model, src, dec):
    with torch.no_grad():
        out = model.original_model(
            input_ids=torch.tensor([src]), decoder_input_ids=torch.tensor([dec])
        )
    return out.logits[0].float().softmax(-1)


def ref_reagent_seq2seq(model, src, dec, n_prompt=1, *, keep_top_n=5, top_k=3, ratio=0.3,
                        steps=3000, probes=16, seed=0):  # fmt: skip
    """ReAGent scores of one encoder-decoder example: ``(source [step, source_pos], target
    [step, pos])``, NaN where unseen. Replaceable: the non-special source tokens, then the decoder
    input after its start token; source replacements uniform over the non-special tokens, decoder
    ones from the model's next-token distribution. Same draws in the same order as the method."""
    specials = special_ids(model)
    S, L, P = len(src), len(dec), probes
    T = L - n_prompt
    slots = [("src", j) for j in range(S) if src[j] not in specials]
    slots += [("dec", j) for j in range(1, L)]
    n = len(slots)
    gen = torch.Generator().manual_seed(seed)
    full = _seq2seq_probs(model, src, dec)  # row j-1 predicts decoder position j
    d_vocab = full.shape[-1]
    dists = []
    for side, j in slots:
        d = torch.ones(d_vocab) if side == "src" else full[j - 1].clone()
        d[specials] = 0.0
        d[src[j] if side == "src" else dec[j]] = 0.0
        dists.append((d / d.sum()).cumsum(0))

    def alternatives(u):  # u [..., n] -> token ids, one per slot
        out = torch.zeros(u.shape, dtype=torch.long)
        for k in range(n):
            out[..., k] = torch.searchsorted(dists[k], u[..., k].contiguous() * dists[k][-1],
                                             right=True)  # fmt: skip
        return out.clamp(max=d_vocab - 1)

    def seen(t):  # slots step t sees: every source slot, the decoder ones before its target
        return [k for k, (side, j) in enumerate(slots) if side == "src" or j < n_prompt + t]

    def rebuild(values):  # values: one id per slot -> (source, decoder input)
        s, d = list(src), list(dec)
        for (side, j), v in zip(slots, values, strict=True):
            (s if side == "src" else d)[j] = v
        return s, d

    originals = [src[j] if side == "src" else dec[j] for side, j in slots]
    p_clean = [full[n_prompt + t - 1, dec[n_prompt + t]].item() for t in range(T)]
    need = [max(top_k, int((full[n_prompt + t - 1] > p_clean[t]).sum()) + 1) for t in range(T)]
    s = torch.rand(P, T, n, generator=gen)
    stopped = [[False] * T for _ in range(P)]
    for _ in range(steps):
        if all(all(row) for row in stopped):
            break
        u_mask = torch.rand(P, n, generator=gen)
        alt = alternatives(torch.rand(P, n, generator=gen))
        alt_stop = alternatives(torch.rand(P, T, n, generator=gen))
        for p in range(P):
            if all(stopped[p]):
                continue
            mask = (u_mask[p] < ratio).tolist()
            new_src, new_dec = rebuild([int(a) if m else o for o, a, m in
                                        zip(originals, alt[p].tolist(), mask)])  # fmt: skip
            for t in range(T):
                if stopped[p][t]:
                    continue
                end = n_prompt + t
                delta = p_clean[t] - _seq2seq_probs(model, new_src, new_dec[:end])[-1, dec[end]]
                for k in seen(t):
                    sign = delta.item() if mask[k] else -delta.item()
                    s[p, t, k] += math.log((0.5 + 0.5 * sign) / (0.5 - 0.5 * sign))
        for p in range(P):
            for t in range(T):
                if stopped[p][t]:
                    continue
                end, ks = n_prompt + t, seen(t)
                order = [ks[i] for i in s[p, t, ks].argsort(descending=True).tolist()]
                keep = set(order[:keep_top_n])
                values = [originals[k] if k in keep or k not in ks else int(alt_stop[p, t, k])
                          for k in range(n)]  # fmt: skip
                probe_src, probe_dec = rebuild(values)
                row = _seq2seq_probs(model, probe_src, probe_dec[:end])[-1]
                stopped[p][t] = int((row > row[dec[end]]).sum()) + 1 <= need[t]
    source, target = torch.zeros(T, S), torch.full((T, L), math.nan)
    for t in range(T):
        ks = seen(t)
        imp = s[:, t, ks].softmax(-1)  # [probe, slot]
        w = torch.tensor([float(stopped[p][t]) for p in range(P)])
        w = w if w.sum() > 0 else torch.ones(P)
        mean = (imp * w[:, None]).sum(0) / w.sum()
        target[t, : n_prompt + t] = 0.0
        for k, v in zip(ks, mean.tolist(), strict=True):
            side, j = slots[k]
            (source if side == "src" else target)[t, j] = v
    return source, target
