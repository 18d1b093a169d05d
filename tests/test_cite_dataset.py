"""hooklab.cite.dataset: citations over a JSONL file, resumable, with metrics against gold."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import hooklab
from hooklab.cite import CitationResult
from hooklab.cite import dataset as cite_dataset
from hooklab.cite.evaluate import evaluate_citations
from hooklab.toy_rag import EVAL_EXAMPLES

ROOT = Path(__file__).resolve().parents[1]


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


def _child(args: list[str], nproc: int = 1) -> subprocess.Popen:
    """``hooklab cite`` in a child process: alone, or under ``torchrun --nproc_per_node``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    head = [sys.executable]
    if nproc > 1:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        torchrun = Path(sys.executable).with_name("torchrun")
        head = [str(torchrun), "--nproc_per_node", str(nproc), "--master_port", str(port)]
    return subprocess.Popen(
        [*head, "-m", "hooklab", "cite", "--device", "cpu", "--noshow_progress", *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


def _finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out.decode()[-4000:]
    return out.decode()


def test_killed_run_resumes_and_torchrun_equals_one_process(toy_rag, rows, tmp_path):
    """SIGKILL a command-line run after its first record; the rerun resumes and the output
    equals an uninterrupted in-process run; two torchrun ranks give the same records."""
    more = [json.loads(x) for x in EVAL_EXAMPLES.read_text().splitlines()[:8]]
    data = _write(tmp_path / "in.jsonl", more)
    reference = tmp_path / "reference.jsonl"
    cite_dataset.run_dataset(toy_rag, data, reference, show_progress=False)
    want = {r["line"]: r for r in map(json.loads, reference.read_text().splitlines())}

    out = tmp_path / "out.jsonl"
    proc = _child(["--input", str(data), "--output", str(out)])
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if out.exists() and out.read_text().count("\n") >= 1:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = out.read_text().count("\n")
    assert 1 <= done < len(more)
    _finish(_child(["--input", str(data), "--output", str(out)]))
    got = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(r["line"] for r in got) == list(range(1, len(more) + 1))  # none lost or twice
    assert {r["line"]: r for r in got} == want

    merged = tmp_path / "torchrun.jsonl"
    _finish(_child(["--input", str(data), "--output", str(merged)], nproc=2))
    got = [json.loads(x) for x in merged.read_text().splitlines()]
    assert [r["line"] for r in got] == list(range(1, len(more) + 1))  # merged in line order
    assert {r["line"]: r for r in got} == want
