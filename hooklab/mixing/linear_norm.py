"""A LayerNorm or RMSNorm as a linear map, its scale fixed at the input it actually saw.

ALTI (Kobayashi et al. 2021; Ferrando et al. 2022) passes contributions through a norm by
fixing each position's divisor ``s_i`` at the norm's actual input: ``N(z) = P(z) ⊙ γ / s_i +
β`` is then linear in ``z`` (``P`` centres for a LayerNorm, is the identity for an RMSNorm), so
a sum of parts ``z = Σ_j z_j`` maps to ``Σ_j P(z_j) ⊙ γ / s_i`` plus the constant ``β``. This
module finds the form on a norm module and proves it against the norm's recorded output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from hooklab.precision import upcast
from hooklab.selfcheck import tolerance


@dataclass(frozen=True)
class LinearNorm:
    """``N(z) = P(z) ⊙ scale + beta`` on the input it was fitted on.

    Attributes:
        scale: ``[pos, d_model]`` ``γ / s_i`` per position.
        beta: ``[d_model]`` the norm's bias (0 for an RMSNorm).
        center: ``P`` subtracts the mean (LayerNorm).
        dtype: the precision the fit was proved at (float32 for norms that compute in float32
            inside a float64 model, as Hugging Face RMSNorms do).
    """

    scale: Float[Tensor, "pos d_model"]
    beta: Float[Tensor, "d_model"]
    center: bool
    dtype: torch.dtype

    def project(self, parts: Float[Tensor, "*rows d_model"]) -> Float[Tensor, "*rows d_model"]:
        """``P(parts)``: centred along the last dimension for a LayerNorm, else unchanged."""
        return parts - parts.mean(-1, keepdim=True) if self.center else parts

    def readout(
        self, u: Float[Tensor, "step d_model"], positions: Tensor
    ) -> Float[Tensor, "step d_model"]:
        """``r`` with ``(P(c) ⊙ scale[p]) · u = c · r`` for every ``c``, per step's position
        ``p`` in ``positions`` (``P`` is symmetric)."""
        return self.project(u * self.scale[positions].to(u.dtype))


def linear_norm(
    norm: torch.nn.Module, x_in: Float[Tensor, "pos d_model"], x_out: Float[Tensor, "pos d_model"]
) -> LinearNorm | None:
    """Fit ``norm`` (a bridge or Hugging Face module) on its input ``x_in`` and output
    ``x_out``: a LayerNorm, an RMSNorm with scale ``w`` or Gemma's ``1 + w``; None if none of
    them computes ``x_out``."""
    norm = getattr(norm, "original_component", norm)
    weight = getattr(norm, "weight", None)
    if weight is None:
        return None
    x_in = upcast(x_in)
    weight, bias = weight.to(x_in.dtype), getattr(norm, "bias", None)
    eps = getattr(norm, "eps", None) or getattr(norm, "variance_epsilon", 1e-6)
    beta = torch.zeros_like(weight) if bias is None else bias.to(x_in.dtype)
    centered = x_in - x_in.mean(-1, keepdim=True)
    candidates = [(weight, centered, True)] if bias is not None else []
    candidates += [(weight, x_in, False), (1 + weight, x_in, False)]  # RMSNorm: w, Gemma: 1 + w
    for gamma, p, center in candidates:
        scale = gamma / (p.pow(2).mean(-1, keepdim=True) + eps).sqrt()
        got = p * scale + beta
        for dtype in dict.fromkeys([x_out.dtype, torch.float32]):
            if (got.to(dtype) - x_out.to(dtype)).abs().max() <= tolerance(x_out.to(dtype)):
                return LinearNorm(scale, beta, center, dtype)
    return None
