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
dropped. Each record is written with one ``write`` system call and fsynced, and a rerun skips
every line already in the output (a half-written last line from a crash is cut off first), so a
killed run resumes without losing or duplicating records. The machinery (resume, settings, summary,
data parallelism under torchrun) is :mod:`hooklab.jsonl_runs`, shared with the attribution
dataset mode.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hooklab import jsonl_runs
from hooklab.jsonl_runs import DatasetTask
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


def _check(ex: dict[str, Any]) -> str | None:
    missing = [k for k in ("input_context_text", "input_current_text") if not ex.get(k)]
    return f"missing {missing}" if missing else None


def _split(ex: dict[str, Any], base: PecoreOptions) -> tuple[dict, PecoreOptions]:
    texts = {k: ex.get(k) for k in TEXT_KEYS}
    overrides = {k: v for k, v in ex.items() if k in PecoreOptions.field_names()}
    return texts, (base.replace(**overrides) if overrides else base)


def _group(ex: dict[str, Any], base: PecoreOptions) -> str:
    """Examples with the same option overrides run as one batch (checked here)."""
    _split(ex, base)  # a bad override is this line's error
    overrides = {k: v for k, v in ex.items() if k in PecoreOptions.field_names()}
    return json.dumps(overrides, sort_keys=True)


def _run(model, items: list[tuple[int, dict]], base: PecoreOptions) -> list[dict[str, Any]]:
    """The records of examples that share options: the result and, with gold, metrics."""
    parsed = [_split(ex, base) for _, ex in items]
    results = pecore_batch(model, [texts for texts, _ in parsed], parsed[0][1])
    records = []
    for (_, ex), result in zip(items, results, strict=True):
        record = result.to_dict()
        metrics = gold_metrics(result, ex)
        if metrics is not None:
            record["metrics"] = metrics
        records.append(record)
    return records


def _metrics(ok: list[dict[str, Any]]) -> dict[str, Any]:
    """The averaged plausibility metrics of the successful records, and their counts."""
    names = sorted({k for r in ok for k in r.get("metrics", {})})
    return {
        "metrics": {k: mean([r.get("metrics", {}).get(k) for r in ok]) for k in names},
        "metric_counts": {
            k: sum(r.get("metrics", {}).get(k) is not None for r in ok) for k in names
        },
    }


def dataset_task(model, options: PecoreOptions) -> DatasetTask:
    """PECoRe as a :class:`~hooklab.jsonl_runs.DatasetTask` (the lines and records above)."""
    return DatasetTask(
        kind="PECoRe dataset",
        keys={*TEXT_KEYS, *GOLD_KEYS, *PecoreOptions.field_names()},
        check=_check,
        group=lambda ex: _group(ex, options),
        run=lambda items: _run(model, items, options),
        settings={"model": thaw(describe_model(model)), "options": thaw(options.resolved())},
        summary=_metrics,
    )


def run_dataset(
    model,
    input_path: str | Path,
    output_path: str | Path,
    options: PecoreOptions,
    *,
    batch_size: int = 16,
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
    for the others, and rank 0 merges the parts into ``output_path``
    (:func:`hooklab.jsonl_runs.run`).

    Returns:
        A summary: counts, errors (line numbers and messages) and averaged metrics; also
        written next to the output as ``<output>.summary.json`` (on ranks other than 0: the
        summary of this rank's part, not written).
    """
    task = dataset_task(model, options)
    return jsonl_runs.run(task, input_path, output_path, batch_size=batch_size,
                          show_progress=show_progress, restart=restart, log=log, rank=rank,
                          world_size=world_size)  # fmt: skip
