"""Baseline embeddings for integrated gradients, gradient SHAP and occlusion."""

from __future__ import annotations

from typing import Annotated

import torch
from jaxtyping import Float
from torch import Tensor

from hooklab.forward import token_embeddings
from hooklab.inputs import Batch, own_tokenizer
from hooklab.options import Choice

BASELINE_NAMES = ("zeros", "pad", "eos", "unk", "bos")
#: The ``baseline`` option: a name, a token id (checked against the vocabulary) or a tensor.
Baseline = Annotated[str, Choice(*BASELINE_NAMES)] | int | Tensor


def baseline_embeddings(
    model,
    batch: Batch,
    embeds: Float[Tensor, "batch pos d_model"],
    baseline: str | int | Tensor = "zeros",
) -> Float[Tensor, "batch pos d_model"]:
    """Return baseline embeddings shaped like ``embeds``.

    Args:
        baseline: ``"zeros"`` (default), a special-token name (``"pad"``, ``"eos"``, ``"unk"``,
            ``"bos"``) or a token id (its embedding at every position), or a tensor that
            broadcasts to ``[batch, pos, d_model]`` (encoder–decoder: every input position).
    """
    if isinstance(baseline, Tensor):
        if baseline.is_floating_point() and not torch.isfinite(baseline).all():
            raise ValueError(
                f"baseline tensor of shape {tuple(baseline.shape)} has NaN or inf values; pass "
                "finite embeddings ([batch, pos, d_model] or broadcastable), or a name such as "
                "'zeros'."
            )
        try:
            return baseline.to(embeds).expand_as(embeds)
        except RuntimeError:
            raise ValueError(
                f"Baseline of shape {tuple(baseline.shape)} does not broadcast to the "
                f"embeddings' shape {tuple(embeds.shape)} ([batch, pos, d_model])."
            ) from None
    if baseline == "zeros":
        return torch.zeros_like(embeds)
    if isinstance(baseline, str):
        if baseline not in BASELINE_NAMES:
            raise ValueError(f"Unknown baseline {baseline!r}; use one of {BASELINE_NAMES}.")
        # the model's own tokenizer: TransformerLens' copy has a BOS (= EOS) where it has none
        token = getattr(own_tokenizer(model), f"{baseline}_token_id", None)
        if token is None:
            raise ValueError(f"The tokenizer has no {baseline} token; pick another baseline.")
        baseline = int(token)
    if isinstance(baseline, int) and not isinstance(baseline, bool):
        if not 0 <= baseline < model.cfg.d_vocab:
            raise ValueError(f"Baseline token id {baseline} is outside 0..{model.cfg.d_vocab - 1}.")
        return token_embeddings(model, batch, token_id=baseline).to(embeds)
    raise TypeError(
        f"baseline must be a name {BASELINE_NAMES}, a token id or a tensor; got {baseline!r}."
    )
