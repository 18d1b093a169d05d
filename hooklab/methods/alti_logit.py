"""ALTI-Logit: each input token's share of the predicted token's logit, layer by layer.

Ferrando, Gállego, Tsiamas and Costa-jussà (ACL 2023), "Explaining How Transformers Use
Context to Build Predictions". The logit of target ``w`` at query position q (the one that
predicts it) is read from the last residual stream ``x^L_q`` through the final norm and the
unembedding. The final norm is treated as linear with its scale fixed at the actual input
(``LN(c) = γ ⊙ P(c) / s_q``, ``P`` centering for LayerNorm, identity for RMSNorm, ``s_q``
the norm's divisor on ``x^L_q``), so every term of ``x^L_q`` gets its own logit update
``Δ(c) = c · r_q`` with ``r_q = P(γ ⊙ u) / s_q`` and ``u = W_U[:, w]`` (``W_U[:, w] -
W_U[:, foil]`` with contrast targets, for the logit difference).

Layer ℓ's attention adds ``Σ_j Σ_h a^h_qj v^h_j W^h_O`` (value bias included): the update
through source j is carried back to the input tokens by ALTI's rollout up to the layer before
(``R_{ℓ-1}``, the identity for the first layer). With ``mlp=True`` the MLP's update at q is
carried back by the mixing of its input (``R_ℓ`` for sequential blocks, ``R_{ℓ-1}`` for
parallel ones); the paper's ALTI-Logit explains the attention updates only (``mlp=False``).
Since ALTI's rows sum to 1, ``Σ_pos scores = Σ_ℓ Δ_ℓ`` exactly.

Scores are ``[batch, step, pos, layer]`` (summed over layers when shown). Two per-step extras:
``logit``, the explained logit (difference) the model computed, and ``remainder``, the part
no input token is credited with: the direct path of q's own embedding, every ``b_O``, the
final norm's bias, the unembedding bias, updates through a position whose ALTI row is all 0
(its ``‖y‖₁`` is dominated by ``b_O``: no token gets a share), and the MLPs when ``mlp=False``; so
``scores.sum((pos, layer)) + remainder == logit``, checked on every call. A final-step method
(one computation per sequence); it explains the logit whatever ``attributed_fn`` says.

Constant scales are linear factors of the paths: Granite's ``residual_multiplier`` scales the
attention terms (:func:`~hooklab.mixing.alti_acts.branch_scale`), its ``1 / logits_scaling``
and T5's tied-embedding ``d_model ** -0.5`` scale the readout
(:func:`~hooklab.mixing.alti_acts.logit_factor`). Soft-capped logits (Gemma 2,
``tanh(z / c) · c``) are not linear in the residual stream: refused with
``NotImplementedError`` (decomposing the pre-cap logit would explain a number the model does
not output). Encoder–decoder models (source tokens, then decoder tokens):
:mod:`hooklab.methods.alti_logit_seq2seq`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor

from hooklab.hooks import hook_name
from hooklab.methods.alti_logit_seq2seq import seq2seq_logit_contributions
from hooklab.methods.base import MethodResult, register_method
from hooklab.mixing.alti import check_supported, layer_acts, layer_alti, record
from hooklab.mixing.alti_acts import logit_factor
from hooklab.mixing.linear_norm import linear_norm
from hooklab.precision import upcast
from hooklab.selfcheck import check_identity

if TYPE_CHECKING:
    from collections.abc import Sequence

    from hooklab.inputs import Batch
    from hooklab.methods.base import AttributedFn


def final_norm(model, x_in: Tensor, x_out: Tensor) -> tuple[Tensor, Tensor, bool, torch.dtype]:
    """``(γ / s, β, center, dtype)`` of the final norm on ``x_in`` ``[pos, d_model]`` (see
    :func:`~hooklab.mixing.linear_norm.linear_norm`), proved against ``x_out``.

    Raises:
        NotImplementedError: the norm is neither a LayerNorm nor an RMSNorm (w or 1 + w scale).
    """
    fitted = linear_norm(model.ln_final, x_in, x_out)
    if fitted is None:
        norm = getattr(model.ln_final, "original_component", model.ln_final)
        raise NotImplementedError(
            f"ALTI-Logit linearises the final norm as a LayerNorm or RMSNorm; "
            f"{type(norm).__name__} computes something else: not supported."
        )
    return fitted.scale, fitted.beta, fitted.center, fitted.dtype


@torch.no_grad()
def logit_contributions(
    model,
    ids: Sequence[int],
    queries: Sequence[int],
    targets: Sequence[int],
    foils: Sequence[int] | None = None,
    *,
    mlp: bool = True,
) -> tuple[Float[Tensor, "step pos layer"], Float[Tensor, "step"], Float[Tensor, "step"]]:
    """ALTI-Logit of one sequence: ``(scores, remainder, logit)`` for each query position.

    Args:
        ids: the token ids (BOS included).
        queries: per step, the position whose logits predict ``targets[step]``.
        targets: per step, the explained token; ``foils``: per step, the token its logit is
            compared with (the logit difference is explained), or None.
    """
    n_layers = model.cfg.n_layers
    config = getattr(getattr(model, "original_model", None), "config", None)
    if getattr(config, "final_logit_softcapping", None):
        raise NotImplementedError(
            "ALTI-Logit reads the logit linearly off the last residual stream; this model "
            "soft-caps its logits (tanh, final_logit_softcapping): not supported."
        )
    act = record(model, ids, range(n_layers), logits=True)
    q = torch.tensor(list(queries), device=model.cfg.device)
    x_in, x_out = act["ln_final.hook_in"], act["ln_final.hook_out"]
    scale, beta, center, exact = final_norm(model, x_in[q], x_out[q])
    x_out = upcast(x_out)  # half precision: scores in float32, checks at the model's precision
    factor = logit_factor(model)  # Granite: 1 / logits_scaling
    w_u, b_u = model.W_U.to(x_out.dtype) * factor, model.b_U.to(x_out.dtype) * factor
    u = w_u[:, list(targets)].T  # [step, d_model]
    bias = b_u[list(targets)]
    if foils is not None:
        u, bias = u - w_u[:, list(foils)].T, bias - b_u[list(foils)]
    logit = (x_out[q] * u).sum(-1) + bias  # what the model computed, from its final norm's output
    check_identity("logits = k (ln_final(x) W_U + b_U)", x_out[q] @ w_u + b_u, act["logits"][q],
                   where="unembed", error=NotImplementedError)  # fmt: skip
    r = u * scale  # [step, d_model]: Δ(c) = P(c) · (γ ⊙ u) / s
    if center:
        r = r - r.mean(-1, keepdim=True)
    remainder = (beta * u).sum(-1) + bias + (upcast(act[hook_name("resid_pre", 0)][q]) * r).sum(-1)
    n = len(ids)
    rolled = torch.eye(n, dtype=r.dtype, device=r.device)  # R_{-1}
    scores = []
    for layer in range(n_layers):
        acts = layer_acts(model, act, layer)
        # Δ[s, j]: layer's attention update of step s through source j
        pattern, head_values = upcast(acts.pattern[:, q]), upcast(acts.head_values)
        r_attn = r if acts.norm is None else acts.norm.readout(r, q)  # through N on attn_out
        delta = torch.einsum("hsk,khm,sm->sk", pattern, head_values, r_attn)
        before = rolled
        rolled = layer_alti(acts) @ rolled
        layer_scores = delta @ before
        remainder += delta @ (1 - before.sum(-1))  # through positions whose rows are all 0
        mlp_update = (upcast(acts.mlp_out[q]) * r).sum(-1)
        if mlp:
            mixing = (before if acts.parallel else rolled)[q]
            layer_scores += mlp_update[:, None] * mixing
            remainder += mlp_update * (1 - mixing.sum(-1))
        else:
            remainder += mlp_update
        remainder += (upcast(acts.bias[q]) * r).sum(-1)
        scores.append(layer_scores)
    scores = torch.stack(scores, dim=-1)  # [step, pos, layer]
    total = scores.sum((1, 2)) + remainder
    check_identity("Σ scores + remainder = logit", total.to(exact), logit.to(exact),
                   where="ALTI-Logit", error=NotImplementedError)  # fmt: skip
    return scores, remainder, logit


@register_method(
    "alti_logit", kind="context_mixing", final_step_only=True, reduce="sum", encoder_decoder=True
)
@torch.no_grad()
def alti_logit(model, batch: Batch, *, attributed_fn: AttributedFn, mlp: bool = True):
    """ALTI-Logit scores ``[batch, step, pos, layer]`` of each step's target logit.

    Args:
        mlp: also credit each MLP's update (carried back through its input's mixing); the
            paper's ALTI-Logit explains the attention updates only (``False``).
    """
    check_supported(model, "ALTI-Logit")
    contrast = attributed_fn.contrast
    if contrast is not None and contrast.batch is not None:
        raise ValueError(
            "ALTI-Logit explains logits of one forward pass: contrast_prompts are not supported. "
            "Pass contrast_targets= (a foil token per step) to explain the logit difference."
        )
    foils = None if contrast is None else contrast.target_ids
    n_layers = len(model.decoder_blocks) if batch.encoder_decoder else model.cfg.n_layers
    shape = (batch.size, batch.n_steps, batch.input_width, n_layers)
    out = None
    extras = {k: torch.full((batch.size, batch.n_steps), torch.nan) for k in ("logit", "remainder")}
    for i in range(batch.size):
        start, steps = batch.prompt_lengths[i], batch.target_lengths[i]
        ids = batch.sequence(i).tolist()
        queries = range(start - 1, start - 1 + steps)
        targets = ids[start : start + steps]
        foil = None if foils is None else foils[i, :steps].tolist()
        if batch.encoder_decoder:  # scores over the source tokens, then the decoder's
            source = batch.source(i).tolist()
            scores, remainder, logit = seq2seq_logit_contributions(
                model, source, ids, queries, targets, foil, mlp=mlp
            )
        else:
            scores, remainder, logit = logit_contributions(
                model, ids, queries, targets, foil, mlp=mlp
            )
        if out is None:
            out = torch.full(shape, torch.nan, dtype=scores.dtype)
        out[i, :steps, batch.real_positions(i).cpu()] = scores.cpu()
        extras["logit"][i, :steps], extras["remainder"][i, :steps] = logit.cpu(), remainder.cpu()
    return MethodResult(out, extras)
