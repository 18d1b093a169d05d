"""Gradient SHAP (Lundberg & Lee, 2017), as in Captum's ``GradientShap``.

φ_t(x) ≈ E[(x + ε - x') ∂F_t(x̃) / ∂x] with x̃ = x' + α (x + ε - x'), α ~ U(0, 1), ε ~ N(0, σ²):
an expectation of input x gradient over random points between a baseline and the (noisy)
input. ``seed`` makes it reproducible without touching the global RNG: every example draws
its own samples from a generator seeded with ``seed``, over its real tokens only, so its result
does not depend on the batch it runs in.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from hooklab.forward import token_embeddings
from hooklab.methods.base import MethodResult
from hooklab.methods.baselines import baseline_embeddings
from hooklab.methods.gradients import MAX_BATCH_TOKENS, check_vjp, summed_gradients
from hooklab.precision import upcast

if TYPE_CHECKING:
    from hooklab.inputs import Batch
    from hooklab.methods.base import AttributedFn


def _samples(batch: Batch, x: Tensor, n_samples: int, seed: int) -> tuple[Tensor, Tensor]:
    """Per example: ``n_samples`` path positions α and unit noise on its real tokens.

    Returned sample-major (row ``k * batch + b`` is sample k of example b), noise 0 at padding.
    """
    alphas = x.new_zeros(n_samples, batch.size)
    noise = x.new_zeros(n_samples, *x.shape)  # [n_samples, batch, pos, d_model]
    for b in range(batch.size):
        gen = torch.Generator(device="cpu").manual_seed(seed)
        alphas[:, b] = torch.rand(n_samples, generator=gen).to(x)
        real = batch.real_positions(b)
        noise[:, b, real] = torch.randn((n_samples, len(real), x.shape[2]), generator=gen).to(x)
    return alphas.reshape(-1), noise.reshape(-1, *x.shape[1:])


def gradient_shap(
    model,
    batch: Batch,
    *,
    attributed_fn: AttributedFn,
    n_samples: int = 8,
    stdevs: float = 0.0,
    baseline: str | int | Tensor = "zeros",
    seed: int = 0,
    vjp: str = "auto",
    vjp_chunk: int | None = None,
    max_batch_tokens: int = MAX_BATCH_TOKENS,
) -> MethodResult:
    """Gradient SHAP attributions ``[batch, step, pos, d_model]``, all steps per sample.

    The samples are rows of one stack, run in forward passes and batched VJPs of at most
    ``max_batch_tokens`` sequence-tokens (see :mod:`hooklab.methods.gradients`); the result
    does not depend on it.
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive int, got {n_samples!r}.")
    if isinstance(stdevs, bool) or not isinstance(stdevs, (int, float)):
        raise TypeError(f"stdevs must be a number >= 0, got {type(stdevs).__name__}: {stdevs!r}.")
    if not math.isfinite(stdevs) or stdevs < 0:
        raise ValueError(f"stdevs must be a finite number >= 0 (noise std), got {stdevs!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}: {seed!r}.")
    check_vjp(vjp, vjp_chunk, max_batch_tokens)
    x = token_embeddings(model, batch)
    x0 = baseline_embeddings(model, batch, x, baseline)
    alphas, noise = _samples(batch, x, n_samples, seed)  # [n_samples * batch], [.., pos, d_model]
    noise = noise * stdevs

    def samples(rows: Tensor) -> tuple[Tensor, Tensor]:
        """Row ``k * batch + b``: sample k of example b, and its (end - start) / n_samples."""
        b = rows % batch.size
        start, end = x0[b], x[b] + noise[rows]
        scale = (upcast(end) - upcast(start)) / n_samples  # the mean over samples in float32
        return start + alphas[rows, None, None] * (end - start), scale

    total = summed_gradients(
        model, batch, attributed_fn, n_samples * batch.size, samples, vjp=vjp,
        vjp_chunk=vjp_chunk, max_batch_tokens=max_batch_tokens,
    )  # fmt: skip
    return MethodResult(total)
