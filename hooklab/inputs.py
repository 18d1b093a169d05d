"""Tokenisation and batching of prompts and targets.

hooklab owns BOS handling instead of relying on the tokenizer's settings (TransformerLens
rebuilds tokenizers and may add BOS on its own): text is always tokenised with
``add_special_tokens=False``; the model's BOS token, when it has one, is prepended to every
prompt exactly once (never doubled if the prompt already starts with it); targets never get one.

Sequences in a batch are left-padded, so every example ends at the last position. Positions
follow the real tokens (``position_ids`` count from the first non-pad token), so a padded
example computes the same logits as the example alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Int
from torch import Tensor


def bos_token_id(model) -> int | None:
    """Return the model's BOS token id, or None when its tokenizer has none."""
    return getattr(model.tokenizer, "bos_token_id", None)


def pad_token_id(model) -> int:
    """Return the id used for padding: pad, else EOS, else BOS, else 0."""
    tok = model.tokenizer
    for attr in ("pad_token_id", "eos_token_id", "bos_token_id"):
        value = getattr(tok, attr, None)
        if value is not None:
            return int(value)
    return 0


def context_window(model) -> int:
    """Return the maximum sequence length (tokens) the model accepts."""
    return int(model.cfg.n_ctx)


def _check_text(text: object, what: str) -> str:
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a string, got {type(text).__name__}: {text!r}.")
    if not text.strip():
        raise ValueError(f"{what} is empty ({text!r}); pass some text.")
    return text


def encode_text(model, text: str, *, what: str = "text") -> list[int]:
    """Tokenise ``text`` without special tokens. Raises ValueError for empty text."""
    _check_text(text, what)
    return list(model.tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_prompt(model, text: str) -> list[int]:
    """Tokenise a prompt and prepend BOS once when the model has a BOS token."""
    ids = encode_text(model, text, what="Prompt text")
    bos = bos_token_id(model)
    if bos is not None and (not ids or ids[0] != bos):
        ids = [bos, *ids]
    return ids


def as_prompt_ids(model, prompt: str | Sequence[int]) -> list[int]:
    """Encode a prompt given as text (BOS added once) or pass through given token ids."""
    if isinstance(prompt, str):
        return encode_prompt(model, prompt)
    if isinstance(prompt, Sequence) and prompt and all(isinstance(i, int) for i in prompt):
        return list(prompt)
    raise TypeError(f"A prompt must be a string or a non-empty list of token ids, got {prompt!r}.")


def encode_target(model, text: str) -> list[int]:
    """Tokenise a target (continuation) text; no BOS."""
    return encode_text(model, text, what="Target text")


def check_length(model, n_tokens: int, what: str = "sequence") -> None:
    """Raise ValueError if ``n_tokens`` exceeds the model's context window."""
    limit = context_window(model)
    if n_tokens > limit:
        raise ValueError(
            f"The {what} is {n_tokens} tokens long, longer than the model's context window of "
            f"{limit} tokens. Shorten the text or generate fewer tokens."
        )


@dataclass(frozen=True)
class Batch:
    """Left-padded prompt+target sequences, the unit every method runs on.

    Attributes:
        tokens: token ids, left-padded with the pad id.
        attention_mask: 1 for real tokens, 0 for padding.
        prompt_lengths: real prompt tokens (BOS included) of each example.
        target_lengths: target tokens of each example (0 when there are none yet).
    """

    tokens: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    prompt_lengths: tuple[int, ...]
    target_lengths: tuple[int, ...]

    def __post_init__(self) -> None:
        b, p = self.tokens.shape
        if self.attention_mask.shape != (b, p):
            raise ValueError(
                f"attention_mask shape {tuple(self.attention_mask.shape)} != tokens {(b, p)}"
            )
        if len(self.prompt_lengths) != b or len(self.target_lengths) != b:
            raise ValueError("prompt_lengths and target_lengths need one entry per example.")

    @property
    def size(self) -> int:
        return self.tokens.shape[0]

    @property
    def n_steps(self) -> int:
        """The largest number of targets in the batch (the ``step`` dimension)."""
        return max(self.target_lengths, default=0)

    @property
    def pad_lengths(self) -> tuple[int, ...]:
        width = self.tokens.shape[1]
        return tuple(
            width - p - t for p, t in zip(self.prompt_lengths, self.target_lengths, strict=True)
        )

    @property
    def position_ids(self) -> Int[Tensor, "batch pos"]:
        return (self.attention_mask.long().cumsum(-1) - 1).clamp(min=0)

    def target_start(self, i: int) -> int:
        """Index in the padded row of example ``i``'s first target token."""
        return self.pad_lengths[i] + self.prompt_lengths[i]

    @property
    def step_mask(self) -> Bool[Tensor, "batch step"]:
        steps = torch.arange(self.n_steps, device=self.tokens.device)
        lengths = torch.tensor(self.target_lengths, device=self.tokens.device)
        return steps[None, :] < lengths[:, None]

    @property
    def target_rows(self) -> Int[Tensor, "batch step"]:
        """Row of the logits that predicts each target token (0 where the step is padding)."""
        steps = torch.arange(self.n_steps, device=self.tokens.device)
        starts = torch.tensor(
            [self.target_start(i) - 1 for i in range(self.size)], device=self.tokens.device
        )
        return torch.where(self.step_mask, starts[:, None] + steps[None, :], 0)

    @property
    def target_ids(self) -> Int[Tensor, "batch step"]:
        """The target token ids per step (0 where the step is padding)."""
        rows = self.target_rows + self.step_mask.long()
        ids = self.tokens.gather(1, rows)
        return torch.where(self.step_mask, ids, torch.zeros_like(ids))

    def sequence(self, i: int) -> Int[Tensor, "pos"]:
        """The real (unpadded) token ids of example ``i``."""
        return self.tokens[i, self.pad_lengths[i] :]

    def take(self, index: Sequence[int] | Tensor) -> Batch:
        """Return the examples at ``index`` (repeats allowed) as a new batch."""
        idx = torch.as_tensor(index, dtype=torch.long, device=self.tokens.device)
        rows = idx.tolist()
        return Batch(
            self.tokens[idx],
            self.attention_mask[idx],
            tuple(self.prompt_lengths[i] for i in rows),
            tuple(self.target_lengths[i] for i in rows),
        )

    def to(self, device) -> Batch:
        return Batch(
            self.tokens.to(device),
            self.attention_mask.to(device),
            self.prompt_lengths,
            self.target_lengths,
        )


def make_batch(
    prompts: Sequence[Sequence[int]],
    targets: Sequence[Sequence[int]] | None = None,
    *,
    pad_id: int = 0,
    device: torch.device | str = "cpu",
) -> Batch:
    """Left-pad ``prompt + target`` id lists into a :class:`Batch`."""
    if not prompts:
        raise ValueError("No inputs given: pass at least one prompt.")
    targets = targets if targets is not None else [[] for _ in prompts]
    if len(targets) != len(prompts):
        raise ValueError(f"Got {len(prompts)} prompts but {len(targets)} targets; pass one each.")
    seqs = [list(p) + list(t) for p, t in zip(prompts, targets, strict=True)]
    width = max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, seq in enumerate(seqs):
        if seq:
            tokens[i, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            mask[i, width - len(seq) :] = 1
    return Batch(
        tokens.to(device),
        mask.to(device),
        tuple(len(p) for p in prompts),
        tuple(len(t) for t in targets),
    )


def str_tokens(model, ids: Sequence[int] | Tensor) -> list[str]:
    """Decode each id to its text piece (special tokens kept)."""
    ids = ids.tolist() if isinstance(ids, Tensor) else list(ids)
    return [model.tokenizer.decode([i], skip_special_tokens=False) for i in ids]
