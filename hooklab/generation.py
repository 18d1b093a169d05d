"""Greedy generation, batched and left-padded, with or without the KV cache.

A batch of prompts generates exactly what each prompt generates alone: padding is masked,
positions count real tokens only, and finished examples stop contributing (their later tokens
are dropped). The KV-cached loop feeds one token per step (the steps are
:func:`hooklab.forward.decoder_steps` and :func:`~hooklab.forward.seq2seq_steps`, which also
choose between the bridge and its plain twin); ``use_cache=False`` reruns the whole sequence
each step and serves as the reference in tests.

Encoder–decoder models (Marian, BART, T5): the sources (right-padded, masked) run through the
encoder once; the decoder starts from the decoder start token and, with the cache, feeds one
token per step (self- and cross-attention keys/values cached), as Hugging Face's greedy
``generate`` does.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from hooklab import seq2seq
from hooklab.architecture import is_encoder_decoder
from hooklab.forward import decoder_steps, seq2seq_steps
from hooklab.inputs import (
    Batch,
    as_prompt_ids,
    check_length,
    check_token_ids,
    context_window,
    eos_token_ids,
    make_batch,
    pad_token_id,
)


@dataclass(frozen=True)
class Generation:
    """Greedy continuations of a list of prompts.

    Attributes:
        prompt_ids: prompt token ids (BOS included) per example.
        output_ids: generated token ids per example (EOS excluded).
        step_logits: per example, the logits that chose each generated token, if kept.
    """

    prompt_ids: list[list[int]]
    output_ids: list[list[int]]
    step_logits: list[Float[Tensor, "step d_vocab"]] | None = None


def _start(model, sources: list[list[int]], prefixes=None) -> Batch:
    """An encoder–decoder model's first decoder input: its start token and the forced
    ``prefixes`` (all of one length), with the right-padded, masked ``sources``."""
    prefixes = prefixes or [[] for _ in sources]
    start = [[seq2seq.decoder_start_id(model), *p] for p in prefixes]
    return make_batch(start, sources=sources, pad_id=pad_token_id(model), device=model.cfg.device)


@torch.no_grad()
def _generate_batch(
    model,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    stop_at_eos: bool,
    use_cache: bool,
    keep_logits: bool,
    decoder_prefixes: list[list[int]] | None = None,
) -> tuple[list[list[int]], list[Tensor] | None]:
    if is_encoder_decoder(model):
        batch = _start(model, prompts, decoder_prefixes)
        steps = seq2seq_steps(model, batch, use_cache=use_cache)
    else:
        batch = make_batch(prompts, pad_id=pad_token_id(model), device=model.cfg.device)
        steps = decoder_steps(model, batch, use_cache=use_cache)
    tokens, mask = batch.tokens, batch.attention_mask
    eos = eos_token_ids(model)
    n = len(prompts)
    outputs: list[list[int]] = [[] for _ in range(n)]
    logits_out: list[list[Tensor]] = [[] for _ in range(n)]
    done = [False] * n
    past = None
    with steps as step:
        for _ in range(max_new_tokens):
            logits, past = step(tokens, mask, past)
            next_ids = logits.argmax(-1)
            for i, token in enumerate(next_ids.tolist()):
                if done[i]:
                    continue
                if stop_at_eos and token in eos:
                    done[i] = True
                    continue
                outputs[i].append(token)
                if keep_logits:
                    logits_out[i].append(logits[i].float().cpu())
            if all(done):
                break
            tokens = torch.cat([tokens, next_ids[:, None]], dim=1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    kept = [torch.stack(x) if x else torch.empty(0) for x in logits_out] if keep_logits else None
    return outputs, kept


def _decoder_prefixes(model, prefixes, encoded: list, encoder_decoder: bool) -> list[list[int]]:
    """Validated decoder prefixes, one per prompt (empty when none are given)."""
    if prefixes is None:
        return [[] for _ in encoded]
    if not encoder_decoder:
        raise ValueError(
            "decoder_prefixes is for encoder-decoder models; on a decoder-only model append "
            "the forced text to the prompt instead."
        )
    prefixes = [check_token_ids(model, p, f"decoder_prefixes[{k}]") for k, p in enumerate(prefixes)]
    if len(prefixes) != len(encoded):
        raise ValueError(f"Got {len(prefixes)} decoder prefixes for {len(encoded)} prompts.")
    return prefixes


def _chunks(prefixes: list[list[int]], batch_size: int) -> list[list[int]]:
    """Indices in batches of at most ``batch_size`` whose decoder prefixes have one length."""
    by_length: dict[int, list[int]] = {}
    for i, p in enumerate(prefixes):
        by_length.setdefault(len(p), []).append(i)
    return [
        group[lo : lo + batch_size]
        for group in by_length.values()
        for lo in range(0, len(group), batch_size)
    ]


def check_generation_kwargs(kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return ``generation_kwargs`` as a dict; raise for a non-mapping or an unknown option."""
    if kwargs is None:
        return {}
    if not isinstance(kwargs, Mapping):
        raise TypeError(
            f"generation_kwargs must be a dict of hooklab.generate options, got "
            f"{type(kwargs).__name__}: {kwargs!r}."
        )
    valid = [
        name
        for name, p in inspect.signature(generate).parameters.items()
        if p.kind is p.KEYWORD_ONLY and name != "decoder_prefixes"
    ]
    unknown = [k for k in kwargs if k not in valid]
    if unknown:
        raise TypeError(
            f"generation_kwargs has unknown option {unknown[0]!r}; hooklab.generate takes: "
            f"{', '.join(valid)}."
        )
    return dict(kwargs)


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")


def generate(
    model,
    prompts: str | Sequence[str] | Sequence[Sequence[int]],
    *,
    max_new_tokens: int = 32,
    stop_at_eos: bool = True,
    use_cache: bool = True,
    batch_size: int = 16,
    keep_logits: bool = False,
    show_progress: bool = False,
    decoder_prefixes: Sequence[Sequence[int]] | None = None,
) -> Generation:
    """Greedily continue each prompt.

    Args:
        model: a ``TransformerBridge`` (see :func:`hooklab.load`).
        prompts: one prompt or a list; BOS is prepended once where the model's tokenizer adds
            it (:func:`hooklab.inputs.encode_prompt`; pass ids for other choices). Token
            id lists are used as given. Encoder–decoder models: the sources, tokenised with
            the tokenizer's special tokens (:func:`hooklab.seq2seq.encode_source`); the
            outputs are the decoder's tokens after the decoder start token.
        max_new_tokens: at most this many tokens per prompt.
        stop_at_eos: stop an example at an EOS token (not included in the output): the
            tokenizer's, or any of ``generation_config.eos_token_id`` (an id or a list).
        use_cache: reuse keys/values across steps (same tokens and logits as without).
        batch_size: prompts per forward pass.
        keep_logits: also return the logits of each step.
        show_progress: show a progress bar over batches.
        decoder_prefixes: encoder–decoder models only: per prompt, token ids forced after the
            decoder start token before generating (e.g. an output context); not part of the
            outputs.

    Returns:
        A :class:`Generation` with prompt and output ids per example.

    Example:
        >>> import hooklab
        >>> model = hooklab.load("toy")
        >>> out = generate(model, "George was sick yesterday. His colleagues asked him to come")
        >>> "hospital" in model.tokenizer.decode(out.output_ids[0])
        True
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    _positive_int("max_new_tokens", max_new_tokens)
    _positive_int("batch_size", batch_size)
    encoder_decoder = is_encoder_decoder(model)
    as_ids = seq2seq.encode_source if encoder_decoder else as_prompt_ids
    encoded = [as_ids(model, p) for p in prompts]
    if not encoded:
        raise ValueError("No prompts given: pass a prompt or a non-empty list of prompts.")
    window = context_window(model)
    for k, ids in enumerate(encoded):
        check_token_ids(model, ids, f"prompts[{k}]")
        check_length(model, len(ids), "source" if encoder_decoder else "prompt")
        if not encoder_decoder and len(ids) >= window:
            raise ValueError(
                f"prompts[{k}] is {len(ids)} tokens long (BOS included), which fills the model's "
                f"context window of {window} tokens: no room is left to generate (0 tokens can "
                f"be generated). Shorten the prompt to at most {window - 1} tokens, or pass "
                "the continuation as targets."
            )
    prefixes = _decoder_prefixes(model, decoder_prefixes, encoded, encoder_decoder)
    outputs: list[list[int]] = [[] for _ in encoded]
    logits: list[Tensor] = [torch.empty(0) for _ in encoded]
    for chunk in tqdm(_chunks(prefixes, batch_size), desc="generate", disable=not show_progress):
        sources = [encoded[i] for i in chunk]
        if encoder_decoder:
            room = seq2seq.decoder_room(model, len(prefixes[chunk[0]]))
            if room < 1:
                raise ValueError(
                    f"decoder_prefixes[{chunk[0]}] is {len(prefixes[chunk[0]])} tokens long and "
                    f"fills the decoder's window of {window} tokens (with its start token): no "
                    "room is left to generate (0 tokens can be generated). Shorten the prefix."
                )
        else:
            room = context_window(model) - max(len(p) for p in sources)
        out, lg = _generate_batch(
            model,
            sources,
            max_new_tokens=min(max_new_tokens, room),
            stop_at_eos=stop_at_eos,
            use_cache=use_cache,
            keep_logits=keep_logits,
            decoder_prefixes=[prefixes[i] for i in chunk] if encoder_decoder else None,
        )
        for k, i in enumerate(chunk):
            outputs[i] = out[k]
            if lg is not None:
                logits[i] = lg[k]
    return Generation(encoded, outputs, logits if keep_logits else None)
