"""Value zeroing: how much each token mixes every earlier token into its representation.

Mohebbi et al. (EACL 2023), "Quantifying Context Mixing in Transformers": for layer ℓ and token
j, run layer ℓ from its clean input with the value vector of token j zeroed, and score every
token i by the distance between its layer-ℓ output with and without; rows are normalised to
sum to 1. Under a causal mask only i ≥ j can change. The result is a ``[layer, query_pos,
key_pos]`` mixing matrix per example; optionally rolled out across layers
(``J_ℓ = S_ℓ · J_{ℓ-1}``).

How it is computed (one algorithm for every family and every ``part``; what differs between
decoder-only and encoder–decoder models, which blocks and which hook names, lives in
:mod:`hooklab.mixing.adapter`). Clean forward passes record how the selected block is called
(:mod:`hooklab.mixing.block_calls`) and its output, as many layers per capture as fit
:data:`hooklab.budget.CAPTURE_ELEMENTS` (all of a short input's; one of a long one's, so memory
holds one layer's activations, not every layer's). Then the model's own block ℓ is
called again from that clean input on a batch of copies, copy c with the value vectors of key
c zeroed at the bridge's ``hook_v`` (value bias included: in the default, non-compatibility
mode it holds the true value vectors), about ``max_batch_tokens`` token rows per call, and each
query's block output is compared with the clean one. Nothing is re-derived by hand, so parallel
attention and MLP (GPT-NeoX, Phi, GPT-J, Falcon), norms after attention (Gemma 2, OLMo 2),
residual multipliers (Granite) and three-sublayer decoder blocks (Marian, BART, T5) take the
same path. Two self-checks raise instead of returning wrong scores: the block run alone
reproduces its output in the full pass, and ``z = pattern @ v`` holds with the zeroed values
(a bridge that discarded the edit would fail it).

Heads. Value vectors belong to key/value heads. On models with grouped key/value heads
(Llama-style GQA), ``heads`` indexes the key/value heads, and zeroing v_j of one of them zeroes
it for every query head that shares it (exactly what a ``hook_v`` intervention does). On
multi-head models (GPT-2) key/value heads and query heads are the same.

Encoder–decoder models: ``part="encoder"`` (source × source), ``"decoder"`` (target × target,
causal) or ``"cross"`` (target × source: the source tokens' values are zeroed in the decoder's
cross-attention); the block output compared is the encoder or decoder block's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any

import torch
from jaxtyping import Float
from torch import Tensor

from hooklab.architecture import check_raw_mode, n_kv_heads, select_indices
from hooklab.budget import MAX_BATCH_TOKENS, layer_groups
from hooklab.encoding import TargetsArg, per_prompt
from hooklab.hooks import recorder
from hooklab.mixing.adapter import DecoderOnly, Example, Part, model_adapter, side_tokens
from hooklab.mixing.block_calls import BlockCall, capture_block_calls
from hooklab.mixing.matrices import (  # noqa: F401  (re-exported: the value-zeroing API)
    METRICS,
    cosine_distance,
    euclidean_distance,
    metric_fn,
    normalize_rows,
    rollout_scores,
)
from hooklab.mixing.output import MixingOutput
from hooklab.mixing.sequences import as_prompts
from hooklab.mixing.value_zeroing_fast import analytic_matrices
from hooklab.options import Choice, PositiveInt, checked_options
from hooklab.output.provenance import describe_model
from hooklab.planner import fit
from hooklab.precision import reduction_dtype
from hooklab.selfcheck import check_identity

if TYPE_CHECKING:
    from hooklab.mixing.adapter import Adapter

#: What ``heads=`` accepts (both entries): an int, a range, a list, or ``{layer: heads}``.
HeadsArg = int | range | Sequence[int] | Mapping[int, int | range | Sequence[int]] | None


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


def zero_values(keys: Tensor, heads: Sequence[int]):
    """A ``hook_v`` edit: copy c of the batch has the values of token ``keys[c]`` zeroed in
    the key/value ``heads``."""

    def fn(v, hook):  # [copy, key_pos, kv_head, d_head]
        chosen = torch.tensor(list(heads), dtype=torch.long, device=v.device)
        copy = torch.arange(len(keys), device=v.device)[:, None]
        v = v.clone()
        v[copy, keys.to(v.device)[:, None], chosen[None, :]] = 0
        return v

    return fn


def _check_zeroed(seen: Mapping[str, Tensor], adapter: Adapter, layer: int) -> None:
    """Raise if the attention output was not computed from the zeroed values."""
    pattern, v, z = (seen[adapter.hook(k, layer)] for k in ("pattern", "v", "z"))
    v = v.repeat_interleave(pattern.shape[1] // v.shape[2], dim=2)  # kv heads -> query heads
    check_identity(
        "z = pattern @ v (zeroed values)",
        torch.einsum("bhqk,bkhd->bqhd", pattern, v),
        z,
        where=adapter.hook("v", layer),
        hint="The value zeroing did not take effect on this model's bridge.",
    )


def _check_alone(adapter: Adapter, call: BlockCall, layer: int) -> None:
    """Raise if block ``layer`` run alone does not reproduce its output in the full pass."""
    hooks, seen = recorder([adapter.hook("out", layer)])
    call.run(1, hooks, adapter.model)
    check_identity(
        "block output run alone = block output in the full forward",
        seen[adapter.hook("out", layer)][0],
        call.clean,
        where=f"layer {layer}",
        error=NotImplementedError,
        hint="The block depends on something its captured arguments do not carry.",
    )


def layer_scores(
    adapter: Adapter,
    call: BlockCall,
    layer: int,
    heads: Sequence[int],
    metric: Callable[[Tensor, Tensor], Tensor],
    budget: int,
    n_keys: int,
    rows: Sequence[int] | None = None,
) -> Float[Tensor, "query_pos key_pos"]:
    """Distance of each query's block-``layer`` output when each key's values are zeroed.

    The block runs from its clean input on batches of copies (copy c zeroes key c), about
    ``budget`` token rows per call. Under a causal mask only queries >= key are kept.
    ``rows``: only these query rows are returned (the block runs, and distances are taken, on
    every position: attention mixes them).
    """
    _check_alone(adapter, call, layer)
    n_query = call.clean.shape[0]
    names = [adapter.hook(k, layer) for k in ("out", "v", "pattern", "z")]
    scores = torch.zeros(n_query, n_keys, dtype=reduction_dtype(call.clean.dtype))
    step = max(1, budget // n_query)  # zeroed keys (batch copies) per call
    for lo in range(0, n_keys, step):
        keys = torch.arange(lo, min(n_keys, lo + step))
        record, seen = recorder(names)  # after the edit on hook_v: sees the zeroed values
        call.run(len(keys), [(names[1], zero_values(keys, heads)), *record], adapter.model)
        _check_zeroed(seen, adapter, layer)
        out = seen[names[0]]  # [copy, query_pos, d_model]
        scores[:, keys] = metric(out, call.clean.expand_as(out)).T.cpu()
    scores = scores.tril() if adapter.causal else scores
    return scores if rows is None else scores[list(rows)]


def general_matrices(
    adapter: Adapter,
    example: Example,
    heads: Mapping[int, Sequence[int]],
    metric: Callable[[Tensor, Tensor], Tensor],
    budget: int,
    rows: Sequence[int] | None = None,
) -> Float[Tensor, "layer query_pos key_pos"]:
    """Unnormalised matrices by rerunning the model's own blocks (module doc), on the CPU
    (``rows``: only these query rows).

    Layers are captured in groups that fit :data:`~hooklab.budget.CAPTURE_ELEMENTS` (all of
    a short input's layers in one pair of clean forwards, one layer of a long one's), each
    layer's block call dropped once scored."""
    n_keys = len(adapter.sides(example)[1])
    n_query = len(adapter.sides(example)[0])
    d_model = int(adapter.model.cfg.d_model)
    per_layer = n_query * n_keys + 4 * n_query * d_model  # mask + inputs, for 1 and 2 copies
    scores, i = None, 0
    for group in layer_groups(list(heads), per_layer):
        calls = capture_block_calls(adapter, example, group)
        for layer in group:
            one = layer_scores(adapter, calls.pop(layer), layer, heads[layer], metric, budget,
                               n_keys, rows)  # fmt: skip
            if scores is None:  # [layer, query_pos, key_pos], filled in place
                scores = torch.zeros(len(heads), *one.shape, dtype=one.dtype)
            scores[i], i = one, i + 1
    return scores


@torch.no_grad()
def part_matrices(
    adapter: Adapter,
    example: Example,
    heads: Mapping[int, Sequence[int]],
    *,
    metric: str = "cosine",
    normalize: bool = True,
    max_batch_tokens: int = MAX_BATCH_TOKENS,
    fast_path: bool = True,
    rows: Sequence[int] | None = None,
) -> Float[Tensor, "layer query_pos key_pos"]:
    """Value-zeroing matrices of one example's ``adapter.part`` attention, one per layer.

    The one algorithm of both entries (:func:`value_zeroing` and the attribution method), for
    decoder-only and encoder–decoder models: ``[layer, query_pos, key_pos]`` (rows normalised
    to sum to 1 when ``normalize``), in float32 (float64 for a float64 model) on the CPU.

    Args:
        heads: resolved key/value heads per layer (see :func:`select_heads`); its keys are the
            layers computed, in order.
        fast_path: on decoder-only models whose blocks it proves to have the pre-norm,
            attention-then-MLP layout, recompute only the MLP by hand
            (:mod:`hooklab.mixing.value_zeroing_fast`); False always runs the model's blocks.
        rows: only these query rows (``[layer, len(rows), key_pos]``, equal to those rows of
            the full matrices): the fast path recomputes only their (query, key) pairs and
            neither path holds the other rows.
    """
    distance = metric_fn(metric)
    scores, budget = None, max_batch_tokens
    if fast_path and not adapter.encoder_decoder:
        scores = analytic_matrices(adapter.model, example.ids, heads, distance, budget, rows)
    if scores is None:
        scores = general_matrices(adapter, example, heads, distance, budget, rows)
    return normalize_rows(scores) if normalize else scores


def mixing_matrices(
    model,
    ids: Sequence[int],
    *,
    layers: Sequence[int],
    heads: Mapping[int, Sequence[int]],
    metric: str = "cosine",
    normalize: bool = True,
    max_batch_tokens: int = MAX_BATCH_TOKENS,
    fast_path: bool = True,
) -> Float[Tensor, "layer query_pos key_pos"]:
    """Value-zeroing matrices of one token sequence of a decoder-only model (BOS included, as
    the model sees it): :func:`part_matrices` of its only attention."""
    return part_matrices(
        DecoderOnly(model), Example(tuple(ids)), {la: list(heads[la]) for la in layers},
        metric=metric, normalize=normalize, max_batch_tokens=max_batch_tokens,
        fast_path=fast_path,
    )  # fmt: skip


#: The distances ``metric=`` names (:data:`~hooklab.mixing.matrices.METRICS`).
Metric = Annotated[str, Choice(*METRICS)]


def resolve_options(model, adapter: Adapter, layers, heads):
    """Validate the options both entries share that are not scalars (their scalar options are
    declared in their signatures and checked on entry), before any model work; return the
    layers and the key/value heads per layer (:func:`select_heads`)."""
    check_raw_mode(model, "Value zeroing")
    layer_ids = select_indices(layers, adapter.n_layers, "layers")
    return layer_ids, select_heads(heads, layer_ids, n_kv_heads(model))


@checked_options
@torch.no_grad()
def value_zeroing(
    model,
    prompts: str | Sequence[str] | Sequence[Sequence[int]],
    *,
    targets: TargetsArg = None,
    part: Part | None = None,
    layers: int | range | Sequence[int] | None = None,
    heads: HeadsArg = None,
    metric: Metric = "cosine",
    normalize: bool = True,
    rollout: bool = False,
    generation_kwargs: Mapping[str, Any] | None = None,
    max_batch_tokens: PositiveInt = MAX_BATCH_TOKENS,
    fast_path: bool = True,
    prepend_bos: bool | None = None,
    max_bytes: PositiveInt | None = None,
) -> list[MixingOutput]:
    """Compute value-zeroing context-mixing scores (Mohebbi et al., EACL 2023).

    Args:
        model: a ``TransformerBridge`` from :func:`hooklab.load` (default, non-compatibility
            mode, so that ``hook_v`` holds the true value vectors), decoder-only or
            encoder–decoder.
        prompts: one prompt or a list of prompts, texts or token-id lists (the sources of an
            encoder–decoder).
        targets: as in :func:`hooklab.attribute`: ``None`` generates greedily with
            :func:`hooklab.generate` (``generation_kwargs`` are its options, on every family);
            one text for every prompt, or one text or token-id list per prompt; ``""`` adds
            none.
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
        max_batch_tokens: token rows per batched block call: each zeroed key is one copy
            of the query tokens through the block (bounds the memory; the scores do not
            depend on it). The same option as the attribution methods'.
        fast_path: allow the analytic MLP recompute where a self-check proves it on this
            model (decoder-only, pre-norm, attention then MLP; see
            :mod:`hooklab.mixing.value_zeroing_fast`); False always runs the model's blocks.
            The scores do not depend on it (up to rounding).
        prepend_bos: prepend BOS to the prompts (None: where the model's tokenizer adds it;
            decoder-only models).
        max_bytes: memory budget above the weights (None: no check): the peak is estimated
            per prompt first (:func:`hooklab.planner.fit`), ``max_batch_tokens`` lowered to
            fit, and :class:`hooklab.planner.MemoryBudgetError` raised when nothing does.

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
    prompts = as_prompts(prompts)
    adapter = model_adapter(model, part)
    layer_ids, head_ids = resolve_options(model, adapter, layers, heads)
    if rollout and not normalize:
        raise ValueError("rollout=True composes row-normalised matrices; pass normalize=True.")
    if rollout and adapter.part == "cross":
        raise ValueError(
            "rollout=True composes square [query_pos, key_pos] matrices; cross-attention's are "
            "target x source. Pass part='encoder' or 'decoder', or rollout=False."
        )
    chosen = per_prompt(targets, len(prompts)) or [None] * len(prompts)
    outputs = []
    examples = adapter.encode(prompts, targets, generation_kwargs, prepend_bos)
    for example, target in zip(examples, chosen):
        width = max(len(side) for side in adapter.sides(example))
        fitted = fit(model, "value_zeroing", max_bytes=max_bytes, positions=width,
                     max_batch_tokens=max_batch_tokens, query_rows=width)  # fmt: skip
        scores = part_matrices(
            adapter, example, head_ids, metric=metric, normalize=normalize,
            max_batch_tokens=fitted.max_batch_tokens, fast_path=fast_path,
        )  # fmt: skip
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
            "fast_path": fast_path,
            "prepend_bos": prepend_bos,
            "generation_kwargs": dict(generation_kwargs or {}) if target is None else None,
            **({"max_bytes": max_bytes} if max_bytes is not None else {}),
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
