"""ALTI-Logit on encoder–decoder models: source and target-prefix shares of each step's logit.

The decoder's last state at the step's position q is read through the final norm (pre-norm
models: T5, mBART, Pegasus, M2M100; linearised at its input) and the unembedding, times the
constant the logits are scaled by (T5 with tied embeddings: ``d_model ** -0.5``), so each
term of the decoder's residual stream at q gets a logit update ``c · r``. The readout ``r``
is carried down the decoder sublayer by sublayer: unchanged through a pre-norm sublayer
(``y = x + update``), through the norm linearised at its input after a post-norm one (Marian,
BART: ``y = N(x + update)``, ``r ← P(r ⊙ scale_q)``).

Per decoder layer ℓ, the updates at q are credited to input tokens by ALTI+ rollouts
(Ferrando et al., EMNLP 2022, "Towards Opening the Black Box of Neural Machine
Translation"), over the source tokens then the decoder tokens:

- self-attention through decoder key j: by ``R_{ℓ-1}[j]``, the mixing of the layer's input
  (``R_{-1} = [0 | I]``);
- cross-attention through source key k: by ``R_enc[k]``, the encoder's rollout over all its
  layers (the cross-attention reads the encoder's output);
- the MLP (``mlp=True``): by the mixing of its input, ``R_post = C_cross · [R_enc | 0] +
  ρ ⊙ C_self · R_{ℓ-1}``, with ``C_cross`` the ALTI+ cross shares of the source keys and
  ``ρ`` the residual's share.

The remainder, credited to no token: the decoder input's direct path at q (its embedding),
every ``b_O``, the norms' biases, the unembedding bias, updates through rows that are all 0,
and the MLPs with ``mlp=False``. ``scores.sum((pos, layer)) + remainder == logit``, checked.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from hooklab.mixing.adapter import Example
from hooklab.mixing.alti_acts import LayerActs, alti_shares, fit_norm, layer_alti, logit_factor
from hooklab.mixing.alti_seq2seq import mlp_norm, part_acts, part_matrices, record_example
from hooklab.mixing.matrices import rollout_scores
from hooklab.precision import upcast
from hooklab.selfcheck import check_identity


def _top_readout(model, act, q: Tensor, u: Tensor) -> tuple[Tensor, Tensor, torch.dtype]:
    """``(r, constant, dtype)``: the readout of the last decoder block's output at ``q``
    through the final norm (if any, linearised) and the logit factor, the final norm's bias
    term, and the precision the norm was proved at."""
    u = u * logit_factor(model)
    x_in = act.get("decoder_ln_final.hook_in")
    if x_in is None:
        return u, torch.zeros(len(q), dtype=u.dtype, device=u.device), u.dtype
    norm = fit_norm(model.decoder_ln_final, x_in[q], act["decoder_ln_final.hook_out"][q],
                    "the decoder's final norm")  # fmt: skip
    r = norm.readout(u, torch.arange(len(q), device=q.device))
    return r, (norm.beta.to(u.dtype) * u).sum(-1), norm.dtype


def _through(norm, r: Tensor, q: Tensor) -> Tensor:
    return r if norm is None else norm.readout(r, q)


def _attention_update(layer: LayerActs, r: Tensor, q: Tensor) -> Tensor:
    """``[step, key_pos]`` the logit update through each key of the sublayer's attention at
    the steps' positions ``q``, read along ``r`` (the readout after the sublayer)."""
    r_in = _through(layer.norm, r, q)
    pattern, values = upcast(layer.pattern[:, q]), upcast(layer.head_values)
    return torch.einsum("hsk,khm,sm->sk", pattern, values, r_in.to(values.dtype))


def _decoder_layer(model, act: dict[str, Any], layer: int):
    """``(self-attention, cross-attention, the MLP's post-norm or None)`` of a decoder block."""
    self_acts, cross_acts = (part_acts(model, act, p, layer) for p in ("decoder", "cross"))
    return self_acts, cross_acts, mlp_norm(model, act, "decoder_blocks", layer, cross_acts.y)


def _readouts(layers: list, r: Tensor, q: Tensor):
    """Carry the readout ``r`` (after the last block) down the decoder: per layer ``(r_self,
    r_mlp)``, the readouts after its self-attention and after its cross-attention sublayer;
    the biases' logit (``b_O``s, the norms' ``β``); the readout of the decoder's input."""
    readouts, constant = [None] * len(layers), torch.zeros_like(r[:, 0])
    for la in reversed(range(len(layers))):
        self_acts, cross_acts, post_norm = layers[la]
        if post_norm is not None:
            constant += (upcast(post_norm.beta) * r).sum(-1)
        r_mlp = _through(post_norm, r, q)  # what the MLP's update and its input are read along
        r_self = _through(cross_acts.norm, r_mlp, q)
        readouts[la] = (r_self, r_mlp)
        constant += (upcast(cross_acts.bias[q]) * r_mlp).sum(-1)
        constant += (upcast(self_acts.bias[q]) * r_self).sum(-1)
        r = _through(self_acts.norm, r_self, q)
    return readouts, constant, r


@torch.no_grad()
def seq2seq_logit_contributions(
    model,
    source_ids: Sequence[int],
    decoder_ids: Sequence[int],
    queries: Sequence[int],
    targets: Sequence[int],
    foils: Sequence[int] | None = None,
    *,
    mlp: bool = True,
) -> tuple[Float[Tensor, "step pos layer"], Float[Tensor, "step"], Float[Tensor, "step"]]:
    """ALTI-Logit of one encoder–decoder example: ``(scores, remainder, logit)`` per step.

    ``pos`` runs over the source tokens then the decoder tokens; ``layer`` over the decoder's
    layers (the encoder's mixing is folded into the source tokens' shares).

    Args:
        source_ids: the encoder's input; decoder_ids: the decoder's (start token first).
        queries: per step, the decoder position whose logits predict ``targets[step]``;
            ``foils``: per step, the token whose logit is subtracted, or None.
    """
    n_layers, n_src, n_dec = len(model.decoder_blocks), len(source_ids), len(decoder_ids)
    example = Example(tuple(source_ids), tuple(decoder_ids))
    act = record_example(model, example, logits=True)
    q = torch.tensor(list(queries), device=model.cfg.device)
    w_u, b_u = upcast(model.W_U), upcast(model.b_U)
    u, bias = w_u[:, list(targets)].T, b_u[list(targets)]
    if foils is not None:
        u, bias = u - w_u[:, list(foils)].T, bias - b_u[list(foils)]
    logits = upcast(act["logits"])
    logit = logits[q, list(targets)] - (0 if foils is None else logits[q, list(foils)])
    r, remainder, exact = _top_readout(model, act, q, u)  # T5's RMSNorm: float32 inside
    remainder = remainder + bias
    layers = [_decoder_layer(model, act, la) for la in range(n_layers)]
    readouts, constant, r = _readouts(layers, r, q)
    remainder += constant + (upcast(act["decoder_blocks.0.hook_in"][q]) * r).sum(-1)
    # bottom-up: the ALTI+ rollouts over [source, decoder] tokens
    encoder = part_matrices(model, example, "encoder", layers=range(_n_encoder_layers(model)))
    r_enc = rollout_scores(encoder.to(r.dtype))[-1].to(r.device)
    from_source = torch.cat([r_enc, r_enc.new_zeros(n_src, n_dec)], dim=1)  # [src, src+dec]
    eye = torch.eye(n_dec, dtype=r.dtype, device=r.device)
    rolled = torch.cat([r_enc.new_zeros(n_dec, n_src), eye], dim=1)  # R_{-1}: decoder tokens
    scores = []
    for la in range(n_layers):
        self_acts, cross_acts, _ = layers[la]
        r_self, r_mlp = readouts[la]
        delta_self = _attention_update(self_acts, r_self, q)  # [step, dec]
        delta_cross = _attention_update(cross_acts, r_mlp, q)  # [step, src]
        mid = layer_alti(self_acts).to(r.dtype) @ rolled
        shares = alti_shares(cross_acts).to(r.dtype)  # [dec, src + 1]: sources, residual
        post = shares[:, :n_src] @ from_source + shares[:, n_src:] * mid
        layer_scores = delta_self @ rolled + delta_cross @ from_source
        remainder += delta_self @ (1 - rolled.sum(-1)) + delta_cross @ (1 - from_source.sum(-1))
        mlp_update = (upcast(act[f"decoder_blocks.{la}.mlp.hook_out"][q]) * r_mlp).sum(-1)
        if mlp:
            layer_scores += mlp_update[:, None] * post[q]
            remainder += mlp_update * (1 - post[q].sum(-1))
        else:
            remainder += mlp_update
        scores.append(layer_scores)
        rolled = post
    scores = torch.stack(scores, dim=-1)  # [step, src + dec, layer]
    total = (scores.sum((1, 2)) + remainder).to(exact)
    check_identity("Σ scores + remainder = logit", total, logit.to(exact),
                   where="ALTI-Logit (encoder-decoder)", error=NotImplementedError)  # fmt: skip
    return scores, remainder, logit


def _n_encoder_layers(model) -> int:
    return len(model.encoder_blocks)


__all__ = ["seq2seq_logit_contributions"]
