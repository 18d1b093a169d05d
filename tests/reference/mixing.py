"""Slow, obviously-correct context mixing: one intervention per forward pass.

Value zeroing: for each layer and each token j, a full forward pass with token j's value
vectors zeroed at that layer only (a ``hook_v`` edit; earlier layers are untouched, so the
layer runs from its clean input), and the distance of every token's layer output from the
clean one. Attention knockout: the attention pattern is replaced by hand with the blocked
entries zeroed and each row renormalised (at ``hook_pattern``, or, on every bridge, by
recomputing ``z`` from that pattern and the values and putting it in at ``hook_z``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hooklab.hooks import hook_name, recorder, temporary_hooks


def _run(model, ids, hooks):
    with temporary_hooks(model, hooks):
        return model(torch.tensor([ids]), prepend_bos=False)


def _resid_post(model, ids, layer, v_hook=None):
    name = hook_name("resid_post", layer)
    hooks, kept = recorder([name])
    if v_hook is not None:
        hooks.append((hook_name("v", layer), v_hook))
    _run(model, ids, hooks)
    return kept[name][0]


def _distance(a, b, metric):
    if metric == "cosine":
        return 1 - F.cosine_similarity(a, b, dim=-1)
    return torch.linalg.vector_norm(a - b, dim=-1)


def ref_value_zeroing(model, ids, layer, heads=None, metric="cosine", normalize=True):
    """``[query_pos, key_pos]`` scores of one layer: one forward pass per zeroed token."""
    clean = _resid_post(model, ids, layer)
    n = len(ids)
    scores = torch.zeros(n, n, dtype=clean.dtype)
    for j in range(n):

        def zero(v, hook, j=j):
            v = v.clone()  # [batch, pos, kv_head, d_head]
            if heads is None:
                v[:, j] = 0
            else:
                v[:, j, heads] = 0
            return v

        post = _resid_post(model, ids, layer, zero)
        for i in range(n):
            scores[i, j] = _distance(post[i], clean[i], metric)
    if normalize:
        scores = scores / scores.sum(-1, keepdim=True)
    return scores


def ref_value_zeroing_per_token(model, ids, layers):
    """Inseq's algorithm: one forward per zeroed token, values zeroed in every layer and each
    layer's output put back to the clean one (so every layer runs from its clean input).
    Returns normalised cosine scores ``[layer, query_pos, key_pos]``."""
    record, cache = recorder([hook_name("resid_post", la) for la in layers])
    _run(model, ids, record)
    clean = {la: cache[hook_name("resid_post", la)] for la in layers}
    n = len(ids)
    scores = torch.zeros(len(layers), n, n, dtype=clean[layers[0]].dtype)
    for j in range(n):

        def zero(v, hook, j=j):
            v = v.clone()
            v[:, j] = 0
            return v

        def swap(layer, j=j):
            def fn(x, hook):
                scores[layers.index(layer), :, j] = _distance(x[0], clean[layer][0], "cosine")
                return clean[layer]

            return fn

        hooks = [(hook_name("v", la), zero) for la in layers]
        _run(model, ids, hooks + [(hook_name("resid_post", la), swap(la)) for la in layers])
    return scores / scores.sum(-1, keepdim=True)


def ref_knockout_probability(model, ids, blocked_layers, queries, keys, target_id):
    """P(target) at the last position with edges ``queries <- keys`` removed by hand."""
    q, k = torch.tensor(queries)[:, None], torch.tensor(keys)[None, :]

    def mask(pattern, hook):
        pattern = pattern.clone()  # [batch, head, query_pos, key_pos]
        pattern[:, :, q, k] = 0
        return pattern / pattern.sum(-1, keepdim=True)

    hooks = [(hook_name("pattern", layer), mask) for layer in blocked_layers]
    logits = _run(model, ids, hooks)
    return torch.softmax(logits[0, -1].double(), -1)[target_id].item()


def ref_value_zeroing_seq2seq(model, src, tgt, part, layer, heads=None):
    """Encoder–decoder value zeroing of one part and layer: one forward per zeroed token."""
    from hooklab.mixing.adapter import seq2seq_hook_name

    def run(v_hook=None):
        name = seq2seq_hook_name(part, "out", layer)
        hooks, kept = recorder([name])
        if v_hook is not None:
            hooks.append((seq2seq_hook_name(part, "v", layer), v_hook))
        with temporary_hooks(model, hooks):
            model(torch.tensor([src]), decoder_input_ids=torch.tensor([tgt]))
        return kept[name][0]

    clean = run()
    n_keys = len(tgt) if part == "decoder" else len(src)
    scores = torch.zeros(clean.shape[0], n_keys, dtype=clean.dtype)
    for j in range(n_keys):

        def zero(v, hook, j=j):
            v = v.clone()  # [batch, key_pos, head, d_head]
            v[:, j, heads if heads is not None else slice(None)] = 0
            return v

        out = run(zero)
        for i in range(clean.shape[0]):
            scores[i, j] = _distance(out[i], clean[i], "cosine")
    return scores / scores.sum(-1, keepdim=True)


def ref_knockout_seq2seq(model, src, tgt, part, layers, queries, keys, target_id):
    """Encoder–decoder knockout by hand: each blocked layer's z is recomputed from its pattern
    with the blocked entries zeroed and rows renormalised (layer by layer, since a layer's
    pattern depends on the knockouts below it), and put in through ``hook_z``."""
    return ref_knockout_encoder_decoder(model, src, tgt, part, layers, queries, keys, target_id)


def ref_knockout_by_z(run, name, layers, queries, keys, target_id):
    """P(target) at the last position with the edges ``queries <- keys`` removed by hand.

    Each blocked layer's ``z`` is recomputed from its recorded pattern with the blocked entries
    zeroed and each row renormalised (``p'_k = p_k / (1 - sum of the blocked p)``) and put in
    through ``hook_z``, layer by layer (a layer's pattern depends on the knockouts below it).
    No score, mask or attention-function edit, so it holds on bridges that ignore those.

    Args:
        run: ``run(hooks) -> logits [1, pos, d_vocab]``, one forward with ``hooks`` attached.
        name: ``name(kind, layer) -> hook name`` for ``kind`` in "pattern", "v", "z".
    """
    q, k = torch.tensor(queries)[:, None], torch.tensor(keys)[None, :]
    fixed = {}

    def put(layer):
        return lambda z, hook: fixed[layer]

    def run_fixed(extra):
        return run([(name("z", la), put(la)) for la in fixed] + extra)

    for layer in sorted(layers):
        names = [name(kind, layer) for kind in ("pattern", "v")]
        hooks, seen = recorder(names)
        run_fixed(hooks)
        pattern = seen[names[0]].clone()  # [batch, head, query_pos, key_pos]
        pattern[:, :, q, k] = 0
        pattern = pattern / pattern.sum(-1, keepdim=True)
        v = seen[names[1]]  # [batch, key_pos, kv_head, d_head]
        v = v.repeat_interleave(pattern.shape[1] // v.shape[2], dim=2)
        fixed[layer] = torch.einsum("bhqk,bkhd->bqhd", pattern, v)
    logits = run_fixed([])
    return torch.softmax(logits[0, -1].double(), -1)[target_id].item()


def ref_knockout_decoder_only(model, ids, layers, queries, keys, target_id):
    """:func:`ref_knockout_by_z` on a decoder-only bridge (any family)."""
    return ref_knockout_by_z(
        lambda hooks: _run(model, ids, hooks),
        lambda kind, layer: hook_name(kind, layer),
        layers, queries, keys, target_id,
    )  # fmt: skip


def ref_knockout_encoder_decoder(model, src, tgt, part, layers, queries, keys, target_id):
    """:func:`ref_knockout_by_z` on an encoder–decoder bridge (``part``: "encoder", "decoder"
    self-attention or "cross"-attention)."""
    attention = {
        "encoder": "encoder_blocks.{}.attn",
        "decoder": "decoder_blocks.{}.self_attn",
        "cross": "decoder_blocks.{}.cross_attn",
    }[part]

    def run(hooks):
        with temporary_hooks(model, hooks):
            return model(torch.tensor([src]), decoder_input_ids=torch.tensor([tgt]))

    return ref_knockout_by_z(
        run,
        lambda kind, layer: f"{attention.format(layer)}.hook_{kind}",
        layers, queries, keys, target_id,
    )  # fmt: skip


def _stable_cosine_distance(a, b):
    """``1 - cos(a, b)`` per row as ``|â - b̂|² / 2`` (no cancellation near 0)."""
    a, b = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    return (a - b).pow(2).sum(-1) / 2


def value_zeroing_by_pattern(model, ids, layer, heads=None):
    """Unnormalised cosine distances ``[query_pos, key_pos]`` of one decoder-only layer.

    Independent of hooklab's mixing code: for each key j, one full forward pass (an explicit
    loop) with ``blocks.{layer}.attn.hook_pattern`` replaced so that key j's column is 0 for the
    query heads of the chosen key/value heads (zeroing a key's attention column is zeroing its
    value vector; on grouped-query models a key/value head serves ``group`` query heads), and
    the distance of every token's ``blocks.{layer}.hook_resid_post`` from the clean one. Each
    pass checks that the edit reached ``hook_z`` (z = edited pattern @ v).
    """
    names = {k: f"blocks.{layer}.{k}" for k in ("hook_resid_post", "attn.hook_v", "attn.hook_z")}
    pattern_name = f"blocks.{layer}.attn.hook_pattern"
    seen = {}

    def keep(name):
        def fn(x, hook):
            seen[name] = x.detach()

        return fn

    def run(edit=None):
        hooks = [] if edit is None else [(pattern_name, edit)]
        hooks += [(pattern_name, keep(pattern_name))] + [(n, keep(n)) for n in names.values()]
        with model.hooks(fwd_hooks=hooks, reset_hooks_end=True):
            model(torch.tensor([ids]), prepend_bos=False)
        return seen[names["hook_resid_post"]][0]

    clean = run()
    n = len(ids)
    n_heads, n_kv = seen[pattern_name].shape[1], seen[names["attn.hook_v"]].shape[2]
    group = n_heads // n_kv
    kv = range(n_kv) if heads is None else heads
    query_heads = [h * group + g for h in kv for g in range(group)]
    scores = torch.zeros(n, n, dtype=clean.dtype)
    for j in range(n):

        def zero_column(pattern, hook, j=j):
            pattern = pattern.clone()  # [batch, head, query_pos, key_pos]
            pattern[:, query_heads, :, j] = 0
            return pattern

        post = run(zero_column)
        v = seen[names["attn.hook_v"]].repeat_interleave(group, dim=2)
        z = torch.einsum("bhqk,bkhd->bqhd", seen[pattern_name], v)
        if not torch.allclose(z, seen[names["attn.hook_z"]], atol=1e-5, rtol=1e-4):
            raise RuntimeError(f"the hook_pattern edit at layer {layer} did not take effect")
        scores[:, j] = _stable_cosine_distance(post, clean)
    return scores


def value_zeroing_seq2seq_by_forward(model, src, tgt, part, layer, heads=None):
    """Unnormalised cosine distances ``[query_pos, key_pos]`` of one encoder–decoder part.

    Independent of hooklab's mixing code. These bridges discard ``hook_pattern`` edits, so for
    each key j one full forward pass zeroes key j's value vectors at the part's ``hook_v``
    (keys: the source for "encoder" and "cross", the target for "decoder") and the block's
    output (``hook_out`` of the encoder or decoder block) is compared with the clean one.
    """
    attention = {"encoder": "attn", "decoder": "self_attn", "cross": "cross_attn"}[part]
    stack = "encoder_blocks" if part == "encoder" else "decoder_blocks"
    out_name, v_name = f"{stack}.{layer}.hook_out", f"{stack}.{layer}.{attention}.hook_v"
    seen = {}

    def run(edit=None):
        def keep(x, hook):
            seen["out"] = x.detach()

        hooks = ([] if edit is None else [(v_name, edit)]) + [(out_name, keep)]
        with model.hooks(fwd_hooks=hooks, reset_hooks_end=True):
            model(torch.tensor([src]), decoder_input_ids=torch.tensor([tgt]))
        return seen["out"][0]

    clean = run()
    n_keys = len(tgt) if part == "decoder" else len(src)
    scores = torch.zeros(clean.shape[0], n_keys, dtype=clean.dtype)
    for j in range(n_keys):

        def zero(v, hook, j=j):
            v = v.clone()  # [batch, key_pos, kv_head, d_head]
            v[:, j, heads if heads is not None else slice(None)] = 0
            return v

        scores[:, j] = _stable_cosine_distance(run(zero), clean)
    return scores
