"""The attribution-method registry.

A method is a function ``fn(model, batch, *, attributed_fn, **options) -> MethodResult``: it gets
a :class:`~hooklab.inputs.Batch` (left-padded; on encoder–decoder models with a
right-padded source) and an :class:`~hooklab.methods.base.AttributedFn`
(the step function to explain) and returns scores in the batch's padded coordinates. Each lives
in its own module under ``hooklab/methods/`` and is registered beside its function with
``@register_method(name, kind=...)`` (a :class:`~hooklab.methods.base.MethodSpec`: its kind
and what it supports; its options are its keyword-only signature, :mod:`hooklab.options`);
add your own with :func:`register_method` and check it with
:func:`hooklab.testing.check_method`.
"""

from __future__ import annotations

# each module registers its methods beside their functions (``@register_method``), in this
# order (the order of ``hooklab.list_methods()``)
# isort: off
from hooklab.methods import dummy, saliency, integrated_gradients, gradient_shap  # noqa: F401
from hooklab.methods import occlusion, reagent, attention, value_zeroing  # noqa: F401
from hooklab.methods import alti_logit  # noqa: F401

# isort: on
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
