"""The memory budget every method shares: how many token rows one batched pass may hold.

A leaf module (it imports only :mod:`hooklab.options`, itself a leaf), so that the attribution
methods (:mod:`hooklab.methods`) and the context-mixing methods (:mod:`hooklab.mixing`) read
one default without importing each other.
"""

from __future__ import annotations

#: Default of every method's ``max_batch_tokens``: sequence-tokens per forward pass or VJP.
MAX_BATCH_TOKENS = 2048


def check_positive(name: str, value: object, what: str = "", *, optional: bool = False) -> None:
    """Raise unless ``value`` is an int >= 1 (or None when ``optional``): the
    :data:`~hooklab.options.PositiveInt` rule, for callers outside a method's declaration."""
    from hooklab.options import PositiveInt, check_value

    del what  # the rule names itself
    check_value(name, value, PositiveInt | None if optional else PositiveInt)


__all__ = ["MAX_BATCH_TOKENS", "check_positive"]
