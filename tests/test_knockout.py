"""Attention knockout against a hand-masked reference, in float64, on both tiny models."""

from __future__ import annotations

import contextlib
import importlib

import pytest
import torch
from matplotlib.figure import Figure
from torch.testing import assert_close

import hooklab
from hooklab.hooks import count_hooks
from hooklab.mixing import Example, KnockoutOutput, attention_knockout, knockout_probabilities
from hooklab.mixing.adapter import DecoderOnly
from tests.reference.mixing import ref_knockout_probability

ko_module = importlib.import_module("hooklab.mixing.knockout")
PROMPT = "George was sick yesterday. His colleagues asked him to"
SOURCES = {"cue": "sick", "last": -1, "first": [0, 1]}


@pytest.fixture(scope="module", params=["gpt2_dir", "llama_dir"])
def model64(request):
    return hooklab.load(request.getfixturevalue(request.param), device="cpu", dtype="float64")


def _clean_probability(model, out: KnockoutOutput) -> float:
    logits = model(out.token_ids[None], prepend_bos=False)
    return torch.softmax(logits[0, -1], -1)[out.target_id].item()


@pytest.mark.parametrize("window", [1, None])
def test_matches_hand_masked_reference(model64, window):
    (out,) = attention_knockout(model64, PROMPT, sources=SOURCES, window=window, batch_size=3)
    ids = out.token_ids.tolist()
    assert out.sources["cue"] == (3,) and out.sources["first"] == (0, 1)
    assert out.queries == (len(ids) - 1,)
    assert out.target_id == int(model64(out.token_ids[None], prepend_bos=False)[0, -1].argmax())
    assert out.base_probability == pytest.approx(_clean_probability(model64, out), rel=1e-12)
    for s, keys in enumerate(out.sources.values()):
        for w, layers in enumerate(out.windows):
            expected = ref_knockout_probability(
                model64, ids, layers, out.queries, keys, out.target_id
            )
            assert out.probabilities[s, w].item() == pytest.approx(expected, rel=1e-5, abs=1e-9)
    assert not torch.allclose(out.probabilities, torch.tensor(out.base_probability).double())


def test_knocking_out_nothing_changes_nothing(model64):
    # One knockout per pass: rows of one batch may round differently (~1e-19).
    (out,) = attention_knockout(model64, PROMPT, sources={"nothing": []}, window=2, batch_size=1)
    assert torch.all(out.probabilities == out.base_probability)
    assert out.base_probability == _clean_probability(model64, out)
    assert torch.all(out.relative_change == 0)
    ids = out.token_ids.tolist()
    knockouts = [((), (), ()), ((0, 1), (), ())]
    probs = knockout_probabilities(model64, Example(tuple(ids)), knockouts, 5, batch_size=1)
    assert probs[0] == probs[1]


def test_batching_and_measured_tokens(gpt2):
    (a,) = attention_knockout(gpt2, PROMPT, sources=SOURCES, window=1, batch_size=1)
    (b,) = attention_knockout(gpt2, PROMPT, sources=SOURCES, window=1, batch_size=16)
    assert_close(a.probabilities, b.probabilities, atol=1e-6, rtol=1e-5)
    (c,) = attention_knockout(gpt2, PROMPT, sources=SOURCES, measured_token=7, window=None)
    assert c.target_id == 7 and c.centres is None and c.windows == ((0, 1),)
    (d,) = attention_knockout(gpt2, PROMPT, measured_token=" the", layers=[1], window=2)
    assert d.target_token == " the" and d.centres == (1,) and d.windows == ((0, 1),)
    assert list(d.sources) == ["last", "other"]
    (e,) = attention_knockout(gpt2, PROMPT, sources=SOURCES, query=[-2, -1], window=None)
    assert len(e.queries) == 2 and e.probabilities.shape == (3, 1)


def test_window_layers():
    window_layers = ko_module.window_layers
    assert [ko_module.auto_window(n) for n in (1, 2, 4, 12, 48, 80)] == [1, 1, 1, 3, 12, 20]
    assert window_layers(5, 9, 12) == tuple(range(1, 10))
    assert window_layers(0, 9, 12) == tuple(range(0, 5))
    assert window_layers(11, 9, 12) == tuple(range(7, 12))
    assert window_layers(3, 2, 12) == (2, 3)
    assert window_layers(3, 1, 12) == (3,)


def test_discarded_edit_raises(gpt2, monkeypatch):
    hooks = count_hooks(gpt2)

    @contextlib.contextmanager
    def without_blocking(self, masks):
        yield []

    monkeypatch.setattr(DecoderOnly, "blocked_edges", without_blocking)
    with pytest.raises(RuntimeError, match="did not take effect"):
        attention_knockout(gpt2, PROMPT, sources=SOURCES, window=1)
    assert count_hooks(gpt2) == hooks


def test_model_unchanged(gpt2):
    before = {k: v.clone() for k, v in gpt2.state_dict().items()}
    hooks = count_hooks(gpt2)
    attention_knockout(gpt2, PROMPT, sources=SOURCES, window=1)
    assert count_hooks(gpt2) == hooks
    assert all(torch.equal(before[k], v) for k, v in gpt2.state_dict().items())


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"window": 0}, ValueError, "window must be a positive int"),
        ({"window": "all"}, ValueError, "window must be a positive int, 'auto' or None, got 'all'"),
        ({"batch_size": 0}, ValueError, "batch_size must be a positive int"),
        ({"part": "cross"}, ValueError, "decoder-only model has no 'cross' attention"),
        ({"measured_token": 10**6}, ValueError, "not a token id"),
        ({"sources": {}}, ValueError, "non-empty"),
        ({"layers": 5}, ValueError, r"Invalid layers 5: choose from 0\.\.1"),
        ({"sources": {"x": "hospital"}}, ValueError, "'hospital' does not occur"),
        ({"sources": {"x": 99}}, ValueError, r"Invalid source 'x' 99"),
        ({"sources": {"all": range(0, 99)}, "query": 2}, ValueError, "Invalid source"),
        ({"sources": {"all": [0, 1, 2]}, "query": 2}, ValueError, "no key to attend to"),
    ],
)
def test_bad_options(gpt2, options, error, match):
    with pytest.raises(error, match=match):
        attention_knockout(gpt2, PROMPT, **{"sources": SOURCES, **options})


def test_targets_none_is_refused(gpt2):
    # (TypeError from jaxtyping when it checks the annotation, else the ValueError)
    with pytest.raises((TypeError, ValueError)):
        attention_knockout(gpt2, PROMPT, targets=None)


def test_output(gpt2):
    (out,) = attention_knockout(gpt2, PROMPT, sources=SOURCES, window=1)
    rows = out.table()
    assert len(rows) == 3 * 2 and {r["source"] for r in rows} == set(SOURCES)
    assert rows[0]["relative_change"] == pytest.approx(out.relative_change[0, 0].item())
    assert out.to_dict()["target_token"] == out.target_token
    assert "cue" in out.to_text() and "<table>" in out.to_html()
    assert isinstance(out.plot(), Figure)
    (single,) = attention_knockout(gpt2, PROMPT, sources=SOURCES, window=None)
    assert isinstance(single.plot(), Figure) and "layers 0-1" in single.to_text()


def test_toy_cue_knockout_drops_the_dependent_word(toy):
    # Release example: blocking "the" <- "sick" in every layer removes most of P(" hospital").
    prompt = "George was sick yesterday. His colleagues asked him to come to the"
    (out,) = attention_knockout(
        toy, prompt, sources={"cue": "sick"}, measured_token=" hospital", window=None
    )
    assert out.target_token == " hospital"
    assert out.base_probability > 0.9
    assert out.relative_change[0, 0] < -0.5


def test_default_window_suits_the_depth(toy):
    # The 4-layer toy model: "auto" blocks 1 layer per centre, so the centres differ (a
    # window of 9 blocked every layer at every centre: identical values across the sweep).
    prompt = "George was sick yesterday. His colleagues asked him to come to the"
    sources = {"cue": "sick", "last": -1}
    (out,) = attention_knockout(toy, prompt, sources=sources, measured_token=" hospital")
    assert out.windows == ((0,), (1,), (2,), (3,)) and out.centres == (0, 1, 2, 3)
    assert out.parameters["window"] == 1 and out.parameters["window_rule"] == "auto"
    for row in out.probabilities:
        assert len(set(row.tolist())) == len(row)  # every centre gives its own value
    (given,) = attention_knockout(toy, prompt, sources=sources, window=3)
    assert given.parameters["window"] == 3 and given.parameters["window_rule"] is None
    assert given.windows[0] == (0, 1)


def test_forced_targets_extend_the_sequence(gpt2):
    short = PROMPT.rsplit(" ", 2)[0]
    rest = PROMPT[len(short) :]
    (a,) = attention_knockout(gpt2, PROMPT, sources=SOURCES, window=1)
    (b,) = attention_knockout(gpt2, short, targets=rest, sources=SOURCES, window=1)
    assert b.token_ids.tolist() == a.token_ids.tolist() and b.target_id == a.target_id
    assert_close(a.probabilities, b.probabilities)
    assert b.parameters["targets"] == rest


def test_provenance_and_resolved_parameters(gpt2):
    outs = attention_knockout(gpt2, [PROMPT, "It rained"], sources={"last": -1})
    assert len(outs) == 2 and all(isinstance(o, KnockoutOutput) for o in outs)
    out = outs[0]
    assert out.model["name_or_path"] and out.model["architecture"]
    p = out.parameters
    assert p["window"] == 1 and p["window_rule"] == "auto"  # 2 layers: a quarter, at least 1
    assert p["batch_size"] == 16 and p["part"] == "decoder"
    assert p["measured_token"] == "predicted" and p["targets"] == "" and p["layers"] == (0, 1)
    assert p["query"] == out.queries and "dtype minimum" in p["intervention"]
