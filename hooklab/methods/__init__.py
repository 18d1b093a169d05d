"""The attribution-method registry.

A method is a function ``fn(model, batch, *, target, **options) -> MethodResult``: it gets a
left-padded :class:`~hooklab.inputs.Batch` and a :class:`~hooklab.methods.base.Target` (the step
function to explain) and returns scores in the batch's padded coordinates. Register new ones
with :func:`register_method`; each lives in its own module under ``hooklab/methods/``.
"""

from __future__ import annotations

from hooklab.methods.base import METHODS, MethodResult, Target, list_methods, register_method
from hooklab.methods.dummy import dummy

register_method("dummy", dummy)

__all__ = ["METHODS", "MethodResult", "Target", "list_methods", "register_method"]
