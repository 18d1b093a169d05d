"""The memory budget every method shares: how many token rows one batched pass may hold.

A leaf module (it imports only :mod:`hooklab.options`, itself a leaf), so that the attribution
methods (:mod:`hooklab.methods`) and the context-mixing methods (:mod:`hooklab.mixing`) read
one default without importing each other.
"""

from __future__ import annotations

#: Default of every method's ``max_batch_tokens``: sequence-tokens per forward pass or VJP.
MAX_BATCH_TOKENS = 2048
#: Elements (floats) of per-layer activations one clean capture may hold: value zeroing
#: records as many layers per clean forward as fit (all of a short input's, one of a long one's).
CAPTURE_ELEMENTS = 1 << 26
#: Elements of one layer's attention scores a no-grad pass of several copies may hold: past
#: it, eager attention costs more per sequence as copies are added (measured, one CPU thread,
#: 2-layer 4-head GPT-2 at 1,000 tokens: 0.19 s per sequence one per pass, 0.28 two, 0.39
#: eight), below it batching copies pays (256 tokens: 32 per pass 20% faster than 8).
ATTENTION_ELEMENTS = 1 << 22


def layer_groups(layers: list[int], per_layer: int) -> list[list[int]]:
    """Split ``layers`` into consecutive groups whose captures (``per_layer`` elements each)
    fit :data:`CAPTURE_ELEMENTS`; at least one layer per group."""
    size = max(1, CAPTURE_ELEMENTS // max(1, per_layer))
    return [layers[i : i + size] for i in range(0, len(layers), size)]


def attention_rows(heads: int, width: int) -> int:
    """Copies of a ``width``-position sequence per no-grad pass whose attention scores
    (``heads x width²`` each) fit :data:`ATTENTION_ELEMENTS`; at least 1."""
    return max(1, ATTENTION_ELEMENTS // max(1, heads * width * width))


def check_positive(name: str, value: object, what: str = "", *, optional: bool = False) -> None:
    """Raise unless ``value`` is an int >= 1 (or None when ``optional``): the
    :data:`~hooklab.options.PositiveInt` rule, for callers outside a method's declaration."""
    from hooklab.options import PositiveInt, check_value

    del what  # the rule names itself
    check_value(name, value, PositiveInt | None if optional else PositiveInt)


__all__ = [
    "ATTENTION_ELEMENTS",
    "CAPTURE_ELEMENTS",
    "MAX_BATCH_TOKENS",
    "attention_rows",
    "check_positive",
    "layer_groups",
]
