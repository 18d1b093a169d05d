"""Per-step gradients of the attributed function with respect to input embeddings.

All steps share one forward pass; each step then needs its own backward pass (its own scalar
function value). ``vjp="loop"`` runs them one after another on the retained graph; ``vjp="batched"``
runs several as one batched vector-Jacobian product (``torch.autograd.grad(...,
is_grads_batched=True)``); ``"auto"`` picks batched (it reads the weights once for several
steps) unless attention dominates a long sequence's VJP (:func:`attention_bound`): then the loop.

Memory and speed are set by one budget, ``max_batch_tokens``: the sequence-tokens one pass may
carry. A forward over ``r`` sequences of width ``w`` (input positions) carries ``r * w``; a
batched VJP over ``c`` steps on that graph carries ``c * r * w`` (its activations are ``c``
times the forward's). :func:`plan` picks the most sequences per forward pass that fit, then
the most steps per VJP that keep ``c * r * w`` within the budget (one of each at least).
Sequences (examples, quadrature points, samples) are independent rows of the batch, so the
gradient of a step's sum over rows gives every row its own gradient, and chunking changes the
grouping of the same arithmetic, not the result. On one CPU thread (GPT-2-small shape, 30
tokens, 10 steps, 50 IG points) VJPs of ~500-2000 token rows were fastest: larger ones make
the element-wise backward kernels memory-bound, and one point per forward pass pays the
per-forward overhead 50 times. On a GPU, raise it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import torch
from jaxtyping import Float
from torch import Tensor

from hooklab.budget import MAX_BATCH_TOKENS, attention_bound, plan
from hooklab.forward import step_logits
from hooklab.options import Choice, PositiveInt, check_value
from hooklab.precision import upcast

if TYPE_CHECKING:
    from hooklab.inputs import Batch
    from hooklab.methods.base import AttributedFn

VJP_MODES = ("auto", "loop", "batched")
#: The ``vjp`` option of the gradient methods.
VjpMode = Annotated[str, Choice(*VJP_MODES)]

#: ``rows -> (embeddings [rows, pos, d_model], scale broadcastable to them)`` of the rows
#: (indices into a stack of sequences) that :func:`summed_gradients` asks for.
RowInputs = Callable[[Tensor], tuple[Tensor, Tensor | None]]


def check_vjp(vjp: object, vjp_chunk: object, max_batch_tokens: object = MAX_BATCH_TOKENS) -> None:
    """Raise for an unknown ``vjp`` mode, or a ``vjp_chunk`` (steps per batched backward pass;
    None: set by the budget) or ``max_batch_tokens`` that is not an int >= 1."""
    check_value("vjp", vjp, VjpMode)
    check_value("vjp_chunk", vjp_chunk, PositiveInt | None)
    check_value("max_batch_tokens", max_batch_tokens, PositiveInt)


def attributed_scores(
    model, batch: Batch, attributed_fn: AttributedFn, embeds: Tensor | None = None
) -> Float[Tensor, "batch step"]:
    """The attributed function of every step from one forward pass (NaN at padded steps)."""
    return attributed_fn(model, batch, step_logits(model, batch, embeds))


def scores_in_passes(
    model,
    batch: Batch,
    attributed_fn: AttributedFn,
    n_rows: int,
    row_embeds: Callable[[Tensor], Tensor],
    *,
    max_rows: int | None = None,
    max_batch_tokens: int = MAX_BATCH_TOKENS,
) -> Float[Tensor, "batch step"]:
    """Scores of ``n_rows`` sequences (row r: example ``r % batch.size`` with embeddings
    ``row_embeds(rows)``), in forward passes of at most ``max_batch_tokens`` tokens (and
    ``max_rows`` rows); NaN at padded steps. Use under ``torch.no_grad()``."""
    rows, _ = plan(n_rows, batch.input_width, 1, max_batch_tokens, max_rows=max_rows)
    out = None
    for lo in range(0, n_rows, rows):
        index = torch.arange(lo, min(n_rows, lo + rows), device=batch.tokens.device)
        examples = index % batch.size
        scores = attributed_scores(
            model, batch.take(examples), attributed_fn.take(examples), row_embeds(index)
        )
        if out is None:
            out = scores.new_full((n_rows, batch.n_steps), torch.nan)
        out[lo : lo + len(index), : scores.shape[1]] = scores
    return out


def step_gradients(
    scores: Float[Tensor, "batch step"],
    inputs: Float[Tensor, "batch pos d_model"],
    *,
    vjp: str = "auto",
    vjp_chunk: int = 16,
) -> Float[Tensor, "batch step pos d_model"]:
    """Return d scores[b, t] / d inputs[b] for every example b and step t.

    Examples are independent in the forward pass, so the gradient of ``scores[:, t].sum()``
    with respect to ``inputs[b]`` is that of ``scores[b, t]`` alone. ``vjp_chunk`` steps go
    through one batched VJP (``vjp="loop"``: one at a time).
    """
    check_vjp(vjp, vjp_chunk)
    steps = scores.shape[1]
    chunk = 1 if vjp == "loop" else vjp_chunk
    clean = torch.nan_to_num(scores, nan=0.0)  # padded steps contribute no gradient
    grads = inputs.new_zeros(inputs.shape[0], steps, *inputs.shape[1:])
    if chunk == 1:
        for t in range(steps):
            (g,) = torch.autograd.grad(
                clean[:, t].sum(), inputs, retain_graph=t < steps - 1, allow_unused=True
            )
            if g is not None:
                grads[:, t] = g
        return grads
    eye = torch.eye(steps, dtype=clean.dtype, device=clean.device)
    for lo in range(0, steps, chunk):
        hi = min(lo + chunk, steps)
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
    """Per-step gradients of ``attributed_fn`` at ``embeds`` (one forward pass), and its values."""
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


def summed_gradients(
    model,
    batch: Batch,
    attributed_fn: AttributedFn,
    n_rows: int,
    row_inputs: RowInputs,
    *,
    vjp: str = "auto",
    vjp_chunk: int | None = None,
    max_rows: int | None = None,
    max_batch_tokens: int = MAX_BATCH_TOKENS,
) -> Float[Tensor, "batch step pos d_model"]:
    """Return Σ_r s_r ⊙ ∂F_t(e_r) / ∂e_r over the rows r of each example, in bounded passes.

    Row r (of ``n_rows``) is a sequence of example ``r % batch.size`` with embeddings ``e_r``
    and scale ``s_r`` (None: 1) given by ``row_inputs``: the batch itself (saliency), or its
    copies at quadrature points or random samples. The rows go through forward passes of at
    most :func:`plan`'s size, each followed by batched VJPs over chunks of steps.
    """
    size, width = batch.size, batch.input_width
    cfg, d_model = model.cfg, int(model.cfg.d_model)
    d_mlp = int(getattr(cfg, "d_mlp", None) or 4 * d_model)
    long = attention_bound(int(cfg.n_heads), d_model, d_mlp, width)
    max_steps = 1 if vjp == "loop" or (vjp == "auto" and long) else vjp_chunk
    rows, chunk = plan(
        n_rows, width, batch.n_steps, max_batch_tokens, max_rows=max_rows, max_steps=max_steps
    )
    total = None
    for lo in range(0, n_rows, rows):
        index = torch.arange(lo, min(n_rows, lo + rows), device=batch.tokens.device)
        examples = index % size
        embeds, scale = row_inputs(index)
        grads, _ = gradients_at(
            model, batch.take(examples), attributed_fn.take(examples), embeds, vjp=vjp,
            vjp_chunk=chunk,
        )  # fmt: skip
        grads = upcast(grads)  # the sum over rows in float32 (float64 stays)
        if scale is not None:
            grads = grads * scale[:, None]
        if total is None:
            total = grads.new_zeros(size, batch.n_steps, *grads.shape[2:])
        total[:, : grads.shape[1]].index_add_(0, examples, grads.to(total.dtype))
    return total
