"""Value-zeroing figures (Mohebbi et al., EACL 2023) for one text.

Runs :func:`hooklab.mixing.value_zeroing` with rollout and writes, as PNG and PDF:

- ``value_zeroing_layers``: a grid of per-layer mixing heatmaps with token labels;
- ``value_zeroing_rollout``: the mixing matrix rolled out over all layers;
- ``value_zeroing_target_mixing``: per layer, how much the target token (the context-dependent
  word) mixes in each context token (the cue and the strongest others);
- ``value_zeroing.safetensors``: the scores themselves (:meth:`MixingOutput.load` reads them).

Default: the toy model and the first example of ``hooklab/toy/eval_examples.jsonl`` (prompt =
context + current sentence, forced target = its output text).

    python scripts/mixing.py
    python scripts/mixing.py --model path/to/checkpoint --text "..." --targets " ..." --word x
"""

from __future__ import annotations

import json
import pathlib
import sys

import fire

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing the package

import hooklab  # noqa: E402
from hooklab.mixing import value_zeroing  # noqa: E402
from hooklab.mixing.plot import plot_layers, plot_matrix, plot_token_mixing, top_keys  # noqa: E402
from hooklab.mixing.sequences import token_positions  # noqa: E402
from hooklab.toy import EVAL_EXAMPLES  # noqa: E402


def toy_example(index: int = 0) -> dict:
    """Example ``index`` of the toy eval set, with its prompt (context + current sentence)."""
    lines = EVAL_EXAMPLES.read_text().splitlines()
    example = json.loads(lines[index])
    example["prompt"] = example["input_context_text"] + " " + example["input_current_text"]
    return example


def save(fig, out_dir: pathlib.Path, name: str) -> list[str]:
    paths = [out_dir / f"{name}.{ext}" for ext in ("png", "pdf")]
    for path in paths:
        fig.savefig(path, dpi=200, bbox_inches="tight")
    return [str(p) for p in paths]


def main(
    model: str = "toy",
    text: str | None = None,
    targets: str | None = None,
    word: str | None = None,
    cue: str | None = None,
    example: int = 0,
    out_dir: str = "figures",
    metric: str = "cosine",
    device: str = "cpu",
    dtype: str = "float32",
) -> None:
    """Write the value-zeroing figures.

    Args:
        model: "toy", a checkpoint directory or a hub name.
        text: the prompt (default: the toy example's context + current sentence).
        targets: forced continuation (default: the toy example's output; None with a custom
            ``text`` generates one).
        word: the target word whose mixing is plotted per layer (default: the toy example's
            context-dependent word; else the last token).
        cue: a context word always drawn in the per-layer plot (default: the toy example's cue).
        example: which toy example to use when ``text`` is not given.
    """
    if text is None:
        ex = toy_example(example)
        text, targets = ex["prompt"], ex["output_current_text"] if targets is None else targets
        word = ex["dependent_word"] if word is None else word
        cue = ex["cue_word"] if cue is None else cue
    lm = hooklab.load(model, device=device, dtype=dtype)
    (out,) = value_zeroing(lm, text, targets=targets, metric=metric, rollout=True)
    start = out.target_start or 0
    query = len(out.tokens) - 1
    if word is not None:
        query = start + token_positions(out.tokens[start:], word, "word")[0]
    keys, cue_pos = top_keys(out, query, 5), []
    if cue is not None:
        cue_pos = token_positions(out.tokens[:start], cue, "cue")
        keys = sorted({*keys, *cue_pos})

    root = pathlib.Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    written = save(plot_layers(out), root, "value_zeroing_layers")
    written += save(plot_matrix(out, rollout=True, annotate=False), root, "value_zeroing_rollout")
    written += save(
        plot_token_mixing(out, query, keys=keys, highlight=cue_pos),
        root,
        "value_zeroing_target_mixing",
    )
    written.append(str(out.save(root / "value_zeroing.safetensors", overwrite=True)))
    print("text:", "".join(out.tokens))
    print("query token:", repr(out.tokens[query]), "at", query)
    out.show(color=False)
    print("\n".join(["wrote:", *written]))


if __name__ == "__main__":
    fire.Fire(main)
