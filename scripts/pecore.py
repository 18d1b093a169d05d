"""PECoRe context attribution from the command line (Fire).

    python scripts/pecore.py                      # the release example on the toy model
    python scripts/pecore.py --model_name_or_path gpt2 \\
        --input_context_text "..." --input_current_text "..." --save_path out.json
    python scripts/pecore.py dataset --input data.jsonl --output out.jsonl
    python scripts/pecore.py toy_dataset --output toy.jsonl --n 60

Options are named as in Inseq's ``attribute-context``. The first form prints the context with
``[cues](score)`` and the output with ``{targets}(score)``; ``--save_path`` writes the JSON
documented in ``hooklab/pecore/result.py``, ``--viz_path`` an HTML page, ``--figure_path`` a
figure (PNG/PDF by extension).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import fire

import hooklab
from hooklab.pecore import PecoreOptions, pecore
from hooklab.pecore.dataset import run_dataset

DEFAULT_CONTEXT = "George was sick yesterday."
DEFAULT_CURRENT = "His colleagues asked him to come"


def _options(**kwargs) -> PecoreOptions:
    given = {k: v for k, v in kwargs.items() if v is not None}
    if "special_tokens_to_keep" in given and isinstance(given["special_tokens_to_keep"], str):
        given["special_tokens_to_keep"] = (given["special_tokens_to_keep"],)
    return PecoreOptions().replace(**given)


def main(
    model_name_or_path: str = "toy",
    input_context_text: str = DEFAULT_CONTEXT,
    input_current_text: str = DEFAULT_CURRENT,
    output_context_text: str | None = None,
    output_current_text: str | None = None,
    input_template: str | None = None,
    output_template: str | None = None,
    contextless_input_current_text: str | None = None,
    contextless_output_current_text: str | None = None,
    decoder_input_output_separator: str | None = None,
    context_sensitivity_metric: str = "kl_divergence",
    context_sensitivity_std_threshold: float | None = 1.0,
    context_sensitivity_topk: int | None = None,
    attribution_method: str = "saliency",
    attributed_fn: str = "contrast_prob_diff",
    attribution_std_threshold: float | None = 1.0,
    attribution_topk: int | None = None,
    special_tokens_to_keep: tuple[str, ...] = (),
    generation_kwargs: dict | None = None,
    attribution_kwargs: dict | None = None,
    save_path: str | None = None,
    viz_path: str | None = None,
    figure_path: str | None = None,
    show_viz: bool = True,
    overwrite: bool = False,
    device: str | None = None,
    dtype: str | None = None,
) -> None:
    """Run CTI + CCI on one example and print / save the result."""
    opts = _options(
        input_template=input_template,
        output_template=output_template,
        contextless_input_current_text=contextless_input_current_text,
        contextless_output_current_text=contextless_output_current_text,
        decoder_input_output_separator=decoder_input_output_separator,
        context_sensitivity_metric=context_sensitivity_metric,
        context_sensitivity_std_threshold=context_sensitivity_std_threshold,
        context_sensitivity_topk=context_sensitivity_topk,
        attribution_method=attribution_method,
        attributed_fn=attributed_fn,
        attribution_std_threshold=attribution_std_threshold,
        attribution_topk=attribution_topk,
        special_tokens_to_keep=special_tokens_to_keep,
        generation_kwargs=generation_kwargs or {},
        attribution_kwargs=attribution_kwargs or {},
    )
    model = hooklab.load(model_name_or_path, device=device, dtype=dtype)
    result = pecore(
        model,
        input_context_text,
        input_current_text,
        output_context_text=output_context_text,
        output_current_text=output_current_text,
        options=opts,
    )
    if show_viz:
        result.show()
    if save_path:
        print(f"saved {result.save(save_path, overwrite=overwrite)}")
    if viz_path:
        path = Path(viz_path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{viz_path!r} exists; pass --overwrite to replace it.")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"<!doctype html><meta charset='utf-8'>\n{result.to_html()}\n")
        print(f"saved {path}")
    if figure_path:
        Path(figure_path).parent.mkdir(parents=True, exist_ok=True)
        result.plot().savefig(figure_path, dpi=200)
        print(f"saved {figure_path}")


def dataset(
    input: str,
    output: str,
    model_name_or_path: str = "toy",
    batch_size: int = 8,
    device: str | None = None,
    dtype: str | None = None,
    show_progress: bool = True,
    restart: bool = False,
    **options,
) -> None:
    """Run PECoRe on every line of a JSONL file; resumable; prints averaged metrics.

    Per-line keys override the shared ``--options``; see ``hooklab/pecore/dataset.py``.
    A rerun resumes where the output stops; ``--restart`` discards the output and starts over
    (needed when the options or the model changed).
    """
    opts = _options(**options)
    model = hooklab.load(model_name_or_path, device=device, dtype=dtype)

    def log(message: str) -> None:
        print(message, file=sys.stderr)

    summary = run_dataset(
        model,
        input,
        output,
        opts,
        batch_size=batch_size,
        show_progress=show_progress,
        restart=restart,
        log=log,
    )
    print(json.dumps(summary, indent=2))


def toy_dataset(output: str, n: int = 60, forced: bool = False) -> None:
    """Write a PECoRe JSONL with gold annotations from the toy model's eval examples."""
    from hooklab.toy import EVAL_EXAMPLES

    lines = [json.loads(x) for x in Path(EVAL_EXAMPLES).read_text().splitlines() if x.strip()]
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(lines):
        raise ValueError(f"--n must be an int in 1..{len(lines)} (eval examples), got {n!r}.")
    if Path(output).exists():
        raise FileExistsError(f"{output!r} exists; choose another --output or remove it.")
    with open(output, "w", encoding="utf-8") as f:
        for ex in lines[:n]:
            record = {
                "id": f"{ex['family']}-{len(ex['input_context_text'])}",
                "input_context_text": ex["input_context_text"],
                "input_current_text": ex["input_current_text"],
                "gold_context_sensitive_words": [ex["dependent_word"]],
                "gold_cue_words": [ex["cue_word"]],
            }
            if forced:
                record["output_current_text"] = ex["output_current_text"].lstrip()
            f.write(json.dumps(record) + "\n")
    print(f"wrote {n} examples to {output}")


if __name__ == "__main__":
    commands = {"dataset": dataset, "toy_dataset": toy_dataset}
    if len(sys.argv) > 1 and sys.argv[1] in commands:
        fire.Fire(commands[sys.argv[1]], command=sys.argv[2:])
    else:
        fire.Fire(main)
