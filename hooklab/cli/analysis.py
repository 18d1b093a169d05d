"""``attribute``, ``mixing`` and ``knockout``: attribution and context mixing on any text.

Each command checks its flags and output paths, loads the model, calls one library function
and writes the figures (PNG and PDF, :mod:`hooklab.output.style`). Default figure names follow
the method (``attribution_{method}``) and the example (``knockout_{example}``, where
``{example}`` is ``example0`` for a toy example or ``text-...`` for ``--text``).
"""

from __future__ import annotations

import inspect
import statistics
from typing import Any

from hooklab.cli.args import Option, UsageError
from hooklab.cli.checks import (
    check_outputs,
    check_window,
    depth_window,
    figure_paths,
    fill_path,
    layer_list,
    positions,
    slug,
    source_sets,
    toy_example,
    toy_examples,
)

DEFAULT_PROMPT = "George was sick yesterday. His colleagues asked him to come"


def method_options() -> list[Option]:
    """Every attribution method's own options (typed by their defaults), for ``--help``."""
    from hooklab.cli.args import docstring_sections
    from hooklab.methods import METHODS

    found: dict[str, list[tuple[str, Any, str]]] = {}
    for name in METHODS.names():
        fn = METHODS.get(name).fn
        described = docstring_sections(fn.__doc__)[1]
        for p in inspect.signature(fn).parameters.values():
            if p.kind == p.KEYWORD_ONLY and p.name != "attributed_fn":
                found.setdefault(p.name, []).append((name, p.default, described.get(p.name, "")))
    options = []
    for option, uses in found.items():
        default = uses[0][1]
        hint = type(default) if isinstance(default, (bool, int, float, str)) else Any
        text = next((d for _, _, d in uses if d), "")
        shown = ", ".join(f"{method}: {value!r}" for method, value, _ in uses)
        options.append(Option(option, hint, default, text, default_text=shown))
    return options


def _check_method(method: str, method_kwargs: dict[str, Any]) -> None:
    from hooklab.methods import METHODS

    try:
        fn = METHODS.get(method).fn
    except KeyError as err:
        raise UsageError(err.args[0]) from None
    own = [p.name for p in inspect.signature(fn).parameters.values() if p.kind == p.KEYWORD_ONLY]
    for name in method_kwargs:
        if name not in own or name == "attributed_fn":
            valid = ", ".join(f"--{n}" for n in own if n != "attributed_fn") or "none"
            raise UsageError(f"--{name} is not an option of {method!r} (its options: {valid}).")


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
    batch_size: int = 8,
    show_progress: bool = True,
    restart: bool = False,
    keep_hidden: bool = False,
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
    """
    from hooklab.output.aggregate import GROUPINGS
    from hooklab.steps import STEP_FUNCTIONS

    _check_method(method, method_kwargs)
    for name in (attributed_fn, *step_scores):
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
    if max_new_tokens < 1:
        raise UsageError(f"--max_new_tokens must be a positive int, got {max_new_tokens}.")
    if input is not None or output is not None:
        from hooklab.cli.datasets import attribute_dataset, check_dataset_flags

        one = {"--prompt": prompt, "--target": target, "--save_path": save_path}
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
    out = hooklab.attribute(
        model,
        DEFAULT_PROMPT if prompt is None else prompt,
        target,
        method=method,
        attributed_fn=attributed_fn,
        step_scores=list(step_scores),
        generation_kwargs={"max_new_tokens": max_new_tokens},
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


def _texts(text: str | None, example: int) -> tuple[dict[str, Any] | None, str]:
    """The toy example (None with ``--text``) and the ``{example}`` part of file names."""
    if text is not None:
        if not text.strip():
            raise UsageError("--text is empty.")
        return None, slug(text)
    return toy_example(example), f"example{example}"


def mixing(
    model: str = "toy",
    text: str | None = None,
    targets: str | None = None,
    word: str | None = None,
    cue: str | None = None,
    example: int = 0,
    part: str | None = None,
    layers: str | None = None,
    metric: str = "cosine",
    panels: int = 12,
    out_prefix: str = "figures/value_zeroing_{example}",
    overwrite: bool = False,
    device: str | None = None,
    dtype: str | None = None,
) -> None:
    """Value-zeroing context mixing (Mohebbi et al., 2023) of a text: figures and scores.

    Writes {out_prefix}_layers (per-layer heatmaps; at most --panels layers, evenly spaced),
    _rollout (mixing rolled out over the layers), _query_layers (layer x key for the query
    token: every layer in one panel), _target_mixing (the query token's mixing per layer, as
    lines) as PNG and PDF, and {out_prefix}.safetensors (the scores).

    Args:
        model: "toy" (the embedded model), a checkpoint directory or a hub name.
        text: the prompt; default: toy example --example (its context + current sentence).
        targets: forced continuation; default: the toy example's output (with --text: None
            generates one).
        word: the query token whose mixing is plotted (a word of the targets); default: the
            toy example's context-dependent word, else the last token.
        cue: a context word always drawn in the per-layer lines (default: the toy example's).
        example: which toy example (0-based) to use when --text is not given.
        part: encoder-decoder models: "encoder", "decoder" or "cross" attention.
        layers: layers to score, e.g. 0:4 or 1,3 (default: all).
        metric: "cosine" or "euclidean" distance.
        panels: the most layers in the per-layer grid (evenly spaced).
        out_prefix: where the files go ({example} is example0 or text-<first words>).
        overwrite: replace existing output files (otherwise an existing file is an error).
        device: torch device (default: CUDA if available, else CPU).
        dtype: torch dtype, e.g. "float32".
    """
    from hooklab.mixing.plot import (
        plot_layers,
        plot_matrix,
        plot_query_layers,
        plot_token_mixing,
        top_keys,
    )
    from hooklab.mixing.sequences import token_positions
    from hooklab.mixing.value_zeroing import metric_fn

    ex, name = _texts(text, example)
    if ex is not None:
        text, targets = (
            ex["input_context_text"] + " " + ex["input_current_text"],
            (ex["output_current_text"] if targets is None else targets),
        )
        word = ex["dependent_word"] if word is None else word
        cue = ex["cue_word"] if cue is None else cue
    try:
        metric_fn(metric)
    except (KeyError, ValueError) as err:
        raise UsageError(err.args[0]) from None
    if part not in (None, "encoder", "decoder", "cross"):
        raise UsageError(f"--part must be 'encoder', 'decoder' or 'cross', got {part!r}.")
    if panels < 1:
        raise UsageError(f"--panels must be a positive int, got {panels}.")
    chosen = layer_list(layers)
    prefix = fill_path(out_prefix, "--out_prefix", example=name)
    kinds = ["layers", "query_layers", "target_mixing"] + ([] if part == "cross" else ["rollout"])
    outputs = {k: f"{prefix}_{k}.png" for k in kinds}
    check_outputs(
        [f"{prefix}.safetensors", *(p for f in outputs.values() for p in figure_paths(f))],
        overwrite,
    )

    import hooklab
    from hooklab.mixing import value_zeroing

    lm = hooklab.load(model, device=device, dtype=dtype)
    rollout = part != "cross"
    (out,) = value_zeroing(lm, text, targets=targets, part=part, layers=chosen, metric=metric,
                           rollout=rollout)  # fmt: skip
    start = out.target_start or 0
    query = len(out.tokens) - 1
    if word is not None:
        query = start + token_positions(out.tokens[start:], word, "word")[0]
    keys, cue_pos = top_keys(out, query, 5), []
    if cue is not None:
        context = out.keys[: (start or None) if out.key_tokens is None else None]
        cue_pos = token_positions(context, cue, "cue")
        keys = sorted({*keys, *cue_pos})
    from hooklab.output.style import save

    figures = {
        "layers": plot_layers(out, max_panels=panels),
        "query_layers": plot_query_layers(out, query, rollout=False),
        "target_mixing": plot_token_mixing(out, query, keys=keys, highlight=cue_pos),
    }
    if rollout:
        figures["rollout"] = plot_matrix(out, rollout=True, annotate=False)
    written = [p for k, fig in figures.items() for p in save(fig, outputs[k])]
    written.append(out.save(f"{prefix}.safetensors", overwrite=overwrite))
    print("text:", "".join(out.tokens))
    print("query token:", repr(out.tokens[query]), "at", query)
    out.show(color=False)
    print("\n".join(["wrote:", *map(str, written)]))


def _toy_case(ex: dict[str, Any]) -> tuple[str, str, str, str]:
    """(prompt, measured word, cue word, context) of a toy example."""
    output = ex["output_current_text"]
    cut = output.index(ex["dependent_word"])
    prompt = f"{ex['input_context_text']} {ex['input_current_text']}{output[:cut]}"
    return prompt.rstrip(), " " + ex["dependent_word"], ex["cue_word"], ex["input_context_text"]


def _toy_sources(model, prompt: str, cue: str, context: str) -> dict[str, list[int]]:
    """Cue tokens, other context tokens, current-sentence tokens (last excluded), last token."""
    from hooklab.inputs import encode_prompt, str_tokens
    from hooklab.mixing.sequences import token_positions

    tokens = str_tokens(model, encode_prompt(model, prompt))
    cue_pos = token_positions(tokens, cue, "cue")
    ctx = token_positions(tokens, context, "context")
    ctx = list(range(1 if len(tokens) > 1 else 0, ctx[-1] + 1))  # BOS excluded
    return {
        "cue": cue_pos,
        "other context": [p for p in ctx if p not in cue_pos],
        "current": list(range(ctx[-1] + 1, len(tokens) - 1)),
        "last": [len(tokens) - 1],
    }


def knockout(
    model: str = "toy",
    text: str | None = None,
    sources: str | None = None,
    measured_token: str | None = None,
    query: str = "-1",
    window: int | str = "auto",
    layers: str | None = None,
    part: str | None = None,
    example: int = 0,
    all_examples: bool = False,
    figure_path: str | None = "figures/knockout_{example}.png",
    save_path: str | None = None,
    overwrite: bool = False,
    device: str | None = None,
    dtype: str | None = None,
) -> None:
    """Attention-knockout curves (Geva et al., 2023): block query <- source edges per layer window.

    For each source set, blocks the attention edges from the query token(s) to the source
    tokens in a window of layers around each centre layer and plots the relative change of
    P(measured token). Then blocks the cue in all layers at once and prints P before and after
    (with --all_examples, for every contextual toy example, and the mean).

    Args:
        model: "toy" (the embedded model), a checkpoint directory or a hub name.
        text: the prompt; default: toy example --example (context + current sentence + the
            output up to its context-dependent word).
        sources: source sets, ";"-separated, each [name=] a word of the text or positions:
            "cue=sick; ctx=1:6; last=-1". Default: for a toy example its cue, the other
            context, the current sentence and the last token; with --text the last token and
            all others.
        measured_token: the token whose probability is measured (its first token); default:
            the toy example's context-dependent word, with --text the model's prediction.
        query: the query position(s) or word whose edges are blocked (default: the last token).
        window: layers blocked around each centre: "auto" = a quarter of the model's layers
            (at least 1; 1 for the 4-layer toy model, 3 for GPT-2 small), an int, or "all"
            (every layer at once: one bar per source set).
        layers: centre layers to sweep, e.g. 0:6 or 2,4 (default: all).
        part: encoder-decoder models: "cross" (default), "decoder" or "encoder" attention.
        example: which toy example (0-based) to use when --text is not given.
        all_examples: also block the cue in every contextual toy example and print the mean.
        figure_path: the curves, PNG and PDF ({example} is example0 or text-<first words>).
        save_path: write the knockout output (safetensors + JSON metadata).
        overwrite: replace existing output files (otherwise an existing file is an error).
        device: torch device (default: CUDA if available, else CPU).
        dtype: torch dtype, e.g. "float32".
    """
    ex, name = _texts(text, example)
    check_window(window)
    spec = source_sets(sources) if sources is not None else None
    query_pos = positions(query, "--query")
    centres = layer_list(layers)
    if part not in (None, "encoder", "decoder", "cross"):
        raise UsageError(f"--part must be 'encoder', 'decoder' or 'cross', got {part!r}.")
    figure = fill_path(figure_path, "--figure_path", example=name) if figure_path else None
    check_outputs([save_path, *(figure_paths(figure) if figure else [])], overwrite)

    import hooklab
    from hooklab.mixing import attention_knockout
    from hooklab.mixing.adapter import model_adapter

    lm = hooklab.load(model, device=device, dtype=dtype)
    if ex is not None:
        text, measured, cue, context = _toy_case(ex)
        measured_token = measured if measured_token is None else measured_token
        spec = spec or _toy_sources(lm, text, cue, context)
    n_layers = model_adapter(lm, part).n_layers
    (curves,) = attention_knockout(
        lm, text, sources=spec, measured_token=measured_token, part=part, query=query_pos,
        window=depth_window(window, n_layers), layers=centres,
    )  # fmt: skip
    print("prompt:", text, "| measured token:", repr(curves.target_token))
    curves.show()
    if save_path:
        print(f"saved {curves.save(save_path, overwrite=overwrite)}")
    if figure:
        from hooklab.output.style import save

        for path in save(curves.plot(), figure):
            print(f"saved {path}")
    if ex is None:
        return
    cases = [x for x in toy_examples() if x.get("kind", "").startswith("contextual")]
    drops = []
    for case in cases if all_examples else [ex]:
        prompt, measured, cue, _ = _toy_case(case)
        (out,) = attention_knockout(lm, prompt, sources={"cue": cue}, measured_token=measured,
                                    window=None)  # fmt: skip
        before, after = out.base_probability, float(out.probabilities[0, 0])
        drops.append(float(out.relative_change[0, 0]))
        change = f"{100 * drops[-1]:+.1f}%"
        print(f"P({measured!r}) {before:.4f} -> {after:.4f} ({change}), last <- {cue!r} blocked")
    if len(drops) > 1:
        print(
            f"mean relative change over {len(drops)} examples: {100 * statistics.mean(drops):+.1f}%"
        )
