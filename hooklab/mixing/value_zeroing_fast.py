"""The fast special path of value zeroing: an analytic recompute of the post-attention part.

Owner of the one shortcut of :mod:`hooklab.mixing.value_zeroing`, used when its option
``fast_path=True`` (the default) and this module proves, on the very activations of the call,
that the model's blocks have the layout it derives; otherwise (and with ``fast_path=False``)
the general path runs the model's own blocks.

The layout (GPT-2, Llama, Mistral, Qwen, Gemma, Phi-3, GPT-BigCode, StarCoder 2, StableLM in
the zoo): pre-norm, attention then MLP, ``attn_out = z W_O + b_O``. Then zeroing ``v_j``
changes token i's attention output by exactly ``-Σ_h a^h_ij v^h_j W^h_O`` and nothing else, so
a clean forward caches the layer's pattern, values and residual stream, and only
``resid_mid + MLP(ln2(resid_mid))`` is recomputed, for the (query, key) pairs with query >=
key (about half of the rows the general path runs, and without the attention). Measured on a
GPT-2-small-shaped random model (12 layers, d_model 768, one CPU thread, 2026-12): 24 tokens,
1.4 s against 4.6 s for the general path (best of 7); 30 tokens, 3.0 s against 7.2 s
(``benchmarks/value_zeroing.py``).

Memory: as many layers per clean forward as fit :data:`hooklab.budget.CAPTURE_ELEMENTS`
(a layer's largest activation is its pattern, head x pos² floats): every layer of a short input
in one forward (a forward per layer would cost as much as the recompute itself on GPT-2 small
at 24 tokens: measured 2.3x slower in all), one layer per forward for a long one (a single
forward caching every layer would hold layer x head x pos² floats, 64 GB for a 7B model at 4k
tokens); each layer's activations are dropped once its scores are computed.

Proof, per call and per layer (nothing is cached, so nothing can go stale): the hook points
exist, and ``z = pattern · v``, ``attn_out = z W_O + b_O``, ``resid_mid = resid_pre +
attn_out`` and ``resid_post = resid_mid + MLP(ln2(resid_mid))`` hold on the clean activations
(:func:`~hooklab.selfcheck.tolerance`). ``tests/test_value_zeroing_zoo.py`` checks on every
family of the zoo that both paths agree, and which families take this one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor

from hooklab.budget import layer_groups
from hooklab.forward import forward
from hooklab.hooks import hook_name
from hooklab.inputs import make_batch
from hooklab.precision import reduction_dtype
from hooklab.selfcheck import tolerance

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

_CACHED = ("resid_pre", "resid_mid", "resid_post", "attn_out", "v", "z", "pattern")


def clean_activations(
    model, ids: list[int], layers: list[int], rows: Sequence[int] | None = None
) -> dict[tuple[str, int], Tensor]:
    """Run the model once on ``ids``; return ``{(kind, layer): activation}`` without batch.

    With ``rows``: every activation but ``v`` cut to those query positions, in that order
    (the pattern to ``[head, len(rows), key_pos]``), as it is recorded: the identities of
    :func:`layout_holds` and the recompute hold row by row."""
    cache: dict[tuple[str, int], Tensor] = {}
    index = None if rows is None else torch.tensor(list(rows), device=model.cfg.device)

    def keep(kind: str, layer: int):
        def fn(activation, hook):
            act = activation.detach()[0]
            if index is not None and kind != "v":
                act = act[:, index] if kind == "pattern" else act[index]
            cache[kind, layer] = act

        return fn

    hooks = [(hook_name(kind, layer), keep(kind, layer)) for layer in layers for kind in _CACHED]
    batch = make_batch([ids], device=model.cfg.device)
    last = torch.tensor([len(ids) - 1], device=model.cfg.device)
    forward(model, batch, hooks=hooks, logits_to_keep=last)
    return cache


def _post_attention(block, resid_mid: Float[Tensor, "batch d_model"]) -> Tensor:
    """Layer output from ``resid_mid``: ``resid_mid + MLP(ln2(resid_mid))``, row by row."""
    x = resid_mid[:, None]  # [n, 1, d_model]: one position per row
    return (x + block.mlp(block.ln2(x)))[:, 0]


def _close(got: Tensor, expected: Tensor) -> bool:
    return bool((got.to(expected.dtype) - expected).abs().max() <= tolerance(expected))


def layout_holds(model, act: Mapping[tuple[str, int], Tensor], layer: int) -> bool:
    """Whether block ``layer`` computes what :func:`analytic_layer_scores` derives (see the
    module doc), checked on the clean activations ``act``."""
    block = model.blocks[layer]
    pre, mid, post = (act[(k, layer)] for k in ("resid_pre", "resid_mid", "resid_post"))
    v, z, pattern, attn_out = (act[(k, layer)] for k in ("v", "z", "pattern", "attn_out"))
    v_q = v.repeat_interleave(pattern.shape[0] // v.shape[1], dim=1)  # [pos, head, d_head]
    if not _close(torch.einsum("hqk,khd->qhd", pattern, v_q), z):
        return False
    bias = attn_out - torch.einsum("qhd,hdm->qm", z, block.attn.W_O)
    if not (_close(bias, bias[:1].expand_as(bias)) and _close(pre + attn_out, mid)):
        return False
    try:  # a fused or containerless MLP (BLOOM, OPT) cannot be called on its own
        return _close(_post_attention(block, mid), post)
    except (TypeError, RuntimeError):
        return False


def analytic_layer_scores(
    model,
    layer: int,
    act: Mapping[tuple[str, int], Tensor],
    heads: list[int],
    metric,
    chunk: int,
    rows: Sequence[int] | None = None,
) -> Float[Tensor, "query_pos key_pos"]:
    """Distance of each token's layer output when each earlier token's values are zeroed.

    Only pairs with query >= key are recomputed (causal mask); the others stay 0. ``rows``:
    only these query positions, in this order (``act`` recorded with the same ``rows``, see
    :func:`clean_activations`); the others are never recomputed.
    """
    block = model.blocks[layer]
    mid, post = act[("resid_mid", layer)], act[("resid_post", layer)]
    v, pattern = act[("v", layer)], act[("pattern", layer)]
    n_heads, n = pattern.shape[0], v.shape[0]
    group = n_heads // v.shape[1]  # query heads per key/value head
    v_q = v.repeat_interleave(group, dim=1)  # [pos, head, d_head]
    keep = torch.zeros(v.shape[1], dtype=v.dtype, device=v.device)
    keep[heads] = 1
    keep = keep.repeat_interleave(group)[None, :, None]  # [1, head, 1]
    contrib = torch.einsum("khd,hdm->khm", v_q * keep, block.attn.W_O)  # what v_k adds per head
    queries = torch.arange(n, device=v.device) if rows is None else torch.tensor(rows).to(v.device)
    scores = torch.zeros(len(queries), n, dtype=reduction_dtype(mid.dtype), device=mid.device)
    step = max(1, chunk // len(queries))  # keys per batched call: ~`chunk` (query, key) pairs
    for lo in range(0, n, step):
        keys = torch.arange(lo, min(n, lo + step), device=v.device)
        # delta[j, r] = sum_h a^h_qj v^h_j W^h_O (q = queries[r]), what v_j adds to q's output
        delta = torch.bmm(pattern[:, :, keys].permute(2, 1, 0), contrib[keys])
        k, r = (keys[:, None] <= queries).nonzero(as_tuple=True)
        scores[r, keys[k]] = metric(_post_attention(block, mid[r] - delta[k, r]), post[r])
    return scores


def analytic_matrices(
    model,
    ids: Sequence[int],
    heads: Mapping[int, Sequence[int]],
    metric: Callable[[Tensor, Tensor], Tensor],
    chunk: int,
    rows: Sequence[int] | None = None,
) -> Float[Tensor, "layer query_pos key_pos"] | None:
    """Unnormalised value-zeroing matrices of a decoder-only model by the analytic recompute,
    on the CPU (``rows``: only these query rows); None when the model's blocks do not have the
    layout (module doc)."""
    layers = list(heads)
    names = [hook_name(kind, layer) for layer in layers for kind in _CACHED]
    if getattr(model, "blocks", None) is None or any(n not in model.hook_dict for n in names):
        return None
    n, heads_n, d = len(ids), int(model.cfg.n_heads), int(model.cfg.d_model)
    kept = n if rows is None else len(rows)  # query rows recorded
    per_layer = heads_n * kept * n + len(_CACHED) * kept * d + n * d
    scores, i = None, 0
    for group in layer_groups(layers, per_layer):  # as many layers per forward as fit
        act = clean_activations(model, list(ids), group, rows)
        for layer in group:
            if not layout_holds(model, act, layer):
                return None
            one = analytic_layer_scores(model, layer, act, list(heads[layer]), metric, chunk, rows)
            for key in [k for k in act if k[1] == layer]:  # this layer's capture: done
                del act[key]
            if scores is None:  # [layer, query_pos, key_pos], filled in place
                scores = torch.zeros(len(layers), *one.shape, dtype=one.dtype)
            scores[i], i = one.cpu(), i + 1
    return scores


__all__ = ["analytic_matrices", "layout_holds"]
