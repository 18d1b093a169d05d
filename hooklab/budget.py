"""The memory budget every method shares: how many token rows one batched pass may hold.

A leaf module (it imports nothing from hooklab), so that the attribution methods
(:mod:`hooklab.methods`) and the context-mixing methods (:mod:`hooklab.mixing`) read one
default without importing each other.
"""

from __future__ import annotations

#: Default of every method's ``max_batch_tokens``: sequence-tokens per forward pass or VJP.
MAX_BATCH_TOKENS = 2048


def check_positive(name: str, value: object, what: str = "", *, optional: bool = False) -> None:
    """Raise ValueError unless ``value`` is an int >= 1 (or None when ``optional``)."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        allowed = "a positive int or None" if optional else "a positive int"
        raise ValueError(f"{name} must be {allowed}{f' ({what})' if what else ''}, got {value!r}.")


__all__ = ["MAX_BATCH_TOKENS", "check_positive"]
