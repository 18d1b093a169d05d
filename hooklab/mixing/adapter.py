"""Where decoder-only and encoder–decoder models differ, for the context-mixing methods.

Value zeroing and attention knockout are written once, against an adapter: which attention
(``part``) of which blocks, its hook names, how to tokenise a prompt and its target, how to run
copies of one example, and how to block attention edges. :func:`model_adapter` returns
:class:`DecoderOnly` (GPT-2, Llama...: one causal self-attention per block; edges blocked
through ``hook_attn_scores`` where the bridge computes the scores itself, else in the Hugging
Face module's attention mask, see :meth:`DecoderOnly.blocked_edges`) or :class:`EncoderDecoder`
(Marian, BART, T5: ``"encoder"`` self-attention, ``"decoder"`` self-attention or
``"cross"``-attention; edges blocked in the attention function, :mod:`hooklab.mixing.blocking`,
since these bridges discard pattern edits).
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor

from hooklab.architecture import is_encoder_decoder
from hooklab.forward import forward, seq2seq_logits
from hooklab.hooks import hook_name
from hooklab.inputs import make_batch, refuse_prepend_bos, str_tokens
from hooklab.mixing.blocking import blocked_attention, blocked_mask_argument, modules_run
from hooklab.mixing.sequences import per_prompt, prepare_sequences
from hooklab.seq2seq import encode_source

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

PARTS = ("encoder", "decoder", "cross")
_ATTENTION = {
    "encoder": "encoder_blocks.{layer}.attn",
    "decoder": "decoder_blocks.{layer}.self_attn",
    "cross": "decoder_blocks.{layer}.cross_attn",
}


@dataclass(frozen=True)
class Example:
    """One prompt as the model runs it.

    Attributes:
        ids: decoder-only: prompt + target ids; encoder–decoder: the source (encoder) ids.
        decoder_ids: encoder–decoder only: the decoder input (start token, then the target).
        target_start: decoder-only: index of the first target token.
    """

    ids: tuple[int, ...]
    decoder_ids: tuple[int, ...] | None = None
    target_start: int | None = None


def seq2seq_hook_name(part: str, kind: str, layer: int) -> str:
    """Hook name of ``kind`` ("v", "z", "pattern", "attn_scores", or "out" for the block output)
    in ``part`` ("encoder", "decoder" self-attention or "cross"-attention) at ``layer``."""
    if part not in _ATTENTION:
        raise ValueError(f"Unknown part {part!r}; valid parts: {', '.join(PARTS)}.")
    if kind == "out":
        stack = "encoder_blocks" if part == "encoder" else "decoder_blocks"
        return f"{stack}.{layer}.hook_out"
    return _ATTENTION[part].format(layer=layer) + f".hook_{kind}"


def encode_pair(model, source: str, target: str | None, generation_kwargs=None):
    """Source ids (the tokenizer's special tokens included) and decoder input ids (the decoder
    start token, then the forced target, or the greedy translation when ``target`` is None)."""
    hf = model.original_model
    src = encode_source(model, source)
    start = hf.config.decoder_start_token_id
    if target is not None:
        return src, [start, *model.tokenizer(target, add_special_tokens=False)["input_ids"]]
    options = {"max_new_tokens": 32, **dict(generation_kwargs or {})}
    out = hf.generate(torch.tensor([src], device=model.cfg.device), do_sample=False, **options)
    tgt = out[0].tolist()
    eos = hf.config.eos_token_id
    return src, tgt[:-1] if tgt[-1] == eos and len(tgt) > 1 else tgt


class DecoderOnly:
    """Decoder-only models: the blocks' causal self-attention (``part="decoder"``)."""

    part = "decoder"
    causal = True
    encoder_decoder = False

    def __init__(self, model) -> None:
        self.model = model
        self.n_layers = model.cfg.n_layers

    def hook(self, kind: str, layer: int) -> str:
        """Hook name of ``kind`` at ``layer`` ("out" is the block output)."""
        return hook_name("resid_post" if kind == "out" else kind, layer)

    def block(self, layer: int) -> torch.nn.Module:
        """The block (bridge module) at ``layer``."""
        return self.model.blocks[layer]

    def encode(self, prompts, targets, generation_kwargs=None, prepend_bos=None) -> list[Example]:
        """Prompt + target ids per prompt (:func:`~hooklab.mixing.sequences.prepare_sequences`)."""
        sequences = prepare_sequences(self.model, prompts, targets, generation_kwargs, prepend_bos)
        return [Example(tuple(ids), target_start=start) for ids, start in sequences]

    def sides(self, example: Example) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(query ids, key ids) of the attention."""
        return example.ids, example.ids

    def run(self, example: Example, copies: int, hooks) -> Float[Tensor, "batch d_vocab"]:
        """Last-position logits of ``copies`` copies of ``example``, with ``hooks`` attached."""
        device = self.model.cfg.device
        batch = make_batch([list(example.ids)] * copies, device=device)
        last = torch.tensor([len(example.ids) - 1], device=device)
        return forward(self.model, batch, hooks=hooks, logits_to_keep=last)[:, -1]

    def attention_module(self, layer: int) -> torch.nn.Module:
        """The wrapped Hugging Face attention module of the block at ``layer``."""
        return self.model.blocks[layer].attn.original_component

    @functools.cached_property
    def delegating_layers(self) -> frozenset[int]:
        """Layers whose bridge runs the wrapped Hugging Face attention module (checked with one
        one-token forward): there the module computes the scores and ``hook_attn_scores``
        fires afterwards, on the weights, so an edit of it is discarded (OPT, GPT-J)."""
        modules = [self.attention_module(layer) for layer in range(self.n_layers)]
        return modules_run(lambda: self.run(Example((0,)), 1, []), modules)

    @contextlib.contextmanager
    def blocked_edges(self, masks: Mapping[int, Tensor]) -> Iterator[list]:
        """Set the pre-softmax scores of the blocked edges (``masks[layer]``: ``[batch,
        query_pos, key_pos]``, True = blocked) to the dtype minimum, where the scores are made.

        Where the bridge computes the scores (:attr:`delegating_layers` does not hold the
        layer), through the yielded ``hook_attn_scores`` hooks; where the Hugging Face module
        does, in the additive attention mask it receives
        (:func:`~hooklab.mixing.blocking.blocked_mask_argument`).
        """

        def block(mask):
            def fn(scores, hook):  # [batch, head, query_pos, key_pos]
                return scores.masked_fill(mask[:, None], torch.finfo(scores.dtype).min)

            return fn

        inside = self.delegating_layers
        modules = {self.attention_module(la): m for la, m in masks.items() if la in inside}
        with blocked_mask_argument(modules):
            yield [
                (self.hook("attn_scores", layer), block(mask))
                for layer, mask in masks.items()
                if layer not in inside
            ]


class EncoderDecoder:
    """Encoder–decoder models: the ``part`` attention of the encoder or decoder blocks."""

    encoder_decoder = True

    def __init__(self, model, part: str) -> None:
        self.model, self.part = model, part
        self.causal = part == "decoder"
        blocks = model.encoder_blocks if part == "encoder" else model.decoder_blocks
        self.n_layers = len(blocks)

    def hook(self, kind: str, layer: int) -> str:
        """Hook name of ``kind`` at ``layer`` ("out" is the block output)."""
        return seq2seq_hook_name(self.part, kind, layer)

    def block(self, layer: int) -> torch.nn.Module:
        """The encoder block (``part="encoder"``) or decoder block at ``layer``."""
        blocks = self.model.encoder_blocks if self.part == "encoder" else self.model.decoder_blocks
        return blocks[layer]

    def encode(self, prompts, targets, generation_kwargs=None, prepend_bos=None) -> list[Example]:
        """Source and decoder input ids per prompt (see :func:`encode_pair`)."""
        refuse_prepend_bos(prepend_bos)
        examples = []
        for prompt, target in zip(prompts, per_prompt(targets, len(prompts)), strict=True):
            src, tgt = encode_pair(self.model, prompt, target, generation_kwargs)
            examples.append(Example(tuple(src), tuple(tgt)))
        return examples

    def sides(self, example: Example) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(query ids, key ids) of the attention."""
        src, tgt = example.ids, example.decoder_ids
        return {"encoder": (src, src), "decoder": (tgt, tgt), "cross": (tgt, src)}[self.part]

    def run(self, example: Example, copies: int, hooks) -> Float[Tensor, "batch d_vocab"]:
        """Last-position logits of ``copies`` copies of ``example``, with ``hooks`` attached."""
        device = self.model.cfg.device
        src = torch.tensor([example.ids], device=device).expand(copies, -1)
        tgt = torch.tensor([example.decoder_ids], device=device).expand(copies, -1)
        return seq2seq_logits(self.model, src, tgt, hooks=hooks)[:, -1]

    def attention_module(self, layer: int) -> torch.nn.Module:
        """The wrapped Hugging Face attention module of this part at ``layer``."""
        if self.part == "encoder":
            return self.model.encoder_blocks[layer].attn.original_component
        block = self.model.decoder_blocks[layer]
        return (block.self_attn if self.part == "decoder" else block.cross_attn).original_component

    @contextlib.contextmanager
    def blocked_edges(self, masks: Mapping[int, Tensor]) -> Iterator[list]:
        """Block the edges ``masks[layer]`` in the attention function; yield no hooks."""
        modules = {self.attention_module(layer): mask for layer, mask in masks.items()}
        with blocked_attention(self.model.original_model, modules):
            yield []


Adapter = DecoderOnly | EncoderDecoder


def model_adapter(model, part: str | None = None) -> Adapter:
    """The adapter of ``model``'s ``part`` attention.

    Args:
        part: on encoder–decoder models ``"encoder"``, ``"decoder"`` or ``"cross"`` (default:
            ``"cross"``, where the output reads the prompt); on decoder-only models None or
            ``"decoder"`` (their only attention, where the output reads the prompt).
    """
    if is_encoder_decoder(model):
        part = "cross" if part is None else part
        if part not in PARTS:
            raise ValueError(
                f"Unknown part {part!r} for this encoder-decoder model; valid parts: "
                f"{', '.join(PARTS)}."
            )
        return EncoderDecoder(model, part)
    if part not in (None, "decoder"):
        raise ValueError(
            f"This decoder-only model has no {part!r} attention: its only part is 'decoder' "
            "(the default); 'encoder' and 'cross' exist on encoder-decoder models."
        )
    return DecoderOnly(model)


def side_tokens(adapter: Adapter, example: Example) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(query tokens, key tokens) of ``example`` as text."""
    queries, keys = adapter.sides(example)
    return tuple(str_tokens(adapter.model, queries)), tuple(str_tokens(adapter.model, keys))


__all__ = [
    "PARTS",
    "Adapter",
    "DecoderOnly",
    "EncoderDecoder",
    "Example",
    "encode_pair",
    "model_adapter",
    "seq2seq_hook_name",
    "side_tokens",
]
