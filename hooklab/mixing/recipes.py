"""Recipes: the figures and summaries of ``hooklab mixing`` and ``hooklab knockout``, as calls.

The commands parse their flags, load the model and call these; a Python user gets the same
figures from the same outputs::

    >>> import hooklab
    >>> from hooklab.mixing import value_zeroing
    >>> from hooklab.mixing.recipes import value_zeroing_figures
    >>> model = hooklab.load("toy")
    >>> (out,) = value_zeroing(model, "George was sick yesterday. His colleagues asked him")
    >>> sorted(value_zeroing_figures(out, cue="sick", panels=4))
    ['layers', 'query_layers', 'rollout', 'target_mixing']

Figures are matplotlib ``Figure`` objects; save them with :func:`hooklab.output.style.save`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from hooklab.mixing.sequences import token_positions
from hooklab.options import PositiveInt, check_value

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from hooklab.mixing.output import MixingOutput


def query_position(out: MixingOutput, word: str | None = None) -> int:
    """The query token: the first token of ``word`` among the targets (or, without targets,
    the whole text), else the last token."""
    if word is None:
        return len(out.tokens) - 1
    start = out.target_start or 0
    return start + token_positions(out.tokens[start:], word, "word")[0]


def cue_positions(out: MixingOutput, cue: str | None) -> list[int]:
    """The key positions of ``cue`` in the context (before the targets; on cross-attention
    the source), or none when ``cue`` is None."""
    if cue is None:
        return []
    start = out.target_start or 0
    context = out.keys[: (start or None) if out.key_tokens is None else None]
    return token_positions(context, cue, "cue")


def value_zeroing_figures(
    out: MixingOutput,
    *,
    query: int | None = None,
    word: str | None = None,
    cue: str | None = None,
    panels: int = 12,
    top_k: int = 5,
) -> dict[str, Figure]:
    """The four figures ``hooklab mixing`` writes for one value-zeroing output.

    Args:
        out: a :class:`~hooklab.mixing.output.MixingOutput` of
            :func:`~hooklab.mixing.value_zeroing`.
        query: the query position whose mixing is drawn; default: ``word``'s, else the last.
        word: the query as a word of the targets (see :func:`query_position`).
        cue: a context word whose keys are always drawn and highlighted in the lines.
        panels: the most layers in the per-layer grid (evenly spaced).
        top_k: the keys drawn in the lines besides the cue: the query's strongest.

    Returns:
        ``{"layers": per-layer heatmaps, "query_layers": layer x key for the query,
        "target_mixing": the query's mixing per layer as lines, "rollout": the rolled-out
        matrix}``; ``"rollout"`` only when ``out`` has one (not on cross-attention).
    """
    from hooklab.mixing.plot import (
        plot_layers,
        plot_matrix,
        plot_query_layers,
        plot_token_mixing,
        top_keys,
    )

    check_value("panels", panels, PositiveInt)
    check_value("top_k", top_k, PositiveInt)
    query = query_position(out, word) if query is None else query
    highlight = cue_positions(out, cue)
    keys = top_keys(out, query, top_k)
    keys = sorted({*keys, *highlight}) if cue is not None else keys
    figures = {
        "layers": plot_layers(out, max_panels=panels),
        "query_layers": plot_query_layers(out, query, rollout=False),
        "target_mixing": plot_token_mixing(out, query, keys=keys, highlight=highlight),
    }
    if out.rollout is not None:
        figures["rollout"] = plot_matrix(out, rollout=True, annotate=False)
    return figures


def toy_knockout_case(example: Mapping[str, Any]) -> tuple[str, str, str, str]:
    """(prompt, measured word, cue word, context) of a toy example: the prompt runs up to the
    output's context-dependent word, which is the measured token (with its leading space)."""
    output = example["output_current_text"]
    cut = output.index(example["dependent_word"])
    prompt = f"{example['input_context_text']} {example['input_current_text']}{output[:cut]}"
    return (
        prompt.rstrip(),
        " " + example["dependent_word"],
        example["cue_word"],
        example["input_context_text"],
    )


def toy_knockout_sources(model, prompt: str, cue: str, context: str) -> dict[str, list[int]]:
    """The source sets of a toy case: the cue's tokens, the other context tokens (BOS
    excluded), the current sentence's (the last token excluded) and the last token."""
    from hooklab.inputs import encode_prompt, str_tokens

    tokens = str_tokens(model, encode_prompt(model, prompt))
    cue_pos = token_positions(tokens, cue, "cue")
    ctx = token_positions(tokens, context, "context")
    ctx = list(range(1 if len(tokens) > 1 else 0, ctx[-1] + 1))
    return {
        "cue": cue_pos,
        "other context": [p for p in ctx if p not in cue_pos],
        "current": list(range(ctx[-1] + 1, len(tokens) - 1)),
        "last": [len(tokens) - 1],
    }


def cue_knockouts(model, examples: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Block the last token's edges to the cue in every layer at once, for each toy example.

    Returns:
        One dict per example: ``measured`` (the word), ``cue``, ``before`` / ``after``
        (P(measured) without / with the block) and ``change`` (relative).
    """
    from hooklab.mixing.knockout import attention_knockout

    rows = []
    for example in examples:
        prompt, measured, cue, _ = toy_knockout_case(example)
        (out,) = attention_knockout(model, prompt, sources={"cue": cue}, measured_token=measured,
                                    window=None)  # fmt: skip
        rows.append({
            "measured": measured, "cue": cue, "before": out.base_probability,
            "after": float(out.probabilities[0, 0]), "change": float(out.relative_change[0, 0]),
        })  # fmt: skip
    return rows
