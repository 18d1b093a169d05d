"""Occlusion (Zeiler & Fergus, 2014): replace one token's embedding with a baseline.

Score of token j for step t: F_t(x) - F_t(x with token j's embedding replaced). One forward
pass per occluded token serves every step (a step cannot see tokens after it, so their
occlusion changes nothing there); the occluded copies run batched. On encoder–decoder models
the occluded tokens are the source tokens and the decoder-input tokens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from hooklab.forward import token_embeddings
from hooklab.methods.base import MethodResult
from hooklab.methods.baselines import baseline_embeddings
from hooklab.methods.gradients import attributed_scores

if TYPE_CHECKING:
    from hooklab.inputs import Batch
    from hooklab.methods.base import AttributedFn


@torch.no_grad()
def occlusion(
    model,
    batch: Batch,
    *,
    attributed_fn: AttributedFn,
    baseline: str | int | Tensor = "zeros",
    internal_batch_size: int = 32,
) -> MethodResult:
    """Occlusion scores ``[batch, step, pos]``: each token's drop of each step's function."""
    if not isinstance(internal_batch_size, int) or internal_batch_size < 1:
        raise ValueError(f"internal_batch_size must be a positive int, got {internal_batch_size}")
    x = token_embeddings(model, batch)
    x0 = baseline_embeddings(model, batch, x, baseline)
    clean = attributed_scores(model, batch, attributed_fn, x)
    width = batch.input_width  # encoder-decoder: source positions, then decoder positions
    # every real token that some step can see (the last token predicts nothing)
    pairs = [tuple(p) for p in batch.visible.any(1).nonzero().tolist()]
    out = torch.full((batch.size, batch.n_steps, width), torch.nan, dtype=clean.dtype)
    out = out.to(clean.device)
    for lo in range(0, len(pairs), internal_batch_size):
        chunk = pairs[lo : lo + internal_batch_size]
        rows = torch.tensor([b for b, _ in chunk], device=x.device)
        cols = torch.tensor([j for _, j in chunk], device=x.device)
        copies = torch.arange(len(chunk), device=x.device)
        embeds = x[rows].clone()
        embeds[copies, cols] = x0[rows, cols]
        scores = attributed_scores(model, batch.take(rows), attributed_fn.take(rows), embeds)
        steps = scores.shape[1]  # the chunk's longest target
        out[rows, :steps, cols] = clean[rows, :steps] - scores
    return MethodResult(out)
