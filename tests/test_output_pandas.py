"""Tidy ``to_pandas()`` tables of every output: the values are the tensors'."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pandas as pd
import torch
from test_output_io import BUILDERS

from hooklab.pecore import PecoreResult


def test_attribution_frame_matches_the_tensors():
    out = BUILDERS["attribution"]()
    frame = out.to_pandas()
    assert list(frame.columns[:7]) == [
        "example",
        "step",
        "target_pos",
        "target_token",
        "pos",
        "token",
        "score",
    ]
    seq = out[0]
    scores = seq.scores()  # L2 over the trailing dim
    first = frame[frame.example == 0]
    assert len(first) == int((~scores.isnan()).sum())  # NaN cells left out
    for row in first.itertuples():
        assert row.score == scores[row.step, row.pos].item()
        assert row.token == seq.tokens[row.pos]
        assert row.target_token == seq.tokens[seq.target_start + row.step]
        assert row.probability == seq.step_scores["probability"][row.step].item()
        assert row.delta == seq.extras["delta"][row.step].item()
    second = frame[frame.example == 1]  # no attributions: one row per step, no position
    assert len(second) == out[1].n_steps and second.pos.isna().all()
    assert second.score.isna().all()
    summed = seq.to_pandas(reduce="sum")
    assert "example" not in summed.columns
    assert summed.score.tolist() == [v for v in seq.scores("sum").flatten().tolist() if v == v]


def test_mixing_frame_matches_the_tensors():
    out = BUILDERS["mixing"]()
    frame = out.to_pandas()
    assert list(frame.columns) == [
        "layer",
        "query_pos",
        "query_token",
        "key_pos",
        "key_token",
        "score",
        "rollout",
    ]
    assert len(frame) == len(out.layers) * 6  # 3 tokens, causal: 6 visible pairs per layer
    assert (frame.key_pos <= frame.query_pos).all()
    for row in frame.itertuples():
        layer = out.layers.index(row.layer)
        assert row.score == out.scores[layer, row.query_pos, row.key_pos].item()
        assert row.rollout == out.rollout[layer, row.query_pos, row.key_pos].item()
        assert row.query_token == out.tokens[row.query_pos]
        assert row.key_token == out.keys[row.key_pos]


def test_knockout_frame_matches_the_tensors():
    out = BUILDERS["knockout"]()
    frame = out.to_pandas()
    assert list(frame.columns) == [
        "source",
        "window",
        "centre",
        "layers",
        "probability",
        "relative_change",
    ]
    names = list(out.sources)
    for row in frame.itertuples():
        s = names.index(row.source)
        assert row.probability == out.probabilities[s, row.window].item()
        assert row.relative_change == out.relative_change[s, row.window].item()
        assert row.layers == out.windows[row.window] and row.centre == out.centres[row.window]
    assert frame.loc[0, "relative_change"] == -0.5
    one_window = dataclasses.replace(
        out, windows=((0, 1, 2),), centres=None, probabilities=torch.tensor([[0.5], [0.25]])
    )
    assert one_window.to_pandas().centre.isna().all()


def test_pecore_frame_matches_the_result():
    res = BUILDERS["pecore"]()
    frame = res.to_pandas()
    assert list(frame.columns) == [
        "kind",
        "output_pos",
        "output_token",
        "context",
        "context_pos",
        "context_token",
        "score",
        "selected",
    ]
    cti = frame[frame.kind == "cti"]
    assert cti.output_token.tolist() == list(res.output_current_tokens)
    assert cti.score.iloc[0] == res.cti_scores[0] and math.isnan(cti.score.iloc[1])
    assert cti.selected.tolist() == [False, True] and cti.context_pos.isna().all()
    assert cti.context.isna().all()
    cci = frame[frame.kind == "cci"]
    assert (cci.context == "input").all()  # this result has no output context
    c = res.context_sensitive[0]
    assert (cci.output_pos == c.index).all() and cci.context_token.tolist() == list(
        c.input_context_tokens
    )
    pd.testing.assert_series_equal(
        cci.score.reset_index(drop=True), pd.Series(c.input_context_scores, name="score")
    )
    assert cci.selected.tolist() == [False, False, True]


def test_pecore_frame_has_the_output_context_scores():
    res = PecoreResult.load(Path(__file__).parent / "fixtures" / "formats" / "pecore_v2.json")
    frame = res.to_pandas()
    c = res.context_sensitive[0]
    for side in ("input", "output"):
        rows = frame[(frame.kind == "cci") & (frame.context == side)]
        assert rows.context_token.tolist() == list(getattr(c, f"{side}_context_tokens"))
        assert rows.score.tolist() == list(getattr(c, f"{side}_context_scores"))
        cues = [q.index for q in c.cues if q.side == side]
        assert rows[rows.selected].context_pos.tolist() == cues
    assert len(frame) == len(res.cti_scores) + len(c.input_context_tokens) + len(
        c.output_context_tokens
    )
