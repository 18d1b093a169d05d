"""The command-line figures and summaries are Python calls (hooklab.mixing.recipes)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from hooklab.mixing import attention_knockout, value_zeroing
from hooklab.mixing.recipes import (
    cue_knockouts,
    cue_positions,
    query_position,
    toy_knockout_case,
    toy_knockout_sources,
    value_zeroing_figures,
)
from hooklab.pecore.examples import eval_examples

TEXT = "George was sick yesterday. His colleagues asked him to come"


def test_value_zeroing_figures(toy):
    (out,) = value_zeroing(toy, TEXT, targets=" to the hospital", rollout=True)
    query = query_position(out, "hospital")
    assert out.tokens[query].strip() == "hospital"
    assert query_position(out) == len(out.tokens) - 1
    assert cue_positions(out, "sick") and cue_positions(out, None) == []
    figures = value_zeroing_figures(out, word="hospital", cue="sick", panels=2)
    assert sorted(figures) == ["layers", "query_layers", "rollout", "target_mixing"]
    for fig in figures.values():
        plt.close(fig)
    (plain,) = value_zeroing(toy, TEXT, rollout=False)
    assert "rollout" not in value_zeroing_figures(plain, panels=1)
    with pytest.raises(ValueError, match="panels must be a positive int, got 0"):
        value_zeroing_figures(plain, panels=0)


def test_toy_knockout_recipes(toy):
    example = next(x for x in eval_examples("toy") if x.get("kind", "").startswith("contextual"))
    prompt, measured, cue, context = toy_knockout_case(example)
    assert measured.strip() == example["dependent_word"] and prompt.startswith(context)
    sources = toy_knockout_sources(toy, prompt, cue, context)
    assert list(sources) == ["cue", "other context", "current", "last"]
    assert not set(sources["cue"]) & set(sources["other context"])
    (curves,) = attention_knockout(toy, prompt, sources=sources, measured_token=measured)
    assert curves.probabilities.shape[0] == 4
    (row,) = cue_knockouts(toy, [example])
    assert row["cue"] == cue and row["before"] > 0
    assert row["change"] == pytest.approx(row["after"] / row["before"] - 1)
