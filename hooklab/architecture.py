"""Facts about a loaded model's architecture, and selecting its layers and heads by index.

Methods ask these questions instead of probing the bridge themselves: is it an encoder–decoder
model, how many key/value heads does it have, which layers or heads did the user select.
"""

from __future__ import annotations

from collections.abc import Sequence


def is_encoder_decoder(model) -> bool:
    """Whether the bridge wraps an encoder–decoder model (it has encoder and decoder blocks)."""
    return hasattr(model, "encoder_blocks") and hasattr(model, "decoder_blocks")


def n_kv_heads(model) -> int:
    """Return the number of key/value heads (the number of heads without grouped KV heads)."""
    return int(getattr(model.cfg, "n_key_value_heads", None) or model.cfg.n_heads)


def select_indices(value: int | Sequence[int] | range | None, n: int, what: str) -> list[int]:
    """Turn ``None`` (all), an int, a range or a list into sorted valid indices below ``n``.

    Negative indices count from the end. Raises ValueError naming ``what`` and the valid range.
    """
    if value is None:
        return list(range(n))
    items = [value] if isinstance(value, int) else list(value)
    bad = [i for i in items if isinstance(i, bool) or not isinstance(i, int) or not -n <= i < n]
    if bad or not items:
        raise ValueError(f"Invalid {what} {value!r}: choose from 0..{n - 1} (or negative).")
    return sorted({i % n for i in items})


def check_raw_mode(model, what: str) -> None:
    """Raise ValueError for a model in TransformerLens' compatibility mode, which ``what``
    cannot use (it folds the value bias into other weights, so ``hook_v`` no longer holds the
    true value vectors)."""
    if getattr(model, "compatibility_mode", False):
        raise ValueError(
            f"{what} needs the model's true value vectors, but this model was loaded with "
            "compatibility_mode=True, which folds the value bias into other weights. Load it "
            "with hooklab.load(..., compatibility_mode=False) (the default)."
        )


def refuse_encoder_decoder(model, what: str) -> None:
    """Raise NotImplementedError if ``model`` is encoder–decoder and ``what`` is decoder-only.

    Used by :func:`hooklab.attribute` for methods registered without ``encoder_decoder=True``
    and by PECoRe; the built-in methods, step scores, generation and context mixing
    (:mod:`hooklab.mixing`) run on such models.
    """
    if is_encoder_decoder(model):
        raise NotImplementedError(
            f"{what} does not support encoder-decoder models (Marian, BART, T5) yet. Built-in "
            "attribution methods do (hooklab.list_methods()); a method registered with "
            "encoder_decoder=True gets a batch with source_ids (see hooklab.seq2seq)."
        )
