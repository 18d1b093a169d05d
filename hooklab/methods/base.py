"""What every attribution method receives and returns."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from jaxtyping import Float
from torch import Tensor

from hooklab.inputs import Batch
from hooklab.registry import Registry
from hooklab.scoring import Contrast, make_step_args, run_step_function


@dataclass(frozen=True)
class Target:
    """The scalar per step that a method explains: a step function of the step logits.

    Attributes:
        name: the step function's name (``attributed_fn``).
        kwargs: extra keyword arguments for it.
        contrast: the contrast it compares against, if any.
        contrast_logits: the contrast input's step logits (computed once, without gradient).
    """

    name: str = "probability"
    kwargs: Mapping[str, object] = field(default_factory=dict)
    contrast: Contrast | None = None
    contrast_logits: Float[Tensor, "batch step d_vocab"] | None = None

    def take(self, index: Tensor) -> Target:
        """Return the target for the examples at ``index`` of the batch (repeats allowed)."""
        contrast = self.contrast
        if contrast is not None:
            contrast = Contrast(
                None if contrast.batch is None else contrast.batch.take(index),
                None if contrast.target_ids is None else contrast.target_ids[index],
            )
        logits = None if self.contrast_logits is None else self.contrast_logits[index]
        return Target(self.name, self.kwargs, contrast, logits)

    def __call__(
        self, model, batch: Batch, logits: Float[Tensor, "batch step d_vocab"]
    ) -> Float[Tensor, "batch step"]:
        """Score each step from its logits (differentiable); padded steps are NaN."""
        steps = logits.shape[1]  # a sub-batch may have fewer steps than the full batch
        contrast, c_logits = self.contrast, self.contrast_logits
        if contrast is not None and contrast.target_ids is not None:
            contrast = Contrast(contrast.batch, contrast.target_ids[:, :steps])
        if c_logits is not None:
            c_logits = c_logits[:, :steps]
        args = make_step_args(model, batch, logits, contrast, c_logits)
        return run_step_function(self.name, args, self.kwargs)


@dataclass(frozen=True)
class MethodResult:
    """A method's output in the batch's padded coordinates.

    Attributes:
        attributions: score of each position for each step, or None (step scores only).
        extras: other per-step outputs (e.g. a completeness delta).
        final_step_only: the method computed once on the full sequence, not per step.
        reduce: how to reduce trailing dimensions (hidden size, layer/head) when shown.
    """

    attributions: Float[Tensor, "batch step pos *d_model"] | None = None
    extras: dict[str, Float[Tensor, "batch step"]] = field(default_factory=dict)
    final_step_only: bool = False
    reduce: str = "l2"


Method = Callable[..., MethodResult]
METHODS: Registry[Method] = Registry(
    "attribution method", hint="Add your own with hooklab.register_method(name, fn)."
)


def register_method(name: str, fn: Method, *, overwrite: bool = False) -> Method:
    """Register ``fn(model, batch, *, target, **options) -> MethodResult`` as ``name``."""
    return METHODS.register(name, fn, overwrite=overwrite)


def list_methods() -> list[str]:
    """Return the names of all registered attribution methods."""
    return METHODS.names()
