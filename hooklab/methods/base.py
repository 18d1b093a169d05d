"""What every attribution method receives and returns, and the method registry.

A method is a function ``fn(model, batch, *, attributed_fn, **options) -> MethodResult``. It is
registered once with a :class:`MethodSpec` that says what kind of method it is and what it
supports; :func:`hooklab.attribute` reads the spec instead of flags the method returns.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from jaxtyping import Float
from torch import Tensor

from hooklab.attribution.aggregate import HIDDEN_REDUCTIONS
from hooklab.options import OptionSpec, check_options, declared_options
from hooklab.registry import Registry, unknown_name_error
from hooklab.scoring import Contrast, check_step_kwargs, make_step_args, run_step_function

if TYPE_CHECKING:
    from hooklab.inputs import Batch

#: What a method computes from (its ``kind``).
KINDS = ("gradient", "perturbation", "attention", "context_mixing", "step_scores", "other")


@dataclass(frozen=True)
class AttributedFn:
    """The scalar per step that a method explains: a step function of the step logits.

    Attributes:
        name: the step function's name (``attributed_fn`` of :func:`hooklab.attribute`).
        kwargs: extra keyword arguments for it.
        contrast: the contrast it compares against, if any.
        contrast_logits: the contrast input's step logits (computed once, without gradient).
    """

    name: str = "probability"
    kwargs: Mapping[str, object] = field(default_factory=dict)
    contrast: Contrast | None = None
    contrast_logits: Float[Tensor, "batch step d_vocab"] | None = None

    def __post_init__(self) -> None:
        # an unknown name -> KeyError listing the valid ones; a bad argument -> TypeError
        check_step_kwargs(self.name, self.kwargs, "attributed_fn_kwargs")

    def take(self, index: Tensor) -> AttributedFn:
        """Return the function for the examples at ``index`` of the batch (repeats allowed)."""
        contrast = self.contrast
        if contrast is not None:
            contrast = Contrast(
                None if contrast.batch is None else contrast.batch.take(index),
                None if contrast.target_ids is None else contrast.target_ids[index],
            )
        logits = None if self.contrast_logits is None else self.contrast_logits[index]
        return AttributedFn(self.name, self.kwargs, contrast, logits)

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
        attributions: score of each position for each step, or None (step scores only);
            trailing dimensions (hidden size, layer, head) are reduced when shown.
        extras: other per-step outputs (e.g. a completeness delta).
    """

    attributions: Float[Tensor, "batch step pos *d_model"] | None = None
    extras: dict[str, Float[Tensor, "batch step"]] = field(default_factory=dict)


Method = Callable[..., MethodResult]


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its function and what it is.

    Attributes:
        name: the registered name (``method=`` of :func:`hooklab.attribute`).
        fn: ``fn(model, batch, *, attributed_fn, **options) -> MethodResult``.
        kind: one of :data:`KINDS`.
        final_step_only: computed once on the full sequence (e.g. attention weights), not by
            explaining each step's function; ``attributed_fn`` is then ignored.
        needs_gradients: takes gradients; other methods run under ``torch.no_grad()``.
        encoder_decoder: supports encoder–decoder models.
        reduce: how trailing dimensions are reduced when shown (a name in
            :data:`~hooklab.attribution.aggregate.HIDDEN_REDUCTIONS`).
    """

    name: str
    fn: Method
    kind: str = "other"
    final_step_only: bool = False
    needs_gradients: bool = False
    encoder_decoder: bool = False
    reduce: str = "l2"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(unknown_name_error("method kind", self.kind, list(KINDS)).args[0])
        if self.reduce not in HIDDEN_REDUCTIONS:
            valid = list(HIDDEN_REDUCTIONS)
            raise ValueError(unknown_name_error("reduction", self.reduce, valid).args[0])
        if not callable(self.fn):
            raise TypeError(f"A method must be callable, got {type(self.fn).__name__}.")

    def __call__(self, model, batch: Batch, **kwargs: Any) -> MethodResult:
        return self.fn(model, batch, **kwargs)

    @property
    def options(self) -> Mapping[str, OptionSpec]:
        """The method's declared options (:func:`hooklab.options.declared_options`): name,
        annotation with its range or choices, default and description (read-only)."""
        return MappingProxyType(declared_options(self.fn))

    @property
    def defaults(self) -> Mapping[str, Any]:
        """The method's options and their defaults, from its signature (read-only)."""
        return MappingProxyType({name: o.default for name, o in self.options.items()})

    def resolve(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Return every option the method will run with: its defaults updated by ``options``.

        Raises TypeError for an option the method does not take (unless it takes ``**kwargs``),
        and TypeError / ValueError for a value its declaration does not accept
        (:func:`hooklab.options.check_options`): all before any model work.
        """
        params = inspect.signature(self.fn).parameters.values()
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params)
        valid = self.defaults
        for name in options:
            if name not in valid and not takes_any:
                choices = ", ".join(valid) or "none"
                raise TypeError(
                    f"Method {self.name!r} has no option {name!r}; its options: {choices}."
                )
        check_options(self.fn, options)
        return {**valid, **options}

    def describe(self) -> dict[str, Any]:
        """A plain dict of what the method is (its kind, support flags, reduction)."""
        return {
            "kind": self.kind,
            "final_step_only": self.final_step_only,
            "needs_gradients": self.needs_gradients,
            "encoder_decoder": self.encoder_decoder,
            "reduce": self.reduce,
        }


METHODS: Registry[MethodSpec] = Registry(
    "attribution method", hint="Add your own with hooklab.register_method(name, fn, kind=...)."
)


def register_method(
    name: str,
    fn: Method | None = None,
    *,
    kind: str = "other",
    final_step_only: bool = False,
    needs_gradients: bool = False,
    encoder_decoder: bool = False,
    reduce: str = "l2",
    overwrite: bool = False,
) -> Any:
    """Register ``fn(model, batch, *, attributed_fn, **options) -> MethodResult`` as ``name``.

    Beside the function, as a decorator (it returns the function unchanged)::

        @register_method("my_method", kind="perturbation", encoder_decoder=True)
        def my_method(model, batch, *, attributed_fn, n_samples: PositiveInt = 8): ...

    or as a call, ``register_method("my_method", my_method, kind="other")``, which returns the
    :class:`MethodSpec`.

    The method gets a left-padded :class:`~hooklab.inputs.Batch` and an :class:`AttributedFn`
    (the step function to explain) and returns scores in the batch's padded coordinates:
    ``[batch, step, pos, ...]``. Its keyword-only options with defaults are its declared options
    (:mod:`hooklab.options`: type, range or choices in the annotation, description in the
    docstring's ``Args:``); they are checked before it runs and recorded in each output's
    parameters. Pass ``needs_gradients=True`` if it takes gradients: other methods run under
    ``torch.no_grad()``. See :class:`MethodSpec` for the flags; check a new method with
    :func:`hooklab.testing.check_method`. Registering a taken name raises ValueError unless
    ``overwrite``.
    """
    flags = (kind, final_step_only, needs_gradients, encoder_decoder, reduce)
    if fn is None:

        def decorate(method: Method) -> Method:
            METHODS.register(name, MethodSpec(name, method, *flags), overwrite=overwrite)
            return method

        return decorate
    return METHODS.register(name, MethodSpec(name, fn, *flags), overwrite=overwrite)


def list_methods() -> list[str]:
    """Return the names of all registered attribution methods."""
    return METHODS.names()


def method_info(name: str) -> MethodSpec:
    """Return the :class:`MethodSpec` registered as ``name`` (KeyError listing valid names)."""
    return METHODS.get(name)
