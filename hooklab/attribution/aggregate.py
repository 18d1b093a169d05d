"""Reduce (:func:`reduce_hidden`), merge (:func:`aggregate`, :func:`merge_groups`) and subtract
(:func:`difference`) the scores of a :class:`SequenceAttribution`.

Merging ignores NaN (tokens a step cannot see): a merged cell is NaN only if all its members are.
Reductions run in float32 on half-precision scores (see :mod:`hooklab.precision`).
"""

from __future__ import annotations

import itertools
import math
import unicodedata
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from hooklab.output.provenance import thaw
from hooklab.precision import upcast
from hooklab.registry import unknown_name_error

if TYPE_CHECKING:
    from hooklab.attribution.output import SequenceAttribution


def _absmax(x: Tensor, dim: int = -1) -> Tensor:
    """Return the entry with the largest ``|x|`` along ``dim``, sign kept."""
    return x.gather(dim, x.abs().argmax(dim, keepdim=True)).squeeze(dim)


HIDDEN_REDUCTIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "l2": lambda x: torch.linalg.vector_norm(x, dim=-1),
    "sum": lambda x: x.sum(-1),
    "mean": lambda x: x.mean(-1),
    "max": lambda x: x.amax(-1),
    "absmax": _absmax,
}


def reduce_hidden(
    attributions: Float[Tensor, "step key_pos *d_model"], reduce: str = "l2"
) -> Float[Tensor, "step key_pos"]:
    """Reduce the trailing dims of ``[step, key_pos, ...]`` scores (2-d ones pass through).

    The trailing dims are the hidden size for gradient methods, ``layer, head`` for attention;
    they are flattened and reduced together. ``reduce`` is a name in :data:`HIDDEN_REDUCTIONS`:
    ``"l2"`` (L2 norm), ``"sum"``, ``"mean"``, ``"max"`` or ``"absmax"`` (the entry with the
    largest ``|x|``, sign kept). NaN stays NaN. bfloat16 / float16 scores are reduced (and
    returned) in float32.
    """
    if reduce not in HIDDEN_REDUCTIONS:
        raise unknown_name_error("hidden reduction", reduce, list(HIDDEN_REDUCTIONS))
    if attributions.ndim < 2:
        shape = tuple(attributions.shape)
        raise ValueError(f"attributions has shape {shape}; expected (step, key_pos, ...)")
    if attributions.ndim == 2:
        return upcast(attributions)
    return HIDDEN_REDUCTIONS[reduce](upcast(attributions).flatten(2))


#: NaN-aware reductions that merge cells, rows and step scores: ``fn(x, seen, dim)`` gets the
#: values with NaN set to 0 and the mask of non-NaN entries.
MERGE_REDUCTIONS: dict[str, Callable[[Tensor, Tensor, int], Tensor]] = {
    "sum": lambda x, seen, d: x.sum(d),
    "mean": lambda x, seen, d: x.sum(d) / seen.sum(d).clamp(min=1),
    "prod": lambda x, seen, d: x.masked_fill(~seen, 1.0).prod(d),
    "geomean": lambda x, seen, d: (x.masked_fill(~seen, 1.0).log().sum(d) / seen.sum(d)).exp(),
    "max": lambda x, seen, d: x.masked_fill(~seen, -math.inf).amax(d),
    "min": lambda x, seen, d: x.masked_fill(~seen, math.inf).amin(d),
    "absmax": lambda x, seen, d: _absmax(x, d),
}


def _nan_reduce(x: Tensor, dim: int, how: str) -> Tensor:
    """Reduce ``dim`` over the non-NaN entries; NaN where all entries are NaN."""
    x = upcast(x)
    seen = ~torch.isnan(x)
    out = MERGE_REDUCTIONS[how](x.nan_to_num(0.0), seen, dim)
    return out.masked_fill(~seen.any(dim), math.nan)


#: How merged steps combine step scores by default (others, e.g. entropy and logit: ``"mean"``):
#: a word's probability and cross-entropy are those of the whole word; perplexity is per token.
DEFAULT_STEP_REDUCE: dict[str, str] = {
    "probability": "prod",
    "contrast_prob": "prod",
    "crossentropy": "sum",
    "perplexity": "geomean",
}

_MERGE_OPTIONS = ("reduce", "source_reduce", "target_reduce", "step_reduce")


def _check_groups(groups: Sequence[Sequence[int]], n: int, target_start: int) -> None:
    expected = 0
    for g in map(list, groups):
        if not g or g != list(range(expected, expected + len(g))):
            raise ValueError(f"group {g} should hold the contiguous indices after {expected - 1}")
        if g[0] < target_start <= g[-1]:
            raise ValueError(f"group {g} crosses target_start={target_start}; split it there")
        expected += len(g)
    if expected != n:
        raise ValueError(f"groups cover tokens 0..{expected - 1}; expected 0..{n - 1}")


def _per_group(x: Tensor, spans: list[tuple[int, int]], how: str, dim: int = 0) -> Tensor:
    """Reduce ``x[s:e]`` along ``dim`` with ``how`` for each span; stack along ``dim``."""
    parts = [_nan_reduce(x.narrow(dim, s, e - s), dim, how) for s, e in spans]
    return torch.stack(parts, dim) if parts else x.narrow(dim, 0, 0)


def _check_reductions(
    seq: SequenceAttribution, source_reduce: str, target_reduce: str, step_reduce: dict[str, str]
) -> None:
    """KeyError (close matches first) for an unknown reduction or step score name."""
    for kind, name, valid in (
        ("source reduction", source_reduce, MERGE_REDUCTIONS),
        ("target reduction", target_reduce, MERGE_REDUCTIONS),
        *(("step score", k, seq.step_scores) for k in step_reduce),
        *(("step reduction", how, MERGE_REDUCTIONS) for how in step_reduce.values()),
    ):
        if name not in valid:
            raise unknown_name_error(kind, name, list(valid))


def _merged_source(
    seq: SequenceAttribution,
    source_groups: Sequence[Sequence[int]] | None,
    step_spans: list[tuple[int, int]],
    reduce: str | None,
    source_reduce: str,
    target_reduce: str,
) -> dict[str, Any]:
    """The source-side fields of a merged encoder–decoder sequence (default: every source
    token alone); the source columns merge with ``source_reduce``, the rows as the targets'."""
    n_src = len(seq.source_tokens)
    source_groups = [[i] for i in range(n_src)] if source_groups is None else source_groups
    _check_groups(source_groups, n_src, n_src)
    src_spans = [(g[0], g[-1] + 1) for g in source_groups]
    source_attributions = None
    if seq.attributions is not None:
        merged = _per_group(seq.scores(reduce, side="source"), src_spans, source_reduce, 1)
        source_attributions = _per_group(merged, step_spans, target_reduce)
    return {
        "source_tokens": tuple("".join(seq.source_tokens[s:e]) for s, e in src_spans),
        "source_token_ids": seq.source_token_ids[[s for s, _ in src_spans]],
        "source_attributions": source_attributions,
        "special_tokens": seq.special_tokens,
    }


def merge_groups(
    seq: SequenceAttribution,
    groups: Sequence[Sequence[int]],
    *,
    reduce: str | None = None,
    source_reduce: str = "sum",
    target_reduce: str = "mean",
    step_reduce: dict[str, str] | None = None,
    source_groups: Sequence[Sequence[int]] | None = None,
) -> SequenceAttribution:
    """Merge groups of contiguous tokens into single tokens.

    On encoder–decoder outputs ``groups`` cover ``tokens`` (the decoder side) and
    ``source_groups`` (default: every source token alone) the source tokens, whose columns
    merge with ``source_reduce`` and rows with ``target_reduce`` likewise.

    A merged token's text is its members' texts joined, and its id is the id of its first
    member. Scores become ``[step, key_pos]`` first (``reduce`` of :func:`reduce_hidden`);
    then the columns of a group combine with ``source_reduce`` and the rows (steps) of a
    target group with ``target_reduce``, both over visible (non-NaN) cells only. A cell stays
    NaN only if all its members are; so a merged target word's own column holds what its
    earlier pieces contributed to predicting its later ones.

    Args:
        seq: the attribution to merge.
        groups: lists of contiguous token indices covering all tokens in order, e.g.
            ``[[0], [1, 2], [3]]``; no group may hold both prompt and target tokens.
        reduce: hidden-size reduction (see :func:`reduce_hidden`).
        source_reduce: how columns merge: a name in :data:`MERGE_REDUCTIONS` (``"sum"``,
            ``"mean"``, ``"max"``, ``"absmax"``, ...).
        target_reduce: how the rows of merged steps merge; same choices.
        step_reduce: per step score name, one of :data:`MERGE_REDUCTIONS`; overrides
            :data:`DEFAULT_STEP_REDUCE`. Extras (e.g. IG's completeness delta) are summed.

    Returns:
        The merged sequence; ``parameters["aggregation"]`` records groups (as half-open spans).
    """
    n, start, n_steps = len(seq.tokens), seq.target_start, seq.n_steps
    _check_groups(groups, n, start)
    step_reduce = dict(step_reduce or {})
    _check_reductions(seq, source_reduce, target_reduce, step_reduce)
    spans = [(g[0], g[-1] + 1) for g in groups]
    first_target = next((i for i, (s, _) in enumerate(spans) if s >= start), len(spans))
    # Steps of each merged target token; the steps cover a prefix of the target tokens.
    step_spans = [(s - start, min(e - start, n_steps)) for s, e in spans[first_target:]]
    step_spans = [(s, e) for s, e in step_spans if s < e]

    attributions = None
    if seq.attributions is not None:
        scores = seq.scores(reduce)  # [step, key_pos]
        merged = _per_group(scores, spans, source_reduce, dim=1)  # [step, group]
        attributions = _per_group(merged, step_spans, target_reduce)  # [merged step, group]
    source_fields = {}
    if seq.source_tokens is not None:
        source_fields = _merged_source(seq, source_groups, step_spans, reduce, source_reduce,
                                       target_reduce)  # fmt: skip
    how_steps = {k: step_reduce.get(k, DEFAULT_STEP_REDUCE.get(k, "mean")) for k in seq.step_scores}
    step_scores = {k: _per_group(v, step_spans, how_steps[k]) for k, v in seq.step_scores.items()}
    extras = {k: _per_group(v, step_spans, "sum") for k, v in seq.extras.items()}
    record = {
        "how": "groups",
        "groups": [list(s) for s in spans],
        "reduce": reduce if seq.attributions is not None and seq.attributions.ndim == 3 else None,
        "source_reduce": source_reduce,
        "target_reduce": target_reduce,
        "step_reduce": how_steps,
    }
    if "aggregation" in seq.parameters:
        record["previous"] = seq.parameters["aggregation"]
    return type(seq)(
        tokens=tuple("".join(seq.tokens[s:e]) for s, e in spans),
        token_ids=seq.token_ids[[s for s, _ in spans]],
        target_start=first_target,
        attributions=attributions,
        step_scores=step_scores,
        method=seq.method,
        parameters={**seq.parameters, "aggregation": record},
        extras=extras,
        **source_fields,
    )


_SPACE_MARKERS = "ĠĊ▁"  # byte-level BPE space / newline, SentencePiece space


def _is_separator(token: str) -> bool:
    """Return whether ``token`` is special (``<|endoftext|>``) or only punctuation and spaces."""
    # Symbols count as punctuation; U+FFFD (a partial UTF-8 character) counts as a letter.
    if len(token) > 2 and token[0] == "<" and token[-1] == ">" and " " not in token:
        return True
    return bool(token) and all(
        c.isspace() or c in _SPACE_MARKERS or (unicodedata.category(c)[0] in "PS" and c != "\ufffd")
        for c in token
    )


def _split(n: int, joins: set[int]) -> list[list[int]]:
    """Return groups of ``range(n)`` where token ``i`` joins the previous group iff in ``joins``."""
    groups: list[list[int]] = []
    for i in range(n):
        if i in joins and groups:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def word_groups(seq: SequenceAttribution) -> list[list[int]]:
    """Group token indices into words.

    A token starts a new word when it begins with whitespace (``" "``, ``"\\n"``, ``"Ġ"``,
    ``"▁"``), when it or the previous token is a separator (a special token like
    ``<|endoftext|>``, or only punctuation, symbols and whitespace), and at ``target_start``.
    """
    t = seq.tokens
    return _word_split(t, seq.target_start)


def _word_split(t: Sequence[str], boundary: int | None) -> list[list[int]]:
    joins = {
        i
        for i in range(1, len(t))
        if i != boundary
        and not (t[i][:1].isspace() or t[i][:1] in _SPACE_MARKERS)
        and not (_is_separator(t[i]) or _is_separator(t[i - 1]))
    }
    return _split(len(t), joins)


def source_word_groups(seq: SequenceAttribution) -> list[list[int]] | None:
    """Word groups of an encoder–decoder output's source tokens (None for decoder-only)."""
    return None if seq.source_tokens is None else _word_split(seq.source_tokens, None)


def span_groups(
    seq: SequenceAttribution, spans: Sequence[tuple[int, int]] | None = None
) -> list[list[int]]:
    """Return groups that merge each half-open ``(start, end)`` span; other tokens stay alone."""
    if spans is None:
        raise TypeError("aggregate(seq, 'spans', spans=[(start, end), ...]) needs spans")
    n, start = len(seq.tokens), seq.target_start
    cleaned = []
    for span in spans:
        if len(span) != 2 or not all(isinstance(v, int) for v in span):
            raise ValueError(f"span {span!r} should be a (start, end) pair of ints")
        s, e = span
        if not 0 <= s < e <= n:
            raise ValueError(f"span {span!r} is outside the tokens; need 0 <= start < end <= {n}")
        if s < start < e:
            raise ValueError(f"span {span!r} crosses target_start={start}; split it at {start}")
        cleaned.append((s, e))
    cleaned.sort()
    for (s0, e0), (s1, e1) in itertools.pairwise(cleaned):
        if s1 < e0:
            raise ValueError(f"span {(s1, e1)!r} overlaps span {(s0, e0)!r}")
    return _split(n, {j for s, e in cleaned for j in range(s + 1, e)})


#: Named groupings for :func:`aggregate`: ``fn(seq, **options) -> groups``.
GROUPINGS: dict[str, Callable[..., list[list[int]]]] = {"words": word_groups, "spans": span_groups}


def aggregate(seq: SequenceAttribution, how: str = "words", **kwargs: Any) -> SequenceAttribution:
    """Merge tokens into words (``how="words"``) or given spans (``how="spans"``).

    Args:
        seq: the attribution to aggregate.
        how: a name in :data:`GROUPINGS`: ``"words"`` (see :func:`word_groups`) or ``"spans"``
            (``spans=[(start, end), ...]``: half-open, non-overlapping, not crossing
            ``target_start``; see :func:`span_groups`).
        **kwargs: the grouping's options, and the options of :func:`merge_groups`.
    """
    if how not in GROUPINGS:
        raise unknown_name_error("aggregation", how, list(GROUPINGS))
    merge_kwargs = {k: kwargs.pop(k) for k in _MERGE_OPTIONS if k in kwargs}
    if how == "words":  # encoder-decoder: the source side into words too
        merge_kwargs.setdefault("source_groups", source_word_groups(seq))
    out = merge_groups(seq, GROUPINGS[how](seq, **kwargs), **merge_kwargs)
    record = {**out.parameters["aggregation"], "how": how, **thaw(kwargs)}
    return out.with_(parameters={**out.parameters, "aggregation": record})


def difference(
    a: SequenceAttribution,
    b: SequenceAttribution,
    *,
    reduce: str | None = None,
    normalize: bool = False,
) -> SequenceAttribution:
    """Return ``a - b`` for two attributions of the same tokens: a signed ``[step, key_pos]`` map.

    Each side is reduced to ``[step, key_pos]`` first (``reduce``, or each side's own default
    reduction, e.g. the L2 norm of a saliency vector), then they subtract. Subtracting the raw
    hidden vectors first and reducing after (the L2 norm of ``x - y``) would turn every cell
    positive and hide which method scores a token higher. Step scores present in both
    subtract; extras are dropped.

    Args:
        a, b: attributions of the same tokens and steps.
        reduce: the reduction of trailing dims for both sides (see :func:`reduce_hidden`).
        normalize: divide each side's steps by their ``Σ|score|`` before subtracting, so that
            methods on different scales compare as shares.
    """
    for what in ("tokens", "target_start", "n_steps", "token_ids"):
        x, y = getattr(a, what), getattr(b, what)
        x, y = (x.tolist(), y.tolist()) if what == "token_ids" else (x, y)
        if x != y:
            raise ValueError(f"Cannot subtract attributions with different {what}: {x} vs {y}")
    if (a.attributions is None) != (b.attributions is None):
        raise ValueError("Cannot subtract: only one of the two attributions has scores")
    x, y = a.scores(reduce, normalize=normalize), b.scores(reduce, normalize=normalize)
    record = {
        "a": a.parameters,
        "b": b.parameters,
        "reduce": [reduce or a.default_reduce, reduce or b.default_reduce],
        "normalize": normalize,
    }
    return type(a)(
        tokens=a.tokens,
        token_ids=a.token_ids,
        target_start=a.target_start,
        attributions=None if x is None or y is None else x - y,
        step_scores={
            k: v - b.step_scores[k] for k, v in a.step_scores.items() if k in b.step_scores
        },
        method=f"{a.method}-{b.method}",
        parameters={"difference": record},
    )
