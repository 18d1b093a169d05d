"""Contrast inputs and step scores computed from one forward pass."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from hooklab.forward import step_logits
from hooklab.inputs import Batch, make_batch, pad_token_id
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


def make_step_args(
    model,
    batch: Batch,
    logits: Float[Tensor, "batch step d_vocab"],
    contrast: Contrast | None = None,
    contrast_logits: Float[Tensor, "batch step d_vocab"] | None = None,
) -> StepArgs:
    """Bundle step logits with targets and contrast for the step functions."""
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
    """Call step function ``name`` and set padded steps to NaN."""
    scores = STEP_FUNCTIONS.get(name)(args, **dict(kwargs or {}))
    expected = tuple(args.target_ids.shape)
    if tuple(scores.shape) != expected:
        raise ValueError(
            f"Step function {name!r} returned shape {tuple(scores.shape)}; expected {expected} "
            "([batch, step])."
        )
    return torch.where(args.step_mask, scores, torch.nan)


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
    if not names:
        return {}
    kwargs = dict(step_scores_kwargs or {})
    with torch.no_grad():
        logits = step_logits(model, batch)
        if contrast_logits is None:
            contrast_logits = contrast_step_logits(model, contrast)
        args = make_step_args(model, batch, logits, contrast, contrast_logits)
        return {name: run_step_function(name, args, kwargs.get(name)) for name in names}
