"""Gradient SHAP (Lundberg & Lee, 2017), as in Captum's ``GradientShap``.

φ_t(x) ≈ E[(x + ε - x') ∂F_t(x̃) / ∂x] with x̃ = x' + α (x + ε - x'), α ~ U(0, 1), ε ~ N(0, σ²):
an expectation of input x gradient over random points between a baseline and the (noisy)
input. ``seed`` makes it reproducible without touching the global RNG: every example draws
its own samples from a generator seeded with ``seed``, over its real tokens only, so its result
does not depend on the batch it runs in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from hooklab.forward import token_embeddings
from hooklab.methods.base import MethodResult, register_method
from hooklab.methods.baselines import Baseline, baseline_embeddings
from hooklab.methods.gradients import MAX_BATCH_TOKENS, VjpMode, summed_gradients
from hooklab.options import NonNegativeFloat, PositiveInt, Seed
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


@register_method("gradient_shap", kind="gradient", needs_gradients=True, encoder_decoder=True)
def gradient_shap(
    model,
    batch: Batch,
    *,
    attributed_fn: AttributedFn,
    n_samples: PositiveInt = 8,
    stdevs: NonNegativeFloat = 0.0,
    baseline: Baseline = "zeros",
    seed: Seed = 0,
    vjp: VjpMode = "auto",
    vjp_chunk: PositiveInt | None = None,
    max_batch_tokens: PositiveInt = MAX_BATCH_TOKENS,
) -> MethodResult:
    """Gradient SHAP attributions ``[batch, step, pos, d_model]``, all steps per sample.

    The samples are rows of one stack, run in forward passes and batched VJPs of at most
    ``max_batch_tokens`` sequence-tokens (see :mod:`hooklab.methods.gradients`); the result
    does not depend on it.

    Args:
        n_samples: random points per example.
        stdevs: standard deviation of the Gaussian noise added to the input (0: none).
        baseline: see :func:`hooklab.methods.baselines.baseline_embeddings`.
        seed: seed of the random draws (each example its own generator).
        vjp: ``"auto"``, ``"batched"`` or ``"loop"`` (see :mod:`hooklab.methods.gradients`).
        vjp_chunk: at most this many steps per batched VJP; None: set by the budget.
        max_batch_tokens: sequence-tokens per forward pass or batched VJP; bounds the memory.
    """
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
