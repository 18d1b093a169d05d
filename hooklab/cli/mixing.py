"""``mixing`` and ``knockout``: value-zeroing context mixing and attention knockout on any text.

Each command checks its flags and output paths, loads the model, calls one library function
and writes the figures (PNG and PDF, :mod:`hooklab.output.style`). Default figure names follow
the example (``knockout_{example}``, where ``{example}`` is ``example0`` for a toy example or
``text-...`` for ``--text``).
"""

from __future__ import annotations

import statistics
from typing import Any

from hooklab.cli.args import UsageError
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
    from hooklab.mixing.adapter import model_adapter

    lm = hooklab.load(model, device=device, dtype=dtype)
    part = model_adapter(lm, part).part  # None: "cross" on encoder-decoder models
    rollout = part != "cross"  # rollout composes square matrices
    (out,) = value_zeroing(lm, text, targets=targets, part=part, layers=chosen, metric=metric,
                           rollout=rollout)  # fmt: skip
    from hooklab.mixing.recipes import query_position, value_zeroing_figures
    from hooklab.output.style import save

    query = query_position(out, word)
    figures = value_zeroing_figures(out, query=query, cue=cue, panels=panels)
    written = [p for k, fig in figures.items() for p in save(fig, outputs[k])]
    written.append(out.save(f"{prefix}.safetensors", overwrite=overwrite))
    print("text:", "".join(out.tokens))
    print("query token:", repr(out.tokens[query]), "at", query)
    out.show(color=False)
    print("\n".join(["wrote:", *map(str, written)]))


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
    from hooklab.mixing.recipes import cue_knockouts, toy_knockout_case, toy_knockout_sources

    lm = hooklab.load(model, device=device, dtype=dtype)
    if ex is not None:
        text, measured, cue, context = toy_knockout_case(ex)
        measured_token = measured if measured_token is None else measured_token
        spec = spec or toy_knockout_sources(lm, text, cue, context)
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
    rows = cue_knockouts(lm, cases if all_examples else [ex])
    for row in rows:
        print(f"P({row['measured']!r}) {row['before']:.4f} -> {row['after']:.4f} "
              f"({100 * row['change']:+.1f}%), last <- {row['cue']!r} blocked")  # fmt: skip
    if len(rows) > 1:
        mean = statistics.mean(row["change"] for row in rows)
        print(f"mean relative change over {len(rows)} examples: {100 * mean:+.1f}%")
