"""Per-step gradients of the attributed function with respect to input embeddings.

All steps share one forward pass; each step then needs its own backward pass (its own scalar
function value). ``vjp="loop"`` runs them one after another on the retained graph; ``vjp="batched"``
runs them as one batched vector-Jacobian product (``torch.autograd.grad(...,
is_grads_batched=True)``), in chunks of ``vjp_chunk`` steps; ``"auto"`` picks batched (it reads the
weights once for all steps: 1.5-1.9x faster than the loop on a GPT-2-small-sized model on one CPU
thread, for a little more memory).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor

from hooklab.forward import step_logits

if TYPE_CHECKING:
    from hooklab.inputs import Batch
    from hooklab.methods.base import AttributedFn

VJP_MODES = ("auto", "loop", "batched")


def check_vjp(vjp: object, vjp_chunk: object) -> None:
    """Raise ValueError for an unknown ``vjp`` mode or a ``vjp_chunk`` that is not an int >= 1."""
    if vjp not in VJP_MODES:
        raise ValueError(f"vjp={vjp!r} is not one of {VJP_MODES}.")
    if isinstance(vjp_chunk, bool) or not isinstance(vjp_chunk, int) or vjp_chunk < 1:
        raise ValueError(
            f"vjp_chunk must be a positive int (steps per batched backward pass), got "
            f"{vjp_chunk!r}."
        )


def attributed_scores(
    model, batch: Batch, attributed_fn: AttributedFn, embeds: Tensor | None = None
) -> Float[Tensor, "batch step"]:
    """The attributed function of every step from one forward pass (NaN at padded steps)."""
    return attributed_fn(model, batch, step_logits(model, batch, embeds))


def step_gradients(
    scores: Float[Tensor, "batch step"],
    inputs: Float[Tensor, "batch pos d_model"],
    *,
    vjp: str = "auto",
    vjp_chunk: int = 16,
) -> Float[Tensor, "batch step pos d_model"]:
    """Return d scores[b, t] / d inputs[b] for every example b and step t.

    Examples are independent in the forward pass, so the gradient of ``scores[:, t].sum()``
    with respect to ``inputs[b]`` is that of ``scores[b, t]`` alone.
    """
    check_vjp(vjp, vjp_chunk)
    if vjp == "auto":
        vjp = "batched"
    steps = scores.shape[1]
    clean = torch.nan_to_num(scores, nan=0.0)  # padded steps contribute no gradient
    grads = inputs.new_zeros(inputs.shape[0], steps, *inputs.shape[1:])
    if vjp == "loop":
        for t in range(steps):
            (g,) = torch.autograd.grad(
                clean[:, t].sum(), inputs, retain_graph=t < steps - 1, allow_unused=True
            )
            if g is not None:
                grads[:, t] = g
        return grads
    eye = torch.eye(steps, dtype=clean.dtype, device=clean.device)
    for lo in range(0, steps, vjp_chunk):
        hi = min(lo + vjp_chunk, steps)
        # grad_outputs[k] selects step lo + k of every example
        basis = eye[lo:hi, None, :].expand(hi - lo, clean.shape[0], steps)
        (g,) = torch.autograd.grad(
            clean,
            inputs,
            grad_outputs=basis,
            retain_graph=hi < steps,
            is_grads_batched=True,
            allow_unused=True,
        )
        if g is not None:
            grads[:, lo:hi] = g.transpose(0, 1)
    return grads


def gradients_at(
    model,
    batch: Batch,
    attributed_fn: AttributedFn,
    embeds: Float[Tensor, "batch pos d_model"],
    *,
    vjp: str = "auto",
    vjp_chunk: int = 16,
) -> tuple[Float[Tensor, "batch step pos d_model"], Float[Tensor, "batch step"]]:
    """Per-step gradients of ``attributed_fn`` at ``embeds``, and its values there."""
    leaf = embeds.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        scores = attributed_scores(model, batch, attributed_fn, leaf)
        if not scores.requires_grad:
            raise ValueError(
                f"attributed_fn={attributed_fn.name!r} is not differentiable (its scores do not "
                "depend on the logits through autograd), so a gradient method cannot explain "
                "it. Use a differentiable step function such as 'probability', 'logit' or "
                f"'contrast_prob_diff', or a perturbation method (occlusion) for "
                f"{attributed_fn.name!r}."
            )
        grads = step_gradients(scores, leaf, vjp=vjp, vjp_chunk=vjp_chunk)
    return grads, scores.detach()
