"""Value zeroing (Mohebbi et al., EACL 2023) as an attribution method.

For step t (predicting ``tokens[target_start + t]``), the row of each layer's value-zeroing
mixing matrix at the query position that predicts it (``target_start + t - 1``, as for the
``attention`` method): how much that token's layer output mixes in each earlier token.
``[batch, step, pos, layer]``, equal to the rows of
:func:`hooklab.mixing.value_zeroing.mixing_matrices`. A final-step method: one computation per
sequence, no per-step loop; shown averaged over layers by default.

On encoder–decoder models the source positions hold the rows of the cross-attention's matrix
(``part="cross"`` of :func:`hooklab.mixing.value_zeroing`) and the decoder positions those of
the decoder self-attention's (``part="decoder"``), each normalised on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from hooklab.budget import MAX_BATCH_TOKENS
from hooklab.methods.base import MethodResult, register_method
from hooklab.mixing.adapter import EncoderDecoder, Example, model_adapter
from hooklab.mixing.value_zeroing import HeadsArg, Metric, part_matrices, resolve_options
from hooklab.options import PositiveInt

if TYPE_CHECKING:
    from hooklab.inputs import Batch
    from hooklab.methods.base import AttributedFn


@register_method(
    "value_zeroing", kind="context_mixing", final_step_only=True, reduce="mean",
    encoder_decoder=True,
)  # fmt: skip
@torch.no_grad()
def value_zeroing(
    model,
    batch: Batch,
    *,
    attributed_fn: AttributedFn,
    layers: int | range | Sequence[int] | None = None,
    heads: HeadsArg = None,
    metric: Metric = "cosine",
    normalize: bool = True,
    max_batch_tokens: PositiveInt = MAX_BATCH_TOKENS,
    fast_path: bool = True,
) -> MethodResult:
    """Value-zeroing rows ``[batch, step, pos, layer]`` of each step's query position.

    Args:
        layers: layers to score (an int, a range, a list; negative counts from the end).
        heads: key/value heads whose values are zeroed: an int, a range, a list, or a
            ``{layer: heads}`` dict; all when None.
        metric: ``"cosine"`` (as in the paper) or ``"euclidean"``.
        normalize: rows sum to 1.
        max_batch_tokens: token rows per batched block call: each zeroed key is one copy
            of the query tokens through the block (bounds the memory; the scores do not
            depend on it). The same option as the attribution methods'.
        fast_path: allow the analytic MLP recompute where a self-check proves it
            (:mod:`hooklab.mixing.value_zeroing_fast`); False always runs the model's blocks.
    """
    del attributed_fn  # mixing does not depend on the explained function
    adapter = model_adapter(model, "decoder")  # the decoder's layers, on both kinds of models
    layer_ids, head_ids = resolve_options(model, adapter, layers, heads)
    options = {"metric": metric, "normalize": normalize, "max_batch_tokens": max_batch_tokens,
               "fast_path": fast_path}  # fmt: skip
    out = None
    for i in range(batch.size):
        start, steps = batch.prompt_lengths[i], batch.target_lengths[i]
        # step t reads query row start - 1 + t: only these rows are computed,
        # scores [layer, step, key_pos] over the input positions of example i
        rows = range(start - 1, start - 1 + steps)
        scores = _matrices(model, batch, i, head_ids, {**options, "rows": rows})
        if out is None:
            shape = (batch.size, batch.n_steps, batch.input_width, len(layer_ids))
            out = scores.new_full(shape, torch.nan)
        out[i, :steps, batch.real_positions(i).cpu()] = scores.permute(1, 2, 0)  # on the CPU
    return MethodResult(out)


def _matrices(model, batch: Batch, i: int, heads, options):
    """Value-zeroing matrices of example ``i`` (``options``: :func:`part_matrices`'):
    decoder-only, the self-attention's; encoder–decoder, the cross-attention's (keys: the
    source) and the decoder's side by side."""
    if not batch.encoder_decoder:
        example = Example(tuple(batch.sequence(i).tolist()))
        return part_matrices(model_adapter(model), example, heads, **options)
    example = Example(tuple(batch.source(i).tolist()), tuple(batch.sequence(i).tolist()))
    parts = ("cross", "decoder")
    sides = [part_matrices(EncoderDecoder(model, p), example, heads, **options) for p in parts]
    return torch.cat(sides, dim=-1)
