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

from hooklab.budget import attention_rows
from hooklab.forward import token_embeddings
from hooklab.methods.base import MethodResult, register_method
from hooklab.methods.baselines import Baseline, baseline_embeddings
from hooklab.methods.gradients import MAX_BATCH_TOKENS, scores_in_passes
from hooklab.options import PositiveInt

if TYPE_CHECKING:
    from hooklab.inputs import Batch
    from hooklab.methods.base import AttributedFn


@register_method("occlusion", kind="perturbation", encoder_decoder=True)
@torch.no_grad()
def occlusion(
    model,
    batch: Batch,
    *,
    attributed_fn: AttributedFn,
    baseline: Baseline = "zeros",
    internal_batch_size: PositiveInt | None = None,
    max_batch_tokens: PositiveInt = MAX_BATCH_TOKENS,
) -> MethodResult:
    """Occlusion scores ``[batch, step, pos]``: each token's drop of each step's function.

    Args:
        baseline: what replaces a token's embedding (see
            :func:`hooklab.methods.baselines.baseline_embeddings`).
        internal_batch_size: at most this many occluded copies per forward pass; None: as many
            as ``max_batch_tokens`` allows and whose attention scores fit
            :data:`hooklab.budget.ATTENTION_ELEMENTS` (one copy of a long input: faster).
        max_batch_tokens: sequence-tokens per forward pass (copies x width); bounds the memory.
            The result does not depend on it.
    """
    x = token_embeddings(model, batch)
    x0 = baseline_embeddings(model, batch, x, baseline)
    clean = scores_in_passes(
        model, batch, attributed_fn, batch.size, lambda rows: x[rows],
        max_batch_tokens=max_batch_tokens,
    )  # fmt: skip
    width = batch.input_width  # encoder-decoder: source positions, then decoder positions
    # every real token that some step can see (the last token predicts nothing)
    b, j = batch.visible.any(1).nonzero(as_tuple=True)

    def occluded(rows: Tensor) -> Tensor:
        """Copy ``rows[i]`` is example ``b[rows[i]]`` with token ``j[rows[i]]`` occluded."""
        embeds = x[b[rows]].clone()
        embeds[torch.arange(len(rows), device=x.device), j[rows]] = x0[b[rows], j[rows]]
        return embeds

    out = torch.full((batch.size, batch.n_steps, width), torch.nan, dtype=clean.dtype)
    out = out.to(clean.device)
    if len(b):
        scores = scores_in_passes(
            model, batch.take(b), attributed_fn.take(b), len(b), occluded,
            max_rows=internal_batch_size or attention_rows(int(model.cfg.n_heads), width),
            max_batch_tokens=max_batch_tokens,
        )  # fmt: skip  # [pairs, step]
        out[b, :, j] = clean[b] - scores
    return MethodResult(out)
