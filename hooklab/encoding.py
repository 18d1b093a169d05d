"""Encode prompts, forced or generated targets, and contrasts into token ids.

Prompts get BOS once where the model's tokenizer adds it, or as ``prepend_bos`` says (see
:mod:`hooklab.inputs`). ``targets`` are read here once for every family (attribution, context
mixing, PECoRe): :func:`per_prompt` (one per prompt), :func:`strip_repeated_prompt` (Inseq-style
targets that repeat their prompt), :func:`forced_or_generated` (None: :func:`hooklab.generate`).
Each sequence is then split at the attributed span: targets before ``attr_pos_start`` join the
forced prefix. On encoder–decoder models prompts are sources (tokenised with the tokenizer's
special tokens, :func:`hooklab.seq2seq.encode_source`) and the forced prefix starts with the
decoder start token.
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


def per_prompt(value, n: int, what: str = "targets") -> list | None:
    """One ``value`` per prompt: None stays None, one text is repeated for every prompt, a list
    must hold one entry (a text or a token-id list) per prompt.

    This is the one place where hooklab decides what ``targets`` (and the other per-prompt
    arguments: contrast prompts and targets) mean; attribution, mixing and PECoRe call it.
    """
    if value is None:
        return None
    if isinstance(value, str):
        return [value] * n
    if not isinstance(value, Sequence):
        raise TypeError(
            f"{what} must be None, a text or a list with one text or token-id list per prompt, "
            f"got {type(value).__name__}: {value!r}."
        )
    value = list(value)
    if value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise TypeError(
            f"{what} is one flat list of token ids ({value!r}); pass one token-id list per "
            f"prompt, e.g. [{value!r}]."
        )
    if len(value) != n:
        raise ValueError(
            f"Got {len(value)} {what} for {n} prompts; pass one per prompt (or one text for all)."
        )
    return value


def strip_repeated_prompt(prompt: str, target: str) -> str:
    """``target`` without its prompt, where it repeats it (Inseq-style targets).

    The one rule: a text target that starts with its prompt text and is longer than it has the
    prompt removed; any other target (one equal to its prompt included) is kept whole. Only
    decoder-only models apply it (:func:`encode_targets`): an encoder–decoder target is a
    translation, not a continuation of its source.
    """
    if target.startswith(prompt) and len(target) > len(prompt):
        return target[len(prompt) :]
    return target


def _empty_target(what: str, k: int) -> ValueError:
    return ValueError(
        f"{what}[{k}] is empty. targets='' means no target; attribution needs at least one "
        "target token: pass a continuation or None to generate."
    )


def encode_targets(
    model,
    prompts: list,
    targets: list,
    prompt_ids,
    what: str = "targets",
    *,
    allow_empty: bool = False,
) -> list[list[int]]:
    """Encode forced targets, one per prompt: text (a continuation, or the prompt + continuation,
    see :func:`strip_repeated_prompt`) or token ids.

    ``""`` (or an empty id list) means no target: ``[]`` where ``allow_empty`` (context
    mixing), else a ValueError (attribution needs a target token to attribute).
    """
    encoder_decoder = is_encoder_decoder(model)
    out = []
    for k, (prompt, target) in enumerate(zip(prompts, targets, strict=True)):
        if isinstance(target, (str, Sequence)) and len(target) == 0:
            if not allow_empty:
                raise _empty_target(what, k)
            out.append([])
        elif isinstance(target, str):
            if not encoder_decoder and isinstance(prompt, str):
                target = strip_repeated_prompt(prompt, target)
            out.append(encode_target(model, target))
        elif isinstance(target, Sequence):
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


def generate_targets(
    model, prompts: list, prompt_ids, generation_kwargs, *, allow_empty: bool = False
) -> list[list[int]]:
    """Greedy (or configured) continuations with :func:`hooklab.generate`; ValueError when one
    is empty, unless ``allow_empty``."""
    kwargs = check_generation_kwargs(generation_kwargs)
    target_ids = generate(model, prompt_ids, **kwargs).output_ids
    empty = [p for p, t in zip(prompts, target_ids, strict=True) if not t]
    if empty and not allow_empty:
        raise ValueError(f"The model generated nothing (EOS at once) for {empty!r}.")
    return target_ids


def encode_prompts(
    model, prompts: list, prepend_bos: bool | None = None, what: str = "prompts"
) -> list[list[int]]:
    """Prompt ids (decoder-only: BOS as :func:`hooklab.inputs.encode_prompt` says) or source
    ids (encoder–decoder, :func:`hooklab.seq2seq.encode_source`), checked."""
    encoder_decoder = is_encoder_decoder(model)
    if encoder_decoder:
        refuse_prepend_bos(prepend_bos)
        as_ids = seq2seq.encode_source
    else:
        as_ids = partial(as_prompt_ids, prepend_bos=prepend_bos)
    prompt_ids = [as_ids(model, p) for p in prompts]
    for k, ids in enumerate(prompt_ids):
        check_token_ids(model, ids, f"{what}[{k}]")
        check_length(model, len(ids), "source" if encoder_decoder else "prompt")
    return prompt_ids


def forced_or_generated(
    model,
    prompts: list,
    targets: TargetsArg,
    prompt_ids,
    generation_kwargs: Mapping[str, Any] | None = None,
    *,
    allow_empty: bool = False,
) -> list[list[int]]:
    """Target ids per prompt: generated when ``targets`` is None, else forced (one text for
    every prompt, or one text or id list per prompt; see :func:`per_prompt`)."""
    forced = per_prompt(targets, len(prompts), "targets")
    if forced is None:
        return generate_targets(
            model, prompts, prompt_ids, generation_kwargs, allow_empty=allow_empty
        )
    return encode_targets(model, prompts, forced, prompt_ids, allow_empty=allow_empty)


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
    c_targets = per_prompt(contrast_targets, len(prompts), "contrast_targets")
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
    prompt_ids = encode_prompts(model, prompts, prepend_bos)
    target_ids = forced_or_generated(model, prompts, targets, prompt_ids, generation_kwargs)
    c_prompts = per_prompt(contrast_prompts, len(prompts), "contrast_prompts")
    c_prompt_ids = None
    if c_prompts is not None:
        c_prompt_ids = encode_prompts(model, c_prompts, prepend_bos, "contrast_prompts")
    c_target_ids = encode_contrast_targets(model, prompts, contrast_targets, prompt_ids, target_ids)
    # Attribute only target tokens [start, end): earlier ones join the forced prefix.
    spans = [_span(len(t), attr_pos_start, attr_pos_end) for t in target_ids]

    def prefixes(starts: list[list[int]], forced=None) -> list[list[int]]:
        forced = forced or [t[:s] for t, (s, _) in zip(target_ids, spans, strict=True)]
        return [a + list(f) for a, f in zip(starts, forced, strict=True)]

    c_forced = per_prompt(contrast_forced, len(prompts), "contrast_forced")
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
