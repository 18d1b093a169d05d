"""ReAGent (Zhao & Shan, 2024): recursive attribution by replacing tokens with plausible ones.

"ReAGent: A Model-agnostic Feature Attribution Method for Generative Language Models"
(arXiv:2402.00794). For each step t, ``num_probes`` probes each hold importance logits s over
the tokens step t sees, starting from U(0, 1). A probe step:

1. replace a random ``replacing_ratio`` of the tokens (set R) by plausible alternatives
   (:mod:`hooklab.methods.replacements`) and measure Δ = F_t(x) - F_t(x with R replaced);
2. update s_j += logit(0.5 + 0.5·Δ) for j in R and s_j += logit(0.5 - 0.5·Δ) for the kept j
   (raise what hurt when replaced, lower what was kept);
3. keep the ``keep_top_n`` tokens of highest s (or the top ``keep_ratio``), replace all others
   (``invert_keep``: replace the top ones), and stop the probe once the target token is in the
   model's top ``stopping_condition_top_k`` predictions. (A forced target that the model ranks
   below k on the whole input stops once it regains that rank: the kept tokens then predict it
   as well as the whole input does. Inseq would probe until ``max_probe_steps``.)

The importance of a probe is softmax(s) over the tokens the step sees; the result is the mean
over the probes that stopped, or over all probes (with a warning) where none did. BOS is never
replaced and scores 0. F_t is the attributed function (ReAGent uses the target probability;
Δ is clipped to (-1, 1)).

Encoder–decoder models (Marian, BART, T5): the tokens a step sees are the source tokens and the
decoder-input tokens before its target; probes replace both, except the source's special tokens
(``</s>``...) and the decoder start token, which score 0, so each step's scores over
``source_attributions`` and ``attributions`` together sum to 1. With ``replacements="model"``
the decoder side draws from the model's own next-token predictions and the source side, which
the decoder cannot predict, uniformly from the non-special tokens
(:mod:`hooklab.methods.reagent_inputs`).

Batching: every (example, probe, step) runs at once, and a stopped one is no longer computed.
A step sees only its prefix, so one randomly replaced copy of the whole input per probe
serves step 1 of every step's probe (restricted to its prefix it is a random replacement of that
prefix); the stopping check differs per step and runs one prefix per active (probe, step).
Random draws come from a ``torch.Generator`` per example seeded with ``seed`` and have fixed
sizes per example, so results do not depend on the other examples of the batch.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from hooklab.forward import step_logits
from hooklab.inputs import make_batch, pad_token_id
from hooklab.methods.base import MethodResult, register_method
from hooklab.methods.reagent_inputs import input_replacement_probs, replaceable, with_input_ids
from hooklab.methods.replacements import sample
from hooklab.options import NonNegativeInt, OpenRatio, PositiveInt, Ratio, Seed

if TYPE_CHECKING:
    from hooklab.inputs import Batch
    from hooklab.methods.base import AttributedFn

EPS = 1e-6


def update_logits(
    logits: Float[Tensor, "*batch pos"],
    replaced: Bool[Tensor, "*batch pos"],
    delta: Float[Tensor, "*batch"],
) -> Float[Tensor, "*batch pos"]:
    """ReAGent's update: s + logit(0.5 ± 0.5·Δ), + for replaced tokens, - for kept ones."""
    signed = torch.where(replaced, delta[..., None], -delta[..., None])
    return logits + torch.logit((0.5 + 0.5 * signed).clamp(EPS, 1 - EPS))


def target_rank(
    logits: Float[Tensor, "batch step d_vocab"], targets: Int[Tensor, "batch step"]
) -> Int[Tensor, "batch step"]:
    """Rank of each target among the predictions (1 = top)."""
    target = logits.gather(-1, targets[..., None])
    return (logits > target).sum(-1) + 1


def _prefix_batch(model, batch: Batch, tokens, b, t) -> Batch:
    """Rows ending at target token ``t[i]`` of example ``b[i]`` (prefix = ``tokens[i]``)."""
    starts = [batch.target_start(i) for i in range(batch.size)]
    b_l, t_l, rows = b.tolist(), t.tolist(), tokens.tolist()
    prompts = [row[batch.pad_lengths[i] : starts[i] + s] for row, i, s in zip(rows, b_l, t_l)]
    targets = [[int(batch.tokens[i, starts[i] + s])] for i, s in zip(b_l, t_l)]
    return make_batch(prompts, targets, pad_id=pad_token_id(model), device=tokens.device)


def _check_logits(model, batch: Batch, ids, b, t) -> Float[Tensor, "batch step d_vocab"]:
    """Logits predicting target token ``t[i]`` of example ``b[i]`` from input ids ``ids[i]``
    (one step per row).

    Decoder-only: one prefix per row. Encoder–decoder: the whole (right-padded) decoder input,
    whose causal mask hides the tokens after the step, and the step's row of the logits.
    """
    if not batch.encoder_decoder:
        return step_logits(model, _prefix_batch(model, batch, ids, b, t))
    logits = step_logits(model, with_input_ids(batch.take(b), ids))
    return logits[torch.arange(len(b), device=ids.device), t][:, None]


@register_method("reagent", kind="perturbation", encoder_decoder=True)
@torch.no_grad()
def reagent(
    model,
    batch: Batch,
    *,
    attributed_fn: AttributedFn,
    keep_top_n: NonNegativeInt = 5,
    keep_ratio: Ratio | None = None,
    invert_keep: bool = False,
    stopping_condition_top_k: PositiveInt = 3,
    replacing_ratio: OpenRatio = 0.3,
    max_probe_steps: PositiveInt = 3000,
    num_probes: PositiveInt = 16,
    replacements: object = "model",
    seed: Seed = 0,
) -> MethodResult:
    """ReAGent importance ``[batch, step, pos]`` (rows sum to 1 over the tokens a step sees;
    encoder–decoder: over the input positions, source then decoder).

    Args:
        keep_top_n: tokens kept (not replaced) in the stopping check; 0 keeps none (the check
            then replaces every token it may), a non-negative int. Ignored with ``keep_ratio``.
        keep_ratio: when set, keep this fraction of the tokens instead (rounded up).
        invert_keep: replace the top tokens and keep the others in the stopping check.
        stopping_condition_top_k: a probe stops once the target is in the top k predictions.
        replacing_ratio: fraction of tokens replaced at random in each probe step.
        max_probe_steps: probe steps at most.
        num_probes: probes per step; the result is their mean.
        replacements: ``"model"`` (the attributed model's predictions), ``"uniform"``, or a
            hooklab model with the same tokenizer (causal or masked LM; on encoder–decoder
            models an encoder–decoder one). Source tokens of encoder–decoder models are always
            drawn uniformly from the non-special tokens
            (:func:`~hooklab.methods.reagent_inputs.input_replacement_probs`).
        seed: seed of the random draws (a non-negative int).

    The extra ``reagent_converged`` holds the fraction of probes that stopped, per step.
    """
    T, P, dev = batch.n_steps, num_probes, batch.tokens.device
    slots = replaceable(model, batch)  # [batch, pos]
    sees = batch.visible & slots[:, None]  # [batch, step, pos]
    n_sees = sees.sum(-1)  # [batch, step]
    n_keep = n_sees.clamp(max=keep_top_n)
    if keep_ratio is not None:
        n_keep = (n_sees * keep_ratio).ceil().long()
    cdfs = input_replacement_probs(model, batch, replacements).cumsum(-1)  # [batch, pos, d_vocab]
    draws = _Draws(batch, slots, cdfs, P, seed)
    clean = step_logits(model, batch)
    f_clean = attributed_fn(model, batch, clean)  # [batch, step]
    # a probe stops once the kept tokens rank the target within the top k; a forced target the
    # model ranks lower on the whole input needs only reach that rank again
    targets = batch.target_ids
    need = torch.maximum(target_rank(clean, targets), torch.tensor(stopping_condition_top_k))

    logits = draws.uniform(steps=True)  # [batch, probe, step, pos]
    stopped = torch.zeros(batch.size, P, T, dtype=torch.bool, device=dev)
    done = (n_sees == 0)[:, None, :].expand(batch.size, P, T).clone()
    for _ in range(max_probe_steps):
        active = ~(done | stopped)
        if not active.any():
            break
        # fixed-size draws per example, whatever is still active: [batch, probe, (step,) pos]
        u_mask, alt = draws.uniform(steps=False), draws.tokens(steps=False)
        alt_stop = draws.tokens(steps=True)
        # 1. one randomly replaced copy per (example, probe) serves all its active steps
        chosen = (u_mask < replacing_ratio) & slots[:, None]  # [batch, probe, pos]
        _update_logits(model, batch, attributed_fn, logits, active, sees, chosen, alt, f_clean)
        # 2. stopping check: keep the top tokens of each active (example, probe, step)
        sb, sp, st = active.nonzero(as_tuple=True)
        top = _top_tokens(logits[sb, sp, st], sees[sb, st], n_keep[sb, st])
        swap = sees[sb, st] & (top if invert_keep else ~top)
        probe = torch.where(swap, alt_stop[sb, sp, st], batch.input_ids[sb])
        rank = target_rank(_check_logits(model, batch, probe, sb, st), targets[sb, st, None])
        stopped[sb, sp, st] = rank[:, 0] <= need[sb, st]
    return _result(logits, stopped, sees, n_sees, batch, max_probe_steps,
                   stopping_condition_top_k)  # fmt: skip


class _Draws:
    """Random draws of each example from its own ``torch.Generator`` (seeded with ``seed``),
    of fixed sizes per example, so results do not depend on the other examples of the batch."""

    def __init__(self, batch: Batch, slots: Tensor, cdfs: Tensor, probes: int, seed: int):
        self.batch, self.cdfs, self.probes = batch, cdfs, probes
        self.idx = [slots[b].nonzero()[:, 0] for b in range(batch.size)]  # replaceable positions
        self.gens = [torch.Generator().manual_seed(seed) for _ in range(batch.size)]

    def _one(self, b: int, steps: bool) -> Tensor:
        """U(0, 1) draws [probe, (step,) pos] of example b: its own sizes, padded to the batch's."""
        P, T, W = self.probes, self.batch.n_steps, self.batch.input_width
        idx, n = self.idx[b].cpu(), len(self.idx[b])
        if steps:
            out = torch.zeros(P, T, W)
            T_b = self.batch.target_lengths[b]
            out[:, :T_b, idx] = torch.rand(P, T_b, n, generator=self.gens[b])
        else:
            out = torch.zeros(P, W)
            out[:, idx] = torch.rand(P, n, generator=self.gens[b])
        return out.to(self.batch.tokens.device)

    def _tokens(self, b: int, steps: bool) -> Tensor:
        """Replacement tokens [probe, (step,) pos] of example b (originals where not replaced)."""
        u = self._one(b, steps)
        idx = self.idx[b]
        out = self.batch.input_ids[b].expand(*u.shape).clone()
        out[..., idx] = sample(self.cdfs[b, idx], u[..., idx])
        return out

    def uniform(self, steps: bool) -> Tensor:
        """U(0, 1) draws ``[batch, probe, (step,) pos]``, example by example."""
        return torch.stack([self._one(b, steps) for b in range(self.batch.size)])

    def tokens(self, steps: bool) -> Tensor:
        """Replacement tokens ``[batch, probe, (step,) pos]``, example by example."""
        return torch.stack([self._tokens(b, steps) for b in range(self.batch.size)])


def _update_logits(model, batch, attributed_fn, logits, active, sees, chosen, alt, f_clean):
    """Step 1 of every active probe, in place on ``logits``: one randomly replaced copy per
    (example, probe) (``chosen`` positions replaced by ``alt``) serves all its active steps,
    scored against the original targets."""
    rb, rp = active.any(-1).nonzero(as_tuple=True)
    replaced = chosen[rb, rp]
    rows = batch.take(rb)
    perturbed = with_input_ids(rows, torch.where(replaced, alt[rb, rp], rows.input_ids))
    f_rows = attributed_fn.take(rb)(model, rows, step_logits(model, perturbed))
    n = f_rows.shape[1]  # the rows' longest target
    delta = (f_clean[rb, :n] - f_rows).nan_to_num().clamp(-1, 1).to(logits.dtype)
    old = logits[rb, rp, :n]
    upd = update_logits(old, replaced[:, None].expand_as(old), delta)
    apply = active[rb, rp, :n, None] & sees[rb, :n]
    logits[rb, rp, :n] = torch.where(apply, upd, old)


def _top_tokens(score: Tensor, sees: Tensor, n_keep: Tensor) -> Tensor:
    """``[row, pos]`` True for the ``n_keep`` highest-scored positions a row sees."""
    rank = score.masked_fill(~sees, -math.inf).argsort(-1, descending=True).argsort(-1)
    return (rank < n_keep[:, None]) & sees


def _result(logits, stopped, sees, n_sees, batch, max_probe_steps, top_k) -> MethodResult:
    """The mean importance over the probes that stopped (all probes where none did, with a
    warning) and the extra ``reagent_converged``."""
    P = logits.shape[1]
    importance = logits.masked_fill(~sees[:, None], -math.inf).softmax(-1).nan_to_num()
    converged = stopped.sum(1)  # [batch, step]
    weights = torch.where(converged[:, None] > 0, stopped, torch.ones_like(stopped)).float()
    mean = (importance * weights[..., None]).sum(1) / weights.sum(1)[..., None]
    failed = (converged == 0) & (n_sees > 0) & batch.step_mask
    if failed.any():
        warnings.warn(
            f"ReAGent: no probe stopped within max_probe_steps={max_probe_steps} for "
            f"{int(failed.sum())} (example, step) pairs (the target never reached the top "
            f"{top_k} with the top tokens kept); their scores are the mean "
            "over all probes. Raise max_probe_steps or stopping_condition_top_k.",
            stacklevel=3,
        )
    extras = {"reagent_converged": converged.float() / P}
    return MethodResult(mean.masked_fill(~sees, 0.0), extras)
