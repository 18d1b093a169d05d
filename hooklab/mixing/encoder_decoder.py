"""Value zeroing on encoder–decoder models (Marian, BART, T5): the batched path.

Three score sets per example, as Inseq computes for its OpusMT example (Mohebbi et al., EACL
2023), one per ``part`` of :func:`hooklab.mixing.value_zeroing`: encoder self-attention
(source × source), decoder self-attention (target × target, causal) and cross-attention
(target × source: the encoder tokens' values are zeroed in the decoder's cross-attention). The
layer output compared is the block's output.

Why not the decoder-only shortcut (measured on transformers 5, TransformerLens 4.3): the
attention of these models runs inside the wrapped Hugging Face module, so ``hook_pattern`` /
``hook_attn_scores`` fire after the fact and their edits are discarded, and the blocks are
post-LN with three sublayers in the decoder. Edits of ``hook_v``, ``hook_z`` and the blocks'
``hook_out`` do take effect. So the zeroed tokens run as copies of one batch (copy j zeroes
token j's values at every selected layer) and every selected block's output is put back to the
clean one, so that each layer runs from its clean input, as in the paper. Each pass checks that
``z`` was computed from the zeroed values, so a discarded edit raises instead of returning
zeros.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor

from hooklab.hooks import recorder
from hooklab.precision import reduction_dtype
from hooklab.selfcheck import check_identity

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from hooklab.mixing.adapter import EncoderDecoder, Example


def part_scores(
    adapter: EncoderDecoder,
    example: Example,
    heads: Mapping[int, Sequence[int]],
    metric: Callable[[Tensor, Tensor], Tensor],
    chunk_size: int = 2048,
) -> Float[Tensor, "layer query_pos key_pos"]:
    """Unnormalised distances ``[layer, query_pos, key_pos]`` of ``adapter.part`` (module doc),
    in float32 (float64 for a float64 model) on the CPU, where each chunk's moves once computed.

    Args:
        heads: resolved key/value heads per layer (the layers computed).
        metric: the distance function.
        chunk_size: about how many (query, key) pairs one batched pass recomputes.
    """
    device, layers = adapter.model.cfg.device, list(heads)
    query_ids, key_ids = adapter.sides(example)
    n_query, n_keys = len(query_ids), len(key_ids)
    out_names = [adapter.hook("out", la) for la in layers]
    hooks, clean = recorder(out_names)
    adapter.run(example, 1, hooks)
    dtype = reduction_dtype(clean[out_names[0]].dtype)
    scores = torch.zeros(len(layers), n_query, n_keys, dtype=dtype)
    step = max(1, chunk_size // n_query)  # zeroed keys (batch copies) per pass
    for lo in range(0, n_keys, step):
        keys = torch.arange(lo, min(n_keys, lo + step), device=device)
        copy = torch.arange(len(keys), device=device)[:, None]

        def zero(layer, keys=keys, copy=copy):
            chosen = torch.tensor(list(heads[layer]), dtype=torch.long, device=device)

            def fn(v, hook):  # [copy, key_pos, kv_head, d_head]: copy c zeroes token keys[c]
                v = v.clone()
                v[copy, keys[:, None], chosen[None, :]] = 0
                return v

            return fn

        def compare(layer, row, keys=keys):
            def fn(out, hook):  # [copy, query_pos, d_model]
                reference = clean[adapter.hook("out", layer)].expand_as(out)
                scores[row, :, keys.cpu()] = metric(out, reference).T.cpu()
                return reference.clone()  # the next layer runs from its clean input

            return fn

        edits = []
        for row, la in enumerate(layers):
            edits += [
                (adapter.hook("v", la), zero(la)),
                (adapter.hook("out", la), compare(la, row)),
            ]
        # recorded after the edits on the same hook points: ``v`` is the zeroed value
        record, seen = recorder(
            [adapter.hook(k, la) for la in layers for k in ("v", "pattern", "z")]
        )
        adapter.run(example, len(keys), [*edits, *record])
        for la in layers:
            pattern, v, z = (seen[adapter.hook(k, la)] for k in ("pattern", "v", "z"))
            check_identity(
                "z = pattern @ v (zeroed values)",
                torch.einsum("bhqk,bkhd->bqhd", pattern, v),
                z,
                where=adapter.hook("v", la),
                hint="The value zeroing did not take effect on this model's bridge.",
            )
    return scores
