"""Gradient SHAP (Lundberg & Lee, 2017), as in Captum's ``GradientShap``.

φ_t(x) ≈ E[(x + ε - x') ∂F_t(x̃) / ∂x] with x̃ = x' + α (x + ε - x'), α ~ U(0, 1), ε ~ N(0, σ²):
an expectation of input x gradient over random points between a baseline and the (noisy)
input. ``seed`` makes it reproducible without touching the global RNG.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hooklab.forward import token_embeddings
from hooklab.inputs import Batch
from hooklab.methods.base import MethodResult, Target
from hooklab.methods.baselines import baseline_embeddings
from hooklab.methods.gradients import gradients_at


def gradient_shap(
    model,
    batch: Batch,
    *,
    target: Target,
    n_samples: int = 8,
    stdevs: float = 0.0,
    baseline: str | int | Tensor = "zeros",
    seed: int = 0,
    vjp: str = "auto",
    vjp_chunk: int = 16,
) -> MethodResult:
    """Gradient SHAP attributions ``[batch, step, pos, d_model]``, all steps per sample."""
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive int, got {n_samples!r}.")
    if stdevs < 0:
        raise ValueError(f"stdevs must be >= 0, got {stdevs!r}.")
    x = token_embeddings(model, batch)
    x0 = baseline_embeddings(model, batch, x, baseline)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    index = torch.arange(batch.size, device=x.device).repeat(n_samples)
    alphas = torch.rand(n_samples * batch.size, generator=gen).to(x)
    noise = torch.randn((n_samples * batch.size, *x.shape[1:]), generator=gen).to(x) * stdevs
    start, end = x0.repeat(n_samples, 1, 1), x.repeat(n_samples, 1, 1) + noise
    points = start + alphas[:, None, None] * (end - start)
    grads, _ = gradients_at(
        model, batch.take(index), target.take(index), points, vjp=vjp, vjp_chunk=vjp_chunk
    )
    products = grads * (end - start)[:, None]
    return MethodResult(products.reshape(n_samples, batch.size, *grads.shape[1:]).mean(0))
