"""Value zeroing: how much each token mixes every earlier token into its representation.

Mohebbi et al. (EACL 2023), "Quantifying Context Mixing in Transformers": for layer ℓ and token
j, run layer ℓ from its clean input with the value vector of token j zeroed, and score every
token i by the distance between its layer-ℓ output with and without; rows are normalised to
sum to 1. Under a causal mask only i ≥ j can change. The result is a ``[layer, query_pos,
key_pos]`` mixing matrix per example; optionally rolled out across layers
(``J_ℓ = S_ℓ · J_{ℓ-1}``).

How it is computed (a final-step method: one computation on the full sequence). Zeroing
``v_j`` (value bias included: the bridge's ``hook_v`` holds the true value vectors) changes
token i's attention output by exactly ``-Σ_h a^h_ij v^h_j W^h_O`` and nothing else. So one
clean forward caches each layer's pattern, values and residual stream, and only the
post-attention part of the layer (``ln2``, MLP) is recomputed, for all (i, j) pairs in
batched calls. Before a layer is used, its cached activations are checked against the
identities this relies on (``z = pattern · v``, ``attn_out = z W_O + b_O``,
``resid_mid = resid_pre + attn_out``, ``resid_post = resid_mid + MLP(ln2(resid_mid))``); an
architecture that breaks one (parallel attention and MLP, post-attention norms) raises
``NotImplementedError`` instead of returning wrong scores.

Heads. Value vectors belong to key/value heads. On models with grouped key/value heads
(Llama-style GQA), ``heads`` indexes the key/value heads, and zeroing v_j of one of them zeroes
it for every query head that shares it (exactly what a ``hook_v`` intervention does). On
multi-head models (GPT-2) key/value heads and query heads are the same.

Encoder–decoder models (``part="encoder"``, ``"decoder"`` or ``"cross"``) take the batched path
of :mod:`hooklab.mixing.encoder_decoder`; argument resolution, normalisation, the self-check and
the outputs are shared.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from hooklab.architecture import n_kv_heads, select_indices
from hooklab.forward import forward
from hooklab.hooks import hook_name, recorder
from hooklab.inputs import make_batch
from hooklab.mixing.adapter import model_adapter, side_tokens
from hooklab.mixing.encoder_decoder import part_scores
from hooklab.mixing.output import MixingOutput
from hooklab.mixing.sequences import as_texts, per_prompt
from hooklab.output.provenance import describe_model
from hooklab.precision import reduction_dtype, upcast
from hooklab.registry import unknown_name_error
from hooklab.selfcheck import check_identity

if TYPE_CHECKING:
    from hooklab.mixing.adapter import Adapter, Example

HeadsArg = int | range | Sequence[int] | Mapping[int, int | range | Sequence[int]] | None
#: Default ``max_batch_tokens``, the attribution methods' (hooklab.methods.gradients), which
#: this module cannot import (hooklab.methods imports it).
MAX_BATCH_TOKENS = 2048
_CACHED = ("resid_pre", "resid_mid", "resid_post", "attn_out", "v", "z", "pattern")


def cosine_distance(
    a: Float[Tensor, "*batch d_model"], b: Float[Tensor, "*batch d_model"]
) -> Tensor:
    """Return ``1 - cos(a, b)`` per row, as ``|â - b̂|² / 2`` (no cancellation near 0), in
    float32 for half-precision inputs."""
    a, b = upcast(a), upcast(b)
    return (F.normalize(a, dim=-1) - F.normalize(b, dim=-1)).pow(2).sum(-1) / 2


def euclidean_distance(
    a: Float[Tensor, "*batch d_model"], b: Float[Tensor, "*batch d_model"]
) -> Tensor:
    """Return the L2 distance ``|a - b|`` per row, in float32 for half-precision inputs."""
    return (upcast(a) - upcast(b)).norm(dim=-1)


METRICS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "cosine": cosine_distance,
    "euclidean": euclidean_distance,
}


def select_heads(heads: HeadsArg, layers: list[int], n_heads: int) -> dict[int, list[int]]:
    """Resolve ``heads`` (None, an int, a range, a list, or ``{layer: heads}``) per layer.

    Layers missing from a dict zero all heads.
    """
    what = f"heads (key/value heads 0..{n_heads - 1})"
    if not isinstance(heads, Mapping):
        ids = select_indices(heads, n_heads, what)
        return {layer: ids for layer in layers}
    extra = [k for k in heads if k not in layers]
    if extra:
        raise ValueError(
            f"heads has entries for layers {extra}, which are not computed; computed layers: "
            f"{layers}. Add them to layers= or drop them from heads."
        )
    return {layer: select_indices(heads.get(layer), n_heads, what) for layer in layers}


def rollout_scores(scores: Float[Tensor, "layer query_pos key_pos"]) -> Tensor:
    """Roll mixing matrices out across layers: ``J_0 = S_0``, ``J_ℓ = S_ℓ · J_{ℓ-1}``."""
    rolled = [scores[0]]
    for layer_scores in scores[1:]:
        rolled.append(layer_scores @ rolled[-1])
    return torch.stack(rolled)


def clean_activations(model, ids: list[int], layers: list[int]) -> dict[tuple[str, int], Tensor]:
    """Run the model once on ``ids``; return ``{(kind, layer): activation}`` without batch."""
    keys = [(kind, layer) for layer in layers for kind in _CACHED]
    hooks, cache = recorder([hook_name(kind, layer) for kind, layer in keys])
    batch = make_batch([ids], device=model.cfg.device)
    last = torch.tensor([len(ids) - 1], device=model.cfg.device)
    forward(model, batch, hooks=hooks, logits_to_keep=last)
    return {(kind, layer): cache[hook_name(kind, layer)][0] for kind, layer in keys}


def _check(identity: str, got: Tensor, expected: Tensor, layer: int) -> None:
    check_identity(
        identity,
        got,
        expected,
        where=f"layer {layer}",
        error=NotImplementedError,
        hint="Value zeroing needs it, but this model's blocks are built differently (e.g. "
        "parallel attention and MLP, or a norm after attention): not supported yet.",
    )


def _post_attention(block, resid_mid: Float[Tensor, "batch d_model"]) -> Tensor:
    """Layer output from ``resid_mid``: ``resid_mid + MLP(ln2(resid_mid))``, row by row."""
    x = resid_mid[:, None]  # [n, 1, d_model]: one position per row
    return (x + block.mlp(block.ln2(x)))[:, 0]


def layer_mixing(
    model, layer: int, act: Mapping[tuple[str, int], Tensor], heads: list[int], metric, chunk: int
) -> Float[Tensor, "query_pos key_pos"]:
    """Distance of each token's layer output when each earlier token's values are zeroed.

    Only pairs with query >= key are recomputed (causal mask); the others stay 0.
    """
    block = model.blocks[layer]
    pre, mid, post = (act[(k, layer)] for k in ("resid_pre", "resid_mid", "resid_post"))
    v, z, pattern = act[("v", layer)], act[("z", layer)], act[("pattern", layer)]
    n_heads, n = pattern.shape[0], pattern.shape[1]
    group = n_heads // v.shape[1]  # query heads per key/value head
    v_q = v.repeat_interleave(group, dim=1)  # [pos, head, d_head]
    w_o = block.attn.W_O  # [head, d_head, d_model]
    _check("z = pattern @ v", torch.einsum("hqk,khd->qhd", pattern, v_q), z, layer)
    bias = act[("attn_out", layer)] - torch.einsum("qhd,hdm->qm", z, w_o)
    _check("attn_out = z W_O + b_O", bias, bias[:1].expand_as(bias), layer)
    _check("resid_mid = resid_pre + attn_out", pre + act[("attn_out", layer)], mid, layer)
    clean = _post_attention(block, mid)
    _check("resid_post = resid_mid + MLP(ln2(resid_mid))", clean, post, layer)

    keep = torch.zeros(v.shape[1], dtype=v.dtype, device=v.device)
    keep[heads] = 1
    keep = keep.repeat_interleave(group)[None, :, None]  # [1, head, 1]
    contrib = torch.einsum("khd,hdm->khm", v_q * keep, w_o)  # what v_k adds per head
    scores = torch.zeros(n, n, dtype=reduction_dtype(mid.dtype), device=mid.device)
    step = max(1, chunk // n)  # keys per batched call: about `chunk` (query, key) pairs
    for lo in range(0, n, step):
        keys = torch.arange(lo, min(n, lo + step), device=v.device)
        # delta[j, i] = sum_h a^h_ij v^h_j W^h_O, what v_j adds to token i's attention output
        delta = torch.bmm(pattern[:, :, keys].permute(2, 1, 0), contrib[keys])
        k, q = (keys[:, None] <= torch.arange(n, device=v.device)).nonzero(as_tuple=True)
        scores[q, keys[k]] = metric(_post_attention(block, mid[q] - delta[k, q]), clean[q])
    return scores


def metric_fn(metric: str):
    """Return the distance function named ``metric``; ValueError listing the valid ones."""
    if metric not in METRICS:
        raise ValueError(unknown_name_error("metric", metric, list(METRICS)).args[0])
    return METRICS[metric]


def normalize_rows(scores: Tensor) -> Tensor:
    """Divide each row by its sum (rows that sum to 0 stay 0)."""
    total = scores.sum(-1, keepdim=True)
    return torch.where(total > 0, scores / torch.where(total > 0, total, 1), scores)


@torch.no_grad()
def mixing_matrices(
    model,
    ids: Sequence[int],
    *,
    layers: Sequence[int],
    heads: Mapping[int, Sequence[int]],
    metric: str = "cosine",
    normalize: bool = True,
    max_batch_tokens: int = MAX_BATCH_TOKENS,
) -> Float[Tensor, "layer query_pos key_pos"]:
    """Value-zeroing matrices of one token sequence (decoder-only), one per layer in ``layers``.

    The pure core of :func:`value_zeroing`: token ids in, ``[layer, query_pos, key_pos]`` out
    (rows normalised to sum to 1 when ``normalize``), in float32 (float64 for a float64 model)
    on the CPU: each layer's scores move there once computed.

    Args:
        ids: the token ids (BOS included, as the model sees them).
        layers: resolved layer indices.
        heads: resolved key/value heads per layer (see :func:`select_heads`).
    """
    distance = metric_fn(metric)
    act = clean_activations(model, list(ids), list(layers))
    scores = torch.stack(
        [
            layer_mixing(model, la, act, list(heads[la]), distance, max_batch_tokens).cpu()
            for la in layers
        ]
    )
    return normalize_rows(scores) if normalize else scores


def _scores(adapter: Adapter, example: Example, heads, metric: str, normalize: bool, chunk: int):
    """Mixing matrices of one example: the decoder-only shortcut or the batched path."""
    if not adapter.encoder_decoder:
        return mixing_matrices(
            adapter.model, example.ids, layers=list(heads), heads=heads, metric=metric,
            normalize=normalize, max_batch_tokens=chunk,
        )  # fmt: skip
    scores = part_scores(adapter, example, heads, metric_fn(metric), chunk)
    if adapter.causal:  # the causal mask leaves ~1e-30 on later tokens: drop it
        scores = scores.tril()
    return normalize_rows(scores) if normalize else scores


@torch.no_grad()
def value_zeroing(
    model,
    prompts: str | Sequence[str],
    *,
    targets: str | Sequence[str] | None = None,
    part: str | None = None,
    layers: int | range | Sequence[int] | None = None,
    heads: HeadsArg = None,
    metric: str = "cosine",
    normalize: bool = True,
    rollout: bool = False,
    generation_kwargs: Mapping[str, Any] | None = None,
    max_batch_tokens: int = MAX_BATCH_TOKENS,
    prepend_bos: bool | None = None,
) -> list[MixingOutput]:
    """Compute value-zeroing context-mixing scores (Mohebbi et al., EACL 2023).

    Args:
        model: a ``TransformerBridge`` from :func:`hooklab.load` (default, non-compatibility
            mode, so that ``hook_v`` holds the true value vectors), decoder-only or
            encoder–decoder.
        prompts: one prompt or a list of prompts (the source texts of an encoder–decoder).
        targets: continuation(s): ``None`` generates one greedily (``generation_kwargs`` go to
            :func:`hooklab.generate`, or to Hugging Face ``generate`` for encoder–decoders),
            ``""`` adds none, text forces it (one for all prompts, or one per prompt).
        part: the attention whose values are zeroed: on encoder–decoder models ``"cross"``
            (default; target × source), ``"decoder"`` (target × target) or ``"encoder"``
            (source × source); on decoder-only models ``"decoder"``.
        layers: layers to score (an int, a range, a list; negative counts from the end), of
            the encoder for ``part="encoder"``, else of the decoder.
        heads: key/value heads whose values are zeroed: an int, a range, a list, or a
            ``{layer: heads}`` dict (layers missing from it zero all heads); all when None.
        metric: ``"cosine"`` (cosine distance, as in the paper) or ``"euclidean"``.
        normalize: divide each row by its sum, so that each token's scores sum to 1.
        rollout: also return ``J_ℓ = S_ℓ · J_{ℓ-1}`` over the selected layers in order
            (needs ``normalize`` and square matrices: not for ``part="cross"``).
        max_batch_tokens: token rows per batched recompute: each (query, key) pair is
            one row through the layer's post-attention part (bounds the memory; the scores
            do not depend on it). The same option as the attribution methods'.
        prepend_bos: prepend BOS to the prompts (None: where the model's tokenizer adds it;
            decoder-only models).

    Returns:
        One :class:`~hooklab.mixing.output.MixingOutput` per prompt, with scores
        ``[layer, query_pos, key_pos]`` (0 where a causal query cannot see the key). On
        encoder–decoder models the decoder tokens start with the decoder start token.

    Example:
        >>> import hooklab
        >>> model = hooklab.load("toy")
        >>> out = value_zeroing(model, "George was sick yesterday. His colleagues asked him "
        ...     "to come", rollout=True)
        >>> out[0].scores.sum(-1).allclose(torch.tensor(1.0))
        True
    """
    texts = as_texts(prompts)
    adapter = model_adapter(model, part)
    metric_fn(metric)  # validate before any model work
    layer_ids = select_indices(layers, adapter.n_layers, "layers")
    head_ids = select_heads(heads, layer_ids, n_kv_heads(model))
    if rollout and not normalize:
        raise ValueError("rollout=True composes row-normalised matrices; pass normalize=True.")
    if rollout and adapter.part == "cross":
        raise ValueError(
            "rollout=True composes square [query_pos, key_pos] matrices; cross-attention's are "
            "target x source. Pass part='encoder' or 'decoder', or rollout=False."
        )
    budget = max_batch_tokens
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"max_batch_tokens must be a positive int, got {max_batch_tokens!r}.")
    chosen = per_prompt(targets, len(texts))
    outputs = []
    examples = adapter.encode(texts, targets, generation_kwargs, prepend_bos)
    for example, target in zip(examples, chosen):
        scores = _scores(adapter, example, head_ids, metric, normalize, max_batch_tokens)
        query_tokens, key_tokens = side_tokens(adapter, example)
        query_ids, key_ids = adapter.sides(example)
        cross = adapter.part == "cross"
        parameters = {
            "part": adapter.part,
            "targets": target,
            "layers": layer_ids,
            "heads": head_ids,
            "metric": metric,
            "normalize": normalize,
            "rollout": rollout,
            "max_batch_tokens": max_batch_tokens,
            "prepend_bos": prepend_bos,
            "generation_kwargs": dict(generation_kwargs or {}) if target is None else None,
        }
        outputs.append(
            MixingOutput(
                tokens=query_tokens,
                token_ids=torch.tensor(query_ids),
                scores=scores.cpu(),
                layers=tuple(layer_ids),
                rollout=rollout_scores(scores).cpu() if rollout else None,
                method="value_zeroing",
                parameters=parameters,
                target_start=example.target_start,
                key_tokens=key_tokens if cross else None,
                key_token_ids=torch.tensor(key_ids) if cross else None,
                causal=adapter.causal,
                model=describe_model(model),
            )
        )
    return outputs
