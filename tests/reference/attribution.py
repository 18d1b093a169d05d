"""Slow, obviously-correct attribution: one step at a time, one prefix per forward pass.

For step t of a sequence, the model runs on the prefix that ends just before target token t
(nothing after it), the target function is evaluated on the last row, and plain autograd gives
its gradient. Occlusion replaces one token per forward pass. Results are ``[step, pos, ...]``
over the real (unpadded) tokens, NaN where a step cannot see a token.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from hooklab.hooks import hook_name, temporary_hooks
from hooklab.inputs import make_batch
from hooklab.steps import STEP_FUNCTIONS, StepArgs


def last_logits(model, ids, embeds=None):
    """Logits of the last position of one unpadded sequence."""
    hooks = [] if embeds is None else [(hook_name("embed"), lambda x, hook: embeds[None])]
    with temporary_hooks(model, hooks):
        return model(torch.tensor([ids]), prepend_bos=False)[0, -1]


def step_value(model, ids, n_prompt, t, fn, contrast=None, embeds=None):
    """Target function ``fn`` of step t (predicting ids[n_prompt + t]) on the prefix only."""
    prefix = ids[: n_prompt + t]
    logits = last_logits(model, prefix, embeds)[None, None]
    y = torch.tensor([[ids[n_prompt + t]]])
    c_logits, c_ids = None, None
    if contrast is not None:
        c_prompt, c_targets = contrast
        if c_prompt is not None:
            with torch.no_grad():
                c_logits = last_logits(model, c_prompt + ids[n_prompt : n_prompt + t])[None, None]
        if c_targets is not None:
            c_ids = torch.tensor([[c_targets[t]]])
    batch = make_batch([prefix])
    args = StepArgs(model, batch, logits, y, torch.ones(1, 1, dtype=torch.bool), c_logits, c_ids)
    return STEP_FUNCTIONS.get(fn)(args)[0, 0]


def embeddings(model, ids):
    with torch.no_grad():
        return model.embed(torch.tensor([ids]))[0]


def _grad(model, ids, n_prompt, t, fn, contrast, point):
    leaf = point[: n_prompt + t].clone().requires_grad_(True)
    value = step_value(model, ids, n_prompt, t, fn, contrast, leaf)
    (g,) = torch.autograd.grad(value, leaf)
    return g


def _frame(n_steps, n_pos, tail, dtype):
    return torch.full((n_steps, n_pos, *tail), math.nan, dtype=dtype)


def ref_gradient(model, ids, n_prompt, fn="probability", contrast=None, times_input=False):
    x = embeddings(model, ids)
    n_steps = len(ids) - n_prompt
    out = _frame(n_steps, len(ids), x.shape[1:], x.dtype)
    for t in range(n_steps):
        g = _grad(model, ids, n_prompt, t, fn, contrast, x)
        out[t, : n_prompt + t] = g * x[: n_prompt + t] if times_input else g
    return out


def ref_integrated_gradients(model, ids, n_prompt, n_steps, rule, fn="probability"):
    x = embeddings(model, ids)
    if rule == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n_steps)
        alphas, weights = (nodes + 1) / 2, weights / 2
    else:  # riemann_middle
        alphas = (np.arange(n_steps) + 0.5) / n_steps
        weights = np.full(n_steps, 1 / n_steps)
    n_targets = len(ids) - n_prompt
    out = _frame(n_targets, len(ids), x.shape[1:], x.dtype)
    for t in range(n_targets):
        total = torch.zeros_like(x[: n_prompt + t])
        for a, w in zip(alphas, weights):
            total += float(w) * _grad(model, ids, n_prompt, t, fn, None, float(a) * x)
        out[t, : n_prompt + t] = total * x[: n_prompt + t]
    return out


def ref_occlusion(model, ids, n_prompt, fn="probability", contrast=None):
    x = embeddings(model, ids)
    n_steps = len(ids) - n_prompt
    out = _frame(n_steps, len(ids), (), x.dtype)
    with torch.no_grad():
        for t in range(n_steps):
            clean = step_value(model, ids, n_prompt, t, fn, contrast, x[: n_prompt + t])
            for j in range(n_prompt + t):
                occluded = x[: n_prompt + t].clone()
                occluded[j] = 0
                out[t, j] = clean - step_value(model, ids, n_prompt, t, fn, contrast, occluded)
    return out


def ref_attention(model, ids, n_prompt):
    n_steps = len(ids) - n_prompt
    layers, heads = model.cfg.n_layers, model.cfg.n_heads
    out = torch.full((n_steps, len(ids), layers, heads), math.nan, dtype=torch.float64)
    for t in range(n_steps):
        prefix = ids[: n_prompt + t]
        with torch.no_grad():
            _, cache = model.run_with_cache(torch.tensor([prefix]), prepend_bos=False)
        for layer in range(layers):
            pattern = cache[hook_name("pattern", layer)][0, :, -1]  # [head, key_pos]
            out[t, : len(prefix), layer] = pattern.T.double()
    return out


def ref_value_zeroing(model, ids, n_prompt, **options):
    """Step t: the last row of each layer's value-zeroing matrix on the prefix before target t
    (one forward pass per zeroed token), ``[step, pos, layer]``."""
    from tests.reference.mixing import ref_value_zeroing as ref_layer

    n_steps, layers = len(ids) - n_prompt, model.cfg.n_layers
    out = torch.full((n_steps, len(ids), layers), math.nan, dtype=torch.float64)
    for t in range(n_steps):
        prefix = ids[: n_prompt + t]
        for layer in range(layers):
            out[t, : len(prefix), layer] = ref_layer(model, prefix, layer, **options)[-1].double()
    return out
