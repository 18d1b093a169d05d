"""Attention knockout: block attention edges in a window of layers, watch the prediction.

Geva et al. (EMNLP 2023), "Dissecting Recall of Factual Associations in Auto-Regressive
Language Models": to test whether information flows from key positions (e.g. the subject
tokens) to a query position (the last token) around layer ℓ, block the attention edges
query ← keys in a window of k layers centred on ℓ and measure the relative change of the
probability of the predicted token, ``(p_knocked - p) / p``. Sweeping ℓ for several source
sets (subject, non-subject, last token) gives the paper's curves.

The edges are blocked as in the paper: their pre-softmax scores (``hook_attn_scores``) are set
to the dtype's minimum, the value the model's own causal mask uses, so each row renormalises
over the remaining keys. Every (source set, window) pair is one row of a batched forward pass
(the same sequence repeated). Each pass also records the pattern, values and ``z`` of the
blocked layers and raises if the blocked weights are not 0 or ``z`` was not computed from the
edited pattern: a bridge that silently discards the edit raises instead of reporting no effect.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from hooklab.forward import forward
from hooklab.hooks import hook_name
from hooklab.inputs import check_length, encode_prompt, encode_target, make_batch, str_tokens
from hooklab.methods.attention import select_indices
from hooklab.mixing.knockout_output import KnockoutOutput
from hooklab.mixing.sequences import PositionsArg, as_texts, token_positions
from hooklab.mixing.value_zeroing import n_kv_heads

# (blocked layers, query positions, key positions) of one knockout
Knockout = tuple[Sequence[int], Sequence[int], Sequence[int]]


def window_layers(centre: int, window: int, n_layers: int) -> tuple[int, ...]:
    """The ``window`` layers centred on ``centre`` (as in Geva et al.), clipped to the model."""
    return tuple(range(max(0, centre - window // 2), min(n_layers, centre - (-window // 2))))


def _check_rows(knockouts: Sequence[Knockout]) -> None:
    for layers, queries, keys in knockouts:
        for q in queries:
            if layers and set(range(q + 1)) <= set(keys):
                raise ValueError(
                    f"Blocking keys {sorted(keys)} would leave query position {q} no key to "
                    f"attend to (it sees positions 0..{q}); keep at least one of them."
                )


def _hooks(model, knockouts: Sequence[Knockout], n: int, seen: dict) -> list:
    """Score-blocking hooks for every blocked layer, and hooks recording what was computed."""
    masks: dict[int, Tensor] = {}
    for b, (layers, queries, keys) in enumerate(knockouts):
        for layer in layers:
            mask = masks.setdefault(layer, torch.zeros(len(knockouts), n, n, dtype=torch.bool))
            q, k = torch.tensor(queries, dtype=torch.long), torch.tensor(keys, dtype=torch.long)
            mask[b, q[:, None], k[None, :]] = True

    def block(layer):
        def fn(scores, hook):  # [batch, head, query_pos, key_pos]
            mask = masks[layer].to(scores.device)[:, None]
            return scores.masked_fill(mask, torch.finfo(scores.dtype).min)

        return fn

    def keep(kind, layer):
        def fn(x, hook):
            seen[(kind, layer)] = x.detach()

        return fn

    hooks = [(hook_name("attn_scores", layer), block(layer)) for layer in masks]
    for kind in ("pattern", "v", "z"):
        hooks += [(hook_name(kind, layer), keep(kind, layer)) for layer in masks]
    seen["masks"] = masks
    return hooks


def _verify(model, seen: dict) -> None:
    """Raise if a blocked edge kept weight or ``z`` was not computed from the edited pattern."""
    for layer, mask in seen["masks"].items():
        pattern, v, z = (seen[(kind, layer)] for kind in ("pattern", "v", "z"))
        v = v.repeat_interleave(model.cfg.n_heads // n_kv_heads(model), dim=2)
        blocked = pattern.masked_select(mask.to(pattern.device)[:, None])
        leaked = blocked.abs().max() if blocked.numel() else torch.tensor(0.0)
        recomputed = torch.einsum("bhqk,bkhd->bqhd", pattern, v)
        tol = 1e-4 * max(1.0, float(z.abs().max()))
        if leaked > 1e-6 or (recomputed - z).abs().max() > tol:
            raise RuntimeError(
                f"The attention knockout at layer {layer} did not take effect (blocked weight "
                f"{float(leaked):.3g}): this model's bridge discards edits of "
                f"{hook_name('attn_scores', layer)!r}. Use a model whose attention honours "
                "hook_attn_scores edits (decoder-only bridges do)."
            )


@torch.no_grad()
def knockout_probabilities(
    model, ids: Sequence[int], knockouts: Sequence[Knockout], target_id: int, *, batch_size: int
) -> Float[Tensor, "batch"]:
    """P(``target_id``) at the last position under each knockout (one batch row each)."""
    _check_rows(knockouts)
    n, probs = len(ids), []
    last = torch.tensor([n - 1], device=model.cfg.device)
    for lo in range(0, len(knockouts), batch_size):
        chunk = knockouts[lo : lo + batch_size]
        batch = make_batch([list(ids)] * len(chunk), device=model.cfg.device)
        seen: dict = {}
        logits = forward(model, batch, hooks=_hooks(model, chunk, n, seen), logits_to_keep=last)
        _verify(model, seen)
        probs.append(torch.softmax(logits[:, -1].double(), -1)[:, target_id])
    return torch.cat(probs).cpu()


def _target_id(model, ids: list[int], target: str | int | None) -> int:
    if isinstance(target, int):
        return target
    if isinstance(target, str):
        return encode_target(model, target)[0]
    logits = forward(model, make_batch([ids], device=model.cfg.device))
    return int(logits[0, -1].argmax())


@torch.no_grad()
def attention_knockout(
    model,
    texts: str | Sequence[str],
    *,
    sources: Mapping[str, PositionsArg] | None = None,
    target: str | int | None = None,
    query: PositionsArg = -1,
    window: int | None = 9,
    layers: int | range | Sequence[int] | None = None,
    batch_size: int = 16,
) -> list[KnockoutOutput]:
    """Sweep attention knockouts over layers for named source sets (Geva et al., 2023).

    Args:
        model: a ``TransformerBridge`` from :func:`hooklab.load`.
        texts: one prompt or a list; the prediction scored is the token after the prompt.
        sources: ``{name: key positions}``; positions are ints (negative from the end), lists,
            ranges, or a substring of the prompt (the tokens covering it), e.g.
            ``{"subject": "Beats Music", "last": -1}``. Default: the last token and all others.
        target: the token whose probability is measured: the model's prediction when None,
            or text (its first token) or a token id.
        query: the query positions whose edges are blocked (default: the last token).
        window: layers blocked around each centre layer (clipped at the model's ends); None
            blocks all layers at once (one point per source set).
        layers: centre layers to sweep (all when None).
        batch_size: knockouts per batched forward pass.

    Returns:
        One :class:`~hooklab.mixing.output.KnockoutOutput` per text, with the probability
        ``[source, layer]`` under each knockout and its relative change.

    Example:
        >>> import hooklab
        >>> model = hooklab.load("toy")
        >>> (out,) = attention_knockout(model, "George was sick yesterday. His colleagues "
        ...     "asked him to come to the", sources={"cue": "sick"}, window=None)
        >>> float(out.relative_change[0, 0]) < 0
        True
    """
    n_layers = model.cfg.n_layers
    if window is not None and (isinstance(window, bool) or not isinstance(window, int)):
        raise ValueError(f"window must be a positive int or None (all layers), got {window!r}.")
    if window is not None and window < 1:
        raise ValueError(f"window must be a positive int or None (all layers), got {window!r}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    centres = None if window is None else tuple(select_indices(layers, n_layers, "layers"))
    windows = (
        (tuple(range(n_layers)),)
        if centres is None
        else tuple(window_layers(c, window, n_layers) for c in centres)
    )
    outputs = []
    for text in as_texts(texts):
        ids = encode_prompt(model, text)
        check_length(model, len(ids), "prompt")
        tokens = tuple(str_tokens(model, ids))
        queries = token_positions(tokens, query, "query")
        spec = sources if sources is not None else {"last": -1, "other": range(len(ids) - 1)}
        keys = {
            name: tuple(token_positions(tokens, s, f"source {name!r}")) for name, s in spec.items()
        }
        target_id = _target_id(model, ids, target)
        knockouts = [((), (), ())] + [(w, queries, k) for k in keys.values() for w in windows]
        probs = knockout_probabilities(model, ids, knockouts, target_id, batch_size=batch_size)
        outputs.append(
            KnockoutOutput(
                tokens=tokens,
                token_ids=torch.tensor(ids),
                target_id=target_id,
                target_token=str_tokens(model, [target_id])[0],
                queries=tuple(queries),
                sources=keys,
                windows=windows,
                centres=centres,
                base_probability=float(probs[0]),
                probabilities=probs[1:].reshape(len(keys), len(windows)),
                parameters=_parameters(window, target, batch_size),
            )
        )
    return outputs


def _parameters(window: int | None, target: Any, batch_size: int) -> dict[str, Any]:
    return {
        "window": window,
        "target": "predicted" if target is None else target,
        "intervention": "pre-softmax scores of blocked edges set to the dtype minimum",
        "batch_size": batch_size,
    }
