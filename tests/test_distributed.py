"""Data-parallel dataset runs: shard assignment, the merge, and real 2-process torchrun jobs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from hooklab import distributed
from hooklab.pecore import PecoreOptions
from hooklab.pecore.dataset import run_dataset
from tests.dataset_cases import KINDS, examples, finish, kill, records, run_in_process, start, write


@pytest.fixture(scope="module", params=KINDS)
def reference(request, gpt2, tmp_path_factory):
    """A dataset mode, 20 examples and their single-process output."""
    kind = request.param
    tmp = tmp_path_factory.mktemp(f"reference-{kind}")
    data = write(tmp / "in.jsonl", examples(kind, 20))
    out = tmp / "reference.jsonl"
    run_in_process(kind, gpt2, data, out)
    return kind, data, out


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
    data = write(tmp_path / "in.jsonl", examples("pecore", 2))
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
    assert [r["line"] for r in records(out)] == [1, 2, 3, 4]
    assert not distributed.part_path(out, 0, 2).exists()


def test_torchrun_two_ranks_equals_one_process(reference, gpt2_dir, tmp_path):
    kind, data, expected = reference
    out = tmp_path / "out.jsonl"
    finish(start(kind, tmp_path, gpt2_dir, data, out, nproc=2))
    assert out.read_text() == expected.read_text()  # byte for byte: same records, same order
    assert not list(tmp_path.glob("out.jsonl.rank*"))
    assert json.loads((tmp_path / "out.jsonl.summary.json").read_text())["examples"] == 20


def test_torchrun_killed_midway_resumes_without_loss_or_duplicates(reference, gpt2_dir, tmp_path):
    kind, data, expected = reference
    out = tmp_path / "out.jsonl"
    parts = [distributed.part_path(out, r, 2) for r in range(2)]
    proc = start(kind, tmp_path, gpt2_dir, data, out, nproc=2)
    deadline = time.monotonic() + 90

    def written() -> list[int]:
        return [len(p.read_text().splitlines()) if p.exists() else 0 for p in parts]

    while min(written()) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    if proc.poll() is not None:
        pytest.fail(f"the job ended before it could be killed: {proc.stdout.read()[-800:]}")
    kill(proc)  # torchrun and both ranks, mid-record or not
    before = written()
    assert min(before) >= 2 and sum(before) < 20 and not out.exists()
    finish(start(kind, tmp_path, gpt2_dir, data, out, nproc=2))
    assert out.read_text() == expected.read_text()
