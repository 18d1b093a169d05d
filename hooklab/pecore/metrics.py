"""Plausibility metrics of PECoRe selections against gold annotations (Sarti et al., 2024)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hooklab.pecore.result import PecoreResult


def f1(selected: Sequence[int], gold: Sequence[int]) -> float:
    """F1 of a selected index set against a gold set (1.0 when both are empty)."""
    s, g = set(selected), set(gold)
    if not s and not g:
        return 1.0
    tp = len(s & g)
    if tp == 0:
        return 0.0
    precision, recall = tp / len(s), tp / len(g)
    return 2 * precision * recall / (precision + recall)


def auprc(scores: Sequence[float], gold: Sequence[int]) -> float | None:
    """Average precision of ranking by |score| (None when there is no gold index).

    AP = mean over gold items of the precision at the rank where each is retrieved; ties are
    broken by position. NaN scores rank last.
    """
    g = set(gold)
    if not g:
        return None
    key = [abs(x) if x is not None and math.isfinite(x) else -math.inf for x in scores]
    order = sorted(range(len(key)), key=lambda i: (-key[i], i))
    hits, total = 0, 0.0
    for rank, i in enumerate(order, start=1):
        if i in g:
            hits += 1
            total += hits / rank
    return total / len(g)


def top1(scores: Sequence[float], gold: Sequence[int]) -> float | None:
    """1.0 if the highest |score| is a gold index, else 0.0 (None without gold)."""
    if not gold or not scores:
        return None
    key = [abs(x) if x is not None and math.isfinite(x) else -math.inf for x in scores]
    return 1.0 if max(range(len(key)), key=lambda i: (key[i], -i)) in set(gold) else 0.0


def word_indices(tokens: Sequence[str], words: Sequence[str]) -> list[int]:
    """Indices of the tokens that overlap a whole-word occurrence of any of ``words``."""
    text = "".join(tokens)
    starts, pos = [], 0
    for tok in tokens:
        starts.append(pos)
        pos += len(tok)
    hits = set()
    for word in words:
        for m in re.finditer(rf"(?<!\w){re.escape(word.strip())}(?!\w)", text):
            for i, (a, tok) in enumerate(zip(starts, tokens, strict=True)):
                if a < m.end() and a + len(tok) > m.start():
                    hits.add(i)
    return sorted(hits)


def mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def _gold(
    ex: dict[str, Any], key: str, words_key: str, tokens: tuple[str, ...], side: str
) -> list[int] | None:
    """Gold indices from ``key`` (token indices) or ``words_key``, checked against ``tokens``."""
    if ex.get(key) is not None:
        gold = ex[key]
        ok = isinstance(gold, list) and all(
            isinstance(i, int) and not isinstance(i, bool) for i in gold
        )
        if not ok:
            raise ValueError(f"{key} must be a list of int token indices, got {gold!r}.")
        bad = [i for i in gold if not 0 <= i < len(tokens)]
        if bad:
            raise ValueError(
                f"{key} has indices {bad} outside the {len(tokens)} {side} tokens "
                f"(0..{len(tokens) - 1}): {list(tokens)}."
            )
        return gold
    words = ex.get(words_key)
    if words is None:
        return None
    if not isinstance(words, list) or not all(isinstance(w, str) and w.strip() for w in words):
        raise ValueError(f"{words_key} must be a list of non-empty strings, got {words!r}.")
    missing = [w for w in words if not word_indices(tokens, [w])]
    if missing:
        raise ValueError(
            f"gold words {missing} do not occur as whole words in the {side} text "
            f"{''.join(tokens)!r}."
        )
    return word_indices(tokens, words)


def gold_metrics(result: PecoreResult, ex: dict[str, Any]) -> dict[str, Any] | None:
    """Per-example CTI/CCI plausibility: macro-F1 of selections, AUPRC of scores, top-1.

    CCI is judged on the selected tokens that are gold context-sensitive, separately for the
    input context (``cci_*``) and the output context (``cci_output_*``).
    """
    gold_t = _gold(
        ex,
        "gold_context_sensitive",
        "gold_context_sensitive_words",
        result.output_current_tokens,
        "output_current",
    )
    gold_cues = {
        "input": _gold(
            ex, "gold_cues", "gold_cue_words", result.input_context_tokens, "input_context"
        ),
        "output": _gold(
            ex,
            "gold_output_cues",
            "gold_output_cue_words",
            result.output_context_tokens,
            "output_context",
        ),
    }
    if gold_t is None and all(g is None for g in gold_cues.values()):
        return None
    out: dict[str, Any] = {}
    if gold_t is not None:
        selected = [c.index for c in result.context_sensitive]
        out["cti_f1"] = f1(selected, gold_t)
        out["cti_auprc"] = auprc(result.cti_scores, gold_t)
    judged = [c for c in result.context_sensitive if gold_t is None or c.index in gold_t]
    for side, gold in gold_cues.items():
        if gold is None:
            continue
        name = "cci" if side == "input" else "cci_output"
        scores = [getattr(c, f"{side}_context_scores") for c in judged]
        cues = [[q.index for q in c.cues if q.side == side] for c in judged]
        out[f"{name}_f1"] = mean([f1(chosen, gold) for chosen in cues])
        out[f"{name}_auprc"] = mean([auprc(s, gold) for s in scores])
        out[f"{name}_top1"] = mean([top1(s, gold) for s in scores])
    return out
