"""Plausible replacement tokens for perturbation methods (ReAGent), from a language model.

For each position of each example, a distribution over the vocabulary from which a replacement
for that token is drawn. Three sources, all offline:

- ``"model"``: the attributed model's own next-token distribution given the (original) prefix,
  i.e. the logits row before the position; one forward pass per batch.
- ``"uniform"``: every token of the vocabulary equally likely.
- another model loaded by hooklab that shares the tokenizer: a causal LM's next-token
  distribution, or a masked LM's prediction at the position with the token masked
  (one row per position, masked one at a time).

The original token and the special tokens always get probability 0. A position without a
prefix (the first token of a model without BOS) falls back to uniform.
"""

from __future__ import annotations

import dataclasses

import torch
from jaxtyping import Float, Int
from torch import Tensor

from hooklab.forward import forward
from hooklab.inputs import Batch

SOURCES = ("model", "uniform")


def special_ids(model) -> list[int]:
    """Ids of the tokenizer's special tokens (BOS, EOS, pad, unk, mask...)."""
    return sorted({int(i) for i in getattr(model.tokenizer, "all_special_ids", []) or []})


def _check_source(model, source) -> None:
    if isinstance(source, str):
        if source not in SOURCES:
            raise ValueError(
                f"replacements={source!r} is not one of {SOURCES}, nor a model loaded by "
                "hooklab that shares the attributed model's tokenizer."
            )
        return
    if not hasattr(source, "tokenizer") or not hasattr(source, "cfg"):
        raise TypeError(
            f"replacements must be 'model', 'uniform' or a hooklab model, got "
            f"{type(source).__name__}."
        )
    if source.tokenizer.get_vocab() != model.tokenizer.get_vocab():
        raise ValueError(
            "The replacement model's tokenizer differs from the attributed model's: replacement "
            "tokens must be ids of the same vocabulary. Pass a model with the same tokenizer, "
            "or replacements='model' / 'uniform'."
        )


def _is_masked_lm(lm) -> bool:
    arch = str(getattr(lm.cfg, "original_architecture", "") or "")
    return "MaskedLM" in arch or arch.startswith("Bert")


def _masked_lm_logits(lm, batch: Batch) -> Float[Tensor, "batch pos d_vocab"]:
    """A masked LM's logits at each position with that position's token masked."""
    mask_id = lm.tokenizer.mask_token_id
    B, W = batch.tokens.shape
    out = []
    for b in range(B):  # one row per position, each with its own token masked
        tokens = batch.tokens[b].expand(W, W).clone()
        tokens[torch.arange(W), torch.arange(W)] = mask_id
        rows = batch.take([b] * W)
        out.append(forward(lm, dataclasses.replace(rows, tokens=tokens)).diagonal(0, 0, 1).T)
    return torch.stack(out)  # [batch, pos, d_vocab]


def replacement_probs(model, batch: Batch, source="model") -> Float[Tensor, "batch pos d_vocab"]:
    """Probability of each token as a replacement at each position (0 for the original)."""
    _check_source(model, source)
    B, W = batch.tokens.shape
    d_vocab = int(model.cfg.d_vocab)
    uniform = torch.ones(B, W, d_vocab, device=batch.tokens.device)
    if source == "uniform":
        probs = uniform
    else:
        lm = model if isinstance(source, str) else source
        if not isinstance(source, str) and _is_masked_lm(lm):
            probs = _masked_lm_logits(lm, batch).float().softmax(-1)
        else:
            logits = forward(lm, batch).float()  # row w-1 predicts position w
            probs = torch.cat([uniform[:, :1], logits[:, :-1].softmax(-1)], dim=1)
            first = torch.tensor(batch.pad_lengths, device=probs.device)
            probs[torch.arange(B), first] = 1.0  # no prefix: uniform
        probs = probs[..., :d_vocab]
    probs = probs.clone()
    probs[..., special_ids(model)] = 0.0
    probs.scatter_(-1, batch.tokens[..., None], 0.0)
    return probs / probs.sum(-1, keepdim=True).clamp(min=1e-30)


def sample(
    cdf: Float[Tensor, "pos d_vocab"], u: Float[Tensor, "*batch pos"]
) -> Int[Tensor, "*batch pos"]:
    """Draw one token per position by inverting the cumulative distribution at ``u``."""
    shape = u.shape
    flat = u.reshape(-1, shape[-1]).T.contiguous()  # [pos, n]
    ids = torch.searchsorted(cdf, flat * cdf[:, -1:], right=True)
    return ids.clamp(max=cdf.shape[-1] - 1).T.reshape(shape)
