"""Hook-name builders and a temporary-hooks context manager.

Every intervention in hooklab is a forward hook on a TransformerLens hook point, added inside
:func:`temporary_hooks` so that it is removed in a ``finally`` block even when the wrapped code
raises. Methods never spell hook names as string literals: they call :func:`hook_name`.

Released patterns: TransformerLens 4.3's joint-QKV attention component (GPT-2, GPT-J, Pythia,
... ) stores each forward's full ``[batch, head, query_pos, key_pos]`` pattern on itself
(``_pattern``, which no code reads) until the next forward, so a pass without gradients held
every layer's pattern at once (at 1,000 tokens on 12 layers x 4 heads: 226 MB of a 233 MB
peak) and the model kept them after it. Inside :func:`temporary_hooks` a hook on each such
component's ``hook_out`` drops the stored pattern as soon as the layer has used it, and the
``finally`` drops any left; the layer's own computation is unchanged (49 MB peak on the same
pass). Gradient passes keep patterns in the autograd graph regardless.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

from hooklab.registry import unknown_name_error

# Short names of per-layer hook points -> their TransformerLens names (``{layer}`` is filled in).
_LAYER_HOOKS = {
    "resid_pre": "blocks.{layer}.hook_resid_pre",
    "resid_mid": "blocks.{layer}.hook_resid_mid",
    "resid_post": "blocks.{layer}.hook_resid_post",
    "attn_out": "blocks.{layer}.hook_attn_out",
    "mlp_out": "blocks.{layer}.hook_mlp_out",
    "q": "blocks.{layer}.attn.hook_q",
    "k": "blocks.{layer}.attn.hook_k",
    "v": "blocks.{layer}.attn.hook_v",
    "z": "blocks.{layer}.attn.hook_z",
    "attn_scores": "blocks.{layer}.attn.hook_attn_scores",
    "pattern": "blocks.{layer}.attn.hook_pattern",
    "attn_in": "blocks.{layer}.attn.hook_in",
    "ln1": "blocks.{layer}.ln1.hook_out",
    "ln2": "blocks.{layer}.ln2.hook_out",
}
_MODEL_HOOKS = {
    "embed": "hook_embed",
    "pos_embed": "hook_pos_embed",
    "ln_final": "ln_final.hook_out",
    "unembed": "hook_unembed",
}

HookFn = Callable[..., object]


def hook_name(kind: str, layer: int | None = None) -> str:
    """Return the TransformerLens hook name for ``kind`` (and ``layer`` for per-layer hooks).

    Example:
        >>> hook_name("v", 3)
        'blocks.3.attn.hook_v'
        >>> hook_name("embed")
        'hook_embed'
    """
    if kind in _MODEL_HOOKS:
        if layer is not None:
            raise ValueError(f"Hook {kind!r} is not per layer; got layer={layer}.")
        return _MODEL_HOOKS[kind]
    if kind in _LAYER_HOOKS:
        if layer is None or not isinstance(layer, int) or layer < 0:
            raise ValueError(f"Hook {kind!r} needs a non-negative int layer; got {layer!r}.")
        return _LAYER_HOOKS[kind].format(layer=layer)
    raise unknown_name_error("hook kind", kind, [*_MODEL_HOOKS, *_LAYER_HOOKS])


def check_hook_names(model, names: Sequence[str]) -> None:
    """Raise KeyError if a hook name is not a hook point of ``model`` (close matches listed)."""
    valid = model.hook_dict
    for name in names:
        if name not in valid:
            raise unknown_name_error("hook point", name, list(valid))


@contextlib.contextmanager
def temporary_hooks(model, fwd_hooks: Sequence[tuple[str, HookFn]]) -> Iterator[None]:
    """Add forward hooks for the duration of a ``with`` block; always remove them.

    Args:
        model: a TransformerLens ``TransformerBridge``.
        fwd_hooks: ``(hook_name, fn)`` pairs; ``fn(activation, hook)`` returns the new
            activation or ``None`` to leave it unchanged.
    """
    check_hook_names(model, [name for name, _ in fwd_hooks])
    holders = pattern_holders(model)
    release = [(name, _release(module)) for name, module in holders]
    try:
        with model.hooks(fwd_hooks=[*release, *fwd_hooks], reset_hooks_end=True):
            yield
    finally:
        for _, module in holders:
            module._pattern = None


def pattern_holders(model) -> list[tuple[str, object]]:
    """``(hook_out name, component)`` of each attention component of ``model`` that stores
    its last full pattern (``_pattern``, see the module docstring)."""
    hooks, found, seen = model.hook_dict, [], set()
    for name in hooks:
        if not name.endswith(".hook_pattern"):
            continue
        owner = name.removesuffix(".hook_pattern")
        module = model.get_submodule(owner)
        if id(module) in seen or not hasattr(module, "_pattern"):
            continue
        if f"{owner}.hook_out" in hooks:
            seen.add(id(module))
            found.append((f"{owner}.hook_out", module))
    return found


def _release(module) -> HookFn:
    def fn(activation, hook):
        module._pattern = None  # stored by the component, read by nothing

    return fn


def count_hooks(model) -> int:
    """Return how many forward/backward hook functions are attached to ``model``'s hook points."""
    total = 0
    seen = set()
    for point in model.hook_dict.values():
        if id(point) in seen:
            continue
        seen.add(id(point))
        total += len(point._forward_hooks) + len(point._backward_hooks)
    return total


def recorder(names: Sequence[str]) -> tuple[list[tuple[str, HookFn]], dict[str, object]]:
    """Hooks that record activations, and the dict they fill.

    Returns ``(hooks, cache)``: pass ``hooks`` to :func:`temporary_hooks` (or
    :func:`hooklab.forward.forward`) together with any other hooks; after the forward pass
    ``cache[name]`` holds the detached activation at hook point ``name`` (the last one seen).

    Example:
        >>> hooks, cache = recorder([hook_name("pattern", 0)])
        >>> [name for name, _ in hooks]
        ['blocks.0.attn.hook_pattern']
    """
    cache: dict[str, object] = {}

    def keep(name: str) -> HookFn:
        def fn(activation, hook):
            cache[name] = activation.detach()

        return fn

    return [(name, keep(name)) for name in dict.fromkeys(names)], cache
