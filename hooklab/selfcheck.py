"""One self-check with one tolerance policy, for interventions that must verify themselves.

Interventions check the identities they rely on (``z = pattern · v``, a blocked weight is 0,
``resid_post = resid_mid + MLP(...)``) on the activations of the very pass they edited, and
raise instead of returning silently wrong scores. All of them use :func:`check_identity`, so
the tolerance is decided in one place: relative to the largest magnitude involved, per dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: Relative tolerance per dtype (scaled by ``max(1, max |expected|)``).
RELATIVE_TOLERANCE: dict[torch.dtype, float] = {
    torch.float64: 1e-9,
    torch.float32: 1e-4,
    torch.bfloat16: 3e-2,
    torch.float16: 1e-2,
}


def tolerance(expected: Tensor) -> float:
    """The absolute tolerance for comparing against ``expected``."""
    scale = float(expected.detach().abs().max()) if expected.numel() else 0.0
    return RELATIVE_TOLERANCE.get(expected.dtype, 1e-2) * max(scale, 1.0)


def check_identity(
    identity: str,
    got: Tensor,
    expected: Tensor,
    *,
    where: str,
    error: type[Exception] = RuntimeError,
    hint: str = "",
) -> None:
    """Raise ``error`` if ``got`` differs from ``expected`` by more than :func:`tolerance`.

    Args:
        identity: the identity checked, e.g. ``"z = pattern @ v"``.
        got: the value recomputed from the recorded activations.
        expected: the value the model computed.
        where: where it was checked (a hook name or "layer 3").
        error: the exception type (``NotImplementedError`` for unsupported architectures,
            ``RuntimeError`` for an edit the model discarded).
        hint: what the user can do about it.
    """
    got, expected = got.detach(), expected.detach()
    tol = tolerance(expected)
    err = float((got.to(expected.dtype) - expected).abs().max()) if expected.numel() else 0.0
    if not err <= tol:  # also catches NaN
        raise error(
            f"Self-check failed at {where}: {identity} is off by {err:.3g} (tolerance "
            f"{tol:.3g}). {hint}".rstrip()
        )
