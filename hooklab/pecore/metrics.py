"""Plausibility metrics of PECoRe selections against gold annotations (Sarti et al., 2024)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence


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
