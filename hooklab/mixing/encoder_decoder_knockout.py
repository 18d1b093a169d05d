"""Attention knockout (Geva et al., EMNLP 2023) on encoder–decoder models (Marian, BART...).

On these models the bridge's attention runs inside the wrapped Hugging Face module and the
edits of ``hook_pattern`` / ``hook_attn_scores`` are discarded (the bridge warns), so the
edges cannot be blocked through hooks. Instead a small shim swaps in an eager attention
function that sets the blocked edges' pre-softmax scores to the dtype minimum
(:func:`blocked_attention`), for the duration of the call only. The hooks are still used to
check the result: every pass verifies that the blocked weights are 0 and that ``z`` was
computed from the edited pattern, and raises otherwise (e.g. for an attention class that
does not call Hugging Face's attention-function registry).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from hooklab.inputs import str_tokens
from hooklab.methods.attention import select_indices
from hooklab.mixing.encoder_decoder import (
    PARTS,
    encode_pair,
    n_part_layers,
    run_seq2seq,
    seq2seq_hook_name,
)
from hooklab.mixing.knockout import window_layers
from hooklab.mixing.knockout_output import KnockoutOutput
from hooklab.mixing.sequences import PositionsArg, token_positions


def _hf_attention(model, part: str, layer: int) -> torch.nn.Module:
    """The wrapped Hugging Face attention module of ``part`` at ``layer``."""
    if part == "encoder":
        return model.encoder_blocks[layer].attn.original_component
    block = model.decoder_blocks[layer]
    return (block.self_attn if part == "decoder" else block.cross_attn).original_component


@contextlib.contextmanager
def blocked_attention(model, masks: Mapping[torch.nn.Module, Tensor]) -> Iterator[None]:
    """Run the wrapped attention modules' eager attention with some edges blocked.

    The shim: for the duration, the "eager" entry of Hugging Face's process-wide
    ``ALL_ATTENTION_FUNCTIONS`` registry points to a wrapper that calls the module's own eager
    function (from the module's modeling file, so scaling, T5's position bias and the like are
    kept) with the blocked edges (``masks[module]``: ``[batch, query_pos, key_pos]``, True =
    blocked) set to the dtype minimum in the additive attention mask; the model's configs are
    set to eager attention. Both are restored on exit, also after an exception.
    """
    import inspect

    from transformers import PretrainedConfig
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    def attention(module, query, key, value, attention_mask, *args, **kwargs):
        eager = getattr(inspect.getmodule(type(module)), "eager_attention_forward", None)
        if eager is None:
            raise NotImplementedError(
                f"{type(module).__name__} has no eager_attention_forward in its modeling file; "
                "attention knockout cannot be applied to this model."
            )
        if module in masks:
            blocked = masks[module].to(query.device)[:, None]  # [batch, 1, query, key]
            floor = torch.finfo(query.dtype).min
            base = query.new_zeros(()) if attention_mask is None else attention_mask
            attention_mask = torch.where(blocked, query.new_tensor(floor), base)
        return eager(module, query, key, value, attention_mask, *args, **kwargs)

    configs = {
        id(m.config): m.config
        for m in model.original_model.modules()
        if isinstance(getattr(m, "config", None), PretrainedConfig)
    }
    before = {key: config._attn_implementation for key, config in configs.items()}
    previous = ALL_ATTENTION_FUNCTIONS.get("eager")
    ALL_ATTENTION_FUNCTIONS["eager"] = attention
    try:
        for config in configs.values():
            config._attn_implementation = "eager"
        yield
    finally:
        for key, config in configs.items():
            config._attn_implementation = before[key]
        if previous is None:
            del ALL_ATTENTION_FUNCTIONS["eager"]
        else:
            ALL_ATTENTION_FUNCTIONS["eager"] = previous


def _lengths(part: str, n_src: int, n_tgt: int) -> tuple[int, int]:
    """(query, key) lengths of ``part``'s attention."""
    return {"encoder": (n_src, n_src), "decoder": (n_tgt, n_tgt), "cross": (n_tgt, n_src)}[part]


def seq2seq_knockout_probabilities(
    model, src: list[int], tgt: list[int], part: str, knockouts, target_id: int, batch_size: int
) -> Float[Tensor, "batch"]:
    """P(``target_id``) after the decoder prefix under each ``(layers, queries, keys)``
    knockout of ``part``'s attention, through :func:`blocked_attention` (batched)."""
    n_q, n_k = _lengths(part, len(src), len(tgt))
    for layers, queries, keys in knockouts:
        for q in queries:  # a query must keep at least one visible key
            visible = range(q + 1) if part == "decoder" else range(n_k)
            if layers and set(visible) <= set(keys):
                raise ValueError(
                    f"Blocking keys {sorted(keys)} would leave {part} query position {q} no "
                    "key to attend to; keep at least one of them."
                )
    device, probs = model.cfg.device, []
    src_t, tgt_t = torch.tensor([src], device=device), torch.tensor([tgt], device=device)
    for lo in range(0, len(knockouts), batch_size):
        chunk = knockouts[lo : lo + batch_size]
        masks: dict[int, Tensor] = {}
        for b, (layers, queries, keys) in enumerate(chunk):
            q, k = torch.tensor(queries, dtype=torch.long), torch.tensor(keys, dtype=torch.long)
            for layer in layers:
                mask = masks.setdefault(layer, torch.zeros(len(chunk), n_q, n_k, dtype=torch.bool))
                mask[b, q[:, None], k[None, :]] = True
        seen: dict[tuple[str, int], Tensor] = {}

        def record(kind, layer, seen=seen):
            def fn(x, hook):
                seen[(kind, layer)] = x.detach()

            return fn

        hooks = [
            (seq2seq_hook_name(part, kind, layer), record(kind, layer))
            for layer in masks
            for kind in ("pattern", "v", "z")
        ]
        modules = {_hf_attention(model, part, layer): mask for layer, mask in masks.items()}
        with blocked_attention(model, modules):
            logits = run_seq2seq(model, src_t, tgt_t, len(chunk), hooks)
        for layer, mask in masks.items():
            pattern, v, z = (seen[(kind, layer)] for kind in ("pattern", "v", "z"))
            leaked = pattern.masked_select(mask.to(pattern.device)[:, None])
            recomputed = torch.einsum("bhqk,bkhd->bqhd", pattern, v)
            if leaked.abs().sum() > 1e-6 or not torch.allclose(recomputed, z, 1e-4, 1e-5):
                raise RuntimeError(
                    f"The knockout of {part} attention at layer {layer} did not take effect on "
                    "this model (the blocked weights are not 0, or z was not computed from "
                    "them): its attention does not go through Hugging Face's eager function."
                )
        probs.append(torch.softmax(logits[:, -1].double(), -1)[:, target_id])
    return torch.cat(probs).cpu()


@torch.no_grad()
def encoder_decoder_knockout(
    model,
    text: str,
    *,
    prefix: str = "",
    sources: Mapping[str, PositionsArg],
    part: str = "cross",
    target: str | int | None = None,
    query: PositionsArg = -1,
    window: int | None = None,
    layers: int | range | Sequence[int] | None = None,
    batch_size: int = 16,
) -> KnockoutOutput:
    """Attention knockout (Geva et al., EMNLP 2023) in an encoder–decoder model.

    Blocks the edges query ← sources of ``part``'s attention ("cross": decoder positions ←
    source tokens; "decoder": decoder self-attention; "encoder") in windows of layers, and
    measures P(``target``) after the decoder prefix. Hook edits of the pattern are discarded
    by the bridge on these models, so the edges are blocked by :func:`blocked_attention`.

    Args:
        text: the source text.
        prefix: forced decoder text before the predicted token (after the start token).
        sources: ``{name: positions}`` in the source (encoder, cross) or the decoder input
            (decoder): ints, lists, ranges, or a substring.
        target: the token scored (the model's prediction when None; text or an id).
        query: query positions (decoder positions for cross/decoder; default the last).
        window: layers blocked around each centre layer; None blocks all layers at once.
    """
    if part not in PARTS:
        raise ValueError(f"Unknown part {part!r}; valid parts: {', '.join(PARTS)}.")
    src, tgt = encode_pair(model, text, prefix)
    src_tokens, tgt_tokens = tuple(str_tokens(model, src)), tuple(str_tokens(model, tgt))
    query_tokens = src_tokens if part == "encoder" else tgt_tokens
    key_tokens = tgt_tokens if part == "decoder" else src_tokens
    n_layers = n_part_layers(model, part)
    centres = None if window is None else tuple(select_indices(layers, n_layers, "layers"))
    windows = (
        (tuple(range(n_layers)),)
        if centres is None
        else tuple(window_layers(c, window, n_layers) for c in centres)
    )
    queries = tuple(token_positions(query_tokens, query, "query"))
    keys = {
        name: tuple(token_positions(key_tokens, spec, f"source {name!r}"))
        for name, spec in sources.items()
    }
    if isinstance(target, str):
        target = model.tokenizer(target, add_special_tokens=False)["input_ids"][0]
    if target is None:
        logits = run_seq2seq(model, torch.tensor([src]), torch.tensor([tgt]), 1, [])
        target = int(logits[0, -1].argmax())
    knockouts = [((), (), ())] + [(w, queries, k) for k in keys.values() for w in windows]
    probs = seq2seq_knockout_probabilities(model, src, tgt, part, knockouts, target, batch_size)
    return KnockoutOutput(
        tokens=query_tokens,
        token_ids=torch.tensor(src if part == "encoder" else tgt),
        target_id=target,
        target_token=str_tokens(model, [target])[0],
        queries=queries,
        sources=keys,
        windows=windows,
        centres=centres,
        base_probability=float(probs[0]),
        probabilities=probs[1:].reshape(len(keys), len(windows)),
        parameters={"part": part, "window": window, "intervention": "eager-attention shim"},
        key_tokens=src_tokens if part == "cross" else None,
    )
