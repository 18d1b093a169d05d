"""Attention-knockout curves (Geva et al., EMNLP 2023) for one prompt.

Sweeps :func:`hooklab.mixing.attention_knockout` over centre layers for four source sets: the
context cue, the rest of the context, the current sentence and the last token, and writes the
curves as ``knockout_curves.png`` / ``.pdf``. It also blocks the edges from the last position
to the cue in all layers at once and prints P(measured token) before and after; with
``--all_examples`` it does that for every contextual toy example and prints the mean.

Default: the toy model and the first example of ``hooklab/toy/eval_examples.jsonl``: prompt =
context + current sentence + the output text before the context-dependent word, measured token
= that word (its first token).

    python scripts/knockout.py
    python scripts/knockout.py --model path/to/checkpoint --window 3 --all_examples
"""

from __future__ import annotations

import json
import pathlib
import statistics
import sys

import fire

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing the package

import hooklab  # noqa: E402
from hooklab.inputs import encode_prompt, str_tokens  # noqa: E402
from hooklab.mixing import attention_knockout  # noqa: E402
from hooklab.mixing.sequences import token_positions  # noqa: E402
from hooklab.toy import EVAL_EXAMPLES  # noqa: E402


def knockout_case(example: dict) -> tuple[str, str, str, str]:
    """(prompt, measured word, cue word, context) of a toy example."""
    output = example["output_current_text"]
    cut = output.index(example["dependent_word"])
    prompt = f"{example['input_context_text']} {example['input_current_text']}{output[:cut]}"
    measured = " " + example["dependent_word"]
    return prompt.rstrip(), measured, example["cue_word"], example["input_context_text"]


def sources(model, prompt: str, cue: str, context: str) -> dict[str, list[int]]:
    """Cue tokens, other context tokens, current-sentence tokens (last excluded), last token."""
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


def main(
    model: str = "toy",
    example: int = 0,
    window: int = 1,
    out_dir: str = "figures",
    all_examples: bool = False,
    device: str = "cpu",
    dtype: str = "float32",
) -> None:
    """Write the knockout curves; print P(measured token) with the cue blocked in all layers."""
    lines = [json.loads(x) for x in EVAL_EXAMPLES.read_text().splitlines()]
    lm = hooklab.load(model, device=device, dtype=dtype)
    prompt, measured, cue, context = knockout_case(lines[example])
    (curves,) = attention_knockout(
        lm,
        prompt,
        sources=sources(lm, prompt, cue, context),
        measured_token=measured,
        window=window,
    )
    root = pathlib.Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    fig = curves.plot()
    for ext in ("png", "pdf"):
        fig.savefig(root / f"knockout_curves.{ext}", dpi=200, bbox_inches="tight")
    print("prompt:", prompt, "| measured token:", repr(measured))
    curves.show()

    cases = [x for x in lines if x.get("kind", "").startswith("contextual")] if all_examples else []
    cases = cases or [lines[example]]
    drops = []
    for ex in cases:
        prompt, measured, cue, _ = knockout_case(ex)
        (out,) = attention_knockout(
            lm, prompt, sources={"cue": cue}, measured_token=measured, window=None
        )
        before, after = out.base_probability, float(out.probabilities[0, 0])
        drops.append(float(out.relative_change[0, 0]))
        change = f"{100 * drops[-1]:+.1f}%"
        print(f"P({measured!r}) {before:.4f} -> {after:.4f} ({change}), last <- {cue!r} blocked")
    if len(drops) > 1:
        mean = 100 * statistics.mean(drops)
        print(f"mean relative change over {len(drops)} examples: {mean:+.1f}%")
    print("wrote:", root / "knockout_curves.png", root / "knockout_curves.pdf")


if __name__ == "__main__":
    fire.Fire(main)
