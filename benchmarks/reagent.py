"""Benchmark ReAGent on a GPT-2-small-shaped random model, CPU, one thread, against Inseq 0.7.1.

Workload (as ``benchmarks/value_zeroing.py``): GPT2Config(n_layer=12, n_embd=768, n_head=12,
vocab_size=32000) with random non-zero biases and a word-level tokenizer built offline; a
20-token prompt (BOS included) and the 10 tokens hooklab generates greedily, forced in both.
ReAGent with ``num_probes=4, max_probe_steps=50`` (other options at their defaults).

Inseq 0.7.1 runs in its own venv (``/tmp/hooklab-inseq-venv``, made on first use; see
``benchmarks/common.py``) on the same checkpoint and target, in ``benchmarks/inseq_worker.py``.
One adaptation, printed: Inseq's POS-tag token sampler builds its tag table with NLTK data it
downloads (offline here), so the worker gives it one tag for the whole vocabulary; sampling
then costs what it costs with real tags (a table lookup), only the draws are uniform.

Forward passes are counted on both sides (calls and sequences x tokens through the model).

    python benchmarks/reagent.py [--repeats 1] [--skip_inseq]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import fire
import torch

import hooklab
from benchmarks.common import EOT, InseqWorker, random_gpt2, word_prompt
from hooklab.hooks import hook_name, temporary_hooks

INSEQ_QUOTED = 256.0  # Inseq 0.7.1, same workload (quoted in the issue)
OPTIONS = {"num_probes": 4, "max_probe_steps": 50}


def inseq_run(path: str, prompt: str, target: str) -> tuple[dict | None, str | None]:
    """Inseq's ReAGent on the same checkpoint and target, in its venv (uniform POS table)."""
    try:
        with tempfile.TemporaryDirectory() as tmp, InseqWorker(Path(tmp) / "inseq.log") as worker:
            job = {"path": path, "prompt": prompt, "target": target, "load_kwargs": OPTIONS}
            return worker("attribute", method="reagent", **job), None
    except RuntimeError as err:
        return None, str(err)


def counted(model, fn):
    """Run ``fn``; return its time, result, forward calls and sequences x tokens."""
    stats = {"calls": 0, "tokens": 0}

    def count(x, hook):
        stats["calls"] += 1
        stats["tokens"] += x.shape[0] * x.shape[1]

    with temporary_hooks(model, [(hook_name("embed"), count)]):
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
    return seconds, result, stats


def main(repeats: int = 1, skip_inseq: bool = False, seed: int = 0) -> None:
    torch.set_num_threads(1)
    path = str(random_gpt2(seed=seed))
    model = hooklab.load(path, device="cpu", dtype="float32")
    prompt = word_prompt(19)  # + BOS
    gen = hooklab.generate(model, prompt, max_new_tokens=10, stop_at_eos=False)
    target = " " + " ".join(model.tokenizer.convert_ids_to_tokens(gen.output_ids[0]))
    n_target = len(model.tokenizer(target, add_special_tokens=False)["input_ids"])
    print(f"load average {os.getloadavg()[0]:.2f}; prompt 20 tokens, target {n_target}")

    def ours():
        return hooklab.attribute(model, prompt, target, method="reagent", **OPTIONS)

    runs = [counted(model, ours) for _ in range(repeats)]
    seconds, out, stats = min(runs, key=lambda r: r[0])
    seq = out[0]
    one = torch.tensor([seq.token_ids.tolist()])
    with torch.no_grad():
        t_fwd, _, _ = counted(model, lambda: model(one, prepend_bos=False))
    inseq, why = (None, "skipped") if skip_inseq else inseq_run(path, f"{EOT} {prompt}", target)
    conv = seq.extras["reagent_converged"].mean().item()
    print(f"ReAGent {OPTIONS}, GPT-2-small shape (12 x 768, vocab 32000), 1 thread")
    print(f"{'':44s} {'seconds':>8s} {'calls':>6s} {'seq x tok':>9s} {'Inseq/hl':>8s}")
    print(f"{'hooklab':44s} {seconds:8.2f} {stats['calls']:6d} {stats['tokens']:9d} {'':>8s}")
    if inseq is not None:
        ratio = inseq["seconds"] / seconds
        print(f"{'Inseq 0.7.1 measured (uniform POS table)':44s} {inseq['seconds']:8.2f} "
              f"{inseq['calls']:6d} {inseq['tokens']:9d} {ratio:8.2f}")  # fmt: skip
    else:
        print(f"Inseq not measured: {why}")
    print(f"{'Inseq 0.7.1 quoted in the issue':44s} {INSEQ_QUOTED:8.2f} {'':6s} {'':9s} "
          f"{INSEQ_QUOTED / seconds:8.2f}")  # fmt: skip
    print(
        f"one forward of the 30-token sequence: {t_fwd:.3f} s; hooklab = "
        f"{seconds / t_fwd:.0f} forward-equivalents; probes converged: {conv:.2f}"
    )


if __name__ == "__main__":
    fire.Fire(main)
