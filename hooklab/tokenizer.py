"""The model's own tokenizer and its conventions: BOS, EOS, whether BOS is prepended.

:func:`hooklab.load` keeps the Hugging Face tokenizer a model was saved with (or was given) as
``model.hooklab_tokenizer``; TransformerLens works on a copy, which it gives a BOS token where
the model has none (Qwen's: the EOS token) and rebuilds to add BOS. BOS and EOS are read from
the model's own one, so that hooklab's inputs and generations equal Hugging Face's.
"""

from __future__ import annotations


def own_tokenizer(model):
    """Return the model's own Hugging Face tokenizer, as :func:`hooklab.load` was given it (or
    read it) before TransformerLens adjusted its copy; ``model.tokenizer`` for other bridges."""
    return getattr(model, "hooklab_tokenizer", None) or model.tokenizer


def bos_token_id(model) -> int | None:
    """Return the model's BOS token id, or None when its own tokenizer has none (Qwen)."""
    return getattr(own_tokenizer(model), "bos_token_id", None)


def tokenizer_adds_bos(model) -> bool:
    """Whether the model's own tokenizer starts ``tokenizer(text)`` with its BOS token."""
    bos = bos_token_id(model)
    ids = list(own_tokenizer(model)("a")["input_ids"])
    return bos is not None and len(ids) > 1 and ids[0] == bos


def resolve_prepend_bos(model, prepend_bos: bool | None) -> bool:
    """Return whether prompts get BOS: ``prepend_bos``, or (None) what the tokenizer does."""
    if prepend_bos is None:
        return tokenizer_adds_bos(model)
    if not isinstance(prepend_bos, bool):
        raise TypeError(
            f"prepend_bos must be True, False or None (follow the tokenizer), got {prepend_bos!r}."
        )
    if prepend_bos and bos_token_id(model) is None:
        raise ValueError(
            "prepend_bos=True, but the model's tokenizer has no BOS token (as Qwen's). Pass "
            "prepend_bos=None or False, or token ids that start with the token you want."
        )
    return prepend_bos


def refuse_prepend_bos(prepend_bos: bool | None) -> None:
    """Raise for an explicit ``prepend_bos`` on an encoder–decoder model (sources follow the
    tokenizer's special tokens)."""
    if prepend_bos is not None:
        raise ValueError(
            f"prepend_bos={prepend_bos!r} is for decoder-only models; encoder-decoder sources are "
            "tokenised with the tokenizer's special tokens. Leave prepend_bos=None."
        )


def eos_token_ids(model) -> set[int]:
    """Return the ids that end a generation: the tokenizer's EOS and every id of the model's
    ``generation_config.eos_token_id`` (an int or a list, e.g. Llama 3's two)."""
    config = getattr(getattr(model, "original_model", None), "generation_config", None)
    configured = getattr(config, "eos_token_id", None)
    ids = list(configured) if isinstance(configured, (list, tuple)) else [configured]
    ids.append(getattr(own_tokenizer(model), "eos_token_id", None))
    return {int(i) for i in ids if i is not None}
