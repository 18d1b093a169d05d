"""Step functions: one score per generated (or forced) token, from one forward pass.

A step function takes a :class:`StepArgs` (the logits that predict each target token, the
target ids, and optionally a *contrast*) and returns a ``[batch, step]`` tensor. They serve
both as step scores stored next to attributions and as the target function that attribution
methods explain (``attributed_fn``), so they must be differentiable in ``logits``.

Notation, at step t with target token y: p = softmax(logits_t) from the regular input; q =
softmax(contrast_logits_t) from the contrast input (e.g. the same output without context);
y' = the contrast target token (defaults to y). Contrastive functions need a contrast: pass
``contrast_prompts`` (another prompt, same target tokens: q differs from p) and/or
``contrast_targets`` (another token per step, scored after the same forced prefix).
For context attribution (PECoRe) the regular input holds the context, the contrast does not.

Precision: the logits come in the model's dtype; every built-in function takes its softmax,
log-softmax and sums in float32 (float64 for a float64 model, see :mod:`hooklab.precision`) and
returns scores in that dtype, so a bfloat16 or float16 model gives float32 scores.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from hooklab.forward import step_logits
from hooklab.inputs import Batch
from hooklab.precision import reduction_dtype, upcast
from hooklab.registry import Registry

LOG2 = math.log(2.0)


@dataclass(frozen=True)
class StepArgs:
    """Everything a step function may read.

    Attributes:
        model: the ``TransformerBridge`` (for step functions that need extra forward passes).
        batch: the regular prompt+target batch.
        logits: logits that predict each target token (rows of padded steps are arbitrary), in
            the model's dtype: reduce them in float32 (:func:`hooklab.precision.upcast`).
        target_ids: the target token per step.
        step_mask: True for real steps, False for padding.
        contrast_logits: logits of the contrast input, aligned on the same steps, or None.
        contrast_target_ids: contrast target token per step, or None.
    """

    model: object
    batch: Batch | None
    logits: Float[Tensor, "batch step d_vocab"]
    target_ids: Int[Tensor, "batch step"]
    step_mask: Bool[Tensor, "batch step"]
    contrast_logits: Float[Tensor, "batch step d_vocab"] | None = None
    contrast_target_ids: Int[Tensor, "batch step"] | None = None

    @property
    def has_contrast(self) -> bool:
        return self.contrast_logits is not None or self.contrast_target_ids is not None


StepFunction = Callable[..., Float[Tensor, "batch step"]]
STEP_FUNCTIONS: Registry[StepFunction] = Registry(
    "step function", hint="Add your own with hooklab.register_step_function(name, fn)."
)
CONTRASTIVE: set[str] = set()


def register_step_function(
    name: str, fn: StepFunction, *, contrastive: bool = False, overwrite: bool = False
) -> StepFunction:
    """Register ``fn(args: StepArgs, **kwargs) -> [batch, step]`` as step function ``name``.

    Args:
        name: the name used in ``step_scores=[...]`` and ``attributed_fn=...``.
        fn: the function; extra keyword arguments come from ``step_scores_kwargs``.
        contrastive: the function needs a contrast (``contrast_prompts``/``contrast_targets``).
        overwrite: replace an existing function of the same name.
    """
    STEP_FUNCTIONS.register(name, fn, overwrite=overwrite)
    if contrastive:
        CONTRASTIVE.add(name)
    else:
        CONTRASTIVE.discard(name)
    return fn


def list_step_functions() -> list[str]:
    """Return the names of all registered step functions."""
    return STEP_FUNCTIONS.names()


def _pick(values: Float[Tensor, "batch step d_vocab"], ids: Int[Tensor, "batch step"]) -> Tensor:
    """``values[b, t, ids[b, t]]``, upcast to float32 from half precision."""
    return upcast(values.gather(-1, ids[..., None]).squeeze(-1))


def _logprobs(logits: Tensor) -> Tensor:
    """Log-softmax over the vocabulary, computed in float32 (float64 stays)."""
    return torch.log_softmax(logits, dim=-1, dtype=reduction_dtype(logits.dtype))


def _contrast_logits(args: StepArgs) -> Tensor:
    return args.logits if args.contrast_logits is None else args.contrast_logits


def _contrast_ids(args: StepArgs) -> Tensor:
    return args.target_ids if args.contrast_target_ids is None else args.contrast_target_ids


def logit(args: StepArgs) -> Float[Tensor, "batch step"]:
    """Logit of the target token: logits_t[y]."""
    return _pick(args.logits, args.target_ids)


def probability(args: StepArgs, *, logprob: bool = False) -> Float[Tensor, "batch step"]:
    """Probability of the target token, p(y) (or log p(y) with ``logprob=True``)."""
    lp = _pick(_logprobs(args.logits), args.target_ids)
    return lp if logprob else lp.exp()


def entropy(args: StepArgs) -> Float[Tensor, "batch step"]:
    """Entropy of the predicted distribution in nats: H(p) = -sum_v p(v) log p(v)."""
    lp = _logprobs(args.logits)
    return -(lp.exp() * lp).sum(-1)


def crossentropy(args: StepArgs) -> Float[Tensor, "batch step"]:
    """Cross-entropy of the target token in nats: -log p(y)."""
    return -_pick(_logprobs(args.logits), args.target_ids)


def perplexity(args: StepArgs) -> Float[Tensor, "batch step"]:
    """Per-step perplexity: exp(-log p(y)) = 1 / p(y)."""
    return crossentropy(args).exp()


def contrast_logits(args: StepArgs) -> Float[Tensor, "batch step"]:
    """Logit of the contrast target under the contrast input: contrast_logits_t[y']."""
    return _pick(_contrast_logits(args), _contrast_ids(args))


def contrast_prob(args: StepArgs, *, logprob: bool = False) -> Float[Tensor, "batch step"]:
    """Probability of the contrast target under the contrast input: q(y') (log with logprob)."""
    lp = _pick(_logprobs(_contrast_logits(args)), _contrast_ids(args))
    return lp if logprob else lp.exp()


def contrast_logits_diff(args: StepArgs) -> Float[Tensor, "batch step"]:
    """Logit difference (Yin & Neubig, 2022): logits_t[y] - contrast_logits_t[y']."""
    return logit(args) - contrast_logits(args)


def contrast_prob_diff(args: StepArgs) -> Float[Tensor, "batch step"]:
    """Probability difference (Yin & Neubig, 2022): p(y) - q(y').

    With ``contrast_targets`` only, this is P(ŷ) - P(ỹ) after the same prefix, the CCI target
    of PECoRe (Sarti et al., 2024).
    """
    return probability(args) - contrast_prob(args)


def pcxmi(args: StepArgs) -> Float[Tensor, "batch step"]:
    """Pointwise conditional cross-mutual information in bits (Yin et al., 2021; PECoRe eq. 1).

    P-CXMI(y) = -log2( q(y) / p(y) ) = log2 p(y) - log2 q(y), with p from the input with
    context and q from the contrast input without it. Positive when the context makes y likelier.
    """
    lp = _pick(_logprobs(args.logits), args.target_ids)
    lq = _pick(_logprobs(_contrast_logits(args)), args.target_ids)
    return (lp - lq) / LOG2


def kl_divergence(args: StepArgs, *, top_k: int = 0) -> Float[Tensor, "batch step"]:
    """KL divergence in nats between the regular and the contrast distributions (PECoRe).

    KL(p || q) = sum_v p(v) (log p(v) - log q(v)): p with context, q without. With ``top_k`` >
    0, both distributions are renormalised over the k tokens likeliest under q first.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int):
        raise TypeError(
            f"kl_divergence: top_k must be an int, got {type(top_k).__name__}: {top_k!r}."
        )
    if top_k < 0:
        raise ValueError(
            f"kl_divergence: top_k must be an int >= 0 (0 = the whole vocabulary), got {top_k!r}."
        )
    lp, lq = args.logits, _contrast_logits(args)
    if top_k and top_k < lp.shape[-1]:
        keep = lq.topk(top_k, dim=-1).indices
        lp, lq = lp.gather(-1, keep), lq.gather(-1, keep)
    lp, lq = _logprobs(lp), _logprobs(lq)
    return (lp.exp() * (lp - lq)).sum(-1)


def likelihood_ratio(args: StepArgs) -> Float[Tensor, "batch step"]:
    """Likelihood ratio of the target with and without the contrast: p(y) / q(y) (PECoRe)."""
    lp = _pick(_logprobs(args.logits), args.target_ids)
    lq = _pick(_logprobs(_contrast_logits(args)), args.target_ids)
    return (lp - lq).exp()


def in_context_pvi(args: StepArgs) -> Float[Tensor, "batch step"]:
    """In-context pointwise V-usable information in bits (Lu et al., 2023).

    PVI(y) = -log2 q(y) + log2 p(y), q without the in-context examples, p with them. In this
    library's convention (regular = with context) it equals :func:`pcxmi`.
    """
    return pcxmi(args)


def top_p_size(args: StepArgs, *, top_p: float = 0.9) -> Float[Tensor, "batch step"]:
    """Size of the nucleus: the fewest tokens whose probabilities add up to at least ``top_p``."""
    if isinstance(top_p, bool) or not isinstance(top_p, (int, float)):
        raise TypeError(
            f"top_p_size: top_p must be a number, got {type(top_p).__name__}: {top_p!r}."
        )
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p_size: top_p must be a number in (0, 1], got {top_p!r}.")
    dtype = reduction_dtype(args.logits.dtype)  # bfloat16 cannot hold counts above 256
    probs = torch.softmax(args.logits.detach(), dim=-1, dtype=dtype)
    probs = probs.sort(dim=-1, descending=True).values
    before = probs.cumsum(-1) - probs  # mass strictly before each token in sorted order
    return (before < top_p).sum(-1).to(dtype)


def mc_dropout_prob_avg(
    args: StepArgs, *, n_mcd_steps: int = 5, seed: int | None = 0, zscore: bool = False
) -> Float[Tensor, "batch step"]:
    """Mean probability of the target over ``n_mcd_steps`` forward passes with dropout on.

    mean_k p_k(y), p_k from the model in train mode (Monte Carlo dropout; Gal & Ghahramani,
    2016). With ``zscore=True`` returns (p(y) - mean_k p_k(y)) / std_k p_k(y), the value Inseq's
    function of the same name returns. The model's train/eval mode is restored afterwards;
    ``seed`` makes the dropout masks reproducible (None: use the global RNG).
    """
    if isinstance(n_mcd_steps, bool) or not isinstance(n_mcd_steps, int) or n_mcd_steps < 2:
        raise ValueError(
            f"mc_dropout_prob_avg: n_mcd_steps must be an int >= 2, got {n_mcd_steps!r}."
        )
    model = args.model
    was_training = model.training
    generator_state = torch.random.get_rng_state()
    noisy = []
    try:
        if seed is not None:
            torch.manual_seed(seed)
        model.train()
        with torch.no_grad():
            for _ in range(n_mcd_steps):
                logits = step_logits(model, args.batch)
                noisy.append(_pick(_logprobs(logits.to(args.logits.dtype)), args.target_ids).exp())
    finally:
        model.train(was_training)
        if seed is not None:
            torch.random.set_rng_state(generator_state)
    stacked = torch.stack(noisy)
    if zscore:
        return (probability(args) - stacked.mean(0)) / stacked.std(0)
    return stacked.mean(0)


for _fn in (logit, probability, entropy, crossentropy, perplexity, top_p_size, mc_dropout_prob_avg):
    register_step_function(_fn.__name__, _fn)
for _fn in (
    contrast_logits,
    contrast_prob,
    contrast_logits_diff,
    contrast_prob_diff,
    pcxmi,
    kl_divergence,
    likelihood_ratio,
    in_context_pvi,
):
    register_step_function(_fn.__name__, _fn, contrastive=True)
