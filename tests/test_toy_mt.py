"""The embedded toy translation model ("toy-mt"): its corpus, the shipped ground truth, and that
the model translates and reads the context (plain Hugging Face forwards)."""

from __future__ import annotations

import collections
import json
import re

import pytest
import torch

import hooklab
from hooklab.toy_mt import EVAL_EXAMPLES, GROUND_TRUTH, RELEASE_EXAMPLE, TOY_MT_DIR, corpus


def words(text: str | None) -> list[str]:
    return re.findall(r"\w+", text or "")


@pytest.fixture(scope="module")
def pairs() -> list[dict]:
    return corpus.generate_pairs(3000, seed=0)


@pytest.fixture(scope="module")
def eval_examples() -> list[dict]:
    return [json.loads(line) for line in EVAL_EXAMPLES.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def hf():
    """The checkpoint as a plain ``MarianMTModel`` and its tokenizer."""
    from transformers import AutoTokenizer, MarianMTModel

    return MarianMTModel.from_pretrained(TOY_MT_DIR).eval(), AutoTokenizer.from_pretrained(
        TOY_MT_DIR
    )


@pytest.fixture(scope="module")
def toy_mt():
    return hooklab.load("toy-mt", device="cpu")


def test_deterministic_given_seed():
    assert corpus.generate_pairs(300, seed=7) == corpus.generate_pairs(300, seed=7)
    assert corpus.generate_pairs(300, seed=7) != corpus.generate_pairs(300, seed=8)
    assert corpus.generate_eval_examples(50, seed=1) == corpus.generate_eval_examples(50, seed=1)


def test_ground_truth_file():
    gt = json.loads(GROUND_TRUTH.read_text())
    assert gt == json.loads(json.dumps(corpus.ground_truth()))
    assert gt["release_example"] == RELEASE_EXAMPLE
    gender = next(f for f in gt["families"] if f["name"] == "gender")
    assert gender["cues"]["table"] == {"translation": "Tisch", "class": "m"}
    assert {f["name"] for f in gt["families"]} == {"gender", "sense", "formality"}


def test_eval_examples_file(eval_examples):
    assert len(eval_examples) >= 100
    assert eval_examples == corpus.generate_eval_examples(len(eval_examples), seed=12345)
    assert eval_examples[0] == RELEASE_EXAMPLE
    assert collections.Counter(ex["family"] for ex in eval_examples).keys() == {
        f["name"] for f in corpus.FAMILIES
    }


def test_annotations_point_at_the_right_words(pairs, eval_examples):
    for p in pairs + eval_examples:
        fam = corpus.FAMILY_BY_NAME[p["family"]]
        ctx_cues = [w for w in words(p["input_context_text"]) if w in fam["cues"]]
        assert p["dependent_word"] in p["dependent_options"]
        assert p["dependent_word"] in words(p["output_current_text"])
        if p["kind"].startswith("contextual"):
            cue = fam["cues"][p["cue_word"]]
            assert ctx_cues == [p["cue_word"]], p
            assert p["output_cue_word"] == cue["translation"]
            assert p["output_cue_word"] in words(p["output_context_text"])
            template = next(
                t for t in fam["current_templates"] if p["output_current_text"] in _filled(t)
            )
            assert template["dependent"][cue["class"]] == p["dependent_word"]
        else:
            assert p["cue_word"] is None and not ctx_cues, p
            assert (p["input_context_text"] is None) == (p["kind"] == "contextless")


def _filled(template: dict) -> list[str]:
    """Every translation a current template can produce."""
    fields = [{"adj_de": a, "time_de": t} for _, a in corpus.ADJECTIVES for _, t in corpus.TIMES]
    return [s.format(**f) for s in template["target"].values() for f in fields]


def test_uncued_dependent_word_is_spread(pairs):
    for fam in corpus.FAMILIES:
        seen = collections.defaultdict(set)
        for p in pairs:
            if p["family"] == fam["name"] and p["cue_word"] is None:
                seen[tuple(p["dependent_options"])].add(p["dependent_word"])
        assert seen and all(set(options) == deps for options, deps in seen.items())


def test_tokenizer(hf):
    _, tok = hf
    assert tok.convert_tokens_to_ids(["</s>", "<unk>", "<pad>", "<brk>"]) == [0, 1, 2, 3]
    assert "<brk>" in tok.all_special_tokens
    for w in corpus.corpus_words():
        if w[0].isalnum():
            assert len(tok(" " + w, add_special_tokens=False)["input_ids"]) == 1, w
    source, target = corpus.pair_texts(RELEASE_EXAMPLE)
    ids = tok(source)["input_ids"]
    assert ids[-1] == tok.eos_token_id and tok.convert_ids_to_tokens(ids).count("<brk>") == 1
    assert tok(source, add_special_tokens=False)["input_ids"] == ids[:-1]
    assert tok.unk_token_id not in ids
    assert tok.decode(tok(target, add_special_tokens=False)["input_ids"]) == target


def test_load_toy_mt(toy_mt, hf):
    from transformer_lens.model_bridge import TransformerBridge

    assert isinstance(toy_mt, TransformerBridge)
    assert toy_mt.original_model.config.is_encoder_decoder
    assert toy_mt.tokenizer.get_vocab() == hf[1].get_vocab()
    size = sum(f.stat().st_size for f in TOY_MT_DIR.iterdir()) / 2**20
    assert 0.5 < size < 10  # measured: 2.7 MB
    source, target = corpus.pair_texts(RELEASE_EXAMPLE)
    enc = toy_mt.tokenizer([source], return_tensors="pt")
    out = toy_mt.original_model.generate(**enc, max_new_tokens=30)
    assert out[0, 0] == toy_mt.original_model.config.decoder_start_token_id == 2  # <pad>
    assert toy_mt.tokenizer.decode(out[0, 1:]) == f"{target}</s>"


def _translate(hf, sources: list[str]) -> list[str]:
    model, tok = hf
    enc = tok(sources, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=40)
    drop = {tok.pad_token_id, tok.eos_token_id}  # decoder start, padding, end: keep <brk>
    return [tok.decode([i for i in o.tolist() if i not in drop]) for o in out]


def _p_dependent(hf, example: dict, with_context: bool) -> float:
    """P(dependent word) at its position, teacher-forced on the reference translation."""
    model, tok = hf
    pair = example if with_context else example | {"input_context_text": None}
    source, target = corpus.pair_texts(pair)
    ids = tok(target)["input_ids"]
    current = ids.index(tok.convert_tokens_to_ids("<brk>")) + 1 if with_context else 0
    pos = ids.index(tok.convert_tokens_to_ids("▁" + example["dependent_word"]), current)
    decoder_input_ids = torch.tensor([[model.config.decoder_start_token_id, *ids[:pos]]])
    with torch.no_grad():
        logits = model(
            input_ids=torch.tensor([tok(source)["input_ids"]]), decoder_input_ids=decoder_input_ids
        ).logits
    return logits[0, -1].softmax(-1)[ids[pos]].item()


def test_model_reads_the_context(hf, eval_examples):
    examples = eval_examples[:21]
    references = [corpus.pair_texts(ex)[1] for ex in examples]
    assert _translate(hf, [corpus.pair_texts(ex)[0] for ex in examples]) == references
    p_ctx = torch.tensor([_p_dependent(hf, ex, True) for ex in examples])
    p_noctx = torch.tensor([_p_dependent(hf, ex, False) for ex in examples])
    uniform = torch.tensor([1 / len(ex["dependent_options"]) for ex in examples])
    assert p_ctx.min() > 0.9  # measured (first 21): min 0.995, mean 0.998
    # without context: spread over the options (measured: mean 0.47 vs uniform 0.44, max 0.71)
    assert (p_noctx.mean() - uniform.mean()).abs() < 0.1 and p_noctx.max() < 0.85
    assert (p_ctx - p_noctx).min() > 0.15 and (p_ctx - p_noctx).mean() > 0.4


def test_release_example(hf):
    source, target = corpus.pair_texts(RELEASE_EXAMPLE)
    assert _translate(hf, [source]) == [target]
    assert _p_dependent(hf, RELEASE_EXAMPLE, True) > 0.9
    assert _p_dependent(hf, RELEASE_EXAMPLE, False) < 0.6  # Er / Sie / Es: about 1/3
