"""Value zeroing on encoder–decoder models (Marian, BART...) through the TransformerLens bridge.

Three score sets per example, as Inseq computes for its OpusMT example (Mohebbi et al., EACL
2023): encoder self-attention (source × source), decoder self-attention (target × target,
causal) and cross-attention (target × source: the encoder tokens' values are zeroed in the
decoder's cross-attention). The layer output compared is the block's output.

What the bridge offers here (measured on transformers 5, TransformerLens 4.3): the attention of
these models runs inside the wrapped Hugging Face module, so ``hook_pattern`` /
``hook_attn_scores`` fire after the fact and their edits are discarded (the bridge warns), and
on Marian/BART ``hook_attn_scores`` holds the post-softmax pattern. Edits of ``hook_v``,
``hook_z`` and the blocks' ``hook_out`` do take effect. The blocks are post-LN and the decoder
has three sublayers, so the decoder-only shortcut does not apply; instead all zeroed tokens of a
part run as one batch (copy j zeroes token j's values at every selected layer) and every
selected block's output is put back to the clean one, so that each layer runs from its clean
input, as in the paper. Each pass checks that ``z`` was computed from the zeroed values, so a
discarded edit raises instead of returning zeros.
Attention knockout on these models: :mod:`hooklab.mixing.encoder_decoder_knockout`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from hooklab.hooks import temporary_hooks
from hooklab.inputs import str_tokens
from hooklab.methods.attention import select_indices
from hooklab.mixing.output import MixingOutput
from hooklab.mixing.sequences import as_texts
from hooklab.mixing.value_zeroing import metric_fn, normalize_rows, select_heads

PARTS = ("encoder", "decoder", "cross")
_ATTENTION = {
    "encoder": "encoder_blocks.{layer}.attn",
    "decoder": "decoder_blocks.{layer}.self_attn",
    "cross": "decoder_blocks.{layer}.cross_attn",
}


def is_encoder_decoder(model) -> bool:
    """Whether the bridge wraps an encoder–decoder model (it has encoder and decoder blocks)."""
    return hasattr(model, "encoder_blocks") and hasattr(model, "decoder_blocks")


def seq2seq_hook_name(part: str, kind: str, layer: int) -> str:
    """Hook name of ``kind`` ("v", "z", "pattern", "attn_scores", or "out" for the block output)
    in ``part`` ("encoder", "decoder" self-attention or "cross"-attention) at ``layer``."""
    if part not in _ATTENTION:
        raise ValueError(f"Unknown part {part!r}; valid parts: {', '.join(PARTS)}.")
    if kind == "out":
        stack = "encoder_blocks" if part == "encoder" else "decoder_blocks"
        return f"{stack}.{layer}.hook_out"
    return _ATTENTION[part].format(layer=layer) + f".hook_{kind}"


def n_part_layers(model, part: str) -> int:
    """Number of layers of the encoder (``part="encoder"``) or the decoder."""
    return len(model.encoder_blocks if part == "encoder" else model.decoder_blocks)


def encode_pair(model, source: str, target: str | None, generation_kwargs=None):
    """Source ids (the tokenizer's special tokens included) and decoder input ids (the decoder
    start token, then the forced target, or the greedy translation when ``target`` is None)."""
    hf = model.original_model
    src = list(model.tokenizer(source)["input_ids"])
    start = hf.config.decoder_start_token_id
    if target is not None:
        return src, [start, *model.tokenizer(target, add_special_tokens=False)["input_ids"]]
    options = {"max_new_tokens": 32, **dict(generation_kwargs or {})}
    out = hf.generate(torch.tensor([src], device=model.cfg.device), do_sample=False, **options)
    tgt = out[0].tolist()
    eos = hf.config.eos_token_id
    return src, tgt[:-1] if tgt[-1] == eos and len(tgt) > 1 else tgt


def run_seq2seq(model, src: Tensor, tgt: Tensor, copies: int, hooks) -> Tensor:
    """Logits of ``copies`` copies of (source, decoder input), with ``hooks`` attached."""
    with temporary_hooks(model, hooks):
        return model(src.expand(copies, -1), decoder_input_ids=tgt.expand(copies, -1))


def part_scores(
    model, src: list[int], tgt: list[int], part: str, heads: dict[int, list[int]], metric
) -> Float[Tensor, "layer query_pos key_pos"]:
    """Unnormalised distances ``[layer, query_pos, key_pos]`` of one part (see module doc)."""
    device = model.cfg.device
    src_t, tgt_t = torch.tensor([src], device=device), torch.tensor([tgt], device=device)
    layers = list(heads)
    clean: dict[int, Tensor] = {}

    def keep(layer):
        def fn(x, hook):
            clean[layer] = x.detach()

        return fn

    run_seq2seq(
        model, src_t, tgt_t, 1, [(seq2seq_hook_name(part, "out", la), keep(la)) for la in layers]
    )
    n_keys = len(tgt) if part == "decoder" else len(src)
    n_query = len(src) if part == "encoder" else len(tgt)
    scores = torch.zeros(len(layers), n_query, n_keys, dtype=clean[layers[0]].dtype, device=device)
    copy = torch.arange(n_keys, device=device)[:, None]
    seen: dict[tuple[str, int], Tensor] = {}

    def zero(layer):
        def fn(v, hook):  # [copy, key_pos, head, d_head]: copy j zeroes token j
            v = v.clone()
            v[copy, copy, torch.tensor(heads[layer], device=device)[None, :]] = 0
            seen[("v", layer)] = v
            return v

        return fn

    def record(kind, layer):
        def fn(x, hook):
            seen[(kind, layer)] = x.detach()

        return fn

    def compare(layer):
        def fn(out, hook):  # [copy, query_pos, d_model]
            scores[layers.index(layer)] = metric(out, clean[layer].expand_as(out)).T
            return clean[layer].expand_as(out).clone()  # the next layer runs from clean input

        return fn

    hooks = []
    for la in layers:
        hooks += [(seq2seq_hook_name(part, "v", la), zero(la))]
        hooks += [(seq2seq_hook_name(part, k, la), record(k, la)) for k in ("pattern", "z")]
        hooks += [(seq2seq_hook_name(part, "out", la), compare(la))]
    run_seq2seq(model, src_t, tgt_t, n_keys, hooks)
    for la in layers:
        z = torch.einsum("bhqk,bkhd->bqhd", seen[("pattern", la)], seen[("v", la)])
        if not torch.allclose(z, seen[("z", la)], rtol=1e-4, atol=1e-5):
            raise RuntimeError(
                f"The value zeroing at {seq2seq_hook_name(part, 'v', la)!r} did not take effect "
                "(z was not computed from the edited values) on this model's bridge."
            )
    return scores


@torch.no_grad()
def encoder_decoder_value_zeroing(
    model,
    texts: str | Sequence[str],
    *,
    target: str | Sequence[str] | None = None,
    parts: Sequence[str] = PARTS,
    layers: int | range | Sequence[int] | None = None,
    heads=None,
    metric: str = "cosine",
    normalize: bool = True,
    generation_kwargs: Mapping[str, Any] | None = None,
) -> list[dict[str, MixingOutput]]:
    """Value-zeroing mixing scores of an encoder–decoder model (Mohebbi et al., EACL 2023).

    Args:
        model: a ``TransformerBridge`` of an encoder–decoder model (Marian, BART...).
        texts: one source text or a list.
        target: forced target text(s); None translates greedily (``generation_kwargs`` go to
            the Hugging Face ``generate``).
        parts: which score sets: ``"encoder"`` (source × source), ``"decoder"`` (target ×
            target) and ``"cross"`` (target × source).
        layers: layers of each part (of the encoder, or of the decoder for the other parts).
        heads: heads whose values are zeroed: an int, a range, a list or ``{layer: heads}``.
        metric: ``"cosine"`` or ``"euclidean"``.
        normalize: divide each row by its sum.

    Returns:
        Per text, ``{part: MixingOutput}``; target tokens start with the decoder start token.
    """
    sources = as_texts(texts)
    distance = metric_fn(metric)
    bad = [p for p in parts if p not in PARTS]
    if bad or not parts:
        raise ValueError(f"Unknown parts {bad or parts!r}; choose from {', '.join(PARTS)}.")
    if not is_encoder_decoder(model):
        raise TypeError("This model is decoder-only; use hooklab.mixing.value_zeroing.")
    chosen = {}
    for part in parts:
        ids = select_indices(layers, n_part_layers(model, part), f"{part} layers")
        chosen[part] = select_heads(heads, ids, model.cfg.n_heads)
    targets = [target] * len(sources) if target is None or isinstance(target, str) else target
    if len(targets) != len(sources):
        raise ValueError(f"Got {len(targets)} targets for {len(sources)} texts; pass one each.")
    outputs = []
    for text, tgt_text in zip(sources, targets, strict=True):
        src, tgt = encode_pair(model, text, tgt_text, generation_kwargs)
        src_tokens, tgt_tokens = tuple(str_tokens(model, src)), tuple(str_tokens(model, tgt))
        result = {}
        for part, part_heads in chosen.items():
            scores = part_scores(model, src, tgt, part, part_heads, distance)
            if part == "decoder":  # the causal mask leaves ~1e-30 on later tokens: drop it
                scores = scores.tril()
            scores = normalize_rows(scores) if normalize else scores
            cross = part == "cross"
            result[part] = MixingOutput(
                tokens=src_tokens if part == "encoder" else tgt_tokens,
                token_ids=torch.tensor(src if part == "encoder" else tgt),
                scores=scores.cpu(),
                layers=tuple(part_heads),
                method="value_zeroing",
                parameters={
                    "part": part,
                    "heads": part_heads,
                    "metric": metric,
                    "normalize": normalize,
                },
                key_tokens=src_tokens if cross else None,
                key_token_ids=torch.tensor(src) if cross else None,
                causal=part == "decoder",
            )
        outputs.append(result)
    return outputs
