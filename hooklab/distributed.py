"""Data parallelism for the dataset modes: ranks, shards, and the merge of their parts.

``torchrun`` launches the processes and sets ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``;
``torch.distributed`` (gloo on CPU, NCCL on GPU) only provides the barrier before the merge.
Rank ``r`` of ``W`` takes the input lines ``n`` with ``(n - 1) % W == r`` and writes them to
``<output>.rank{r}-of-{W}`` in the resumable record format of :mod:`hooklab.jsonl_runs`; rank 0
then merges every part into ``<output>``, ordered by line number, refusing a missing or
duplicated line.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import torch


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"Environment variable {name}={value!r} is not an int.") from None


def world() -> tuple[int, int]:
    """``(rank, world_size)``: from ``torch.distributed`` when initialised, else the
    ``RANK`` / ``WORLD_SIZE`` that torchrun sets, else ``(0, 1)``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    rank, size = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1)
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"RANK={rank} and WORLD_SIZE={size}: need 0 <= RANK < WORLD_SIZE.")
    return rank, size


def local_device() -> torch.device:
    """This process's device: ``cuda:LOCAL_RANK`` when CUDA is available, else CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", _env_int("LOCAL_RANK", 0))
    return torch.device("cpu")


@contextlib.contextmanager
def process_group() -> Iterator[tuple[int, int]]:
    """Join the torchrun job (when ``WORLD_SIZE > 1``) for the block; yield ``(rank, size)``.

    Initialises ``torch.distributed`` from torchrun's environment (NCCL when CUDA is
    available, else gloo) and destroys the group on exit; a group that already exists is used
    and left alone. Outside torchrun it yields ``(0, 1)`` and does nothing.
    """
    import torch.distributed as dist

    rank, size = world()
    if size == 1 or dist.is_initialized():
        yield rank, size
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_device())
    dist.init_process_group(backend=backend, rank=rank, world_size=size)
    try:
        yield dist.get_rank(), dist.get_world_size()
    finally:
        dist.destroy_process_group()


def barrier(world_size: int) -> None:
    """Wait for every rank; ValueError when ``world_size > 1`` but no group is initialised."""
    import torch.distributed as dist

    if world_size == 1:
        return
    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError(
            f"world_size={world_size} needs torch.distributed: launch with torchrun and run "
            "inside hooklab.distributed.process_group()."
        )
    if dist.get_world_size() != world_size:
        raise ValueError(
            f"world_size={world_size} but the process group has {dist.get_world_size()} ranks."
        )
    dist.barrier()


def owns(line: int, rank: int, world_size: int) -> bool:
    """Whether input line ``line`` (1-based) belongs to ``rank``'s shard."""
    return (line - 1) % world_size == rank


def check_rank(rank: int, world_size: int) -> None:
    """ValueError unless ``0 <= rank < world_size`` (both ints)."""
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (rank, world_size))
    if not ints or world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(
            f"rank={rank!r}, world_size={world_size!r}: need ints with 0 <= rank < world_size."
        )


def part_path(output: str | Path, rank: int, world_size: int) -> Path:
    """``<output>.rank{rank}-of-{world_size}``: the part that ``rank`` writes."""
    output = Path(output)
    return output.with_name(f"{output.name}.rank{rank}-of-{world_size}")


def stray_parts(output: str | Path, world_size: int) -> list[Path]:
    """Parts of ``output`` left by a run with another world size (they would be lost)."""
    output = Path(output)
    if not output.parent.is_dir():
        return []
    mine = {part_path(output, r, world_size).name for r in range(world_size)}
    return sorted(
        p
        for p in output.parent.glob(f"{output.name}.rank*-of-*")
        if p.name not in mine and not p.name.endswith(".settings.json")
    )


def _read_records(path: Path) -> list[tuple[int, str]]:
    """``(line, text)`` of each complete record of a part or output file."""
    if not path.exists():
        return []
    data = path.read_text(encoding="utf-8")
    data = data[: data.rfind("\n") + 1]  # a half-written last record is not a record
    return [(int(json.loads(x)["line"]), x) for x in data.splitlines() if x.strip()]


def merge(output: str | Path, world_size: int, lines: list[int]) -> Path:
    """Merge the parts of ``output`` (and any records already in it) into ``output``.

    The result holds one record per input line in ``lines``, ordered by line number, written
    atomically; the parts are then removed. Nothing is written when a line is missing, appears
    twice, or sits in another rank's part: ValueError names the lines and the files.
    """
    output = Path(output)
    sources = [output] + [part_path(output, r, world_size) for r in range(world_size)]
    seen: dict[int, Path] = {}
    records: dict[int, str] = {}
    problems = []
    for k, path in enumerate(sources):
        for n, text in _read_records(path):
            if n in seen:
                problems.append(f"line {n} is in both {seen[n].name} and {path.name}")
                continue
            if k > 0 and not owns(n, k - 1, world_size):
                problems.append(f"line {n} is in {path.name}, not its rank's part")
            seen[n], records[n] = path, text
    missing = sorted(set(lines) - set(records))
    extra = sorted(set(records) - set(lines))
    if missing:
        problems.append(f"lines {missing[:20]} have no record (rerun to finish them)")
    if extra:
        problems.append(f"lines {extra[:20]} are not input lines")
    if problems:
        raise ValueError(
            f"Cannot merge the parts of {str(output)!r}: {'; '.join(problems[:10])}. "
            "Nothing was written. Rerun the same command to finish missing lines; remove "
            "stray or duplicated records (or rerun with --restart)."
        )
    from hooklab.output.io import atomic_write

    text = "".join(records[n] + "\n" for n in sorted(records))
    atomic_write(output, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), overwrite=True)
    for path in sources[1:]:
        path.unlink(missing_ok=True)
    return output
