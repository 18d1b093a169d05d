"""hooklab.cite.dataset: citations over a JSONL file, resumable, with metrics against gold."""

from __future__ import annotations

import json

import pytest

import hooklab
from hooklab.cite import CitationResult
from hooklab.cite import dataset as cite_dataset
from hooklab.cite.evaluate import evaluate_citations
from hooklab.toy_rag import EVAL_EXAMPLES


@pytest.fixture(scope="module")
def toy_rag():
    return hooklab.load("toy-rag", device="cpu")


@pytest.fixture(scope="module")
def rows():
    return [json.loads(x) for x in EVAL_EXAMPLES.read_text().splitlines()[:4]]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_metrics_equal_evaluate_citations(toy_rag, rows, tmp_path):
    unannotated = {"question": rows[0]["question"], "documents": rows[0]["documents"], "id": "x"}
    bad = {**rows[1], "gold_documents": [[9]] * len(rows[1]["gold_documents"])}
    data = _write(tmp_path / "in.jsonl", [*rows, unannotated, bad])
    out = tmp_path / "out.jsonl"
    summary = cite_dataset.run_dataset(toy_rag, data, out, show_progress=False, log=lambda m: None)
    assert (summary["examples"], summary["succeeded"], summary["annotated"]) == (6, 5, 4)
    (error,) = summary["errors"]
    assert error["line"] == 6 and "document id 9, out of range" in error["error"]
    table = evaluate_citations(toy_rag, rows, methods=("cite",))
    for key in ("sentences", "agreement", "precision", "recall", "f1"):
        assert summary["metrics"][key] == pytest.approx(table.loc["cite", key]), key
    records = {r["line"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert records[5]["id"] == "x" and "scores" not in records[5]  # generated, no gold
    results = cite_dataset.load_results(out)
    assert sorted(results) == [1, 2, 3, 4, 5]
    one = hooklab.cite(toy_rag, rows[2]["question"], rows[2]["documents"], answer=rows[2]["answer"])
    assert results[3] == one  # the record reads back as the one-example result
    assert records[3]["citations"] == one.citations
    assert json.loads(out.with_name("out.jsonl.summary.json").read_text()) == summary


def test_resume_does_not_recompute_finished_lines(toy_rag, rows, tmp_path, monkeypatch):
    data = _write(tmp_path / "in.jsonl", rows)
    reference = tmp_path / "reference.jsonl"
    cite_dataset.run_dataset(toy_rag, data, reference, show_progress=False)
    # a run killed after two records, in the middle of writing the third
    out = tmp_path / "out.jsonl"
    done = reference.read_text().splitlines()
    out.write_text(done[0] + "\n" + done[1] + "\n" + done[2][:40])
    settings = reference.with_name("reference.jsonl.settings.json")
    out.with_name("out.jsonl.settings.json").write_text(settings.read_text())
    calls = []
    real = cite_dataset.cite
    monkeypatch.setattr(cite_dataset, "cite", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    summary = cite_dataset.run_dataset(toy_rag, data, out, show_progress=False)
    assert calls == [rows[2]["question"], rows[3]["question"]]  # only the unfinished lines
    assert out.read_text() == reference.read_text()
    assert summary["succeeded"] == 4
    with pytest.raises(ValueError, match="other settings"):
        cite_dataset.run_dataset(toy_rag, data, out, show_progress=False, max_citations=1)


def test_cli_dataset_mode(rows, tmp_path, capsys):
    from hooklab.cli import main

    data = _write(tmp_path / "in.jsonl", rows[:2])
    out = tmp_path / "out.jsonl"
    args = ["cite", "--input", str(data), "--output", str(out), "--device", "cpu"]
    assert main([*args, "--show_progress", "false"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["succeeded"] == 2 and set(summary["metrics"]) >= {"agreement", "f1"}
    assert all(isinstance(r, CitationResult) for r in cite_dataset.load_results(out).values())
    assert main([*args, "--question", "Ben?"]) == 2
    assert "--question: for one example only" in capsys.readouterr().err
