"""``attribute-context``, ``dataset`` and ``toy-dataset``: PECoRe from the command line.

Options are named as in Inseq's ``attribute-context``; the PECoRe options are the fields of
:class:`~hooklab.pecore.PecoreOptions` (documented there, listed in ``--help``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hooklab.cli.args import UsageError
from hooklab.cli.checks import check_outputs


def pecore_options(options: dict[str, Any], defaults: dict[str, Any] | None = None):
    """:class:`PecoreOptions` from the flags over ``defaults`` (validated: unknown metric,
    method, NaN λ ...)."""
    from hooklab.pecore import PecoreOptions

    try:
        return PecoreOptions().replace(**{**(defaults or {}), **options})
    except (KeyError, TypeError, ValueError) as err:
        raise UsageError(str(err.args[0]) if err.args else str(err)) from None


def attribute_context(
    model_name_or_path: str = "toy",
    input_context_text: str | None = None,
    input_current_text: str | None = None,
    output_context_text: str | None = None,
    output_current_text: str | None = None,
    save_path: str | None = None,
    output_format: str = "auto",
    viz_path: str | None = None,
    figure_path: str | None = None,
    figure_size: float | str = "double",
    show_viz: bool = True,
    overwrite: bool = False,
    device: str | None = None,
    dtype: str | None = None,
    **options: Any,
) -> None:
    """Run PECoRe (CTI + CCI) on one example and print / save the result.

    Prints the output with {context-sensitive targets}(score) and the context with
    [cues](score). With no option: the release example on the toy model (" hospital" is
    selected, with the cue "sick"); with --model_name_or_path toy-mt and no other option, the
    translation example ("The table was old. <brk> It was broken." with the output context
    "Der Tisch war alt." -> " Er" is selected; its CCI scores cover the input and the output
    context, where the gender-marking article "Der" is the top cue), with that model's <brk>
    templates.

    Args:
        model_name_or_path: "toy" (the embedded LM), "toy-mt" (the embedded translation
            model), a checkpoint directory or a hub name.
        input_context_text: the context PECoRe contrasts with (default: the release example).
        input_current_text: the current input (default: the release example).
        output_context_text: the output's context (forced), if any.
        output_current_text: the current output, forced; None generates it.
        save_path: write the result to this file (see --output_format).
        output_format: "auto" (JSON for a .json path, else the common safetensors format),
            "json", "safetensors", or "inseq" (the JSON of Inseq's attribute-context).
        viz_path: write an HTML page of the result.
        figure_path: write the figure; PNG or PDF by the extension.
        figure_size: figure width (with --figure_path): "single" (3.3 in), "double" (6.9 in)
            or inches.
        show_viz: print the text view.
        overwrite: replace existing output files (otherwise an existing file is an error).
        device: torch device (default: CUDA if available, else CPU).
        dtype: torch dtype, e.g. "float32".
    """
    from hooklab.pecore.examples import release_example

    example = release_example(model_name_or_path)
    if input_context_text is None and input_current_text is None:
        input_context_text = example["input_context_text"]
        input_current_text = example["input_current_text"]
        if output_context_text is None:
            output_context_text = example["output_context_text"]
    elif input_context_text is None or input_current_text is None:
        raise UsageError("Give both --input_context_text and --input_current_text (or neither).")
    opts = pecore_options(options, example["options"])
    from hooklab.pecore.result import SAVE_FORMATS  # PecoreResult.save's formats

    if output_format not in SAVE_FORMATS:
        raise UsageError(f"--output_format {output_format!r}; choose from {SAVE_FORMATS}.")
    check_outputs([save_path, viz_path, figure_path], overwrite)
    if figure_path and Path(figure_path).suffix.lower() not in (".png", ".pdf", ".svg"):
        raise UsageError(f"--figure_path {figure_path!r} should end in .png, .pdf or .svg.")
    if figure_path:  # the figure size matters (and matplotlib is imported) only for a figure
        from hooklab.output.style import width

        try:
            width(figure_size)
        except ValueError as err:
            raise UsageError(f"--figure_size: {err}") from None

    import hooklab
    from hooklab.pecore import pecore

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
        print(f"saved {result.save(save_path, overwrite=overwrite, format=output_format)}")
    if viz_path:
        from hooklab.output.files import write_text

        page = f"<!doctype html><meta charset='utf-8'>\n{result.to_html()}\n"
        path = write_text(viz_path, page, overwrite=True)  # existing: refused above
        print(f"saved {path}")
    if figure_path:
        from hooklab.output.style import save

        fig = result.plot(size=figure_size)
        path = Path(figure_path)
        (written,) = save(fig, path, formats=(path.suffix.lstrip(".").lower(),))
        print(f"saved {written}")


def dataset(
    input: str,
    output: str,
    model_name_or_path: str = "toy",
    batch_size: int = 16,
    device: str | None = None,
    dtype: str | None = None,
    show_progress: bool = True,
    restart: bool = False,
    **options: Any,
) -> None:
    """Run PECoRe on every line of a JSONL file; resumable; prints averaged metrics.

    Per-line keys override the PECoRe options below (see hooklab/pecore/dataset.py for the
    line format). A rerun resumes where the output stops; --restart discards the output and
    starts over (needed when the options or the model changed).

    Under torchrun (WORLD_SIZE > 1) each process runs every WORLD_SIZE-th line into
    <output>.rank{r}-of-{W} (on cuda:LOCAL_RANK when CUDA is available and --device is not
    given) and rank 0 merges the parts into --output in line order, e.g.
    ``torchrun --nproc_per_node 2 -m hooklab dataset --input in.jsonl --output out.jsonl``.

    Args:
        input: the JSONL file, one example per line (input_context_text, input_current_text,
            optional outputs, option overrides and gold annotations).
        output: the JSONL file written, one result per input line.
        model_name_or_path: "toy" (the embedded model), a checkpoint directory or a hub name.
        batch_size: examples per batched forward pass.
        device: torch device (default: CUDA if available, else CPU).
        dtype: torch dtype, e.g. "float32".
        show_progress: show a progress bar on stderr.
        restart: discard an existing output and start over (otherwise it is resumed).
    """
    opts = pecore_options(options)
    from hooklab.cli.datasets import check_dataset_flags, log, run_on_ranks

    check_dataset_flags(input, output, batch_size)
    from hooklab.pecore.dataset import run_dataset

    def run(model, rank: int, world_size: int) -> dict[str, Any]:
        return run_dataset(
            model, input, output, opts, batch_size=batch_size, rank=rank, world_size=world_size,
            show_progress=show_progress and rank == 0, restart=restart, log=log,
        )  # fmt: skip

    run_on_ranks(model_name_or_path, device, dtype, run)


def toy_dataset(
    output: str,
    n: int = 60,
    forced: bool = False,
    overwrite: bool = False,
    model_name_or_path: str = "toy",
) -> None:
    """Write a PECoRe JSONL with gold annotations from an embedded model's eval examples.

    Args:
        output: the JSONL file to write.
        n: how many examples (1 to the number of eval examples: 100 for toy, 120 for toy-mt).
        forced: include each example's output text (forced decoding instead of generation).
        overwrite: replace an existing output file.
        model_name_or_path: "toy" or "toy-mt" (its lines carry the <brk> templates and the
            output context, with gold output-context cues).
    """
    from hooklab.pecore.examples import dataset_records

    if model_name_or_path not in ("toy", "toy-mt"):
        raise UsageError(f"--model_name_or_path {model_name_or_path!r}: use 'toy' or 'toy-mt'.")
    try:
        records = dataset_records(model_name_or_path, n, forced=forced)
    except ValueError as err:
        raise UsageError(f"--n: {err}") from None
    check_outputs([output], overwrite)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    with open(output, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(record) + "\n" for record in records)
    print(f"wrote {n} examples to {output}")
