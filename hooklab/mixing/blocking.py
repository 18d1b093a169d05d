"""Block attention edges inside Hugging Face attention modules, through transformers' public
attention interface (no library global is replaced).

On encoder–decoder bridges (Marian, BART, T5) the attention runs inside the wrapped Hugging Face
module and hook edits of the pattern are discarded, so a knockout must happen in the attention
function itself. hooklab registers one attention function, :data:`ATTENTION`, once, under its
own name (``AttentionInterface.register``), and selects it per model for the duration of a call
(:func:`blocked_attention`, which restores the model's implementation in ``finally``). The
edges to block are passed in a :class:`~contextvars.ContextVar`, so the function needs no global
state: with nothing blocked (any other caller, thread or task) it is the module's own eager
attention, bit for bit.

Exactness. ``transformers/masking_utils.py`` (``_preprocess_mask_arguments``, transformers
5.23) returns *no mask at all* for an attention implementation that has no entry in
``AttentionMaskInterface`` ("custom attention without equivalent mask creation"): the decoder's
causal mask (and any padding mask) silently disappears. So the eager mask function is
registered under the same name too (``AttentionMaskInterface.register``): the attention
function then receives exactly the 4-d additive float mask that eager attention gets.

Decoder-only bridges that delegate to the Hugging Face module (OPT, GPT-J in TransformerLens
4.3; see :mod:`hooklab.mixing.knockout`) are blocked one step earlier, in the additive
``attention_mask`` argument that the module adds to its scaled scores before the softmax
(:func:`blocked_mask_argument`, a forward pre-hook): GPT-J's attention computes its scores in
its own ``_attn`` method and never calls the attention interface, so the argument is the one
place both families share. Encoder–decoder models keep the attention function, which needs no
mask argument (T5's modules take theirs as ``mask``, and unpadded cross-attention may get
None). Either way the pass's self-check proves the edit took effect.
"""

from __future__ import annotations

import contextlib
import inspect
from contextvars import ContextVar
from types import MappingProxyType
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

    from torch import Tensor, nn

#: The name hooklab's attention function is registered under in transformers.
ATTENTION = "hooklab_knockout"

# Edges blocked in the current context: attention module -> [batch, query_pos, key_pos] bool.
_BLOCKED: ContextVar[Mapping[nn.Module, Tensor]] = ContextVar(
    "hooklab_blocked_edges", default=MappingProxyType({})
)


def knockout_attention(module, query, key, value, attention_mask, *args, **kwargs):
    """The module's own eager attention, with the blocked edges' scores at the dtype minimum.

    Calls ``eager_attention_forward`` from the module's modeling file (so scaling, T5's
    position bias and the like are kept); the edges blocked for ``module`` in this context
    (True = blocked) get the dtype minimum in the additive mask, as the causal mask does.
    """
    eager = getattr(inspect.getmodule(type(module)), "eager_attention_forward", None)
    if eager is None:
        raise NotImplementedError(
            f"{type(module).__name__} has no eager_attention_forward in its modeling file; "
            "attention knockout cannot be applied to this model."
        )
    blocked = _BLOCKED.get().get(module)
    if blocked is not None:
        blocked = blocked.to(query.device)[:, None]  # [batch, 1, query_pos, key_pos]
        floor = query.new_tensor(torch.finfo(query.dtype).min)
        base = query.new_zeros(()) if attention_mask is None else attention_mask
        attention_mask = torch.where(blocked, floor, base)
    return eager(module, query, key, value, attention_mask, *args, **kwargs)


def register() -> None:
    """Register :func:`knockout_attention` and the eager mask under :data:`ATTENTION`.

    Idempotent; adds one name to transformers' registries and replaces none of theirs.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    AttentionInterface.register(ATTENTION, knockout_attention)
    AttentionMaskInterface.register(ATTENTION, ALL_MASK_ATTENTION_FUNCTIONS["eager"])


def _implementations(hf_model) -> dict[int, tuple[object, str | None]]:
    configs = (getattr(m, "config", None) for m in hf_model.modules())
    return {
        id(c): (c, c._attn_implementation) for c in configs if hasattr(c, "_attn_implementation")
    }


@contextlib.contextmanager
def blocked_attention(hf_model, masks: Mapping[nn.Module, Tensor]) -> Iterator[None]:
    """Run ``hf_model`` with the edges ``masks[module]`` blocked in those attention modules.

    Selects :data:`ATTENTION` with the model's public ``set_attn_implementation`` and restores
    every (sub-)config's previous implementation on exit, also after an exception.

    Args:
        hf_model: the wrapped Hugging Face model (``bridge.original_model``).
        masks: ``{attention module: [batch, query_pos, key_pos]}`` bool, True = blocked.
    """
    register()
    top, before = hf_model.config._attn_implementation, _implementations(hf_model)
    token = _BLOCKED.set(MappingProxyType(dict(masks)))
    try:
        hf_model.set_attn_implementation(ATTENTION)
        yield
    finally:
        _BLOCKED.reset(token)
        hf_model.set_attn_implementation(top)
        for config, implementation in before.values():
            if config._attn_implementation != implementation:
                config._attn_implementation = implementation


def modules_run(run: Callable[[], object], modules: Sequence[nn.Module]) -> frozenset[int]:
    """Indices of the ``modules`` whose forward runs during ``run()``.

    Read-only forward pre-hooks, removed in ``finally``. A TransformerLens attention bridge
    that recomputes attention itself (and fires ``hook_attn_scores`` before its softmax) never
    calls the wrapped Hugging Face module; one that delegates to it does.
    """
    ran: set[int] = set()
    handles = []
    try:
        for i, module in enumerate(modules):
            handles.append(module.register_forward_pre_hook(lambda *_, i=i: ran.add(i)))
        run()
    finally:
        for handle in handles:
            handle.remove()
    return frozenset(ran)


def _block_mask_argument(blocked: Tensor):
    def hook(module, args, kwargs):
        mask = kwargs.get("attention_mask")
        if not isinstance(mask, torch.Tensor) or mask.dim() != 4:
            got = None if mask is None else tuple(getattr(mask, "shape", ()))
            raise RuntimeError(
                f"{type(module).__name__} received attention_mask={got!r}, not a 4-d "
                "[batch, 1, query_pos, key_pos] mask, so attention knockout cannot block edges "
                "in it; load the model with attn_implementation='eager'."
            )
        edges = blocked.to(mask.device)[:, None]  # [batch, 1, query_pos, key_pos]
        if mask.dtype == torch.bool:  # True = attend
            edited = mask & ~edges
        else:
            edited = torch.where(edges, mask.new_tensor(torch.finfo(mask.dtype).min), mask)
        return args, {**kwargs, "attention_mask": edited}

    return hook


@contextlib.contextmanager
def blocked_mask_argument(masks: Mapping[nn.Module, Tensor]) -> Iterator[None]:
    """Block the edges ``masks[module]`` in the ``attention_mask`` each module receives.

    The blocked entries of the 4-d additive mask get the dtype minimum, the value of the
    causal mask's hidden entries (or False in a boolean mask); every other module and call
    sees the mask unchanged. Forward pre-hooks, removed in ``finally``.

    Args:
        masks: ``{attention module: [batch, query_pos, key_pos]}`` bool, True = blocked.
    """
    handles = []
    try:
        for module, blocked in masks.items():
            hook = _block_mask_argument(blocked)
            handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()
