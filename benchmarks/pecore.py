"""PECoRe speed: hooklab against Inseq 0.7.1's ``attribute-context``, on the toy model.

    python benchmarks/pecore.py                  # the toy model, Inseq in its venv
    python benchmarks/pecore.py --skip_inseq     # hooklab only
    python benchmarks/pecore.py --model DIR      # another GPT-2 checkpoint directory

Both sides use the same checkpoint directory, one CPU thread, ``HF_HUB_OFFLINE=1`` and the
release example's settings: context "George was sick yesterday.", current "His colleagues
asked him to come", CTI metric kl_divergence, saliency, attributed_fn contrast_prob_diff, both
std thresholds 1.0, greedy generation of at most 32 new tokens (the Inseq settings are read
from hooklab's options, so they match). The dataset is the first 50 eval examples of the toy
model (``hooklab.pecore.examples.dataset_records``): hooklab runs them through
``hooklab.pecore.dataset.run_dataset`` (batched, writes JSONL); Inseq gets one
``attribute_context`` call per example, as its CLI works (model loaded once).

Inseq is given the outputs hooklab generated, forced: it generates after ``input + " "``, and
with a byte-level BPE that trailing space is a token of its own, after which the toy model
answers ".". Rows marked "forced in both" compare the same work. Inseq runs in
``benchmarks/inseq_worker.py`` in its own venv (``benchmarks/common.py``), and the two sides
take turns. ``benchmarks/compare_inseq.py`` runs the workloads of :class:`PecoreBench` too.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from benchmarks.common import (
    InseqWorker,
    Row,
    clock,
    inseq_python,
    load_average,
    print_table,
    take_turns,
    wall,
)

BATCH_SIZE = 16  # the dataset command's default batch size
MAX_NEW_TOKENS = 32  # hooklab.generate's default; Inseq would stop at HF's max_length=20
# Transformers 4 cannot read the tokenizer class that transformers 5 saves ("TokenizersBackend");
# Inseq loads the same tokenizer.json as a GPT-2 fast tokenizer instead.
INSEQ_TOKENIZER = {"tokenizer_type": "gpt2"}
TEXT_KEYS = ("input_context_text", "input_current_text", "output_current_text")


def options():
    """hooklab's PECoRe options for the benchmark: the defaults, at most 32 new tokens."""
    from hooklab.pecore import PecoreOptions

    return PecoreOptions(generation_kwargs={"max_new_tokens": MAX_NEW_TOKENS})


def inseq_settings(opts) -> dict:
    """The same settings as Inseq ``AttributeContextArgs`` fields."""
    return {
        "context_sensitivity_metric": opts.context_sensitivity_metric,
        "attribution_method": opts.attribution_method,
        "attributed_fn": opts.attributed_fn,
        "context_sensitivity_std_threshold": opts.context_sensitivity_std_threshold,
        "attribution_std_threshold": opts.attribution_std_threshold,
        "generation_kwargs": dict(opts.generation_kwargs),
        "tokenizer_kwargs": INSEQ_TOKENIZER,
    }


def hooklab_cli(name: str) -> list[str]:
    """``python scripts/pecore.py`` on the release example (it generates the output)."""
    return ["scripts/pecore.py", "--model_name_or_path", name, "--device", "cpu", "--noshow_viz"]


def inseq_cli(model_dir: str, example: list[str], settings: dict) -> list[str]:
    """``inseq attribute-context`` with the same settings and the output forced."""
    flags = [*("--model_name_or_path", model_dir)]
    for key, value in zip(TEXT_KEYS, example, strict=True):
        flags += [f"--{key}", value]
    for key, value in settings.items():
        flags += [f"--{key}", json.dumps(value) if isinstance(value, dict) else str(value)]
    return ["-m", "inseq.commands.cli", "attribute-context", *flags, "--show_viz", "False",
            "--device", "cpu"]  # fmt: skip


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


class PecoreBench:
    """PECoRe workloads on one checkpoint: hooklab in this process, Inseq in ``worker`` (or
    hooklab alone when it is None), taking turns. Each workload returns table rows."""

    def __init__(self, name, model_dir, worker, repeats, budget_s, n, tmp: Path):
        import hooklab

        self.name, self.model_dir, self.worker = name, str(model_dir), worker
        self.repeats, self.budget_s, self.n, self.tmp = repeats, budget_s, n, tmp
        self.opts = options()
        self.settings = inseq_settings(self.opts)
        from hooklab.pecore.examples import release_example

        example = release_example(name)
        self.context, self.current = example["input_context_text"], example["input_current_text"]
        hooklab.load(name, device="cpu")  # warm-up: first-use imports inside the loader
        self.model = hooklab.load(name, device="cpu")
        self.result = self.run()  # warm-up; its output is the one Inseq is given
        self.example = [self.context, self.current, self.result.output_current]
        self.notes: list[str] = []
        self._runs = itertools.count()

    def run(self, **kwargs):
        from hooklab.pecore import pecore

        return pecore(self.model, self.context, self.current, options=self.opts, **kwargs)

    def inseq(self, op: str, keep: dict | None = None, **kwargs) -> Callable[[], float]:
        def call() -> float:
            reply = self.worker(op, model_dir=self.model_dir, settings=self.settings, **kwargs)
            if keep is not None:
                keep.update(reply)
            return reply["seconds"]

        return call

    def turns(self, ours: dict, theirs: dict) -> dict[str, list[float]]:
        fns = {**theirs, **ours} if self.worker else ours
        times = take_turns(fns, self.repeats, self.budget_s)
        return {key: times.get(key, []) for key in {**ours, **theirs}}

    def default_example(self) -> list[Row]:
        if self.worker:
            self.worker("pecore", model_dir=self.model_dir, examples=[self.example],
                        settings=self.settings)  # fmt: skip
        output = self.example[2]
        t = self.turns(
            {
                "gen": lambda: clock(self.run),
                "forced": lambda: clock(lambda: self.run(output_current_text=output)),
            },
            {"inseq": self.inseq("pecore", examples=[self.example])},
        )
        return [
            Row("PECoRe default example, model loaded", t["inseq"], t["gen"], 5, ">= 5x"),
            Row("  same, output forced in both", t["inseq"], t["forced"], 5, ">= 5x"),
        ]

    def cold_cli(self) -> list[Row]:
        cmd = inseq_cli(self.model_dir, self.example, self.settings)
        t = self.turns(
            {"ours": lambda: wall(hooklab_cli(self.name))},
            {"inseq": lambda: wall(cmd, inseq_python())},
        )
        label = "PECoRe default example, cold CLI process"
        return [Row(label, t["inseq"], t["ours"], 1.0, ">= 1.0x (hl <= Inseq)")]  # issue 23

    def run_dataset(self, path: Path, batch_size: int) -> list[dict]:
        """hooklab's dataset run into a fresh file (run_dataset resumes otherwise)."""
        from hooklab.pecore.dataset import run_dataset

        out = self.tmp / f"out-{next(self._runs)}.jsonl"
        self.summary = run_dataset(
            self.model, path, out, self.opts, batch_size=batch_size, show_progress=False,
            log=lambda message: None,
        )  # fmt: skip
        records = [json.loads(line) for line in out.read_text().splitlines()]
        return sorted(records, key=lambda r: r["line"])

    def dataset(self, batch_one: bool = False) -> list[Row]:
        from hooklab.pecore.examples import dataset_records

        data = write_jsonl(self.tmp / "toy.jsonl", dataset_records("toy", self.n))
        records = self.run_dataset(data, BATCH_SIZE)  # warm-up; its outputs are forced on Inseq
        forced_records = [
            {**rec, "output_current_text": out["output_current"]}
            for rec, out in zip(dataset_records("toy", self.n), records, strict=True)
        ]
        forced = write_jsonl(self.tmp / "forced.jsonl", forced_records)
        examples = [[r[k] for k in TEXT_KEYS] for r in forced_records]
        ours = {
            "gen": lambda: clock(lambda: self.run_dataset(data, BATCH_SIZE)),
            "forced": lambda: clock(lambda: self.run_dataset(forced, BATCH_SIZE)),
        }
        if batch_one:
            ours["one"] = lambda: clock(lambda: self.run_dataset(forced, 1))
        picks: dict = {}
        t = self.turns(ours, {"inseq": self.inseq("pecore", picks, examples=examples)})
        n, goal = self.n, ">= 6x"
        rows = [
            Row(f"PECoRe {n} examples, model loaded", t["inseq"], t["gen"], 6, goal),
            Row("  same, outputs forced in both", t["inseq"], t["forced"], 6, goal),
        ]
        if batch_one:
            rows.append(Row("  same, hooklab batch_size=1", t["inseq"], t["one"], 6, goal))
        if picks:
            ours_picks = [
                sorted(c["index"] for c in r.get("context_sensitive", [])) for r in records
            ]
            same = sum(a == sorted(b) for a, b in zip(ours_picks, picks["picks"], strict=True))
            self.notes.append(
                f"PECoRe dataset: CTI selections identical on {same}/{n} examples (Inseq's "
                "threshold uses the unbiased std, hooklab's the population std; hooklab adds BOS)"
            )
        return rows

    def loading(self) -> list[Row]:
        """Model load alone, and the default example including it (in a running process)."""
        import hooklab
        from hooklab.cli.pecore import attribute_context

        def with_load():
            attribute_context(model_name_or_path=self.name, device="cpu", show_viz=False)

        t = self.turns(
            {
                "load": lambda: clock(lambda: hooklab.load(self.name, device="cpu")),
                "with": lambda: clock(with_load),
            },
            {
                "inseq load": self.inseq("pecore_load"),
                "inseq with": self.inseq("pecore", examples=[self.example], with_load=True),
            },
        )
        return [
            Row("model load only", t["inseq load"], t["load"]),
            Row("default example incl. model load", t["inseq with"], t["with"], 5, ">= 5x"),
        ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint dir (default: the toy model)")
    parser.add_argument("--n", type=int, default=50, help="dataset examples")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument("--budget", type=float, default=60.0, help="s per workload, then stop")
    parser.add_argument("--skip_inseq", action="store_true", help="time hooklab only")
    args = parser.parse_args()
    import torch

    from hooklab.toy import TOY_DIR

    torch.set_num_threads(1)
    model_dir = Path(args.model).resolve() if args.model else TOY_DIR
    name = str(model_dir) if args.model else "toy"
    with tempfile.TemporaryDirectory(prefix="hooklab-bench-pecore-") as tmp:
        worker = None if args.skip_inseq else InseqWorker(Path(tmp) / "inseq.log")
        try:
            bench = PecoreBench(name, model_dir, worker, args.repeats, args.budget, args.n,
                                Path(tmp))  # fmt: skip
            rows = bench.loading() + bench.default_example() + bench.cold_cli()
            rows += bench.dataset(batch_one=True)
        finally:
            if worker:
                worker.close()
    print(
        f"\nPECoRe on {model_dir}; torch {torch.__version__}, 1 thread; median of up to "
        f"{args.repeats} runs taken in turns; {load_average()}"
    )
    print(f"default example output: {bench.example[2]!r}; selected tokens <- cues:")
    for c in bench.result.context_sensitive:
        print(f"  {c.index} {c.token!r} <- {[q.token for q in c.cues]}")
    print_table(rows)
    print("Inseq is given hooklab's generated outputs, forced; hooklab generates them itself in")
    print("the rows not marked 'forced'.")
    print(f"hooklab dataset metrics: {json.dumps(bench.summary['metrics'])}")
    for note in bench.notes:
        print(note)


if __name__ == "__main__":
    main()
