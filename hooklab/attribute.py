"""``hooklab.attribute``: generate or force targets, run a registered method, collect scores.

The call runs in named steps: validate (names and options, before any model work) → encode
(prompts, targets, contrasts) → generate (when no targets are given) → batch → run the method →
step scores → split into one :class:`~hooklab.attribution.SequenceAttribution` per prompt.
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

from hooklab.architecture import refuse_encoder_decoder
from hooklab.attribution import AttributionOutput, SequenceAttribution
from hooklab.budget import check_positive
from hooklab.chat import Conversation, chat_prompt_ids
from hooklab.encoding import Encoded, PromptsArg, TargetsArg, encode
from hooklab.inputs import make_batch, pad_token_id, str_tokens
from hooklab.methods import METHODS, AttributedFn, MethodResult
from hooklab.output.provenance import describe_model
from hooklab.planner import planned_options
from hooklab.scoring import (
    check_step_functions,
    check_step_scores_kwargs,
    compute_step_scores,
    contrast_step_logits,
    make_contrast,
)

if TYPE_CHECKING:
    from hooklab.inputs import Batch
    from hooklab.methods import MethodSpec


@dataclass(frozen=True)
class Request:
    """A validated call: the method's spec, the prompts, every option resolved."""

    spec: MethodSpec
    prompts: list[str | Sequence[int]]
    step_scores: list[str]
    options: dict[str, Any]


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
    step_scores_kwargs: object = None,
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
    check_positive("batch_size", batch_size)
    if not spec.encoder_decoder:
        refuse_encoder_decoder(model, f"hooklab.attribute(method={method!r})")
    names = [step_scores] if isinstance(step_scores, str) else list(step_scores)
    check_step_functions([*names, attributed_fn], has_contrast)
    check_step_scores_kwargs(names, step_scores_kwargs)  # a misspelt key fails before any work
    return Request(spec, prompt_list, names, spec.resolve(method_options))


def prompts_or_messages(model, prompts, messages, prepend_bos: bool | None) -> PromptsArg:
    """The prompts, or the chat prompts (token ids) of ``messages``; exactly one is given."""
    if messages is None:
        if prompts is None:
            raise TypeError(
                "hooklab.attribute needs prompts (text or token ids) or messages (a chat "
                "conversation, [{'role': 'user', 'content': ...}])."
            )
        return prompts
    if prompts is not None:
        raise ValueError(
            "prompts and messages were both given; they are exclusive. Pass the text as "
            "prompts, or the conversation(s) as messages."
        )
    return chat_prompt_ids(model, messages, prepend_bos=prepend_bos)


# ---- batch, run, split ------------------------------------------------------------------------
def batches(
    model, encoded: Encoded, batch_size: int, attributed_fn: str, kwargs: Mapping[str, Any]
) -> Iterator[tuple[Batch, AttributedFn]]:
    """Padded batches and the attributed function (with its contrast) of each."""
    n = len(encoded.prefixes)

    def rows(values: list | None, part: slice) -> list | None:
        return None if values is None else values[part]

    for lo in range(0, n, batch_size):
        part = slice(lo, lo + batch_size)
        steps = encoded.steps[part]
        batch = make_batch(
            encoded.prefixes[part], steps, sources=rows(encoded.sources, part),
            pad_id=pad_token_id(model), device=model.cfg.device,
        )  # fmt: skip
        contrast = make_contrast(
            model,
            batch,
            steps,
            contrast_prompts=rows(encoded.contrast_prefixes, part),
            contrast_targets=rows(encoded.contrast_steps, part),
            contrast_sources=rows(encoded.contrast_sources, part),
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
    expected = (batch.size, batch.n_steps, batch.input_width)
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
    specials = special_tokens(model)
    for i in range(batch.size):
        n_steps = batch.target_lengths[i]
        ids = batch.sequence(i).detach().cpu()
        start = batch.prompt_lengths[i]
        source = batch.source(i)
        attr = source_attr = None
        if result.attributions is not None:
            # input positions: the source's (encoder-decoder), then the sequence's
            full = result.attributions[i, :n_steps].detach().float().cpu()
            first = batch.source_width + batch.pad_lengths[i]
            attr = _nan_invisible(full[:, first : first + len(ids)], start)
            if source is not None:
                source_attr = full[:, : len(source)]
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
                source_tokens=None if source is None else tuple(str_tokens(model, source)),
                source_token_ids=None if source is None else source.detach().cpu(),
                source_attributions=source_attr,
                special_tokens=specials if source is not None else (),
            )
        )
    return seqs


def special_tokens(model) -> tuple[str, ...]:
    """The tokenizer's special tokens as text (what views hide with ``hide_special``)."""
    return tuple(sorted(set(getattr(model.tokenizer, "all_special_tokens", ()))))


# ---- the entry point ----------------------------------------------------------------------------
def attribute(
    model,
    prompts: PromptsArg | None = None,
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
    contrast_forced: Sequence[Sequence[int]] | None = None,
    batch_size: int = 8,
    show_progress: bool = False,
    prepend_bos: bool | None = None,
    messages: Conversation | Sequence[Conversation] | None = None,
    max_bytes: int | None = None,
    **method_options: Any,
) -> AttributionOutput:
    """Attribute each target token of each prompt to the tokens before it.

    On encoder–decoder models (Marian, BART, T5) prompts are the sources: each step is
    attributed to the source tokens (``source_attributions``, ``[step, source_pos, ...]``) and
    to the decoder input before it (``attributions``, ``[step, target_pos, ...]``; ``tokens``
    are the decoder start token, then the targets), as Inseq's source / target attributions.

    Args:
        model: a ``TransformerBridge`` from :func:`hooklab.load`.
        prompts: one prompt or a list of prompts (text, or token id lists used as given).
            Special tokens written in the text (``<|im_start|>``) are single tokens.
        targets: forced continuations: one text for every prompt, or one text or token-id
            list per prompt; when None, they are generated greedily (``generation_kwargs`` go
            to :func:`hooklab.generate`). ``""`` means no target, which attribution refuses
            (ValueError). Decoder-only models: a text target that starts with its prompt and
            is longer has the prompt stripped (as in Inseq;
            :func:`hooklab.encoding.strip_repeated_prompt`).
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
        contrast_forced: per prompt, token ids forced after the contrast prompt in place of the
            targets before ``attr_pos_start`` (default: the same targets), e.g. a contextless
            contrast without the output context (encoder–decoder PECoRe).
        attributed_fn_kwargs: extra keyword arguments of ``attributed_fn``.
        step_scores_kwargs: per step score name, extra keyword arguments.
        batch_size: prompts per forward pass.
        max_bytes: memory budget of each batch's call above the weights (None: no check):
            the method's peak is estimated from the model's shape first
            (:func:`hooklab.planner.estimate`), ``max_batch_tokens`` lowered until it fits,
            and a :class:`hooklab.planner.MemoryBudgetError` raised when even 1 does not.
        show_progress: show a progress bar over batches.
        prepend_bos: prepend the BOS token to text prompts (decoder-only models); None
            (default): where the model's own tokenizer adds it (``tokenizer(text)`` starts with
            it: Llama, Mistral, Gemma; not GPT-2, Pythia or Qwen). Never doubled.
        messages: instead of ``prompts``, a chat conversation (``[{"role": "user",
            "content": ...}, ...]``) or a list of them, formatted with the tokenizer's chat
            template and its generation prompt (:mod:`hooklab.chat`).
        **method_options: options of the method (its defaults fill the rest).

    Returns:
        An :class:`~hooklab.attribution.AttributionOutput` with one sequence per prompt;
        each sequence's ``parameters`` hold every option used, defaults included.

    Example:
        >>> import hooklab
        >>> model = hooklab.load("toy")
        >>> out = hooklab.attribute(model, "George was sick yesterday. His colleagues asked "
        ...     "him to come", step_scores=["probability"])
        >>> out[0].target_tokens[:3]
        (' to', ' the', ' hospital')
    """
    check_positive("max_bytes", max_bytes, optional=True)
    prompts = prompts_or_messages(model, prompts, messages, prepend_bos)
    request = validate(
        model, prompts, method=method, attributed_fn=attributed_fn, step_scores=step_scores,
        has_contrast=contrast_prompts is not None or contrast_targets is not None,
        batch_size=batch_size, method_options=method_options,
        step_scores_kwargs=step_scores_kwargs,
    )  # fmt: skip
    encoded = encode(
        model, request.prompts, targets, contrast_prompts=contrast_prompts,
        contrast_targets=contrast_targets, attr_pos_start=attr_pos_start,
        attr_pos_end=attr_pos_end, generation_kwargs=generation_kwargs,
        contrast_forced=contrast_forced, prepend_bos=prepend_bos,
    )  # fmt: skip
    spec = request.spec
    parameters = {
        "method": method,
        "attributed_fn": attributed_fn,
        "attributed_fn_kwargs": dict(attributed_fn_kwargs or {}),
        "attr_pos_start": attr_pos_start,
        "attr_pos_end": attr_pos_end,
        "prepend_bos": prepend_bos,
        **request.options,
        **({"max_bytes": max_bytes} if max_bytes is not None else {}),
        "reduce": spec.reduce,
        "final_step_only": spec.final_step_only,
    }
    began = time.perf_counter()
    sequences: list[SequenceAttribution] = []
    fn_kwargs = dict(attributed_fn_kwargs or {})
    parts = batches(model, encoded, batch_size, attributed_fn, fn_kwargs)
    n_batches = -(-len(request.prompts) // batch_size)
    for batch, fn in tqdm(parts, total=n_batches, desc=method, disable=not show_progress):
        options = planned_options(model, method, batch, request.options, max_bytes)
        result = run_method(model, spec, batch, fn, options)
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
