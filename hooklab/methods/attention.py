"""Attention weights as attributions, computed once on the full sequence.

The attention pattern of the query position that predicts target token t, over every key
position, for each selected layer and head: ``[batch, step, pos, layer, head]``. A final-step
method: one forward pass, no per-step loop. Shown averaged over layers and heads by default.
On encoder–decoder models: the decoder's cross-attention over the source positions and its
self-attention over the decoder positions, per decoder layer (the weights the Hugging Face
model returns, see :func:`hooklab.forward.attention_weights`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from hooklab.architecture import select_indices
from hooklab.forward import attention_weights, step_logits
from hooklab.hooks import hook_name, recorder, temporary_hooks
from hooklab.methods.base import MethodResult
from hooklab.seq2seq import n_decoder_layers

if TYPE_CHECKING:
    from hooklab.inputs import Batch
    from hooklab.methods.base import AttributedFn


@torch.no_grad()
def attention(
    model,
    batch: Batch,
    *,
    attributed_fn: AttributedFn,
    layers: int | Sequence[int] | None = None,
    heads: int | Sequence[int] | None = None,
) -> MethodResult:
    """Attention weights ``[batch, step, pos, layer, head]`` of each step's query position."""
    del attributed_fn  # attention weights do not depend on the explained function
    n_layers = n_decoder_layers(model) if batch.encoder_decoder else model.cfg.n_layers
    layer_ids = select_indices(layers, n_layers, "layers")
    head_ids = select_indices(heads, model.cfg.n_heads, "heads")
    if batch.encoder_decoder:
        # keys side by side: cross-attention over the source, then decoder self-attention
        cross, decoder = attention_weights(model, batch)
        patterns = [torch.cat([cross[la], decoder[la]], dim=-1) for la in layer_ids]
    else:
        hooks, cache = recorder([hook_name("pattern", layer) for layer in layer_ids])
        with temporary_hooks(model, hooks):
            step_logits(model, batch)
        patterns = [cache[hook_name("pattern", layer)] for layer in layer_ids]
    rows = batch.target_rows  # [batch, step]
    # per layer: [batch, head, query_pos, key_pos]
    stacked = torch.stack([p[:, head_ids] for p in patterns], dim=1)
    # stacked: [batch, layer, head, query_pos, key_pos] -> query rows of each step
    index = rows[:, None, None, :, None].expand(-1, *stacked.shape[1:3], -1, stacked.shape[-1])
    picked = stacked.gather(3, index)  # [batch, layer, head, step, key_pos]
    return MethodResult(picked.permute(0, 3, 4, 1, 2))  # [batch, step, key_pos, layer, head]
