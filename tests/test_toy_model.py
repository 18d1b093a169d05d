"""The shipped toy model: it reads the context, and PECoRe recovers the release example."""

from __future__ import annotations

import torch

import hooklab
from hooklab.inputs import encode_prompt
from hooklab.pecore import pecore

CONTEXT = "George was sick yesterday."
CURRENT = "His colleagues asked him to come"


def _p_next(model, text: str, word: str) -> float:
    ids = encode_prompt(model, text)
    (target,) = model.tokenizer(word, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids]), prepend_bos=False)[0, -1]
    return torch.softmax(logits, -1)[target].item()


def test_toy_model_uses_the_context(toy):
    out = hooklab.generate(toy, f"{CONTEXT} {CURRENT}", max_new_tokens=8)
    assert "hospital" in toy.tokenizer.decode(out.output_ids[0])
    with_ctx = _p_next(toy, f"{CONTEXT} {CURRENT} to the", " hospital")
    without = _p_next(toy, f"{CURRENT} to the", " hospital")
    assert with_ctx > 0.9  # measured: 0.994
    assert without < 0.25  # measured: 0.120, one of eight places
    assert with_ctx > 5 * without


def test_toy_model_has_nonzero_biases_and_dropout(toy):
    hf = toy.original_model
    assert hf.transformer.h[0].attn.c_attn.bias.abs().mean() > 1e-3
    assert hf.config.attn_pdrop > 0


def test_release_example_reproduced(toy):
    res = pecore(toy, CONTEXT, CURRENT)
    assert res.output_current.startswith("to the hospital")
    top = max(res.context_sensitive, key=lambda c: c.score)
    assert top.token == " hospital"
    assert top.score == max(res.cti_scores)
    scores = torch.tensor(top.input_context_scores)
    assert top.input_context_tokens[int(scores.argmax())] == " sick"
    assert [c.token for c in top.cues] == [" sick"]
