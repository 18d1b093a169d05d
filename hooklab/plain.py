"""A plain Hugging Face twin of a bridge, for forward passes that need no hook.

Every bridge component and hook point is a Python call: on small models the bridge spends more
time dispatching than computing (the toy model: ~4 ms per forward against ~1.8 ms for the
same Hugging Face model). Forwards that attach no hook (greedy generation, the CTI passes,
contrast passes, step scores) run a *twin* instead: a fresh instance of the model's Hugging
Face class whose parameters and buffers are the bridge's own tensors (shared, not copied).

The twin must give the bridge's logits bit for bit, so:

* where the bridge computes a layer norm itself (its Python path: centre, divide by
  ``sqrt(mean(x²) + eps)``, scale, shift), the twin's norm module does the same operations in
  the same order (:class:`BridgeOrderNorm`); norms the bridge delegates to Hugging Face stay;
* on first use, a probe compares both on a left-padded batch (a full forward that fills the
  KV cache, then one cached decoding step; and a pass with given token embeddings, which the
  twin takes as ``inputs_embeds``), and the twin is used only where every logit is equal
  (otherwise, and for architectures where an operation differs, the bridge runs as before;
  on the tiny float64 Llama of the tests, for one, the probe finds a difference);
* the twin is not used in compatibility mode (folded weights), in training mode, with
  gradients enabled (measured: on GPT-2 the input gradients then differ at rounding level,
  the fused QKV projection summing them in another order than the bridge's split one; on
  Llama they are equal, but one rule is simpler), under an Accelerate device map, for
  encoder–decoder models, or while a PyTorch hook attached after the twin was built is on any
  module of the bridge (hooklab's own temporary hooks included). It is rebuilt when the
  parameters move (``model.to(...)``). The twin lives on the bridge as a plain attribute
  (not a submodule: ``state_dict`` and ``modules()`` are unchanged).

``tests/test_fast_paths.py`` checks the equality on GPT-2 (non-zero biases), Llama (grouped KV
heads) and the toy model, with and without padding, and generation against Hugging Face's.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

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


# the bridge attribute that holds its _Twin (a plain attribute: not a submodule, not saved)
_ATTRIBUTE = "_hooklab_plain_twin"


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


def _build(model) -> nn.Module | None:
    """The twin of ``model``'s Hugging Face model, or None if some tensor has no counterpart."""
    hf = model.original_model
    with torch.device("meta"):
        twin = type(hf)._from_config(hf.config, attn_implementation=hf.config._attn_implementation)
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
    first = next(model.original_model.parameters())
    return (first.data_ptr(), first.dtype, first.device)


def usable(model) -> bool:
    """Whether hook-free forwards of ``model`` may run on a twin at all right now."""
    hf = getattr(model, "original_model", None)
    return (
        hf is not None
        and not torch.is_grad_enabled()
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


def twin(model, *, embeds: bool = False) -> nn.Module | None:
    """The twin to run a hook-free forward of ``model`` on, or None to use the bridge.

    Built (and probed against the bridge) on first use; see the module docstring. With
    ``embeds``: for a pass whose token embeddings are given (``inputs_embeds`` on the twin,
    ``hook_embed`` replaced on the bridge), which the probe checks separately.
    """
    if not usable(model):
        return None
    key = _key(model)
    entry = getattr(model, _ATTRIBUTE, None)
    if entry is None or entry.key != key:
        modules = list(
            {id(m): m for m in (*model.modules(), *model.original_model.modules())}.values()
        )
        if not _library_hooks_only(modules):
            return None  # built later, when only the libraries' own hooks are attached
        module = _checked(_build_and_probe, model)
        entry = _Twin(module, key, modules)
        setattr(model, _ATTRIBUTE, entry)
    if entry.module is None or _hooked(entry):
        return None
    if embeds and entry.embeds_ok is None:  # probed on first need
        entry.embeds_ok = bool(_checked(_probe_embeds, model, entry.module))
    return entry.module if entry.embeds_ok or not embeds else None


# What building or probing a twin may raise on an architecture it does not fit (a model class
# that cannot be built on the meta device, a forward without position_ids...): then no twin.
_UNFIT = (RuntimeError, TypeError, ValueError, KeyError, AttributeError, NotImplementedError)


def _checked(fn, *args):
    """``fn(*args)``, or None when it raises one of :data:`_UNFIT`."""
    try:
        return fn(*args)
    except _UNFIT:
        return None


def _build_and_probe(model) -> nn.Module | None:
    module = _build(model)
    return module if module is not None and _probe(model, module) else None


def _probe(model, module: nn.Module) -> bool:
    """True if the twin's logits equal the bridge's bit for bit on a left-padded batch: a
    full forward that fills the KV cache (every real position compared), then one cached
    decoding step."""
    from hooklab.forward import padding_guard_hooks
    from hooklab.hooks import temporary_hooks
    from hooklab.inputs import make_batch, pad_token_id

    vocab = min(int(model.cfg.d_vocab), 64)
    rows = [[(7 * i + 3) % vocab for i in range(6)], [(5 * i + 1) % vocab for i in range(3)]]
    batch = make_batch(rows, pad_id=pad_token_id(model), device=model.cfg.device)
    mask, real = batch.attention_mask, batch.attention_mask.bool()
    grow = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    step = torch.full_like(batch.tokens[:, :1], 2 % vocab)
    results = []
    for runner in (None, module):
        call = _bridge_call(model) if runner is None else _twin_call(runner)
        guard = padding_guard_hooks(model, batch) if runner is None else []
        with temporary_hooks(model, guard):
            first, past = call(batch.tokens, mask, batch.position_ids, None)
            last, _ = call(step, grow, batch.position_ids[:, -1:] + 1, past)
        results.append((first[real], last))
    (a, b), (c, d) = results
    return torch.equal(a, c) and torch.equal(b, d)


def _probe_embeds(model, module: nn.Module) -> bool:
    """True if the twin given token embeddings (``inputs_embeds``) equals the bridge with
    ``hook_embed`` replaced by them, bit for bit, on a left-padded batch."""
    from hooklab.forward import bridge_forward, token_embeddings
    from hooklab.hooks import hook_name
    from hooklab.inputs import make_batch, pad_token_id

    vocab = min(int(model.cfg.d_vocab), 64)
    rows = [[(3 * i + 2) % vocab for i in range(5)], [(11 * i + 4) % vocab for i in range(2)]]
    batch = make_batch(rows, pad_id=pad_token_id(model), device=model.cfg.device)
    embeds = token_embeddings(model, batch) * 0.5  # not what the model would embed
    hook = [(hook_name("embed"), lambda x, hook: embeds)]
    ours = module(
        inputs_embeds=embeds, attention_mask=batch.attention_mask, position_ids=batch.position_ids
    ).logits
    real = batch.attention_mask.bool()
    return torch.equal(bridge_forward(model, batch, hooks=hook)[real], ours[real])


def _bridge_call(model):
    def call(tokens, mask, positions, past):
        return model(
            tokens,
            return_type="logits_and_cache",
            past_key_values=past,
            attention_mask=mask,
            position_ids=positions,
            prepend_bos=False,
        )

    return call


def _twin_call(module: nn.Module):
    def call(tokens, mask, positions, past):
        out = module(
            tokens, attention_mask=mask, position_ids=positions, past_key_values=past,
            use_cache=True,
        )  # fmt: skip
        return out.logits, out.past_key_values

    return call
