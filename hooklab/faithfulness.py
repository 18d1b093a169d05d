"""Faithfulness of token attributions: soft sufficiency and comprehensiveness (Soft-NS, Soft-NC).

The protocol of the ReAGent paper (Zhao & Shan, 2024), after Zhao & Aletras (2023),
"Incorporating Attribution Importance for Improving Faithfulness Metrics". For step t with
target y, tokens x and importance s_i in [0, 1] (each step's scores min-max normalised over the
tokens it sees):

- soft sufficiency: keep each embedding element of token i with probability s_i (zero it
  otherwise), S = 1 - max(0, p(y|x) - p(y|x'));
- soft comprehensiveness: keep each element with probability 1 - s_i, C = max(0, p(y|x) -
  p(y|x'));
- normalised against the all-masked input 0 (every token embedding zeroed):
  Soft-NS = (S - S(x, 0)) / (1 - S(x, 0)), Soft-NC = C / (1 - S(x, 0));
- compared with random importance (s_i ~ U(0, 1)): log(mean metric / mean random metric),
  above 0 when the attribution beats chance.

BOS is kept intact in every perturbed input (it is no evidence, and models break without it).
Masks are drawn from a ``torch.Generator`` seeded with ``seed``, per sequence.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from hooklab.attribution import AttributionOutput, SequenceAttribution
from hooklab.forward import step_logits
from hooklab.inputs import bos_token_id, make_batch, pad_token_id
from hooklab.output.provenance import describe_model

METRICS = ("soft_ns", "soft_nc")


@dataclass(frozen=True)
class FaithfulnessResult:
    """Soft-NS and Soft-NC of an attribution, per sequence and step, and against random.

    Attributes:
        method: the attribution method evaluated.
        scores: per metric name (``soft_ns``, ``soft_nc`` and their ``random_`` baselines),
            one ``[step]`` tensor per sequence.
        parameters: seed, samples and normalisation used.
    """

    method: str
    scores: Mapping[str, tuple[Tensor, ...]]  # each [step]
    parameters: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        lengths = {k: [v.shape for v in seqs] for k, seqs in self.scores.items()}
        if len({str(v) for v in lengths.values()}) > 1:
            raise ValueError(f"Every metric needs the same [step] shapes per sequence: {lengths}")
        object.__setattr__(self, "scores", MappingProxyType(dict(self.scores)))
        object.__setattr__(self, "parameters", MappingProxyType(dict(self.parameters)))

    def mean(self, metric: str) -> float:
        """Mean of ``metric`` over every step of every sequence."""
        return float(torch.cat([s.flatten() for s in self.scores[metric]]).double().mean())

    def log_ratio(self, metric: str) -> float:
        """log(mean metric / mean of the random baseline); > 0 beats random importance."""
        ours, rand = self.mean(metric), self.mean(f"random_{metric}")
        return math.log(ours / rand) if ours > 0 and rand > 0 else math.nan

    def summary(self) -> dict[str, float]:
        """Means, random means and log-ratios of Soft-NS and Soft-NC."""
        out = {}
        for m in METRICS:
            out |= {m: self.mean(m), f"random_{m}": self.mean(f"random_{m}")}
            out[f"log_ratio_{m}"] = self.log_ratio(m)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "parameters": dict(self.parameters),
            "summary": self.summary(),
            "scores": {k: [v.tolist() for v in seqs] for k, seqs in self.scores.items()},
        }


def normalise(scores: Float[Tensor, "step pos"], seen: Tensor) -> Float[Tensor, "step pos"]:
    """Min-max normalise each step's scores over the tokens it sees (0 elsewhere)."""
    lo = scores.masked_fill(~seen, math.inf).amin(-1, keepdim=True)
    hi = scores.masked_fill(~seen, -math.inf).amax(-1, keepdim=True)
    span = (hi - lo).clamp(min=1e-12)
    return ((scores - lo) / span).masked_fill(~seen, 0.0).nan_to_num()


def _target_probs(model, batch, embeds) -> Float[Tensor, "batch step"]:
    probs = step_logits(model, batch, embeds).float().softmax(-1)
    return probs.gather(-1, batch.target_ids[..., None])[..., 0]


@torch.no_grad()
def sequence_metrics(
    model, seq: SequenceAttribution, importance: Float[Tensor, "step pos"], gen: torch.Generator
) -> dict[str, Float[Tensor, "step"]]:
    """Soft-NS and Soft-NC of each step of one sequence, for ``importance`` in [0, 1]."""
    ids = seq.token_ids.tolist()
    start, T, L = seq.target_start, seq.n_steps, len(ids)
    dev = model.cfg.device
    batch = make_batch([ids[:start]], [ids[start:]], pad_id=pad_token_id(model), device=dev)
    x = model.embed(batch.tokens)  # [1, pos, d_model]
    p_full = _target_probs(model, batch, x)[0]  # [step]
    keep_bos = bos_token_id(model) is not None and ids[0] == bos_token_id(model)
    masked = x.clone()
    masked[:, int(keep_bos) :] = 0.0
    p_zero = _target_probs(model, batch, masked)[0]
    # one row per (sufficiency | comprehensiveness, step): step t perturbs what it sees
    imp = importance.to(dev).float()
    if keep_bos:
        imp = imp.clone()
        imp[:, 0] = 1.0
    u = torch.rand(2, T, L, x.shape[-1], generator=gen).to(dev)
    keep = torch.stack([u[0] < imp[..., None], u[1] < 1 - imp[..., None]])  # [2, step, pos, d]
    if keep_bos:
        keep[..., 0, :] = True
    rows = batch.take([0] * 2 * T)
    probs = _target_probs(model, rows, x * keep.reshape(2 * T, L, -1).to(x.dtype))
    step = torch.arange(T, device=dev)
    p_suff, p_comp = probs.reshape(2, T, T)[:, step, step]
    suff = 1 - (p_full - p_suff).clamp(min=0)
    suff_zero = 1 - (p_full - p_zero).clamp(min=0)
    denom = (1 - suff_zero).clamp(min=1e-6)
    return {
        "soft_ns": ((suff - suff_zero) / denom).cpu(),
        "soft_nc": ((p_full - p_comp).clamp(min=0) / denom).cpu(),
    }


def check_evaluable(model, output: object, seed: object) -> None:
    """Raise a clear error unless ``output`` can be evaluated on ``model`` with ``seed``.

    Refused: anything but a non-empty :class:`AttributionOutput`; an output another model
    made (its recorded name, architecture or config digest differs from ``model``'s); an
    encoder–decoder output (Soft-NS / Soft-NC would have to perturb the source too: not
    supported yet); an aggregated output (merged words keep one token id, so the model would
    not run on the tokens that were attributed: evaluate before aggregating); a seed that is
    not a non-negative int.
    """
    if not isinstance(output, AttributionOutput):
        raise TypeError(
            "evaluate_faithfulness needs an AttributionOutput from hooklab.attribute, got "
            f"{type(output).__name__}."
        )
    if len(output) == 0:
        raise ValueError("evaluate_faithfulness got an AttributionOutput with no sequences.")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise TypeError(f"seed must be a non-negative int, got {type(seed).__name__}: {seed!r}.")
    _check_same_model(model, output)
    if any(seq.source_tokens is not None for seq in output):
        raise NotImplementedError(
            "evaluate_faithfulness does not support encoder-decoder outputs yet (their source "
            "attributions would need the source embeddings perturbed too); evaluate a "
            "decoder-only model's output."
        )
    aggregated = [i for i, seq in enumerate(output) if "aggregation" in seq.parameters]
    if aggregated:
        raise ValueError(
            f"Sequence {aggregated[0]} is aggregated: its merged tokens keep one token id, so "
            "the model would not run on the tokens that were attributed. Evaluate the output "
            "before aggregating: evaluate_faithfulness(model, out), then out.aggregate(...)."
        )


def _check_same_model(model, output: AttributionOutput) -> None:
    """Raise ValueError when the output records another model than ``model``."""
    recorded, given = dict(output.model or {}), dict(describe_model(model))
    keys = [k for k in ("name_or_path", "architecture", "config_digest") if k in recorded]
    differ = [k for k in keys if k in given and recorded[k] != given[k]]
    if differ:
        theirs = ", ".join(f"{k}={recorded[k]!r}" for k in differ)
        ours = ", ".join(f"{k}={given[k]!r}" for k in differ)
        raise ValueError(
            f"This output was made by another model ({theirs}) than the one given ({ours}). "
            "Pass the model that made the attributions."
        )


def evaluate_faithfulness(
    model, attribution_output: Any, *, seed: Any = 0, reduce: str | None = None
) -> FaithfulnessResult:
    """Soft-NS and Soft-NC of each step's attribution, and of random importance.

    Args:
        model: the model the attributions explain.
        attribution_output: from :func:`hooklab.attribute` (token scores per step).
        seed: seed of the Bernoulli masks and of the random baseline (a non-negative int;
            typed ``Any`` so that a wrong value reaches the check that names it).
        reduce: how hidden-size scores are reduced to one per token (the method's default).

    Returns:
        A :class:`FaithfulnessResult`; ``.summary()`` gives the means and log-ratios.

    Example:
        >>> import hooklab
        >>> model = hooklab.load("toy")
        >>> out = hooklab.attribute(model, "George was sick yesterday. His colleagues asked "
        ...     "him to come", " to the hospital.", method="occlusion")
        >>> res = hooklab.evaluate_faithfulness(model, out)
        >>> sorted(res.summary())[:2]
        ['log_ratio_soft_nc', 'log_ratio_soft_ns']
    """
    check_evaluable(model, attribution_output, seed)
    scores: dict[str, list[Tensor]] = {k: [] for k in (*METRICS, *(f"random_{m}" for m in METRICS))}
    method = str(attribution_output[0].method)
    for i, seq in enumerate(attribution_output):
        token_scores = seq.scores(reduce)
        if token_scores is None:
            raise ValueError(f"Sequence {i} has no attributions (method {seq.method!r}).")
        seen = ~token_scores.isnan()
        gen = torch.Generator().manual_seed(seed + i)
        ours = sequence_metrics(model, seq, normalise(token_scores, seen), gen)
        rand = torch.rand(token_scores.shape, generator=gen).masked_fill(~seen, 0.0)
        base = sequence_metrics(model, seq, rand, gen)
        for m in METRICS:
            scores[m].append(ours[m])
            scores[f"random_{m}"].append(base[m])
    params = {"seed": seed, "reduce": reduce, "normalise": "minmax", "keep_bos": True}
    return FaithfulnessResult(method, {k: tuple(v) for k, v in scores.items()}, params)


def random_attribution(output: AttributionOutput, seed: int = 0) -> AttributionOutput:
    """The same sequences with U(0, 1) token scores where each step sees (a chance baseline)."""
    gen = torch.Generator().manual_seed(seed)
    seqs = []
    for seq in output:
        cols = torch.arange(len(seq.tokens))[None, :]
        seen = cols < seq.target_start + torch.arange(seq.n_steps)[:, None]  # [step, pos]
        rand = torch.rand(seen.shape, generator=gen).masked_fill(~seen, math.nan)
        params = {**seq.parameters, "method": "random", "reduce": "l2"}
        seqs.append(seq.with_(attributions=rand, method="random", parameters=params))
    return AttributionOutput(tuple(seqs), output.info, model=output.model)


def compare_methods(
    model,
    prompts: list[str],
    targets: list[str],
    methods: Mapping[str, Mapping[str, Any]],
    *,
    seed: int = 0,
    batch_size: int = 8,
) -> dict[str, FaithfulnessResult]:
    """Attribute ``targets`` with each method (name -> options) and evaluate faithfulness.

    The name ``"random"`` evaluates uniform random scores (the chance level, log-ratio ~ 0).
    """
    from hooklab.attribute import attribute

    results: dict[str, FaithfulnessResult] = {}
    for name, options in methods.items():
        if name == "random":
            ref = attribute(model, prompts, targets, batch_size=batch_size)
            out = random_attribution(ref, seed + 1)
        else:
            out = attribute(model, prompts, targets, method=name, batch_size=batch_size, **options)
        results[name] = evaluate_faithfulness(model, out, seed=seed)
    return results


def plot_comparison(results: Mapping[str, FaithfulnessResult]):
    """Bar chart of Soft-NS and Soft-NC log-ratios against random importance; returns a Figure.

    In the style of :mod:`hooklab.output.style` (double-column width, TrueType fonts in PDF).
    """
    from hooklab.output.style import DOUBLE_COLUMN, new_figure, paper_style

    names = list(results)
    with paper_style():
        fig = new_figure((DOUBLE_COLUMN, 2.6))
        ax = fig.add_subplot()
        x = torch.arange(len(names)).numpy()
        for k, (metric, label) in enumerate([("soft_ns", "Soft-NS"), ("soft_nc", "Soft-NC")]):
            values = [results[n].log_ratio(metric) for n in names]
            ax.bar(x + (k - 0.5) * 0.38, values, width=0.38, label=label)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(x, names, rotation=30, ha="right")
        ax.set_ylabel("log(metric / random)")
        ax.set_title("Faithfulness against random importance (higher is better)")
        ax.legend()
    return fig
