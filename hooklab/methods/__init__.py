"""The attribution-method registry.

A method is a function ``fn(model, batch, *, target, **options) -> MethodResult``: it gets a
left-padded :class:`~hooklab.inputs.Batch` and a :class:`~hooklab.methods.base.Target` (the step
function to explain) and returns scores in the batch's padded coordinates. Register new ones
with :func:`register_method`; each lives in its own module under ``hooklab/methods/``.
"""

from __future__ import annotations

from hooklab.methods.attention import attention
from hooklab.methods.base import METHODS, MethodResult, Target, list_methods, register_method
from hooklab.methods.dummy import dummy
from hooklab.methods.gradient_shap import gradient_shap
from hooklab.methods.integrated_gradients import integrated_gradients
from hooklab.methods.occlusion import occlusion
from hooklab.methods.saliency import input_x_gradient, saliency

for _method in (
    dummy,
    saliency,
    input_x_gradient,
    integrated_gradients,
    gradient_shap,
    attention,
    occlusion,
):
    register_method(_method.__name__, _method)

__all__ = ["METHODS", "MethodResult", "Target", "list_methods", "register_method"]
