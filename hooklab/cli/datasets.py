"""Dataset mode of the commands: a JSONL file in, one record per line out, under torchrun too.

:func:`check_dataset_flags` runs before any model work; :func:`run_on_ranks` joins the torchrun
job (if any), loads the model on this process's device (``cuda:LOCAL_RANK`` when CUDA is
available and ``--device`` is not given), runs this rank's shard and, on rank 0, prints the
summary of the merged output (:mod:`hooklab.jsonl_runs`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hooklab.cli.args import UsageError


def check_dataset_flags(
    input: str | None,
    output: str | None,
    batch_size: int,
    one_example: dict[str, Any] | None = None,
) -> None:
    """UsageError unless ``--input`` is a file, ``--output`` a file name, the batch size a
    positive int and no flag of ``one_example`` (a flag of the one-example mode) is given."""
    given = [flag for flag, value in (one_example or {}).items() if value is not None]
    if given:
        raise UsageError(
            f"{', '.join(given)}: for one example only; with --input each line gives its own."
        )
    if input is None or output is None:
        raise UsageError("The dataset mode needs both --input (a JSONL file) and --output.")
    if not Path(input).is_file():
        raise UsageError(f"--input {input!r} is not a file.")
    if isinstance(batch_size, bool) or batch_size < 1:
        raise UsageError(f"--batch_size must be a positive int, got {batch_size!r}.")
    if Path(output).is_dir():
        raise UsageError(f"--output {output!r} is a directory; give a file name.")


def log(message: str) -> None:
    """Skipped lines and other notes of a run go to stderr."""
    print(message, file=sys.stderr)


def run_on_ranks(
    model_name_or_path: str,
    device: str | None,
    dtype: str | None,
    run: Callable[[Any, int, int], dict[str, Any]],
) -> None:
    """Load the model and call ``run(model, rank, world_size)`` on every process of the job.

    Rank 0 prints the summary ``run`` returns (the merged output's).
    """
    import hooklab
    from hooklab import distributed

    with distributed.process_group() as (rank, world_size):
        if world_size > 1 and device is None:
            device = str(distributed.local_device())
        model = hooklab.load(model_name_or_path, device=device, dtype=dtype)
        summary = run(model, rank, world_size)
    if rank == 0:
        print(json.dumps(summary, indent=2))


def attribute_dataset(
    model_name_or_path: str,
    input: str,
    output: str,
    *,
    device: str | None,
    dtype: str | None,
    batch_size: int,
    show_progress: bool,
    restart: bool,
    **options: Any,
) -> None:
    """``hooklab attribute --input X.jsonl --output Y.jsonl``: attribute every line
    (:mod:`hooklab.attribute_dataset`); ``options`` go to its ``run_dataset``."""
    from hooklab.attribute_dataset import run_dataset

    def run(model, rank: int, world_size: int) -> dict[str, Any]:
        return run_dataset(
            model, input, output, batch_size=batch_size, show_progress=show_progress and rank == 0,
            restart=restart, log=log, rank=rank, world_size=world_size, **options,
        )  # fmt: skip

    run_on_ranks(model_name_or_path, device, dtype, run)
