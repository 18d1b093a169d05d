"""Mixing matrices, whatever made them: row distances, normalisation and rollout.

Shared by value zeroing (:mod:`hooklab.mixing.value_zeroing`) and ALTI
(:mod:`hooklab.mixing.alti`): the distance functions value zeroing compares layer outputs
with, row normalisation (each query's scores sum to 1) and the rollout across layers
(Abnar & Zuidema, 2020; ``J_ℓ = S_ℓ · J_{ℓ-1}``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from hooklab.precision import upcast
from hooklab.registry import unknown_name_error


def cosine_distance(
    a: Float[Tensor, "*batch d_model"], b: Float[Tensor, "*batch d_model"]
) -> Tensor:
    """Return ``1 - cos(a, b)`` per row, as ``|â - b̂|² / 2`` (no cancellation near 0), in
    float32 for half-precision inputs."""
    a, b = upcast(a), upcast(b)
    return (F.normalize(a, dim=-1) - F.normalize(b, dim=-1)).pow(2).sum(-1) / 2


def euclidean_distance(
    a: Float[Tensor, "*batch d_model"], b: Float[Tensor, "*batch d_model"]
) -> Tensor:
    """Return the L2 distance ``|a - b|`` per row, in float32 for half-precision inputs."""
    return (upcast(a) - upcast(b)).norm(dim=-1)


METRICS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "cosine": cosine_distance,
    "euclidean": euclidean_distance,
}


def rollout_scores(scores: Float[Tensor, "layer query_pos key_pos"]) -> Tensor:
    """Roll mixing matrices out across layers: ``J_0 = S_0``, ``J_ℓ = S_ℓ · J_{ℓ-1}``."""
    rolled = [scores[0]]
    for layer_scores in scores[1:]:
        rolled.append(layer_scores @ rolled[-1])
    return torch.stack(rolled)


def metric_fn(metric: str):
    """Return the distance function named ``metric``; ValueError listing the valid ones."""
    if metric not in METRICS:
        raise ValueError(unknown_name_error("metric", metric, list(METRICS)).args[0])
    return METRICS[metric]


def normalize_rows(scores: Tensor) -> Tensor:
    """Divide each row by its sum (rows that sum to 0 stay 0)."""
    total = scores.sum(-1, keepdim=True)
    return torch.where(total > 0, scores / torch.where(total > 0, total, 1), scores)


__all__ = [
    "METRICS",
    "cosine_distance",
    "euclidean_distance",
    "metric_fn",
    "normalize_rows",
    "rollout_scores",
]
