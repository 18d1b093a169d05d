"""Run one of the model's own blocks alone, on copies of one example.

Value zeroing reruns block ℓ from its clean input with some value vectors zeroed. Rather than
re-deriving what the block computes (which encodes one layout: pre-norm, attention then MLP),
the block module itself is called again with the arguments it received in the clean forward
pass, on a batch of copies. :func:`capture_block_calls` records those arguments (a forward
pre-hook on the block, removed in ``finally``); :meth:`BlockCall.copies` repeats them ``n``
times along the batch.

Repeating needs to know which tensors carry the batch, and how: the hidden states are
``[batch, pos, d_model]``, but BLOOM's ALiBi bias is ``[batch * head, 1, key_pos]`` (batch
major) and a broadcast mask may keep a batch of 1. So the arguments are captured twice, from a
pass on one copy and a pass on two: a tensor whose first dimension doubled is batch major,
with ``dim0`` rows per copy (``[1 * f, ...]`` becomes ``[n * f, ...]``); one that kept its
shape is shared by all copies. A KV cache object is dropped (the block runs without one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from hooklab.hooks import recorder, temporary_hooks

if TYPE_CHECKING:
    from collections.abc import Sequence

    from hooklab.mixing.adapter import Adapter, Example


def _without_cache(value: Any) -> Any:
    """``value`` with any transformers ``Cache`` object replaced by None (recursively)."""
    from transformers.cache_utils import Cache

    if isinstance(value, Cache):
        return None
    if isinstance(value, (tuple, list)):
        return type(value)(_without_cache(v) for v in value)
    if isinstance(value, dict):
        return {k: _without_cache(v) for k, v in value.items()}
    return value


def _repeat(one: Any, two: Any, n: int, where: str) -> Any:
    """``one`` (captured at batch 1) repeated to ``n`` copies, ``two`` (at batch 2) telling
    which tensors carry the batch."""
    if isinstance(one, Tensor):
        if not isinstance(two, Tensor):
            raise TypeError(f"{where}: a tensor at batch 1 but {type(two).__name__} at batch 2.")
        rest = one.shape[1:]
        if two.shape == one.shape:
            return one  # shared by every copy (broadcast)
        if two.shape[0] != 2 * one.shape[0] or two.shape[1:] != rest:
            raise ValueError(
                f"{where}: shape {tuple(one.shape)} at batch 1 but {tuple(two.shape)} at batch "
                "2; expected the first dimension to double (batch major) or stay."
            )
        f = one.shape[0]  # rows per copy
        return one.reshape(1, f, *rest).expand(n, f, *rest).reshape(n * f, *rest)
    if isinstance(one, (tuple, list)):
        items = zip(one, two, strict=True)
        return type(one)(_repeat(a, b, n, f"{where}[{i}]") for i, (a, b) in enumerate(items))
    if isinstance(one, dict):
        return {k: _repeat(v, two[k], n, f"{where}[{k!r}]") for k, v in one.items()}
    return one


@dataclass(frozen=True)
class BlockCall:
    """How block ``layer`` was called in the clean forward pass of one example.

    Attributes:
        block: the block module.
        one: ``(args, kwargs)`` of the pass on one copy (cache objects dropped).
        two: ``(args, kwargs)`` of the pass on two copies (to tell the batch dimensions).
        clean: the block's output in the pass on one copy, ``[query_pos, d_model]``.
    """

    block: torch.nn.Module
    one: tuple[tuple, dict]
    two: tuple[tuple, dict]
    clean: Tensor

    def copies(self, n: int) -> tuple[tuple, dict]:
        """``(args, kwargs)`` of a call on ``n`` copies of the example."""
        return _repeat(self.one, self.two, n, type(self.block).__name__)

    def run(self, n: int, hooks: Sequence[tuple[str, Any]], model) -> None:
        """Call the block on ``n`` copies with ``hooks`` attached (their effects are the
        result: the block's return value is not needed)."""
        args, kwargs = self.copies(n)
        with temporary_hooks(model, hooks):
            self.block(*args, **kwargs)


def _calls(adapter: Adapter, example: Example, layers: list[int], n: int):
    """``({layer: (args, kwargs)}, {layer: output})`` of a full pass on ``n`` copies."""
    seen: dict[int, tuple[tuple, dict]] = {}
    handles = []

    def keep(layer):
        def fn(module, args, kwargs):
            seen[layer] = _without_cache((args, kwargs))

        return fn

    hooks, outs = recorder([adapter.hook("out", la) for la in layers])
    try:
        for layer in layers:
            handles.append(
                adapter.block(layer).register_forward_pre_hook(keep(layer), with_kwargs=True)
            )
        adapter.run(example, n, hooks)
    finally:
        for handle in handles:
            handle.remove()
    return seen, {la: outs[adapter.hook("out", la)] for la in layers}


def capture_block_calls(
    adapter: Adapter, example: Example, layers: Sequence[int]
) -> dict[int, BlockCall]:
    """Record how each block in ``layers`` is called on ``example`` (passes on 1 and 2 copies)."""
    layers = list(layers)
    one, outs = _calls(adapter, example, layers, 1)
    two, _ = _calls(adapter, example, layers, 2)
    return {la: BlockCall(adapter.block(la), one[la], two[la], outs[la][0]) for la in layers}


__all__ = ["BlockCall", "capture_block_calls"]
