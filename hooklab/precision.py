"""Reductions in float32, whatever dtype the model runs in.

``hooklab.load(..., dtype="bf16" | "fp16")`` runs the model in half precision: its matmuls and
activations stay there. bfloat16 keeps 8 significant bits (a relative step of 2^-8 ≈ 0.4 %)
and float16 11 bits with a largest value of 65504, so a softmax, a log-softmax, a norm, a KL
divergence, an entropy, a cosine distance or any sum over a vocabulary or a hidden size taken
in that dtype loses digits or overflows. hooklab takes each such reduction in float32 instead
(float64 when the model runs in float64): it casts the half-precision values with
:func:`upcast` (or passes ``dtype=`` to the reduction) right before reducing.

Outputs hold :func:`reduction_dtype` of the model's dtype on the CPU: float32 for a float32,
bfloat16 or float16 model, float64 for a float64 model where a method keeps it (attributions of
:func:`hooklab.attribute` are always float32; PECoRe's scores are float64).
"""

from __future__ import annotations

import torch
from torch import Tensor

#: The dtypes whose values are reduced in float32 (see the module docstring).
HALF_DTYPES = (torch.bfloat16, torch.float16)


def reduction_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype reductions over values of ``dtype`` run in: float64 stays, floats -> float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def upcast(x: Tensor) -> Tensor:
    """Return ``x`` in float32 if it is bfloat16 or float16 (differentiable), else unchanged."""
    return x.float() if x.dtype in HALF_DTYPES else x
