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

from hooklab.pecore.core import pecore_batch
from hooklab.pecore.metrics import auprc, f1, mean, top1, word_indices
from hooklab.pecore.options import PecoreOptions
from hooklab.pecore.result import PecoreResult

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
    """Line numbers already in the output; cuts off a half-written last record."""
    path = Path(path)
    if not path.exists():
        return set()
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep < len(data):  # a crash mid-write left a partial line
        with open(path, "r+b") as f:
            f.truncate(keep)
    done = set()
    for raw in data[:keep].splitlines():
        if raw.strip():
            done.add(int(json.loads(raw)["line"]))
    return done


def _append(f, record: dict[str, Any]) -> None:
    f.write(json.dumps(record, ensure_ascii=False) + "\n")
    f.flush()
    os.fsync(f.fileno())


def gold_metrics(result: PecoreResult, ex: dict[str, Any]) -> dict[str, Any] | None:
    """Per-example CTI/CCI plausibility: macro-F1 of selections, AUPRC of scores, top-1."""
    gold_t = ex.get("gold_context_sensitive")
    if gold_t is None and "gold_context_sensitive_words" in ex:
        gold_t = word_indices(result.output_current_tokens, ex["gold_context_sensitive_words"])
    gold_c = ex.get("gold_cues")
    if gold_c is None and "gold_cue_words" in ex:
        gold_c = word_indices(result.input_context_tokens, ex["gold_cue_words"])
    if gold_t is None and gold_c is None:
        return None
    out: dict[str, Any] = {}
    if gold_t is not None:
        selected = [c.index for c in result.context_sensitive]
        out["cti_f1"] = f1(selected, gold_t)
        out["cti_auprc"] = auprc(result.cti_scores, gold_t)
    if gold_c is not None:
        # CCI is judged on the selected targets that are gold context-sensitive tokens
        judged = [c for c in result.context_sensitive if gold_t is None or c.index in gold_t]
        out["cci_f1"] = mean([f1([q.index for q in c.cues], gold_c) for c in judged])
        out["cci_auprc"] = mean([auprc(c.input_context_scores, gold_c) for c in judged])
        out["cci_top1"] = mean([top1(c.input_context_scores, gold_c) for c in judged])
    return out


def _split(ex: dict[str, Any], base: PecoreOptions) -> tuple[dict, PecoreOptions]:
    texts = {k: ex.get(k) for k in TEXT_KEYS}
    overrides = {k: v for k, v in ex.items() if k in PecoreOptions.field_names()}
    return texts, (base.replace(**overrides) if overrides else base)


def run_dataset(
    model,
    input_path: str | Path,
    output_path: str | Path,
    options: PecoreOptions,
    *,
    batch_size: int = 8,
    show_progress: bool = True,
    log=print,
) -> dict[str, Any]:
    """Run PECoRe on every line of ``input_path``, appending records to ``output_path``.

    Returns:
        A summary: counts, errors (line numbers and messages) and averaged metrics; also
        written next to the output as ``<output>.summary.json``.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    done = finished_lines(output_path)
    todo = [item for item in read_examples(input_path) if item[0] not in done]
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
    return summarize(output_path)


def _run_chunk(model, good, options, log) -> Iterator[dict[str, Any]]:
    """Run examples that share options as one batch; isolate failures one by one."""
    groups: dict[str, list] = {}
    parsed = {}
    for n, ex in good:
        try:
            texts, opts = _split(ex, options)
        except (ValueError, KeyError, TypeError) as err:
            log(f"skipping line {n}: {err}")
            yield {"line": n, "error": f"line {n}: {err}"}
            continue
        parsed[n] = (ex, texts, opts)
        overrides = {k: v for k, v in ex.items() if k in PecoreOptions.field_names()}
        groups.setdefault(json.dumps(overrides, sort_keys=True), []).append(n)
    for lines in groups.values():
        opts = parsed[lines[0]][2]
        try:
            results = pecore_batch(model, [parsed[n][1] for n in lines], opts)
            pairs = list(zip(lines, results, strict=True))
        except (ValueError, KeyError, TypeError):
            pairs = []  # isolate the failing example(s): one by one
            for n in lines:
                try:
                    pairs.append((n, pecore_batch(model, [parsed[n][1]], opts)[0]))
                except (ValueError, KeyError, TypeError) as err:
                    log(f"skipping line {n}: {err}")
                    yield {"line": n, "error": f"line {n}: {err}"}
        for n, result in pairs:
            record = {"line": n, **result.to_dict()}
            if "id" in parsed[n][0]:
                record["id"] = parsed[n][0]["id"]
            metrics = gold_metrics(result, parsed[n][0])
            if metrics is not None:
                record["metrics"] = metrics
            yield record


def summarize(output_path: str | Path) -> dict[str, Any]:
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
    path = output_path.with_name(output_path.name + ".summary.json")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return summary
