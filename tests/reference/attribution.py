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


# ---- encoder-decoder models: the Hugging Face model, one decoder prefix per forward pass ----
# Step t runs the source through the encoder and the decoder on its prefix (decoder start token,
# forced targets before target t); both sides' input embeddings are the stacks' embed_tokens
# outputs, fed as inputs_embeds / decoder_inputs_embeds (the tiny configs do not scale them).
# Results are (source [step, source_pos, ...], target [step, target_pos, ...]), NaN where a
# step cannot see a decoder token.


def seq2seq_embeddings(model, src, dec):
    hf = model.original_model
    for stack in (hf.get_encoder(), hf.get_decoder()):
        if getattr(stack, "embed_scale", 1.0) != 1.0:
            raise NotImplementedError("this reference assumes unscaled input embeddings")
    with torch.no_grad():
        return (
            hf.get_encoder().embed_tokens(torch.tensor([src]))[0],
            hf.get_decoder().embed_tokens(torch.tensor([dec]))[0],
        )


def seq2seq_last_logits(model, src_e, dec_e):
    out = model.original_model(inputs_embeds=src_e[None], decoder_inputs_embeds=dec_e[None])
    return out.logits[0, -1]


def seq2seq_step_value(model, src, dec, n_prefix, t, fn, contrast=None, embeds=None):
    """``fn`` of step t (predicting dec[n_prefix + t]) from the decoder prefix before it."""
    src_e, dec_e = seq2seq_embeddings(model, src, dec) if embeds is None else embeds
    logits = seq2seq_last_logits(model, src_e, dec_e[: n_prefix + t])[None, None]
    y = torch.tensor([[dec[n_prefix + t]]])
    c_logits, c_ids = None, None
    if contrast is not None:
        c_src, c_targets = contrast
        if c_src is not None:
            with torch.no_grad():
                c_e, c_dec = seq2seq_embeddings(model, c_src, dec)
                c_logits = seq2seq_last_logits(model, c_e, c_dec[: n_prefix + t])[None, None]
        if c_targets is not None:
            c_ids = torch.tensor([[c_targets[t]]])
    args = StepArgs(model, None, logits, y, torch.ones(1, 1, dtype=torch.bool), c_logits, c_ids)
    return STEP_FUNCTIONS.get(fn)(args)[0, 0]


def _seq2seq_grad(model, src, dec, n_prefix, t, fn, contrast, point):
    src_e = point[0].clone().requires_grad_(True)
    dec_e = point[1][: n_prefix + t].clone().requires_grad_(True)
    value = seq2seq_step_value(model, src, dec, n_prefix, t, fn, contrast, (src_e, dec_e))
    return torch.autograd.grad(value, (src_e, dec_e))


def ref_gradient_seq2seq(model, src, dec, n_prefix, fn="probability", contrast=None,
                         times_input=False):  # fmt: skip
    x_src, x_dec = seq2seq_embeddings(model, src, dec)
    n_steps = len(dec) - n_prefix
    source = _frame(n_steps, len(src), x_src.shape[1:], x_src.dtype)
    target = _frame(n_steps, len(dec), x_dec.shape[1:], x_dec.dtype)
    for t in range(n_steps):
        g_src, g_dec = _seq2seq_grad(model, src, dec, n_prefix, t, fn, contrast, (x_src, x_dec))
        seen = x_dec[: n_prefix + t]
        source[t] = g_src * x_src if times_input else g_src
        target[t, : n_prefix + t] = g_dec * seen if times_input else g_dec
    return source, target


def ref_integrated_gradients_seq2seq(model, src, dec, n_prefix, n_steps, fn="probability"):
    x_src, x_dec = seq2seq_embeddings(model, src, dec)
    nodes, weights = np.polynomial.legendre.leggauss(n_steps)
    alphas, weights = (nodes + 1) / 2, weights / 2
    n_targets = len(dec) - n_prefix
    source = _frame(n_targets, len(src), x_src.shape[1:], x_src.dtype)
    target = _frame(n_targets, len(dec), x_dec.shape[1:], x_dec.dtype)
    for t in range(n_targets):
        total_src, total_dec = torch.zeros_like(x_src), torch.zeros_like(x_dec[: n_prefix + t])
        for a, w in zip(alphas, weights):
            point = (float(a) * x_src, float(a) * x_dec)
            g_src, g_dec = _seq2seq_grad(model, src, dec, n_prefix, t, fn, None, point)
            total_src += float(w) * g_src
            total_dec += float(w) * g_dec
        source[t] = total_src * x_src
        target[t, : n_prefix + t] = total_dec * x_dec[: n_prefix + t]
    return source, target


def ref_occlusion_seq2seq(model, src, dec, n_prefix, fn="probability"):
    x_src, x_dec = seq2seq_embeddings(model, src, dec)
    n_steps = len(dec) - n_prefix
    source = _frame(n_steps, len(src), (), x_src.dtype)
    target = _frame(n_steps, len(dec), (), x_dec.dtype)
    with torch.no_grad():
        for t in range(n_steps):
            clean = seq2seq_step_value(model, src, dec, n_prefix, t, fn, None, (x_src, x_dec))
            for j in range(len(src)):
                occluded = x_src.clone()
                occluded[j] = 0
                value = seq2seq_step_value(model, src, dec, n_prefix, t, fn, None,
                                           (occluded, x_dec))  # fmt: skip
                source[t, j] = clean - value
            for j in range(n_prefix + t):
                occluded = x_dec.clone()
                occluded[j] = 0
                value = seq2seq_step_value(model, src, dec, n_prefix, t, fn, None,
                                           (x_src, occluded))  # fmt: skip
                target[t, j] = clean - value
    return source, target


def ref_attention_seq2seq(model, src, dec, n_prefix):
    """Hugging Face's own attention outputs (``output_attentions=True``) of each step's last
    decoder row: cross-attention over the source, decoder self-attention over the prefix."""
    n_steps, layers = len(dec) - n_prefix, len(model.decoder_blocks)
    heads = model.cfg.n_heads
    source = torch.full((n_steps, len(src), layers, heads), math.nan, dtype=torch.float64)
    target = torch.full((n_steps, len(dec), layers, heads), math.nan, dtype=torch.float64)
    for t in range(n_steps):
        prefix = dec[: n_prefix + t]
        with torch.no_grad():
            out = model.original_model(
                input_ids=torch.tensor([src]), decoder_input_ids=torch.tensor([prefix]),
                output_attentions=True,
            )  # fmt: skip
        for layer in range(layers):
            source[t, :, layer] = out.cross_attentions[layer][0, :, -1].T.double()
            target[t, : len(prefix), layer] = out.decoder_attentions[layer][0, :, -1].T.double()
    return source, target


def ref_value_zeroing_seq2seq(model, src, dec, n_prefix):
    """Step t: the last row of each decoder layer's cross and decoder value-zeroing matrices on
    the decoder prefix before target t (one forward pass per zeroed token)."""
    from tests.reference.mixing import ref_value_zeroing_seq2seq as ref_part

    n_steps, layers = len(dec) - n_prefix, len(model.decoder_blocks)
    source = torch.full((n_steps, len(src), layers), math.nan, dtype=torch.float64)
    target = torch.full((n_steps, len(dec), layers), math.nan, dtype=torch.float64)
    for t in range(n_steps):
        prefix = dec[: n_prefix + t]
        for layer in range(layers):
            source[t, :, layer] = ref_part(model, src, prefix, "cross", layer)[-1].double()
            target[t, : len(prefix), layer] = ref_part(model, src, prefix, "decoder", layer)[-1]
    return source, target
