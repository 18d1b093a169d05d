"""ALTI+ on encoder–decoder models: the encoder's, the decoder's and the cross-attention
sublayers laid out for ALTI (Ferrando et al., EMNLP 2022, "Towards Opening the Black Box of
Neural Machine Translation"); see :mod:`hooklab.mixing.alti`.

Post-norm sublayers (Marian, BART: ``y = N(x + attn)``) are decomposed through their norm
linearised at its input; pre-norm ones (T5, mBART, Pegasus, M2M100: ``y = x + attn``) as on
decoder-only models. The cross-attention sublayer's output is one term per source token (the
encoder output it reads) plus the decoder's residual.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from hooklab.architecture import n_kv_heads
from hooklab.forward import seq2seq_logits
from hooklab.hooks import recorder
from hooklab.mixing.alti_acts import (
    LayerActs,
    check_layer,
    fit_norm,
    keep_heads,
    layer_alti,
    through,
    value_terms,
)
from hooklab.mixing.linear_norm import LinearNorm
from hooklab.selfcheck import tolerance

#: Encoder–decoder attention sublayers: part -> (attention module, the norm after or before it).
_SUBLAYERS = {"encoder": ("attn", "ln1"), "decoder": ("self_attn", "ln1"),
              "cross": ("cross_attn", "ln2")}  # fmt: skip


def record_seq2seq(model, example, part: str, layers: Sequence[int]) -> dict[str, Any]:
    """Run an encoder–decoder once on ``example``; ``{hook name: activation}`` without batch,
    for the ``part`` sublayers of ``layers`` (the decoder's self-attention sublayer too, for
    ``"cross"``: its output is the cross-attention's residual input)."""
    stack = "encoder_blocks" if part == "encoder" else "decoder_blocks"
    kinds = ["hook_in"]
    for sub in ("decoder", "cross") if part == "cross" else (part,):
        module, norm = _SUBLAYERS[sub]
        kinds += [f"{module}.hook_{k}" for k in ("v", "pattern", "out")]
        kinds += [f"{norm}.hook_in", f"{norm}.hook_out"]
    names = [f"{stack}.{layer}.{k}" for layer in layers for k in kinds]
    hooks, cache = recorder([n for n in names if n in model.hook_dict])
    device = model.cfg.device
    src = torch.tensor([example.ids], device=device)
    tgt = torch.tensor([example.decoder_ids], device=device)
    seq2seq_logits(model, src, tgt, hooks=hooks)
    return {name: a[0] for name, a in cache.items()}


def record_example(model, example, *, logits: bool = False) -> dict[str, Any]:
    """One forward pass on ``example``: every hook :func:`part_acts` and :func:`mlp_norm`
    read, of every encoder and decoder layer, the decoder's final norm, and the ``"logits"``
    ``[target_pos, d_vocab]`` when ``logits`` (no batch)."""
    encoder = [
        "hook_in",
        "hook_out",
        "mlp.hook_out",
        *(f"attn.hook_{k}" for k in ("v", "pattern", "out")),
    ]
    encoder += [f"ln{n}.hook_{e}" for n in (1, 2) for e in ("in", "out")]
    decoder = ["hook_in", "hook_out", "mlp.hook_out", "ln3.hook_in", "ln3.hook_out"]
    for module, norm in (("self_attn", "ln1"), ("cross_attn", "ln2")):
        decoder += [f"{module}.hook_{k}" for k in ("v", "pattern", "out")]
        decoder += [f"{norm}.hook_in", f"{norm}.hook_out"]
    names = [f"encoder_blocks.{la}.{k}" for la in range(len(model.encoder_blocks)) for k in encoder]
    names += [
        f"decoder_blocks.{la}.{k}" for la in range(len(model.decoder_blocks)) for k in decoder
    ]
    names += ["decoder_ln_final.hook_in", "decoder_ln_final.hook_out"]
    hooks, cache = recorder([n for n in names if n in model.hook_dict])
    device = model.cfg.device
    src = torch.tensor([list(example.ids)], device=device)
    out = seq2seq_logits(model, src, torch.tensor([list(example.decoder_ids)], device=device),
                         hooks=hooks)  # fmt: skip
    return {name: a[0] for name, a in cache.items()} | ({"logits": out[0]} if logits else {})


def mlp_norm(model, act: dict[str, Any], stack: str, layer: int, y: Tensor) -> LinearNorm | None:
    """The post-norm after the MLP of ``stack``'s (``"encoder_blocks"`` or
    ``"decoder_blocks"``) block ``layer`` (``out = N(y + mlp_out)``, Marian, BART), fitted at
    its input; None for a pre-norm block (``out = y + mlp_out``). ``y``: the MLP sublayer's
    residual input (the last attention sublayer's output)."""
    prefix = f"{stack}.{layer}"
    name = "ln2" if stack == "encoder_blocks" else "ln3"
    mlp_out, out = act[f"{prefix}.mlp.hook_out"], act[f"{prefix}.hook_out"]
    norm_in = act.get(f"{prefix}.{name}.hook_in")
    if norm_in is not None and (norm_in - y - mlp_out).abs().max() <= tolerance(norm_in):
        return fit_norm(
            getattr(getattr(model, stack)[layer], name), norm_in, out, f"{prefix}.{name}"
        )
    check_layer("block output = attention sublayer output + mlp_out", y + mlp_out, out, prefix)
    return None


def _sublayer(model, act: dict[str, Any], block, prefix: str, sub: str, x: Tensor) -> LayerActs:
    """One encoder–decoder attention sublayer on residual input ``x``: post-norm (``y =
    N(x + attn)``, Marian, BART) or pre-norm (``y = x + attn``, T5), proved on ``act``."""
    module, norm_name = _SUBLAYERS[sub]
    attn = getattr(block, module)
    where = f"{prefix}.{module}"
    pattern, v, attn_out = (act[f"{where}.hook_{k}"] for k in ("pattern", "v", "out"))
    head_values = value_terms(attn, v, pattern.shape[0])
    mixed = torch.einsum("hqk,khm->qm", pattern, head_values)
    b_o = (attn_out - mixed)[0]
    check_layer("attn_out = Σ_h pattern · v W_O + b_O", mixed + b_o, attn_out, where)
    norm_in, norm_out = act[f"{prefix}.{norm_name}.hook_in"], act[f"{prefix}.{norm_name}.hook_out"]
    cross = sub == "cross"
    if (norm_in - x - attn_out).abs().max() <= tolerance(norm_in):  # post-norm
        norm = fit_norm(getattr(block, norm_name), norm_in, norm_out, where)
        self_term, bias = through(norm, x), through(norm, b_o.expand_as(x)) + norm.beta
        return LayerActs(x, norm_out, self_term, None, head_values, pattern, bias, False,
                         norm, cross)  # fmt: skip
    check_layer("pre-norm input = the residual stream", norm_in, x, where)
    y = x + attn_out
    return LayerActs(x, y, x, None, head_values, pattern, b_o.expand_as(x), False, None, cross)


def part_acts(model, act: dict[str, Any], part: str, layer: int) -> LayerActs:
    """The ``part`` attention sublayer of an encoder–decoder's block ``layer``."""
    stack = "encoder_blocks" if part == "encoder" else "decoder_blocks"
    prefix = f"{stack}.{layer}"
    block = getattr(model, stack)[layer]
    x = act[f"{prefix}.hook_in"]
    if part == "cross":  # its residual input is the self-attention sublayer's output
        x = _sublayer(model, act, block, prefix, "decoder", x).y
    return _sublayer(model, act, block, prefix, part, x)


@torch.no_grad()
def part_matrices(
    model,
    example,
    part: str,
    *,
    layers: Sequence[int],
    heads: Mapping[int, Sequence[int]] | None = None,
) -> Float[Tensor, "layer query_pos key_pos"]:
    """ALTI(+) matrices of one encoder–decoder example's ``part`` attention, on the CPU:
    ``"encoder"`` (source × source) and ``"decoder"`` (target × target, causal) rows sum to
    1; ``"cross"`` (target × source) rows sum to 1 minus the residual's share (and minus the
    left-out heads', with ``heads``: ``{layer: key/value heads}``, see
    :func:`~hooklab.mixing.alti_acts.keep_heads`)."""
    act = record_seq2seq(model, example, part, layers)
    n_kv = n_kv_heads(model)
    out = []
    for la in layers:
        acts = part_acts(model, act, part, la)
        out.append(layer_alti(keep_heads(acts, range(n_kv) if heads is None else heads[la], n_kv)))
    return torch.stack(out).cpu()
