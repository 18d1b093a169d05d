"""hooklab.cite: MIRAGE-style citations on the embedded toy retrieval model."""

from __future__ import annotations

import json
import math

import pytest
import torch

import hooklab
from hooklab.cite import (
    CitationResult,
    CiteOptions,
    cite_from_inseq,
    cite_from_pecore,
    filter_scores,
)
from hooklab.cite.aggregate import split_sentences
from hooklab.cite.evaluate import evaluate_citations, lexical_citations, score_citations
from hooklab.toy_rag import EVAL_EXAMPLES, RELEASE_EXAMPLE

DOCS = ["Anna lives in Rome. Anna has a dog.", "Ben lives in Oslo.", "Clara has a cat."]


@pytest.fixture(scope="module")
def toy_rag():
    return hooklab.load("toy-rag", device="cpu")


@pytest.fixture(scope="module")
def examples():
    lines = EVAL_EXAMPLES.read_text().splitlines()
    return [json.loads(line) for line in lines]


# ---- the pure parts ------------------------------------------------------------------------
def test_split_sentences_rule():
    text = " Ben lives in Oslo. Clara has a cat!  Why?\nNo end"
    assert [text[a:b] for a, b in split_sentences(text)] == [
        "Ben lives in Oslo.",
        "Clara has a cat!",
        "Why?",
        "No end",
    ]
    assert split_sentences("3.5 apples") == [(0, 10)]  # no space after the dot: one sentence
    assert split_sentences("   ") == []


def test_filter_scores_top_p_and_top_k():
    s = [0.0, 1.0, 0.96, 0.5, 0.95, float("nan")]
    # top 5 % of the range [0, 1]: s >= 0.95
    assert filter_scores(s, top_p=5, top_k=None).tolist() == [0, 1.0, 0.96, 0, 0.95, 0]
    assert filter_scores(s, top_p=None, top_k=2).tolist() == [0, 1.0, 0.96, 0, 0, 0]
    assert filter_scores(s, top_p=100, top_k=None).tolist() == [0, 1.0, 0.96, 0.5, 0.95, 0]


def test_score_citations():
    got = score_citations([[0], [1, 2], []], [[0], [1], [2]])
    assert got["agreement"] == pytest.approx(1 / 3)
    assert got["precision"] == pytest.approx(2 / 3)
    assert got["recall"] == pytest.approx(2 / 3)
    assert lexical_citations(DOCS, ["Ben lives in Oslo."]) == [[1]]


# ---- reference: citations by hand from the PECoRe run's own scores ---------------------------
def _by_hand(res: CitationResult, p: float = 5.0, n: int = 3) -> list[list[int]]:
    """Explicit loops over the recorded scores, following the documented rule."""
    pec = res.pecore
    # which document each context token is in: walk the joined context token by token
    context, doc_of, at = pec.input_context, [], 0
    starts = []
    pos = 0
    for i, d in enumerate(res.documents):
        text = f"[{i + 1}] {d}"
        starts.append((context.index(text, pos), context.index(text, pos) + len(text)))
        pos = starts[-1][1]
    for tok in pec.input_context_tokens:
        k = context.index(tok.strip(), at) if tok.strip() else at
        doc_of.append(next((i for i, (a, b) in enumerate(starts) if a <= k < b), None))
        at = k + len(tok.strip())
    # sentence of each answer token: a token ending in . ! or ? closes a sentence
    sentence, s = [], 0
    for tok in pec.output_current_tokens:
        sentence.append(s)
        if tok.strip()[-1:] in (".", "!", "?"):
            s += 1
    # CTI: mean + 1·std (population) of the scores
    scores = pec.cti_scores
    mean = sum(scores) / len(scores)
    std = math.sqrt(sum((x - mean) ** 2 for x in scores) / len(scores))
    mass = [[0.0] * len(res.documents) for _ in range(max(sentence) + 1)]
    for c in pec.context_sensitive:
        assert c.score >= mean + std - 1e-9
        cci = c.input_context_scores
        cut = max(cci) - p / 100 * (max(cci) - min(cci))
        for j, x in enumerate(cci):
            if x >= cut and doc_of[j] is not None:
                mass[sentence[c.index]][doc_of[j]] += x
    selected = {t for t, x in enumerate(scores) if x >= mean + std}
    assert selected == {c.index for c in pec.context_sensitive}
    out = []
    for row in mass:
        ranked = sorted(range(len(row)), key=lambda d: -row[d])
        out.append([d for d in ranked if row[d] > 0][:n])
    return out


def test_reference_by_hand(toy_rag):
    res = hooklab.cite(
        toy_rag,
        "Where does Ben live? Which pet does Anna have?",
        DOCS,
        answer="Ben lives in Oslo. Anna has a dog.",
    )
    assert res.citations == _by_hand(res)
    assert [s.text for s in res.sentences] == ["Ben lives in Oslo.", "Anna has a dog."]
    assert all(len(c) <= 3 for c in res.citations)
    top_k = hooklab.cite(
        toy_rag,
        "Where does Ben live?",
        DOCS,
        answer="Ben lives in Oslo.",
        cci_filter="top_k",
        cci_top_k=1,
        cti_threshold=0.0,
    )
    (only,) = top_k.sentences  # every token selected, one document token kept per token
    assert len(only.selected) == len(only.tokens)


def test_calibrated_threshold_and_offline_rethreshold(toy_rag):
    q, answer = (
        "Where does Ben live? Which pet does Anna have?",
        "Ben lives in Oslo. Anna has a dog.",
    )
    low = hooklab.cite(toy_rag, q, DOCS, answer=answer, cti_threshold=0.0)
    assert len(low.pecore.context_sensitive) == len(low.pecore.output_current_tokens)
    t = sorted(low.pecore.cti_scores)[-2]
    online = hooklab.cite(toy_rag, q, DOCS, answer=answer, cti_threshold=t)
    offline = cite_from_pecore(low.pecore, DOCS, cti_threshold=t, question=q)
    assert offline.citations == online.citations
    assert [s.selected for s in offline.sentences] == [s.selected for s in online.sentences]
    for a, b in zip(offline.sentences, online.sentences, strict=True):
        torch.testing.assert_close(torch.tensor(a.mass), torch.tensor(b.mass), rtol=1e-5, atol=0)
    from_inseq = cite_from_inseq(low.to_inseq(), DOCS, cti_threshold=t, question=q)
    assert from_inseq.citations == online.citations


def test_from_inseq_json_default_rule(toy_rag):
    q, answer = (
        "Where does Ben live? Which pet does Anna have?",
        "Ben lives in Oslo. Anna has a dog.",
    )
    res = hooklab.cite(toy_rag, q, DOCS, answer=answer)
    record = json.loads(json.dumps(res.to_inseq()))
    again = cite_from_inseq(record, DOCS, question=q)
    assert again.citations == res.citations
    assert again.document_of_token == res.document_of_token


def test_result_views_and_save_load(toy_rag, tmp_path):
    res = hooklab.cite(toy_rag, RELEASE_EXAMPLE["question"], RELEASE_EXAMPLE["documents"])
    text = res.to_text()
    assert text.startswith("[1] Anna lives in Rome.\n[2] Ben works as pilot.")
    assert text.splitlines()[-1].startswith("Answer: ") or "sentence" in text
    frame = res.to_pandas()
    assert len(frame) == len(res.sentences) * len(res.documents)
    assert frame.groupby("sentence")["cited"].sum().tolist() == [len(c) for c in res.citations]
    path = res.save(tmp_path / "cite.json")
    back = CitationResult.load(path)
    assert back == res
    with pytest.raises(FileExistsError):
        res.save(path)
    binary = res.save(tmp_path / "cite.safetensors")  # the file of every output
    assert CitationResult.load(binary) == res
    assert hooklab.output.io.load(binary, "citation") == res
    assert hooklab.output.io.as_dict(res)["kind"] == "citation"
    with pytest.raises(ValueError, match="not a 'pecore' output"):
        hooklab.output.io.load(binary, "pecore")
    inseq = res.to_inseq()
    assert inseq["input_context"] == res.pecore.input_context
    assert len(inseq["cci_scores"]) == len(res.pecore.context_sensitive)
    with pytest.raises(TypeError):
        res.parameters["max_citations"] = 1  # frozen


def test_sentence_without_selected_token_cites_nothing(toy_rag):
    # "Question words" repeat the question: nothing there depends on the documents
    res = hooklab.cite(
        toy_rag, "Where does Ben live?", DOCS, answer="Ben lives in Oslo.", cti_threshold=1e9
    )
    (s,) = res.sentences
    assert s.citations == () and s.reason == "no_selected_token"
    assert "no citation" in res.to_text()


# ---- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("documents", "options", "match"),
    [
        ([], {}, r"documents is empty \(\[\]\)"),
        (["Anna lives in Rome.", " "], {}, r"documents\[1\] is empty \(' '\)"),
        (
            ["Anna lives in Rome.\nBen lives in Oslo."],
            {},
            r"documents\[0\] contains the document separator '\\n'",
        ),
        (["Anna lives in Rome. || Ben"], {"document_separator": " || "}, r"separator ' \|\| '"),
        ("Anna lives in Rome.", {}, "documents must be a list of strings"),
    ],
)
def test_bad_documents(toy_rag, documents, options, match):
    with pytest.raises((ValueError, TypeError), match=match):
        hooklab.cite(toy_rag, "Where does Anna live?", documents, answer="Anna.", **options)


def test_answer_longer_than_window(toy_rag):
    answer = "Anna lives in Rome. " * 40
    with pytest.raises(ValueError, match=r"more than the model's window of 128"):
        hooklab.cite(toy_rag, "Where does Anna live?", DOCS, answer=answer)


@pytest.mark.parametrize(
    ("option", "value", "match"),
    [
        ("cci_filter", "top_q", "top_p"),
        ("cci_top_p", 120.0, r"cci_top_p must be a number in \[0, 100\], got 120.0"),
        ("cci_top_k", True, "cci_top_k must be a positive int"),
        ("cti_threshold", float("nan"), "cti_threshold must be a finite number or None"),
        ("max_citations", 0, "positive int"),
        ("document_template", "{i}", r"\['text'\]"),
        ("pecore_options", {"input_template": "{context} {current}"}, "CiteOptions owns"),
    ],
)
def test_bad_options(option, value, match):
    with pytest.raises((ValueError, TypeError, KeyError), match=match):
        CiteOptions().replace(**{option: value})


# ---- evaluation against gold, with baselines ---------------------------------------------------
NOT_YET = pytest.mark.xfail(
    strict=True,
    reason="the shipped toy-rag checkpoint (4 layers x 128, 3,500 steps) answers 40 of the "
    "120 held-out questions exactly: it copies a value of the asked relation, the asked "
    "person's little more often than chance; cite agreement 0.461, F1 0.547. See "
    "scripts/train_toy_rag.py",
)


@NOT_YET
def test_toy_rag_answers_held_out_examples(toy_rag, examples):
    from hooklab.generation import generate
    from hooklab.inputs import encode_prompt
    from hooklab.toy_rag import INPUT_TEMPLATE, join_documents

    sample = examples[:6]
    prompts = [
        encode_prompt(
            toy_rag,
            INPUT_TEMPLATE.format(context=join_documents(e["documents"]), current=e["question"]),
        )
        for e in sample
    ]
    out = generate(toy_rag, prompts, max_new_tokens=16).output_ids
    texts = [toy_rag.tokenizer.decode(ids).strip() for ids in out]
    assert texts == [e["answer"] for e in sample]


def test_evaluation_table_on_a_handful(toy_rag, examples):
    table = evaluate_citations(toy_rag, examples[:6])
    assert list(table.index) == ["cite", "attention", "lexical", "random"]
    assert table.loc["cite", "sentences"] == sum(len(e["gold_documents"]) for e in examples[:6])
    assert table.loc["lexical", "f1"] == 1.0  # the toy answers repeat the gold document's words
    scores = table[["agreement", "precision", "recall", "f1"]]
    assert ((scores >= 0) & (scores <= 1)).all().all()


@NOT_YET
def test_cite_meets_the_target_on_a_handful(toy_rag, examples):
    table = evaluate_citations(toy_rag, examples[:6], methods=("cite",))
    assert table.loc["cite", "f1"] >= 0.95
    assert table.loc["cite", "agreement"] >= 0.95


# ---- command line ------------------------------------------------------------------------------
def test_cli_default_example(tmp_path, capsys):
    from hooklab.cli import main

    out, inseq = tmp_path / "cite.json", tmp_path / "inseq.json"
    assert main(["cite", "--save_path", str(out), "--inseq_path", str(inseq)]) == 0
    printed = capsys.readouterr().out
    saved = CitationResult.load(out)
    assert printed.startswith("[1] Anna lives in Rome.\n[2] Ben works as pilot.")
    assert saved.to_text() in printed
    assert saved.documents == tuple(RELEASE_EXAMPLE["documents"])
    assert "cci_scores" in json.loads(inseq.read_text())


def test_cli_checks_flags_before_loading(capsys):
    from hooklab.cli import main

    assert main(["cite", "--cci_filter", "top_q"]) == 2
    assert "top_p" in capsys.readouterr().err
    assert main(["cite", "--question", "Where does Ben live?"]) == 2


def test_docstring_examples_hold():
    """The examples in hooklab.cite's docstrings are the shipped model's real output."""
    import doctest
    import importlib

    for name in ("hooklab.cite", "hooklab.cite.core"):
        module = importlib.import_module(name)  # hooklab.cite is also the function
        failed, attempted = doctest.testmod(module, verbose=False)
        assert attempted > 0 and failed == 0, name
