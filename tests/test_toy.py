"""Tests of the toy-corpus generator and the shipped ground truth (not of the model's quality)."""

from __future__ import annotations

import collections
import json
import re

import pytest

from hooklab.toy import EVAL_EXAMPLES, GROUND_TRUTH, TOY_DIR, corpus


def words(text: str | None) -> list[str]:
    return re.findall(r"[A-Za-z]+", text or "")


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    return corpus.generate_documents(3000, seed=0)


@pytest.fixture(scope="module")
def eval_examples() -> list[dict]:
    return [json.loads(line) for line in EVAL_EXAMPLES.read_text().splitlines() if line.strip()]


def test_deterministic_given_seed():
    assert corpus.generate_documents(300, seed=7) == corpus.generate_documents(300, seed=7)
    assert corpus.generate_documents(300, seed=7) != corpus.generate_documents(300, seed=8)
    assert corpus.generate_eval_examples(50, seed=1) == corpus.generate_eval_examples(50, seed=1)


def test_contains_release_example(docs):
    text = corpus.document_text(docs[0])
    assert text == (
        "<|endoftext|>George was sick yesterday. His colleagues asked him to come"
        " to the hospital.<|endoftext|>"
    )
    # ... and the same sentence also occurs with other places when there is no context
    places = {
        d["dependent_word"]
        for d in docs
        if d["current"] == "His colleagues asked him to come" and d["context"] is None
    }
    assert len(places) >= 4


def test_mixture_and_families(docs):
    kinds = collections.Counter(d["kind"] for d in docs)
    assert 0.28 < kinds["contextless"] / len(docs) < 0.40
    assert kinds["distractor"] > 0 and kinds["contextual_multi"] > 0
    fams = collections.Counter(d["family"] for d in docs)
    assert set(fams) == {f["name"] for f in corpus.FAMILIES} and len(fams) >= 4


def test_cue_words_are_unique_to_their_family():
    all_cues = [c for f in corpus.FAMILIES for c in f["cue_to_dependent"]]
    assert len(all_cues) == len(set(all_cues))
    template_words = set()
    for f in corpus.FAMILIES:
        for t in f["context_templates"]:
            template_words |= set(words(re.sub(r"\{\w+\}", " ", t)))
        for t in f["current_templates"]:
            template_words |= set(words(re.sub(r"\{\w+\}", " ", t["current"] + t["continuation"])))
    template_words |= {w for t in corpus.TIMES + corpus.CITIES for w in words(t)}
    assert not template_words & {c.lower() for c in all_cues}


def test_annotations_point_at_the_right_words(docs):
    for d in docs:
        fam = corpus.FAMILY_BY_NAME[d["family"]]
        cues = set(fam["cue_to_dependent"])
        ctx_cues = [w for w in words(d["context"]) if w in cues]
        cont = words(d["continuation"])
        assert d["dependent_word"] in cont
        assert d["dependent_word"] in corpus.slot_values(fam)
        if d["kind"].startswith("contextual"):
            assert ctx_cues == [d["cue_word"]], d
            assert fam["cue_to_dependent"][d["cue_word"]] == d["dependent_word"]
        else:
            assert d["cue_word"] is None and not ctx_cues, d
            assert (d["context"] is None) == (d["kind"] == "contextless")


def test_pronoun_slot_is_never_revealed_without_cue(docs):
    names = set(corpus.MALE_NAMES + corpus.FEMALE_NAMES)
    for d in docs:
        if d["family"] == "pronoun":
            assert not {"he", "she", "his", "her", "him"} & {w.lower() for w in words(d["current"])}
            if not d["kind"].startswith("contextual"):
                assert not names & set(words(d["context"]))


def test_uncued_slot_is_spread(docs):
    for fam in corpus.FAMILIES:
        counts = collections.Counter(
            d["dependent_word"]
            for d in docs
            if d["family"] == fam["name"] and d["cue_word"] is None
        )
        assert set(counts) == set(corpus.slot_values(fam))


def test_pronouns_agree_with_the_name(docs):
    gender = {n: "male" for n in corpus.MALE_NAMES} | {n: "female" for n in corpus.FEMALE_NAMES}
    for d in docs:
        names = {gender[w] for w in words(d["context"]) + words(d["current"]) if w in gender}
        assert len(names) <= 1
        if names:
            other = corpus.PRONOUNS["female" if names == {"male"} else "male"]
            assert not set(other.values()) & {
                w.lower() for w in words(d["current"] + d["continuation"])
            }, d


def test_eval_examples_file(eval_examples):
    assert len(eval_examples) >= 60
    assert eval_examples == corpus.generate_eval_examples(len(eval_examples), seed=12345)
    assert {k: eval_examples[0][k] for k in corpus.RELEASE_EXAMPLE} == corpus.RELEASE_EXAMPLE
    keys = {
        "input_context_text",
        "input_current_text",
        "output_current_text",
        "family",
        "cue_word",
        "dependent_word",
    }
    for ex in eval_examples:
        assert keys <= set(ex)
        fam = corpus.FAMILY_BY_NAME[ex["family"]]
        assert ex["cue_word"] in words(ex["input_context_text"])
        assert fam["cue_to_dependent"][ex["cue_word"]] == ex["dependent_word"]
        assert " " + ex["dependent_word"] in ex["output_current_text"]
    assert len({ex["family"] for ex in eval_examples}) == len(corpus.FAMILIES)


def test_ground_truth_file():
    gt = json.loads(GROUND_TRUTH.read_text())
    assert gt == json.loads(json.dumps(corpus.ground_truth()))
    assert gt["format"] and gt["description"]
    place = next(f for f in gt["families"] if f["name"] == "place")
    assert place["cue_to_dependent"]["sick"] == "hospital"
    assert {"hospital", "office", "party", "meeting", "station"} <= set(place["slot_values"])
    for f in gt["families"]:
        assert set(f["cue_to_dependent"].values()) == set(f["slot_values"])
        assert len(f["slot_values"]) >= 2


def test_every_corpus_word_is_one_token():
    path = TOY_DIR / "tokenizer.json"
    if not path.exists():
        pytest.skip("toy checkpoint not built")
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    assert tok.token_to_id("<|endoftext|>") == 0
    for w in corpus.corpus_words():
        assert len(tok.encode(" " + w, add_special_tokens=False).ids) == 1, w
        assert len(tok.encode(w, add_special_tokens=False).ids) == 1, w
