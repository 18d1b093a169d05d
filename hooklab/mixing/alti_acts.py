"""One attention sublayer's activations laid out for ALTI (:mod:`hooklab.mixing.alti`).

The decomposition's data: what each key contributes to each query's output through the
values, ``W_O``, the residual and (linearised) norms, and the transformed vectors
``T_i(x_j)`` that ALTI measures distances to; the checks that prove a layout on recorded
activations, and ALTI's contribution measure on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from jaxtyping import Float
from torch import Tensor

from hooklab.mixing.linear_norm import LinearNorm, linear_norm
from hooklab.mixing.matrices import normalize_rows
from hooklab.precision import reduction_dtype
from hooklab.selfcheck import check_identity

#: (query, key, d_model) elements of transformed vectors held at once.
_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class LayerActs:
    """One attention sublayer's activations of one sequence (no batch dimension), its layout.

    Attributes:
        x: ``[query_pos, d_model]`` the sublayer's residual input (``resid_pre``).
        y: ``[query_pos, d_model]`` the decomposed output (``resid_mid``, ``resid_post`` if
            parallel, the norm's output after a post-norm sublayer).
        self_term: ``[query_pos, d_model]`` what position i adds to itself outside attention
            (``x``; ``x + mlp_out`` in a parallel block; ``N(x)`` inside a post-norm).
        mlp_out: ``[query_pos, d_model]`` the MLP's update of the residual stream (decoder-only).
        head_values: ``[key_pos, head, d_model]`` ``v^h_j W^h_O`` (value bias included).
        pattern: ``[head, query_pos, key_pos]`` attention weights.
        bias: ``[query_pos, d_model]`` the constant: ``b_O`` (through the norm, plus its bias).
        parallel: attention and MLP read the same input.
        norm: the norm the attention terms pass through, linearised at its input (a post-norm
            of the sublayer, or a norm on the attention output alone as in Gemma 2); None.
        cross: the keys are another sequence's (cross-attention): the residual ``self_term``
            is one more part, after the keys, instead of adding to key i.
        rest: ``[query_pos, d_model]`` the attention output of the heads left out by
            :func:`keep_heads` (through the norm): one more part, last, credited to no key.
    """

    x: Float[Tensor, "query_pos d_model"]
    y: Float[Tensor, "query_pos d_model"]
    self_term: Float[Tensor, "query_pos d_model"]
    mlp_out: Float[Tensor, "query_pos d_model"] | None
    head_values: Float[Tensor, "key_pos head d_model"]
    pattern: Float[Tensor, "head query_pos key_pos"]
    bias: Float[Tensor, "query_pos d_model"]
    parallel: bool
    norm: LinearNorm | None = None
    cross: bool = False
    rest: Float[Tensor, "query_pos d_model"] | None = None

    def head_terms(self, i: int) -> Float[Tensor, "head key_pos d_model"]:
        """Query i's attention terms ``a^h_ij v^h_j W^h_O`` per head and key (through the norm)."""
        terms = self.pattern[:, i, :, None] * self.head_values.transpose(0, 1)
        return terms if self.norm is None else self.norm.project(terms) * self.norm.scale[i]

    def transformed(self, queries: Tensor) -> Float[Tensor, "query_pos part d_model"]:
        """``T_i(x_j)`` for the query positions ``queries``, every key position (then the
        residual, for cross-attention; then the left-out heads' output, with ``rest``)."""
        t = torch.einsum("hqk,khm->qkm", self.pattern[:, queries], self.head_values)
        if self.norm is not None:
            t = self.norm.project(t) * self.norm.scale[queries, None]
        if self.cross:
            t = torch.cat([t, self.self_term[queries, None]], dim=1)
        else:
            t[torch.arange(len(queries)), queries] += self.self_term[queries]
        return t if self.rest is None else torch.cat([t, self.rest[queries, None]], dim=1)


def keep_heads(layer: LayerActs, kv_heads: Sequence[int], n_kv: int) -> LayerActs:
    """``layer`` with the attention terms of the query heads of ``kv_heads`` (key/value heads,
    as value zeroing's ``heads=``: a key/value head stands for its group of query heads under
    grouped-query attention) credited to their keys; the other heads' output becomes
    :attr:`LayerActs.rest`, a part no key gets; ``n_kv``: the key/value heads. All heads:
    ``layer`` itself."""
    n_heads = layer.pattern.shape[0]
    kept = [h for h in range(n_heads) if h // (n_heads // n_kv) in set(kv_heads)]
    if len(kept) == n_heads:
        return layer
    others = [h for h in range(n_heads) if h not in kept]
    rest = torch.einsum("hqk,khm->qm", layer.pattern[others], layer.head_values[:, others])
    if layer.norm is not None:
        rest = layer.norm.project(rest) * layer.norm.scale
    return replace(layer, pattern=layer.pattern[kept], head_values=layer.head_values[:, kept],
                   rest=rest)  # fmt: skip


def check_layer(identity: str, got: Tensor, expected: Tensor, layer: int | str) -> None:
    check_identity(
        identity,
        got,
        expected,
        where=layer if isinstance(layer, str) else f"layer {layer}",
        error=NotImplementedError,
        hint="ALTI decomposes sequential pre-norm, post-norm and parallel blocks (residual "
        "branches scaled by a constant included); this model's blocks are built differently: "
        "not supported.",
    )


def branch_scale(model) -> float:
    """The constant that scales each residual branch (Granite's ``residual_multiplier``; 1)."""
    config = getattr(getattr(model, "original_model", None), "config", None)
    return float(getattr(config, "residual_multiplier", None) or 1.0)


def logit_factor(model) -> float:
    """The constant the logits are scaled by, a linear factor of the readout: Granite divides
    them by ``logits_scaling``; T5 with tied embeddings multiplies the decoder's last state by
    ``d_model ** -0.5`` before the unembedding; 1 elsewhere."""
    config = getattr(getattr(model, "original_model", None), "config", None)
    factor = 1.0 / float(getattr(config, "logits_scaling", None) or 1.0)
    if getattr(config, "model_type", None) in ("t5", "mt5", "umt5") and config.tie_word_embeddings:
        factor *= float(config.d_model) ** -0.5
    return factor


def value_terms(attn: torch.nn.Module, v: Tensor, n_heads: int) -> Tensor:
    """``[key_pos, head, d_model]`` ``v^h_j W^h_O`` from ``hook_v`` (``[key_pos, kv_head,
    d_head]``)."""
    v = v.repeat_interleave(n_heads // v.shape[1], dim=1)  # key/value heads -> query heads
    return torch.einsum("khd,hdm->khm", v, attn.W_O.to(v.dtype))


def fit_norm(module, x_in: Tensor, x_out: Tensor, where: str) -> LinearNorm:
    fitted = linear_norm(module, x_in, x_out)
    if fitted is None:
        raise NotImplementedError(
            f"ALTI linearises the norms at {where} as a LayerNorm or RMSNorm; "
            f"{type(getattr(module, 'original_component', module)).__name__} computes "
            "something else: not supported."
        )
    return fitted


def through(norm: LinearNorm, c: Tensor) -> Tensor:
    """``P(c) ⊙ scale`` (the linearised norm without its bias)."""
    return norm.project(c) * norm.scale


def contributions(
    parts: Float[Tensor, "*rows part d_model"], total: Float[Tensor, "*rows d_model"]
) -> Float[Tensor, "*rows part"]:
    """ALTI's contribution of each part to the sum ``total``: ``max(0, ‖y‖₁ - ‖y - part‖₁)``,
    normalised per row (rows that are all 0 stay 0)."""
    y = total.to(reduction_dtype(total.dtype))
    scores = y.abs().sum(-1)[..., None] - (y[..., None, :] - parts.to(y.dtype)).abs().sum(-1)
    return normalize_rows(scores.clamp(min=0))


def alti_shares(layer: LayerActs) -> Float[Tensor, "query_pos part"]:
    """ALTI's row-normalised shares of every part of each query's output: the keys, then the
    residual (cross-attention), then the left-out heads (:func:`keep_heads`)."""
    (n, d), keys = (
        layer.y.shape,
        layer.head_values.shape[0] + layer.cross + (layer.rest is not None),
    )
    rows = []
    step = max(1, _CHUNK_ELEMENTS // (keys * d))
    for lo in range(0, n, step):
        queries = torch.arange(lo, min(n, lo + step), device=layer.y.device)
        rows.append(contributions(layer.transformed(queries), layer.y[queries]))
    return torch.cat(rows)


def layer_alti(layer: LayerActs) -> Float[Tensor, "query_pos key_pos"]:
    """One layer's row-normalised ALTI matrix (0 where a causal query cannot see the key).

    For cross-attention, the source keys' shares of a row normalised together with the
    residual's (ALTI+): the residual's share is ``1 - row sum``; likewise the left-out heads'
    share with :func:`keep_heads`.
    """
    return alti_shares(layer)[:, : layer.head_values.shape[0]]
