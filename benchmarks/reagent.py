"""Benchmark ReAGent on a GPT-2-small-shaped random model, CPU, one thread, against Inseq 0.7.1.

Workload (as ``benchmarks/value_zeroing.py``): GPT2Config(n_layer=12, n_embd=768, n_head=12,
vocab_size=32000) with random non-zero biases and a word-level tokenizer built offline; a
20-token prompt (BOS included) and the 10 tokens hooklab generates greedily, forced in both.
ReAGent with ``num_probes=4, max_probe_steps=50`` (other options at their defaults).

Inseq 0.7.1 runs in its own venv (``/tmp/hooklab-inseq-venv``, made on first use as in
``benchmarks/pecore.py``) on the same checkpoint and forced target. One adaptation, printed:
Inseq's POS-tag token sampler builds its tag table with NLTK data it downloads (offline here),
so the runner gives it one tag for the whole vocabulary; sampling then costs what it costs with
real tags (a table lookup), only the draws are uniform.

Forward passes are counted on both sides (calls and sequences x tokens through the model).

    python benchmarks/reagent.py [--repeats 1] [--skip_inseq]
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import fire
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import hooklab  # noqa: E402
from benchmarks.pecore import VENV, ensure_inseq  # noqa: E402
from benchmarks.value_zeroing import build_model  # noqa: E402
from hooklab.hooks import hook_name, temporary_hooks  # noqa: E402

INSEQ_QUOTED = 256.0  # Inseq 0.7.1, same workload (quoted in the issue)
OPTIONS = {"num_probes": 4, "max_probe_steps": 50}
# Runs in Inseq's venv: argv = model dir, prompt, target, options JSON. Prints one JSON line.
INSEQ_SCRIPT = r"""
import json, os, sys, time
import torch
torch.set_num_threads(1)
import inseq
from inseq.attr.feat.ops.reagent_core import token_sampler
from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast
# NLTK's tagger data cannot be downloaded here: one tag for the whole vocabulary.
token_sampler.POSTagTokenSampler.build_pos_mapping_from_vocab = staticmethod(
    lambda *a, tokenizer, **k: {"ALL": list(range(tokenizer.vocab_size))})
path, prompt, target, options = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
eot = "<|endoftext|>"
tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(path, "tokenizer.json"),
                              bos_token=eot, eos_token=eot, pad_token=eot)
hf = GPT2LMHeadModel.from_pretrained(path).eval()
calls = {"n": 0, "tokens": 0}
def count(module, args, kwargs, output):
    ids = kwargs.get("input_ids", args[0] if args else None)
    calls["n"] += 1
    calls["tokens"] += int(ids.numel())
hf.register_forward_hook(count, with_kwargs=True)
model = inseq.load_model(hf, "reagent", tokenizer=tok, **options)
start = time.perf_counter()
out = model.attribute(prompt, prompt + target, show_progress=False)
seconds = time.perf_counter() - start
attr = out.sequence_attributions[0].target_attributions
print(json.dumps({"seconds": seconds, "calls": calls["n"], "tokens": calls["tokens"],
                  "nan": None if attr is None else int(torch.isnan(attr).sum())}))
"""


def inseq_run(path: str, prompt: str, target: str) -> tuple[dict | None, str | None]:
    why = ensure_inseq()
    if why:
        return None, why
    cmd = [str(VENV / "bin" / "python"), "-c", INSEQ_SCRIPT, path, prompt, target]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([*cmd, json.dumps(OPTIONS)], capture_output=True, text=True, env=env)
    if done.returncode:
        return None, f"Inseq run failed: {done.stderr.strip()[-1500:]}"
    return json.loads(done.stdout.strip().splitlines()[-1]), None


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
    with tempfile.TemporaryDirectory() as tmp:
        build_model(pathlib.Path(tmp), seed)
        model = hooklab.load(tmp, device="cpu", dtype="float32")
        prompt = " ".join(f"w{(37 * i + 11) % 31999 + 1}" for i in range(19))  # + BOS
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
        inseq, why = (None, "skipped") if skip_inseq else inseq_run(tmp, f"<|endoftext|> {prompt}",
                                                                     target)  # fmt: skip
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
