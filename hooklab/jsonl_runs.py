"""Resumable JSONL dataset runs: one output record per input line, data-parallel under torchrun.

The engine of the dataset modes (PECoRe: :mod:`hooklab.pecore.dataset`; attribution:
:mod:`hooklab.attribute_dataset`). A :class:`DatasetTask` says what a line may hold, which
lines run together in one batch and how a batch becomes records; this module does the rest:

- Input: one JSON object per non-blank line. A line that is not JSON, not an object, has an
  unknown key or a bad field becomes the record ``{"line": n, "error": "line n: ..."}`` (the
  message names the line and the field) and is logged; the run goes on.
- Output: one record per input line, ``{"line": n, ...}`` (1-based input line number; an input
  ``id`` is copied), in order of completion. Each record is written with one ``write``
  system call (a killed process leaves whole records: what reached the kernel survives it),
  and each batch is fsynced (a machine crash loses at most the batch in flight). A rerun
  skips every line already in the output (a half-written last line from a crash is cut off
  first), so a killed run resumes without losing or duplicating records.
- Settings: ``<output>.settings.json`` holds what the records depend on (the model, the
  options); resuming with other settings is refused unless ``restart`` (which discards the
  output). ``<output>.summary.json`` holds the counts and the errors.
- Data parallel (``world_size > 1``, every rank inside
  :func:`hooklab.distributed.process_group`): rank ``r`` runs its shard into its own part
  (:mod:`hooklab.distributed`), resumable the same way; after a barrier rank 0 merges the parts
  into the output in line order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from hooklab import distributed
from hooklab.budget import check_positive

#: ``(line number, example or None, error message or None)`` for each non-blank input line
Item = tuple[int, dict[str, Any] | None, str | None]


@dataclass(frozen=True)
class DatasetTask:
    """What a dataset run does with its lines.

    Attributes:
        kind: the run's name in messages and the progress bar, e.g. ``"PECoRe dataset"``.
        keys: the keys an input line may hold (``id`` is always allowed).
        check: the problem with a parsed line, naming the field (e.g. ``"'prompt' must be a
            non-empty string, got 3"``), or None when it is fine.
        group: lines whose keys are equal run in one batch (may raise: the line's error).
        run: the records of a batch of ``(line, example)`` (without ``line`` and ``id``; in
            order). When it raises, each line of the batch is run alone.
        settings: what the records depend on (JSON-friendly), e.g. model and options.
        summary: extra fields of the summary from the successful records (optional).
    """

    kind: str
    keys: Collection[str]
    check: Callable[[dict[str, Any]], str | None]
    group: Callable[[dict[str, Any]], str]
    run: Callable[[list[tuple[int, dict[str, Any]]]], list[dict[str, Any]]]
    settings: dict[str, Any]
    summary: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None


# ---- input -------------------------------------------------------------------------------------
def read_examples(path: str | Path, task: DatasetTask) -> Iterator[Item]:
    """Yield ``(line_number, example, error)`` for each non-blank line of a JSONL file."""
    return parse_lines(path, task.keys, task.check)


def parse_lines(
    path: str | Path, keys: Collection[str], check: Callable[[dict[str, Any]], str | None]
) -> Iterator[Item]:
    """Yield ``(line_number, example, error)`` for each non-blank line of a JSONL file: the
    error names the line and what is wrong (not JSON, not an object, a key outside ``keys``
    and ``id``, or ``check``'s problem)."""
    allowed = {*keys, "id"}
    with open(path, encoding="utf-8") as f:
        for n, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                ex = json.loads(raw)
            except json.JSONDecodeError as err:
                yield n, None, f"line {n}: not valid JSON ({err.msg} at column {err.colno})"
                continue
            if not isinstance(ex, dict):
                yield n, None, f"line {n}: expected a JSON object, got {type(ex).__name__}"
                continue
            unknown = sorted(set(ex) - allowed)
            problem = check(ex) if not unknown else None
            if unknown:
                yield n, None, f"line {n}: unknown keys {unknown}; valid keys: {sorted(allowed)}"
            elif problem:
                yield n, None, f"line {n}: {problem}"
            else:
                yield n, ex, None


# ---- output ------------------------------------------------------------------------------------
def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The complete records of an output (or part) file, in file order."""
    data = Path(path).read_text(encoding="utf-8")
    data = data[: data.rfind("\n") + 1]  # a half-written last record is not a record
    return [json.loads(x) for x in data.splitlines() if x.strip()]


def finished_lines(path: str | Path, kind: str = "dataset") -> set[int]:
    """Line numbers already in the output; cuts off a half-written last record.

    Every complete line must be a record of a dataset run (a JSON object with an int
    ``line``); otherwise nothing is changed and ValueError names the file and the line, so that
    an unrelated file given as output is reported, never truncated or appended to.
    """
    path = Path(path)
    if not path.exists():
        return set()
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1
    done = set()
    for k, raw in enumerate(data[:keep].splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            done.add(int(json.loads(raw)["line"]))
        except (ValueError, KeyError, TypeError):
            raise ValueError(
                f"The output file {str(path)!r} already exists and its line {k} is not a "
                f"{kind} record (a JSON object with a 'line' number). Pass another --output, "
                "or move that file away; it is left untouched."
            ) from None
    if keep < len(data):  # a crash mid-write left a partial last line: cut it off
        with open(path, "r+b") as f:
            f.truncate(keep)
    return done


def _append(fd: int, record: dict[str, Any]) -> None:
    """Append ``record`` as one line with one ``write`` system call (unbuffered: a killed
    process leaves whole records, barring a kill inside the kernel's copy)."""
    data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    while data:
        data = data[os.write(fd, data) :]


def check_settings(path: Path, settings: dict[str, Any], restart: bool) -> None:
    """Write the run's settings next to the output, or refuse a resume with other settings."""
    if path.exists() and not restart:
        try:
            before = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ValueError(f"Cannot read the run settings {str(path)!r}: {err}.") from None
        if before != settings:
            changed = sorted(
                f"{part}.{k}"
                for part in {*before, *settings}
                for k in {*(before.get(part) or {}), *(settings.get(part) or {})}
                if (before.get(part) or {}).get(k) != (settings.get(part) or {}).get(k)
            )
            raise ValueError(
                f"The output was started with other settings ({', '.join(changed) or 'format'} "
                f"differ; see {str(path)!r}). Resume with the same settings, choose another "
                "output, or pass restart=True (--restart) to discard it and start over."
            )
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)


def summarize(output_path: str | Path, task: DatasetTask, *, write: bool = True) -> dict:
    """Counts and errors of an output file (and the task's extra fields); write
    ``<output>.summary.json``."""
    output_path = Path(output_path)
    records = read_records(output_path)
    ok = [r for r in records if "error" not in r]
    summary = {
        "examples": len(records),
        "succeeded": len(ok),
        "errors": [{"line": r["line"], "error": r["error"]} for r in records if "error" in r],
        **(task.summary(ok) if task.summary else {}),
    }
    if write:
        path = output_path.with_name(output_path.name + ".summary.json")
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
    return summary


# ---- the run -----------------------------------------------------------------------------------
def _check_paths(input_path: Path, output_path: Path) -> None:
    if not input_path.is_file():
        raise FileNotFoundError(f"No input file {str(input_path)!r}; pass a JSONL file.")
    if output_path.resolve() == input_path.resolve() or (
        output_path.exists() and os.path.samefile(output_path, input_path)
    ):
        raise ValueError(
            f"The output {str(output_path)!r} is the input file; pass a different --output "
            "(the input is never written to)."
        )


def run(
    task: DatasetTask,
    input_path: str | Path,
    output_path: str | Path,
    *,
    batch_size: int = 16,
    show_progress: bool = True,
    restart: bool = False,
    log: Callable[[str], Any] = print,
    rank: int = 0,
    world_size: int = 1,
) -> dict[str, Any]:
    """Run ``task`` on every line of ``input_path``, appending records to ``output_path``.

    See the module docstring for the files written and how a run resumes.

    Returns:
        The summary (also written as ``<output>.summary.json``; on ranks other than 0 the
        summary of this rank's part, not written).
    """
    check_positive("batch_size", batch_size)
    distributed.check_rank(rank, world_size)
    input_path, output_path = Path(input_path), Path(output_path)
    _check_paths(input_path, output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    settings_path = output_path.with_name(output_path.name + ".settings.json")
    part = distributed.part_path(output_path, rank, world_size) if world_size > 1 else None
    if restart:
        mine = [part] if part is not None else []
        for path in mine + ([output_path] if rank == 0 else []):
            if path.exists():
                finished_lines(path, task.kind)  # refuses to discard a file that is not ours
                path.unlink()
        if rank == 0 and part is not None:
            for path in distributed.stray_parts(output_path, world_size):
                path.unlink()
        done = finished_lines(part, task.kind) if part is not None else set()
    else:
        stray = distributed.stray_parts(output_path, world_size) if part is not None else []
        if stray:
            raise ValueError(
                f"Parts of a run with another number of processes exist: "
                f"{[p.name for p in stray]}. Rerun with that world size to finish it, or pass "
                "restart=True (--restart) to discard them and start over."
            )
        done = finished_lines(output_path, task.kind)
        done |= finished_lines(part, task.kind) if part is not None else set()
    check_settings(settings_path, task.settings, restart)
    examples = list(read_examples(input_path, task))
    todo = [
        item
        for item in examples
        if distributed.owns(item[0], rank, world_size) and item[0] not in done
    ]
    _run_lines(task, todo, part or output_path, batch_size, show_progress, log)
    if part is None:
        return summarize(output_path, task)
    # summarise this rank's part before the barrier: after it, rank 0 merges and removes parts
    own = summarize(part, task, write=False)  # _run_lines always creates the part
    distributed.barrier(world_size)
    if rank != 0:
        return own
    distributed.merge(output_path, world_size, [item[0] for item in examples])
    return summarize(output_path, task)


def _run_lines(task, todo: list[Item], path: Path, batch_size, show_progress, log) -> None:
    """Run ``todo`` (items of :func:`read_examples`), appending records to ``path``."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    bar = tqdm(total=len(todo), desc=task.kind, disable=not show_progress)
    try:
        for lo in range(0, len(todo), batch_size):
            chunk = todo[lo : lo + batch_size]
            for n, _, error in [c for c in chunk if c[2] is not None]:
                log(f"skipping {error}")
                _append(fd, {"line": n, "error": error})
            good = [(n, ex) for n, ex, err in chunk if err is None]
            for record in _run_chunk(task, good, log):
                _append(fd, record)
            os.fsync(fd)  # once per batch: on disk even if the machine goes down
            bar.update(len(chunk))
    finally:
        bar.close()
        os.close(fd)


def _error(n: int, err: Exception) -> dict[str, Any]:
    return {"line": n, "error": f"line {n}: {type(err).__name__}: {err}"}


def _records(task: DatasetTask, items: list[tuple[int, dict]]) -> list[dict[str, Any]]:
    """The records of ``items`` run as one batch: ``line``, the task's fields, ``id``."""
    bodies = task.run(items)
    if len(bodies) != len(items):
        raise ValueError(f"{task.kind}: {len(bodies)} records for {len(items)} lines.")
    return [
        {"line": n, **body, **({"id": ex["id"]} if "id" in ex else {})}
        for (n, ex), body in zip(items, bodies)
    ]


def _run_chunk(task: DatasetTask, good, log) -> Iterator[dict[str, Any]]:
    """Run the lines of each group as one batch; isolate failures one by one.

    Any exception raised for an example (bad texts or options, a method that cannot run, gold
    annotations that do not fit) becomes its line's error record; the run goes on.
    """
    groups: dict[str, list[tuple[int, dict]]] = {}
    for n, ex in good:
        try:
            key = task.group(ex)
        except Exception as err:
            log(f"skipping line {n}: {err}")
            yield _error(n, err)
            continue
        groups.setdefault(key, []).append((n, ex))
    for items in groups.values():
        try:
            records = _records(task, items)
        except Exception:
            records = None
        if records is not None:
            yield from records
            continue
        for n, ex in items:
            try:
                yield from _records(task, [(n, ex)])
            except Exception as err:
                log(f"skipping line {n}: {err}")
                yield _error(n, err)
