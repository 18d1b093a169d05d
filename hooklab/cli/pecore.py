"""``attribute-context``, ``dataset`` and ``toy-dataset``: PECoRe from the command line.

Options are named as in Inseq's ``attribute-context``; the PECoRe options are the fields of
:class:`~hooklab.pecore.PecoreOptions` (documented there, listed in ``--help``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from hooklab.cli.args import UsageError
from hooklab.cli.checks import check_outputs, toy_examples

DEFAULT_CONTEXT = "George was sick yesterday."
DEFAULT_CURRENT = "His colleagues asked him to come"


def pecore_options(options: dict[str, Any]):
    """:class:`PecoreOptions` from the flags (validated: unknown metric, method, NaN λ ...)."""
    from hooklab.pecore import PecoreOptions

    try:
        return PecoreOptions().replace(**options)
    except (KeyError, TypeError, ValueError) as err:
        raise UsageError(str(err.args[0]) if err.args else str(err)) from None


def attribute_context(
    model_name_or_path: str = "toy",
    input_context_text: str = DEFAULT_CONTEXT,
    input_current_text: str = DEFAULT_CURRENT,
    output_context_text: str | None = None,
    output_current_text: str | None = None,
    save_path: str | None = None,
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
    selected, with the cue "sick").

    Args:
        model_name_or_path: "toy" (the embedded model), a checkpoint directory or a hub name.
        input_context_text: the context PECoRe contrasts with.
        input_current_text: the current input.
        output_context_text: the output's context (forced), if any.
        output_current_text: the current output, forced; None generates it.
        save_path: write the result: JSON for a .json path, else the common safetensors format.
        viz_path: write an HTML page of the result.
        figure_path: write the figure; PNG or PDF by the extension.
        figure_size: figure width: "single" (3.3 in), "double" (6.9 in) or inches.
        show_viz: print the text view.
        overwrite: replace existing output files (otherwise an existing file is an error).
        device: torch device (default: CUDA if available, else CPU).
        dtype: torch dtype, e.g. "float32".
    """
    opts = pecore_options(options)
    check_outputs([save_path, viz_path, figure_path], overwrite)
    if figure_path and Path(figure_path).suffix.lower() not in (".png", ".pdf", ".svg"):
        raise UsageError(f"--figure_path {figure_path!r} should end in .png, .pdf or .svg.")
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
        print(f"saved {result.save(save_path, overwrite=overwrite)}")
    if viz_path:
        path = Path(viz_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"<!doctype html><meta charset='utf-8'>\n{result.to_html()}\n")
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
    batch_size: int = 8,
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
    if not Path(input).is_file():
        raise UsageError(f"--input {input!r} is not a file.")
    if isinstance(batch_size, bool) or batch_size < 1:
        raise UsageError(f"--batch_size must be a positive int, got {batch_size!r}.")
    if Path(output).is_dir():
        raise UsageError(f"--output {output!r} is a directory; give a file name.")

    import hooklab
    from hooklab.pecore.dataset import run_dataset

    model = hooklab.load(model_name_or_path, device=device, dtype=dtype)
    summary = run_dataset(
        model,
        input,
        output,
        opts,
        batch_size=batch_size,
        show_progress=show_progress,
        restart=restart,
        log=lambda message: print(message, file=sys.stderr),
    )
    print(json.dumps(summary, indent=2))


def toy_dataset(output: str, n: int = 60, forced: bool = False, overwrite: bool = False) -> None:
    """Write a PECoRe JSONL with gold annotations from the toy model's eval examples.

    Args:
        output: the JSONL file to write.
        n: how many examples (1 to the number of toy eval examples).
        forced: include each example's output text (forced decoding instead of generation).
        overwrite: replace an existing output file.
    """
    lines = toy_examples()
    if not 1 <= n <= len(lines):
        raise UsageError(f"--n must be in 1..{len(lines)} (toy eval examples), got {n!r}.")
    check_outputs([output], overwrite)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
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
