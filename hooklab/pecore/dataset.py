"""PECoRe over a JSONL dataset: batched, resumable, with plausibility metrics.

Input: one JSON object per line with the per-example texts (``input_context_text``,
``input_current_text``, optional ``output_context_text`` / ``output_current_text``), optional
per-example option overrides (any :class:`PecoreOptions` field, e.g. ``input_template``) and
optional gold annotations: ``gold_context_sensitive`` (indices into ``output_current_tokens``)
or ``gold_context_sensitive_words``, and ``gold_cues`` (indices into ``input_context_tokens``)
or ``gold_cue_words``.

Output: one line per input line, in input order of completion: the example's result (the
``--save_path`` schema of :mod:`hooklab.pecore.result`) plus ``line`` (1-based input line
number) and, with gold annotations, ``metrics``. A malformed or failing line is reported with
its line number and written as ``{"line": n, "error": "..."}``; it is skipped, never silently
dropped. Each record is written with one ``write`` and fsynced, and a rerun skips every line
already in the output (a half-written last line from a crash is cut off first), so a killed
run resumes without losing or duplicating records.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from hooklab import distributed
from hooklab.output.provenance import describe_model, thaw
from hooklab.pecore.core import pecore_batch
from hooklab.pecore.metrics import gold_metrics, mean
from hooklab.pecore.options import PecoreOptions

TEXT_KEYS = (
    "input_context_text",
    "input_current_text",
    "output_context_text",
    "output_current_text",
)
GOLD_KEYS = (
    "gold_context_sensitive",
    "gold_context_sensitive_words",
    "gold_cues",
    "gold_cue_words",
    "gold_output_cues",
    "gold_output_cue_words",
)
META_KEYS = ("id",)


def read_examples(path: str | Path) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """Yield ``(line_number, example, error)`` for each non-blank line of a JSONL file."""
    allowed = {*TEXT_KEYS, *GOLD_KEYS, *META_KEYS, *PecoreOptions.field_names()}
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
            if unknown:
                yield n, None, f"line {n}: unknown keys {unknown}; valid keys: {sorted(allowed)}"
                continue
            missing = [k for k in ("input_context_text", "input_current_text") if not ex.get(k)]
            if missing:
                yield n, None, f"line {n}: missing {missing}"
                continue
            yield n, ex, None


def finished_lines(path: str | Path) -> set[int]:
    """Line numbers already in the output; cuts off a half-written last record.

    Every complete line must be a record of this runner (a JSON object with an int ``line``);
    otherwise nothing is changed and ValueError names the file and the line, so that an
    unrelated file given as output is reported, never truncated or appended to.
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
            record = json.loads(raw)
            done.add(int(record["line"]))
        except (ValueError, KeyError, TypeError):
            raise ValueError(
                f"The output file {str(path)!r} already exists and its line {k} is not a "
                "PECoRe dataset record (a JSON object with a 'line' number). Pass another "
                "--output, or move that file away; it is left untouched."
            ) from None
    if keep < len(data):  # a crash mid-write left a partial last line: cut it off
        with open(path, "r+b") as f:
            f.truncate(keep)
    return done


def _append(f, record: dict[str, Any]) -> None:
    f.write(json.dumps(record, ensure_ascii=False) + "\n")
    f.flush()
    os.fsync(f.fileno())


def _split(ex: dict[str, Any], base: PecoreOptions) -> tuple[dict, PecoreOptions]:
    texts = {k: ex.get(k) for k in TEXT_KEYS}
    overrides = {k: v for k, v in ex.items() if k in PecoreOptions.field_names()}
    return texts, (base.replace(**overrides) if overrides else base)


def _settings(model, options: PecoreOptions) -> dict[str, Any]:
    """What a run's records depend on: the model and the shared options (JSON-friendly)."""
    return {"model": thaw(describe_model(model)), "options": thaw(options.resolved())}


def _check_settings(path: Path, settings: dict[str, Any], restart: bool) -> None:
    """Write the run's settings next to the output, or refuse a resume with other settings."""
    if path.exists() and not restart:
        try:
            before = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ValueError(f"Cannot read the run settings {str(path)!r}: {err}.") from None
        if before != settings:
            changed = sorted(
                f"{part}.{k}"
                for part in ("model", "options")
                for k in {*before.get(part, {}), *settings[part]}
                if before.get(part, {}).get(k) != settings[part].get(k)
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


def run_dataset(
    model,
    input_path: str | Path,
    output_path: str | Path,
    options: PecoreOptions,
    *,
    batch_size: int = 8,
    show_progress: bool = True,
    restart: bool = False,
    log=print,
    rank: int = 0,
    world_size: int = 1,
) -> dict[str, Any]:
    """Run PECoRe on every line of ``input_path``, appending records to ``output_path``.

    The run's settings (model and shared options) are written to ``<output>.settings.json``;
    resuming with other settings is refused unless ``restart`` (which discards the output).
    Any failure of one example becomes that line's error record; the run goes on.

    With ``world_size > 1`` (every rank of a torchrun job calls this inside
    :func:`hooklab.distributed.process_group`) this rank runs its shard into its part, waits
    for the others, and rank 0 merges the parts into ``output_path``.

    Returns:
        A summary: counts, errors (line numbers and messages) and averaged metrics; also
        written next to the output as ``<output>.summary.json`` (on ranks other than 0: the
        summary of this rank's part, not written).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    distributed.check_rank(rank, world_size)
    input_path, output_path = Path(input_path), Path(output_path)
    if not input_path.is_file():
        raise FileNotFoundError(f"No input file {str(input_path)!r}; pass a JSONL file.")
    if output_path.resolve() == input_path.resolve() or (
        output_path.exists() and os.path.samefile(output_path, input_path)
    ):
        raise ValueError(
            f"The output {str(output_path)!r} is the input file; pass a different --output "
            "(the input is never written to)."
        )
    output_path.parent.mkdir(parents=True, exist_ok=True)
    settings_path = output_path.with_name(output_path.name + ".settings.json")
    if world_size > 1:
        return _run_shard(
            model, input_path, output_path, options, settings_path, rank, world_size,
            batch_size=batch_size, show_progress=show_progress, restart=restart, log=log,
        )  # fmt: skip
    if restart and output_path.exists():
        finished_lines(output_path)  # refuses to discard a file that is not ours
        output_path.unlink()
    done = finished_lines(output_path)
    _check_settings(settings_path, _settings(model, options), restart)
    todo = [item for item in read_examples(input_path) if item[0] not in done]
    _run_lines(model, todo, output_path, options, batch_size, show_progress, log)
    return summarize(output_path)


def _run_shard(
    model, input_path, output_path, options, settings_path, rank, world_size, *,
    batch_size, show_progress, restart, log,
) -> dict[str, Any]:  # fmt: skip
    """One rank's part of a data-parallel run, then (rank 0) the merge."""
    part = distributed.part_path(output_path, rank, world_size)
    if restart:
        for path in [part] + ([output_path] if rank == 0 else []):
            if path.exists():
                finished_lines(path)  # refuses to discard a file that is not ours
                path.unlink()
        if rank == 0:
            for path in distributed.stray_parts(output_path, world_size):
                path.unlink()
        done = finished_lines(part)  # output_path may be being removed by rank 0
    else:
        stray = distributed.stray_parts(output_path, world_size)
        if stray:
            raise ValueError(
                f"Parts of a run with another number of processes exist: "
                f"{[p.name for p in stray]}. Rerun with that world size to finish it, or pass "
                "restart=True (--restart) to discard them and start over."
            )
        done = finished_lines(output_path) | finished_lines(part)
    _check_settings(settings_path, _settings(model, options), restart)
    examples = list(read_examples(input_path))
    todo = [
        item
        for item in examples
        if distributed.owns(item[0], rank, world_size) and item[0] not in done
    ]
    _run_lines(model, todo, part, options, batch_size, show_progress, log)
    # summarise this rank's part before the barrier: after it, rank 0 merges and removes parts
    own = summarize(part, write=False)  # _run_lines always creates the part
    distributed.barrier(world_size)
    if rank != 0:
        return own
    distributed.merge(output_path, world_size, [item[0] for item in examples])
    return summarize(output_path)


def _run_lines(model, todo, output_path, options, batch_size, show_progress, log) -> None:
    """Run ``todo`` (items of :func:`read_examples`), appending records to ``output_path``."""
    with open(output_path, "a", encoding="utf-8") as f:
        bar = tqdm(total=len(todo), desc="pecore", disable=not show_progress)
        for lo in range(0, len(todo), batch_size):
            chunk = todo[lo : lo + batch_size]
            for n, _, error in [c for c in chunk if c[2] is not None]:
                log(f"skipping {error}")
                _append(f, {"line": n, "error": error})
            good = [(n, ex) for n, ex, err in chunk if err is None]
            for record in _run_chunk(model, good, options, log):
                _append(f, record)
            bar.update(len(chunk))
        bar.close()


def _error(n: int, err: Exception) -> dict[str, Any]:
    return {"line": n, "error": f"line {n}: {type(err).__name__}: {err}"}


def _record(model, n: int, ex: dict, texts: dict, opts: PecoreOptions, result=None):
    """The output record of line ``n`` (running it alone when ``result`` is None)."""
    if result is None:
        result = pecore_batch(model, [texts], opts)[0]
    record = {"line": n, **result.to_dict()}
    if "id" in ex:
        record["id"] = ex["id"]
    metrics = gold_metrics(result, ex)
    if metrics is not None:
        record["metrics"] = metrics
    return record


def _run_chunk(model, good, options, log) -> Iterator[dict[str, Any]]:
    """Run examples that share options as one batch; isolate failures one by one.

    Any exception raised for an example (bad texts or options, a method that cannot run, gold
    annotations that do not fit) becomes its line's error record; the run goes on.
    """
    groups: dict[str, list] = {}
    parsed = {}
    for n, ex in good:
        try:
            texts, opts = _split(ex, options)
        except Exception as err:
            log(f"skipping line {n}: {err}")
            yield _error(n, err)
            continue
        parsed[n] = (ex, texts, opts)
        overrides = {k: v for k, v in ex.items() if k in PecoreOptions.field_names()}
        groups.setdefault(json.dumps(overrides, sort_keys=True), []).append(n)
    for lines in groups.values():
        opts = parsed[lines[0]][2]
        try:
            results = pecore_batch(model, [parsed[n][1] for n in lines], opts)
            records = [
                _record(model, n, parsed[n][0], parsed[n][1], opts, r)
                for n, r in zip(lines, results, strict=True)
            ]
        except Exception:
            records = None
        if records is not None:
            yield from records
            continue
        for n in lines:
            try:
                yield _record(model, n, parsed[n][0], parsed[n][1], opts)
            except Exception as err:
                log(f"skipping line {n}: {err}")
                yield _error(n, err)


def summarize(output_path: str | Path, *, write: bool = True) -> dict[str, Any]:
    """Average the per-example metrics of an output file; write ``<output>.summary.json``."""
    output_path = Path(output_path)
    records = [json.loads(x) for x in output_path.read_text(encoding="utf-8").splitlines() if x]
    ok = [r for r in records if "error" not in r]
    names = sorted({k for r in ok for k in r.get("metrics", {})})
    summary = {
        "examples": len(records),
        "succeeded": len(ok),
        "errors": [{"line": r["line"], "error": r["error"]} for r in records if "error" in r],
        "metrics": {k: mean([r.get("metrics", {}).get(k) for r in ok]) for k in names},
        "metric_counts": {
            k: sum(r.get("metrics", {}).get(k) is not None for r in ok) for k in names
        },
    }
    if not write:
        return summary
    path = output_path.with_name(output_path.name + ".summary.json")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return summary
