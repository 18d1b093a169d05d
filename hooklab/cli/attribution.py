"""``attribute``: feature attribution of generated (or forced) tokens on any text.

The command checks its flags and output paths, loads the model, calls
:func:`hooklab.attribute` (or, with ``--input``, the dataset mode) and writes the heatmap (PNG
and PDF, :mod:`hooklab.output.style`) named after the method (``attribution_{method}``).
Context mixing and knockout are in :mod:`hooklab.cli.mixing`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hooklab.cli.args import Option, UsageError
from hooklab.cli.checks import check_outputs, figure_paths, fill_path

if TYPE_CHECKING:
    from hooklab.options import OptionSpec

DEFAULT_PROMPT = "George was sick yesterday. His colleagues asked him to come"


def method_options() -> list[Option]:
    """Every attribution method's own options, from their declarations
    (:attr:`hooklab.methods.MethodSpec.options`): parsed by their annotation (``--n_steps 16``
    and ``--n_steps auto`` alike), described in ``--help`` with what is valid."""
    from hooklab.methods import METHODS
    from hooklab.options import scalar_type

    found: dict[str, list[tuple[str, OptionSpec]]] = {}
    for name in METHODS.names():
        for option in METHODS.get(name).options.values():
            found.setdefault(option.name, []).append((name, option))
    options = []
    for option, uses in found.items():
        first = uses[0][1]
        hints = {scalar_type(o.hint) for _, o in uses}
        hint = hints.pop() if len(hints) == 1 else Any
        text = next((o.help for _, o in uses if o.help), "")
        rules = dict.fromkeys(o.rule for _, o in uses if o.hint not in (bool, object, Any))
        if rules:
            text += f" Valid: {'; '.join(rules)}."
        shown = ", ".join(f"{method}: {o.default!r}" for method, o in uses)
        options.append(Option(option, hint, first.default, text.strip(), default_text=shown))
    return options


def _check_method(method: str, method_kwargs: dict[str, Any]) -> None:
    """Check the method and its options through its declaration (:meth:`MethodSpec.resolve`),
    as :func:`hooklab.attribute` does, before the model is loaded."""
    from hooklab.methods import METHODS

    try:
        spec = METHODS.get(method)
    except KeyError as err:
        raise UsageError(err.args[0]) from None
    try:
        spec.resolve(method_kwargs)
    except (TypeError, ValueError) as err:
        message = str(err)  # "n_steps must be ..." names the option: shown as the flag
        flag = "--" if message.split(" ", 1)[0] in spec.options else ""
        raise UsageError(flag + message) from None


def _check_flags(
    method: str, method_kwargs: dict[str, Any], step_fns: tuple[str, ...], aggregate, spaces
) -> None:
    """UsageError for an unknown method, method option, step function, grouping or spacing."""
    from hooklab.attribution.aggregate import GROUPINGS
    from hooklab.steps import STEP_FUNCTIONS

    _check_method(method, method_kwargs)
    for name in step_fns:
        try:
            STEP_FUNCTIONS.get(name)
        except KeyError as err:
            raise UsageError(err.args[0]) from None
    if aggregate is not None and aggregate not in GROUPINGS:
        raise UsageError(
            f"--aggregate must be one of {sorted(GROUPINGS)} or None, got {aggregate!r}."
        )
    if spaces not in ("thin", "strip", "raw"):
        raise UsageError(f"--spaces must be 'thin', 'strip' or 'raw', got {spaces!r}.")


def read_messages(messages: str) -> list[dict]:
    """The --messages conversation: a path to a JSON file or the JSON text itself."""
    import json
    from pathlib import Path

    text = messages
    if not messages.lstrip().startswith(("[", "{")):
        if not Path(messages).is_file():
            raise UsageError(
                f'--messages must be a JSON file or inline JSON ([{{"role": "user", '
                f'"content": "..."}}]); {messages!r} is neither an existing file nor JSON.'
            )
        text = Path(messages).read_text(encoding="utf-8")
    try:
        conversation = json.loads(text)
    except json.JSONDecodeError as err:
        raise UsageError(f"--messages is not valid JSON ({err}): {messages!r}.") from None
    from hooklab.chat import as_conversations

    try:
        as_conversations(conversation)
    except TypeError as err:
        raise UsageError(f"--messages: {err}") from None
    return conversation


def attribute(
    model_name_or_path: str = "toy",
    prompt: str | None = None,
    target: str | None = None,
    method: str = "saliency",
    attributed_fn: str = "probability",
    step_scores: tuple[str, ...] = ("probability",),
    aggregate: str | None = "words",
    figure_path: str | None = "figures/attribution_{method}.png",
    spaces: str = "thin",
    save_path: str | None = None,
    overwrite: bool = False,
    max_new_tokens: int = 8,
    show: bool = True,
    device: str | None = None,
    dtype: str | None = None,
    input: str | None = None,
    output: str | None = None,
    batch_size: int = 16,
    show_progress: bool = True,
    restart: bool = False,
    keep_hidden: bool = False,
    prepend_bos: bool | None = None,
    messages: str | None = None,
    **method_kwargs: Any,
) -> None:
    """Attribute each target token to the tokens before it; print, plot and save.

    With --input and --output (the dataset mode) each line of a JSONL file ({"prompt": ...,
    optional "target", "id"}) gets one JSON record (hooklab/attribute_dataset.py); a rerun
    resumes. Under torchrun each process runs every WORLD_SIZE-th line, rank 0 merges in line
    order: ``torchrun --nproc_per_node 2 -m hooklab attribute --input in.jsonl --output o.jsonl``.

    Args:
        model_name_or_path: "toy" (the embedded model), a checkpoint directory or a hub name.
        prompt: the prompt (default: "George was sick yesterday. His colleagues asked him to
            come").
        target: forced continuation; None generates one greedily.
        method: the attribution method (hooklab.list_methods()).
        attributed_fn: the step function explained (hooklab.list_step_functions()).
        step_scores: step functions scored at every step, comma-separated.
        aggregate: merge tokens into "words" or "spans" before showing; None keeps tokens.
        figure_path: the heatmap, written as PNG and PDF ({method} is filled in); None: none.
        spaces: tokens' leading spaces in the figure: "thin", "strip" or "raw".
        save_path: write the attribution (safetensors + JSON metadata).
        overwrite: replace existing output files (otherwise an existing file is an error).
        max_new_tokens: tokens generated when target is None.
        show: print the table.
        device: torch device (default: CUDA if available, else CPU; under torchrun
            cuda:LOCAL_RANK).
        dtype: torch dtype, e.g. "float32".
        input: dataset mode: the JSONL file, one example per line.
        output: dataset mode: the JSONL file written, one record per input line.
        batch_size: dataset mode: examples per batched call.
        show_progress: dataset mode: show a progress bar on stderr.
        restart: dataset mode: discard an existing output and start over (otherwise it is
            resumed; needed when the options or the model changed).
        keep_hidden: dataset mode: keep the attributions' hidden-size dimension (otherwise
            reduced by the method's own reduction to [step][pos]).
        prepend_bos: prepend the BOS token to the prompt; None: where the model's own tokenizer
            adds it (one-example mode).
        messages: instead of --prompt, a chat conversation rendered with the model's chat
            template: a JSON file holding [{"role": "user", "content": "..."}, ...], or that
            JSON inline (one-example mode).
    """
    _check_flags(method, method_kwargs, (attributed_fn, *step_scores), aggregate, spaces)
    if max_new_tokens < 1:
        raise UsageError(f"--max_new_tokens must be a positive int, got {max_new_tokens}.")
    conversation = read_messages(messages) if messages is not None else None
    if conversation is not None and prompt is not None:
        raise UsageError("--prompt and --messages are exclusive: give the text or the chat.")
    if input is not None or output is not None:
        from hooklab.cli.datasets import attribute_dataset, check_dataset_flags

        one = {"--prompt": prompt, "--target": target, "--save_path": save_path,
               "--prepend_bos": prepend_bos, "--messages": messages}  # fmt: skip
        check_dataset_flags(input, output, batch_size, one_example=one)
        return attribute_dataset(
            model_name_or_path, input, output, device=device, dtype=dtype, batch_size=batch_size,
            show_progress=show_progress, restart=restart, method=method,
            attributed_fn=attributed_fn, step_scores=list(step_scores),
            generation_kwargs={"max_new_tokens": max_new_tokens}, keep_hidden=keep_hidden,
            **method_kwargs,
        )  # fmt: skip
    figure = fill_path(figure_path, "--figure_path", method=method) if figure_path else None
    check_outputs([save_path, *(figure_paths(figure) if figure else [])], overwrite)

    import hooklab

    model = hooklab.load(model_name_or_path, device=device, dtype=dtype)
    default = DEFAULT_PROMPT if conversation is None else None
    out = hooklab.attribute(
        model,
        default if prompt is None else prompt,
        target,
        messages=conversation,
        method=method,
        attributed_fn=attributed_fn,
        step_scores=list(step_scores),
        generation_kwargs={"max_new_tokens": max_new_tokens},
        prepend_bos=prepend_bos,
        **method_kwargs,
    )
    view = out.aggregate(aggregate) if aggregate else out
    if show:
        view.show()
    if save_path:
        print(f"saved {out.save(save_path, overwrite=overwrite)}")
    if figure:
        from hooklab.output.style import save

        fig = view.plot(title=f"{method} of {attributed_fn}", spaces=spaces)
        for path in save(fig, figure):
            print(f"saved {path}")
