"""hooklab against Inseq 0.7.1, side by side in one run: issue 14's table of times and ratios.

    python benchmarks/compare_inseq.py                    # everything, ~12 min on 2 loaded cores
    python benchmarks/compare_inseq.py --only saliency,ig # a subset (names: --help)
    python benchmarks/compare_inseq.py --quick            # tiny config, a smoke run (< 1 min)
    python benchmarks/compare_inseq.py --resume           # skip workloads already in --results

Attribution workloads: a GPT-2-small-shaped random model (12 layers x 768, vocab 32000, random
non-zero biases, word-level tokenizer; ``benchmarks/common.py``, saved once under
``$HOOKLAB_BENCH_CACHE``), a 20-token prompt (BOS included) and the 10 tokens hooklab generates
greedily, forced on both sides, ``attributed_fn="probability"`` (both defaults). PECoRe
workloads: the toy model (``benchmarks/pecore.py``). One torch thread in both processes.
Inseq runs in its own venv (made on first use), in one worker process that keeps its models
loaded (``benchmarks/inseq_worker.py``); the two tools take turns, one run each per round,
so both see the same load. Each cell is the median of up to ``--repeats`` rounds; after the
first round a workload stops once ``--budget`` seconds are spent. The ratio is the reference
(Inseq, or Hugging Face ``generate`` for generation) over hooklab; the target is the issue's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from benchmarks.common import (
    CACHE,
    EOT,
    GPT2_SMALL,
    GPT2_TINY,
    InseqWorker,
    Row,
    clock,
    load_average,
    print_table,
    random_gpt2,
    take_turns,
    word_prompt,
)
from benchmarks.pecore import PecoreBench
from benchmarks.reagent import OPTIONS as REAGENT

N_PROMPT, N_TARGET = 20, 10  # BOS included in the prompt
IG_MAX_STEPS = 64  # n_steps="auto" stops here if Inseq's delta is out of reach
# name -> (rows it makes, what runs it); in the order they run (cheap first)
WORKLOADS = {
    "saliency": "saliency",
    "input_x_gradient": "input x gradient",
    "attention": "attention",
    "value_zeroing": "value zeroing",
    "reagent": "ReAGent (" + ", ".join(f"{k}={v}" for k, v in REAGENT.items()) + ")",
    "generate": "greedy generation vs Hugging Face generate",
    "pecore": "PECoRe default example, model loaded",
    "pecore_dataset": "PECoRe dataset (50 examples; 5 with --quick)",
    "pecore_cli": "PECoRe cold CLI processes (not in --quick unless named)",
    "occlusion": "occlusion",
    "ig": "integrated gradients: Inseq's defaults, and hooklab 'auto' at Inseq's delta",
}
GOALS = {  # method -> (ratio Inseq / hooklab to reach, as printed)
    "saliency": (2.5, ">= 2.5x"),
    "input_x_gradient": (2.5, ">= 2.5x"),
    "attention": (1.5, ">= 1.5x"),  # issue 23
    "occlusion": (12, ">= 12x"),
    "value_zeroing": (5, ">= 5x"),
    "reagent": (None, "(none set)"),
}


class AttributionBench:
    """Attribution workloads on the random GPT-2: hooklab here, Inseq in ``worker``."""

    def __init__(self, path: Path, worker, repeats: int, budget_s: float, vocab: int):
        import hooklab

        self.path, self.worker, self.repeats, self.budget_s = str(path), worker, repeats, budget_s
        self.model = hooklab.load(self.path, device="cpu", dtype="float32")
        self.prompt = word_prompt(N_PROMPT - 1, vocab)  # hooklab prepends BOS
        gen = hooklab.generate(self.model, self.prompt, max_new_tokens=N_TARGET, stop_at_eos=False)
        self.prompt_ids, self.output_ids = gen.prompt_ids[0], gen.output_ids[0]
        tokens = self.model.tokenizer.convert_ids_to_tokens(self.output_ids)
        self.target = " " + " ".join(tokens)
        self.notes: list[str] = []
        self.ours("saliency")()  # warm-up
        if worker:
            self.theirs("saliency")()

    def ours(self, method: str, keep: dict | None = None, **options):
        import hooklab

        def run():
            with warnings.catch_warnings():  # IG with a fixed n_steps may warn about its delta
                warnings.simplefilter("ignore", UserWarning)
                return hooklab.attribute(self.model, self.prompt, self.target, method=method,
                                         **options)  # fmt: skip

        return lambda: clock(run, keep)

    def theirs(self, method: str, keep: dict | None = None, **job):
        def run() -> float:
            prompt = f"{EOT} {self.prompt}"
            reply = self.worker("attribute", path=self.path, method=method, prompt=prompt,
                                target=self.target, **job)  # fmt: skip
            if reply["target"] != self.target.split():
                raise RuntimeError(f"Inseq attributed {reply['target']}, not {self.target!r}")
            if keep is not None:
                keep.update(reply)
            return reply["seconds"]

        return run

    def turns(self, fns: dict) -> dict[str, list[float]]:
        """Take turns (Inseq's functions are the ones named ``inseq...``; dropped without it)."""
        fns = {k: f for k, f in fns.items() if self.worker or not k.startswith("inseq")}
        times = take_turns(fns, self.repeats, self.budget_s)
        return {k: times.get(k, []) for k in fns} | {"inseq": times.get("inseq", [])}

    def method(self, name: str, load: dict | None = None, **options) -> list[Row]:
        t = self.turns(
            {"inseq": self.theirs(name, load_kwargs=load or {}), "ours": self.ours(name, **options)}
        )
        goal, text = GOALS[name]
        return [Row(WORKLOADS[name], t["inseq"], t["ours"], goal, text)]

    def ig(self) -> list[Row]:
        """Inseq's default IG (Captum: 50 Gauss-Legendre points), hooklab at 50 points, and
        hooklab ``n_steps="auto"`` with ``tolerance`` = Inseq's max |completeness delta| (or
        hooklab's at 50 points if larger: with probabilities of a random model, ~1/vocab, the
        deltas of 50 points are float32 rounding, which no number of points lowers)."""
        inseq, gl, auto = {}, {}, {}

        def ours_auto() -> float:
            # Inseq's delta of the same steps (absolute, as F <= 1), or hooklab's own at 50
            # points where that is larger: float32 rounding then bounds both, not the points
            tol = max(inseq.get("max_abs_delta", 0.0), max_delta(gl["out"]), 1e-12)
            auto["tolerance"] = tol
            ig = self.ours("integrated_gradients", auto, n_steps="auto", tolerance=tol,
                           max_steps=IG_MAX_STEPS)  # fmt: skip
            return ig()

        t = self.turns(
            {
                "inseq": self.theirs(
                    "integrated_gradients",
                    inseq,
                    attribute_kwargs={"return_convergence_delta": True},
                ),
                "gl": self.ours("integrated_gradients", gl, n_steps=50),
                "auto": ours_auto,
            }
        )
        points = int(auto["out"][0].extras["n_points"].max())
        self.notes.append(
            f"IG max |completeness delta|: Inseq {inseq.get('max_abs_delta', float('nan')):.2e} "
            f"(50 GL points); hooklab 50 points {max_delta(gl['out']):.2e}; hooklab auto "
            f"{max_delta(auto['out']):.2e} with {points} points (tolerance "
            f"{auto['tolerance']:.2e}, max_steps {IG_MAX_STEPS})"
        )
        return [
            Row("integrated gradients, 50 GL points (Inseq default)", t["inseq"], t["gl"], 2.5,
                ">= 2.5x"),
            Row(f"  hooklab n_steps='auto' ({points} points) at Inseq's delta", t["inseq"],
                t["auto"], 4, ">= 4x"),
        ]  # fmt: skip

    def generate(self) -> list[Row]:
        """hooklab.generate against Hugging Face ``generate`` on the same checkpoint."""
        import torch
        from transformers import GPT2LMHeadModel

        import hooklab

        hf = GPT2LMHeadModel.from_pretrained(self.path).eval()
        ids = torch.tensor([self.prompt_ids])
        kwargs = dict(max_new_tokens=N_TARGET, min_new_tokens=N_TARGET, do_sample=False)

        def theirs():
            with torch.no_grad():
                return hf.generate(ids, attention_mask=torch.ones_like(ids), pad_token_id=0,
                                   **kwargs)  # fmt: skip

        def ours():
            return hooklab.generate(self.model, self.prompt, max_new_tokens=N_TARGET,
                                    stop_at_eos=False)  # fmt: skip

        same = theirs()[0, ids.shape[1] :].tolist() == ours().output_ids[0]  # and warm-up
        self.notes.append(f"greedy generation: hooklab's tokens == Hugging Face's: {same}")
        times = take_turns(
            {"hf": lambda: clock(theirs), "ours": lambda: clock(ours)}, self.repeats, self.budget_s
        )
        label = f"greedy generation, {N_TARGET} tokens (ref: HF generate)"
        return [Row(label, times["hf"], times["ours"], 1 / 1.1, ">= 0.91x (hl <= 1.1x HF)")]


def max_delta(out) -> float:
    return float(out[0].extras["completeness_delta"].abs().max())


def run_workload(name: str, attr, pecore) -> list[Row]:
    if name in GOALS:
        return attr.method(name, load=REAGENT if name == "reagent" else None,
                           **(REAGENT if name == "reagent" else {}))  # fmt: skip
    runs = {
        "ig": lambda: attr.ig(),
        "generate": lambda: attr.generate(),
        "pecore": lambda: pecore().default_example(),
        "pecore_dataset": lambda: pecore().dataset(),
        "pecore_cli": lambda: pecore().cold_cli(),
    }
    return runs[name]()


def header(args, worker) -> str:
    import tokenizers
    import torch
    import transformers

    import hooklab

    theirs = worker("versions") if worker else {}
    inseq = (
        f"Inseq {theirs['inseq']} (transformers {theirs['transformers']}, torch "
        f"{theirs['torch']}, Captum {theirs['captum']})"
        if theirs
        else "Inseq: not run"
    )
    shape = GPT2_TINY if args.quick else GPT2_SMALL
    return (
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; hooklab {hooklab.__version__} "
        f"(transformers {transformers.__version__}, tokenizers {tokenizers.__version__}, torch "
        f"{torch.__version__}); {inseq}\nrandom GPT-2 {shape}, {N_PROMPT}-token prompt, "
        f"{N_TARGET} forced targets; torch threads {torch.get_num_threads()} (both sides); "
        f"median of up to {args.repeats} rounds, budget {args.budget:g} s per workload"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = ", ".join(WORKLOADS)
    parser.add_argument("--only", default=None, help=f"comma-separated subset of: {names}")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per workload (median)")
    parser.add_argument("--budget", type=float, default=60.0, help="s per workload, then stop")
    parser.add_argument("--quick", action="store_true", help="tiny model, 1 round, 5 examples")
    parser.add_argument("--skip_inseq", action="store_true", help="time hooklab only")
    parser.add_argument("--results", default=None, help="JSON of finished workloads' rows")
    parser.add_argument("--resume", action="store_true", help="skip workloads in --results")
    args = parser.parse_args()
    if args.quick:
        args.repeats = 1
    default = [n for n in WORKLOADS if not (args.quick and n == "pecore_cli")]
    args.chosen = args.only.split(",") if args.only else default
    unknown = sorted(set(args.chosen) - set(WORKLOADS))
    if unknown:
        parser.error(f"--only: unknown {unknown}; choose from {names}")
    quick = "-quick" if args.quick else ""
    args.results = Path(args.results or CACHE / f"compare_inseq{quick}.json")
    return args


def run(args, done: dict, tmp: Path, started: float) -> tuple[str, list[str]]:
    """Run the chosen workloads not in ``done`` (saving ``done`` after each); return the
    header and the notes."""
    worker = None if args.skip_inseq else InseqWorker(tmp / "inseq.log")
    try:
        top = header(args, worker)
        print(top, flush=True)
        vocab = (GPT2_TINY if args.quick else GPT2_SMALL)["vocab_size"]
        attr = AttributionBench(random_gpt2(args.quick), worker, args.repeats, args.budget, vocab)
        toy = {}

        def pecore() -> PecoreBench:
            if "bench" not in toy:
                from hooklab.toy import TOY_DIR

                n = 5 if args.quick else 50
                toy["bench"] = PecoreBench(
                    "toy", TOY_DIR, worker, args.repeats, args.budget, n, tmp
                )
            return toy["bench"]

        for name in [n for n in args.chosen if n not in done]:
            elapsed = time.perf_counter() - started
            print(f"[{elapsed:5.0f} s] {name} ...", file=sys.stderr, flush=True)
            try:
                rows = run_workload(name, attr, pecore)
                done[name] = {"rows": [dataclasses.asdict(r) for r in rows], "error": None}
            except Exception:
                done[name] = {"rows": [], "error": traceback.format_exc()[-1500:]}
                print(done[name]["error"], file=sys.stderr, flush=True)
            args.results.parent.mkdir(parents=True, exist_ok=True)
            args.results.write_text(json.dumps(done, indent=1))
        return top, attr.notes + (toy["bench"].notes if "bench" in toy else [])
    finally:
        if worker:
            worker.close()


def main() -> None:
    if "--scaling" in sys.argv[1:]:  # time and memory against length: benchmarks/scaling.py
        from benchmarks.scaling import main as scaling  # takes the remaining flags

        sys.argv.remove("--scaling")
        return scaling()
    args = parse_args()
    done = {}
    if args.resume and args.results.is_file():  # keep the workloads that did not fail
        done = {k: v for k, v in json.loads(args.results.read_text()).items() if not v["error"]}
    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hooklab-compare-") as tmp:
        top, notes = run(args, done, Path(tmp), started)
    print(f"\n{top}")
    print(f"{load_average()}; this run took {time.perf_counter() - started:.0f} s\n")
    print_table([Row(**r) for n in args.chosen if n in done for r in done[n]["rows"]])
    for note in notes:
        print(note)
    for name in args.chosen:
        if done.get(name, {}).get("error"):
            print(f"{name} FAILED: {done[name]['error'].strip().splitlines()[-1]}")
    if args.resume:
        print(f"(rows of earlier runs read from {args.results})")


if __name__ == "__main__":
    main()
