"""Integrated gradients (Sundararajan et al., 2017) for every generation step at once.

IG_t(x) = (x - x') * ∫_0^1 ∂F_t(x' + α (x - x')) / ∂x dα, approximated by a quadrature
Σ_k w_k ∂F_t(x' + α_k (x - x')) / ∂x. One forward over the interpolated full sequences serves
every step t; the ``completeness_delta`` extra is Σ IG_t - (F_t(x) - F_t(x')), which goes to 0
as ``n_steps`` grows. Gauss-Legendre nodes reach a given error with far fewer points than a
Riemann sum when F is smooth along the path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from hooklab.forward import token_embeddings
from hooklab.methods.base import MethodResult
from hooklab.methods.baselines import baseline_embeddings
from hooklab.methods.gradients import attributed_scores, check_vjp, gradients_at

if TYPE_CHECKING:
    from hooklab.inputs import Batch
    from hooklab.methods.base import AttributedFn

QUADRATURES = (
    "gausslegendre",
    "riemann_trapezoid",
    "riemann_left",
    "riemann_right",
    "riemann_middle",
)


def quadrature(n_steps: int, rule: str = "gausslegendre") -> tuple[Tensor, Tensor]:
    """Return nodes α_k in [0, 1] and weights w_k (summing to 1) of an n-point rule."""
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive int (quadrature points), got {n_steps!r}.")
    n = n_steps
    if rule == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(n)
        return torch.tensor((x + 1) / 2), torch.tensor(w / 2)
    if rule == "riemann_trapezoid":
        if n < 2:
            raise ValueError("riemann_trapezoid needs n_steps >= 2.")
        alphas = torch.linspace(0, 1, n, dtype=torch.float64)
        weights = torch.full((n,), 1.0 / (n - 1), dtype=torch.float64)
        weights[[0, -1]] /= 2
        return alphas, weights
    offsets = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}
    if rule not in offsets:
        raise ValueError(f"Unknown quadrature rule {rule!r}; use one of {QUADRATURES}.")
    alphas = (torch.arange(n, dtype=torch.float64) + offsets[rule]) / n
    return alphas, torch.full((n,), 1.0 / n, dtype=torch.float64)


def integrated_gradients(
    model,
    batch: Batch,
    *,
    attributed_fn: AttributedFn,
    n_steps: int = 16,
    rule: str = "gausslegendre",
    baseline: str | int | Tensor = "zeros",
    internal_batch_size: int = 16,
    vjp: str = "auto",
    vjp_chunk: int = 16,
) -> MethodResult:
    """Integrated gradients of each step's attributed function with respect to the input embeddings.

    Args:
        n_steps: quadrature points along the straight path from the baseline to the input.
        rule: the quadrature: ``"gausslegendre"`` (default) or a Riemann rule
            (``"riemann_trapezoid"``, ``"riemann_left"``...).
        baseline: see :func:`hooklab.methods.baselines.baseline_embeddings`.
        internal_batch_size: interpolation points per forward pass (each one copy of the batch).

    Returns:
        Attributions ``[batch, step, pos, d_model]`` and the extra ``completeness_delta``
        ``[batch, step]``.
    """
    bad_size = isinstance(internal_batch_size, bool) or not isinstance(internal_batch_size, int)
    if bad_size or internal_batch_size < 1:
        raise ValueError(
            f"internal_batch_size must be a positive int, got {internal_batch_size!r}."
        )
    check_vjp(vjp, vjp_chunk)
    alphas, weights = quadrature(n_steps, rule)
    x = token_embeddings(model, batch)
    x0 = baseline_embeddings(model, batch, x, baseline)
    total: Float[Tensor, "batch step pos d_model"] | None = None
    for lo in range(0, len(alphas), internal_batch_size):
        a = alphas[lo : lo + internal_batch_size].to(x)
        w = weights[lo : lo + internal_batch_size].to(x)
        k = len(a)
        index = torch.arange(batch.size, device=x.device).repeat(k)  # alpha-major copies
        points = x0.repeat(k, 1, 1) + a.repeat_interleave(batch.size)[:, None, None] * (
            x - x0
        ).repeat(k, 1, 1)
        grads, _ = gradients_at(
            model,
            batch.take(index),
            attributed_fn.take(index),
            points,
            vjp=vjp,
            vjp_chunk=vjp_chunk,
        )
        weighted = (grads * w.repeat_interleave(batch.size)[:, None, None, None]).reshape(
            k, batch.size, *grads.shape[1:]
        )
        total = weighted.sum(0) if total is None else total + weighted.sum(0)
    attributions = total * (x - x0)[:, None]
    with torch.no_grad():
        gap = attributed_scores(model, batch, attributed_fn, x) - attributed_scores(
            model, batch, attributed_fn, x0
        )
    delta = attributions.sum(dim=(-1, -2)) - gap
    return MethodResult(attributions, {"completeness_delta": delta})
