"""Dataset mode survives SIGKILL: kill a run 5 times at different moments, resume, compare."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hooklab.pecore import PecoreOptions
from hooklab.pecore.dataset import run_dataset

ROOT = Path(__file__).resolve().parents[1]
RUN = """
import sys
import torch
torch.set_num_threads(1)  # as in the test process (conftest), so results match bit for bit
import hooklab
from hooklab.pecore import PecoreOptions
from hooklab.pecore.dataset import run_dataset
model = hooklab.load(sys.argv[1], device="cpu")
run_dataset(model, sys.argv[2], sys.argv[3], PecoreOptions(), batch_size=1, show_progress=False)
"""


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _records(path: Path) -> dict[int, dict]:
    records = [json.loads(x) for x in _lines(path)]
    lines = [r["line"] for r in records]
    assert len(lines) == len(set(lines)), f"duplicated records: {sorted(lines)}"
    return {r["line"]: r for r in records}


def _start(model_dir, data, out) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    args = [sys.executable, "-c", RUN, str(model_dir), str(data), str(out)]
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_killed_runs_resume_without_loss_or_duplicates(gpt2, gpt2_dir, tmp_path):
    base = {
        "input_context_text": "George was sick yesterday.",
        "input_current_text": "His colleagues asked him",
        "output_current_text": "to come to the hospital.",
    }
    currents = ["His colleagues asked him", "Her friends told her", "They asked him", "We saw"]
    examples = [{**base, "input_current_text": f"{currents[i % 4]} ({i})"} for i in range(40)]
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(e) + "\n" for e in examples))
    reference = tmp_path / "reference.jsonl"
    run_dataset(gpt2, data, reference, PecoreOptions(), batch_size=1, show_progress=False)

    out = tmp_path / "out.jsonl"
    kills = 0
    for wait_for in (0, 3, 9, 17, 26):  # kill before the first record, then at later points
        proc = _start(gpt2_dir, data, out)
        deadline = time.monotonic() + 60
        while len(_lines(out)) < wait_for and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        if proc.poll() is not None:
            pytest.fail(f"the run ended before it could be killed: {proc.stderr.read()[-500:]}")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        _records(out)  # no duplicates so far
    # a crash in the middle of a write: half a record at the end of the file
    done = _lines(out)
    with open(out, "a") as f:
        f.write(json.dumps({"line": 999, "partial": True})[:17])
    proc = _start(gpt2_dir, data, out)
    assert proc.wait(timeout=120) == 0, proc.stderr.read()[-800:]
    assert kills == 5 and len(done) < 40
    got, expected = _records(out), _records(reference)
    assert sorted(got) == list(range(1, 41))  # nothing lost, nothing duplicated
    assert got == expected  # the same records as one uninterrupted run
