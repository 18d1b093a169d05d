"""Information-flow routes on encoder–decoder models (see :mod:`hooklab.mixing.routes`).

Nodes are residual-stream states of the encoder (source positions ``0..n_src-1``; depth
``2ℓ`` before encoder layer ℓ, ``2ℓ + 1`` after its attention, ``2ℓ + 2`` after the layer) and
of the decoder (positions ``n_src + t``; depth ``3ℓ`` before decoder layer ℓ, ``3ℓ + 1`` after
its self-attention, ``3ℓ + 2`` after its cross-attention, ``3ℓ + 3`` after the layer). Each
state is a sum of components, weighed by ALTI's proportion as on decoder-only models:

- after a self-attention sublayer: an **attention** edge per key (and head), a **residual**
  edge; after a cross-attention sublayer: a **cross** edge from each source token's last
  encoder state (per head), a **residual** edge; after an MLP: **residual** and **mlp** edges
  from the sublayer's input. Post-norm sublayers (Marian, BART) pass every component through
  the norm linearised at its input (:mod:`hooklab.mixing.linear_norm`).

From the prediction's state downwards, the edges above ``threshold`` are kept and their
sources explored, the decoder first, then the encoder from the source states that cross edges
reached. One forward pass, no gradients.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from hooklab.mixing.alti_acts import LayerActs, contributions
from hooklab.mixing.alti_seq2seq import mlp_norm, part_acts, record_example

ATTENTION, RESIDUAL, MLP, CROSS = range(4)  # indexes of routes.EDGE_KINDS


def _edges(parts: list[Tensor], sources: list, total: Tensor, threshold: float):
    """Importance of each part of ``total``; the ``(source, weight)`` pairs above threshold."""
    weights = contributions(torch.stack(parts), total)
    return [(s, float(w)) for s, w in zip(sources, weights.tolist(), strict=True) if w > threshold]


def _mlp_parts(model, act: dict[str, Any], stack: str, layer: int, y: Tensor):
    """``(residual part, mlp part, output)`` ``[pos, d_model]`` of a block's MLP sublayer on
    its residual input ``y`` (through the post-norm, if any)."""
    mlp_out = act[f"{stack}.{layer}.mlp.hook_out"]
    norm = mlp_norm(model, act, stack, layer, y)
    out = act[f"{stack}.{layer}.hook_out"]
    if norm is None:
        return y, mlp_out, out
    return norm.project(y) * norm.scale, norm.project(mlp_out) * norm.scale, out


def _attention_edges(acts: LayerActs, active, per_head, threshold, key_kind, offsets, depths):
    """Edges into the states ``active`` after an attention sublayer: ``(source depth, source
    pos, target depth, target pos, kind, head, weight)``; ``offsets``: (key, query) position
    offsets; ``depths``: (key depth, residual depth, target depth)."""
    (key_off, query_off), (key_depth, res_depth, top) = offsets, depths
    edges = []
    for i in sorted(active):
        heads = acts.head_terms(i)  # [head, key_pos, d_model]
        n = heads.shape[1]
        parts = list(heads.flatten(0, 1)) if per_head else list(heads.sum(0))
        sources = [(key_kind, key_depth, key_off + j, h) for h in range(len(heads))
                   for j in range(n)]  # fmt: skip
        sources = (
            sources if per_head else [(key_kind, key_depth, key_off + j, -1) for j in range(n)]
        )
        parts.append(acts.self_term[i])
        sources.append((RESIDUAL, res_depth, query_off + i, -1))
        for (kind, depth, pos, h), w in _edges(parts, sources, acts.y[i], threshold):
            edges.append((depth, pos, top, query_off + i, kind, h, w))
    return edges


def _mlp_edges(parts, active, threshold, offset, bottom, top):
    residual, mlp, out = parts
    edges = []
    for i in sorted(active):
        for kind, w in _edges([residual[i], mlp[i]], [RESIDUAL, MLP], out[i], threshold):
            edges.append((bottom, offset + i, top, offset + i, kind, -1, w))
    return edges


def _explore(edges: list, new: list, depth: int, offset: int) -> set[int]:
    """Append ``new`` to ``edges``; the positions (less ``offset``) of their sources at
    ``depth`` on the same side (cross edges come from the encoder)."""
    edges.extend(new)
    return {e[1] - offset for e in new if e[0] == depth and e[4] != CROSS}


@torch.no_grad()
def seq2seq_routes(model, example, position: int, threshold: float, per_head: bool) -> list:
    """The kept edges of one encoder–decoder example, top-down from decoder ``position``."""
    act = record_example(model, example)
    n_src, n_enc = len(example.ids), len(model.encoder_blocks)
    edges: list = []
    active, sources = {position}, set()
    for la in reversed(range(len(model.decoder_blocks))):
        base = 3 * la
        self_acts, cross_acts = (part_acts(model, act, p, la) for p in ("decoder", "cross"))
        mlp = _mlp_parts(model, act, "decoder_blocks", la, cross_acts.y)
        active = _explore(edges, _mlp_edges(mlp, active, threshold, n_src, base + 2, base + 3),
                          base + 2, n_src)  # fmt: skip
        new = _attention_edges(cross_acts, active, per_head, threshold, CROSS, (0, n_src),
                               (2 * n_enc, base + 1, base + 2))  # fmt: skip
        sources |= {e[1] for e in new if e[4] == CROSS}
        active = _explore(edges, new, base + 1, n_src)
        new = _attention_edges(self_acts, active, per_head, threshold, ATTENTION, (n_src, n_src),
                               (base, base, base + 1))  # fmt: skip
        active = _explore(edges, new, base, n_src)
    active = sources
    for la in reversed(range(n_enc)):
        attn = part_acts(model, act, "encoder", la)
        mlp = _mlp_parts(model, act, "encoder_blocks", la, attn.y)
        active = _explore(edges, _mlp_edges(mlp, active, threshold, 0, 2 * la + 1, 2 * la + 2),
                          2 * la + 1, 0)  # fmt: skip
        new = _attention_edges(attn, active, per_head, threshold, ATTENTION, (0, 0),
                               (2 * la, 2 * la, 2 * la + 1))  # fmt: skip
        active = _explore(edges, new, 2 * la, 0)
    return edges


__all__ = ["seq2seq_routes"]
