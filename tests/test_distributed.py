"""Data-parallel dataset runs: shard assignment, the merge, and real 2-process torchrun jobs."""

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

from hooklab import distributed
from hooklab.pecore import PecoreOptions
from hooklab.pecore.dataset import run_dataset

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).with_name("torchrun")
CHILD = """
import sys
import torch
torch.set_num_threads(1)  # as in the test process (conftest), so results match bit for bit
import hooklab
from hooklab import distributed
from hooklab.pecore import PecoreOptions
from hooklab.pecore.dataset import run_dataset
with distributed.process_group() as (rank, world_size):
    model = hooklab.load(sys.argv[1], device="cpu")
    run_dataset(model, sys.argv[2], sys.argv[3], PecoreOptions(), batch_size=1,
                show_progress=False, rank=rank, world_size=world_size)
"""


def _examples(n: int) -> list[dict]:
    base = {
        "input_context_text": "George was sick yesterday.",
        "output_current_text": "to come to the hospital.",
    }
    currents = ["His colleagues asked him", "Her friends told her", "They asked him", "We saw"]
    return [{**base, "input_current_text": f"{currents[i % 4]} ({i})"} for i in range(n)]


def _write(path: Path, examples: list[dict]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in examples))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(tmp_path, model_dir, data, out) -> subprocess.Popen:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    args = [str(TORCHRUN), "--nproc_per_node", "2", "--master_port", str(_free_port())]
    args += [str(script), str(model_dir), str(data), str(out)]
    return subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )


def _records(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _finish(proc: subprocess.Popen, timeout: float = 120) -> None:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    assert proc.returncode == 0, out.decode()[-6000:]


@pytest.fixture(scope="module")
def reference(gpt2, tmp_path_factory):
    """20 forced examples and their single-process output."""
    tmp = tmp_path_factory.mktemp("reference")
    data = _write(tmp / "in.jsonl", _examples(20))
    out = tmp / "reference.jsonl"
    run_dataset(gpt2, data, out, PecoreOptions(), batch_size=1, show_progress=False)
    return data, out


def test_shards_partition_the_lines():
    lines = range(1, 24)
    shards = [[n for n in lines if distributed.owns(n, r, 3)] for r in range(3)]
    assert sorted(n for shard in shards for n in shard) == list(lines)
    assert shards[0][:3] == [1, 4, 7] and shards[2][:2] == [3, 6]
    assert distributed.part_path("/a/out.jsonl", 1, 4) == Path("/a/out.jsonl.rank1-of-4")
    with pytest.raises(ValueError, match="0 <= rank < world_size"):
        distributed.check_rank(2, 2)


def test_world_reads_the_torchrun_environment(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert distributed.world() == (1, 3)
    monkeypatch.setenv("RANK", "3")
    with pytest.raises(ValueError, match="RANK=3 and WORLD_SIZE=3"):
        distributed.world()
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    assert distributed.world() == (0, 1)


def test_world_size_without_process_group_is_an_error(gpt2, tmp_path):
    data = _write(tmp_path / "in.jsonl", _examples(2))
    with pytest.raises(ValueError, match="launch with torchrun"):
        run_dataset(gpt2, data, tmp_path / "o.jsonl", PecoreOptions(), world_size=2, rank=1)


def _part(out: Path, rank: int, lines: list[int]) -> None:
    path = distributed.part_path(out, rank, 2)
    path.write_text("".join(json.dumps({"line": n, "x": n}) + "\n" for n in lines))


def test_merge_orders_and_refuses_missing_or_duplicated_lines(tmp_path):
    out = tmp_path / "out.jsonl"
    _part(out, 0, [1, 3])
    _part(out, 1, [2])
    with pytest.raises(ValueError, match=r"lines \[4\] have no record"):
        distributed.merge(out, 2, [1, 2, 3, 4])
    assert not out.exists()
    _part(out, 1, [2, 4, 2])
    with pytest.raises(ValueError, match="line 2 is in both"):
        distributed.merge(out, 2, [1, 2, 3, 4])
    _part(out, 1, [2, 4, 3])
    with pytest.raises(ValueError, match="line 3 is in both"):
        distributed.merge(out, 2, [1, 2, 3, 4])
    _part(out, 0, [1, 3])
    _part(out, 1, [4, 2])
    distributed.merge(out, 2, [1, 2, 3, 4])
    assert [r["line"] for r in _records(out)] == [1, 2, 3, 4]
    assert not distributed.part_path(out, 0, 2).exists()


def test_torchrun_two_ranks_equals_one_process(reference, gpt2_dir, tmp_path):
    data, expected = reference
    out = tmp_path / "out.jsonl"
    _finish(_torchrun(tmp_path, gpt2_dir, data, out))
    assert out.read_text() == expected.read_text()  # byte for byte: same records, same order
    assert not list(tmp_path.glob("out.jsonl.rank*"))
    assert json.loads((tmp_path / "out.jsonl.summary.json").read_text())["examples"] == 20


def test_torchrun_killed_midway_resumes_without_loss_or_duplicates(reference, gpt2_dir, tmp_path):
    data, expected = reference
    out = tmp_path / "out.jsonl"
    parts = [distributed.part_path(out, r, 2) for r in range(2)]
    proc = _torchrun(tmp_path, gpt2_dir, data, out)
    deadline = time.monotonic() + 90

    def written() -> list[int]:
        return [len(p.read_text().splitlines()) if p.exists() else 0 for p in parts]

    while min(written()) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    if proc.poll() is not None:
        pytest.fail(f"the job ended before it could be killed: {proc.stdout.read()[-800:]}")
    os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both ranks, mid-record or not
    proc.wait()
    before = written()
    assert min(before) >= 2 and sum(before) < 20 and not out.exists()
    _finish(_torchrun(tmp_path, gpt2_dir, data, out))
    assert out.read_text() == expected.read_text()
