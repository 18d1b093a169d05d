"""Attention weights as attributions, computed once on the full sequence.

The attention pattern of the query position that predicts target token t, over every key
position, for each selected layer and head: ``[batch, step, pos, layer, head]``. A final-step
method: one forward pass, no per-step loop. Shown averaged over layers and heads by default.
On encoder–decoder models: the decoder's cross-attention over the source positions and its
self-attention over the decoder positions, per decoder layer (the weights the Hugging Face
model returns, see :func:`hooklab.forward.attention_weights`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

from hooklab.architecture import select_indices
from hooklab.budget import query_chunk as query_rows
from hooklab.forward import attention_weights, bridge_forward, chunked_bridge_forward
from hooklab.hooks import hook_name
from hooklab.methods.base import MethodResult, register_method
from hooklab.options import PositiveInt
from hooklab.seq2seq import n_decoder_layers

if TYPE_CHECKING:
    from hooklab.inputs import Batch
    from hooklab.methods.base import AttributedFn


@register_method(
    "attention", kind="attention", final_step_only=True, reduce="mean", encoder_decoder=True
)
@torch.no_grad()
def attention(
    model,
    batch: Batch,
    *,
    attributed_fn: AttributedFn,
    layers: int | Sequence[int] | None = None,
    heads: int | Sequence[int] | None = None,
    query_chunk: PositiveInt | None = None,
) -> MethodResult:
    """Attention weights ``[batch, step, pos, layer, head]`` of each step's query position.

    Args:
        layers: the layers kept (an index, several, or None: all; encoder–decoder models:
            decoder layers).
        heads: the heads kept (an index, several, or None: all).
        query_chunk: on decoder-only models, query positions per pass (a chunked prefill over
            the KV cache, :func:`hooklab.forward.chunked_bridge_forward`): one layer's scores
            are then ``[batch, head, query_chunk, pos]``. None: as many as keep them within
            :data:`hooklab.budget.SCORE_ELEMENTS` (one pass up to about 500 tokens on 4
            heads). The weights are the same for any value; one as large as the input turns
            chunking off.
    """
    del attributed_fn  # attention weights do not depend on the explained function
    n_layers = n_decoder_layers(model) if batch.encoder_decoder else model.cfg.n_layers
    layer_ids = select_indices(layers, n_layers, "layers")
    head_ids = select_indices(heads, model.cfg.n_heads, "heads")
    if batch.encoder_decoder:
        # keys side by side: cross-attention over the source, then decoder self-attention
        cross, decoder = attention_weights(model, batch)
        patterns = [torch.cat([cross[la], decoder[la]], dim=-1) for la in layer_ids]
        patterns = [step_rows(p[:, head_ids], batch.target_rows) for p in patterns]
    else:
        width = batch.tokens.shape[1]
        chunk = query_chunk or query_rows(batch.size, model.cfg.n_heads, width)
        patterns = _kept_rows(model, batch, layer_ids, head_ids, min(chunk, width))
    stacked = torch.stack(patterns, dim=1)  # [batch, layer, head, step, key_pos]
    return MethodResult(stacked.permute(0, 3, 4, 1, 2))  # [batch, step, key_pos, layer, head]


def step_rows(
    pattern: Float[Tensor, "batch head query_pos key_pos"], rows: Int[Tensor, "batch step"]
) -> Float[Tensor, "batch head step key_pos"]:
    """The query rows ``rows`` (each step's query position) of a pattern."""
    index = rows[:, None, :, None].expand(-1, pattern.shape[1], -1, pattern.shape[-1])
    return pattern.gather(2, index)


class _Kept(Exception):
    """Raised by the last selected layer's pattern hook: nothing after it is needed."""


def _kept_rows(
    model, batch: Batch, layer_ids: list[int], head_ids: list[int], chunk: int
) -> list[Tensor]:
    """Per layer, the selected heads' pattern rows of the attributed steps, ``[batch, head,
    step, key_pos]``, cut out inside the hook: only these rows are kept, so memory grows as
    layers x heads x steps x pos, not with pos² (each full pattern lives only while its layer
    runs; with ``chunk`` < the width, queries run in chunks over the KV cache and each layer's
    scores are chunk x pos). The last pass stops at the last selected layer's pattern (the
    hook raises, the hooks come off in ``temporary_hooks``'s ``finally``): the rest of the
    model, its MLP, the later layers and the unembedding, would compute nothing this method
    returns (earlier chunks run every layer: the cache needs them)."""
    width = batch.tokens.shape[1]
    every_head = head_ids == list(range(model.cfg.n_heads))
    heads = torch.tensor(head_ids, device=batch.tokens.device)
    last, rows = max(layer_ids), batch.target_rows  # a property: computed once, not per hook
    kept: dict[int, Tensor] = {}
    span = [0, width]  # the query positions of the running pass

    def at(start: int, stop: int) -> None:
        span[:] = [start, stop]

    def keep(layer: int):
        def fn(pattern, hook):  # [batch, head, query rows of the pass, key_pos so far]
            pattern = pattern.detach() if every_head else pattern.detach()[:, heads]
            start, stop = span
            if layer not in kept:
                shape = (*rows.shape[:1], pattern.shape[1], rows.shape[1], width)
                kept[layer] = pattern.new_zeros(shape)
            i, t = ((rows >= start) & (rows < stop)).nonzero(as_tuple=True)  # rows of this pass
            kept[layer][i, :, t, :stop] = pattern[i, :, rows[i, t] - start]
            if layer == last and stop == width:
                raise _Kept

        return fn

    hooks = [(hook_name("pattern", la), keep(la)) for la in layer_ids]
    with contextlib.suppress(_Kept):
        if chunk >= width:
            bridge_forward(model, batch, hooks=hooks)
        else:
            chunked_bridge_forward(model, batch, hooks=hooks, chunk=chunk, on_chunk=at)
    return [kept[la] for la in layer_ids]
