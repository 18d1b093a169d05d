"""Prompts and token positions for the context-mixing methods.

Context-mixing methods score a whole sequence at once (prompt + target). ``prompts`` are the
inputs (texts or token-id lists); ``targets`` are read as attribution reads them
(:mod:`hooklab.encoding`, through :func:`hooklab.mixing.adapter.encode_examples`). Token
positions may be given as ints (negative ones count from the end), ranges, or a substring of
the text, matched to the tokens that cover its first occurrence.
"""

from __future__ import annotations

from collections.abc import Sequence

PositionsArg = int | str | range | Sequence[int]


def as_prompts(prompts: str | Sequence[str] | Sequence[Sequence[int]]) -> list:
    """Return one prompt or a list of prompts (texts or token-id lists, as in
    :func:`hooklab.attribute`) as a non-empty list; the ids are checked when encoded."""
    if isinstance(prompts, str):
        return [prompts]
    if not isinstance(prompts, Sequence) or not all(isinstance(p, Sequence) for p in prompts):
        raise TypeError(
            "Pass a prompt or a list of prompts (texts or token-id lists), got "
            f"{type(prompts).__name__}: {prompts!r}."
        )
    if not prompts:
        raise ValueError("No prompts given: pass a prompt or a non-empty list of prompts.")
    return list(prompts)


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
