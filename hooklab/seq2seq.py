"""Where encoder–decoder models (Marian, BART, T5) differ for attribution: a small adapter.

Every method runs one algorithm on a :class:`~hooklab.inputs.Batch`; for these models the batch
also holds the source (see :mod:`hooklab.inputs`), and this module says how to tokenise a
source, which token starts the decoder, how to embed both sides, and how to replace the input
embeddings of both stacks in a forward pass (which :func:`hooklab.forward.seq2seq_forward`
runs, with ``input_ids`` / ``attention_mask`` / ``decoder_input_ids``).

Embeddings. The bridge's ``hook_embed`` is not on every model's path: T5's stacks call their own
``embed_tokens`` (tied to ``shared``), while the bridge hooks ``shared``, so on T5 an edit of
``hook_embed`` never reached the model (every gradient was 0). The input embeddings here are
the outputs of the encoder's and the decoder's ``embed_tokens`` modules (what each stack scales
and adds positions to), replaced for one pass with PyTorch forward hooks that are always removed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from jaxtyping import Float
from torch import Tensor, nn

from hooklab.inputs import Batch, check_length, context_window, encode_text, own_tokenizer


def decoder_start_id(model) -> int:
    """The token the decoder input starts with (``decoder_start_token_id`` of the config)."""
    config = model.original_model.config
    start = getattr(config, "decoder_start_token_id", None)
    if start is None:
        start = getattr(config, "pad_token_id", None)
    if start is None:
        raise ValueError(
            "This encoder-decoder model's config has no decoder_start_token_id; set it on "
            "model.original_model.config."
        )
    return int(start)


def encode_source(model, source: str | Sequence[int]) -> list[int]:
    """Source (encoder) ids: text with the tokenizer's special tokens (e.g. Marian's and T5's
    ``</s>``), as the model sees them; token id lists are used as given."""
    if isinstance(source, str):
        encode_text(model, source, what="Source text")  # empty text -> ValueError
        # the model's own tokenizer: TransformerLens' copy is rebuilt with add_bos_token=True,
        # which replaces a template such as BART's "<s> X </s>" with "<s> X"
        ids = list(own_tokenizer(model)(source)["input_ids"])
    elif isinstance(source, Sequence) and source and all(isinstance(i, int) for i in source):
        ids = list(source)
    else:
        raise TypeError(f"A source must be a string or a non-empty list of token ids: {source!r}")
    check_length(model, len(ids), "source (encoder input)")
    return ids


def check_decoder_length(model, n_targets: int) -> None:
    """Raise ValueError if the decoder input (start token + targets) exceeds the window."""
    check_length(model, 1 + n_targets, "decoder input (decoder start token + target)")


def decoder_room(model, n_targets: int = 0) -> int:
    """How many more tokens the decoder input can take."""
    return context_window(model) - 1 - n_targets


def embedding_modules(model) -> tuple[nn.Module, nn.Module]:
    """The encoder's and the decoder's token embedding modules (possibly one module)."""
    hf = model.original_model
    return hf.get_encoder().embed_tokens, hf.get_decoder().embed_tokens


def input_embeddings(
    model, batch: Batch, *, token_id: int | None = None
) -> Float[Tensor, "batch pos d_model"]:
    """Embeddings at every input position (source, then decoder), as the stacks compute them.

    Args:
        token_id: embed this token at every position instead (for baselines).
    """
    encoder, decoder = embedding_modules(model)
    source, tokens = batch.source_ids, batch.tokens
    if token_id is not None:
        source, tokens = torch.full_like(source, token_id), torch.full_like(tokens, token_id)
    with torch.no_grad():
        return torch.cat([encoder(source), decoder(tokens)], dim=1).detach()


@contextlib.contextmanager
def replaced_embeddings(
    model, batch: Batch, embeds: Float[Tensor, "batch pos d_model"]
) -> Iterator[None]:
    """Within the block, the stacks' embedding modules return ``embeds`` (split at the source
    width) in call order: the encoder's first, then the decoder's."""
    encoder, decoder = embedding_modules(model)
    width = batch.source_width
    queue = {id(encoder): [embeds[:, :width]], id(decoder): []}
    queue[id(decoder)].append(embeds[:, width:])

    def replace(module, args, output):
        pending = queue[id(module)]
        if not pending:
            raise RuntimeError("An embedding module ran more often than once per stack.")
        value = pending.pop(0)
        if value.shape != output.shape:
            raise ValueError(
                f"Replacement embeddings of shape {tuple(value.shape)} for an embedding output "
                f"of shape {tuple(output.shape)}."
            )
        return value

    handles = [encoder.register_forward_hook(replace)]
    if decoder is not encoder:
        handles.append(decoder.register_forward_hook(replace))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def last_block_hook(model) -> str:
    """Hook name of the last decoder block's output."""
    return f"decoder_blocks.{len(model.decoder_blocks) - 1}.hook_out"


def n_decoder_layers(model) -> int:
    """Number of decoder blocks."""
    return len(model.decoder_blocks)
