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


def layer_groups(layers: list[int], per_layer: int) -> list[list[int]]:
    """Split ``layers`` into consecutive groups whose captures (``per_layer`` elements each)
    fit :data:`CAPTURE_ELEMENTS`; at least one layer per group."""
    size = max(1, CAPTURE_ELEMENTS // max(1, per_layer))
    return [layers[i : i + size] for i in range(0, len(layers), size)]


def check_positive(name: str, value: object, what: str = "", *, optional: bool = False) -> None:
    """Raise unless ``value`` is an int >= 1 (or None when ``optional``): the
    :data:`~hooklab.options.PositiveInt` rule, for callers outside a method's declaration."""
    from hooklab.options import PositiveInt, check_value

    del what  # the rule names itself
    check_value(name, value, PositiveInt | None if optional else PositiveInt)


__all__ = ["CAPTURE_ELEMENTS", "MAX_BATCH_TOKENS", "check_positive", "layer_groups"]
