"""Forward passes over a batch; one forward pass serves every generation step.

With teacher forcing, the logits that predict target token t only see tokens before it, so a
single forward over the whole prompt + target sequence yields the logits of every step. Only
the rows that predict targets go through the unembedding (``logits_to_keep``), and the input
token embeddings can be replaced through the ``hook_embed`` hook point to take gradients
with respect to them or to perturb them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from hooklab import plain, seq2seq
from hooklab.hooks import hook_name, temporary_hooks
from hooklab.inputs import Batch

# dtypes whose attention masks use a finite minimum (no -inf scores outside compatibility mode)
_FINITE_MASK_DTYPES = (torch.float32, torch.bfloat16)


def _finite_scores(scores: Tensor, hook) -> Tensor:
    # A left-pad query sees no key. Its masked scores can reach -inf (the bridge takes the
    # softmax in float32, where float64's minimum overflows), and then its softmax is NaN,
    # which leaks into real positions through 0 * NaN. Clamping to a finite minimum makes
    # that row uniform and leaves real rows unchanged.
    floor = max(torch.finfo(scores.dtype).min, torch.finfo(torch.float32).min)
    return scores.clamp(min=floor)


def padding_guard_hooks(model, batch: Batch) -> list[tuple[str, object]]:
    """Hooks that keep fully masked (padding) attention rows finite; none when not needed.

    None without padding. None either in float32 and bfloat16 outside compatibility mode:
    there the bridge masks with the dtype's finite minimum, so scores are never ``-inf``
    and clamping them at that minimum would return them unchanged (tests compare both).
    """
    if not any(batch.pad_lengths):
        return []
    dtype = next(model.parameters()).dtype
    if dtype in _FINITE_MASK_DTYPES and not getattr(model, "compatibility_mode", False):
        return []
    return [
        (hook_name("attn_scores", layer), _finite_scores) for layer in range(model.cfg.n_layers)
    ]


def bridge_forward(
    model,
    batch: Batch,
    *,
    hooks: Sequence[tuple[str, object]] = (),
    logits_to_keep: Tensor | None = None,
) -> Float[Tensor, "batch pos d_vocab"]:
    """:func:`forward` through the bridge always (its hook points live, ``hooks`` attached)."""
    kwargs = {} if logits_to_keep is None else {"logits_to_keep": logits_to_keep}
    all_hooks = [*padding_guard_hooks(model, batch), *hooks]
    with temporary_hooks(model, all_hooks) if all_hooks else contextlib.nullcontext():
        return model(
            batch.tokens,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            prepend_bos=False,
            **kwargs,
        )


def forward(
    model,
    batch: Batch,
    *,
    hooks: Sequence[tuple[str, object]] = (),
    logits_to_keep: Tensor | None = None,
) -> Float[Tensor, "batch pos d_vocab"]:
    """Run the model on a batch with its padding mask and real positions; return logits.

    Without ``hooks`` (and without gradients) the pass runs on the bridge's plain Hugging
    Face twin when it gives the same logits bit for bit (see :mod:`hooklab.plain`).

    Args:
        hooks: extra ``(hook_name, fn)`` forward hooks, active for this pass only.
        logits_to_keep: positions whose logits to compute (all when None).
    """
    return _logits(model, batch, hooks, logits_to_keep, None)


def _logits(model, batch: Batch, hooks, logits_to_keep, embeds) -> Tensor:
    """:func:`forward`, with ``embeds`` (if given) in place of the token embeddings: the
    output of ``hook_embed`` on the bridge, ``inputs_embeds`` on the twin."""
    runner = None if hooks else plain.twin(model, embeds=embeds is not None)
    if runner is None:
        if embeds is not None:
            hooks = [(hook_name("embed"), lambda x, hook: embeds), *hooks]
        return bridge_forward(model, batch, hooks=hooks, logits_to_keep=logits_to_keep)
    kwargs = {} if logits_to_keep is None else {"logits_to_keep": logits_to_keep}
    if embeds is None:
        kwargs["input_ids"] = batch.tokens
    else:
        kwargs["inputs_embeds"] = embeds
    out = runner(attention_mask=batch.attention_mask, position_ids=batch.position_ids, **kwargs)
    return out.logits


def gather_steps(
    logits: Float[Tensor, "batch pos d_vocab"], batch: Batch
) -> Float[Tensor, "batch step d_vocab"]:
    """Select the logits rows that predict each target token."""
    rows = batch.target_rows
    index = rows[:, :, None].expand(-1, -1, logits.shape[-1])
    return logits.gather(1, index)


def token_embeddings(
    model, batch: Batch, *, token_id: int | None = None
) -> Float[Tensor, "batch pos d_model"]:
    """Return the token embeddings the model computes for ``batch`` (no gradient).

    On encoder–decoder batches: every input position, the source's then the decoder's (see
    :mod:`hooklab.seq2seq`). With ``token_id``: that token's embedding at every position.
    """
    if batch.encoder_decoder:
        return seq2seq.input_embeddings(model, batch, token_id=token_id)
    ids = batch.tokens if token_id is None else torch.full_like(batch.tokens, token_id)
    with torch.no_grad():
        return model.embed(ids).detach()


def _rows(batch: Batch) -> tuple[Tensor, Tensor]:
    """Positions whose logits predict targets (a contiguous block at the right end, because
    sequences are left-padded) and each step's index into that block."""
    width, steps = batch.tokens.shape[1], batch.n_steps
    keep = torch.arange(width - 1 - steps, width - 1, device=batch.tokens.device)
    rel = (batch.target_rows - keep[0]).clamp(min=0)
    return keep, rel


def step_logits(
    model, batch: Batch, embeds: Float[Tensor, "batch pos d_model"] | None = None
) -> Float[Tensor, "batch step d_vocab"]:
    """Logits predicting each target token, from one forward pass.

    Args:
        model: the ``TransformerBridge``.
        batch: left-padded prompt + target sequences.
        embeds: token embeddings to use instead of the model's (e.g. a leaf tensor that
            requires grad, or a perturbed copy); positional embeddings are added as usual.
            On encoder–decoder batches: one per input position (source, then decoder).
    """
    if batch.encoder_decoder:
        logits = seq2seq.seq2seq_forward(model, batch, embeds=embeds)
        return gather_steps(logits, batch)
    keep, rel = _rows(batch)
    logits = _logits(model, batch, (), keep, embeds)
    if logits.shape[1] != keep.numel():  # the model ignored logits_to_keep
        logits = logits[:, keep]
    index = rel[:, :, None].expand(-1, -1, logits.shape[-1])
    return logits.gather(1, index)
