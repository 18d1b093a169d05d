"""Saliency (Simonyan et al., 2014) and input x gradient (Shrikumar et al., 2016)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hooklab.forward import token_embeddings
from hooklab.methods.base import MethodResult, register_method
from hooklab.methods.gradients import MAX_BATCH_TOKENS, VjpMode, summed_gradients
from hooklab.options import PositiveInt

if TYPE_CHECKING:
    from hooklab.inputs import Batch
    from hooklab.methods.base import AttributedFn


def _gradients(model, batch: Batch, attributed_fn: AttributedFn, embeds, vjp, vjp_chunk, budget):
    """Per-step gradients at ``embeds``, the examples and steps chunked to the token budget."""
    return summed_gradients(
        model, batch, attributed_fn, batch.size, lambda rows: (embeds[rows], None), vjp=vjp,
        vjp_chunk=vjp_chunk, max_batch_tokens=budget,
    )  # fmt: skip


@register_method("saliency", kind="gradient", needs_gradients=True, encoder_decoder=True)
def saliency(
    model,
    batch: Batch,
    *,
    attributed_fn: AttributedFn,
    abs: bool = True,
    vjp: VjpMode = "auto",
    vjp_chunk: PositiveInt | None = None,
    max_batch_tokens: PositiveInt = MAX_BATCH_TOKENS,
) -> MethodResult:
    """Gradient of each step's attributed function with respect to every input token embedding.

    Returns ``[batch, step, pos, d_model]`` gradients (their absolute value when ``abs``); the
    hidden dimension is reduced when shown (L2 norm by default). One forward pass for all steps,
    one backward pass per step, batched (``vjp``, ``vjp_chunk``: see
    :mod:`hooklab.methods.gradients`). ``max_batch_tokens`` bounds the examples per forward pass
    times their width times the steps per batched VJP (memory); the result does not depend on it.

    Args:
        abs: return the gradients' absolute value.
        vjp: ``"auto"``, ``"batched"`` or ``"loop"`` (see :mod:`hooklab.methods.gradients`).
        vjp_chunk: at most this many steps per batched VJP; None: set by the budget.
        max_batch_tokens: sequence-tokens per forward pass or batched VJP (examples x width x
            steps per VJP); bounds the memory. The result does not depend on it.
    """
    embeds = token_embeddings(model, batch)
    grads = _gradients(model, batch, attributed_fn, embeds, vjp, vjp_chunk, max_batch_tokens)
    return MethodResult(grads.abs() if abs else grads)


@register_method("input_x_gradient", kind="gradient", needs_gradients=True, encoder_decoder=True)
def input_x_gradient(
    model,
    batch: Batch,
    *,
    attributed_fn: AttributedFn,
    vjp: VjpMode = "auto",
    vjp_chunk: PositiveInt | None = None,
    max_batch_tokens: PositiveInt = MAX_BATCH_TOKENS,
) -> MethodResult:
    """Gradient times input embedding, per step and token: ``[batch, step, pos, d_model]``.

    Args:
        vjp: as :func:`saliency`.
        vjp_chunk: as :func:`saliency`.
        max_batch_tokens: as :func:`saliency`.
    """
    embeds = token_embeddings(model, batch)
    grads = _gradients(model, batch, attributed_fn, embeds, vjp, vjp_chunk, max_batch_tokens)
    return MethodResult(grads * embeds[:, None])
