"""PECoRe speed: hooklab against Inseq 0.7.1's ``attribute-context``, on the toy model.

    python benchmarks/pecore.py                  # waits for hooklab/toy/model if needed
    python benchmarks/pecore.py --skip_inseq     # hooklab only
    python benchmarks/pecore.py --model DIR      # another GPT-2 checkpoint directory

Both sides use the same checkpoint directory, one CPU thread, ``HF_HUB_OFFLINE=1`` and the
release example's settings: context "George was sick yesterday.", current "His colleagues
asked him to come", CTI metric kl_divergence, saliency, attributed_fn contrast_prob_diff, both
std thresholds 1.0, greedy generation of at most 32 new tokens. The dataset is 50 examples
from ``python scripts/pecore.py toy_dataset``: hooklab runs them through
``hooklab.pecore.dataset.run_dataset`` (batched, writes JSONL); Inseq gets one
``attribute_context`` call per example, as its CLI works (model loaded once).

Inseq is given the outputs hooklab generated, forced: it generates after ``input + " "``, and
with a byte-level BPE that trailing space is a token of its own, after which the toy model
answers ".". Rows marked "forced in both" compare the same work.

Inseq lives in its own virtual environment, /tmp/hooklab-inseq-venv, made on first use with a
local CPU torch 2.13.0 first (an unpinned torch would pull a CUDA build), then
``inseq==0.7.1 "transformers<5"``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["OMP_NUM_THREADS"] = "1"  # for the subprocesses, as set_num_threads(1) here
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

import hooklab
from hooklab.pecore import pecore
from hooklab.pecore.dataset import run_dataset

ROOT = Path(__file__).resolve().parents[1]
VENV = Path("/tmp/hooklab-inseq-venv")
CHECKPOINT = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
FORCED_KEYS = ("input_context_text", "input_current_text", "output_current_text")
MAX_NEW_TOKENS = 32  # hooklab.generate's default; Inseq would stop at HF's max_length=20

# Transformers 4 cannot read the tokenizer class that transformers 5 saves ("TokenizersBackend");
# Inseq loads the same tokenizer.json as a GPT-2 fast tokenizer instead.
INSEQ_TOKENIZER = {"tokenizer_type": "gpt2"}
# Runs in Inseq's venv: argv = model dir, jobs JSON file, repeats, tokenizer kwargs (JSON).
# Jobs: {"default": example, "examples": [example...]}, an example being [context, current,
# output]. Prints one JSON line.
INSEQ_RUNNER = r"""
import json, statistics, sys, time
start = time.perf_counter()
import torch
torch.set_num_threads(1)
import inseq
from inseq.commands.attribute_context import AttributeContextArgs
from inseq.commands.attribute_context.attribute_context import (
    attribute_context, attribute_context_with_model)
import_s = time.perf_counter() - start
model_dir, jobs, reps = sys.argv[1], json.load(open(sys.argv[2])), int(sys.argv[3])
TOK = json.loads(sys.argv[4])

def args(context, current, output):
    return AttributeContextArgs(
        model_name_or_path=model_dir, input_context_text=context, input_current_text=current,
        output_current_text=output, context_sensitivity_metric="kl_divergence",
        attribution_method="saliency", attributed_fn="contrast_prob_diff",
        context_sensitivity_std_threshold=1.0, attribution_std_threshold=1.0,
        generation_kwargs={"max_new_tokens": MAX_NEW}, show_viz=False, device="cpu",
        tokenizer_kwargs=TOK)

def timed(fn, n):
    times, out = [], None
    for _ in range(n):
        t = time.perf_counter(); out = fn(); times.append(time.perf_counter() - t)
    return statistics.median(times), out

def picks(out):
    return [c.cti_idx for c in out.cci_scores]

default = jobs["default"]
load, model = timed(lambda: inseq.load_model(model_dir, "saliency", tokenizer_kwargs=TOK), reps)
forced, out = timed(lambda: attribute_context_with_model(args(*default), model), reps)
with_load, _ = timed(lambda: attribute_context(args(*default)), reps)
generated, own = timed(lambda: attribute_context_with_model(args(*default[:2], None), model), 1)
t = time.perf_counter()
outs = [attribute_context_with_model(args(*e), model) for e in jobs["examples"]]
dataset = time.perf_counter() - t
print(json.dumps({
    "import_s": import_s, "load_s": load, "forced_s": forced, "with_load_s": with_load,
    "dataset_s": dataset, "default_picks": picks(out), "own_output": own.output_current,
    "own_s": generated, "picks": [picks(o) for o in outs]}))
""".replace("MAX_NEW", str(MAX_NEW_TOKENS))


def wait_for(model_dir: Path, timeout_s: float) -> None:
    """Poll until the checkpoint files exist and stop growing (another job may be writing)."""
    deadline, last = time.time() + timeout_s, None
    while True:
        files = [model_dir / f for f in CHECKPOINT]
        if all(f.is_file() for f in files):
            sizes = [f.stat().st_size for f in files]
            if sizes == last:
                return
            last = sizes
        elif time.time() > deadline:
            raise SystemExit(f"{model_dir} still lacks {CHECKPOINT} after {timeout_s:.0f} s.")
        else:
            print(f"waiting for {model_dir} ...", flush=True)
        time.sleep(20 if last is None else 5)


def median_time(fn, reps: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(reps):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def wall(cmd: list[str], python: str = sys.executable) -> float:
    """Wall time of a fresh process (imports, model load, run); raises on failure."""
    start = time.perf_counter()
    subprocess.run([python, *cmd], check=True, capture_output=True, text=True, cwd=ROOT)
    return time.perf_counter() - start


def ensure_inseq() -> str | None:
    """Create the Inseq venv once; return None when ready, else why it failed."""
    python = VENV / "bin" / "python"
    check = [str(python), "-c", "import inseq.commands.attribute_context"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return None
    steps = [
        [sys.executable, "-m", "venv", str(VENV)],
        [str(python), "-m", "pip", "install", "-q", "torch==2.13.0"],
        [str(python), "-m", "pip", "install", "-q", "inseq==0.7.1", "transformers<5"],
        check,
    ]
    for step in steps:
        print("$", " ".join(step[2:] if step[0] == str(python) else step), flush=True)
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode:
            return f"`{' '.join(step)}` failed: {(done.stderr or done.stdout).strip()[-800:]}"
    return None


def run_inseq(model_dir: Path, jobs: dict, reps: int) -> tuple[dict | None, str | None]:
    """Time Inseq on the jobs (outputs forced) in its venv, plus one cold CLI run."""
    why = ensure_inseq()
    if why:
        return None, why
    python = str(VENV / "bin" / "python")
    with tempfile.TemporaryDirectory() as tmp:
        runner, job_file = Path(tmp) / "inseq_runner.py", Path(tmp) / "jobs.json"
        runner.write_text(INSEQ_RUNNER)
        job_file.write_text(json.dumps(jobs))
        cmd = [python, str(runner), str(model_dir), str(job_file), str(reps)]
        done = subprocess.run([*cmd, json.dumps(INSEQ_TOKENIZER)], capture_output=True, text=True)
    if done.returncode:
        return None, f"Inseq run failed: {done.stderr.strip()[-1500:]}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    context, current, output = jobs["default"]
    cli = [
        *("-m", "inseq.commands.cli", "attribute-context"),
        *("--model_name_or_path", str(model_dir)),
        *("--input_context_text", context, "--input_current_text", current),
        *("--output_current_text", output),
        *("--context_sensitivity_metric", "kl_divergence"),
        *("--attribution_method", "saliency", "--attributed_fn", "contrast_prob_diff"),
        *("--context_sensitivity_std_threshold", "1.0", "--attribution_std_threshold", "1.0"),
        *("--generation_kwargs", json.dumps({"max_new_tokens": MAX_NEW_TOKENS})),
        *("--tokenizer_kwargs", json.dumps(INSEQ_TOKENIZER)),
        *("--show_viz", "False", "--device", "cpu"),
    ]
    try:
        result["cli_s"] = wall(cli, python)
    except subprocess.CalledProcessError as err:
        result["cli_s"] = None
        result["cli_error"] = err.stderr.strip()[-800:]
    return result, None


def run(args, model_dir: Path, cli, tmp: Path) -> None:
    name = str(model_dir) if args.model else "toy"
    data = tmp / "toy.jsonl"
    make = ["scripts/pecore.py", "toy_dataset", "--output", str(data), "--n", str(args.n)]
    subprocess.run([sys.executable, *make], check=True, cwd=ROOT, capture_output=True)
    n_examples = sum(1 for line in data.read_text().splitlines() if line.strip())

    # ---- hooklab, in-process ----
    opts = cli._options(generation_kwargs={"max_new_tokens": MAX_NEW_TOKENS})
    context, current = cli.DEFAULT_CONTEXT, cli.DEFAULT_CURRENT
    hooklab.load(name, device="cpu")  # warm-up: first-use imports inside the loader
    load_s, model = median_time(lambda: hooklab.load(name, device="cpu"), args.repeats)
    pecore(model, context, current, options=opts)  # warm-up
    default_s, result = median_time(
        lambda: pecore(model, context, current, options=opts), args.repeats
    )
    output = result.output_current
    forced_s, _ = median_time(
        lambda: pecore(model, context, current, output_current_text=output, options=opts),
        args.repeats,
    )
    with_load_s, _ = median_time(
        lambda: cli.main(model_name_or_path=name, device="cpu", show_viz=False), args.repeats
    )
    runs = iter(range(1000))

    def dataset(path: Path, batch_size: int):
        out = tmp / f"out-{next(runs)}.jsonl"  # a fresh file: run_dataset resumes otherwise
        log = lambda message: None  # noqa: E731
        summary = run_dataset(
            model, path, out, opts, batch_size=batch_size, show_progress=False, log=log
        )
        return summary, out

    dataset_s, (summary, out_path) = median_time(lambda: dataset(data, 8), args.repeats)
    records = {r["line"]: r for r in map(json.loads, out_path.read_text().splitlines())}
    examples = [json.loads(x) for x in data.read_text().splitlines() if x.strip()]
    # the same examples with the outputs hooklab generated, forced (what Inseq gets)
    jobs = {"default": [context, current, output], "examples": []}
    forced = tmp / "forced.jsonl"
    with forced.open("w") as f:
        for line, ex in enumerate(examples, start=1):
            ex = {**ex, "output_current_text": records[line]["output_current"]}
            f.write(json.dumps(ex) + "\n")
            jobs["examples"].append([ex[k] for k in FORCED_KEYS])
    forced8_s, _ = median_time(lambda: dataset(forced, 8), args.repeats)
    forced1_s, _ = median_time(lambda: dataset(forced, 1), args.repeats)
    ours = {
        r["line"]: [c["index"] for c in r.get("context_sensitive", [])] for r in records.values()
    }
    cli_s = wall(
        ["scripts/pecore.py", "--model_name_or_path", name, "--device", "cpu", "--noshow_viz"]
    )

    # ---- Inseq, in its own venv ----
    inseq, why = None, "skipped (--skip_inseq)"
    if not args.skip_inseq:
        print("running Inseq (its venv, one call per example) ...", flush=True)
        inseq, why = run_inseq(model_dir, jobs, args.repeats)

    # ---- report ----
    print(
        f"\nPECoRe on {model_dir} ({model.cfg.n_layers} layers, d_model {model.cfg.d_model}); "
        f"torch {torch.__version__}, 1 thread; {n_examples} dataset examples; median of "
        f"{args.repeats} (datasets on Inseq's side, cold CLIs: one run); load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(f"default example output: {output!r}; selected tokens <- cues:")
    for c in result.context_sensitive:
        print(f"  {c.index} {c.token!r} <- {[q.token for q in c.cues]}")
    i = inseq or {}
    n = n_examples
    rows = [
        ("model load only", load_s, i.get("load_s")),
        ("default example, model loaded", default_s, i.get("forced_s")),
        ("  same, output forced in both", forced_s, i.get("forced_s")),
        ("default example incl. model load", with_load_s, i.get("with_load_s")),
        ("default example, cold CLI process", cli_s, i.get("cli_s")),
        (f"{n} examples, model loaded", dataset_s, i.get("dataset_s")),
        ("  same, outputs forced in both", forced8_s, i.get("dataset_s")),
        ("  same, hooklab batch_size=1", forced1_s, i.get("dataset_s")),
    ]
    head = f"{'':<38}{'hooklab s':>10}{'Inseq s':>9}{'Inseq/hl':>10}  target >= 5x"
    print("\n" + head + "\n" + "-" * len(head))
    for label, mine, theirs in rows:
        line = f"{label:<38}{mine:>10.2f}"
        if theirs:
            ratio = theirs / mine
            verdict = "" if label == "model load only" else ("PASS" if ratio >= 5 else "MISS")
            line += f"{theirs:>9.2f}{ratio:>9.1f}x  {verdict}"
        print(line)
    print(
        "Inseq always gets hooklab's generated outputs, forced (see below); hooklab generates "
        "them itself\nin the rows not marked 'forced'."
    )
    print(f"hooklab dataset metrics: {json.dumps(summary['metrics'])}")
    if inseq is None:
        print(f"\nInseq: no numbers. {why}")
        return
    print(
        f"Inseq: import {inseq['import_s']:.1f} s (only in the cold CLI row); generating its own "
        f"output for the default example (separator ' ', which becomes a token of its own with "
        f"a byte-level BPE) it gets {inseq['own_output']!r} in {inseq['own_s']:.2f} s"
    )
    if inseq.get("cli_error"):
        print(f"Inseq CLI failed: {inseq['cli_error']}")
    print(f"Inseq default example CTI picks: {inseq['default_picks']}")
    same = sum(ours.get(k + 1) == sorted(p) for k, p in enumerate(inseq["picks"]))
    print(
        f"CTI selections identical (same output-token indices) on {same}/{n} examples (Inseq's "
        "threshold uses the unbiased std, hooklab's the population std; hooklab adds BOS)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint dir (default: the toy model)")
    parser.add_argument("--n", type=int, default=50, help="dataset examples")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument("--wait", type=float, default=1200, help="s to wait for the toy model")
    parser.add_argument("--skip_inseq", action="store_true", help="time hooklab only")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from hooklab.toy import TOY_DIR

    model_dir = Path(args.model).resolve() if args.model else TOY_DIR
    wait_for(model_dir, args.wait)
    spec = importlib.util.spec_from_file_location("pecore_cli", ROOT / "scripts" / "pecore.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    with tempfile.TemporaryDirectory(prefix="hooklab-bench-pecore-") as tmp:
        run(args, model_dir, cli, Path(tmp))


if __name__ == "__main__":
    main()
