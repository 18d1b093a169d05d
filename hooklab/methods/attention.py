"""Attention weights as attributions, computed once on the full sequence.

The attention pattern of the query position that predicts target token t, over every key
position, for each selected layer and head: ``[batch, step, pos, layer, head]``. A final-step
method: one forward pass, no per-step loop. Shown averaged over layers and heads by default.
On encoder–decoder models: the decoder's cross-attention over the source positions and its
self-attention over the decoder positions, per decoder layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from hooklab.architecture import select_indices
from hooklab.forward import step_logits
from hooklab.hooks import hook_name, recorder, temporary_hooks
from hooklab.methods.base import MethodResult
from hooklab.mixing.adapter import seq2seq_hook_name
from hooklab.seq2seq import n_decoder_layers

if TYPE_CHECKING:
    from hooklab.inputs import Batch
    from hooklab.methods.base import AttributedFn


def _pattern_hook(layer: int) -> str:
    return hook_name("pattern", layer)


def _cross_hook(layer: int) -> str:
    return seq2seq_hook_name("cross", "pattern", layer)


def _decoder_hook(layer: int) -> str:
    return seq2seq_hook_name("decoder", "pattern", layer)


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
    parts = [_pattern_hook] if not batch.encoder_decoder else [_cross_hook, _decoder_hook]
    n_layers = n_decoder_layers(model) if batch.encoder_decoder else model.cfg.n_layers
    layer_ids = select_indices(layers, n_layers, "layers")
    head_ids = select_indices(heads, model.cfg.n_heads, "heads")
    hooks, cache = recorder([part(layer) for layer in layer_ids for part in parts])
    with temporary_hooks(model, hooks):
        step_logits(model, batch)
    rows = batch.target_rows  # [batch, step]
    # per layer: [batch, head, query_pos, key_pos], the keys of every part side by side
    # (encoder-decoder: cross-attention over the source, then decoder self-attention)
    stacked = torch.stack(
        [
            torch.cat([cache[part(layer)][:, head_ids] for part in parts], dim=-1)
            for layer in layer_ids
        ],
        dim=1,
    )
    # stacked: [batch, layer, head, query_pos, key_pos] -> query rows of each step
    index = rows[:, None, None, :, None].expand(-1, *stacked.shape[1:3], -1, stacked.shape[-1])
    picked = stacked.gather(3, index)  # [batch, layer, head, step, key_pos]
    return MethodResult(picked.permute(0, 3, 4, 1, 2))  # [batch, step, key_pos, layer, head]
