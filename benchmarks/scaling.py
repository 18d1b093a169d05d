"""Time and peak memory against prompt length, hooklab and Inseq 0.7.1 in one run.

    python benchmarks/scaling.py                      # lengths 128 512 1000 2000, tiny GPT-2
    python benchmarks/scaling.py --quick              # lengths 32 64 128
    python benchmarks/scaling.py --lengths 128 512 --methods saliency attention --no-inseq
    python benchmarks/scaling.py --summary figures/scaling.json   # the table of a saved run
    python benchmarks/compare_inseq.py --scaling [flags above]   # the same

The model is a random GPT-2 with a 2048-token window at every length: 2 layers, d_model 64,
4 heads, 2000-word vocabulary (``benchmarks.common.GPT2_TINY``); Inseq's value zeroing and
occlusion cost O(layers x tokens) and O(tokens) forwards, so a larger shape would not let the
full run finish in about half an hour on two shared CPU cores. 4 forced target tokens.
``pecore`` is PECoRe (default options: KL-divergence CTI, saliency CCI) with the long prompt as
the context, an 8-word current input and the 4 target words as the forced current output.

Every cell (tool, method, length) runs in a fresh process: hooklab in a subprocess of this
script, Inseq in a fresh ``benchmarks/inseq_worker.py`` in its venv. Each loads the model,
runs a 16-token input once (warm-up: imports, kernels), resets the kernel's peak RSS
(``/proc/self/clear_refs``), then runs the long input once. A cell reports that call's seconds,
``peak_mb`` (peak resident memory during the call above the resident memory just before it:
what the method itself holds) and ``process_mb`` (the whole process's peak resident memory:
interpreter, libraries, model and the call). A cell past ``--cell_timeout`` seconds is killed;
the seconds its timed call had run by then are kept as a lower bound (``at_least_s``), and that
(tool, method) skips the longer lengths (their lower bound is the same). One torch thread.
Writes ``figures/scaling.json``, ``figures/scaling.png`` / ``.pdf`` (log-log, time and memory
against length) and prints the table: time ratio Inseq / hooklab, memory as % of Inseq's, the
log-log slope of hooklab's attention memory from 512 tokens on, and saliency's time ratio
against its arithmetic ceiling T*2/(1+T) (Inseq runs T forward+backward passes, hooklab one
forward and T input-gradient passes).
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
    GPT2_TINY,
    ROOT,
    InseqWorker,
    cached_model,
    load_average,
    word_prompt,
)

METHODS = ("saliency", "attention", "value_zeroing", "occlusion", "pecore")
N_TARGET = 4
N_CURRENT = 8  # PECoRe's current input, in words; the rest of the length is the context
WINDOW = 2048
STARTED = Path("/tmp/hooklab-scaling-started")  # + pid: when the timed call began


def model_path(layers: int = GPT2_TINY["n_layer"]) -> Path:
    """The benchmark's random GPT-2 (``layers`` deep; the default is the 2-layer tiny shape)."""
    name = "scaling-tiny" if layers == GPT2_TINY["n_layer"] else f"scaling-tiny-{layers}l"
    return cached_model(name, n_positions=WINDOW, **{**GPT2_TINY, "n_layer": layers})


def texts(length: int, vocab: int) -> tuple[str, str]:
    """A prompt of ``length`` tokens (BOS included) and a 4-token target."""
    words = word_prompt(length - 1 + N_TARGET, vocab).split()
    return " ".join(words[: length - 1]), " " + " ".join(words[length - 1 :])


def pecore_example(length: int, vocab: int) -> list[str]:
    """[context, current, output] of about ``length`` input tokens and a 4-word output."""
    prompt, target = texts(length, vocab)
    words = prompt.split()
    return [" ".join(words[:-N_CURRENT]), " ".join(words[-N_CURRENT:]), target.strip()]


def status_mb() -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return tuple(int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM"))


def mark_start() -> None:
    """Tell the parent when the timed call began (a timed-out cell's lower bound)."""
    Path(f"{STARTED}-{os.getppid()}").write_text(repr(time.time()))


def hooklab_cell(path: str, method: str, length: int) -> dict:
    """Run in a fresh process (``--cell``): warm-up, reset the peak, one timed call."""
    import gc

    import torch

    import hooklab

    torch.set_num_threads(1)
    model = hooklab.load(path, device="cpu")
    vocab = model.cfg.d_vocab
    if method == "pecore":
        from benchmarks.pecore import options
        from hooklab.pecore import pecore

        def run(n: int) -> object:
            context, current, output = pecore_example(n, vocab)
            return pecore(model, context, current, output_current_text=output, options=options())
    else:

        def run(n: int) -> object:
            return hooklab.attribute(model, *texts(n, vocab), method=method)

    run(16 + N_CURRENT)  # warm-up
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    base, _ = status_mb()
    mark_start()
    start = time.perf_counter()
    run(length)
    seconds = time.perf_counter() - start
    process = status_mb()[1]
    return {"seconds": seconds, "peak_mb": process - base, "process_mb": process}


def inseq_cell(path: str, method: str, length: int, vocab: int, log: Path) -> dict:
    with InseqWorker(log) as worker:
        if method == "pecore":
            from benchmarks.pecore import inseq_settings, options

            settings = inseq_settings(options())

            def run(n: int) -> dict:
                example = pecore_example(n, vocab)
                return worker("pecore", model_dir=path, examples=[example], settings=settings)
        else:

            def run(n: int) -> dict:
                prompt, target = texts(n, vocab)
                return worker("attribute", prompt=f"{EOT} {prompt}", target=target,
                              path=path, method=method)  # fmt: skip

        run(16 + N_CURRENT)  # warm-up, load
        base = worker("memory", reset=True)["rss_mb"]
        mark_start()
        reply = run(length)
        process = worker("memory")["peak_mb"]
        return {"seconds": reply["seconds"], "peak_mb": process - base, "process_mb": process}


def run_cell(tool: str, path: Path, method: str, length: int, vocab: int, timeout: float) -> dict:
    """One cell in a fresh process; ``{"seconds", "peak_mb", "process_mb"}``, or
    ``{"error", "at_least_s"}`` (seconds the timed call had run when it was killed)."""
    if tool == "hooklab":
        cmd = [sys.executable, __file__, "--cell", str(path), method, str(length)]
    else:
        cmd = [sys.executable, __file__, "--inseq_cell", str(path), method, str(length), str(vocab)]
    # its own process group, so that a timeout also ends the Inseq worker it started
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, start_new_session=True)  # fmt: skip
    started = Path(f"{STARTED}-{os.getpid()}")
    started.unlink(missing_ok=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        at_least = time.time() - float(started.read_text()) if started.is_file() else 0.0
        return {"error": f"timed out after {timeout:g} s", "at_least_s": at_least}
    if proc.returncode:
        return {"error": stderr.strip()[-300:]}
    return json.loads(stdout.strip().splitlines()[-1])


def plot(results: list[dict], out: Path) -> None:
    from matplotlib.ticker import NullFormatter

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
            for tool in styles:  # timed out: the lower bound, an open triangle
                low = [
                    (r["length"], r["at_least_s"])
                    for r in results
                    if key == "seconds" and r["method"] == method and r["tool"] == tool
                    if r.get("at_least_s")
                ]
                if low:
                    x, y = zip(*sorted(low))
                    ax.plot(x, y, "^", ms=4, mfc="none", color=f"C{i}")
        lengths = sorted({r["length"] for r in results})
        ax.set(xscale="log", yscale="log", xlabel="prompt tokens", ylabel=label)
        ax.set_xticks(lengths, [str(n) for n in lengths])
        ax.xaxis.set_minor_formatter(NullFormatter())
    axes[1].legend(fontsize=5, ncol=1)
    axes[0].set_title("open triangle: timed out, lower bound", fontsize=6)
    fig.savefig(out.with_suffix(".png"), dpi=200)
    fig.savefig(out.with_suffix(".pdf"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="lengths 32 64 128")
    parser.add_argument("--lengths", type=int, nargs="+")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--no-inseq", dest="inseq", action="store_false")
    parser.add_argument("--inseq_lengths", type=int, nargs="+", help="default: all lengths")
    parser.add_argument("--cell_timeout", type=float, default=240.0)
    parser.add_argument("--output", type=Path, default=ROOT / "figures" / "scaling")
    parser.add_argument(
        "--layers",
        type=int,
        default=GPT2_TINY["n_layer"],
        help="depth of the random GPT-2 (other dimensions as the tiny shape)",
    )
    args = parser.parse_args()
    lengths = args.lengths or ([32, 64, 128] if args.quick else [128, 512, 1000, 2000])
    if max(lengths) + N_TARGET > WINDOW or min(lengths) <= N_CURRENT + 1:
        parser.error(f"lengths must be > {N_CURRENT + 1} and leave {N_TARGET} target tokens "
                     f"in the {WINDOW}-token window")  # fmt: skip
    path, vocab = model_path(args.layers), GPT2_TINY["vocab_size"]
    print(f"# {load_average()}; model {path.name}; {N_TARGET} target tokens", flush=True)
    results, stopped = [], {}
    for length in lengths:
        for method in args.methods:
            tools = ["hooklab"]
            if args.inseq and (args.inseq_lengths is None or length in args.inseq_lengths):
                tools.append("inseq")
            for tool in tools:
                if (tool, method) in stopped:
                    cell = {"error": "skipped: timed out at a shorter length",
                            "at_least_s": stopped[tool, method]}  # fmt: skip
                else:
                    cell = run_cell(tool, path, method, length, vocab, args.cell_timeout)
                    if "error" in cell:
                        stopped[tool, method] = cell.get("at_least_s", 0.0)
                row = {"tool": tool, "method": method, "length": length, **cell}
                results.append(row)
                shown = cell.get("error") or (
                    f"{cell['seconds']:8.2f} s {cell['peak_mb']:8.1f} MB "
                    f"(process {cell['process_mb']:.0f} MB)"
                )
                print(f"{method:<14}{length:>6}  {tool:<8}{shown}", flush=True)
                save(results, args.output)  # after every cell: a cut-off run keeps its cells
    print(f"# {load_average()}")
    summary(results)
    plot(results, args.output)


def save(results: list[dict], output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")


def summary(results: list[dict]) -> None:
    """Print the table (ratios Inseq / hooklab), attention's memory slope, saliency's ceiling."""
    cells = {(r["tool"], r["method"], r["length"]): r for r in results}
    ceiling = 2 * N_TARGET / (1 + N_TARGET)

    def shown(cell: dict | None, key: str, fmt: str) -> str:
        if cell is None:
            return "-"
        if key in cell:
            return format(cell[key], fmt)
        return f">{cell.get('at_least_s', 0.0):.0f}" if key == "seconds" else "-"

    head = ["method", "tokens", "Inseq s", "hooklab s", "ratio", "of ceil", "Inseq MB",
            "hooklab MB", "mem %", "proc MB I/h"]  # fmt: skip
    print("".join(f"{h:>12}" if k else f"{h:<14}" for k, h in enumerate(head)))
    for (tool, method, length), ours in cells.items():
        if tool != "hooklab":
            continue
        theirs = cells.get(("inseq", method, length))
        ratio = of_ceiling = mem = "-"
        if theirs and "seconds" in ours:
            bound = theirs.get("seconds", theirs.get("at_least_s"))
            if bound:
                ratio = ("" if "seconds" in theirs else ">") + f"{bound / ours['seconds']:.2f}x"
            if method == "saliency" and "seconds" in theirs:
                of_ceiling = f"{100 * theirs['seconds'] / ours['seconds'] / ceiling:.0f}%"
            if "peak_mb" in theirs:
                mem = f"{100 * ours['peak_mb'] / max(theirs['peak_mb'], 1e-9):.0f}"
        procs = f"{shown(theirs, 'process_mb', '.0f')}/{shown(ours, 'process_mb', '.0f')}"
        row = [method, length, shown(theirs, "seconds", ".2f"), shown(ours, "seconds", ".2f"),
               ratio, of_ceiling, shown(theirs, "peak_mb", ".0f"), shown(ours, "peak_mb", ".0f"),
               mem, procs]  # fmt: skip
        print("".join(f"{v:>12}" if k else f"{v:<14}" for k, v in enumerate(row)))
    print(
        f"(ceiling: {ceiling:.2f}x for {N_TARGET} steps; MB: peak above the call's start; "
        "proc MB: whole-process peak, Inseq/hooklab)"
    )
    pts = sorted(
        (r["length"], r["peak_mb"])
        for r in results
        if r["tool"] == "hooklab" and r["method"] == "attention" and r["length"] >= 512
        if "peak_mb" in r
    )
    if len(pts) >= 2:
        import math

        xs, ys = [math.log(x) for x, _ in pts], [math.log(max(y, 1e-3)) for _, y in pts]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
        print(f"hooklab attention memory, log-log slope over {[x for x, _ in pts]} tokens: "
              f"{slope:.2f}")  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--cell":
        print(json.dumps(hooklab_cell(sys.argv[2], sys.argv[3], int(sys.argv[4]))))
    elif len(sys.argv) > 1 and sys.argv[1] == "--inseq_cell":
        log = Path(f"/tmp/hooklab-scaling-inseq-{sys.argv[3]}-{sys.argv[4]}.log")
        print(json.dumps(inseq_cell(sys.argv[2], sys.argv[3], int(sys.argv[4]),
                                    int(sys.argv[5]), log)))  # fmt: skip
    elif len(sys.argv) > 1 and sys.argv[1] in ("--plot", "--summary"):  # from a saved .json
        saved = json.loads(Path(sys.argv[2]).read_text())
        summary(saved)
        if sys.argv[1] == "--plot":
            plot(saved, Path(sys.argv[2]).with_suffix(""))
    else:
        main()
