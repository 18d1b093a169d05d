"""The attribution-method registry.

A method is a function ``fn(model, batch, *, attributed_fn, **options) -> MethodResult``: it gets
a :class:`~hooklab.inputs.Batch` (left-padded; on encoder–decoder models with a
right-padded source) and an :class:`~hooklab.methods.base.AttributedFn`
(the step function to explain) and returns scores in the batch's padded coordinates. Each lives
in its own module under ``hooklab/methods/`` and is registered below with a
:class:`~hooklab.methods.base.MethodSpec` (its kind and what it supports); add your own with
:func:`register_method` and check it with :func:`hooklab.testing.check_method`.
"""

from __future__ import annotations

from hooklab.methods.alti_logit import alti_logit
from hooklab.methods.attention import attention
from hooklab.methods.base import (
    KINDS,
    METHODS,
    AttributedFn,
    MethodResult,
    MethodSpec,
    list_methods,
    method_info,
    register_method,
)
from hooklab.methods.dummy import dummy
from hooklab.methods.gradient_shap import gradient_shap
from hooklab.methods.integrated_gradients import integrated_gradients
from hooklab.methods.occlusion import occlusion
from hooklab.methods.reagent import reagent
from hooklab.methods.saliency import input_x_gradient, saliency
from hooklab.methods.value_zeroing import value_zeroing

register_method("dummy", dummy, kind="step_scores", encoder_decoder=True)
for _method in (saliency, input_x_gradient, integrated_gradients, gradient_shap):
    register_method(
        _method.__name__, _method, kind="gradient", needs_gradients=True, encoder_decoder=True
    )
register_method("occlusion", occlusion, kind="perturbation", encoder_decoder=True)
register_method("reagent", reagent, kind="perturbation", encoder_decoder=True)
register_method(
    "attention", attention, kind="attention", final_step_only=True, reduce="mean",
    encoder_decoder=True,
)  # fmt: skip
register_method(
    "value_zeroing", value_zeroing, kind="context_mixing", final_step_only=True, reduce="mean",
    encoder_decoder=True,
)  # fmt: skip
register_method("alti_logit", alti_logit, kind="context_mixing", final_step_only=True, reduce="sum")

__all__ = [
    "KINDS",
    "METHODS",
    "AttributedFn",
    "MethodResult",
    "MethodSpec",
    "list_methods",
    "method_info",
    "register_method",
]
