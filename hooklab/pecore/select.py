"""The selection rule PECoRe uses for both context-sensitive tokens and contextual cues."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Bool, Float
from torch import Tensor


def selection_threshold(scores: Float[Tensor, "pos"], std_threshold: float | None) -> float | None:
    """Return mean(|s|) + λ·std(|s|) (population std) over finite scores, or None."""
    if std_threshold is None:
        return None
    a = scores[torch.isfinite(scores)].abs().double()
    if a.numel() == 0:
        return None
    return float(a.mean() + std_threshold * a.std(unbiased=False))


def select(
    scores: Float[Tensor, "pos"] | Sequence[float],
    *,
    std_threshold: float | None = 1.0,
    topk: int | None = None,
    candidates: Bool[Tensor, "pos"] | None = None,
) -> list[int]:
    """Select indices whose score stands out, as in PECoRe (Sarti et al., 2024).

    Selection uses absolute values |s|, so signed metrics (P-CXMI, probability differences,
    signed attributions) select large effects of either sign; ranking is by |s| too.

    Rule: among ``candidates`` with finite scores, keep |s| >= mean(|s|) + λ·std(|s|) (λ =
    ``std_threshold``, population std). When all candidate scores are equal (std = 0, e.g. a
    single token) no score stands out and nothing is kept by this rule. With ``topk``, keep at
    most the k largest of those (or of all candidates when ``std_threshold`` is None). With both
    None, keep every candidate.

    Returns:
        Selected indices in increasing order.
    """
    scores = torch.as_tensor(scores, dtype=torch.float64)
    if topk is not None and (not isinstance(topk, int) or topk < 0):
        raise ValueError(f"topk must be a non-negative int or None, got {topk!r}.")
    if std_threshold is not None and not isinstance(std_threshold, (int, float)):
        raise ValueError(f"std_threshold must be a number or None, got {std_threshold!r}.")
    ok = torch.isfinite(scores)
    if candidates is not None:
        ok &= candidates.to(torch.bool)
    keep = ok.clone()
    a = scores.abs()
    if std_threshold is not None and ok.any():
        pool = a[ok]
        std = pool.std(unbiased=False)
        if std == 0:
            keep[:] = False
        else:
            keep &= a >= pool.mean() + std_threshold * std
    if topk is not None:
        ranked = [i for i in torch.argsort(a, descending=True, stable=True).tolist() if keep[i]]
        keep[:] = False
        keep[ranked[:topk]] = True
    return torch.nonzero(keep).flatten().tolist()
