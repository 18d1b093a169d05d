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
def transformed_vectors(model, act, layer, kv_heads=None):
    """``(T [query_pos, key_pos, d_model], b_O, y = resid_mid)`` of one layer, loop by loop.

    With ``kv_heads`` (key/value heads), only the query heads reading them add to ``T``; the
    others' output is returned too, ``(T, b_O, y, rest [query_pos, d_model])``.
    """
    attn = model.blocks[layer].attn
    x, y = act[hook_name("resid_pre", layer)], act[hook_name("resid_mid", layer)]
    ln1, pattern = act[hook_name("ln1", layer)], act[hook_name("pattern", layer)]
    n, d = x.shape
    n_heads, n_kv = attn.W_O.shape[0], attn.W_V.shape[0]
    m = config_constant(model, "residual_multiplier")  # resid_mid = x + m · attention
    t = torch.zeros(n, n, d, dtype=x.dtype)
    rest = torch.zeros(n, d, dtype=x.dtype)
    for i in range(n):
        for j in range(n):
            for h in range(n_heads):
                g = h // (n_heads // n_kv)  # the key/value head of query head h
                v = ln1[j] @ attn.W_V[g] + attn.b_V[g]
                term = m * pattern[h, i, j] * (v @ attn.W_O[h])
                if kv_heads is None or g in kv_heads:
                    t[i, j] += term
                else:
                    rest[i] += term
            if i == j:
                t[i, j] += x[i]
    if kv_heads is None:
        return t, m * attn.b_O.detach(), y
    return t, m * attn.b_O.detach(), y, rest


@torch.no_grad()
def ref_alti_heads(model, ids, kv_heads):
    """``[layer, query_pos, key_pos]`` ALTI with only ``kv_heads``' terms credited to the keys
    and the other heads' output one more part (dropped after normalising), pair by pair."""
    act, _ = run(model, ids)
    out = []
    for layer in range(model.cfg.n_layers):
        t, _, y, rest = transformed_vectors(model, act, layer, kv_heads)
        n = len(ids)
        c = torch.zeros(n, n + 1, dtype=y.dtype)
        for i in range(n):
            parts = [*t[i], rest[i]]
            for j, part in enumerate(parts):
                c[i, j] = max(0.0, float(y[i].abs().sum() - (y[i] - part).abs().sum()))
            c[i] /= c[i].sum()
        out.append(c[:, :n])
    return torch.stack(out)


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


def _route_acts(model, ids):
    """Every hook the route reference reads, recorded in one forward pass (no batch)."""
    n_layers = model.cfg.n_layers
    kinds = ("resid_pre", "resid_mid", "resid_post", "mlp_out", "pattern", "v")
    names = [hook_name(k, la) for la in range(n_layers) for k in kinds]
    names += [f"blocks.{la}.ln1_post.hook_{e}" for la in range(n_layers) for e in ("in", "out")]
    hooks, cache = recorder([n for n in names if n in model.hook_dict])
    with temporary_hooks(model, hooks):
        model(torch.tensor([ids]), prepend_bos=False)
    return {k: v[0] for k, v in cache.items()}


def _weight(parts, total, index):
    """ALTI's proportion of ``parts[index]`` in ``total``, part by part."""
    norms = [max(0.0, float(total.abs().sum() - (total - p).abs().sum())) for p in parts]
    return norms[index] / sum(norms)


def _attention_parts(model, act, layer, tp, n, per_head):
    """Layer ``layer``'s attention terms of query ``tp``: one per head and source token (head
    major), or one per source token summed over heads."""
    attn = model.blocks[layer].attn
    pattern, v = act[hook_name("pattern", layer)], act[hook_name("v", layer)]
    m = config_constant(model, "residual_multiplier")
    group = pattern.shape[0] // v.shape[1]  # query heads per key/value head
    ratio = act.get(f"blocks.{layer}.ln1_post.hook_out")
    if ratio is not None:  # the norm on the attention output, its divisor fixed
        ratio = ratio[tp] / act[f"blocks.{layer}.ln1_post.hook_in"][tp]
    heads = []
    for h in range(pattern.shape[0]):
        row = []
        for j in range(n):
            part = m * pattern[h, tp, j] * (v[j, h // group] @ attn.W_O[h])
            row.append(part if ratio is None else part * ratio)
        heads.append(row)
    if per_head:
        return [p for row in heads for p in row]
    return [sum(heads[h][j] for h in range(len(heads))) for j in range(n)]


@torch.no_grad()
def ref_route_weights(model, ids, edges, *, per_head):
    """The importance of each route edge ``(source_depth, source_pos, target_depth,
    target_pos, kind, head)`` (kind 0 attention, 1 residual, 2 mlp), recomputed one edge at a
    time from recorded hooks: the target state's parts (one per source token and head, through
    ``W_O`` head by head, scaled by the config's ``residual_multiplier``; the residual; the
    MLP update of a parallel block; or the middle state and the MLP update after a sequential
    block's attention), each weighed by ``max(0, ‖y‖₁ - ‖y - part‖₁)`` over their sum. A norm
    on the attention output (Gemma 2/3, OLMo 2: RMSNorms, no bias) is applied to each part as
    the elementwise ratio of its recorded output to its input (the norm with its divisor
    fixed)."""
    act = _route_acts(model, ids)
    n, weights, cache = len(ids), [], {}
    for sd, sp, td, tp, kind, head in edges:
        layer = sd // 2

        def get(k, layer=layer):
            return act.get(hook_name(k, layer))

        if td % 2 == 0 and sd % 2 == 1:  # after a sequential block: resid_mid + mlp_out
            parts = [get("resid_mid")[tp], get("mlp_out")[tp]]
            weights.append(_weight(parts, parts[0] + parts[1], kind - 1))
            continue
        if (layer, tp) not in cache:
            cache[layer, tp] = _attention_parts(model, act, layer, tp, n, per_head)
        parts = list(cache[layer, tp])
        index = (head * n + sp if per_head else sp) if kind == 0 else len(parts) + kind - 1
        parallel = get("resid_mid") is None
        parts.append(get("resid_pre")[tp])
        if parallel:
            parts.append(get("mlp_out")[tp])
        total = (get("resid_post") if parallel else get("resid_mid"))[tp]
        weights.append(_weight(parts, total, index))
    return torch.tensor(weights, dtype=torch.float64)
