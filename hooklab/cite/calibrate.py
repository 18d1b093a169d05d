"""Calibrate the CTI threshold of :func:`hooklab.cite.cite` on annotated examples (MIRAGE).

MIRAGE (Qi et al., EMNLP 2024) reports answer attribution with a CTI threshold calibrated on
annotated examples (86.7 % agreement on XOR-AttriQA) next to the per-answer mean + 1 std rule
(83.4 %). :func:`calibrate_cti` does the same:

1. **One PECoRe run per example**, with ``cti_threshold=0``: every answer token's CTI score and
   CCI scores are recorded (:func:`hooklab.cite.cite`). Everything after this is offline
   (:func:`hooklab.cite.cite_from_pecore`); no threshold costs another model run.
2. **Split.** The examples are shuffled with ``random.Random(seed)``; the last
   ``round(heldout_fraction · n)`` (at least 1) are held out, the others calibrate.
3. **Search.** An example's citations change only where the threshold crosses one of its own
   |CTI| scores, so the candidates are every distinct |CTI| score of the calibration examples,
   plus one above them all (no token selected). The picked threshold is the candidate with
   the highest per-sentence agreement with gold on the calibration split (ties: the lowest).
4. **Report** the agreement on the held-out split with the picked threshold and with the
   per-answer rule mean + k·std (k = ``cti_std_threshold``, of the answer's |CTI| scores).

Agreement is :func:`hooklab.cite.evaluate.score_citations`'s: the share of answer sentences
whose cited set equals the gold set.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from hooklab.cite.core import cite, cite_from_pecore
from hooklab.cite.evaluate import score_citations
from hooklab.cite.examples import check_examples
from hooklab.cite.options import CiteOptions
from hooklab.cite.result import CitationResult
from hooklab.pecore.select import selection_threshold


@dataclass(frozen=True)
class Calibration:
    """The calibrated CTI threshold and the agreements it was judged by.

    Attributes:
        threshold: the picked CTI threshold (pass it as ``cti_threshold``).
        calibration_agreement: agreement on the calibration split at ``threshold``.
        heldout_agreement: agreement on the held-out split at ``threshold``.
        heldout_agreement_std: agreement on the held-out split with mean + k·std per answer.
        cti_std_threshold: that k.
        calibration_ids, heldout_ids: 0-based indices of the examples in each split.
        heldout_fraction, seed: how the split was drawn.
    """

    threshold: float
    calibration_agreement: float
    heldout_agreement: float
    heldout_agreement_std: float
    cti_std_threshold: float
    calibration_ids: tuple[int, ...]
    heldout_ids: tuple[int, ...]
    heldout_fraction: float
    seed: int

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-friendly dict."""
        out = asdict(self)
        out["calibration_ids"], out["heldout_ids"] = (
            list(self.calibration_ids),
            list(self.heldout_ids),
        )
        return out

    def to_text(self) -> str:
        """The threshold and both held-out agreements, one per line."""
        k = self.cti_std_threshold
        return "\n".join(
            [
                f"calibrated CTI threshold: {self.threshold:.6g} "
                f"(agreement {self.calibration_agreement:.3f} on {len(self.calibration_ids)} "
                "calibration examples)",
                f"held-out agreement ({len(self.heldout_ids)} examples): calibrated "
                f"{self.heldout_agreement:.3f}, mean + {k:g} std {self.heldout_agreement_std:.3f}",
            ]
        )


def split_examples(n: int, heldout_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded split of ``range(n)`` into (calibration, held-out) indices (see the module doc)."""
    if isinstance(heldout_fraction, bool) or not 0 < heldout_fraction < 1:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction!r}; e.g. 0.3.")
    if n < 2:
        raise ValueError(f"Calibration needs at least 2 examples (one per split), got {n}.")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_held = min(n - 1, max(1, round(heldout_fraction * n)))
    return sorted(order[: n - n_held]), sorted(order[n - n_held :])


def _agreement(predicted: Sequence[Sequence[Sequence[int]]], gold) -> float:
    flat_p = [list(s) for p in predicted for s in p]
    flat_g = [list(s) for g in gold for s in g]
    return score_citations(flat_p, flat_g)["agreement"]


class _Steps:
    """One example's citations as a step function of the threshold (one offline run a step)."""

    def __init__(self, run: CitationResult, options: CiteOptions) -> None:
        scores = sorted(
            {abs(c.score) for c in run.pecore.context_sensitive if math.isfinite(c.score)}
        )
        self.run, self.options, self.scores = run, options, scores
        above = scores[-1] + 1.0 if scores else 1.0  # no finite score selected
        self.citations = [self.at(t) for t in [*scores, above]]

    def at(self, threshold: float) -> list[list[int]]:
        return cite_from_pecore(
            self.run.pecore, self.run.documents, self.options, cti_threshold=threshold
        ).citations

    def __call__(self, threshold: float) -> list[list[int]]:
        """The citations at ``threshold``: those at the lowest own score >= it."""
        return self.citations[bisect.bisect_left(self.scores, threshold)]


def pick_threshold(
    runs: Sequence[CitationResult],
    gold: Sequence[Sequence[Sequence[int]]],
    options: CiteOptions | None = None,
) -> tuple[float, float]:
    """The CTI threshold with the highest agreement on ``runs`` (ties: the lowest), and that
    agreement. ``runs`` come from :func:`hooklab.cite.cite` with ``cti_threshold=0``."""
    opts = options or CiteOptions()
    steps = [_Steps(r, opts) for r in runs]
    candidates = sorted({s for st in steps for s in st.scores})
    candidates.append(candidates[-1] + 1.0 if candidates else 1.0)  # nothing selected
    best = (-1.0, 0.0)
    for t in candidates:
        a = _agreement([st(t) for st in steps], gold)
        if a > best[0]:
            best = (a, t)
    return best[1], best[0]


def std_rule_citations(run: CitationResult, options: CiteOptions, k: float) -> list[list[int]]:
    """Citations with the per-answer threshold mean + k·std of its |CTI| scores."""
    t = selection_threshold(torch.tensor(run.pecore.cti_scores, dtype=torch.float64), k)
    if t is None:
        return [[] for _ in run.sentences]
    return cite_from_pecore(run.pecore, run.documents, options, cti_threshold=t).citations


def calibrate_from_runs(
    runs: Sequence[CitationResult],
    gold: Sequence[Sequence[Sequence[int]]],
    *,
    heldout_fraction: float = 0.3,
    seed: int = 0,
    options: CiteOptions | None = None,
) -> Calibration:
    """:func:`calibrate_cti` on recorded runs (``cti_threshold=0``), without a model."""
    opts = options or CiteOptions()
    if len(runs) != len(gold):
        raise ValueError(f"{len(runs)} runs for {len(gold)} gold annotations; they must match.")
    for i, (r, g) in enumerate(zip(runs, gold, strict=True)):
        if len(r.sentences) != len(g):
            raise ValueError(
                f"Example {i}: the answer has {len(r.sentences)} sentences, gold_documents "
                f"{len(g)} entries ({g!r}); give one per sentence."
            )
    cal, held = split_examples(len(runs), heldout_fraction, seed)
    threshold, cal_agreement = pick_threshold([runs[i] for i in cal], [gold[i] for i in cal], opts)
    held_gold = [gold[i] for i in held]
    picked = [cite_from_pecore(runs[i].pecore, runs[i].documents, opts, cti_threshold=threshold)
              for i in held]  # fmt: skip
    k = opts.cti_std_threshold
    return Calibration(
        threshold=threshold,
        calibration_agreement=cal_agreement,
        heldout_agreement=_agreement([p.citations for p in picked], held_gold),
        heldout_agreement_std=_agreement(
            [std_rule_citations(runs[i], opts, k) for i in held], held_gold
        ),
        cti_std_threshold=k,
        calibration_ids=tuple(cal),
        heldout_ids=tuple(held),
        heldout_fraction=heldout_fraction,
        seed=seed,
    )


def calibrate_cti(
    model,
    examples: Sequence[Mapping[str, Any]],
    *,
    heldout_fraction: float = 0.3,
    seed: int = 0,
    options: CiteOptions | None = None,
    **option_overrides,
) -> Calibration:
    """Pick the CTI threshold that best agrees with annotated examples (see the module doc).

    Args:
        model: a ``TransformerBridge`` from :func:`hooklab.load`.
        examples: annotated examples (:mod:`hooklab.cite.examples`: ``question``,
            ``documents``, ``answer``, ``gold_documents``), e.g. from
            :func:`hooklab.cite.examples.read_examples`.
        heldout_fraction: the share of examples held out (seeded split).
        seed: the seed of the split.
        options: :class:`CiteOptions` (``cti_threshold`` is ignored: the runs record every
            token); ``**option_overrides`` change single fields.

    Returns:
        A :class:`Calibration` (``.to_text()`` prints the threshold and both agreements).

    Example:
        >>> import hooklab, json
        >>> from hooklab.toy_rag import EVAL_EXAMPLES
        >>> model = hooklab.load("toy-rag")
        >>> rows = [json.loads(x) for x in EVAL_EXAMPLES.read_text().splitlines()[:4]]
        >>> hooklab.cite.calibrate_cti(model, rows).threshold >= 0
        True
    """
    opts = (options or CiteOptions()).replace(**option_overrides)
    if not examples:
        raise ValueError("examples is empty; calibration needs annotated examples.")
    check_examples(examples)
    split_examples(len(examples), heldout_fraction, seed)  # checked before any model run
    runs = [
        cite(model, ex["question"], list(ex["documents"]), answer=ex["answer"],
             options=opts, cti_threshold=0.0)
        for ex in examples
    ]  # fmt: skip
    gold = [ex["gold_documents"] for ex in examples]
    return calibrate_from_runs(
        runs, gold, heldout_fraction=heldout_fraction, seed=seed, options=opts
    )
