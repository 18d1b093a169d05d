"""ReAGent's input adapter: which input positions a probe may replace, and with what.

ReAGent runs one algorithm over a batch's *input positions* (``Batch.input_width``): on
decoder-only models the prompt + target tokens, on encoder–decoder models (Marian, BART, T5) the
source positions, then the decoder positions (see :mod:`hooklab.inputs`). This module isolates
where the two layouts differ:

- replaceable positions: decoder-only, every real token but a leading BOS; encoder–decoder,
  the real source tokens except the tokenizer's special tokens (``</s>``, ``<unk>``, ...), and
  the decoder input after the decoder start token;
- replacement distributions: decoder-only, :func:`hooklab.methods.replacements.
  replacement_probs`; encoder–decoder, see :func:`input_replacement_probs`;
- a batch with replaced ids at every input position (:func:`with_input_ids`).
"""

from __future__ import annotations

import dataclasses

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from hooklab.architecture import is_encoder_decoder
from hooklab.forward import seq2seq_forward
from hooklab.inputs import Batch, bos_token_id
from hooklab.methods.replacements import _check_source, replacement_probs, special_ids


def replaceable(model, batch: Batch) -> Bool[Tensor, "batch pos"]:
    """Input positions a probe may replace (each example's own, whatever the batch)."""
    W, dev = batch.tokens.shape[1], batch.tokens.device
    pos = torch.arange(W, device=dev)
    if not batch.encoder_decoder:
        bos = bos_token_id(model)
        first = [p + int(bos is not None and int(batch.tokens[b, p]) == bos)
                 for b, p in enumerate(batch.pad_lengths)]  # fmt: skip
        return pos >= torch.tensor(first, device=dev)[:, None]
    lengths = torch.tensor([len(batch.sequence(i)) for i in range(batch.size)], device=dev)
    decoder = (pos >= 1) & (pos < lengths[:, None])  # never the decoder start token
    specials = torch.tensor(special_ids(model), dtype=torch.long, device=dev)
    source = batch.source_mask.bool() & ~torch.isin(batch.source_ids, specials)
    return torch.cat([source, decoder], dim=1)


def input_replacement_probs(
    model, batch: Batch, source: object = "model"
) -> Float[Tensor, "batch pos d_vocab"]:
    """Probability of each token as a replacement at each input position (0 for the original
    and for special tokens).

    Encoder–decoder models: ``"uniform"`` is uniform on both sides. ``"model"`` (or another
    encoder–decoder model with the same tokenizer) takes the decoder's next-token distribution
    given the original source and decoder prefix on the decoder side; the decoder cannot predict
    source tokens, so on the source side it is uniform over the non-special tokens (a
    replacement the explained model does not choose, as in the paper's uniform ablation).
    """
    if not batch.encoder_decoder:
        return replacement_probs(model, batch, source)
    _check_source(model, source)
    if not isinstance(source, str) and not is_encoder_decoder(source):
        raise ValueError(
            "On encoder-decoder models, replacements must be 'model', 'uniform' or an "
            f"encoder-decoder model with the same tokenizer; got a {type(source).__name__} "
            "that is not encoder-decoder."
        )
    B, S, W = batch.size, batch.source_width, batch.tokens.shape[1]
    d_vocab = int(model.cfg.d_vocab)
    probs = torch.ones(B, S + W, d_vocab, device=batch.tokens.device)
    if source != "uniform":
        lm = model if isinstance(source, str) else source
        logits = seq2seq_forward(lm, batch).float()[..., :d_vocab]  # row w-1 predicts w
        probs[:, S + 1 :] = logits[:, :-1].softmax(-1)
    probs[..., special_ids(model)] = 0.0
    probs.scatter_(-1, batch.input_ids[..., None], 0.0)
    return probs / probs.sum(-1, keepdim=True).clamp(min=1e-30)


def with_input_ids(batch: Batch, ids: Int[Tensor, "batch pos"]) -> Batch:
    """The batch with ``ids`` at every input position (source, then decoder)."""
    if not batch.encoder_decoder:
        return dataclasses.replace(batch, tokens=ids)
    S = batch.source_width
    return dataclasses.replace(batch, source_ids=ids[:, :S], tokens=ids[:, S:])
