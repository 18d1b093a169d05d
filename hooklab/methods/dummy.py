"""The ``dummy`` method: no attribution, only step scores."""

from __future__ import annotations

from hooklab.inputs import Batch
from hooklab.methods.base import MethodResult, Target


def dummy(model, batch: Batch, *, target: Target) -> MethodResult:
    """Return no attributions; :func:`hooklab.attribute` still computes the step scores."""
    del model, batch, target
    return MethodResult(attributions=None)
