"""Bad input of the citation functions: each error names the value (issue 22's list)."""

from __future__ import annotations

import json
import re

import pytest

import hooklab
from hooklab.cite import calibrate_cti
from hooklab.cite.evaluate import evaluate_citations

DOCS = ["Anna lives in Rome.", "Ben lives in Oslo."]
GOOD = {"question": "Ben lives in?", "documents": DOCS, "answer": "Ben lives in Oslo.",
        "gold_documents": [[1]]}  # fmt: skip


@pytest.fixture(scope="module")
def toy_rag():
    return hooklab.load("toy-rag", device="cpu")


@pytest.mark.parametrize("run", ["evaluate", "calibrate"])
@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"gold_documents": [[2]]}, r"examples\[1\]: gold_documents\[0\] holds the document id 2, "
                                    r"out of range: ids are 0-based, 0..1 for 2 documents"),
        ({"gold_documents": [[True]]}, "document id True, out of range"),
        ({"documents": []}, r"examples\[1\]: 'documents' must be a non-empty list"),
        ({"documents": ["Anna.", ""]}, r"documents\[1\] must be a non-empty string, got ''"),
        ({"answer": "Ben. Oslo."}, "has 2 sentences but 'gold_documents' has 1 entries"),
    ],
)  # fmt: skip
def test_examples_checked_before_any_model_run(toy_rag, run, bad, match, monkeypatch):
    from hooklab.cite import calibrate, evaluate

    def refuse(*args, **kwargs):
        raise AssertionError("a model ran before the examples were checked")

    monkeypatch.setattr(calibrate, "cite", refuse)
    monkeypatch.setattr(evaluate, "cite", refuse)
    rows = [GOOD, {**GOOD, **bad}]
    fn = evaluate_citations if run == "evaluate" else calibrate_cti
    with pytest.raises(ValueError, match=match):
        fn(toy_rag, rows)


def test_calibrate_needs_examples(toy_rag):
    with pytest.raises(ValueError, match="examples is empty"):
        calibrate_cti(toy_rag, [])
    with pytest.raises(ValueError, match="at least 2 examples"):
        calibrate_cti(toy_rag, [GOOD])
    with pytest.raises(ValueError, match=r"heldout_fraction must be in \(0, 1\), got 0.0"):
        calibrate_cti(toy_rag, [GOOD, GOOD], heldout_fraction=0.0)


@pytest.mark.parametrize(
    ("documents", "answer", "match"),
    [
        (["Anna lives in Rome.", ""], None, r"documents\[1\] is empty \(''\)"),
        (["Anna lives in Rome.\nBen."], None, r"documents\[0\] contains the document separator"),
        (DOCS, "Ben lives in Oslo. " * 40, "more than the model's window of 128"),
    ],
)
def test_cli_bad_documents_name_the_value(documents, answer, match, capsys):
    from hooklab.cli import main

    argv = ["cite", "--question", "Ben lives in?", "--documents", json.dumps(documents)]
    assert main(argv + (["--answer", answer] if answer else [])) == 2
    assert re.search(match, capsys.readouterr().err)


def test_cli_calibrate_empty_file(tmp_path, capsys):
    from hooklab.cli import main

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["calibrate-cti", str(empty)]) == 2
    assert "no examples (the file is empty)" in capsys.readouterr().err
    assert main(["calibrate-cti", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err
