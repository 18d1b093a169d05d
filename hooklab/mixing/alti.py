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

Each layer is checked before it is used (attention output = ``Σ_j T`` terms + a constant bias,
the block sums); a layout that breaks one (a norm after attention as in Gemma 2/3 and OLMo 2,
scaled residual branches as in Granite) raises ``NotImplementedError`` instead of returning
wrong scores. Encoder–decoder models (ALTI+) are not supported yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from hooklab.architecture import is_encoder_decoder, select_indices
from hooklab.forward import forward
from hooklab.hooks import hook_name, recorder
from hooklab.inputs import make_batch
from hooklab.mixing.adapter import model_adapter, side_tokens
from hooklab.mixing.output import MixingOutput
from hooklab.mixing.sequences import as_texts, per_prompt
from hooklab.mixing.value_zeroing import normalize_rows, rollout_scores
from hooklab.output.provenance import describe_model
from hooklab.precision import reduction_dtype
from hooklab.selfcheck import check_identity

_KINDS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "v", "pattern")
#: (query, key, d_model) elements of transformed vectors held at once.
_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class LayerActs:
    """One layer's activations of one sequence (no batch dimension) and its block layout.

    Attributes:
        x: ``[pos, d_model]`` the layer input (``resid_pre``).
        y: ``[pos, d_model]`` the decomposed output (``resid_mid``, or ``resid_post`` if parallel).
        self_term: ``[pos, d_model]`` what position i adds to itself outside attention
            (``x``; ``x + mlp_out`` in a parallel block).
        mlp_out: ``[pos, d_model]`` the MLP's output.
        head_values: ``[key_pos, head, d_model]`` ``v^h_j W^h_O`` (value bias included).
        pattern: ``[head, query_pos, key_pos]`` attention weights.
        bias: ``[d_model]`` the attention output's bias ``b_O``.
        parallel: attention and MLP read the same input.
    """

    x: Float[Tensor, "pos d_model"]
    y: Float[Tensor, "pos d_model"]
    self_term: Float[Tensor, "pos d_model"]
    mlp_out: Float[Tensor, "pos d_model"]
    head_values: Float[Tensor, "key_pos head d_model"]
    pattern: Float[Tensor, "head query_pos key_pos"]
    bias: Float[Tensor, "d_model"]
    parallel: bool

    def transformed(self, queries: Tensor) -> Float[Tensor, "query_pos key_pos d_model"]:
        """``T_i(x_j)`` for the query positions ``queries``, every key position."""
        t = torch.einsum("hqk,khm->qkm", self.pattern[:, queries], self.head_values)
        t[torch.arange(len(queries)), queries] += self.self_term[queries]
        return t


def record(
    model, ids: Sequence[int], layers: Sequence[int], *, logits: bool = False
) -> dict[str, Any]:
    """Run the model once on ``ids``; return ``{hook name: activation}`` without batch (the
    per-layer hooks of ``layers`` that the model has, the final norm's input and output, and
    the ``"logits"`` ``[pos, d_vocab]`` when ``logits``)."""
    names = [hook_name(kind, layer) for layer in layers for kind in _KINDS]
    names += ["ln_final.hook_in", "ln_final.hook_out"]
    hooks, cache = recorder([n for n in names if n in model.hook_dict])
    batch = make_batch([list(ids)], device=model.cfg.device)
    last = None if logits else torch.tensor([len(ids) - 1], device=model.cfg.device)
    out = forward(model, batch, hooks=hooks, logits_to_keep=last)
    return {name: act[0] for name, act in cache.items()} | ({"logits": out[0]} if logits else {})


def _check(identity: str, got: Tensor, expected: Tensor, layer: int) -> None:
    check_identity(
        identity,
        got,
        expected,
        where=f"layer {layer}",
        error=NotImplementedError,
        hint="ALTI decomposes sequential pre-norm and parallel blocks; this model's blocks are "
        "built differently (e.g. a norm after attention, or scaled residual branches): not "
        "supported.",
    )


def layer_acts(model, act: dict[str, Any], layer: int) -> LayerActs:
    """Collect layer ``layer``'s activations and prove the decomposition on them.

    Raises:
        NotImplementedError: the block is neither sequential pre-norm nor parallel.
    """

    def get(kind: str) -> Tensor | None:
        return act.get(hook_name(kind, layer))

    x, attn_out, mlp_out = get("resid_pre"), get("attn_out"), get("mlp_out")
    post, v, pattern = get("resid_post"), get("v"), get("pattern")
    n_heads = pattern.shape[0]
    v = v.repeat_interleave(n_heads // v.shape[1], dim=1)  # key/value heads -> query heads
    head_values = torch.einsum("khd,hdm->khm", v, model.blocks[layer].attn.W_O.to(v.dtype))
    mixed = torch.einsum("hqk,khm->qm", pattern, head_values)  # Σ_j Σ_h a^h_ij v^h_j W^h_O
    bias = (attn_out - mixed)[0]
    _check("attn_out = Σ_h pattern · v W_O + b_O", mixed + bias, attn_out, layer)
    mid = get("resid_mid")
    parallel = mid is None
    if parallel:
        _check("resid_post = resid_pre + attn_out + mlp_out", x + attn_out + mlp_out, post, layer)
        y, self_term = post, x + mlp_out
    else:
        _check("resid_mid = resid_pre + attn_out", x + attn_out, mid, layer)
        y, self_term = mid, x
    return LayerActs(x, y, self_term, mlp_out, head_values, pattern, bias, parallel)


def contributions(
    parts: Float[Tensor, "*rows part d_model"], total: Float[Tensor, "*rows d_model"]
) -> Float[Tensor, "*rows part"]:
    """ALTI's contribution of each part to the sum ``total``: ``max(0, ‖y‖₁ - ‖y - part‖₁)``,
    normalised per row (rows that are all 0 stay 0)."""
    y = total.to(reduction_dtype(total.dtype))
    scores = y.abs().sum(-1)[..., None] - (y[..., None, :] - parts.to(y.dtype)).abs().sum(-1)
    return normalize_rows(scores.clamp(min=0))


def layer_alti(layer: LayerActs) -> Float[Tensor, "query_pos key_pos"]:
    """One layer's row-normalised ALTI matrix (0 where a causal query cannot see the key)."""
    n, d = layer.y.shape
    rows = []
    step = max(1, _CHUNK_ELEMENTS // (n * d))
    for lo in range(0, n, step):
        queries = torch.arange(lo, min(n, lo + step), device=layer.y.device)
        rows.append(contributions(layer.transformed(queries), layer.y[queries]))
    return torch.cat(rows)


@torch.no_grad()
def alti_matrices(
    model, ids: Sequence[int], *, layers: Sequence[int]
) -> Float[Tensor, "layer query_pos key_pos"]:
    """ALTI matrices of one token sequence (decoder-only), one per layer in ``layers``.

    The pure core of :func:`alti`: token ids in (BOS included), ``[layer, query_pos, key_pos]``
    out, rows summing to 1, on the CPU.
    """
    act = record(model, ids, layers)
    return torch.stack([layer_alti(layer_acts(model, act, la)).cpu() for la in layers])


def check_supported(model, what: str) -> None:
    """Raise for encoder–decoder models and compatibility mode, which ALTI does not handle."""
    if is_encoder_decoder(model):
        raise NotImplementedError(
            f"{what} is defined here for decoder-only models; ALTI+ (encoder-decoder models, "
            "with cross-attention) is not supported yet. Use value_zeroing for those."
        )
    if getattr(model, "compatibility_mode", False):
        raise ValueError(
            f"{what} needs the model's true value vectors, but this model was loaded with "
            "compatibility_mode=True, which folds the value bias into other weights. Load it "
            "with hooklab.load(..., compatibility_mode=False) (the default)."
        )


@torch.no_grad()
def alti(
    model,
    prompts: str | Sequence[str],
    *,
    targets: str | Sequence[str] | None = None,
    layers: int | range | Sequence[int] | None = None,
    rollout: bool = False,
    generation_kwargs: dict[str, Any] | None = None,
) -> list[MixingOutput]:
    """Compute ALTI context-mixing scores (Ferrando et al., EMNLP 2022).

    Args:
        model: a decoder-only ``TransformerBridge`` from :func:`hooklab.load` (default,
            non-compatibility mode, so that ``hook_v`` holds the true value vectors).
        prompts: one prompt or a list of prompts.
        targets: continuation(s): ``None`` generates one greedily (``generation_kwargs`` go to
            :func:`hooklab.generate`), ``""`` adds none, text forces it.
        layers: layers to score (an int, a range, a list; negative counts from the end).
        rollout: also return ``R_ℓ = C_ℓ · R_{ℓ-1}`` over the selected layers in order (pass
            every layer for the paper's ALTI, the rollout from the embeddings).

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
    texts = as_texts(prompts)
    check_supported(model, "ALTI")
    adapter = model_adapter(model)
    layer_ids = select_indices(layers, adapter.n_layers, "layers")
    chosen = per_prompt(targets, len(texts))
    outputs = []
    for example, target in zip(adapter.encode(texts, targets, generation_kwargs), chosen):
        scores = alti_matrices(model, example.ids, layers=layer_ids)
        tokens, _ = side_tokens(adapter, example)
        parameters = {
            "targets": target,
            "layers": layer_ids,
            "rollout": rollout,
            "generation_kwargs": dict(generation_kwargs or {}) if target is None else None,
        }
        outputs.append(
            MixingOutput(
                tokens=tokens,
                token_ids=torch.tensor(example.ids),
                scores=scores,
                layers=tuple(layer_ids),
                rollout=rollout_scores(scores) if rollout else None,
                method="alti",
                parameters=parameters,
                target_start=example.target_start,
                model=describe_model(model),
            )
        )
    return outputs
