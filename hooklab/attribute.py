"""``hooklab.attribute``: generate or force targets, run a method, collect step scores."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from hooklab.generation import generate
from hooklab.inputs import (
    Batch,
    as_prompt_ids,
    check_length,
    encode_target,
    make_batch,
    pad_token_id,
    str_tokens,
)
from hooklab.methods import METHODS, MethodResult, Target
from hooklab.output.sequence import AttributionOutput, SequenceAttribution
from hooklab.scoring import (
    check_step_functions,
    compute_step_scores,
    contrast_step_logits,
    make_contrast,
)

TargetsArg = str | Sequence[str] | Sequence[Sequence[int]] | None


def _as_list(value, n: int, what: str) -> list | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    value = list(value)
    if len(value) != n:
        raise ValueError(f"Got {len(value)} {what} for {n} inputs; pass one per input.")
    return value


def _encode_targets(model, prompts: list, targets: list, prompt_ids) -> list[list[int]]:
    """Encode forced targets: text (a continuation, or the prompt + continuation) or ids."""
    out = []
    for prompt, target in zip(prompts, targets, strict=True):
        if isinstance(target, str):
            # Accept Inseq-style targets that repeat the prompt before the continuation.
            repeats = isinstance(prompt, str) and target.startswith(prompt)
            text = target[len(prompt) :] if repeats else target
            out.append(encode_target(model, text))
        else:
            ids = [int(i) for i in target]
            if not ids:
                raise ValueError("A target id list is empty; pass at least one token id.")
            out.append(ids)
    for p, t in zip(prompt_ids, out, strict=True):
        check_length(model, len(p) + len(t), "prompt + target")
    return out


def _span(n: int, start: int, end: int | None) -> tuple[int, int]:
    end = n if end is None else end
    start = start + n if start < 0 else start
    end = end + n if end < 0 else end
    if not 0 <= start < end <= n:
        raise ValueError(
            f"attr_pos_start={start}, attr_pos_end={end} select no steps of a {n}-token "
            f"target; use 0 <= start < end <= {n}."
        )
    return start, end


def _nan_invisible(scores: torch.Tensor, target_start: int) -> torch.Tensor:
    """Set the positions step t cannot see (>= target_start + t) to NaN."""
    steps = torch.arange(scores.shape[0], device=scores.device)[:, None]
    cols = torch.arange(scores.shape[1], device=scores.device)[None, :]
    hidden = cols >= target_start + steps
    hidden = hidden.reshape(*hidden.shape, *([1] * (scores.ndim - 2)))
    return scores.masked_fill(hidden, torch.nan)


def _split(
    model,
    batch: Batch,
    result: MethodResult,
    step_scores: Mapping[str, torch.Tensor],
    method: str,
    parameters: dict[str, Any],
) -> list[SequenceAttribution]:
    seqs = []
    for i in range(batch.size):
        pad, n_steps = batch.pad_lengths[i], batch.target_lengths[i]
        ids = batch.sequence(i).detach().cpu()
        start = batch.prompt_lengths[i]
        attr = None
        if result.attributions is not None:
            attr = result.attributions[i, :n_steps, pad:].detach().float().cpu()
            attr = _nan_invisible(attr, start)
        seqs.append(
            SequenceAttribution(
                tokens=tuple(str_tokens(model, ids)),
                token_ids=ids,
                target_start=start,
                attributions=attr,
                step_scores={k: v[i, :n_steps].float().cpu() for k, v in step_scores.items()},
                method=method,
                parameters=parameters,
                extras={k: v[i, :n_steps].float().cpu() for k, v in result.extras.items()},
            )
        )
    return seqs


def attribute(
    model,
    inputs: str | Sequence[str] | Sequence[Sequence[int]],
    targets: TargetsArg = None,
    *,
    method: str = "dummy",
    attributed_fn: str = "probability",
    step_scores: Sequence[str] = (),
    contrast_prompts: str | Sequence[str] | Sequence[Sequence[int]] | None = None,
    contrast_targets: TargetsArg = None,
    attr_pos_start: int = 0,
    attr_pos_end: int | None = None,
    attributed_fn_kwargs: Mapping[str, Any] | None = None,
    step_scores_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    generation_kwargs: Mapping[str, Any] | None = None,
    batch_size: int = 8,
    show_progress: bool = False,
    **method_kwargs: Any,
) -> AttributionOutput:
    """Attribute each target token of each input to the tokens before it.

    Args:
        model: a ``TransformerBridge`` from :func:`hooklab.load`.
        inputs: one prompt or a list of prompts (text, or token id lists used as given).
        targets: forced continuations (text, or token id lists), one per input; when None,
            they are generated greedily (``generation_kwargs`` go to :func:`hooklab.generate`).
            A text target that starts with its prompt has the prompt stripped (as in Inseq).
        method: a registered method name (:func:`hooklab.list_methods`); ``"dummy"`` computes
            only step scores.
        attributed_fn: the step function the method explains (default ``"probability"``).
        step_scores: step functions to compute alongside (:func:`hooklab.list_step_functions`).
        contrast_prompts: per input, a contrast prompt followed by the same targets (e.g. the
            prompt without its context), for contrastive step functions.
        contrast_targets: per input, an alternative token per target token (text or ids),
            scored after the same forced prefix.
        attr_pos_start: first target token to attribute (0 = the first target token; negative
            counts from the end). Earlier targets become part of the forced prefix.
        attr_pos_end: one past the last target token to attribute (None = all).
        attributed_fn_kwargs: extra keyword arguments of ``attributed_fn``.
        step_scores_kwargs: per step score name, extra keyword arguments.
        batch_size: inputs per forward pass.
        show_progress: show a progress bar over batches.
        **method_kwargs: options of the method.

    Returns:
        An :class:`~hooklab.output.sequence.AttributionOutput` with one sequence per input.

    Example:
        >>> import hooklab
        >>> model = hooklab.load("toy")
        >>> out = hooklab.attribute(model, "George was sick yesterday. His colleagues asked "
        ...     "him to come", step_scores=["probability"])
        >>> out[0].target_tokens[:3]
        (' to', ' the', ' hospital')
    """
    fn = METHODS.get(method)
    if not isinstance(inputs, (str, Sequence)):
        raise TypeError(
            f"inputs must be a string or a list of strings, got {type(inputs).__name__}."
        )
    prompts = [inputs] if isinstance(inputs, str) else list(inputs)
    if not prompts:
        raise ValueError("No inputs given: pass a prompt or a list of prompts.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    step_scores = [step_scores] if isinstance(step_scores, str) else list(step_scores)
    has_contrast = contrast_prompts is not None or contrast_targets is not None
    # Validate names before any model work.
    check_step_functions([*step_scores, attributed_fn], has_contrast)
    prompt_ids = [as_prompt_ids(model, p) for p in prompts]
    for ids in prompt_ids:
        check_length(model, len(ids), "prompt")
    target_list = _as_list(targets, len(prompts), "targets")
    if target_list is None:
        gen = generate(model, prompt_ids, **dict(generation_kwargs or {}))
        target_ids = gen.output_ids
        if any(not t for t in target_ids):
            empty = [p for p, t in zip(prompts, target_ids, strict=True) if not t]
            raise ValueError(f"The model generated nothing (EOS at once) for {empty!r}.")
    else:
        target_ids = _encode_targets(model, prompts, target_list, prompt_ids)
    c_prompt_ids = _as_list(contrast_prompts, len(prompts), "contrast prompts")
    if c_prompt_ids is not None:
        c_prompt_ids = [as_prompt_ids(model, p) for p in c_prompt_ids]
    c_target_ids = _as_list(contrast_targets, len(prompts), "contrast targets")
    if c_target_ids is not None:
        c_target_ids = _encode_targets(model, prompts, c_target_ids, prompt_ids)
        for i, (c, t) in enumerate(zip(c_target_ids, target_ids, strict=True)):
            if len(c) != len(t):
                raise ValueError(
                    f"Contrast target {i} has {len(c)} tokens but the target has {len(t)}; "
                    "contrast targets must give one alternative token per target token."
                )

    # Attribute only target tokens [start, end): earlier ones join the forced prefix.
    spans = [_span(len(t), attr_pos_start, attr_pos_end) for t in target_ids]
    prefixes = [p + t[:s] for p, t, (s, _) in zip(prompt_ids, target_ids, spans, strict=True)]
    steps = [t[s:e] for t, (s, e) in zip(target_ids, spans, strict=True)]
    if c_prompt_ids is not None:
        c_prompt_ids = [
            c + t[:s] for c, t, (s, _) in zip(c_prompt_ids, target_ids, spans, strict=True)
        ]
    if c_target_ids is not None:
        c_target_ids = [c[s:e] for c, (s, e) in zip(c_target_ids, spans, strict=True)]

    parameters = {
        "method": method,
        "attributed_fn": attributed_fn,
        "attributed_fn_kwargs": dict(attributed_fn_kwargs or {}),
        "attr_pos_start": attr_pos_start,
        "attr_pos_end": attr_pos_end,
        **method_kwargs,
    }
    sequences: list[SequenceAttribution] = []
    began = time.perf_counter()
    device = model.cfg.device
    for lo in tqdm(range(0, len(prompts), batch_size), desc=method, disable=not show_progress):
        hi = lo + batch_size
        batch = make_batch(prefixes[lo:hi], steps[lo:hi], pad_id=pad_token_id(model), device=device)
        contrast = make_contrast(
            model,
            batch,
            steps[lo:hi],
            contrast_prompts=None if c_prompt_ids is None else c_prompt_ids[lo:hi],
            contrast_targets=None if c_target_ids is None else c_target_ids[lo:hi],
        )
        target = Target(
            attributed_fn,
            dict(attributed_fn_kwargs or {}),
            contrast,
            contrast_step_logits(model, contrast),
        )
        result = fn(model, batch, target=target, **method_kwargs)
        scores = compute_step_scores(
            model,
            batch,
            step_scores,
            contrast=contrast,
            contrast_logits=target.contrast_logits,  # the contrast forward runs once
            step_scores_kwargs=step_scores_kwargs,
        )
        parameters["reduce"] = result.reduce
        parameters["final_step_only"] = result.final_step_only
        sequences.extend(_split(model, batch, result, scores, method, parameters))
    info = {
        "model": getattr(model.cfg, "model_name", type(model).__name__),
        "method": method,
        "parameters": parameters,
        "step_scores": step_scores,
        "elapsed_s": time.perf_counter() - began,
        "generated": targets is None,
    }
    return AttributionOutput(tuple(sequences), info)
