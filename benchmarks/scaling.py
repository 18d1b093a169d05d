"""Time and peak memory against prompt length, hooklab and Inseq 0.7.1 in one run.

    python benchmarks/scaling.py                      # lengths 128 512 1000 2000, GPT-2-small shape
    python benchmarks/scaling.py --quick              # lengths 32 64 128, tiny GPT-2
    python benchmarks/scaling.py --lengths 128 512 --methods saliency attention --no-inseq

Every cell (tool, method, length) runs in a fresh process: hooklab in a subprocess of this
script, Inseq in a fresh ``benchmarks/inseq_worker.py`` in its venv. Each loads the random
GPT-2 (2048-token window, 4 forced target tokens), attributes a 16-token prompt once (warm-up:
imports, kernels), resets the kernel's peak RSS (``/proc/self/clear_refs``), then attributes
the long prompt once: the cell reports that call's seconds and its peak resident memory above
the resident memory just before it (MB). A cell that runs past ``--cell_timeout`` seconds is
recorded as such and that (tool, method) skips the longer lengths. One torch thread.
Writes ``figures/scaling.png`` / ``.pdf`` (log-log, time and memory against length) and
``figures/scaling.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (
    EOT,
    GPT2_SMALL,
    GPT2_TINY,
    ROOT,
    InseqWorker,
    cached_model,
    load_average,
    word_prompt,
)

METHODS = ("saliency", "attention", "value_zeroing", "occlusion")
N_TARGET = 4
WINDOW = 2048


def model_path(quick: bool) -> Path:
    shape = GPT2_TINY if quick else GPT2_SMALL
    name = "scaling-tiny" if quick else "scaling-gpt2-small"
    return cached_model(name, n_positions=WINDOW, **shape)


def texts(length: int, vocab: int) -> tuple[str, str]:
    """A prompt of ``length`` tokens (BOS included) and a 4-token target."""
    words = word_prompt(length - 1 + N_TARGET, vocab).split()
    return " ".join(words[: length - 1]), " " + " ".join(words[length - 1 :])


def status_mb() -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return tuple(int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM"))


def hooklab_cell(path: str, method: str, length: int) -> dict:
    """Run in a fresh process (``--cell``): warm-up, reset the peak, one timed call."""
    import gc

    import torch

    import hooklab

    torch.set_num_threads(1)
    model = hooklab.load(path, device="cpu")
    vocab = model.cfg.d_vocab
    hooklab.attribute(model, *texts(16, vocab), method=method)  # warm-up
    prompt, target = texts(length, vocab)
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    base, _ = status_mb()
    start = time.perf_counter()
    hooklab.attribute(model, prompt, target, method=method)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_mb": status_mb()[1] - base}


def inseq_cell(path: str, method: str, length: int, vocab: int, log: Path) -> dict:
    with InseqWorker(log) as worker:
        prompt, target = texts(16, vocab)
        job = {"path": path, "method": method}
        worker("attribute", prompt=f"{EOT} {prompt}", target=target, **job)  # warm-up, load
        prompt, target = texts(length, vocab)
        base = worker("memory", reset=True)["rss_mb"]
        reply = worker("attribute", prompt=f"{EOT} {prompt}", target=target, **job)
        return {"seconds": reply["seconds"], "peak_mb": worker("memory")["peak_mb"] - base}


def run_cell(tool: str, path: Path, method: str, length: int, vocab: int, timeout: float) -> dict:
    """One cell in a fresh process; ``{"seconds", "peak_mb"}`` or ``{"error": ...}``."""
    if tool == "hooklab":
        cmd = [sys.executable, __file__, "--cell", str(path), method, str(length)]
    else:
        cmd = [sys.executable, __file__, "--inseq_cell", str(path), method, str(length), str(vocab)]
    # its own process group, so that a timeout also ends the Inseq worker it started
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, start_new_session=True)  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {"error": f"timed out after {timeout:g} s"}
    if proc.returncode:
        return {"error": stderr.strip()[-300:]}
    return json.loads(stdout.strip().splitlines()[-1])


def plot(results: list[dict], out: Path) -> None:
    from hooklab.output.style import new_figure

    fig = new_figure((6.8, 2.8))
    axes = fig.subplots(1, 2)
    styles = {"hooklab": "-", "inseq": "--"}
    for (key, label), ax in zip((("seconds", "time (s)"), ("peak_mb", "peak RSS (MB)")), axes):
        for i, method in enumerate(dict.fromkeys(r["method"] for r in results)):
            for tool, ls in styles.items():
                pts = [(r["length"], r[key]) for r in results
                       if r["method"] == method and r["tool"] == tool and key in r]  # fmt: skip
                if pts:
                    x, y = zip(*sorted(pts))
                    ax.plot(x, y, ls, marker="o", ms=3, color=f"C{i}", label=f"{method} ({tool})")
        ax.set(xscale="log", yscale="log", xlabel="prompt tokens", ylabel=label)
    axes[1].legend(fontsize=5, ncol=1)
    fig.savefig(out.with_suffix(".png"), dpi=200)
    fig.savefig(out.with_suffix(".pdf"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="lengths 32 64 128, tiny GPT-2")
    parser.add_argument("--lengths", type=int, nargs="+")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--no-inseq", dest="inseq", action="store_false")
    parser.add_argument("--inseq_lengths", type=int, nargs="+", help="default: all lengths")
    parser.add_argument("--cell_timeout", type=float, default=240.0)
    parser.add_argument("--output", type=Path, default=ROOT / "figures" / "scaling")
    args = parser.parse_args()
    lengths = args.lengths or ([32, 64, 128] if args.quick else [128, 512, 1000, 2000])
    if max(lengths) + N_TARGET > WINDOW:
        parser.error(f"lengths must leave {N_TARGET} target tokens in the {WINDOW}-token window")
    path = model_path(args.quick)
    vocab = (GPT2_TINY if args.quick else GPT2_SMALL)["vocab_size"]
    print(f"# {load_average()}; model {path.name}; {N_TARGET} target tokens", flush=True)
    results, stopped = [], set()
    for length in lengths:
        for method in args.methods:
            tools = ["hooklab"]
            if args.inseq and (args.inseq_lengths is None or length in args.inseq_lengths):
                tools.append("inseq")
            for tool in tools:
                if (tool, method) in stopped:
                    continue
                cell = run_cell(tool, path, method, length, vocab, args.cell_timeout)
                if "error" in cell:
                    stopped.add((tool, method))
                row = {"tool": tool, "method": method, "length": length, **cell}
                results.append(row)
                shown = cell.get("error") or f"{cell['seconds']:8.2f} s {cell['peak_mb']:8.1f} MB"
                print(f"{method:<14}{length:>6}  {tool:<8}{shown}", flush=True)
                save(results, args.output)  # after every cell: a cut-off run keeps its cells
    plot(results, args.output)


def save(results: list[dict], output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--cell":
        print(json.dumps(hooklab_cell(sys.argv[2], sys.argv[3], int(sys.argv[4]))))
    elif len(sys.argv) > 1 and sys.argv[1] == "--inseq_cell":
        log = Path(f"/tmp/hooklab-scaling-inseq-{sys.argv[3]}-{sys.argv[4]}.log")
        print(json.dumps(inseq_cell(sys.argv[2], sys.argv[3], int(sys.argv[4]),
                                    int(sys.argv[5]), log)))  # fmt: skip
    elif len(sys.argv) > 1 and sys.argv[1] == "--plot":  # redraw from a saved .json
        plot(json.loads(Path(sys.argv[2]).read_text()), Path(sys.argv[2]).with_suffix(""))
    else:
        main()
