"""Compare attribution methods by faithfulness (Soft-NS, Soft-NC against random importance).

    python scripts/faithfulness.py                       # toy model, its 100 eval examples
    python scripts/faithfulness.py --n 50 --methods saliency,reagent --seed 1

Prints the table (means and log-ratios against random importance) and saves the figure to
``figures/faithfulness.png`` and ``.pdf``.
"""

from __future__ import annotations

import json
import pathlib

import fire

DEFAULT_METHODS = (
    "saliency", "input_x_gradient", "integrated_gradients", "attention", "value_zeroing",
    "reagent", "occlusion", "random",
)  # fmt: skip


def main(
    model: str = "toy",
    examples: str | None = None,
    n: int = 100,
    methods: str | tuple = DEFAULT_METHODS,
    seed: int = 0,
    out: str = "figures/faithfulness",
) -> None:
    names = methods.split(",") if isinstance(methods, str) else list(methods)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"--n must be a positive int, got {n!r}.")
    import torch

    import hooklab
    from hooklab.faithfulness import compare_methods, plot_comparison
    from hooklab.methods import METHODS
    from hooklab.output.style import save
    from hooklab.toy import EVAL_EXAMPLES

    for name in names:
        if name != "random":
            METHODS.get(name)  # KeyError listing the valid names, before loading the model
    torch.set_num_threads(1)
    path = pathlib.Path(examples) if examples else EVAL_EXAMPLES
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()][:n]
    prompts = [f"{r['input_context_text']} {r['input_current_text']}".strip() for r in rows]
    targets = [r["output_current_text"] for r in rows]
    lm = hooklab.load(model, device="cpu")
    results = compare_methods(lm, prompts, targets, {m: {} for m in names}, seed=seed)
    print(f"{len(rows)} examples, {model}, seed {seed}")
    header = ["method", "Soft-NS", "Soft-NC", "log(NS/rand)", "log(NC/rand)"]
    print("{:22s} {:>8s} {:>8s} {:>13s} {:>13s}".format(*header))
    for name, res in results.items():
        s = res.summary()
        print(f"{name:22s} {s['soft_ns']:8.3f} {s['soft_nc']:8.3f} "
              f"{s['log_ratio_soft_ns']:13.3f} {s['log_ratio_soft_nc']:13.3f}")  # fmt: skip
    written = save(plot_comparison(results), out)  # the paper style: TrueType fonts in PDF
    print("saved " + " and ".join(str(p) for p in written))


if __name__ == "__main__":
    fire.Fire(main)
