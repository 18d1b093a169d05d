"""Slow, obviously-correct ALTI-Logit on encoder–decoder models: every term pushed forward.

Where hooklab carries one readout vector down the decoder, this reference takes every term of
the decoder's residual stream at the step's position (each head's update through each key,
each MLP update) and pushes it *forward*, one vector at a time, through every norm after it,
each applied as the norm with its divisor fixed at the input it recorded (a post-norm after
each sublayer in Marian and BART; the final norm in T5), then the unembedding, times T5's
``d_model ** -0.5`` when its embeddings are tied (read from the Hugging Face config). The
credit to tokens uses ALTI(+) matrices from :func:`hooklab.mixing.alti_seq2seq.part_matrices`
(checked elsewhere against their own references) composed in explicit loops.
"""

from __future__ import annotations

import torch

from hooklab.hooks import recorder, temporary_hooks
from hooklab.mixing.adapter import Example
from hooklab.mixing.alti_seq2seq import part_matrices

SUBLAYERS = (("self_attn", "ln1"), ("cross_attn", "ln2"), ("mlp", "ln3"))


def _record(model, src, dec):
    n_layers = len(model.decoder_blocks)
    kinds = ["hook_in", "mlp.hook_out"]
    kinds += [f"{m}.hook_{k}" for m in ("self_attn", "cross_attn") for k in ("v", "pattern")]
    kinds += [f"{norm}.hook_in" for _, norm in SUBLAYERS]
    names = [f"decoder_blocks.{la}.{k}" for la in range(n_layers) for k in kinds]
    names += ["decoder_ln_final.hook_in"]
    hooks, cache = recorder([n for n in names if n in model.hook_dict])
    with temporary_hooks(model, hooks):
        logits = model(torch.tensor([src]), decoder_input_ids=torch.tensor([dec]))
    return {k: v[0] for k, v in cache.items()}, logits[0]


def _apply(norm, z, c):
    """``norm`` applied to ``c`` with its divisor fixed at the input ``z`` (no bias)."""
    if getattr(norm, "bias", None) is not None:  # LayerNorm
        s = ((z - z.mean()).pow(2).mean() + norm.eps).sqrt()
        return norm.weight * (c - c.mean()) / s
    s = (z.pow(2).mean() + norm.variance_epsilon).sqrt()  # T5's RMSNorm
    return norm.weight * c / s


def _logit_of(model, act, q, u, c, layer, sub, post):
    """The logit update of ``c`` added at decoder ``layer``'s sublayer ``sub`` (0 self, 1
    cross, 2 mlp) at position ``q``, pushed through every later norm."""
    for la in range(layer, len(model.decoder_blocks)):
        for k, (_, norm_name) in enumerate(SUBLAYERS):
            if post and (la, k) >= (layer, sub):
                norm = getattr(model.decoder_blocks[la], norm_name).original_component
                c = _apply(norm, act[f"decoder_blocks.{la}.{norm_name}.hook_in"][q], c)
    if "decoder_ln_final.hook_in" in act:
        c = _apply(model.decoder_ln_final.original_component, act["decoder_ln_final.hook_in"][q], c)
    config = model.original_model.config
    if config.model_type == "t5" and config.tie_word_embeddings:
        c = c * config.d_model**-0.5
    return float(c @ u)


@torch.no_grad()
def ref_seq2seq_alti_logit(model, src, dec, query, target, foil=None):
    """``(scores [src + dec, decoder layer], logit)`` of one step, with ``mlp=True``."""
    act, logits = _record(model, src, dec)
    u = model.W_U[:, target] - (0 if foil is None else model.W_U[:, foil])
    logit = float(logits[query, target] - (0 if foil is None else logits[query, foil]))
    x0 = act["decoder_blocks.0.hook_in"]
    post = not torch.allclose(act["decoder_blocks.0.ln1.hook_in"], x0)  # norm after the sum
    example = Example(tuple(src), tuple(dec))
    n_src, n_dec, n_layers = len(src), len(dec), len(model.decoder_blocks)
    encoder = part_matrices(model, example, "encoder", layers=range(len(model.encoder_blocks)))
    self_c = part_matrices(model, example, "decoder", layers=range(n_layers))
    cross_c = part_matrices(model, example, "cross", layers=range(n_layers))
    r_enc = torch.eye(n_src, dtype=u.dtype)
    for c in encoder:
        r_enc = c @ r_enc
    from_source = torch.zeros(n_src, n_src + n_dec, dtype=u.dtype)
    from_source[:, :n_src] = r_enc
    rolled = torch.zeros(n_dec, n_src + n_dec, dtype=u.dtype)
    for i in range(n_dec):
        rolled[i, n_src + i] = 1.0
    scores = torch.zeros(n_src + n_dec, n_layers, dtype=u.dtype)
    for la in range(n_layers):
        block = model.decoder_blocks[la]
        for sub, (module, keys) in enumerate((("self_attn", rolled), ("cross_attn", from_source))):
            attn = getattr(block, module)
            v, pattern = (act[f"decoder_blocks.{la}.{module}.hook_{k}"] for k in ("v", "pattern"))
            for j in range(v.shape[0]):
                for h in range(pattern.shape[0]):
                    term = pattern[h, query, j] * (v[j, h] @ attn.W_O[h])
                    delta = _logit_of(model, act, query, u, term, la, sub, post)
                    for s in range(n_src + n_dec):
                        scores[s, la] += delta * keys[j, s]
        mid = torch.zeros_like(rolled)  # C_self · R_{ℓ-1}, then the cross sublayer's mixing
        for i in range(n_dec):
            for j in range(n_dec):
                mid[i] += self_c[la, i, j] * rolled[j]
        post_mix = torch.zeros_like(rolled)
        for i in range(n_dec):
            for k in range(n_src):
                post_mix[i] += cross_c[la, i, k] * from_source[k]
            post_mix[i] += (1 - cross_c[la, i].sum()) * mid[i]  # the residual's share
        mlp = act[f"decoder_blocks.{la}.mlp.hook_out"][query]
        delta = _logit_of(model, act, query, u, mlp, la, 2, post)
        for s in range(n_src + n_dec):
            scores[s, la] += delta * post_mix[query, s]
        rolled = post_mix
    return scores, logit


def _record_all(model, src, dec):
    """Every hook the route reference reads, from one forward pass (no batch)."""
    names = []
    for stack, blocks in (("encoder_blocks", model.encoder_blocks),
                          ("decoder_blocks", model.decoder_blocks)):  # fmt: skip
        mods = ("attn",) if stack == "encoder_blocks" else ("self_attn", "cross_attn")
        kinds = ["hook_in", "hook_out", "mlp.hook_out"]
        kinds += [f"{m}.hook_{k}" for m in mods for k in ("v", "pattern", "out")]
        kinds += [f"ln{n}.hook_{e}" for n in (1, 2, 3) for e in ("in", "out")]
        names += [f"{stack}.{la}.{k}" for la in range(len(blocks)) for k in kinds]
    hooks, cache = recorder([n for n in names if n in model.hook_dict])
    with temporary_hooks(model, hooks):
        model(torch.tensor([src]), decoder_input_ids=torch.tensor([dec]))
    return {k: v[0] for k, v in cache.items()}


def _sublayer_parts(model, act, stack, layer, sub, i, post, per_head):
    """``(parts, total)`` of state i after sublayer ``sub`` of ``stack``'s block ``layer``,
    term by term; ``sub``: the attention module's name, or "mlp"."""
    prefix, block = f"{stack}.{layer}", getattr(model, stack)[layer]
    subs = ["attn", "mlp"] if stack == "encoder_blocks" else ["self_attn", "cross_attn", "mlp"]
    k = subs.index(sub)
    norm_name = f"ln{k + 1}"
    x = act[f"{prefix}.hook_in"][i]  # the residual input, sublayer by sublayer
    for before in subs[:k]:
        x = _state_after(act, prefix, before, subs.index(before), i, post)
    if sub == "mlp":
        parts = [x, act[f"{prefix}.mlp.hook_out"][i]]
    else:
        attn = getattr(block, sub)
        v, pattern = (act[f"{prefix}.{sub}.hook_{kind}"] for kind in ("v", "pattern"))
        heads = [[pattern[h, i, j] * (v[j, h] @ attn.W_O[h]) for j in range(v.shape[0])]
                 for h in range(pattern.shape[0])]  # fmt: skip
        parts = (
            [p for row in heads for p in row]
            if per_head
            else [sum(row[j] for row in heads) for j in range(v.shape[0])]
        )
        parts.append(x)
    total = _state_after(act, prefix, sub, k, i, post)
    if post:
        norm = getattr(block, norm_name).original_component
        parts = [_apply(norm, act[f"{prefix}.{norm_name}.hook_in"][i], p) for p in parts]
    return parts, total


def _state_after(act, prefix, sub, k, i, post):
    """The recorded state after sublayer ``sub`` (index ``k``) at position i."""
    if post:
        return act[f"{prefix}.ln{k + 1}.hook_out"][i]
    if sub == "mlp":
        return act[f"{prefix}.hook_out"][i]
    x = act[f"{prefix}.hook_in"][i]
    for name in ("attn", "self_attn", "cross_attn"):
        if f"{prefix}.{name}.hook_out" in act:
            x = x + act[f"{prefix}.{name}.hook_out"][i]
        if name == sub:
            return x
    raise KeyError(sub)


@torch.no_grad()
def ref_seq2seq_route_weights(model, src, dec, edges, *, per_head):
    """Each route edge's importance (``(source_depth, source_pos, target_depth, target_pos,
    kind, head)``; kind 0 attention, 1 residual, 2 mlp, 3 cross), from the target state's
    parts recomputed term by term from recorded hooks (through the post-norm, fixed at its
    recorded input, in Marian and BART), one edge at a time."""
    from tests.reference.flow import _weight

    act = _record_all(model, src, dec)
    post = not torch.allclose(act["decoder_blocks.0.ln1.hook_in"], act["decoder_blocks.0.hook_in"])
    n_src, weights, cache = len(src), [], {}
    for _, sp, td, tp, kind, head in edges:
        if tp < n_src:  # an encoder state: 2 per layer
            stack, layer, k, i, subs = (
                "encoder_blocks",
                (td - 1) // 2,
                (td - 1) % 2,
                tp,
                ["attn", "mlp"],
            )
        else:
            stack, layer, k, i = "decoder_blocks", (td - 1) // 3, (td - 1) % 3, tp - n_src
            subs = ["self_attn", "cross_attn", "mlp"]
        if (stack, layer, k, i) not in cache:  # one state's parts serve all its edges
            cache[stack, layer, k, i] = _sublayer_parts(
                model, act, stack, layer, subs[k], i, post, per_head
            )
        parts, total = cache[stack, layer, k, i]
        if subs[k] == "mlp":
            index = kind - 1
        elif kind == 1:
            index = len(parts) - 1
        else:
            n_keys = n_src if kind == 3 else (len(dec) if stack == "decoder_blocks" else n_src)
            j = sp if kind == 3 or stack == "encoder_blocks" else sp - n_src
            index = head * n_keys + j if per_head else j
        weights.append(_weight(parts, total, index))
    return torch.tensor(weights, dtype=torch.float64)
