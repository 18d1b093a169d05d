"""Attention knockout: block attention edges in a window of layers, watch the prediction.

Geva et al. (EMNLP 2023), "Dissecting Recall of Factual Associations in Auto-Regressive
Language Models": to test whether information flows from key positions (e.g. the subject
tokens) to a query position (the last token) around layer ℓ, block the attention edges
query ← keys in a window of k layers centred on ℓ and measure the relative change of the
probability of the measured token (by default the predicted one), ``(p_knocked - p) / p``.
Sweeping ℓ for several source sets (subject, non-subject, last token) gives the paper's curves.

One algorithm for decoder-only and encoder–decoder models; what differs (which attention, its
hook names, how to run, how to block an edge) is in :mod:`hooklab.mixing.adapter`. The edges
are blocked as in the paper: their pre-softmax scores are set to the dtype's minimum, the value
the model's own causal mask uses, so each row renormalises over the remaining keys. Every
(source set, window) pair is one row of a batched forward pass (the same example repeated).
Each pass also checks the pattern, values and ``z`` of each blocked layer as it runs (then
drops them: one layer's pattern alive at a time) and raises if the blocked weights are not 0
or ``z`` was not computed from the edited pattern: a bridge that silently discards the edit
raises instead of reporting no effect.

Where the block takes effect (TransformerLens 4.3). Most decoder-only bridges (GPT-2, Llama,
Gemma, Bloom, Falcon...: ``JointQKVAttentionBridge``, ``PositionEmbeddingsAttentionBridge``
and their kin) recompute attention from the wrapped module's weights and fire
``hook_attn_scores`` on the scaled, masked (and soft-capped) scores right before their own
softmax, so a score edit flows into the pattern and ``z``. OPT and GPT-J use the plain
``AttentionBridge``, whose ``forward`` only wraps the Hugging Face module: the module computes
scores, softmax and output, then the bridge fires ``hook_pattern`` and ``hook_attn_scores``
*after the fact* on the returned (post-softmax) weights (``_fire_post_hoc_hook``), so the edit
is discarded and the pattern still gives the blocked keys their weight (the self-check said
"blocked weights = 0 is off by 0.0862"). The decoder-only adapter therefore checks, per model,
which layers run the wrapped module, and blocks there in the additive attention mask that
module adds to its scaled scores before the softmax (same value, same place), elsewhere at
``hook_attn_scores``; see :meth:`~hooklab.mixing.adapter.DecoderOnly.blocked_edges`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from hooklab.architecture import select_indices
from hooklab.encoding import per_prompt
from hooklab.inputs import encode_text, str_tokens
from hooklab.mixing.adapter import Part, model_adapter, side_tokens
from hooklab.mixing.knockout_output import KnockoutOutput
from hooklab.mixing.sequences import PositionsArg, as_prompts, token_positions
from hooklab.options import PositiveInt, checked_options
from hooklab.output.provenance import describe_model
from hooklab.selfcheck import check_identity

if TYPE_CHECKING:
    from hooklab.mixing.adapter import Adapter, Example

# (blocked layers, query positions, key positions) of one knockout
Knockout = tuple[Sequence[int], Sequence[int], Sequence[int]]
INTERVENTION = "pre-softmax scores of blocked edges set to the dtype minimum"


def window_layers(centre: int, window: int, n_layers: int) -> tuple[int, ...]:
    """The ``window`` layers centred on ``centre`` (as in Geva et al.), clipped to the model."""
    return tuple(range(max(0, centre - window // 2), min(n_layers, centre - (-window // 2))))


def auto_window(n_layers: int) -> int:
    """The default knockout window: a quarter of the model's layers, at least 1.

    ``max(1, round(n_layers / 4))``: 1 for the 4-layer toy model, 3 for GPT-2 small (12),
    12 for 48 layers. A fixed window such as 9 (Geva et al.'s for the 48-layer GPT-2 XL)
    covers every layer at every centre of a small model, so every centre gives the same row.
    The command line's ``--window auto`` uses this rule too.
    """
    return max(1, round(n_layers / 4))


#: What ``window=`` takes: a positive int, "auto" (:func:`auto_window`) or None (all layers).
Window = PositiveInt | Literal["auto"] | None


def _check_rows(adapter: Adapter, knockouts: Sequence[Knockout], n_keys: int) -> None:
    for layers, queries, keys in knockouts:
        for q in queries:
            visible = set(range(q + 1) if adapter.causal else range(n_keys))
            if layers and visible <= set(keys):
                raise ValueError(
                    f"Blocking keys {sorted(keys)} would leave {adapter.part} query position {q} "
                    f"no key to attend to (it sees positions {sorted(visible)}); keep at least "
                    "one of them."
                )


def _check_sources(
    adapter: Adapter, keys: Mapping[str, Sequence[int]], queries: Sequence[int]
) -> None:
    """Raise ValueError for a source set (causal attention) whose positions all come after
    every query position: blocking it could not change anything. An explicitly empty source
    (``[]``) is allowed: it is the control that must change nothing."""
    for name, positions in keys.items():
        if positions and adapter.causal and min(positions) > max(queries):
            raise ValueError(
                f"source {name!r} (positions {list(positions)}) comes after every query position "
                f"{list(queries)}: under {adapter.part} attention's causal mask a query cannot "
                "attend to later tokens, so knocking it out has no effect to measure. Pick "
                f"sources at or before position {max(queries)}, or a later query."
            )


def edge_masks(
    knockouts: Sequence[Knockout], n_query: int, n_key: int, device
) -> dict[int, Tensor]:
    """``{layer: [batch, query_pos, key_pos]}`` bool masks, True = blocked, one row per knockout."""
    masks: dict[int, Tensor] = {}
    for b, (layers, queries, keys) in enumerate(knockouts):
        q = torch.tensor(queries, dtype=torch.long, device=device)
        k = torch.tensor(keys, dtype=torch.long, device=device)
        for layer in layers:
            shape = (len(knockouts), n_query, n_key)
            mask = masks.setdefault(layer, torch.zeros(shape, dtype=torch.bool, device=device))
            mask[b, q[:, None], k[None, :]] = True
    return masks


_CHECKED = ("pattern", "v", "z")


def verifying_hooks(adapter: Adapter, masks: Mapping[int, Tensor]) -> tuple[list, set[int]]:
    """Hooks that check each blocked layer (:func:`_verify`) as soon as its pattern, values and
    ``z`` have been seen, then drop them: one layer's pattern (batch x head x pos² floats) is
    alive at a time, not the window's. Returns the hooks and the set of layers still unchecked
    (empty after the forward pass)."""
    seen: dict[int, dict[str, Tensor]] = {layer: {} for layer in masks}
    pending = set(masks)

    def keep(layer: int, kind: str):
        def fn(activation, hook):
            got = seen[layer]
            got[kind] = activation.detach()
            if len(got) == len(_CHECKED):  # whichever fires last (post-hoc patterns: OPT)
                _verify(adapter, layer, masks[layer], *(got.pop(k) for k in _CHECKED))
                pending.discard(layer)

        return fn

    hooks = [(adapter.hook(k, la), keep(la, k)) for la in masks for k in _CHECKED]
    return hooks, pending


def _verify(adapter: Adapter, layer: int, mask: Tensor, pattern: Tensor, v: Tensor, z: Tensor):
    """Raise if a blocked edge kept weight or ``z`` was not computed from the edited pattern."""
    v = v.repeat_interleave(pattern.shape[1] // v.shape[2], dim=2)  # grouped KV heads
    hint = (
        f"The attention knockout of {adapter.part} attention at layer {layer} did not take "
        "effect: this model's attention discards the edit."
    )
    blocked = pattern.masked_select(mask[:, None])
    where = adapter.hook("pattern", layer)
    check_identity("blocked weights = 0", blocked, torch.zeros_like(blocked), where=where,
                   hint=hint)  # fmt: skip
    recomputed = torch.einsum("bhqk,bkhd->bqhd", pattern, v)
    check_identity("z = pattern @ v", recomputed, z, where=adapter.hook("z", layer), hint=hint)


@checked_options
@torch.no_grad()
def knockout_probabilities(
    model,
    example: Example,
    knockouts: Sequence[Knockout],
    token_id: int,
    *,
    part: Part | None = None,
    batch_size: PositiveInt = 16,
) -> Float[Tensor, "batch"]:
    """P(``token_id``) at the last position under each knockout (one batch row each).

    Args:
        example: the token ids (see :class:`~hooklab.mixing.adapter.Example`).
        knockouts: ``(blocked layers, query positions, key positions)`` each.
        part: which attention (see :func:`~hooklab.mixing.adapter.model_adapter`).
    """
    adapter = model_adapter(model, part)
    query_ids, key_ids = adapter.sides(example)
    _check_rows(adapter, knockouts, len(key_ids))
    device, probs = model.cfg.device, []
    for lo in range(0, len(knockouts), batch_size):
        chunk = knockouts[lo : lo + batch_size]
        masks = edge_masks(chunk, len(query_ids), len(key_ids), device)
        hooks, unchecked = verifying_hooks(adapter, masks)
        with adapter.blocked_edges(masks) as blocking:
            logits = adapter.run(example, len(chunk), [*blocking, *hooks])
        if unchecked:
            raise RuntimeError(
                f"Attention knockout could not check layers {sorted(unchecked)}: their "
                f"{'/'.join(_CHECKED)} hooks did not all fire."
            )
        probs.append(torch.softmax(logits.double(), -1)[:, token_id].cpu())  # final: to the CPU
    return torch.cat(probs)


def measured_token_id(adapter: Adapter, example: Example, measured_token: str | int | None) -> int:
    """The id of ``measured_token``: an id, the first token of a text, or the prediction."""
    n_vocab = adapter.model.cfg.d_vocab
    if isinstance(measured_token, bool) or not isinstance(measured_token, (int, str, type(None))):
        raise TypeError(
            f"measured_token must be a token id, a text or None (the prediction), got "
            f"{type(measured_token).__name__}: {measured_token!r}."
        )
    if isinstance(measured_token, int):
        if not 0 <= measured_token < n_vocab:
            raise ValueError(f"measured_token {measured_token} is not a token id 0..{n_vocab - 1}.")
        return measured_token
    if isinstance(measured_token, str):
        return encode_text(adapter.model, measured_token, what="measured_token")[0]
    return int(adapter.run(example, 1, [])[0].argmax())


def sweep_windows(
    n_layers: int, window: int | str | None, layers: Any
) -> tuple[int | None, str | None, tuple[int, ...] | None, tuple[tuple[int, ...], ...]]:
    """(window, its rule, centre layers, blocked layers of each centre) of a sweep: ``"auto"``
    resolves to :func:`auto_window` (rule ``"auto"``); None blocks every layer at once (no
    centres, one window)."""
    rule = "auto" if window == "auto" else None
    if window == "auto":
        window = auto_window(n_layers)
    if window is None:
        return None, rule, None, (tuple(range(n_layers)),)
    centres = tuple(select_indices(layers, n_layers, "layers"))
    return window, rule, centres, tuple(window_layers(c, window, n_layers) for c in centres)


def _output(adapter: Adapter, example, token_id, queries, keys, windows, centres, probs,
            parameters) -> KnockoutOutput:  # fmt: skip
    """The :class:`KnockoutOutput` of one example (``probs[0]``: no knockout)."""
    query_tokens, key_tokens = side_tokens(adapter, example)
    return KnockoutOutput(
        tokens=query_tokens,
        token_ids=torch.tensor(adapter.sides(example)[0]),
        target_id=token_id,
        target_token=str_tokens(adapter.model, [token_id])[0],
        queries=queries,
        sources=keys,
        windows=windows,
        centres=centres,
        base_probability=float(probs[0]),
        probabilities=probs[1:].reshape(len(keys), len(windows)),
        parameters=parameters,
        key_tokens=key_tokens if adapter.part == "cross" else None,
        model=describe_model(adapter.model),
    )


@checked_options
@torch.no_grad()
def attention_knockout(
    model,
    prompts: str | Sequence[str] | Sequence[Sequence[int]],
    *,
    sources: Mapping[str, PositionsArg] | None = None,
    measured_token: str | int | None = None,
    targets: str | Sequence[str] | Sequence[Sequence[int]] = "",
    part: Part | None = None,
    query: PositionsArg = -1,
    window: Window = "auto",
    layers: int | range | Sequence[int] | None = None,
    batch_size: PositiveInt = 16,
    prepend_bos: bool | None = None,
) -> list[KnockoutOutput]:
    """Sweep attention knockouts over layers for named source sets (Geva et al., 2023).

    Args:
        model: a ``TransformerBridge`` from :func:`hooklab.load`, decoder-only or
            encoder–decoder.
        prompts: one prompt or a list, texts or token-id lists (the sources of an
            encoder–decoder model).
        sources: ``{name: key positions}``; positions are ints (negative from the end), lists,
            ranges, or a substring of the key tokens' text (the tokens covering it), e.g.
            ``{"subject": "Beats Music", "last": -1}``. Default: the last key and all others.
        measured_token: the token whose probability is measured at the last position: the
            model's prediction when None, or text (its first token) or a token id.
        targets: forced continuation(s) before the measured position, as in
            :func:`hooklab.attribute`: one text for every prompt, or one text or token-id list
            per prompt; ``""`` (default) adds none, so the token right after the prompt
            (decoder-only) or the decoder start token (encoder–decoder) is measured. Not None:
            a knockout measures one position of a forced sequence.
        part: the attention whose edges are blocked: on encoder–decoder models ``"cross"``
            (default), ``"decoder"`` or ``"encoder"``; on decoder-only models ``"decoder"``.
        query: the query positions whose edges are blocked (default: the last token).
        window: layers blocked around each centre layer (clipped at the model's ends);
            ``"auto"`` (default): :func:`auto_window`, a quarter of the model's layers (at
            least 1); None blocks all layers at once (one point per source set). The
            parameters record the resolved int as ``window`` and ``window_rule="auto"`` when
            it came from the rule (``window_rule`` None otherwise).
        layers: centre layers to sweep (all when None).
        batch_size: knockouts per batched forward pass.
        prepend_bos: prepend BOS to the prompts (None: where the model's tokenizer adds it;
            decoder-only models).

    Returns:
        One :class:`~hooklab.mixing.knockout_output.KnockoutOutput` per prompt, with the
        probability ``[source, layer]`` under each knockout and its relative change.

    Example:
        >>> import hooklab
        >>> model = hooklab.load("toy")
        >>> (out,) = attention_knockout(model, "George was sick yesterday. His colleagues "
        ...     "asked him to come to the", sources={"cue": "sick"}, window=None)
        >>> float(out.relative_change[0, 0]) < 0
        True
    """
    prompts = as_prompts(prompts)
    adapter = model_adapter(model, part)
    if targets is None:
        raise ValueError(
            "attention_knockout measures the token after the prompt and its forced targets; "
            "pass targets='' (the default) or the continuation text, not None."
        )
    chosen = per_prompt(targets, len(prompts)) or [None] * len(prompts)
    if sources is not None and (not isinstance(sources, Mapping) or not sources):
        raise ValueError(f"sources must be a non-empty {{name: positions}} dict, got {sources!r}.")
    window, rule, centres, windows = sweep_windows(adapter.n_layers, window, layers)
    outputs = []
    examples = adapter.encode(prompts, chosen, prepend_bos=prepend_bos)
    for example, target in zip(examples, chosen, strict=True):
        query_tokens, key_tokens = side_tokens(adapter, example)
        queries = tuple(token_positions(query_tokens, query, "query"))
        if not queries:
            raise ValueError(f"query {query!r} selects no positions; pass at least one position.")
        n_keys = len(key_tokens)
        spec = sources if sources is not None else {"last": -1, "other": range(n_keys - 1)}
        keys = {
            name: tuple(token_positions(key_tokens, s, f"source {name!r}"))
            for name, s in spec.items()
        }
        _check_sources(adapter, keys, queries)
        token_id = measured_token_id(adapter, example, measured_token)
        knockouts = [((), (), ())] + [(w, queries, k) for k in keys.values() for w in windows]
        probs = knockout_probabilities(
            model, example, knockouts, token_id, part=adapter.part, batch_size=batch_size
        )
        parameters = {
            "part": adapter.part,
            "measured_token": "predicted" if measured_token is None else measured_token,
            "targets": target,
            "query": queries,
            "window": window,
            "window_rule": rule,
            "layers": centres,
            "batch_size": batch_size,
            "intervention": INTERVENTION,
            "prepend_bos": prepend_bos,
        }
        outputs.append(_output(adapter, example, token_id, queries, keys, windows, centres,
                               probs, parameters))  # fmt: skip
    return outputs
