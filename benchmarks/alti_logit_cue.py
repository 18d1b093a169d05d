"""How often each method ranks the known cue first, on the toy model's evaluation examples.

Every contextual example of ``hooklab/toy/eval_examples.jsonl`` has a cue word in its context
(e.g. "sick") that decides the dependent word of its continuation ("hospital"). At the step
that predicts the dependent word, each method's scores (its default reduction over layers and
heads; ALTI-Logit summed over layers) are ranked over every position the step sees, and we
count the examples where the cue's position comes first. Methods: ALTI-Logit on the target's
logit, ALTI-Logit on the logit difference against the family's next slot value (a foil the
cue rules out), saliency, value zeroing and attention, all with their defaults.

    python benchmarks/alti_logit_cue.py [--limit 100]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fire
import torch

import hooklab
from hooklab.toy import EVAL_EXAMPLES

METHODS = {
    "alti_logit (logit)": ("alti_logit", {}),
    "alti_logit (logit - foil)": ("alti_logit", {"foil": True}),
    "alti_logit, attention only (paper)": ("alti_logit", {"mlp": False}),
    "saliency": ("saliency", {}),
    "value_zeroing": ("value_zeroing", {}),
    "attention": ("attention", {}),
}


def _foils(model, row, slots, target_ids):
    """A foil per target token: the next slot value at the dependent word, else the token."""
    dep = model.tokenizer(" " + row["dependent_word"], add_special_tokens=False)["input_ids"][-1]
    other = slots[(slots.index(row["dependent_word"]) + 1) % len(slots)]
    foil = model.tokenizer(" " + other, add_special_tokens=False)["input_ids"][-1]
    return [foil if t == dep else t for t in target_ids]


def main(limit: int = 100) -> None:
    torch.set_num_threads(1)
    model = hooklab.load("toy", device="cpu")
    truth = json.loads((EVAL_EXAMPLES.parent / "ground_truth.json").read_text())
    slots = {f["name"]: f["slot_values"] for f in truth["families"]}
    rows = [json.loads(line) for line in EVAL_EXAMPLES.read_text().splitlines()]
    rows = [r for r in rows if r["kind"] == "contextual"][:limit]
    prompts = [f"{r['input_context_text']} {r['input_current_text']}" for r in rows]
    targets = [
        model.tokenizer(r["output_current_text"], add_special_tokens=False)["input_ids"]
        for r in rows
    ]
    print(f"toy model, {len(rows)} contextual evaluation examples: cue ranked first at the "
          "dependent word's step\n")  # fmt: skip
    print("| method | cue first | share |\n|---|---|---|")
    for label, (method, opts) in METHODS.items():
        opts = dict(opts)
        extra = {}
        if opts.pop("foil", False):
            extra["contrast_targets"] = [
                _foils(model, r, slots[r["family"]], t) for r, t in zip(rows, targets, strict=True)
            ]
        out = hooklab.attribute(model, prompts, targets, method=method, **opts, **extra)
        hits = 0
        for r, seq in zip(rows, out, strict=True):
            words = [t.strip() for t in seq.tokens]
            step = words.index(r["dependent_word"], seq.target_start) - seq.target_start
            scores = seq.scores()[step]  # the method's default reduction
            hits += words[int(scores.nan_to_num(-torch.inf).argmax())] == r["cue_word"]
        print(f"| {label} | {hits}/{len(rows)} | {hits / len(rows):.2f} |")


if __name__ == "__main__":
    fire.Fire(main)
