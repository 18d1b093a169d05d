"""The ``attention`` method's chunked queries (a prefill in chunks over the KV cache) against
one pass, on every decoder-only family of the zoo: the kept rows are equal to float32
rounding (measured at most 5e-8; a left-padded batch), and no hook of hooklab's is left."""

from __future__ import annotations

import pytest
import torch

import hooklab
from hooklab.hooks import count_hooks
from hooklab.zoo import DECODER_ONLY, TEXTS, build

PROMPTS = [TEXTS[0][:60], "It rained"]
TARGETS = [" His colleagues", " all morning"]


@pytest.fixture(scope="module", params=DECODER_ONLY)
def model(request, tmp_path_factory):
    return hooklab.load(build(request.param, tmp_path_factory.mktemp(request.param)), device="cpu")


@pytest.mark.parametrize("chunk", [2, 5])
def test_chunked_queries_equal_one_pass(model, chunk):
    one = hooklab.attribute(model, PROMPTS, TARGETS, method="attention")
    before = count_hooks(model)  # a bridge's first forward may attach its own (OPT)
    got = hooklab.attribute(model, PROMPTS, TARGETS, method="attention", query_chunk=chunk)
    for a, b in zip(got.sequences, one.sequences, strict=True):
        x, y = a.attributions, b.attributions
        assert torch.equal(x.isnan(), y.isnan())
        assert float((x - y).nan_to_num().abs().max()) <= 1e-6
    assert count_hooks(model) == before
