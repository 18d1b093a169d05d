"""Token sequences for the context-mixing methods: prompts, generated or forced targets.

Context-mixing methods score a whole sequence at once (prompt + target), so they only need
each example's token ids and where its target starts. ``prompts`` are the inputs, ``targets``
forced continuations (None: generate greedily; ``""``: none). Token positions may be given as
ints (negative ones count from the end), ranges, or a substring of the text, matched to the
tokens that cover its first occurrence.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hooklab.generation import check_generation_kwargs, generate
from hooklab.inputs import check_length, encode_prompt, encode_target

PositionsArg = int | str | range | Sequence[int]


def as_texts(prompts: str | Sequence[str]) -> list[str]:
    """Return one prompt or a list of prompts as a non-empty list of strings."""
    if isinstance(prompts, str):
        return [prompts]
    if not isinstance(prompts, Sequence) or not all(isinstance(t, str) for t in prompts):
        raise TypeError(
            f"Pass a prompt or a list of prompts, got {type(prompts).__name__}: {prompts!r}."
        )
    if not prompts:
        raise ValueError("No prompts given: pass a prompt or a non-empty list of prompts.")
    return list(prompts)


def per_prompt(targets: str | Sequence[str] | None, n_prompts: int) -> list[str | None]:
    """One target per prompt: None (generate) or one text are repeated for every prompt; a
    list must hold one text per prompt."""
    if targets is None or isinstance(targets, str):
        return [targets] * n_prompts
    if not isinstance(targets, Sequence) or not all(isinstance(t, str) for t in targets):
        raise TypeError(
            f"targets must be None, a text or a list of texts, got {type(targets).__name__}: "
            f"{targets!r}."
        )
    if len(targets) != n_prompts:
        raise ValueError(
            f"Got {len(targets)} targets for {n_prompts} prompts; pass one per prompt (or one "
            "text for all)."
        )
    return list(targets)


def _target_ids(model, prompt: str, target: str) -> list[int]:
    if target == "":
        return []
    # Accept Inseq-style targets that repeat the prompt before the continuation.
    text = target[len(prompt) :] if target.startswith(prompt) and target != prompt else target
    return encode_target(model, text)


def prepare_sequences(
    model,
    prompts: list[str],
    targets: str | Sequence[str] | None,
    generation_kwargs: Mapping[str, Any] | None = None,
    prepend_bos: bool | None = None,
) -> list[tuple[list[int], int]]:
    """Return ``(prompt + target ids, index of the first target token)`` per prompt.

    Args:
        targets: ``None`` to generate greedily (``generation_kwargs`` go to
            :func:`hooklab.generate`), ``""`` for no target, or forced continuation text (one
            for all prompts, or one per prompt).
        prepend_bos: prepend BOS to the prompts (None: where the model's tokenizer adds it).
    """
    prompt_ids = [encode_prompt(model, p, prepend_bos=prepend_bos) for p in prompts]
    chosen = per_prompt(targets, len(prompts))
    if targets is None:
        kwargs = check_generation_kwargs(generation_kwargs)
        outputs = generate(model, prompt_ids, **kwargs).output_ids
    else:
        outputs = [_target_ids(model, p, t) for p, t in zip(prompts, chosen, strict=True)]
    sequences = []
    for p, t in zip(prompt_ids, outputs, strict=True):
        check_length(model, len(p) + len(t), "prompt + target")
        sequences.append((p + list(t), len(p)))
    return sequences


def token_positions(
    tokens: Sequence[str], spec: PositionsArg, what: str = "positions"
) -> list[int]:
    """Resolve ``spec`` to sorted token positions in ``tokens``.

    Args:
        tokens: the sequence's tokens as text.
        spec: an int or a list / range of ints (negative ones count from the end; may be
            empty), or a substring of the joined text: the tokens overlapping its first
            occurrence.
        what: what the positions are for, used in error messages.
    """
    n = len(tokens)
    if isinstance(spec, str):
        text = "".join(tokens)
        start = text.find(spec)
        if not spec or start < 0:
            raise ValueError(
                f"{what}: {spec!r} does not occur in the text {text!r}; pass a substring of "
                "it, or token positions."
            )
        end, offset, found = start + len(spec), 0, []
        for i, token in enumerate(tokens):
            if offset < end and offset + len(token) > start:
                found.append(i)
            offset += len(token)
        return found
    items = [spec] if isinstance(spec, int) else list(spec)
    bad = [i for i in items if isinstance(i, bool) or not isinstance(i, int) or not -n <= i < n]
    if bad:
        raise ValueError(
            f"Invalid {what} {spec!r}: pass ints in -{n}..{n - 1} (the sequence has {n} tokens) "
            "or a substring of the text."
        )
    return sorted({i % n for i in items})
