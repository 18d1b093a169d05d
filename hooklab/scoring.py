"""Contrast inputs and step scores computed from one forward pass."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from hooklab.forward import step_logits
from hooklab.inputs import Batch, make_batch, pad_token_id
from hooklab.precision import upcast
from hooklab.steps import CONTRASTIVE, STEP_FUNCTIONS, StepArgs


@dataclass(frozen=True)
class Contrast:
    """What a contrastive step function compares against.

    Attributes:
        batch: contrast prompts followed by the regular targets (aligned on the steps), or None
            to reuse the regular forward pass.
        target_ids: a contrast token per step, scored after the regular forced prefix, or None.
    """

    batch: Batch | None = None
    target_ids: Int[Tensor, "batch step"] | None = None


def make_contrast(
    model,
    batch: Batch,
    targets: Sequence[Sequence[int]],
    *,
    contrast_prompts: Sequence[Sequence[int]] | None = None,
    contrast_targets: Sequence[Sequence[int]] | None = None,
    contrast_sources: Sequence[Sequence[int]] | None = None,
) -> Contrast | None:
    """Build a :class:`Contrast` from encoded contrast prompts and/or contrast target ids.

    On encoder–decoder models ``contrast_sources`` are the contrast's sources and
    ``contrast_prompts`` its decoder prefixes (the regular ones).
    """
    if contrast_prompts is None and contrast_targets is None:
        return None
    c_batch = None
    if contrast_prompts is not None:
        if len(contrast_prompts) != batch.size:
            raise ValueError(
                f"Got {len(contrast_prompts)} contrast prompts for {batch.size} inputs; "
                "pass one per input."
            )
        c_batch = make_batch(
            contrast_prompts, targets, sources=contrast_sources, pad_id=pad_token_id(model),
            device=batch.tokens.device,
        )  # fmt: skip
    c_ids = None
    if contrast_targets is not None:
        if len(contrast_targets) != batch.size:
            raise ValueError(
                f"Got {len(contrast_targets)} contrast targets for {batch.size} inputs; "
                "pass one per input."
            )
        c_ids = torch.zeros_like(batch.target_ids)
        for i, (ids, n) in enumerate(zip(contrast_targets, batch.target_lengths, strict=True)):
            if len(ids) != n:
                raise ValueError(
                    f"Contrast target {i} has {len(ids)} tokens but the target has {n}; "
                    "contrast targets must give one alternative token per target token."
                )
            c_ids[i, :n] = torch.tensor(list(ids), dtype=torch.long)
    return Contrast(c_batch, c_ids)


def contrast_step_logits(model, contrast: Contrast | None) -> Tensor | None:
    """Logits of the contrast input at the target steps (no gradient), or None."""
    if contrast is None or contrast.batch is None:
        return None
    with torch.no_grad():
        return step_logits(model, contrast.batch)


def check_step_functions(names: Sequence[str], has_contrast: bool) -> None:
    """Raise KeyError for unknown names and ValueError for a contrastive one without contrast."""
    for name in names:
        STEP_FUNCTIONS.get(name)
        if name in CONTRASTIVE and not has_contrast:
            raise ValueError(
                f"Step function {name!r} compares against a contrast: pass contrast_prompts= "
                "(e.g. the input without context) and/or contrast_targets= (alternative tokens)."
            )


def check_step_kwargs(name: str, kwargs: object, what: str) -> dict[str, object]:
    """Return ``kwargs`` for step function ``name`` as a dict; raise TypeError for a
    non-mapping or an argument the function does not take (listing the ones it takes)."""
    if kwargs is None:
        return {}
    if not isinstance(kwargs, Mapping):
        raise TypeError(
            f"{what} must be a dict of keyword arguments of step function {name!r}, got "
            f"{type(kwargs).__name__}: {kwargs!r}."
        )
    try:
        params = list(inspect.signature(STEP_FUNCTIONS.get(name)).parameters.values())
    except (TypeError, ValueError):  # a callable without a signature: let it decide
        return dict(kwargs)
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return dict(kwargs)
    valid = [p.name for p in params[1:] if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    unknown = [k for k in kwargs if k not in valid]
    if unknown:
        takes = ", ".join(valid) if valid else "no extra arguments"
        raise TypeError(
            f"{what} has {unknown[0]!r}, which step function {name!r} does not take; it takes: "
            f"{takes}."
        )
    return dict(kwargs)


def check_step_scores_kwargs(
    names: Sequence[str], step_scores_kwargs: object
) -> dict[str, dict[str, object]]:
    """Check ``step_scores_kwargs`` (``{step score name: kwargs}``) against the requested names.

    Raises KeyError for a name that is not among ``names`` (e.g. misspelt) and TypeError for
    an argument the step function does not take.
    """
    if step_scores_kwargs is None:
        return {}
    if not isinstance(step_scores_kwargs, Mapping):
        raise TypeError(
            "step_scores_kwargs must be a dict {step score name: {argument: value}}, got "
            f"{type(step_scores_kwargs).__name__}: {step_scores_kwargs!r}."
        )
    out = {}
    for name, kwargs in step_scores_kwargs.items():
        if name not in names:
            requested = ", ".join(repr(n) for n in names) or "none"
            raise KeyError(
                f"step_scores_kwargs has {name!r}, which is not among the requested step_scores "
                f"({requested}); use one of those names, or add {name!r} to step_scores."
            )
        out[name] = check_step_kwargs(name, kwargs, f"step_scores_kwargs[{name!r}]")
    return out


def check_finite(
    logits: Float[Tensor, "batch step d_vocab"] | None, step_mask: Tensor, what: str = "logits"
) -> None:
    """Raise ValueError if float16 ``logits`` of real steps hold inf or NaN.

    float16's largest value is 65504: a model trained in bfloat16 or float32 can overflow it
    in its activations, and then every score is inf or NaN. (bfloat16 has float32's range.)
    """
    if logits is None or logits.dtype != torch.float16:
        return
    real = logits[step_mask] if tuple(step_mask.shape) == tuple(logits.shape[:2]) else logits
    if not bool(real.isfinite().all()):
        raise ValueError(
            f"The model's {what} are inf or NaN in float16 at real steps: its activations "
            "overflow float16's range (largest value 65504). Load it with dtype='bf16' (the "
            "range of float32) or 'float32'."
        )


def make_step_args(
    model,
    batch: Batch,
    logits: Float[Tensor, "batch step d_vocab"],
    contrast: Contrast | None = None,
    contrast_logits: Float[Tensor, "batch step d_vocab"] | None = None,
) -> StepArgs:
    """Bundle step logits with targets and contrast for the step functions.

    Raises ValueError if float16 logits of real steps are infinite or NaN (an overflow).
    """
    for what, values in (("logits", logits), ("contrast logits", contrast_logits)):
        check_finite(values, batch.step_mask, what)
    return StepArgs(
        model=model,
        batch=batch,
        logits=logits,
        target_ids=batch.target_ids,
        step_mask=batch.step_mask,
        contrast_logits=contrast_logits,
        contrast_target_ids=None if contrast is None else contrast.target_ids,
    )


def run_step_function(
    name: str, args: StepArgs, kwargs: Mapping[str, object] | None = None
) -> Float[Tensor, "batch step"]:
    """Call step function ``name`` and set padded steps to NaN.

    Scores of a half-precision model come back in float32 (a custom function's too).
    """
    scores = STEP_FUNCTIONS.get(name)(args, **dict(kwargs or {}))
    expected = tuple(args.target_ids.shape)
    if not isinstance(scores, torch.Tensor):
        raise TypeError(
            f"Step function {name!r} returned {type(scores).__name__} ({scores!r:.60}); it must "
            f"return a torch.Tensor of shape {expected} ([batch, step]), one score per step."
        )
    if tuple(scores.shape) != expected:
        raise ValueError(
            f"Step function {name!r} returned shape {tuple(scores.shape)}; expected {expected} "
            "([batch, step])."
        )
    return torch.where(args.step_mask, upcast(scores), torch.nan)


def compute_step_scores(
    model,
    batch: Batch,
    names: Sequence[str],
    *,
    contrast: Contrast | None = None,
    contrast_logits: Float[Tensor, "batch step d_vocab"] | None = None,
    step_scores_kwargs: Mapping[str, Mapping[str, object]] | None = None,
) -> dict[str, Float[Tensor, "batch step"]]:
    """Compute the named step scores with one forward pass (plus one for the contrast).

    Args:
        contrast_logits: the contrast's step logits if the caller already has them (from
            :func:`contrast_step_logits`); computed here otherwise.
        step_scores_kwargs: per step function name, extra keyword arguments.
    """
    names = list(names)
    check_step_functions(names, contrast is not None)
    kwargs = check_step_scores_kwargs(names, step_scores_kwargs)
    if not names:
        return {}
    with torch.no_grad():
        logits = step_logits(model, batch)
        if contrast_logits is None:
            contrast_logits = contrast_step_logits(model, contrast)
        args = make_step_args(model, batch, logits, contrast, contrast_logits)
        return {name: run_step_function(name, args, kwargs.get(name)) for name in names}
