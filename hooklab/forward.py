"""The one module that runs the model: full forwards and KV-cached steps, with or without hooks.

Everything in hooklab that runs a model on token ids or embeddings comes here: attribution
methods and step scores (:func:`step_logits`), contrast and CTI passes, generation
(:func:`decoder_steps`, :func:`seq2seq_steps`), the mixing adapters (:func:`forward`,
:func:`seq2seq_logits`) and attention weights. Two rules live here and nowhere else:

* **bridge or twin** (:func:`twin`, :mod:`hooklab.plain`): a hook-free pass with given token
  embeddings runs on the fused twin where its probe accepts it; another hook-free pass with
  no gradient on the bit-identical twin; everything else through the bridge;
* **padding guard**: on the bridge, left-padded batches get :func:`padding_guard_hooks`.

With teacher forcing, the logits that predict target token t only see tokens before it, so a
single forward over the whole prompt + target sequence yields the logits of every step. Only
the rows that predict targets go through the unembedding (``logits_to_keep``), and the input
token embeddings can be replaced through the ``hook_embed`` hook point to take gradients
with respect to them or to perturb them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from jaxtyping import Float
from torch import Tensor, nn

from hooklab import plain, seq2seq
from hooklab.hooks import hook_name, temporary_hooks
from hooklab.inputs import Batch, make_batch, pad_token_id
from hooklab.selfcheck import tolerance

# dtypes whose attention masks use a finite minimum (no -inf scores outside compatibility mode)
_FINITE_MASK_DTYPES = (torch.float32, torch.bfloat16)

#: ``step(tokens, mask, past) -> (logits of each sequence's next token, past)``
Step = Callable[[Tensor, Tensor, object], tuple[Tensor, object]]


def _finite_scores(scores: Tensor, hook) -> Tensor:
    # A left-pad query sees no key. Its masked scores can reach -inf (the bridge takes the
    # softmax in float32, where float64's minimum overflows), and then its softmax is NaN,
    # which leaks into real positions through 0 * NaN. Clamping to a finite minimum makes
    # that row uniform and leaves real rows unchanged.
    floor = max(torch.finfo(scores.dtype).min, torch.finfo(torch.float32).min)
    return scores.clamp(min=floor)


def padding_guard_hooks(model, batch: Batch) -> list[tuple[str, object]]:
    """Hooks that keep fully masked (padding) attention rows finite; none when not needed.

    None without padding. None either in float32 and bfloat16 outside compatibility mode:
    there the bridge masks with the dtype's finite minimum, so scores are never ``-inf``
    and clamping them at that minimum would return them unchanged (tests compare both).
    """
    if not any(batch.pad_lengths):
        return []
    dtype = next(model.parameters()).dtype
    if dtype in _FINITE_MASK_DTYPES and not getattr(model, "compatibility_mode", False):
        return []
    return [
        (hook_name("attn_scores", layer), _finite_scores) for layer in range(model.cfg.n_layers)
    ]


def twin(model, *, hooks: Sequence = (), embeds: bool = False) -> nn.Module | None:
    """The plain twin a pass with these ``hooks`` (and given token ``embeds``, if True) runs
    on, or None for the bridge. The one place that chooses; see :mod:`hooklab.plain` for the
    rules and :func:`hooklab.no_twin` for the switch."""
    if hooks:
        return None
    if embeds:  # an attribution method's own pass: the fused twin where it is accepted
        fused = plain.fused_twin(model, _fused_probe)
        if fused is not None or torch.is_grad_enabled():
            return fused
    return plain.twin(model, _probe, embeds=embeds)


@contextlib.contextmanager
def _runner(
    model, batch: Batch, hooks: Sequence = (), embeds: Tensor | None = None, *, fast: bool = True
) -> Iterator[nn.Module | None]:
    """Yield the twin to run ``batch`` on, or None with the bridge ready: padding guard,
    ``embeds`` in place of ``hook_embed``'s output and ``hooks`` attached until exit."""
    runner = twin(model, hooks=hooks, embeds=embeds is not None) if fast else None
    if runner is not None:
        yield runner
        return
    replace = [] if embeds is None else [(hook_name("embed"), lambda x, hook: embeds)]
    attached = [*padding_guard_hooks(model, batch), *replace, *hooks]
    with temporary_hooks(model, attached):  # also with none: it releases stored patterns
        yield None


def _decoder(
    model, runner, ids, mask, positions, *, embeds=None, past=None, cache=False, logits_to_keep=None
) -> tuple[Tensor, object]:
    """Run a decoder-only model once: on ``runner`` (the twin) if given, else on the bridge
    (with the hooks :func:`_runner` attached). Returns the logits and, with ``cache``, the
    KV cache."""
    keep = {} if logits_to_keep is None else {"logits_to_keep": logits_to_keep}
    if runner is not None:
        # no use_cache=False on full passes: the bridge runs with the model's default (on
        # GPT-2, the twin with use_cache=False differs from it by 6e-8 on a padded batch)
        inputs = {"input_ids": ids} if embeds is None else {"inputs_embeds": embeds}
        if cache:
            inputs.update(past_key_values=past, use_cache=True)
        out = runner(**inputs, attention_mask=mask, position_ids=positions, **keep)
        return out.logits, out.past_key_values if cache else None
    if cache:
        return model(ids, return_type="logits_and_cache", past_key_values=past,
                     attention_mask=mask, position_ids=positions, prepend_bos=False)  # fmt: skip
    return model(ids, attention_mask=mask, position_ids=positions, prepend_bos=False, **keep), None


def _logits(model, batch: Batch, hooks, logits_to_keep, embeds, *, fast: bool = True) -> Tensor:
    """A full decoder-only forward of ``batch``; ``embeds`` (if given) in place of the token
    embeddings: the output of ``hook_embed`` on the bridge, ``inputs_embeds`` on the twin."""
    with _runner(model, batch, hooks, embeds, fast=fast) as runner:
        ids, mask, positions = batch.tokens, batch.attention_mask, batch.position_ids
        logits, _ = _decoder(
            model, runner, ids, mask, positions, embeds=embeds, logits_to_keep=logits_to_keep
        )
    return logits


def bridge_forward(
    model,
    batch: Batch,
    *,
    hooks: Sequence[tuple[str, object]] = (),
    logits_to_keep: Tensor | None = None,
) -> Float[Tensor, "batch pos d_vocab"]:
    """:func:`forward` through the bridge always (its hook points live, ``hooks`` attached)."""
    return _logits(model, batch, hooks, logits_to_keep, None, fast=False)


def chunked_bridge_forward(
    model,
    batch: Batch,
    *,
    hooks: Sequence[tuple[str, object]] = (),
    chunk: int,
    on_chunk: Callable[[int, int], None] | None = None,
) -> None:
    """Run a decoder-only ``batch`` through the bridge in chunks of ``chunk`` query positions
    over the KV cache (a chunked prefill), ``hooks`` attached: one layer's attention is
    ``[batch, head, chunk, key_pos]``; only the last position's logits are computed.
    ``on_chunk(start, stop)`` runs before each chunk. Pattern rows equal one pass's to rounding
    on every decoder-only zoo family (float32 5e-8, ``tests/test_attention_zoo.py``)."""
    tokens, mask, positions = batch.tokens, batch.attention_mask, batch.position_ids
    width, past = tokens.shape[1], None
    with _runner(model, batch, hooks, fast=False):
        for start in range(0, width, chunk):
            stop = min(width, start + chunk)
            if on_chunk is not None:
                on_chunk(start, stop)
            _, past = model(
                tokens[:, start:stop], return_type="logits_and_cache", past_key_values=past,
                attention_mask=mask[:, :stop], position_ids=positions[:, start:stop],
                prepend_bos=False, logits_to_keep=1,
            )  # fmt: skip


def forward(
    model,
    batch: Batch,
    *,
    hooks: Sequence[tuple[str, object]] = (),
    logits_to_keep: Tensor | None = None,
) -> Float[Tensor, "batch pos d_vocab"]:
    """Run the model on a batch with its padding mask and real positions; return logits.

    Without ``hooks`` (and without gradients) the pass runs on the bridge's plain Hugging
    Face twin when it gives the same logits bit for bit (see :mod:`hooklab.plain`).

    Args:
        hooks: extra ``(hook_name, fn)`` forward hooks, active for this pass only.
        logits_to_keep: positions whose logits to compute (all when None).
    """
    return _logits(model, batch, hooks, logits_to_keep, None)


def _step(model, runner, tokens, mask, past, use_cache: bool) -> tuple[Tensor, object]:
    """One greedy-decoding step on ``runner`` (None: the bridge): with ``use_cache`` the first
    step (``past`` None) feeds every token and later ones only the last."""
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    if use_cache and past is not None:
        tokens, positions = tokens[:, -1:], positions[:, -1:]
    logits, past = _decoder(model, runner, tokens, mask, positions, past=past, cache=use_cache)
    return logits[:, -1], past


@contextlib.contextmanager
def decoder_steps(model, batch: Batch, *, use_cache: bool = True) -> Iterator[Step]:
    """Yield a greedy-decoding :data:`Step` for a decoder-only model, starting from ``batch``.

    With ``use_cache`` the first step feeds every token and later ones only the last (KV
    cache); without, every step reruns the whole sequence (the reference in tests). The
    bridge-or-twin choice is made once, and on the bridge the padding guard stays attached
    until exit.
    """
    with _runner(model, batch) as runner:
        yield lambda tokens, mask, past: _step(model, runner, tokens, mask, past, use_cache)


def seq2seq_logits(
    model,
    source_ids: Tensor,
    decoder_ids: Tensor,
    *,
    source_mask: Tensor | None = None,
    hooks: Sequence[tuple[str, object]] = (),
    replaced: contextlib.AbstractContextManager | None = None,
) -> Float[Tensor, "batch target_pos d_vocab"]:
    """Logits of every decoder position of an encoder–decoder model (through the bridge):
    encoder on ``source_ids`` (masked by ``source_mask`` when given), decoder on
    ``decoder_ids``, ``hooks`` attached, then ``replaced`` entered (embedding replacement)."""
    with temporary_hooks(model, hooks), replaced or contextlib.nullcontext():
        return model(source_ids, attention_mask=source_mask, decoder_input_ids=decoder_ids)


def seq2seq_forward(
    model,
    batch: Batch,
    *,
    hooks: Sequence[tuple[str, object]] = (),
    embeds: Float[Tensor, "batch pos d_model"] | None = None,
) -> Float[Tensor, "batch target_pos d_vocab"]:
    """Logits of every decoder position: encoder on the source (with its mask), decoder on
    ``batch.tokens``; ``embeds`` (``[batch, input position, d_model]``) replace both stacks'
    token embeddings."""
    replaced = None if embeds is None else seq2seq.replaced_embeddings(model, batch, embeds)
    return seq2seq_logits(
        model, batch.source_ids, batch.tokens, source_mask=batch.source_mask, hooks=hooks,
        replaced=replaced,
    )  # fmt: skip


def attention_weights(
    model, batch: Batch
) -> tuple[list[Float[Tensor, "batch head query_pos key_pos"]], list[Tensor]]:
    """Per decoder layer, the cross-attention weights (keys: the source) and the decoder
    self-attention weights, as the Hugging Face model returns them (``output_attentions``).

    Measured on transformers 5 / TransformerLens 4.3: on Marian and BART the bridge's
    ``hook_pattern`` of the second decoder layer differs from the weights the model uses (by
    ~1e-2 on the tiny test models), while these equal a per-prefix reference.
    """
    out = model.original_model(
        input_ids=batch.source_ids, attention_mask=batch.source_mask,
        decoder_input_ids=batch.tokens, output_attentions=True,
    )  # fmt: skip
    return list(out.cross_attentions), list(out.decoder_attentions)


@contextlib.contextmanager
def seq2seq_steps(model, batch: Batch, *, use_cache: bool = True) -> Iterator[Step]:
    """Yield a greedy-decoding :data:`Step` for an encoder–decoder model: the encoder runs
    once here, on ``batch``'s right-padded, masked sources; the decoder starts from
    ``batch.tokens`` and, with ``use_cache``, feeds one token per step (self- and
    cross-attention keys/values cached), as Hugging Face's greedy ``generate`` does."""
    hf = model.original_model
    encoded = hf.get_encoder()(input_ids=batch.source_ids, attention_mask=batch.source_mask)

    def step(tokens: Tensor, mask: Tensor, past: object) -> tuple[Tensor, object]:
        out = hf(
            encoder_outputs=encoded,
            attention_mask=batch.source_mask,
            decoder_input_ids=tokens if past is None else tokens[:, -1:],
            past_key_values=past,
            use_cache=use_cache,
        )
        return out.logits[:, -1], out.past_key_values if use_cache else None

    yield step


def gather_steps(
    logits: Float[Tensor, "batch pos d_vocab"], batch: Batch
) -> Float[Tensor, "batch step d_vocab"]:
    """Select the logits rows that predict each target token."""
    rows = batch.target_rows
    index = rows[:, :, None].expand(-1, -1, logits.shape[-1])
    return logits.gather(1, index)


def token_embeddings(
    model, batch: Batch, *, token_id: int | None = None
) -> Float[Tensor, "batch pos d_model"]:
    """Return the token embeddings the model computes for ``batch`` (no gradient).

    On encoder–decoder batches: every input position, the source's then the decoder's (see
    :mod:`hooklab.seq2seq`). With ``token_id``: that token's embedding at every position.
    """
    if batch.encoder_decoder:
        return seq2seq.input_embeddings(model, batch, token_id=token_id)
    ids = batch.tokens if token_id is None else torch.full_like(batch.tokens, token_id)
    with torch.no_grad():
        return model.embed(ids).detach()


def _rows(batch: Batch) -> tuple[Tensor, Tensor]:
    """Positions whose logits predict targets (a contiguous block at the right end, because
    sequences are left-padded) and each step's index into that block."""
    width, steps = batch.tokens.shape[1], batch.n_steps
    keep = torch.arange(width - 1 - steps, width - 1, device=batch.tokens.device)
    rel = (batch.target_rows - keep[0]).clamp(min=0)
    return keep, rel


def step_logits(
    model, batch: Batch, embeds: Float[Tensor, "batch pos d_model"] | None = None
) -> Float[Tensor, "batch step d_vocab"]:
    """Logits predicting each target token, from one forward pass.

    Args:
        model: the ``TransformerBridge``.
        batch: left-padded prompt + target sequences.
        embeds: token embeddings to use instead of the model's (e.g. a leaf tensor that
            requires grad, or a perturbed copy); positional embeddings are added as usual.
            On encoder–decoder batches: one per input position (source, then decoder).
    """
    if batch.encoder_decoder:
        logits = seq2seq_forward(model, batch, embeds=embeds)
        return gather_steps(logits, batch)
    keep, rel = _rows(batch)
    logits = _logits(model, batch, (), keep, embeds)
    if logits.shape[1] != keep.numel():  # the model ignored logits_to_keep
        logits = logits[:, keep]
    index = rel[:, :, None].expand(-1, -1, logits.shape[-1])
    return logits.gather(1, index)


def _probe_batch(model) -> Batch:
    """The probes' left-padded batch of two short rows."""
    vocab = min(int(model.cfg.d_vocab), 64)
    rows = [[(7 * i + 3) % vocab for i in range(6)], [(5 * i + 1) % vocab for i in range(3)]]
    return make_batch(rows, pad_id=pad_token_id(model), device=model.cfg.device)


def _probe(model, module: nn.Module, embeds: bool) -> bool:
    """True if ``module`` (the twin) gives the bridge's logits bit for bit through the calls
    real passes make, on a left-padded batch. Without ``embeds``: a full forward (every real
    position), one with ``logits_to_keep``, a KV-cached first step and one more; with
    ``embeds``: a full forward with given token embeddings."""
    batch = _probe_batch(model)
    vocab = min(int(model.cfg.d_vocab), 64)
    tokens, mask, positions = batch.tokens, batch.attention_mask, batch.position_ids
    real, width = mask.bool(), tokens.shape[1]
    given = token_embeddings(model, batch) * 0.5 if embeds else None  # not the model's own
    keep = torch.arange(width - 2, width, device=tokens.device)
    grown = torch.cat([tokens, torch.full_like(tokens[:, :1], 2 % vocab)], dim=1)
    grown_mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)

    def passes(runner) -> list[Tensor]:
        def full(kept=None):
            out = _decoder(
                model, runner, tokens, mask, positions, embeds=given, logits_to_keep=kept
            )
            return out[0]

        if embeds:
            return [full()[real]]
        first, past = _step(model, runner, tokens, mask, None, True)
        last, _ = _step(model, runner, grown, grown_mask, past, True)
        return [full()[real], full(keep), first, last]

    with _runner(model, batch, (), given, fast=False):
        bridge = passes(None)
    return all(torch.equal(a, b) for a, b in zip(bridge, passes(module), strict=True))


def _fused_probe(model, module: nn.Module) -> bool:
    """True if ``module`` (the fused twin) gives the bridge's logits and the gradients of a
    fixed mix of them with respect to given token embeddings within
    :func:`~hooklab.selfcheck.tolerance`, on a left-padded batch (finite everywhere)."""
    batch = _probe_batch(model)
    real = batch.attention_mask.bool()
    given = token_embeddings(model, batch) * 0.5

    def run(runner) -> list[Tensor]:
        leaf = given.clone().requires_grad_(True)
        bridge = runner is None
        with _runner(model, batch, (), leaf, fast=False) if bridge else contextlib.nullcontext():
            logits, _ = _decoder(
                model, runner, batch.tokens, batch.attention_mask, batch.position_ids,
                embeds=leaf,
            )  # fmt: skip
        mix = torch.linspace(-1, 1, logits.shape[-1], dtype=logits.dtype, device=logits.device)
        (grad,) = torch.autograd.grad((logits[real] * mix).sum(), leaf)
        return [logits[real].detach(), grad[real]]

    with torch.enable_grad():
        expected, got = run(None), run(module)
    return all(
        bool(g.isfinite().all()) and float((g - e).abs().max()) <= tolerance(e)
        for g, e in zip(got, expected, strict=True)
    )
