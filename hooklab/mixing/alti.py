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

Each layer is checked before it is used (attention output = ``Σ_j T`` terms + a constant bias,
the block sums, the norm's fit); a layout that breaks one (scaled residual branches as in
Granite) raises ``NotImplementedError`` instead of returning wrong scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from hooklab.architecture import check_raw_mode, is_encoder_decoder, select_indices
from hooklab.encoding import TargetsArg, per_prompt
from hooklab.forward import forward, seq2seq_logits
from hooklab.hooks import hook_name, recorder
from hooklab.inputs import make_batch
from hooklab.mixing.adapter import model_adapter, side_tokens
from hooklab.mixing.alti_acts import LayerActs
from hooklab.mixing.linear_norm import LinearNorm, linear_norm
from hooklab.mixing.matrices import normalize_rows, rollout_scores
from hooklab.mixing.output import MixingOutput
from hooklab.mixing.sequences import as_prompts
from hooklab.options import checked_options
from hooklab.output.provenance import describe_model
from hooklab.precision import reduction_dtype
from hooklab.selfcheck import check_identity, tolerance

_KINDS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "v", "pattern")
#: (query, key, d_model) elements of transformed vectors held at once.
_CHUNK_ELEMENTS = 1 << 22


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


def _check(identity: str, got: Tensor, expected: Tensor, layer: int | str) -> None:
    check_identity(
        identity,
        got,
        expected,
        where=layer if isinstance(layer, str) else f"layer {layer}",
        error=NotImplementedError,
        hint="ALTI decomposes sequential pre-norm, post-norm and parallel blocks; this "
        "model's blocks are built differently (e.g. scaled residual branches): not supported.",
    )


def _head_values(attn: torch.nn.Module, v: Tensor, n_heads: int) -> Tensor:
    """``[key_pos, head, d_model]`` ``v^h_j W^h_O`` from ``hook_v`` (``[key_pos, kv_head,
    d_head]``)."""
    v = v.repeat_interleave(n_heads // v.shape[1], dim=1)  # key/value heads -> query heads
    return torch.einsum("khd,hdm->khm", v, attn.W_O.to(v.dtype))


def _fit(module, x_in: Tensor, x_out: Tensor, where: str) -> LinearNorm:
    fitted = linear_norm(module, x_in, x_out)
    if fitted is None:
        raise NotImplementedError(
            f"ALTI linearises the norms at {where} as a LayerNorm or RMSNorm; "
            f"{type(getattr(module, 'original_component', module)).__name__} computes "
            "something else: not supported."
        )
    return fitted


def _through(norm: LinearNorm, c: Tensor) -> Tensor:
    """``P(c) ⊙ scale`` (the linearised norm without its bias)."""
    return norm.project(c) * norm.scale


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
    head_values = _head_values(attn, v, pattern.shape[0])
    mixed = torch.einsum("hqk,khm->qm", pattern, head_values)  # Σ_j Σ_h a^h_ij v^h_j W^h_O
    b_o = (raw - mixed)[0]
    _check("attention = Σ_h pattern · v W_O + b_O", mixed + b_o, raw, layer)
    bias = b_o.expand_as(x)
    mid = get("resid_mid")
    if mid is None:
        _check("resid_post = resid_pre + attn_out + mlp_out", x + attn_out + mlp_out, post, layer)
        return LayerActs(x, post, x + mlp_out, mlp_out, head_values, pattern, bias, True)
    norm = None
    if normed is not None:  # Gemma 2/3, OLMo 2: the norm linearised at its input
        norm = _fit(model.blocks[layer].ln1_post, raw, normed, f"layer {layer}")
        bias = _through(norm, bias) + norm.beta
    _check("resid_mid = resid_pre + attn_out", x + (raw if normed is None else normed), mid, layer)
    return LayerActs(x, mid, x, post - mid, head_values, pattern, bias, False, norm)


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


def _sublayer(model, act: dict[str, Any], block, prefix: str, sub: str, x: Tensor) -> LayerActs:
    """One encoder–decoder attention sublayer on residual input ``x``: post-norm (``y =
    N(x + attn)``, Marian, BART) or pre-norm (``y = x + attn``, T5), proved on ``act``."""
    module, norm_name = _SUBLAYERS[sub]
    attn = getattr(block, module)
    where = f"{prefix}.{module}"
    pattern, v, attn_out = (act[f"{where}.hook_{k}"] for k in ("pattern", "v", "out"))
    head_values = _head_values(attn, v, pattern.shape[0])
    mixed = torch.einsum("hqk,khm->qm", pattern, head_values)
    b_o = (attn_out - mixed)[0]
    _check("attn_out = Σ_h pattern · v W_O + b_O", mixed + b_o, attn_out, where)
    norm_in, norm_out = act[f"{prefix}.{norm_name}.hook_in"], act[f"{prefix}.{norm_name}.hook_out"]
    cross = sub == "cross"
    if (norm_in - x - attn_out).abs().max() <= tolerance(norm_in):  # post-norm
        norm = _fit(getattr(block, norm_name), norm_in, norm_out, where)
        self_term, bias = _through(norm, x), _through(norm, b_o.expand_as(x)) + norm.beta
        return LayerActs(x, norm_out, self_term, None, head_values, pattern, bias, False,
                         norm, cross)  # fmt: skip
    _check("pre-norm input = the residual stream", norm_in, x, where)
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


def contributions(
    parts: Float[Tensor, "*rows part d_model"], total: Float[Tensor, "*rows d_model"]
) -> Float[Tensor, "*rows part"]:
    """ALTI's contribution of each part to the sum ``total``: ``max(0, ‖y‖₁ - ‖y - part‖₁)``,
    normalised per row (rows that are all 0 stay 0)."""
    y = total.to(reduction_dtype(total.dtype))
    scores = y.abs().sum(-1)[..., None] - (y[..., None, :] - parts.to(y.dtype)).abs().sum(-1)
    return normalize_rows(scores.clamp(min=0))


def layer_alti(layer: LayerActs) -> Float[Tensor, "query_pos key_pos"]:
    """One layer's row-normalised ALTI matrix (0 where a causal query cannot see the key).

    For cross-attention, the source keys' shares of a row normalised together with the
    residual's (ALTI+): the residual's share is ``1 - row sum``.
    """
    (n, d), keys = layer.y.shape, layer.head_values.shape[0] + layer.cross
    rows = []
    step = max(1, _CHUNK_ELEMENTS // (keys * d))
    for lo in range(0, n, step):
        queries = torch.arange(lo, min(n, lo + step), device=layer.y.device)
        rows.append(contributions(layer.transformed(queries), layer.y[queries]))
    scores = torch.cat(rows)
    return scores[:, :-1] if layer.cross else scores


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


@torch.no_grad()
def part_matrices(
    model, example, part: str, *, layers: Sequence[int]
) -> Float[Tensor, "layer query_pos key_pos"]:
    """ALTI(+) matrices of one encoder–decoder example's ``part`` attention, on the CPU:
    ``"encoder"`` (source × source) and ``"decoder"`` (target × target, causal) rows sum to
    1; ``"cross"`` (target × source) rows sum to 1 minus the residual's share."""
    act = record_seq2seq(model, example, part, layers)
    return torch.stack([layer_alti(part_acts(model, act, part, la)).cpu() for la in layers])


def check_supported(model, what: str, *, encoder_decoder: bool = False) -> None:
    """Raise for compatibility mode, and for encoder–decoder models unless ``what`` handles
    them (``encoder_decoder``)."""
    if is_encoder_decoder(model) and not encoder_decoder:
        raise NotImplementedError(
            f"{what} is defined here for decoder-only models; on encoder-decoder models use "
            "hooklab.mixing.alti (ALTI+, part='encoder', 'decoder' or 'cross') or "
            "value_zeroing."
        )
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
        rollout: also return ``R_ℓ = C_ℓ · R_{ℓ-1}`` over the selected layers in order (pass
            every layer for the paper's ALTI, the rollout from the embeddings; not for
            ``part="cross"``).

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
    check_supported(model, "ALTI", encoder_decoder=True)
    adapter = model_adapter(model, part)
    cross = adapter.part == "cross"
    if rollout and cross:
        raise ValueError(
            "rollout=True composes square [query_pos, key_pos] matrices; cross-attention's are "
            "target x source. Pass part='encoder' or 'decoder', or rollout=False."
        )
    layer_ids = select_indices(layers, adapter.n_layers, "layers")
    chosen = per_prompt(targets, len(prompts)) or [None] * len(prompts)
    outputs = []
    for example, target in zip(adapter.encode(prompts, targets, generation_kwargs), chosen):
        if adapter.encoder_decoder:
            scores = part_matrices(model, example, adapter.part, layers=layer_ids)
        else:
            scores = alti_matrices(model, example.ids, layers=layer_ids)
        tokens, key_tokens = side_tokens(adapter, example)
        query_ids, key_ids = adapter.sides(example)
        parameters = {
            "part": adapter.part,
            "targets": target,
            "layers": layer_ids,
            "rollout": rollout,
            "generation_kwargs": dict(generation_kwargs or {}) if target is None else None,
        }
        outputs.append(
            MixingOutput(
                tokens=tokens,
                token_ids=torch.tensor(query_ids),
                scores=scores,
                layers=tuple(layer_ids),
                rollout=rollout_scores(scores) if rollout else None,
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
