"""Saliency (Simonyan et al., 2014) and input x gradient (Shrikumar et al., 2016)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hooklab.forward import token_embeddings
from hooklab.methods.base import MethodResult
from hooklab.methods.gradients import check_vjp, gradients_at

if TYPE_CHECKING:
    from hooklab.inputs import Batch
    from hooklab.methods.base import AttributedFn


def saliency(
    model,
    batch: Batch,
    *,
    attributed_fn: AttributedFn,
    abs: bool = True,
    vjp: str = "auto",
    vjp_chunk: int = 16,
) -> MethodResult:
    """Gradient of each step's attributed function with respect to every input token embedding.

    Returns ``[batch, step, pos, d_model]`` gradients (their absolute value when ``abs``); the
    hidden dimension is reduced when shown (L2 norm by default). One forward pass for all steps,
    one backward pass per step.
    """
    check_vjp(vjp, vjp_chunk)
    grads, _ = gradients_at(
        model, batch, attributed_fn, token_embeddings(model, batch), vjp=vjp, vjp_chunk=vjp_chunk
    )
    return MethodResult(grads.abs() if abs else grads)


def input_x_gradient(
    model, batch: Batch, *, attributed_fn: AttributedFn, vjp: str = "auto", vjp_chunk: int = 16
) -> MethodResult:
    """Gradient times input embedding, per step and token: ``[batch, step, pos, d_model]``."""
    check_vjp(vjp, vjp_chunk)
    embeds = token_embeddings(model, batch)
    grads, _ = gradients_at(model, batch, attributed_fn, embeds, vjp=vjp, vjp_chunk=vjp_chunk)
    return MethodResult(grads * embeds[:, None])
