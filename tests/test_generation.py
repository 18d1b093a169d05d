"""Greedy generation: KV-cached == uncached, batched == one by one."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from hooklab.generation import generate

PROMPTS = ["George was sick yesterday. His", "It rained", "Mary was hungry at noon. Her friends"]


def test_cached_logits_equal_uncached(tiny):
    kw = dict(max_new_tokens=6, stop_at_eos=False, keep_logits=True)
    cached = generate(tiny, PROMPTS, use_cache=True, **kw)
    plain = generate(tiny, PROMPTS, use_cache=False, **kw)
    assert cached.output_ids == plain.output_ids
    for a, b in zip(cached.step_logits, plain.step_logits):
        assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_batch_equals_one_by_one(tiny):
    kw = dict(max_new_tokens=6, stop_at_eos=False, keep_logits=True)
    batched = generate(tiny, PROMPTS, **kw)
    for i, prompt in enumerate(PROMPTS):
        alone = generate(tiny, prompt, **kw)
        assert alone.output_ids[0] == batched.output_ids[i]
        assert_close(alone.step_logits[0], batched.step_logits[i], atol=1e-5, rtol=1e-5)


def test_generated_tokens_are_argmax_of_full_forward(gpt2):
    out = generate(gpt2, "George was sick", max_new_tokens=4, stop_at_eos=False)
    seq = out.prompt_ids[0] + out.output_ids[0]
    with torch.no_grad():
        logits = gpt2(torch.tensor([seq]), prepend_bos=False)[0]
    n = len(out.prompt_ids[0])
    assert logits[n - 1 : -1].argmax(-1).tolist() == out.output_ids[0]


def test_bos_prepended_once(tiny):
    bos = tiny.tokenizer.bos_token
    out = generate(tiny, [bos + "George was", "George was"], max_new_tokens=1)
    assert out.prompt_ids[0] == out.prompt_ids[1]
    assert out.prompt_ids[0].count(tiny.tokenizer.bos_token_id) == 1


@pytest.mark.parametrize("bad", [{"max_new_tokens": 0}, {"batch_size": 0}])
def test_bad_generation_options(gpt2, bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        generate(gpt2, "George", **bad)


def test_generation_stops_at_context_window(gpt2):
    out = generate(gpt2, "George was", max_new_tokens=500, stop_at_eos=False)
    assert len(out.prompt_ids[0]) + len(out.output_ids[0]) == gpt2.cfg.n_ctx
