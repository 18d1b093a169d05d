"""Attribution over a JSONL dataset: batched, resumable, data-parallel under torchrun.

Input: one JSON object per line with

- ``prompt`` (required): the prompt text (the source, for an encoder–decoder model);
- ``target`` (optional): the forced continuation; missing or null: generated greedily
  (``generation_kwargs``, e.g. ``{"max_new_tokens": 8}``);
- ``id`` (optional): any JSON value, copied to the output record.

Output: one JSON record per input line, in order of completion (a data-parallel run's merged
output is in line order): ``line`` (the 1-based input line number), then the one-sequence
:class:`~hooklab.attribution.AttributionOutput` of that line in its ``to_dict()`` form --
the header every saved output starts with (``format_version``, ``hooklab_version``,
``kind: "attribution"``, ``model``, ``parameters``: the options used, defaults included),
``info`` (method, step scores, generation, ``keep_hidden``; the timing is left out so that
reruns write the same bytes) and ``sequences``: one entry with ``tokens``, ``token_ids``,
``target_start``, ``attributions`` (``[step][pos]`` nested lists, reduced over the hidden size
by the method's own reduction unless ``keep_hidden=True``; ``"nan"`` where a step cannot see
the token; encoder–decoder outputs add ``source_tokens`` and ``source_attributions``),
``step_scores`` (name -> ``[step]``), ``extras``, ``method`` and ``parameters`` -- then ``id``
when the line has one. A malformed or failing line is written as ``{"line": n, "error":
"line n: ..."}`` (naming the bad field) and logged; the run goes on.

:func:`load_results` reads an output back (exact scores) as one ``AttributionOutput`` per line;
a record alone reads back with ``hooklab.AttributionOutput.from_dict(json.loads(line))``.
Resuming, the settings file, the summary and data parallelism are those of every dataset mode
(:mod:`hooklab.jsonl_runs`).
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hooklab import jsonl_runs
from hooklab.attribute import attribute, validate
from hooklab.attribution import AttributionOutput, SequenceAttribution
from hooklab.attribution.aggregate import reduce_hidden
from hooklab.jsonl_runs import DatasetTask
from hooklab.output.provenance import describe_model, thaw

#: the keys of an input line (besides ``id``)
KEYS = ("prompt", "target")


def _check(ex: dict[str, Any]) -> str | None:
    """What is wrong with a line's fields, naming the field; None when it is fine."""
    prompt, target = ex.get("prompt"), ex.get("target")
    if "prompt" not in ex:
        return "missing 'prompt' (the text to attribute)"
    if not isinstance(prompt, str) or not prompt.strip():
        return f"'prompt' must be a non-empty string, got {reprlib.repr(prompt)}"
    if target is not None and (not isinstance(target, str) or not target):
        return (
            "'target' must be a non-empty string (the forced continuation) or null (generate "
            f"one), got {reprlib.repr(target)}"
        )
    return None


def reduced(seq: SequenceAttribution) -> SequenceAttribution:
    """``seq`` with its attributions reduced over their trailing dims (the hidden size; layers
    and heads for attention) by the method's own reduction: the ``[step, pos]`` scores that
    views show (:meth:`SequenceAttribution.scores`)."""
    how = seq.default_reduce

    def reduce(scores):
        return None if scores is None else reduce_hidden(scores, how)

    return seq.with_(
        attributions=reduce(seq.attributions), source_attributions=reduce(seq.source_attributions)
    )


def _run(
    model,
    items: list[tuple[int, dict]],
    options: Mapping[str, Any],
    batch_size: int,
    keep_hidden: bool,
) -> list[dict[str, Any]]:
    """The records of lines that are all forced or all generated, attributed in one call."""
    forced = items[0][1].get("target") is not None
    out = attribute(
        model,
        [ex["prompt"] for _, ex in items],
        [ex["target"] for _, ex in items] if forced else None,
        batch_size=batch_size,
        **options,
    )
    info = {k: v for k, v in out.info.items() if k != "elapsed_s"}
    info["keep_hidden"] = keep_hidden
    return [
        AttributionOutput((s if keep_hidden else reduced(s),), info, model=out.model).to_dict()
        for s in out
    ]


def dataset_task(
    model,
    *,
    method: str = "saliency",
    attributed_fn: str = "probability",
    step_scores: Sequence[str] = (),
    attributed_fn_kwargs: Mapping[str, Any] | None = None,
    step_scores_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    generation_kwargs: Mapping[str, Any] | None = None,
    keep_hidden: bool = False,
    batch_size: int = 16,
    **method_options: Any,
) -> DatasetTask:
    """Attribution as a :class:`~hooklab.jsonl_runs.DatasetTask`; names and options are
    checked here, before any line runs (as :func:`hooklab.attribute` checks them).

    ``keep_hidden=False`` stores each record's attributions reduced by the method's own
    reduction (:func:`reduced`: ``[step][pos]``, e.g. the L2 norm of saliency's gradients);
    ``True`` keeps their trailing dims (records then grow by the hidden size, e.g. x768).
    """
    if not isinstance(keep_hidden, bool):
        raise TypeError(f"keep_hidden must be True or False, got {keep_hidden!r}.")
    request = validate(
        model, ["x"], method=method, attributed_fn=attributed_fn, step_scores=step_scores,
        has_contrast=False, batch_size=batch_size, method_options=method_options,
        step_scores_kwargs=step_scores_kwargs,
    )  # fmt: skip
    shared = {
        "method": method,
        "attributed_fn": attributed_fn,
        "step_scores": list(request.step_scores),
        "attributed_fn_kwargs": dict(attributed_fn_kwargs or {}),
        "step_scores_kwargs": {k: dict(v) for k, v in (step_scores_kwargs or {}).items()},
        "generation_kwargs": dict(generation_kwargs or {}),
    }
    options = {**shared, **method_options}  # hooklab.attribute's keyword arguments
    recorded = {**shared, "method_options": request.options, "keep_hidden": keep_hidden}
    return DatasetTask(
        kind="attribution dataset",
        keys=KEYS,
        check=_check,
        group=lambda ex: "generated" if ex.get("target") is None else "forced",
        run=lambda items: _run(model, items, options, batch_size, keep_hidden),
        settings={"model": thaw(describe_model(model)), "options": thaw(recorded)},
    )


def run_dataset(
    model,
    input_path: str | Path,
    output_path: str | Path,
    *,
    batch_size: int = 16,
    show_progress: bool = True,
    restart: bool = False,
    log=print,
    rank: int = 0,
    world_size: int = 1,
    **options: Any,
) -> dict[str, Any]:
    """Attribute every line of ``input_path`` (see the module docstring), appending records to
    ``output_path``.

    ``options`` are those of :func:`hooklab.attribute` that apply to every line (``method``,
    default ``"saliency"``; ``attributed_fn``, ``step_scores``, ``attributed_fn_kwargs``,
    ``step_scores_kwargs``, ``generation_kwargs`` and the method's own options) and
    ``keep_hidden`` (see :func:`dataset_task`), checked before any line runs. Lines run
    ``batch_size`` at a time, forced and generated lines in separate calls. The run's settings
    (model and options, method defaults included) are written to ``<output>.settings.json``;
    resuming with other settings is refused unless ``restart`` (which discards the output).
    With ``world_size > 1`` (every rank of a torchrun job calls this inside
    :func:`hooklab.distributed.process_group`) this rank runs its shard into its part and rank
    0 merges the parts into ``output_path`` (:func:`hooklab.jsonl_runs.run`).

    Returns:
        A summary: ``examples``, ``succeeded`` and ``errors`` (line numbers and messages); also
        written as ``<output>.summary.json`` (on ranks other than 0: this rank's part's).

    Example:
        >>> import hooklab, json, tempfile, pathlib
        >>> from hooklab.attribute_dataset import load_results, run_dataset
        >>> model = hooklab.load("toy")
        >>> tmp = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (tmp / "in.jsonl").write_text(json.dumps({"prompt": "George was sick."}) + "\\n")
        >>> summary = run_dataset(model, tmp / "in.jsonl", tmp / "out.jsonl", show_progress=False)
        >>> summary["succeeded"]
        1
        >>> load_results(tmp / "out.jsonl")[1][0].method
        'saliency'
    """
    task = dataset_task(model, batch_size=batch_size, **options)
    return jsonl_runs.run(task, input_path, output_path, batch_size=batch_size,
                          show_progress=show_progress, restart=restart, log=log, rank=rank,
                          world_size=world_size)  # fmt: skip


def load_results(path: str | Path) -> dict[int, AttributionOutput]:
    """Read an attribution dataset output: ``{line: AttributionOutput}`` in line order.

    Each output holds the line's one sequence, its scores exactly as computed. Error records
    are left out (they are listed in ``<output>.summary.json``); a half-written last record
    (a run still going, or killed) is ignored.
    """
    records = jsonl_runs.read_records(path)
    found = {r["line"]: r for r in records if isinstance(r, dict) and "line" in r}
    if len(found) != len(records):
        raise ValueError(
            f"{str(path)!r} is not an attribution dataset output: every line must be a JSON "
            "object with a 'line' number."
        )
    return {n: AttributionOutput.from_dict(r) for n, r in sorted(found.items()) if "error" not in r}
