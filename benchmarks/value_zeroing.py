"""Benchmark value zeroing on a GPT-2-small-shaped random model, CPU, one thread.

Model: GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=32000) with random non-zero
biases and a word-level tokenizer built offline, saved once under ``$HOOKLAB_BENCH_CACHE``. Input: a
20-token prompt (BOS included) + 10 greedily generated tokens.

Printed side by side:
- hooklab: ``hooklab.mixing.value_zeroing`` (generation included, and on the forced sequence,
  also with ``fast_path=False``: the general path that reruns the model's own blocks);
- naive: Inseq's algorithm (``tests/reference/mixing.py``): one full forward per zeroed
  token, values zeroed in every layer, each layer's output put back to the clean one;
- optionally the per-layer naive reference used in the tests (one forward per layer and token);
- one full forward of the 30-token sequence, and our time in forward-pass equivalents;
- Inseq 0.7.1: quoted (about 6.3 s on this machine with transformers 4.57), and measured in
  the same run with ``--inseq``, in Inseq's venv (``benchmarks/common.py``; Inseq's value
  zeroing fails on GPT-2 with transformers 5; with 4.57 it needs
  ``value_vector="value_states"``, set by ``benchmarks/inseq_worker.py``).

    python benchmarks/value_zeroing.py [--repeats 3] [--per_layer_reference] [--inseq]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # also for tests.reference

import fire
import torch

import hooklab
from benchmarks.common import (
    EOT,
    VOCAB,
    InseqWorker,
    median_time,
    random_gpt2,
    word_prompt,
)
from hooklab.mixing import value_zeroing
from tests.reference.mixing import ref_value_zeroing, ref_value_zeroing_per_token

INSEQ_SECONDS = 6.3  # Inseq 0.7.1, transformers 4.57, same machine (quoted from issue 4)


def inseq_seconds(path: str, prompt: str, repeats: int) -> float:
    """Time Inseq's value zeroing (generation included) in its venv: the fastest of
    ``repeats`` runs after a warm-up."""
    job = {"path": path, "method": "value_zeroing", "prompt": prompt}
    gen = {"max_new_tokens": 10, "min_new_tokens": 10, "do_sample": False}
    with tempfile.TemporaryDirectory() as tmp, InseqWorker(Path(tmp) / "inseq.log") as worker:
        runs = [worker("attribute", **job, attribute_kwargs={"generation_args": gen})
                for _ in range(repeats + 1)]  # fmt: skip
    return min(run["seconds"] for run in runs[1:])


def main(
    repeats: int = 3,
    per_layer_reference: bool = False,
    seed: int = 0,
    inseq: bool = False,
) -> None:
    torch.set_num_threads(1)
    path = str(random_gpt2(seed=seed))
    model = hooklab.load(path, device="cpu", dtype="float32")
    prompt = word_prompt(19)  # + BOS
    t_inseq = inseq_seconds(path, f"{EOT} {prompt}", 2) if inseq else None
    run(model, prompt, repeats, per_layer_reference, t_inseq)


def run(model, prompt: str, repeats: int, per_layer_reference: bool, t_inseq) -> None:
    """Time everything and print the table."""
    gen = {"max_new_tokens": 10, "stop_at_eos": False}

    value_zeroing(model, prompt, generation_kwargs=gen)  # warm-up
    t_ours, (out,) = median_time(
        lambda: value_zeroing(model, prompt, generation_kwargs=gen), repeats
    )
    ids = out.token_ids.tolist()
    if len(ids) != 30:
        raise RuntimeError(f"Expected 20 + 10 tokens, got {len(ids)}.")
    target = " " + " ".join(out.tokens[20:])
    t_forced, _ = median_time(lambda: value_zeroing(model, prompt, targets=target), repeats)
    t_general, _ = median_time(
        lambda: value_zeroing(model, prompt, targets=target, fast_path=False), repeats
    )
    tokens = torch.tensor([ids])
    with torch.no_grad():
        t_forward, _ = median_time(lambda: model(tokens, prepend_bos=False), repeats)
        layers = list(range(model.cfg.n_layers))
        t_naive, naive = median_time(lambda: ref_value_zeroing_per_token(model, ids, layers), 1)
    err = (out.scores - naive).abs().max().item()

    rows = [
        ("hooklab value_zeroing (generation included)", t_ours),
        ("hooklab value_zeroing (forced 30-token sequence)", t_forced),
        ("  the same, fast_path=False (the model's own blocks)", t_general),
        ("naive: one forward per zeroed token (Inseq's algorithm)", t_naive),
        ("Inseq 0.7.1 (quoted; transformers 4.57, same machine)", INSEQ_SECONDS),
        ("one full forward pass (30 tokens)", t_forward),
    ]
    if t_inseq is not None:
        rows.insert(3, ("Inseq 0.7.1 measured in this run (transformers 4.57)", t_inseq))
    if per_layer_reference:
        with torch.no_grad():
            t_ref, _ = median_time(
                lambda: [ref_value_zeroing(model, ids, la) for la in range(12)], 1
            )
        rows.insert(3, ("naive: one forward per layer and token (test reference)", t_ref))
    print(f"value zeroing, GPT-2-small shape (12 x 768, vocab {VOCAB}), 20 + 10 tokens, 1 thread")
    print(f"{'':58s} {'seconds':>8s} {'x ours':>7s} {'forwards':>8s}")
    for name, seconds in rows:
        print(f"{name:58s} {seconds:8.3f} {seconds / t_ours:7.1f} {seconds / t_forward:8.1f}")
    print(
        f"max |ours - naive| = {err:.1e} in float32: the naive side's 1 - cos cancels (in "
        "float64 the two agree to ~1e-12; ours in float32 is within ~2e-7 of float64)"
    )


if __name__ == "__main__":
    fire.Fire(main)
