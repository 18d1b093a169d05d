"""Slow, obviously-correct information flow: ALTI and ALTI-Logit as explicit loops.

Value vectors are recomputed from the weights (``LN1(x_j) W_V + b_V``, the norm's output read
from its hook), every transformed vector ``T_i(x_j)`` is summed head by head, every distance
and logit update is computed one (query, key) pair at a time. Written for sequential pre-norm
blocks (the tiny GPT-2 and Llama fixtures, and Granite, whose constants are read from its
Hugging Face config: ``residual_multiplier`` scales each branch, ``logits_scaling`` divides
the logits).
"""

from __future__ import annotations

import torch

from hooklab.hooks import hook_name, recorder, temporary_hooks

KINDS = ("resid_pre", "resid_mid", "resid_post", "mlp_out", "ln1", "pattern")


def config_constant(model, name, default=1.0):
    """A scalar of the Hugging Face config (Granite's multipliers), ``default`` if absent."""
    return float(getattr(model.original_model.config, name, None) or default)


@torch.no_grad()
def run(model, ids):
    """``(activations without batch, logits [pos, d_vocab])`` of one forward pass."""
    n_layers = model.cfg.n_layers
    names = [hook_name(k, la) for la in range(n_layers) for k in KINDS]
    names += ["ln_final.hook_in", "ln_final.hook_out"]
    hooks, cache = recorder(names)
    with temporary_hooks(model, hooks):
        logits = model(torch.tensor([ids]), prepend_bos=False)
    return {k: v[0] for k, v in cache.items()}, logits[0]


@torch.no_grad()
def transformed_vectors(model, act, layer):
    """``(T [query_pos, key_pos, d_model], b_O, y = resid_mid)`` of one layer, loop by loop."""
    attn = model.blocks[layer].attn
    x, y = act[hook_name("resid_pre", layer)], act[hook_name("resid_mid", layer)]
    ln1, pattern = act[hook_name("ln1", layer)], act[hook_name("pattern", layer)]
    n, d = x.shape
    n_heads, n_kv = attn.W_O.shape[0], attn.W_V.shape[0]
    m = config_constant(model, "residual_multiplier")  # resid_mid = x + m · attention
    t = torch.zeros(n, n, d, dtype=x.dtype)
    for i in range(n):
        for j in range(n):
            for h in range(n_heads):
                g = h // (n_heads // n_kv)  # the key/value head of query head h
                v = ln1[j] @ attn.W_V[g] + attn.b_V[g]
                t[i, j] += m * pattern[h, i, j] * (v @ attn.W_O[h])
            if i == j:
                t[i, j] += x[i]
    return t, m * attn.b_O.detach(), y


@torch.no_grad()
def ref_alti(model, ids):
    """``[layer, query_pos, key_pos]`` ALTI matrices (rows normalised), pair by pair."""
    act, _ = run(model, ids)
    out = []
    for layer in range(model.cfg.n_layers):
        t, _, y = transformed_vectors(model, act, layer)
        n = len(ids)
        c = torch.zeros(n, n, dtype=y.dtype)
        for i in range(n):
            for j in range(n):
                c[i, j] = max(0.0, float(y[i].abs().sum() - (y[i] - t[i, j]).abs().sum()))
            c[i] /= c[i].sum()
        out.append(c)
    return torch.stack(out)


def _readout(model, x, u):
    """The final norm as a linear map with its scale fixed at ``x``, read along ``u``."""
    norm = model.ln_final.original_component
    if hasattr(norm, "bias") and norm.bias is not None:  # LayerNorm
        centre = torch.eye(len(x), dtype=x.dtype) - 1 / len(x)
        scale = ((x - x.mean()).pow(2).mean() + norm.eps).sqrt()
        return centre @ (norm.weight * u) / scale
    scale = (x.pow(2).mean() + norm.variance_epsilon).sqrt()  # Llama RMSNorm
    return norm.weight * u / scale


@torch.no_grad()
def ref_alti_logit(model, ids, query, target, foil=None):
    """``(scores [pos, layer], remainder, logit)`` of one step, with ``mlp=True``."""
    act, logits = run(model, ids)
    k = 1 / config_constant(model, "logits_scaling")  # logits = k · (ln_final(x) W_U + b_U)
    u = k * (model.W_U[:, target] - (0 if foil is None else model.W_U[:, foil]))
    logit = logits[query, target] - (0 if foil is None else logits[query, foil])
    bias = k * (model.b_U[target] - (0 if foil is None else model.b_U[foil]))
    r = _readout(model, act["ln_final.hook_in"][query], u)
    remainder = float(act[hook_name("resid_pre", 0)][query] @ r + bias)
    beta = getattr(model.ln_final.original_component, "bias", None)  # LayerNorm only
    remainder += 0.0 if beta is None else float(beta @ u)
    alti = ref_alti(model, ids)
    n, n_layers = len(ids), model.cfg.n_layers
    rolled = [torch.eye(n, dtype=r.dtype)]
    for layer in range(n_layers):
        rolled.append(alti[layer] @ rolled[-1])
    scores = torch.zeros(n, n_layers, dtype=r.dtype)
    for layer in range(n_layers):
        t, b_o, _ = transformed_vectors(model, act, layer)
        x = act[hook_name("resid_pre", layer)]
        for j in range(n):
            attn_part = t[query, j] - (x[query] if j == query else 0)  # the residual is no update
            for s in range(n):
                scores[s, layer] += float(attn_part @ r) * rolled[layer][j, s]
        mlp = float(act[hook_name("mlp_out", layer)][query] @ r)
        for s in range(n):
            scores[s, layer] += mlp * rolled[layer + 1][query, s]
        remainder += float(b_o @ r)
    return scores, remainder, float(logit)


@torch.no_grad()
def ref_post_norm_alti(model, src_ids, layer):
    """``[query_pos, key_pos]`` ALTI of a post-norm encoder block (Marian, BART: ``y_i =
    LN(x_i + Σ_j a_ij + b_O)``), the LayerNorm's statistics taken at its actual input, pair by
    pair; values recomputed from the weights (``x_j W_V + b_V``)."""
    name = f"encoder_blocks.{layer}.hook_in"
    pattern_name = f"encoder_blocks.{layer}.attn.hook_pattern"
    hooks, cache = recorder([name, pattern_name])
    with temporary_hooks(model, hooks):
        model(torch.tensor([src_ids]), decoder_input_ids=torch.tensor([[0]]))
    x, pattern = cache[name][0], cache[pattern_name][0]
    block = model.encoder_blocks[layer]
    attn, norm = block.attn, block.ln1.original_component
    n, d = x.shape
    a = torch.zeros(n, n, d, dtype=x.dtype)
    for i in range(n):
        for j in range(n):
            for h in range(attn.W_O.shape[0]):
                a[i, j] += pattern[h, i, j] * ((x[j] @ attn.W_V[h] + attn.b_V[h]) @ attn.W_O[h])
    c = torch.zeros(n, n, dtype=x.dtype)
    for i in range(n):
        z = x[i] + a[i].sum(0) + attn.b_O
        y = norm(z)
        s = ((z - z.mean()).pow(2).mean() + norm.eps).sqrt()
        for j in range(n):
            part = a[i, j] + (x[i] if i == j else 0)
            t = norm.weight * (part - part.mean()) / s
            c[i, j] = max(0.0, float(y.abs().sum() - (y - t).abs().sum()))
        c[i] /= c[i].sum()
    return c
