"""Information flow's cost against one forward pass, and ALTI-Logit's against saliency.

On the random GPT-2-small-shaped model (benchmarks/common.py ``random_gpt2``), a 20-token
prompt (BOS + 19 words), one thread: ``information_flow`` (routes, threshold 0.04, heads
summed) and ``alti`` (every layer) against one plain forward pass of the same ids (the issue's
goal: routes "in about one forward pass's time"); ``alti_logit`` against ``saliency`` through
``hooklab.attribute`` on the same prompt with 10 forced targets. Medians, taking turns.

    python benchmarks/flow_speed.py [--repeats 5]
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fire
import torch

import hooklab
from benchmarks.common import clock, load_average, random_gpt2, take_turns, word_prompt


def main(repeats: int = 5, budget_s: float = 240.0) -> None:
    """Print the medians (seconds) and the ratios to the forward pass and to saliency."""
    torch.set_num_threads(1)
    model = hooklab.load(str(random_gpt2()), device="cpu")
    prompt = word_prompt(19)
    ids = torch.tensor([model.tokenizer(prompt)["input_ids"]])
    targets = " " + word_prompt(10)
    assert ids.shape[1] == 20, ids.shape

    @torch.no_grad()
    def forward():
        return model(ids, prepend_bos=False)

    def run(method):
        return lambda: hooklab.attribute(model, prompt, targets, method=method)

    fns = {
        "forward (20 tokens)": lambda: clock(forward),
        "information_flow (routes)": lambda: clock(
            lambda: hooklab.mixing.information_flow(model, prompt, threshold=0.04)
        ),
        "alti (12 layers)": lambda: clock(lambda: hooklab.mixing.alti(model, prompt, targets="")),
        "saliency (10 targets)": lambda: clock(run("saliency")),
        "alti_logit (10 targets)": lambda: clock(run("alti_logit")),
    }
    for fn in fns.values():  # warm-up
        fn()
    times = {k: statistics.median(v) for k, v in take_turns(fns, repeats, budget_s).items()}
    base = {"forward": times["forward (20 tokens)"], "saliency": times["saliency (10 targets)"]}
    print(f"random GPT-2-small shape, 1 thread, {load_average()}")
    print(f"{'workload':<28}{'median s':>10}{'/ forward':>11}{'/ saliency':>12}")
    for name, seconds in times.items():
        print(
            f"{name:<28}{seconds:>10.4f}{seconds / base['forward']:>10.1f}x"
            f"{seconds / base['saliency']:>11.2f}x"
        )


if __name__ == "__main__":
    fire.Fire(main)
