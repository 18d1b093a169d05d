"""One attention sublayer's activations laid out for ALTI (:mod:`hooklab.mixing.alti`).

The decomposition's data: what each key contributes to each query's output through the
values, ``W_O``, the residual and (linearised) norms, and the transformed vectors
``T_i(x_j)`` that ALTI measures distances to.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from hooklab.mixing.linear_norm import LinearNorm


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

    def head_terms(self, i: int) -> Float[Tensor, "head key_pos d_model"]:
        """Query i's attention terms ``a^h_ij v^h_j W^h_O`` per head and key (through the norm)."""
        terms = self.pattern[:, i, :, None] * self.head_values.transpose(0, 1)
        return terms if self.norm is None else self.norm.project(terms) * self.norm.scale[i]

    def transformed(self, queries: Tensor) -> Float[Tensor, "query_pos part d_model"]:
        """``T_i(x_j)`` for the query positions ``queries``, every key position (then the
        residual, for cross-attention)."""
        t = torch.einsum("hqk,khm->qkm", self.pattern[:, queries], self.head_values)
        if self.norm is not None:
            t = self.norm.project(t) * self.norm.scale[queries, None]
        if self.cross:
            return torch.cat([t, self.self_term[queries, None]], dim=1)
        t[torch.arange(len(queries)), queries] += self.self_term[queries]
        return t


__all__ = ["LayerActs"]
