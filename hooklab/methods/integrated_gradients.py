"""Integrated gradients (Sundararajan et al., 2017) for every generation step at once.

IG_t(x) = (x - x') * ∫_0^1 ∂F_t(x' + α (x - x')) / ∂x dα, approximated by a quadrature
Σ_k w_k ∂F_t(x' + α_k (x - x')) / ∂x. One forward over the interpolated full sequences serves
every step t; the ``completeness_delta`` extra is Σ IG_t - (F_t(x) - F_t(x')), which goes to 0
as ``n_steps`` grows. Gauss-Legendre nodes reach a given error with far fewer points than a
Riemann sum when F is smooth along the path.

Cost: the quadrature points are rows of one stack, run in forward passes of as many points as
``max_batch_tokens`` allows, each followed by batched VJPs over the steps (see
:mod:`hooklab.methods.gradients`): n points cost n sequence-forwards and n x T sequence-VJPs.
``n_steps="auto"`` (the default) doubles the number of points (8, 16, 32, ... up to
``max_steps``) until every step's completeness delta is within ``tolerance``; a fixed
``n_steps`` that leaves a larger delta warns. The ``n_points`` extra records the points used.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Annotated

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from hooklab.forward import token_embeddings
from hooklab.methods.base import MethodResult, register_method
from hooklab.methods.baselines import Baseline, baseline_embeddings
from hooklab.methods.gradients import (
    MAX_BATCH_TOKENS,
    VjpMode,
    scores_in_passes,
    summed_gradients,
)
from hooklab.options import Choice, IntOrAuto, PositiveFloat, PositiveInt
from hooklab.precision import reduction_dtype

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
AUTO_START = 8  # first size n_steps="auto" tries; it then doubles


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


def path_gradients(
    model,
    batch: Batch,
    attributed_fn: AttributedFn,
    x: Float[Tensor, "batch pos d_model"],
    x0: Float[Tensor, "batch pos d_model"],
    alphas: Tensor,
    weights: Tensor,
    *,
    points_per_pass: int | None = None,
    vjp: str = "auto",
    vjp_chunk: int | None = None,
    max_batch_tokens: int = MAX_BATCH_TOKENS,
) -> Float[Tensor, "batch step pos d_model"]:
    """Return Σ_k w_k ∂F_t(x' + α_k (x - x')) / ∂x for every example and step.

    The points are rows of a stack (alpha-major: row ``k * batch + b`` is point k of example
    b), built one pass at a time; a pass holds as many as ``max_batch_tokens`` allows (see
    :func:`hooklab.methods.gradients.plan`), at most ``points_per_pass`` copies of the batch.
    """
    B = batch.size
    # nodes, weights and points in float32 (float64 stays), each point rounded once to the
    # model's dtype: a bfloat16 node would move the point by up to 2^-9 along the path
    exact = reduction_dtype(x.dtype)
    a, w = alphas.to(x.device, exact), weights.to(x.device, exact)

    def points(rows: Tensor) -> tuple[Tensor, Tensor]:
        k, b = rows // B, rows % B
        start, end = x0[b].to(exact), x[b].to(exact)
        return (start + a[k, None, None] * (end - start)).to(x.dtype), w[k, None, None]

    max_rows = None if points_per_pass is None else points_per_pass * B
    return summed_gradients(
        model, batch, attributed_fn, len(alphas) * B, points, vjp=vjp, vjp_chunk=vjp_chunk,
        max_rows=max_rows, max_batch_tokens=max_batch_tokens,
    )  # fmt: skip


def endpoint_gap(
    model,
    batch: Batch,
    attributed_fn: AttributedFn,
    x: Tensor,
    x0: Tensor,
    max_batch_tokens: int = MAX_BATCH_TOKENS,
) -> Float[Tensor, "batch step"]:
    """F_t(x) - F_t(x') from forward passes over the batch twice (NaN at padded steps)."""
    B = batch.size
    ends = torch.cat([x, x0])
    with torch.no_grad():
        scores = scores_in_passes(
            model, batch, attributed_fn, 2 * B, lambda rows: ends[rows],
            max_batch_tokens=max_batch_tokens,
        )  # fmt: skip
    return scores[:B] - scores[B:]


def excess(delta: Tensor, gap: Tensor) -> float:
    """max over examples and steps of |delta| / max(1, |gap|) (padded steps ignored)."""
    ratio = delta.abs() / gap.abs().clamp(min=1.0)
    return float(ratio.nan_to_num(0.0).max()) if ratio.numel() else 0.0


@register_method(
    "integrated_gradients", kind="gradient", needs_gradients=True, encoder_decoder=True
)
def integrated_gradients(
    model,
    batch: Batch,
    *,
    attributed_fn: AttributedFn,
    n_steps: IntOrAuto = "auto",
    rule: Annotated[str, Choice(*QUADRATURES)] = "gausslegendre",
    tolerance: PositiveFloat = 1e-3,
    max_steps: PositiveInt = 256,
    baseline: Baseline = "zeros",
    internal_batch_size: PositiveInt | None = None,
    vjp: VjpMode = "auto",
    vjp_chunk: PositiveInt | None = None,
    max_batch_tokens: PositiveInt = MAX_BATCH_TOKENS,
) -> MethodResult:
    """Integrated gradients of each step's attributed function with respect to the input embeddings.

    Args:
        n_steps: ``"auto"`` (default): 8, 16, 32, ... Gauss-Legendre points (at most
            ``max_steps``) until the completeness delta of every step is within ``tolerance``;
            or a fixed number of quadrature points along the straight path from the baseline
            to the input (the default was 16 before; it warned on the toy model's example).
        rule: the quadrature: ``"gausslegendre"`` (default) or a Riemann rule
            (``"riemann_trapezoid"``, ``"riemann_left"``...).
        tolerance: the completeness target, |Σ IG_t - (F_t(x) - F_t(x'))| <= tolerance *
            max(1, |F_t(x) - F_t(x')|) for every step t (absolute for gaps up to 1, such as
            probabilities; relative for larger ones, such as logits). Default 1e-3. With a fixed
            ``n_steps``, a larger delta raises a ``UserWarning`` that names it.
        max_steps: the most points ``n_steps="auto"`` uses (it warns if they do not suffice).
        baseline: see :func:`hooklab.methods.baselines.baseline_embeddings`.
        internal_batch_size: at most this many quadrature points (copies of the batch) per
            forward pass; None: as many as ``max_batch_tokens`` allows.
        vjp: ``"auto"``, ``"batched"`` or ``"loop"`` (see :mod:`hooklab.methods.gradients`).
        vjp_chunk: at most this many steps per batched VJP; None: set by the budget.
        max_batch_tokens: sequence-tokens per forward pass or batched VJP (points x width x
            steps per VJP); bounds the memory. The result does not depend on it.

    Returns:
        Attributions ``[batch, step, pos, d_model]`` and the extras ``completeness_delta``
        (Σ IG_t - (F_t(x) - F_t(x'))) and ``n_points`` (points used), each ``[batch, step]``.
    """
    auto = n_steps == "auto"
    n = min(AUTO_START, max_steps) if auto else n_steps
    quadrature(n, rule)  # riemann_trapezoid needs 2 points: checked before any model work
    x = token_embeddings(model, batch)
    x0 = baseline_embeddings(model, batch, x, baseline)
    gap = endpoint_gap(model, batch, attributed_fn, x, x0, max_batch_tokens)
    while True:
        alphas, weights = quadrature(n, rule)
        total = path_gradients(
            model, batch, attributed_fn, x, x0, alphas, weights,
            points_per_pass=internal_batch_size, vjp=vjp, vjp_chunk=vjp_chunk,
            max_batch_tokens=max_batch_tokens,
        )  # fmt: skip
        attributions = total * (x - x0)[:, None]
        delta = attributions.sum(dim=(-1, -2)) - gap
        err = excess(delta, gap)
        if not auto or err <= tolerance or n >= max_steps:
            break
        n = min(2 * n, max_steps)
    if err > tolerance:
        fix = f"raise max_steps (now {max_steps})" if auto else "use n_steps='auto' or more points"
        warnings.warn(
            f"integrated_gradients: max |completeness delta| / max(1, |F(x) - F(x')|) = "
            f"{err:.3g} > tolerance {tolerance:g} with {n} {rule} points; {fix}.",
            UserWarning,
            stacklevel=2,
        )
    extras = {"completeness_delta": delta, "n_points": torch.full_like(gap, n)}
    return MethodResult(attributions, extras)
