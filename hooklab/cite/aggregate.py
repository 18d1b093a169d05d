"""From a PECoRe run to citations (MIRAGE, Qi et al., EMNLP 2024): the pure, model-free part.

Steps, all on the recorded scores of a :class:`~hooklab.pecore.PecoreResult`:

1. **Sentences.** The answer is split with :func:`split_sentences`: a sentence ends after
   ``.``, ``!`` or ``?`` followed by whitespace (or the end of the answer), or at a line break.
   Each answer token belongs to the sentence holding its first non-space character.
2. **CTI.** An answer token is selected when its |CTI score| is at least the threshold: a
   calibrated ``cti_threshold``, or mean + k·std of the answer's CTI scores (population std,
   over the candidate tokens: what :func:`hooklab.pecore.select.selection_threshold` computes).
3. **CCI filter.** For each selected token, its CCI scores over the document tokens keep only
   the top ``k`` (``cci_filter="top_k"``) or those within the top ``p`` % of the score range,
   ``s >= max - p/100 · (max - min)`` (``cci_filter="top_p"``, MIRAGE's default p = 5);
   the other scores become 0.
4. **Aggregation.** A sentence's mass on a document is the sum of the filtered scores of its
   selected tokens over that document's tokens (its template, e.g. ``[2]``, included; the
   separators belong to no document). It cites the documents with positive mass, ranked by
   mass, at most ``max_citations``. A sentence without a selected token cites nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Character spans ``[start, end)`` of the sentences of ``text`` (see the module doc)."""
    spans, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        spans.append((start, m.start()))
        start = m.end()
    spans.append((start, len(text)))
    out = []
    for a, b in spans:  # strip surrounding whitespace; drop empty pieces
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if b > a:
            out.append((a, b))
    return out


def token_spans(tokens: Sequence[str], text: str) -> list[tuple[int, int]]:
    """Character span of each token in ``text``, found left to right.

    Tokens are matched by their text without surrounding whitespace (decoded tokens may show a
    leading space the text also has, or not); a token with no visible text (whitespace, a
    special token) gets an empty span at the current position.
    """
    spans, cursor = [], 0
    for tok in tokens:
        piece = tok.strip()
        at = text.find(piece, cursor) if piece else -1
        if at < 0 or (piece and text[cursor:at].strip()):  # skipped visible text: not ours
            spans.append((cursor, cursor))
            continue
        spans.append((at, at + len(piece)))
        cursor = at + len(piece)
    return spans


def owners(
    spans: Sequence[tuple[int, int]], regions: Sequence[tuple[int, int]]
) -> list[int | None]:
    """For each span, the index of the region holding its start (None: in no region)."""
    out: list[int | None] = []
    for a, b in spans:
        hit = [i for i, (s, e) in enumerate(regions) if s <= a < e and b > a]
        out.append(hit[0] if hit else None)
    return out


def filter_scores(
    scores: Sequence[float], *, top_p: float | int | None, top_k: int | None
) -> Float[Tensor, "pos"]:
    """Keep the top ``top_k`` scores, or those within the top ``top_p`` % of the range; zero
    the others (non-finite scores are dropped too)."""
    s = torch.as_tensor(list(scores), dtype=torch.float64)
    ok = torch.isfinite(s)
    if not ok.any():
        return torch.zeros_like(s)
    s = torch.where(ok, s, torch.zeros_like(s))
    if top_k is not None:
        order = torch.argsort(torch.where(ok, s, torch.full_like(s, -torch.inf)), descending=True)
        keep = torch.zeros_like(ok)
        keep[order[:top_k]] = True
        keep &= ok
    else:
        hi, lo = s[ok].max(), s[ok].min()
        keep = ok & (s >= hi - (top_p / 100.0) * (hi - lo))
    return torch.where(keep, s, torch.zeros_like(s))


def rank_documents(mass: Sequence[float], max_citations: int | None) -> list[int]:
    """Documents with positive mass, largest first (ties: lower id first), at most N."""
    ranked = sorted((i for i, m in enumerate(mass) if m > 0), key=lambda i: (-mass[i], i))
    return ranked if max_citations is None else ranked[:max_citations]
