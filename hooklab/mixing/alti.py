"""ALTI: how much each token's layer output is made of every earlier token's representation.

Ferrando, Gállego and Costa-jussà (EMNLP 2022), "Measuring the Mixing of Contextual Information
in the Transformer". A layer's output at position i is a sum of one transformed vector per
input token, ``y_i = Σ_j T_i(x_j) + b``; token j contributes to i in proportion to how close
``T_i(x_j)`` is to ``y_i``::

    c_ij = max(0, ‖y_i‖₁ - ‖y_i - T_i(x_j)‖₁),   rows normalised to sum to 1,

then rolled out across layers (``R_ℓ = C_ℓ · R_{ℓ-1}``).

The decomposition, read off one forward pass (``hook_v`` holds the true value vectors, value
bias included, and ``W_O`` is the bridge's), on the block layouts where it is exact:

- **sequential pre-norm blocks** (GPT-2, Llama, Mistral, Qwen, Gemma, OPT, BLOOM...): ``y`` is
  the attention block's output ``resid_mid``; ``T_i(x_j) = Σ_h a^h_ij v^h_j W^h_O`` plus the
  residual ``x_i`` when ``j = i`` (``v_j = LN1(x_j) W_V + b_V`` depends on ``x_j`` alone);
  ``b = b_O``. The MLP, a function of one position, mixes nothing and is not scored (as in the
  paper).
- **parallel blocks** (GPT-NeoX/Pythia, GPT-J, Phi, Falcon): attention and MLP read the same
  ``x``, so ``y`` is the layer output ``resid_post`` and ``T_i(x_i)`` also holds
  ``MLP(LN2(x_i))``.

- **a norm on the attention output** (Gemma 2/3, OLMo 2: ``y = x + N(attn_out)``) and
  **post-norm sublayers** (Marian, BART: ``y = N(x + attn_out)``): the norm, linearised at
  its actual input (:mod:`hooklab.mixing.linear_norm`, as ALTI did for BERT), maps each term
  to its own term.
- **encoder–decoder models** (ALTI+, Ferrando et al., EMNLP 2022, "Towards Opening the Black
  Box of Neural Machine Translation"): the encoder's and the decoder's self-attention
  sublayers as above; the cross-attention sublayer's output is one term per source token
  (the encoder output it reads) plus the decoder's residual.

- **scaled residual branches** (Granite: ``resid_mid = x + m · attn``, ``m`` the config's
  ``residual_multiplier``, a constant): the attention terms are scaled by ``m``
  (:func:`~hooklab.mixing.alti_acts.branch_scale`); the hooks' ``attn_out`` and ``mlp_out``
  already hold the scaled updates.

``heads=`` (key/value heads, as value zeroing's) credits only the selected heads' terms to the
keys; the other heads' output is one more part, credited to no token
(:func:`~hooklab.mixing.alti_acts.keep_heads`). On encoder–decoder models ``rollout=True``
with ``part="cross"`` rolls each layer's cross shares back to the source tokens through the
encoder's ALTI rollout (ALTI+).

Each layer is checked before it is used (attention output = ``Σ_j T`` terms + a constant bias,
the block sums, the norm's fit); a layout that breaks one raises ``NotImplementedError``
instead of returning wrong scores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from hooklab.architecture import check_raw_mode, n_kv_heads, select_indices
from hooklab.encoding import TargetsArg, per_prompt
from hooklab.forward import forward
from hooklab.hooks import hook_name, recorder
from hooklab.inputs import make_batch
from hooklab.mixing.adapter import model_adapter, side_tokens
from hooklab.mixing.alti_acts import (
    LayerActs,
    branch_scale,
    check_layer,
    contributions,
    fit_norm,
    keep_heads,
    layer_alti,
    through,
    value_terms,
)
from hooklab.mixing.alti_seq2seq import part_acts, part_matrices, record_seq2seq
from hooklab.mixing.matrices import rollout_scores
from hooklab.mixing.output import MixingOutput
from hooklab.mixing.sequences import as_prompts
from hooklab.mixing.value_zeroing import HeadsArg, select_heads
from hooklab.options import checked_options
from hooklab.output.provenance import describe_model

_KINDS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "v", "pattern")


def record(
    model, ids: Sequence[int], layers: Sequence[int], *, logits: bool = False
) -> dict[str, Any]:
    """Run the model once on ``ids``; return ``{hook name: activation}`` without batch (the
    per-layer hooks of ``layers`` that the model has, the final norm's input and output, and
    the ``"logits"`` ``[pos, d_vocab]`` when ``logits``)."""
    names = [hook_name(kind, layer) for layer in layers for kind in _KINDS]
    names += [_post_attention_norm(layer, end) for layer in layers for end in ("in", "out")]
    names += ["ln_final.hook_in", "ln_final.hook_out"]
    hooks, cache = recorder([n for n in names if n in model.hook_dict])
    batch = make_batch([list(ids)], device=model.cfg.device)
    last = None if logits else torch.tensor([len(ids) - 1], device=model.cfg.device)
    out = forward(model, batch, hooks=hooks, logits_to_keep=last)
    return {name: act[0] for name, act in cache.items()} | ({"logits": out[0]} if logits else {})


def _post_attention_norm(layer: int, end: str) -> str:
    """Hook at the input or output (``end``) of the norm on the attention output (Gemma 2/3,
    OLMo 2)."""
    return f"blocks.{layer}.ln1_post.hook_{end}"


def layer_acts(model, act: dict[str, Any], layer: int) -> LayerActs:
    """Collect layer ``layer``'s activations and prove the decomposition on them.

    Raises:
        NotImplementedError: the block is neither sequential pre-norm (with or without a norm
            on the attention output) nor parallel.
    """

    def get(kind: str) -> Tensor | None:
        return act.get(hook_name(kind, layer))

    x, attn_out, mlp_out = get("resid_pre"), get("attn_out"), get("mlp_out")
    post, v, pattern = get("resid_post"), get("v"), get("pattern")
    normed = act.get(_post_attention_norm(layer, "out"))  # resid_mid = x + N(attention)
    raw = attn_out if normed is None else act[_post_attention_norm(layer, "in")]
    attn = model.blocks[layer].attn
    head_values = value_terms(attn, v, pattern.shape[0]) * branch_scale(model)  # Granite
    mixed = torch.einsum("hqk,khm->qm", pattern, head_values)  # Σ_j Σ_h a^h_ij v^h_j W^h_O
    b_o = (raw - mixed)[0]
    check_layer("attention = Σ_h pattern · v W_O + b_O", mixed + b_o, raw, layer)
    bias = b_o.expand_as(x)
    mid = get("resid_mid")
    if mid is None:
        check_layer(
            "resid_post = resid_pre + attn_out + mlp_out", x + attn_out + mlp_out, post, layer
        )
        return LayerActs(x, post, x + mlp_out, mlp_out, head_values, pattern, bias, True)
    norm = None
    if normed is not None:  # Gemma 2/3, OLMo 2: the norm linearised at its input
        norm = fit_norm(model.blocks[layer].ln1_post, raw, normed, f"layer {layer}")
        bias = through(norm, bias) + norm.beta
    check_layer(
        "resid_mid = resid_pre + attn_out", x + (raw if normed is None else normed), mid, layer
    )
    return LayerActs(x, mid, x, post - mid, head_values, pattern, bias, False, norm)


@torch.no_grad()
def alti_matrices(
    model,
    ids: Sequence[int],
    *,
    layers: Sequence[int],
    heads: Mapping[int, Sequence[int]] | None = None,
) -> Float[Tensor, "layer query_pos key_pos"]:
    """ALTI matrices of one token sequence (decoder-only), one per layer in ``layers``.

    The pure core of :func:`alti`: token ids in (BOS included), ``[layer, query_pos, key_pos]``
    out, rows summing to 1 (to 1 minus the left-out heads' share with ``heads``, ``{layer:
    key/value heads}``, see :func:`~hooklab.mixing.alti_acts.keep_heads`), on the CPU.
    """
    act = record(model, ids, layers)
    n_kv = n_kv_heads(model)
    return torch.stack(
        [
            layer_alti(keep_heads(layer_acts(model, act, la), _heads(heads, la, n_kv), n_kv)).cpu()
            for la in layers
        ]
    )


def _rollout(model, example, scores: Tensor, cross: bool) -> Tensor:
    """The rollout of ``scores``; for cross-attention, ``scores`` times the encoder's rollout."""
    if not cross:
        return rollout_scores(scores)
    encoder = part_matrices(model, example, "encoder", layers=range(len(model.encoder_blocks)))
    return scores @ rollout_scores(encoder.to(scores.dtype))[-1]


def _heads(heads: Mapping[int, Sequence[int]] | None, layer: int, n_kv: int) -> Sequence[int]:
    return range(n_kv) if heads is None else heads[layer]


def check_supported(model, what: str) -> None:
    """Raise for a model in compatibility mode (``hook_v`` would not hold the true values)."""
    check_raw_mode(model, what)


@checked_options
@torch.no_grad()
def alti(
    model,
    prompts: str | Sequence[str] | Sequence[Sequence[int]],
    *,
    targets: TargetsArg = None,
    part: str | None = None,
    layers: int | range | Sequence[int] | None = None,
    heads: HeadsArg = None,
    rollout: bool = False,
    generation_kwargs: dict[str, Any] | None = None,
) -> list[MixingOutput]:
    """Compute ALTI context-mixing scores (Ferrando et al., EMNLP 2022; ALTI+ on
    encoder–decoder models, Ferrando et al., EMNLP 2022 "Towards Opening the Black Box of
    Neural Machine Translation").

    Args:
        model: a ``TransformerBridge`` from :func:`hooklab.load` (default, non-compatibility
            mode, so that ``hook_v`` holds the true value vectors).
        prompts: one prompt or a list of prompts, texts or token-id lists.
        targets: as in :func:`hooklab.attribute`: ``None`` generates greedily with
            :func:`hooklab.generate` (``generation_kwargs`` are its options); one text for
            every prompt, or one text or token-id list per prompt; ``""`` adds none.
        part: on encoder–decoder models ``"cross"`` (default; target × source: each source
            token's share of the cross-attention sublayer's output, normalised together with
            the residual's, so a row sums to 1 minus the residual's share), ``"decoder"``
            (target × target) or ``"encoder"`` (source × source); on decoder-only models
            ``"decoder"``. Post-norm sublayers (Marian, BART) are decomposed through their
            norm linearised at its input; pre-norm ones (T5) as on decoder-only models.
        layers: layers to score (an int, a range, a list; negative counts from the end).
        heads: key/value heads whose attention terms are credited to the keys (an int, a
            range, a list, or a ``{layer: heads}`` dict, layers missing from it keeping all
            heads; as value zeroing's ``heads=``); the other heads' output is one more part of
            the layer output, credited to no token, so a row sums to 1 minus its share. All
            when None. One head at a time gives per-head contributions.
        rollout: also return ``R_ℓ = C_ℓ · R_{ℓ-1}`` over the selected layers in order (pass
            every layer for the paper's ALTI, the rollout from the embeddings); for
            ``part="cross"``, each layer's cross shares rolled back to the source tokens
            through the encoder's ALTI rollout over all its layers (every head),
            ``C_cross,ℓ · R_enc`` (ALTI+; rows sum to 1 minus the residual's share).

    Returns:
        One :class:`~hooklab.mixing.output.MixingOutput` per prompt (``method="alti"``), with
        scores ``[layer, query_pos, key_pos]`` whose rows sum to 1.

    Example:
        >>> import hooklab
        >>> model = hooklab.load("toy")
        >>> out = alti(model, "George was sick yesterday. His colleagues", targets="",
        ...     rollout=True)
        >>> out[0].rollout.sum(-1).allclose(torch.tensor(1.0))
        True
    """
    prompts = as_prompts(prompts)
    check_supported(model, "ALTI")
    adapter = model_adapter(model, part)
    cross = adapter.part == "cross"
    layer_ids = select_indices(layers, adapter.n_layers, "layers")
    head_ids = None if heads is None else select_heads(heads, layer_ids, n_kv_heads(model))
    chosen = per_prompt(targets, len(prompts)) or [None] * len(prompts)
    outputs = []
    for example, target in zip(adapter.encode(prompts, targets, generation_kwargs), chosen):
        if adapter.encoder_decoder:
            scores = part_matrices(model, example, adapter.part, layers=layer_ids, heads=head_ids)
        else:
            scores = alti_matrices(model, example.ids, layers=layer_ids, heads=head_ids)
        tokens, key_tokens = side_tokens(adapter, example)
        query_ids, key_ids = adapter.sides(example)
        parameters = {
            "part": adapter.part,
            "targets": target,
            "layers": layer_ids,
            "heads": head_ids,
            "rollout": rollout,
            "generation_kwargs": dict(generation_kwargs or {}) if target is None else None,
        }
        outputs.append(
            MixingOutput(
                tokens=tokens,
                token_ids=torch.tensor(query_ids),
                scores=scores,
                layers=tuple(layer_ids),
                rollout=_rollout(model, example, scores, cross) if rollout else None,
                method="alti",
                parameters=parameters,
                target_start=example.target_start,
                key_tokens=key_tokens if cross else None,
                key_token_ids=torch.tensor(key_ids) if cross else None,
                causal=adapter.causal,
                model=describe_model(model),
            )
        )
    return outputs


__all__ = [
    "alti",
    "alti_matrices",
    "check_supported",
    "contributions",
    "layer_acts",
    "layer_alti",
    "part_acts",
    "part_matrices",
    "record",
    "record_seq2seq",
]
