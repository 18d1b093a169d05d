"""``routes``: the information-flow routes of one prediction (Ferrando and Voita, 2024).

Checks its flags and output paths, loads the model, calls
:func:`hooklab.mixing.information_flow` once and writes the route figure (PNG and PDF) and,
with ``--save_path``, the routes (safetensors + JSON metadata).
"""

from __future__ import annotations

from hooklab.cli.args import UsageError
from hooklab.cli.checks import check_outputs, figure_paths, fill_path, slug, toy_example


def routes(
    model: str = "toy",
    text: str | None = None,
    targets: str = "",
    threshold: float = 0.04,
    position: int = -1,
    per_head: bool = True,
    example: int = 0,
    figure_path: str | None = "figures/routes_{example}.png",
    save_path: str | None = None,
    overwrite: bool = False,
    device: str | None = None,
    dtype: str | None = None,
) -> None:
    """Information-flow routes (Ferrando and Voita, 2024): the edges that matter for a prediction.

    Args:
        model: "toy" (the embedded model), a checkpoint directory or a hub name.
        text: the prompt (the source of an encoder-decoder model); default: toy example
            --example (its context and current sentence).
        targets: a forced continuation (an encoder-decoder model's decoder input after its
            start token); default none.
        threshold: keep edges whose importance (share of their target state) is above it.
        position: the predicting position (negative counts from the end).
        per_head: one attention edge per head (else one per source token).
        example: which toy example (0-based) to use when --text is not given.
        figure_path: the route figure, PNG and PDF ({example} is example0 or text-<words>).
        save_path: write the routes (safetensors + JSON metadata).
        overwrite: replace existing output files (otherwise an existing file is an error).
        device: torch device (default: CUDA if available, else CPU).
        dtype: torch dtype, e.g. "float32".
    """
    if not 0 <= threshold < 1:
        raise UsageError(f"--threshold must be in [0, 1), got {threshold!r}.")
    if text is not None and not text.strip():
        raise UsageError("--text is empty.")
    if text is None:
        row = toy_example(example)
        text, name = f"{row['input_context_text']} {row['input_current_text']}", f"example{example}"
    else:
        name = slug(text)
    figure = fill_path(figure_path, "--figure_path", example=name) if figure_path else None
    check_outputs([save_path, *(figure_paths(figure) if figure else [])], overwrite)

    import hooklab
    from hooklab.mixing import information_flow

    lm = hooklab.load(model, device=device, dtype=dtype)
    out = information_flow(
        lm, text, targets=targets, threshold=threshold, position=position, per_head=per_head
    )
    print(f"{len(out.weights)} edges above {threshold:g} over {len(out.nodes)} nodes")
    if save_path:
        print(f"saved {out.save(save_path, overwrite=overwrite)}")
    if figure:
        from hooklab.output.style import save

        for path in save(out.plot(), figure):
            print(f"saved {path}")
