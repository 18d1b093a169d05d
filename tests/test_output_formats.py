"""Files written by earlier hooklab versions keep loading (tests/fixtures/formats/).

Each fixture was written once by ``tests/fixtures/formats/make_v2.py`` (format version 2) and
is never regenerated: a change to a kind's record that breaks these loads needs a new format
version for that kind and a reader of the old one.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import hooklab
from hooklab.pecore import PecoreResult

FORMATS = Path(__file__).parent / "fixtures" / "formats"
TOY = {
    "name_or_path": "toy",
    "architecture": "GPT2LMHeadModel",
    "config_digest": "07eb611853d34e46",
}


def _model_ok(out) -> None:
    assert {k: out.model[k] for k in TOY} == TOY


def test_attribution_v2_loads():
    out = hooklab.load_output(FORMATS / "attribution_v2.safetensors")
    assert isinstance(out, hooklab.AttributionOutput)
    assert hooklab.AttributionOutput.load(FORMATS / "attribution_v2.safetensors").kind == out.kind
    (seq,) = out.sequences
    assert seq.tokens == ("<|endoftext|>", "George", " was", " sick", ".", "He")
    assert seq.target_start == 5 and seq.method == "saliency"
    assert seq.attributions.shape == (1, 6, 96) and seq.attributions.dtype == torch.float32
    assert seq.step_scores["probability"].item() == pytest.approx(3.4828e-06, rel=1e-4)
    assert out.info["method"] == "saliency"
    _model_ok(out)


def test_mixing_v2_loads():
    out = hooklab.MixingOutput.load(FORMATS / "mixing_v2.safetensors")
    assert isinstance(hooklab.load_output(FORMATS / "mixing_v2.safetensors"), hooklab.MixingOutput)
    assert out.layers == (0, 1, 2, 3) and out.method == "value_zeroing"
    assert out.tokens[:3] == ("<|endoftext|>", "George", " was") and len(out.tokens) == 15
    assert out.scores.shape == (4, 15, 15) and out.rollout is not None
    torch.testing.assert_close(out.scores.sum(-1), torch.ones(4, 15, dtype=out.scores.dtype))
    assert out.parameters["metric"] == "cosine" and out.causal
    _model_ok(out)


def test_knockout_v2_loads():
    out = hooklab.KnockoutOutput.load(FORMATS / "knockout_v2.safetensors")
    assert isinstance(hooklab.load_output(FORMATS / "knockout_v2.safetensors"), type(out))
    assert out.tokens == ("<|endoftext|>", "George", " was", " sick", ".", " He")
    assert out.target_token == " asked" and out.queries == (5,)
    assert out.sources == {"cue": (1,)} and out.centres == (0, 1, 2, 3)
    assert out.windows == ((0,), (1,), (2,), (3,))
    assert out.base_probability == pytest.approx(0.3006200300280731, abs=0)
    assert out.probabilities[0, 0].item() == pytest.approx(0.2986895185078651, abs=0)
    _model_ok(out)


@pytest.mark.parametrize("name", ["pecore_v2.safetensors", "pecore_v2.json"])
def test_pecore_v2_loads(name):
    out = PecoreResult.load(FORMATS / name)
    assert out == hooklab.load_output(FORMATS / name)
    assert out.output_current_tokens == (" ", " to", " the", " hospital", ".")
    assert out.cti_scores[0] == pytest.approx(12.866727828979492, abs=0)
    assert out.output_context == "He stayed home."
    (c,) = out.context_sensitive
    assert c.index == 0 and [q.index for q in c.cues] == [0, 7]
    assert len(c.output_context_scores) == len(out.output_context_tokens) == 8
    assert c.output_context_scores[0] == pytest.approx(5.069188091511023e-07, abs=0)
    _model_ok(out)


def test_both_pecore_forms_agree():
    a = PecoreResult.load(FORMATS / "pecore_v2.safetensors")
    b = PecoreResult.load(FORMATS / "pecore_v2.json")
    assert a == b
