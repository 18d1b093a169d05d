"""Attribution speed on a GPU: a GPT-2-small-shaped random model, built offline, on CUDA.

    python benchmarks/gpu_speed.py                        # cuda:0, about a minute on one GPU
    python benchmarks/gpu_speed.py --device cpu --quick   # a smoke run anywhere

The model is the benchmarks' random GPT-2 (``benchmarks/common.py``: GPT2Config n_layer=12,
n_embd=768, n_head=12, vocab 32000, random non-zero biases, a word-level tokenizer; built once
under ``$HOOKLAB_BENCH_CACHE``, nothing downloaded), float32. Workload: a 20-token prompt (BOS
included) and 10 forced target tokens, ``attributed_fn="probability"``. ``--quick``: the tiny
GPT-2 (2 x 64, vocab 2000), 10 and 4 tokens, fewer IG points and probes, one repeat.

Rows: saliency, integrated gradients (``n_steps`` 32), occlusion, value zeroing
(``hooklab.mixing.value_zeroing`` on the forced sequence), and ReAGent (``num_probes`` 8,
``max_probe_steps`` 50, uniform replacements; ``--quick``: 8 IG steps, 2 probes of at most 10
steps) twice: batched (one call, every step's probes
together, as hooklab runs it) and a per-step loop (one call per target step with
``attr_pos_start=t, attr_pos_end=t + 1``, the way a per-step implementation runs it). Each row
is warmed up once, then timed ``--repeats`` times with ``torch.cuda.synchronize()`` around the
call; the median is printed, with the time in units of one forward pass over the whole
sequence and, on CUDA, the peak memory allocated during the call above what was allocated
before it (``torch.cuda.max_memory_allocated``).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import hooklab  # noqa: E402
from benchmarks.common import VOCAB, random_gpt2, word_prompt  # noqa: E402
from hooklab.mixing import value_zeroing  # noqa: E402

#: method options of the full run and of ``--quick``
OPTIONS = {
    "full": {"n_steps": 32, "reagent": {"num_probes": 8, "max_probe_steps": 50}},
    "quick": {"n_steps": 8, "reagent": {"num_probes": 2, "max_probe_steps": 10}},
}


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> tuple[float, float]:
    """Median seconds of ``fn`` after one warm-up run, and its peak extra CUDA memory (MB)."""
    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    fn()
    times, peak = [], 0.0
    for _ in range(repeats):
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
        if cuda:
            peak = max(peak, (torch.cuda.max_memory_allocated(device) - base) / 2**20)
    return statistics.median(times), peak


def rows(model, prompt: str, target: str, n_targets: int, options: dict) -> dict[str, Callable]:
    """The timed calls, by row name."""
    reagent = {**options["reagent"], "replacements": "uniform"}

    def attribute(method: str, **kwargs):
        return lambda: hooklab.attribute(model, prompt, target, method=method, **kwargs)

    def reagent_per_step():
        for t in range(n_targets):
            hooklab.attribute(model, prompt, target, method="reagent", attr_pos_start=t,
                              attr_pos_end=t + 1, **reagent)  # fmt: skip

    n_steps = options["n_steps"]
    return {
        "saliency": attribute("saliency"),
        f"integrated_gradients ({n_steps} steps)": attribute(
            "integrated_gradients", n_steps=n_steps
        ),
        "occlusion": attribute("occlusion"),
        "value_zeroing": lambda: value_zeroing(model, prompt, targets=target),
        f"reagent batched {options['reagent']}": attribute("reagent", **reagent),
        "reagent per-step loop (same options)": reagent_per_step,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="torch device (default: cuda)")
    parser.add_argument("--quick", action="store_true", help="shorter texts, one repeat")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per row")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("No CUDA device (torch.cuda.is_available() is False); pass --device cpu.")
    n_prompt, n_targets = (10, 4) if args.quick else (20, 10)
    repeats = 1 if args.quick else args.repeats
    model = hooklab.load(random_gpt2(tiny=args.quick), device=str(device), dtype="float32")
    vocab = model.cfg.d_vocab
    prompt = word_prompt(n_prompt - 1, vocab)  # + BOS
    target = " " + " ".join(f"w{(53 * i + 7) % (vocab - 1) + 1}" for i in range(n_targets))
    sequence = hooklab.attribute(model, prompt, target)[0].token_ids[None].to(device)
    with torch.no_grad():
        forward, _ = timed(lambda: model(sequence, prepend_bos=False), device, max(repeats, 5))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}; torch {torch.__version__}; load average {os.getloadavg()[0]:.2f}")
    shape = (
        "GPT-2 tiny (2 x 64, vocab 2000)"
        if args.quick
        else f"GPT-2-small (12 x 768, vocab {VOCAB})"
    )
    print(f"{shape}, float32; prompt {n_prompt} tokens, {n_targets} forced targets; "
          f"one forward: {1e3 * forward:.1f} ms")  # fmt: skip
    print(f"{'row':60s} {'seconds':>8s} {'fwd-eq':>7s} {'peak MB':>8s}")
    options = OPTIONS["quick" if args.quick else "full"]
    for label, fn in rows(model, prompt, target, n_targets, options).items():
        seconds, peak = timed(fn, device, repeats)
        mb = f"{peak:8.0f}" if device.type == "cuda" else f"{'-':>8s}"
        print(f"{label:60s} {seconds:8.3f} {seconds / forward:7.0f} {mb}", flush=True)


if __name__ == "__main__":
    main()
