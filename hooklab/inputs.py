"""Tokenisation and batching of prompts and targets.

BOS follows the model's own tokenizer (the Hugging Face one it was saved with, not the copy
TransformerLens rebuilds, which gets a BOS token even where the model has none, e.g. Qwen's EOS):
text is tokenised with ``add_special_tokens=False`` (special tokens written in the text, such as
``<|im_start|>``, stay single tokens) and the BOS token is prepended to a prompt exactly once
where that tokenizer adds it (``tokenizer(text)`` starts with it), or where ``prepend_bos=True``
asks for it; never doubled if the prompt already starts with it. Targets never get one.

Sequences in a batch are left-padded, so every example ends at the last position. Positions
follow the real tokens (``position_ids`` count from the first non-pad token), so a padded
example computes the same logits as the example alone.

Encoder–decoder batches (Marian, BART, T5) also hold the source (encoder) ids. These models
compute positions from the index, so both sides are right-padded: the source with its attention
mask, the decoder input (decoder start token, forced prefix, targets) under the causal mask,
where real positions never see the padding after them. Methods see one *input* sequence per
example: the source positions, then the decoder positions (``Batch.input_width``).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from hooklab.tokenizer import (  # noqa: F401  (re-exported: hooklab.inputs is where users look)
    bos_token_id,
    eos_token_ids,
    own_tokenizer,
    refuse_prepend_bos,
    resolve_prepend_bos,
    tokenizer_adds_bos,
)


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


def vocab_size(model) -> int:
    """Return the number of token ids the model's embedding accepts (``d_vocab``)."""
    return int(model.cfg.d_vocab)


def check_token_ids(model, ids: Sequence[object], what: str) -> list[int]:
    """Return ``ids`` as ints; raise for a non-integer or an id outside ``0..d_vocab-1``.

    Args:
        ids: token ids (ints, NumPy or 0-d torch integers; not bools or floats).
        what: what the ids are (e.g. ``"prompt 0"``), named in the error.
    """
    out = []
    for pos, i in enumerate(ids):
        try:
            if isinstance(i, bool):
                raise TypeError
            value = operator.index(i)
        except TypeError:
            raise TypeError(
                f"{what}: token id {i!r} at position {pos} is a {type(i).__name__}, not an int; "
                "pass token ids as ints (or text)."
            ) from None
        out.append(value)
    n = vocab_size(model)
    bad = [(pos, i) for pos, i in enumerate(out) if not 0 <= i < n]
    if bad:
        pos, i = bad[0]
        more = f" ({len(bad)} ids in all)" if len(bad) > 1 else ""
        raise ValueError(
            f"{what}: token id {i} at position {pos} is not in the model's vocabulary{more}; "
            f"valid ids are 0..{n - 1} (d_vocab = {n})."
        )
    return out


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


def encode_prompt(model, text: str, *, prepend_bos: bool | None = None) -> list[int]:
    """Tokenise a prompt; prepend BOS once where the model's tokenizer adds it (``prepend_bos``
    None) or ``prepend_bos`` is True."""
    ids = encode_text(model, text, what="Prompt text")
    bos = bos_token_id(model)
    if resolve_prepend_bos(model, prepend_bos) and (not ids or ids[0] != bos):
        ids = [bos, *ids]
    return ids


def as_prompt_ids(
    model, prompt: str | Sequence[int], *, prepend_bos: bool | None = None
) -> list[int]:
    """Encode a prompt given as text (see :func:`encode_prompt`) or pass through token ids."""
    if isinstance(prompt, str):
        return encode_prompt(model, prompt, prepend_bos=prepend_bos)
    if isinstance(prompt, Sequence) and prompt:
        return check_token_ids(model, prompt, "prompt token ids")
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
    """Prompt+target sequences, the unit every method runs on.

    Attributes:
        tokens: token ids, left-padded with the pad id (encoder–decoder: the decoder input,
            right-padded).
        attention_mask: 1 for real tokens, 0 for padding.
        prompt_lengths: real prompt tokens (BOS included) of each example (encoder–decoder:
            the decoder start token and the forced target prefix).
        target_lengths: target tokens of each example (0 when there are none yet).
        source_ids: encoder–decoder only: the source (encoder) ids, right-padded.
        source_mask: encoder–decoder only: 1 for real source tokens, 0 for padding.
    """

    tokens: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    prompt_lengths: tuple[int, ...]
    target_lengths: tuple[int, ...]
    source_ids: Int[Tensor, "batch source_pos"] | None = None
    source_mask: Int[Tensor, "batch source_pos"] | None = None

    def __post_init__(self) -> None:
        b, p = self.tokens.shape
        if self.attention_mask.shape != (b, p):
            raise ValueError(
                f"attention_mask shape {tuple(self.attention_mask.shape)} != tokens {(b, p)}"
            )
        if len(self.prompt_lengths) != b or len(self.target_lengths) != b:
            raise ValueError("prompt_lengths and target_lengths need one entry per example.")
        if (self.source_ids is None) != (self.source_mask is None) or (
            self.source_ids is not None
            and (self.source_ids.shape[0] != b or self.source_mask.shape != self.source_ids.shape)
        ):
            raise ValueError("source_ids and source_mask go together, one row per example.")

    @property
    def encoder_decoder(self) -> bool:
        """Whether the batch holds encoder–decoder inputs (a source side)."""
        return self.source_ids is not None

    @property
    def source_width(self) -> int:
        """Padded source length (0 for decoder-only batches)."""
        return 0 if self.source_ids is None else self.source_ids.shape[1]

    @property
    def source_lengths(self) -> tuple[int, ...]:
        """Real source tokens of each example (0 for decoder-only batches)."""
        if self.source_mask is None:
            return (0,) * self.size
        return tuple(int(n) for n in self.source_mask.sum(-1).tolist())

    @property
    def input_width(self) -> int:
        """Width of the input positions methods attribute to: source, then decoder positions."""
        return self.source_width + self.tokens.shape[1]

    @property
    def input_ids(self) -> Int[Tensor, "batch pos"]:
        """Ids at every input position (the source ids, then ``tokens``)."""
        if self.source_ids is None:
            return self.tokens
        return torch.cat([self.source_ids, self.tokens], dim=1)

    def real_positions(self, i: int) -> Int[Tensor, "pos"]:
        """Input positions of example ``i``'s real (unpadded) tokens, source side first."""
        device = self.tokens.device
        own = len(self.sequence(i))
        decoder = torch.arange(own, device=device) + self.pad_lengths[i] + self.source_width
        source = torch.arange(self.source_lengths[i], device=device)
        return torch.cat([source, decoder])

    @property
    def visible(self) -> Bool[Tensor, "batch step pos"]:
        """Input positions each real step can see: real source tokens, and the decoder-side
        (or prompt + target) tokens before the token it predicts."""
        device = self.tokens.device
        cols = torch.arange(self.tokens.shape[1], device=device)
        pads = torch.tensor(self.pad_lengths, device=device)
        starts = torch.tensor([self.target_start(i) for i in range(self.size)], device=device)
        steps = torch.arange(self.n_steps, device=device)
        ends = starts[:, None] + steps[None, :]  # [batch, step]: one past the last visible
        own = (cols[None, None, :] >= pads[:, None, None]) & (cols[None, None, :] < ends[..., None])
        own &= self.step_mask[..., None]
        if self.source_mask is None:
            return own
        source = self.source_mask.bool()[:, None, :] & self.step_mask[..., None]
        return torch.cat([source, own], dim=-1)

    @property
    def size(self) -> int:
        return self.tokens.shape[0]

    @property
    def n_steps(self) -> int:
        """The largest number of targets in the batch (the ``step`` dimension)."""
        return max(self.target_lengths, default=0)

    @property
    def pad_lengths(self) -> tuple[int, ...]:
        """Left padding of each example (0 in right-padded encoder–decoder batches)."""
        if self.source_ids is not None:
            return (0,) * self.size
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
        """The real (unpadded) token ids of example ``i`` (the decoder side, if encoder–decoder)."""
        pad = self.pad_lengths[i]
        return self.tokens[i, pad : pad + self.prompt_lengths[i] + self.target_lengths[i]]

    def source(self, i: int) -> Int[Tensor, "source_pos"] | None:
        """The real source ids of example ``i`` (None for decoder-only batches)."""
        if self.source_ids is None:
            return None
        return self.source_ids[i, : self.source_lengths[i]]

    def take(self, index: Sequence[int] | Tensor) -> Batch:
        """Return the examples at ``index`` (repeats allowed) as a new batch."""
        idx = torch.as_tensor(index, dtype=torch.long, device=self.tokens.device)
        rows = idx.tolist()
        return Batch(
            self.tokens[idx],
            self.attention_mask[idx],
            tuple(self.prompt_lengths[i] for i in rows),
            tuple(self.target_lengths[i] for i in rows),
            None if self.source_ids is None else self.source_ids[idx],
            None if self.source_mask is None else self.source_mask[idx],
        )

    def to(self, device) -> Batch:
        return Batch(
            self.tokens.to(device),
            self.attention_mask.to(device),
            self.prompt_lengths,
            self.target_lengths,
            None if self.source_ids is None else self.source_ids.to(device),
            None if self.source_mask is None else self.source_mask.to(device),
        )


def _pad(seqs: Sequence[Sequence[int]], pad_id: int, left: bool) -> tuple[Tensor, Tensor]:
    """Pad id lists to one width: ``(ids, mask)``, padding on the left or on the right."""
    width = max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, seq in enumerate(seqs):
        if seq:
            cols = slice(width - len(seq), width) if left else slice(0, len(seq))
            tokens[i, cols] = torch.tensor(list(seq), dtype=torch.long)
            mask[i, cols] = 1
    return tokens, mask


def make_batch(
    prompts: Sequence[Sequence[int]],
    targets: Sequence[Sequence[int]] | None = None,
    *,
    sources: Sequence[Sequence[int]] | None = None,
    pad_id: int = 0,
    device: torch.device | str = "cpu",
) -> Batch:
    """Pad ``prompt + target`` id lists into a :class:`Batch`.

    Decoder-only: left-padded. With ``sources`` (encoder–decoder: ``prompts`` are then the
    decoder prefixes, decoder start token first): sources and decoder inputs right-padded.
    """
    if not prompts:
        raise ValueError("No inputs given: pass at least one prompt.")
    targets = targets if targets is not None else [[] for _ in prompts]
    if len(targets) != len(prompts):
        raise ValueError(f"Got {len(prompts)} prompts but {len(targets)} targets; pass one each.")
    if sources is not None and len(sources) != len(prompts):
        raise ValueError(f"Got {len(sources)} sources for {len(prompts)} decoder inputs.")
    seqs = [list(p) + list(t) for p, t in zip(prompts, targets, strict=True)]
    tokens, mask = _pad(seqs, pad_id, left=sources is None)
    source_ids = source_mask = None
    if sources is not None:
        source_ids, source_mask = (x.to(device) for x in _pad(sources, pad_id, left=False))
    return Batch(
        tokens.to(device),
        mask.to(device),
        tuple(len(p) for p in prompts),
        tuple(len(t) for t in targets),
        source_ids,
        source_mask,
    )


_WORD_START = "▁"  # SentencePiece's word-boundary marker


def str_tokens(model, ids: Sequence[int] | Tensor) -> list[str]:
    """Decode each id to its text piece (special tokens kept).

    A SentencePiece-style piece that starts a word (``"▁Er"``) decodes alone without its space
    (``"Er"``); the space is put back (``" Er"``), as byte-level BPE pieces keep theirs, so that
    joining the pieces gives the text.
    """
    ids = ids.tolist() if isinstance(ids, Tensor) else list(ids)
    tokenizer = model.tokenizer
    pieces = tokenizer.convert_ids_to_tokens(ids)
    out = []
    for i, piece in zip(ids, pieces, strict=True):
        text = tokenizer.decode([i], skip_special_tokens=False)
        if isinstance(piece, str) and piece.startswith(_WORD_START) and not text.startswith(" "):
            text = " " + text
        out.append(text)
    return out
