"""A plain Hugging Face twin of a bridge, for forward passes that need no hook.

Every bridge component and hook point is a Python call: on small models the bridge spends more
time dispatching than computing (the toy model: ~4 ms per forward against ~1.8 ms for the
same Hugging Face model). Forwards that attach no hook (greedy generation, the CTI passes,
contrast passes, step scores) run a *twin* instead: a fresh instance of the model's Hugging
Face class whose parameters and buffers are the bridge's own tensors (shared, not copied).
This module owns the twin (building it, keeping it current, the switch that turns it off);
:mod:`hooklab.forward`, the one module that runs the model, decides per pass whether to use it
and supplies the probe.

The twin must give the bridge's logits bit for bit, so:

* where the bridge computes a layer norm itself (its Python path: centre, divide by
  ``sqrt(mean(x²) + eps)``, scale, shift), the twin's norm module does the same operations in
  the same order (:class:`BridgeOrderNorm`); norms the bridge delegates to Hugging Face stay;
* on first use, a probe (``hooklab.forward``'s, run through the same calls as real passes)
  compares both on a left-padded batch, and the twin is used only where every logit is equal
  (otherwise, and for architectures where an operation differs, the bridge runs as before;
  on the tiny float64 Llama of the tests, for one, the probe finds a difference);
* it is rebuilt (and probed again) after any change to what it shares or mirrors: a parameter,
  buffer or submodule of the bridge's model replaced (``setattr``, ``load_state_dict(assign=
  True)``, adapter injection or merge), a move to another dtype or device, or ``p.data``
  swapped. :func:`_key` checks every module, parameter and buffer on each call (about 0.5 ms
  on a GPT-2-small-shaped model, 0.15% of a 30-token forward: ``benchmarks/twin_key.py``);
  in-place edits need nothing (the tensors are shared). A patched ``forward`` method is not
  seen: use :func:`no_twin` then;
* the twin is not used in compatibility mode (folded weights), in training mode, with
  gradients enabled, under an Accelerate device map, for
  encoder–decoder models, while a PyTorch hook attached after the twin was built is on any
  module of the bridge (hooklab's own temporary hooks included), inside :func:`no_twin`, or
  while the environment variable ``HOOKLAB_NO_TWIN`` is set (to anything but ``""``/``"0"``;
  read on every call). The twin lives on the bridge as a plain attribute (not a submodule:
  ``state_dict`` and ``modules()`` are unchanged).

The fused twin. Passes whose token embeddings are given and that attach no hook, the
attribution methods' own computations (the gradient passes of saliency, input x gradient,
integrated gradients and gradient SHAP; the perturbed passes of occlusion, ReAGent and the
faithfulness curves), run on a second twin built the same way but with PyTorch's fused
attention (``attn_implementation="sdpa"``, on a copy of the config: the bridge's own stays
eager), which never materialises ``[head, pos, pos]`` scores (nor keeps them for a backward
pass). Fused attention sums in another order, so this twin cannot be bit-exact: its probe
(``hooklab.forward``'s) accepts it where the logits and the input gradients of a padded batch
are finite and within :func:`hooklab.selfcheck.tolerance` of the bridge's (measured across the
zoo: saliency within 7e-7 of the largest score). Passes that define the model's outputs
(generation, the CTI and contrast passes, step scores) stay on the bit-exact twin. It takes 14
of the 20 decoder-only families (not Gemma 2, OPT, GPT-J, BLOOM, Falcon, Granite: no SDPA in
Hugging Face or a rejected probe; there the twin or the bridge runs as before), and the same
rules as the twin apply (the switch included). Measured on the 2-layer, d_model 64 GPT-2 of
``benchmarks/scaling.py``, one thread: saliency at 1,000 tokens 0.84 -> 0.31 s, at 2,000
tokens 4.4 -> 0.88 s; a no-grad forward at 2,000 tokens 0.48 -> 0.06 s.

``tests/test_plain.py`` checks on every decoder-only family of :mod:`hooklab.zoo` that forwards
and greedy generation equal the bridge's exactly, after a replaced weight, a dtype round trip,
with user hooks and with the switch off; ``tests/test_fast_paths.py`` covers padding, given
embeddings and generation against Hugging Face's.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Callable, Iterator
from contextvars import ContextVar

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

#: A probe: ``probe(model, twin, embeds)`` is True if ``twin`` gives the bridge's logits bit for
#: bit (with ``embeds``: on passes whose token embeddings are given).
Probe = Callable[[object, nn.Module, bool], bool]

_FLOAT_FULL = (torch.float32, torch.float64)


class BridgeOrderNorm(nn.Module):
    """Layer norm / RMS norm computed in the bridge's order of operations (bit-identical).

    Args:
        weight, bias: the norm's parameters (the bridge's tensors); ``bias`` may be None.
        eps: the epsilon the bridge adds (its config's ``eps``).
        rms: RMS norm (no centring, no bias).
        weight_offset: scale by ``1 + weight`` (Gemma-style norms).
    """

    def __init__(self, weight, bias, eps: float, *, rms: bool, weight_offset: bool):
        super().__init__()
        self.weight, self.bias = weight, bias
        self.eps, self.rms, self.weight_offset = eps, rms, weight_offset

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        h = x if dtype in _FLOAT_FULL else x.float()
        if not self.rms:
            h = h - h.mean(-1, keepdim=True)
        h = h / (h.pow(2).mean(-1, keepdim=True) + self.eps).sqrt()
        h = h * ((1.0 + self.weight) if self.weight_offset else self.weight)
        if not self.rms and self.bias is not None:
            h = h + self.bias
        out = h.to(dtype)
        return out if self.rms or out.is_contiguous() else out.contiguous()


class _Twin:
    """A built twin and what it was built for."""

    def __init__(self, module: nn.Module | None, key: tuple, bridge_modules: list[nn.Module]):
        self.module, self.key = module, key
        # the hook dicts of every module; hooks registered from now on have ids >= built_at
        self.hook_dicts = [d for m in bridge_modules for d in _hook_dicts(m)]
        self.built_at = self.checked_at = RemovableHandle.next_id
        self.clean = True
        self.embeds_ok: bool | None = None  # may passes with given token embeddings use it


# the bridge attributes that hold its _Twins (plain attributes: not submodules, not saved)
_ATTRIBUTE = "_hooklab_plain_twin"
_FUSED_ATTRIBUTE = "_hooklab_fused_twin"


def _unwrap(module: nn.Module) -> nn.Module:
    while "_original_component" in module._modules:
        module = module._modules["_original_component"]
    return module


def _source(root: nn.Module, path: str) -> tuple[nn.Module, nn.Module] | None:
    """The bridge's module at a Hugging Face module path: (as wrapped, unwrapped), or None."""
    wrapped = root
    for part in path.split(".") if path else []:
        wrapped = _unwrap(wrapped)._modules.get(part)
        if wrapped is None:
            return None
    return wrapped, _unwrap(wrapped)


def _python_norm(wrapped: nn.Module) -> bool:
    """Whether the bridge component computes its norm itself (not Hugging Face's forward)."""
    from transformer_lens.model_bridge.generalized_components.normalization import (
        NormalizationBridge,
    )

    if not isinstance(wrapped, NormalizationBridge):
        return False
    folding = getattr(wrapped.config, "layer_norm_folding", False)
    return not wrapped.use_native_layernorm_autograd and not folding


def _share(twin_module: nn.Module, source: nn.Module) -> bool:
    """Point the twin module's parameters and buffers at the bridge's tensors."""
    for store in ("_parameters", "_buffers"):
        mine, theirs = getattr(twin_module, store), getattr(source, store)
        for name, tensor in list(mine.items()):
            other = theirs.get(name)
            if tensor is None and other is None:
                continue
            if tensor is None or other is None or other.shape != tensor.shape:
                return False
            mine[name] = other
    return True


def _build(model, attention: str | None = None) -> nn.Module | None:
    """The twin of ``model``'s Hugging Face model (with the bridge's attention implementation,
    or ``attention``), or None if some tensor has no counterpart."""
    hf = model.original_model
    config = hf.config if attention is None else copy.deepcopy(hf.config)  # not the bridge's
    with torch.device("meta"):
        twin = type(hf)._from_config(
            config, attn_implementation=attention or config._attn_implementation
        )
    for path, module in list(twin.named_modules()):
        found = _source(hf, path)
        if found is None:
            return None
        wrapped, source = found
        if _python_norm(wrapped) and path:
            parent_path, _, name = path.rpartition(".")
            parent = twin.get_submodule(parent_path)
            norm = BridgeOrderNorm(
                source._parameters.get("weight"),
                source._parameters.get("bias"),
                getattr(wrapped.config, "eps", 1e-05),
                rms=wrapped.uses_rms_norm,
                weight_offset=wrapped.uses_weight_offset,
            )
            parent._modules[name] = norm
            continue
        if not _share(module, source):
            return None
    if any(t.is_meta for t in [*twin.parameters(), *twin.buffers()]):
        return None
    return twin.eval()


def _key(model) -> tuple:
    """What the twin depends on: every module of the bridge and of its Hugging Face model, and
    every parameter and buffer (identity, storage, dtype, device). Any replacement or move
    changes it; in-place edits (shared with the twin) do not."""
    stack, seen, key = [model.original_model, model], set(), []
    while stack:
        module = stack.pop()
        if module is None or id(module) in seen:
            continue
        seen.add(id(module))
        key.append(id(module))
        for store in (module._parameters, module._buffers):
            for t in store.values():
                if t is not None:
                    key.append((id(t), t.data_ptr(), t.dtype, t.device))
        stack.extend(module._modules.values())
    return tuple(key)


_OFF: ContextVar[bool] = ContextVar("hooklab_no_twin", default=False)


def enabled() -> bool:
    """Whether twins may be used here: not inside :func:`no_twin`, and the environment
    variable ``HOOKLAB_NO_TWIN`` unset, empty or ``"0"`` (read on every call)."""
    return not _OFF.get() and os.environ.get("HOOKLAB_NO_TWIN", "") in ("", "0")


@contextlib.contextmanager
def no_twin() -> Iterator[None]:
    """Within the block every forward runs through the bridge (no plain twin).

    The twin never changes a number (a probe checks it on every model, see the module
    docstring); this switch is for timing the bridge alone or ruling the twin out while
    debugging. It is per thread and per asyncio task (a context variable) and restored on
    exit, exceptions included. To turn the twin off for a whole process, set the environment
    variable ``HOOKLAB_NO_TWIN=1``.

    Example:
        >>> import hooklab
        >>> model = hooklab.load("toy")
        >>> with hooklab.no_twin():
        ...     out = hooklab.generate(model, "It rained", max_new_tokens=2)
    """
    token = _OFF.set(True)
    try:
        yield
    finally:
        _OFF.reset(token)


def usable(model, *, grad: bool | None = False) -> bool:
    """Whether hook-free forwards of ``model`` may run on a twin at all right now: on passes
    with gradients enabled if ``grad``, without if False, either if None (the fused twin)."""
    hf = getattr(model, "original_model", None)
    return (
        hf is not None
        and enabled()
        and (grad is None or torch.is_grad_enabled() == grad)
        and not model.training
        and not getattr(model, "compatibility_mode", False)
        and not getattr(hf.config, "is_encoder_decoder", False)
        and getattr(hf, "hf_device_map", None) is None
    )


def _hook_dicts(module: nn.Module) -> tuple[dict, ...]:
    return (
        module._forward_hooks,
        module._forward_pre_hooks,
        module._backward_hooks,
        module._backward_pre_hooks,
    )


def _library_hooks_only(modules: list[nn.Module]) -> bool:
    """Whether every hook attached is one that transformers or the bridge installs for itself
    (output capturing): none on a hook point, none from user code or from hooklab."""
    from transformer_lens.hook_points import HookPoint

    for m in modules:
        hooks = [
            *m._forward_hooks.values(),
            *m._forward_pre_hooks.values(),
            *m._backward_hooks.values(),
            *m._backward_pre_hooks.values(),
        ]
        if hooks and isinstance(m, HookPoint):
            return False
        for fn in hooks:
            owner = getattr(fn, "__module__", None) or ""
            if not owner.startswith(("transformers.", "transformer_lens.")):
                return False
    return True


def _hooked(entry: _Twin) -> bool:
    """Whether a hook attached after the twin was built is still attached."""
    from torch.nn.modules import module as torch_module

    if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
        return True
    # Every PyTorch hook registration draws a new id: while none was drawn since a scan found
    # no hook, none can have been attached, and the scan of every module is skipped.
    if not entry.clean or entry.checked_at != RemovableHandle.next_id:
        entry.clean = not any(d and max(d) >= entry.built_at for d in entry.hook_dicts)
        entry.checked_at = RemovableHandle.next_id
    return not entry.clean


def twin(model, probe: Probe, *, embeds: bool = False) -> nn.Module | None:
    """The twin to run a hook-free forward of ``model`` on, or None to use the bridge.

    Built and checked with ``probe`` on first use, and again after any change :func:`_key`
    sees; see the module docstring. With ``embeds``: for a pass whose token embeddings are
    given (``inputs_embeds`` on the twin, ``hook_embed`` replaced on the bridge), which is
    probed separately, on first need.
    """
    if not usable(model):
        return None
    entry = _entry(model, _ATTRIBUTE, _build, lambda m, t: probe(m, t, False))
    if entry is None:
        return None
    if embeds and entry.embeds_ok is None:  # probed on first need
        entry.embeds_ok = bool(_checked(probe, model, entry.module, True))
    return entry.module if entry.embeds_ok or not embeds else None


def fused_twin(model, probe: Callable[[object, nn.Module], bool]) -> nn.Module | None:
    """The fused twin to run a hook-free pass with given token embeddings on (gradients on or
    off), or None: the twin with PyTorch's fused attention (SDPA), accepted where
    ``probe(model, twin)`` finds its logits and input gradients within tolerance of the
    bridge's (see the module docstring)."""
    if not usable(model, grad=None) or not getattr(model.original_model, "_supports_sdpa", 0):
        return None
    entry = _entry(model, _FUSED_ATTRIBUTE, lambda m: _build(m, "sdpa"), probe)
    return None if entry is None else entry.module


def _entry(model, attribute: str, build, probe) -> _Twin | None:
    """The usable twin entry kept on ``model`` under ``attribute`` (built with ``build`` and
    accepted by ``probe`` when missing or stale), or None where it cannot run now."""
    key = _key(model)
    entry = getattr(model, attribute, None)
    if entry is None or entry.key != key:
        modules = list(
            {id(m): m for m in (*model.modules(), *model.original_model.modules())}.values()
        )
        if not _library_hooks_only(modules):
            return None  # built later, when only the libraries' own hooks are attached
        module = _checked(build, model)
        # probed before the hook census starts: a bridge's first forward attaches its own hooks
        ok = module is not None and bool(_checked(probe, model, module))
        entry = _Twin(module if ok else None, key, modules)
        setattr(model, attribute, entry)
    if entry.module is None or _hooked(entry):
        return None
    return entry


# What building or probing a twin may raise on an architecture it does not fit (a model class
# that cannot be built on the meta device, a forward without position_ids...): then no twin.
_UNFIT = (RuntimeError, TypeError, ValueError, KeyError, AttributeError, NotImplementedError)


def _checked(fn, *args):
    """``fn(*args)``, or None when it raises one of :data:`_UNFIT`."""
    try:
        return fn(*args)
    except _UNFIT:
        return None
