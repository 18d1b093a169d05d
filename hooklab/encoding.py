"""Encode prompts, forced or generated targets, and contrasts into token ids.

Prompts get BOS once where the model's tokenizer adds it, or as ``prepend_bos`` says (see
:mod:`hooklab.inputs`); text targets that repeat their prompt have it
stripped (as in Inseq); each sequence is then split at the attributed span: targets before
``attr_pos_start`` join the forced prefix. On encoder–decoder models prompts are sources
(tokenised with the tokenizer's special tokens, :func:`hooklab.seq2seq.encode_source`) and the
forced prefix starts with the decoder start token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from hooklab import seq2seq
from hooklab.architecture import is_encoder_decoder
from hooklab.generation import check_generation_kwargs, generate
from hooklab.inputs import (
    as_prompt_ids,
    check_length,
    check_token_ids,
    encode_target,
    refuse_prepend_bos,
)

PromptsArg = str | Sequence[str] | Sequence[Sequence[int]]
TargetsArg = str | Sequence[str] | Sequence[Sequence[int]] | None


@dataclass(frozen=True)
class Encoded:
    """Token ids per prompt, split at ``attr_pos_start`` / ``attr_pos_end``.

    Attributes:
        prefixes: the prompt plus the targets before the attributed span (forced).
        steps: the attributed target tokens.
        contrast_prefixes: contrast prompts plus the same forced targets, or None
            (encoder–decoder: the same decoder prefixes as ``prefixes``).
        contrast_steps: an alternative token per attributed step, or None.
        sources: encoder–decoder only: the source ids (``prefixes`` are then the decoder
            prefixes: the decoder start token and the forced targets).
        contrast_sources: encoder–decoder only: the contrast source ids, or None.
    """

    prefixes: list[list[int]]
    steps: list[list[int]]
    contrast_prefixes: list[list[int]] | None = None
    contrast_steps: list[list[int]] | None = None
    sources: list[list[int]] | None = None
    contrast_sources: list[list[int]] | None = None


def _per_prompt(value, n: int, what: str) -> list | None:
    if value is None:
        return None
    value = [value] if isinstance(value, str) else list(value)
    if len(value) != n:
        raise ValueError(f"Got {len(value)} {what} for {n} prompts; pass one per prompt.")
    return value


def encode_targets(
    model, prompts: list, targets: list, prompt_ids, what: str = "targets"
) -> list[list[int]]:
    """Encode forced targets: text (a continuation, or the prompt + continuation) or ids."""
    encoder_decoder = is_encoder_decoder(model)
    out = []
    for k, (prompt, target) in enumerate(zip(prompts, targets, strict=True)):
        if isinstance(target, str):
            # Accept Inseq-style targets that repeat the prompt before the continuation.
            repeats = not encoder_decoder and isinstance(prompt, str) and target.startswith(prompt)
            out.append(encode_target(model, target[len(prompt) :] if repeats else target))
        elif isinstance(target, Sequence):
            if not target:
                raise ValueError(f"{what}[{k}] is an empty id list; pass at least one token id.")
            out.append(check_token_ids(model, target, f"{what}[{k}]"))
        else:
            raise TypeError(
                f"{what}[{k}] must be a text or a list of token ids, got "
                f"{type(target).__name__}: {target!r}."
            )
    for p, t in zip(prompt_ids, out, strict=True):
        if encoder_decoder:
            seq2seq.check_decoder_length(model, len(t))
        else:
            check_length(model, len(p) + len(t), "prompt + target")
    return out


def generate_targets(model, prompts: list, prompt_ids, generation_kwargs) -> list[list[int]]:
    """Greedy (or configured) continuations; ValueError when one is empty."""
    kwargs = check_generation_kwargs(generation_kwargs)
    target_ids = generate(model, prompt_ids, **kwargs).output_ids
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


def encode_contrast_targets(model, prompts, contrast_targets, prompt_ids, target_ids):
    """Encode an alternative token per target token (text or ids), one list per prompt."""
    c_targets = _per_prompt(contrast_targets, len(prompts), "contrast targets")
    if c_targets is None:
        return None
    c_target_ids = encode_targets(model, prompts, c_targets, prompt_ids, "contrast_targets")
    for i, (c, t) in enumerate(zip(c_target_ids, target_ids, strict=True)):
        if len(c) != len(t):
            raise ValueError(
                f"Contrast target {i} has {len(c)} tokens but the target has {len(t)}; "
                "contrast targets must give one alternative token per target token."
            )
    return c_target_ids


def encode(
    model,
    prompts: list,
    targets: TargetsArg = None,
    *,
    contrast_prompts: PromptsArg | None = None,
    contrast_targets: TargetsArg = None,
    attr_pos_start: int = 0,
    attr_pos_end: int | None = None,
    generation_kwargs: Mapping[str, Any] | None = None,
    contrast_forced: Sequence[Sequence[int]] | None = None,
    prepend_bos: bool | None = None,
) -> Encoded:
    """Encode prompts, targets (generated when None) and contrasts; split at the span.

    ``contrast_forced`` (token ids per prompt) replaces the forced targets before the span in
    the contrast (default: the same ones), e.g. to drop an output context from it.
    ``prepend_bos`` (decoder-only): prepend BOS to text prompts (None: where the model's
    tokenizer adds it).
    """
    encoder_decoder = is_encoder_decoder(model)
    if encoder_decoder:
        refuse_prepend_bos(prepend_bos)
        as_ids = seq2seq.encode_source
    else:
        as_ids = partial(as_prompt_ids, prepend_bos=prepend_bos)
    prompt_ids = [as_ids(model, p) for p in prompts]
    for k, ids in enumerate(prompt_ids):
        check_token_ids(model, ids, f"prompts[{k}]")
        check_length(model, len(ids), "source" if encoder_decoder else "prompt")
    target_list = _per_prompt(targets, len(prompts), "targets")
    if target_list is None:
        target_ids = generate_targets(model, prompts, prompt_ids, generation_kwargs)
    else:
        target_ids = encode_targets(model, prompts, target_list, prompt_ids)
    c_prompts = _per_prompt(contrast_prompts, len(prompts), "contrast prompts")
    c_prompt_ids = None if c_prompts is None else [as_ids(model, p) for p in c_prompts]
    for k, ids in enumerate(c_prompt_ids or []):
        check_token_ids(model, ids, f"contrast_prompts[{k}]")
    c_target_ids = encode_contrast_targets(model, prompts, contrast_targets, prompt_ids, target_ids)
    # Attribute only target tokens [start, end): earlier ones join the forced prefix.
    spans = [_span(len(t), attr_pos_start, attr_pos_end) for t in target_ids]

    def prefixes(starts: list[list[int]], forced=None) -> list[list[int]]:
        forced = forced or [t[:s] for t, (s, _) in zip(target_ids, spans, strict=True)]
        return [a + list(f) for a, f in zip(starts, forced, strict=True)]

    c_forced = _per_prompt(contrast_forced, len(prompts), "contrast forced prefixes")
    for k, ids in enumerate(c_forced or []):
        check_token_ids(model, ids, f"contrast_forced[{k}]")
    if c_forced is not None and c_prompt_ids is None:
        raise ValueError("contrast_forced changes the contrast prompts' prefix: pass them too.")

    def steps(ids: list[list[int]]) -> list[list[int]]:
        return [t[s:e] for t, (s, e) in zip(ids, spans, strict=True)]

    if encoder_decoder:  # the decoder input starts with the decoder start token
        starts = [[seq2seq.decoder_start_id(model)] for _ in prompts]
        return Encoded(
            prefixes=prefixes(starts),
            steps=steps(target_ids),
            contrast_prefixes=None if c_prompt_ids is None else prefixes(starts, c_forced),
            contrast_steps=None if c_target_ids is None else steps(c_target_ids),
            sources=prompt_ids,
            contrast_sources=c_prompt_ids,
        )
    return Encoded(
        prefixes=prefixes(prompt_ids),
        steps=steps(target_ids),
        contrast_prefixes=None if c_prompt_ids is None else prefixes(c_prompt_ids, c_forced),
        contrast_steps=None if c_target_ids is None else steps(c_target_ids),
    )
