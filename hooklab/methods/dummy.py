"""The ``dummy`` method: no attribution, only step scores."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hooklab.methods.base import MethodResult, register_method

if TYPE_CHECKING:
    from hooklab.inputs import Batch
    from hooklab.methods.base import AttributedFn


@register_method("dummy", kind="step_scores", encoder_decoder=True)
def dummy(model, batch: Batch, *, attributed_fn: AttributedFn) -> MethodResult:
    """Return no attributions; :func:`hooklab.attribute` still computes the step scores."""
    del model, batch, attributed_fn
    return MethodResult(attributions=None)
