"""Dataset modes survive SIGKILL: kill a run 5 times at different moments, resume, compare."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.dataset_cases import KINDS, examples, finish, kill, run_in_process, start, write


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _records(path: Path) -> dict[int, dict]:
    """The complete records (a kill inside the kernel's copy of a long record can leave half
    a last line, which the next run cuts off; the test below writes one itself)."""
    text = path.read_text() if path.exists() else ""
    records = [json.loads(x) for x in text[: text.rfind("\n") + 1].splitlines()]
    lines = [r["line"] for r in records]
    assert len(lines) == len(set(lines)), f"duplicated records: {sorted(lines)}"
    return {r["line"]: r for r in records}


@pytest.mark.parametrize("kind", KINDS)
def test_killed_runs_resume_without_loss_or_duplicates(kind, gpt2, gpt2_dir, tmp_path):
    data = write(tmp_path / "in.jsonl", examples(kind, 40))
    reference = tmp_path / "reference.jsonl"
    run_in_process(kind, gpt2, data, reference)

    out = tmp_path / "out.jsonl"
    kills = 0
    for wait_for in (0, 3, 9, 17, 26):  # kill before the first record, then at later points
        proc = start(kind, tmp_path, gpt2_dir, data, out)
        deadline = time.monotonic() + 60
        while len(_lines(out)) < wait_for and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        if proc.poll() is not None:
            pytest.fail(f"the run ended before it could be killed: {proc.stdout.read()[-500:]}")
        kill(proc)
        kills += 1
        _records(out)  # no duplicates so far
    # a crash in the middle of a write: half a record at the end of the file
    done = _lines(out)
    with open(out, "a") as f:
        f.write(json.dumps({"line": 999, "partial": True})[:17])
    finish(start(kind, tmp_path, gpt2_dir, data, out))
    assert kills == 5 and len(done) < 40
    assert out.read_text().endswith("\n")
    got, expected = _records(out), _records(reference)
    assert sorted(got) == list(range(1, 41))  # nothing lost, nothing duplicated
    assert got == expected  # the same records as one uninterrupted run
