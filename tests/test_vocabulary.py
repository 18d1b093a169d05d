"""One vocabulary: ``prompts`` and ``targets`` mean the same in attribution and context mixing.

``targets`` is None (generate with :func:`hooklab.generate`), one text (every prompt), or one
text or token-id list per prompt; ``""`` means no target (mixing adds none, attribution refuses
it); a text target that repeats its prompt loses it under one rule (decoder-only only).
"""

from __future__ import annotations

import pytest

import hooklab
from hooklab import seq2seq
from hooklab.encoding import per_prompt, strip_repeated_prompt
from hooklab.inputs import encode_prompt, encode_target
from hooklab.mixing import alti, attention_knockout, value_zeroing

PROMPTS = ["George was sick yesterday.", "The doctor was tired."]
EMPTY = "targets='' means no target; attribution needs at least one target token"


@pytest.fixture(scope="module")
def toy_mt():
    return hooklab.load("toy-mt", device="cpu")


def _attributed(model, prompts, targets, **kwargs) -> list[list[int]]:
    out = hooklab.attribute(model, prompts, targets, **kwargs)
    return [seq.token_ids[seq.target_start :].tolist() for seq in out]


def _mixed(model, prompts, targets, **kwargs) -> list[list[int]]:
    """Target ids per prompt from value zeroing (the decoder input after its start token on
    encoder–decoder models)."""
    out = value_zeroing(model, prompts, targets=targets, layers=[0], **kwargs)
    return [m.token_ids[1 if m.target_start is None else m.target_start :].tolist() for m in out]


def _knocked(model, prompts, targets) -> list[list[int]]:
    out = attention_knockout(model, prompts, targets=targets, window=None, layers=[0])
    return [o.token_ids.tolist() for o in out]


def test_one_text_is_every_prompts_target(toy):
    one, each = " His colleagues", [" His colleagues"] * 2
    expected = [encode_target(toy, one)] * 2
    assert _attributed(toy, PROMPTS, one) == _attributed(toy, PROMPTS, each) == expected
    assert _mixed(toy, PROMPTS, one) == _mixed(toy, PROMPTS, each) == expected
    assert _knocked(toy, PROMPTS, one) == _knocked(toy, PROMPTS, each)
    assert [m.token_ids.tolist() for m in alti(toy, PROMPTS, targets=one, layers=[0])] == [
        encode_prompt(toy, p) + expected[0] for p in PROMPTS
    ]
    ids = [encode_target(toy, " His"), encode_target(toy, " He")]  # token-id lists, per prompt
    assert _attributed(toy, PROMPTS, ids) == _mixed(toy, PROMPTS, ids) == ids


@pytest.mark.parametrize(
    "call",
    [
        lambda m, t: hooklab.attribute(m, PROMPTS, t),
        lambda m, t: value_zeroing(m, PROMPTS, targets=t),
        lambda m, t: attention_knockout(m, PROMPTS, targets=t),
        lambda m, t: alti(m, PROMPTS, targets=t),
    ],
    ids=["attribute", "value_zeroing", "attention_knockout", "alti"],
)
def test_counts_are_checked_alike(toy, call):
    with pytest.raises(ValueError, match="Got 3 targets for 2 prompts; pass one per prompt"):
        call(toy, [" His", " He", " She"])


def test_empty_target_means_no_target(toy):
    prompt_ids = [encode_prompt(toy, p) for p in PROMPTS]
    for out in (
        value_zeroing(toy, PROMPTS, targets="", layers=[0]),
        alti(toy, PROMPTS, targets="", layers=[0]),
    ):
        assert [m.token_ids.tolist() for m in out] == prompt_ids
        assert [m.target_start for m in out] == [len(p) for p in prompt_ids]
    assert _knocked(toy, PROMPTS, "") == _knocked(toy, PROMPTS, ["", []]) == prompt_ids
    assert _mixed(toy, PROMPTS, ["", " His"]) == [[], encode_target(toy, " His")]
    for targets in ("", ["", " His"], [" His", []]):
        with pytest.raises(ValueError, match=EMPTY):
            hooklab.attribute(toy, PROMPTS, targets)
    with pytest.raises(ValueError, match="contrast_targets.*means no target"):
        hooklab.attribute(toy, PROMPTS, " His", contrast_targets="")


def test_empty_target_on_encoder_decoder(toy_mt):
    (mix,) = value_zeroing(toy_mt, PROMPTS[0], targets="", layers=[0])
    assert mix.token_ids.tolist() == [seq2seq.decoder_start_id(toy_mt)]
    with pytest.raises(ValueError, match=EMPTY):
        hooklab.attribute(toy_mt, PROMPTS[0], "")


# (prompt, text target, the text that is encoded): the one repeated-prompt rule.
REPEATS = [
    ("George was sick yesterday.", "George was sick yesterday. His colleagues", " His colleagues"),
    ("George was sick yesterday.", " His colleagues", " His colleagues"),
    ("George was sick yesterday.", "George was sick yesterday.", "George was sick yesterday."),
    ("George was sick", "George was sick yesterday.", " yesterday."),
    ("George was sick yesterday.", "George was", "George was"),
]


@pytest.mark.parametrize(("prompt", "target", "encoded"), REPEATS)
def test_repeated_prompt_rule_is_one_rule(toy, toy_mt, prompt, target, encoded):
    assert strip_repeated_prompt(prompt, target) == encoded
    expected = [encode_target(toy, encoded)]
    assert _attributed(toy, prompt, target) == _mixed(toy, prompt, target) == expected
    assert _knocked(toy, prompt, target) == [encode_prompt(toy, prompt) + expected[0]]
    # Encoder–decoder targets are translations: never stripped, in either family.
    whole = [encode_target(toy_mt, target)]
    assert _attributed(toy_mt, prompt, target) == _mixed(toy_mt, prompt, target) == whole


def test_generated_targets_are_equal(toy, toy_mt):
    for model in (toy, toy_mt):
        generated = _attributed(model, PROMPTS, None)
        assert generated == _mixed(model, PROMPTS, None)
        assert generated == hooklab.generate(model, PROMPTS).output_ids
        short = {"max_new_tokens": 2}
        two = _attributed(model, PROMPTS, None, generation_kwargs=short)
        assert two == _mixed(model, PROMPTS, None, generation_kwargs=short)
        assert two == [g[:2] for g in generated]
    decoder_only = [m.token_ids[m.target_start :].tolist() for m in alti(toy, PROMPTS)]
    assert decoder_only == _attributed(toy, PROMPTS, None)


@pytest.mark.parametrize("name", ["toy", "toy_mt"])
def test_generation_kwargs_are_checked_alike(name, request):
    model = request.getfixturevalue(name)
    bad = {"num_beams": 4}  # a Hugging Face option, not a hooklab.generate one
    for call in (
        lambda: hooklab.attribute(model, PROMPTS, generation_kwargs=bad),
        lambda: value_zeroing(model, PROMPTS, generation_kwargs=bad),
    ):
        with pytest.raises(TypeError, match="unknown option 'num_beams'; hooklab.generate"):
            call()


def test_per_prompt():
    assert per_prompt(None, 2) is None
    assert per_prompt(" a", 2) == [" a", " a"]
    assert per_prompt([[1, 2], " b"], 2) == [[1, 2], " b"]
    with pytest.raises(TypeError, match="targets must be None, a text or a list"):
        per_prompt(3, 1)
    with pytest.raises(TypeError, match=r"one flat list of token ids.*e\.g\. \[\[1, 2\]\]"):
        per_prompt([1, 2], 1)


def test_contrasts_broadcast_like_targets(toy):
    def scores(**contrast):
        name = "contrast_prob_diff"
        out = hooklab.attribute(toy, PROMPTS, " His", step_scores=[name], **contrast)
        return [seq.step_scores[name].tolist() for seq in out]

    assert scores(contrast_targets=" He") == scores(contrast_targets=[" He", " He"])
    assert scores(contrast_prompts="It rained.") == scores(contrast_prompts=["It rained."] * 2)


def test_prompts_as_token_ids_mean_the_same(toy):
    ids = [encode_prompt(toy, p) for p in PROMPTS]
    assert _attributed(toy, ids, " His") == _attributed(toy, PROMPTS, " His")
    by_ids = value_zeroing(toy, ids, targets=" His", layers=[0])
    by_text = value_zeroing(toy, PROMPTS, targets=" His", layers=[0])
    for a, b in zip(by_ids, by_text, strict=True):
        assert a.tokens == b.tokens and a.scores.equal(b.scores)
    assert _knocked(toy, ids, " His") == _knocked(toy, PROMPTS, " His")
