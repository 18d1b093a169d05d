"""Citations over a JSONL dataset: resumable, data-parallel under torchrun, scored against gold.

Input: one JSON object per line, the schema of :mod:`hooklab.cite.examples` (``question``,
``documents``; ``answer`` optional: generated when missing or null; ``gold_documents``
optional, one list of 0-based document ids per answer sentence, needs the forced
``answer``; ``answer_sentences``, ``kind`` and ``id`` are kept out of the computation).

Output: one JSON record per input line: ``line``, then the line's
:class:`~hooklab.cite.CitationResult` in its ``to_dict()`` form (with the PECoRe run), then
``citations`` (per sentence, 0-based) and, for an annotated line, ``gold_documents`` and
``scores`` (:func:`hooklab.cite.evaluate.score_citations` of that line). A bad or failing line
is ``{"line": n, "error": "line n: ..."}``, naming the field. The summary
(``<output>.summary.json``) adds ``metrics``: agreement, precision, recall and F1 over every
sentence of the annotated lines (what :func:`hooklab.cite.evaluate.evaluate_citations` reports
as its ``cite`` row). Resuming, the settings file and torchrun are those of every dataset mode
(:mod:`hooklab.jsonl_runs`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hooklab import jsonl_runs
from hooklab.cite.core import cite
from hooklab.cite.evaluate import score_citations
from hooklab.cite.examples import KEYS, check_example
from hooklab.cite.options import CiteOptions
from hooklab.cite.result import CitationResult
from hooklab.jsonl_runs import DatasetTask
from hooklab.output.provenance import describe_model, thaw


def _record(model, ex: Mapping[str, Any], options: CiteOptions) -> dict[str, Any]:
    result = cite(model, ex["question"], list(ex["documents"]), answer=ex.get("answer"),
                  options=options)  # fmt: skip
    out = {**result.to_dict(), "citations": result.citations}
    gold = ex.get("gold_documents")
    if gold is not None:
        out["gold_documents"] = gold
        out["scores"] = score_citations(result.citations, gold)
    return out


def metrics(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Agreement, precision, recall and F1 over every sentence of the annotated records."""
    scored = [r for r in records if r.get("gold_documents") is not None]
    predicted = [c for r in scored for c in r["citations"]]
    gold = [g for r in scored for g in r["gold_documents"]]
    return {
        "annotated": len(scored),
        "metrics": score_citations(predicted, gold) if scored else None,
    }


def dataset_task(model, options: CiteOptions | None = None, **option_overrides) -> DatasetTask:
    """Citations as a :class:`~hooklab.jsonl_runs.DatasetTask` (options checked here)."""
    opts = (options or CiteOptions()).replace(**option_overrides)
    return DatasetTask(
        kind="citation dataset",
        keys=KEYS,
        check=lambda ex: check_example(ex, need_answer=False, need_gold=False),
        group=lambda ex: "one line a run",  # each line is its own PECoRe run
        run=lambda items: [_record(model, ex, opts) for _, ex in items],
        settings={"model": thaw(describe_model(model)), "options": thaw(opts.resolved())},
        summary=metrics,
    )


def run_dataset(
    model,
    input_path: str | Path,
    output_path: str | Path,
    *,
    show_progress: bool = True,
    restart: bool = False,
    log=print,
    rank: int = 0,
    world_size: int = 1,
    options: CiteOptions | None = None,
    **option_overrides: Any,
) -> dict[str, Any]:
    """Cite every line of ``input_path`` (see the module doc), appending to ``output_path``.

    A killed run resumes where it stopped (finished lines are not recomputed); resuming with
    other options is refused unless ``restart``. Under torchrun every rank calls this inside
    :func:`hooklab.distributed.process_group` (:func:`hooklab.jsonl_runs.run`).

    Returns:
        The summary: ``examples``, ``succeeded``, ``errors``, ``annotated`` and ``metrics``
        (None without annotated lines); also written as ``<output>.summary.json``.

    Example:
        >>> import hooklab, json, tempfile, pathlib
        >>> from hooklab.cite.dataset import run_dataset
        >>> from hooklab.toy_rag import EVAL_EXAMPLES
        >>> tmp = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (tmp / "in.jsonl").write_text(EVAL_EXAMPLES.read_text().splitlines()[0] + "\\n")
        >>> model = hooklab.load("toy-rag")
        >>> summary = run_dataset(model, tmp / "in.jsonl", tmp / "out.jsonl", show_progress=False)
        >>> summary["annotated"]
        1
    """
    task = dataset_task(model, options, **option_overrides)
    return jsonl_runs.run(task, input_path, output_path, batch_size=1, show_progress=show_progress,
                          restart=restart, log=log, rank=rank, world_size=world_size)  # fmt: skip


def load_results(path: str | Path) -> dict[int, CitationResult]:
    """Read a citation dataset output: ``{line: CitationResult}`` in line order (error records
    left out; a half-written last record ignored)."""
    records = jsonl_runs.read_records(path)
    return {
        r["line"]: CitationResult.from_dict(r)
        for r in sorted(records, key=lambda r: r["line"])
        if "error" not in r
    }
