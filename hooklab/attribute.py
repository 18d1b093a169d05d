"""``hooklab.attribute``: generate or force targets, run a registered method, collect scores.

The call runs in named steps: validate (names and options, before any model work) → encode
(prompts, targets, contrasts) → generate (when no targets are given) → batch → run the method →
step scores → split into one :class:`~hooklab.output.sequence.SequenceAttribution` per prompt.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from hooklab.generation import generate
from hooklab.inputs import (
    as_prompt_ids,
    check_length,
    encode_target,
    make_batch,
    pad_token_id,
    str_tokens,
)
from hooklab.methods import METHODS, AttributedFn, MethodResult
from hooklab.output.provenance import describe_model
from hooklab.output.sequence import AttributionOutput, SequenceAttribution
from hooklab.scoring import (
    check_step_functions,
    compute_step_scores,
    contrast_step_logits,
    make_contrast,
)

if TYPE_CHECKING:
    from hooklab.inputs import Batch
    from hooklab.methods import MethodSpec

PromptsArg = str | Sequence[str] | Sequence[Sequence[int]]
TargetsArg = str | Sequence[str] | Sequence[Sequence[int]] | None


@dataclass(frozen=True)
class Request:
    """A validated call: the method's spec, the prompts, every option resolved."""

    spec: MethodSpec
    prompts: list[str | Sequence[int]]
    step_scores: list[str]
    options: dict[str, Any]


@dataclass(frozen=True)
class Encoded:
    """Token ids per prompt, split at ``attr_pos_start`` / ``attr_pos_end``.

    Attributes:
        prefixes: the prompt plus the targets before the attributed span (forced).
        steps: the attributed target tokens.
        contrast_prefixes: contrast prompts plus the same forced targets, or None.
        contrast_steps: an alternative token per attributed step, or None.
    """

    prefixes: list[list[int]]
    steps: list[list[int]]
    contrast_prefixes: list[list[int]] | None = None
    contrast_steps: list[list[int]] | None = None


# ---- validate ---------------------------------------------------------------------------------
def validate(
    model,
    prompts: PromptsArg,
    *,
    method: str,
    attributed_fn: str,
    step_scores: str | Sequence[str],
    has_contrast: bool,
    batch_size: int,
    method_options: Mapping[str, Any],
) -> Request:
    """Check names, prompts and options before any model work; resolve the method's options."""
    spec = METHODS.get(method)
    if not isinstance(prompts, (str, Sequence)):
        raise TypeError(
            f"prompts must be a string or a list of strings, got {type(prompts).__name__}."
        )
    prompt_list = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompt_list:
        raise ValueError("No prompts given: pass a prompt or a list of prompts.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    if hasattr(model, "encoder_blocks") and not spec.encoder_decoder:
        raise TypeError(
            f"Method {method!r} does not support encoder-decoder models yet; for one, use "
            "hooklab.mixing (encoder_decoder_value_zeroing, encoder_decoder_attention_knockout)."
        )
    names = [step_scores] if isinstance(step_scores, str) else list(step_scores)
    check_step_functions([*names, attributed_fn], has_contrast)
    return Request(spec, prompt_list, names, spec.resolve(method_options))


# ---- encode, generate ---------------------------------------------------------------------------
def _per_prompt(value, n: int, what: str) -> list | None:
    if value is None:
        return None
    value = [value] if isinstance(value, str) else list(value)
    if len(value) != n:
        raise ValueError(f"Got {len(value)} {what} for {n} prompts; pass one per prompt.")
    return value


def encode_targets(model, prompts: list, targets: list, prompt_ids) -> list[list[int]]:
    """Encode forced targets: text (a continuation, or the prompt + continuation) or ids."""
    out = []
    for prompt, target in zip(prompts, targets, strict=True):
        if isinstance(target, str):
            # Accept Inseq-style targets that repeat the prompt before the continuation.
            repeats = isinstance(prompt, str) and target.startswith(prompt)
            out.append(encode_target(model, target[len(prompt) :] if repeats else target))
        else:
            ids = [int(i) for i in target]
            if not ids:
                raise ValueError("A target id list is empty; pass at least one token id.")
            out.append(ids)
    for p, t in zip(prompt_ids, out, strict=True):
        check_length(model, len(p) + len(t), "prompt + target")
    return out


def generate_targets(model, prompts: list, prompt_ids, generation_kwargs) -> list[list[int]]:
    """Greedy (or configured) continuations; ValueError when one is empty."""
    target_ids = generate(model, prompt_ids, **dict(generation_kwargs or {})).output_ids
    empty = [p for p, t in zip(prompts, target_ids, strict=True) if not t]
    if empty:
        raise ValueError(f"The model generated nothing (EOS at once) for {empty!r}.")
    return target_ids


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


def encode(
    model,
    prompts: list,
    prompt_ids: list[list[int]],
    target_ids: list[list[int]],
    *,
    contrast_prompts=None,
    contrast_targets=None,
    attr_pos_start: int = 0,
    attr_pos_end: int | None = None,
) -> Encoded:
    """Encode contrasts and split every sequence at the attributed span."""
    n = len(prompts)
    c_prompts = _per_prompt(contrast_prompts, n, "contrast prompts")
    c_prompt_ids = None if c_prompts is None else [as_prompt_ids(model, p) for p in c_prompts]
    c_targets = _per_prompt(contrast_targets, n, "contrast targets")
    c_target_ids = None
    if c_targets is not None:
        c_target_ids = encode_targets(model, prompts, c_targets, prompt_ids)
        for i, (c, t) in enumerate(zip(c_target_ids, target_ids, strict=True)):
            if len(c) != len(t):
                raise ValueError(
                    f"Contrast target {i} has {len(c)} tokens but the target has {len(t)}; "
                    "contrast targets must give one alternative token per target token."
                )
    # Attribute only target tokens [start, end): earlier ones join the forced prefix.
    spans = [_span(len(t), attr_pos_start, attr_pos_end) for t in target_ids]
    return Encoded(
        prefixes=[p + t[:s] for p, t, (s, _) in zip(prompt_ids, target_ids, spans, strict=True)],
        steps=[t[s:e] for t, (s, e) in zip(target_ids, spans, strict=True)],
        contrast_prefixes=None
        if c_prompt_ids is None
        else [c + t[:s] for c, t, (s, _) in zip(c_prompt_ids, target_ids, spans, strict=True)],
        contrast_steps=None
        if c_target_ids is None
        else [c[s:e] for c, (s, e) in zip(c_target_ids, spans, strict=True)],
    )


# ---- batch, run, split ------------------------------------------------------------------------
def batches(
    model, encoded: Encoded, batch_size: int, attributed_fn: str, kwargs: Mapping[str, Any]
) -> Iterator[tuple[Batch, AttributedFn]]:
    """Left-padded batches and the attributed function (with its contrast) of each."""
    n = len(encoded.prefixes)
    for lo in range(0, n, batch_size):
        part = slice(lo, lo + batch_size)
        steps = encoded.steps[part]
        batch = make_batch(
            encoded.prefixes[part], steps, pad_id=pad_token_id(model), device=model.cfg.device
        )
        c_prefixes, c_steps = encoded.contrast_prefixes, encoded.contrast_steps
        contrast = make_contrast(
            model,
            batch,
            steps,
            contrast_prompts=None if c_prefixes is None else c_prefixes[part],
            contrast_targets=None if c_steps is None else c_steps[part],
        )
        logits = contrast_step_logits(model, contrast)  # the contrast forward runs once
        yield batch, AttributedFn(attributed_fn, dict(kwargs), contrast, logits)


def run_method(
    model, spec: MethodSpec, batch: Batch, attributed_fn: AttributedFn, options: Mapping
) -> MethodResult:
    """Run the method (without gradients unless it needs them); check its output's shape."""
    with torch.set_grad_enabled(spec.needs_gradients):
        result = spec(model, batch, attributed_fn=attributed_fn, **options)
    if not isinstance(result, MethodResult):
        raise TypeError(
            f"Method {spec.name!r} returned {type(result).__name__}; it must return a "
            "hooklab.MethodResult."
        )
    attr = result.attributions
    expected = (batch.size, batch.n_steps, batch.tokens.shape[1])
    if attr is not None and (attr.ndim < 3 or tuple(attr.shape[:3]) != expected):
        raise ValueError(
            f"Method {spec.name!r} returned attributions of shape {tuple(attr.shape)}; expected "
            f"{expected} + trailing dims ([batch, step, pos, ...])."
        )
    return result


def _nan_invisible(
    scores: Float[Tensor, "step key_pos *d_model"], target_start: int
) -> Float[Tensor, "step key_pos *d_model"]:
    """Set the positions step t cannot see (>= target_start + t) to NaN."""
    steps = torch.arange(scores.shape[0], device=scores.device)[:, None]
    cols = torch.arange(scores.shape[1], device=scores.device)[None, :]
    hidden = cols >= target_start + steps
    hidden = hidden.reshape(*hidden.shape, *([1] * (scores.ndim - 2)))
    return scores.masked_fill(hidden, torch.nan)


def split(
    model,
    batch: Batch,
    result: MethodResult,
    step_scores: Mapping[str, Float[Tensor, "batch step"]],
    method: str,
    parameters: Mapping[str, Any],
) -> list[SequenceAttribution]:
    """One :class:`SequenceAttribution` per example, on its real (unpadded) tokens."""
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
                parameters=parameters,  # frozen (copied) by SequenceAttribution
                extras={k: v[i, :n_steps].float().cpu() for k, v in result.extras.items()},
            )
        )
    return seqs


# ---- the entry point ----------------------------------------------------------------------------
def attribute(
    model,
    prompts: PromptsArg,
    targets: TargetsArg = None,
    *,
    method: str = "dummy",
    attributed_fn: str = "probability",
    step_scores: Sequence[str] = (),
    contrast_prompts: PromptsArg | None = None,
    contrast_targets: TargetsArg = None,
    attr_pos_start: int = 0,
    attr_pos_end: int | None = None,
    attributed_fn_kwargs: Mapping[str, Any] | None = None,
    step_scores_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    generation_kwargs: Mapping[str, Any] | None = None,
    batch_size: int = 8,
    show_progress: bool = False,
    **method_options: Any,
) -> AttributionOutput:
    """Attribute each target token of each prompt to the tokens before it.

    Args:
        model: a ``TransformerBridge`` from :func:`hooklab.load`.
        prompts: one prompt or a list of prompts (text, or token id lists used as given).
        targets: forced continuations (text, or token id lists), one per prompt; when None,
            they are generated greedily (``generation_kwargs`` go to :func:`hooklab.generate`).
            A text target that starts with its prompt has the prompt stripped (as in Inseq).
        method: a registered method name (:func:`hooklab.list_methods`,
            :func:`hooklab.method_info`); ``"dummy"`` computes only step scores.
        attributed_fn: the step function the method explains (default ``"probability"``).
        step_scores: step functions to compute alongside (:func:`hooklab.list_step_functions`).
        contrast_prompts: per prompt, a contrast prompt followed by the same targets (e.g. the
            prompt without its context), for contrastive step functions.
        contrast_targets: per prompt, an alternative token per target token (text or ids),
            scored after the same forced prefix.
        attr_pos_start: first target token to attribute (0 = the first target token; negative
            counts from the end). Earlier targets become part of the forced prefix.
        attr_pos_end: one past the last target token to attribute (None = all).
        attributed_fn_kwargs: extra keyword arguments of ``attributed_fn``.
        step_scores_kwargs: per step score name, extra keyword arguments.
        batch_size: prompts per forward pass.
        show_progress: show a progress bar over batches.
        **method_options: options of the method (its defaults fill the rest).

    Returns:
        An :class:`~hooklab.output.sequence.AttributionOutput` with one sequence per prompt;
        each sequence's ``parameters`` hold every option used, defaults included.

    Example:
        >>> import hooklab
        >>> model = hooklab.load("toy")
        >>> out = hooklab.attribute(model, "George was sick yesterday. His colleagues asked "
        ...     "him to come", step_scores=["probability"])
        >>> out[0].target_tokens[:3]
        (' to', ' the', ' hospital')
    """
    request = validate(
        model, prompts, method=method, attributed_fn=attributed_fn, step_scores=step_scores,
        has_contrast=contrast_prompts is not None or contrast_targets is not None,
        batch_size=batch_size, method_options=method_options,
    )  # fmt: skip
    prompt_ids = [as_prompt_ids(model, p) for p in request.prompts]
    for ids in prompt_ids:
        check_length(model, len(ids), "prompt")
    target_list = _per_prompt(targets, len(request.prompts), "targets")
    if target_list is None:
        target_ids = generate_targets(model, request.prompts, prompt_ids, generation_kwargs)
    else:
        target_ids = encode_targets(model, request.prompts, target_list, prompt_ids)
    encoded = encode(
        model, request.prompts, prompt_ids, target_ids, contrast_prompts=contrast_prompts,
        contrast_targets=contrast_targets, attr_pos_start=attr_pos_start,
        attr_pos_end=attr_pos_end,
    )  # fmt: skip
    spec = request.spec
    parameters = {
        "method": method,
        "attributed_fn": attributed_fn,
        "attributed_fn_kwargs": dict(attributed_fn_kwargs or {}),
        "attr_pos_start": attr_pos_start,
        "attr_pos_end": attr_pos_end,
        **request.options,
        "reduce": spec.reduce,
        "final_step_only": spec.final_step_only,
    }
    began = time.perf_counter()
    sequences: list[SequenceAttribution] = []
    fn_kwargs = dict(attributed_fn_kwargs or {})
    parts = batches(model, encoded, batch_size, attributed_fn, fn_kwargs)
    n_batches = -(-len(request.prompts) // batch_size)
    for batch, fn in tqdm(parts, total=n_batches, desc=method, disable=not show_progress):
        result = run_method(model, spec, batch, fn, request.options)
        scores = compute_step_scores(
            model, batch, request.step_scores, contrast=fn.contrast,
            contrast_logits=fn.contrast_logits, step_scores_kwargs=step_scores_kwargs,
        )  # fmt: skip
        sequences.extend(split(model, batch, result, scores, method, parameters))
    info = {
        "method": method,
        "method_spec": spec.describe(),
        "parameters": parameters,
        "step_scores": request.step_scores,
        "batch_size": batch_size,
        "elapsed_s": time.perf_counter() - began,
        "generated": targets is None,
        "generation_kwargs": dict(generation_kwargs or {}) if targets is None else None,
    }
    return AttributionOutput(tuple(sequences), info, model=describe_model(model))
