"""What the benchmark scripts share: the offline setup, the random GPT-2 checkpoint, timing
helpers, and the Inseq 0.7.1 virtual environment with a worker process running in it.

Inseq lives in its own venv, ``/tmp/hooklab-inseq-venv``, made on first use with a local CPU
torch 2.13.0 first (an unpinned torch would pull a CUDA build), then
``inseq==0.7.1 "transformers<5"``. :class:`InseqWorker` starts ``benchmarks/inseq_worker.py``
there once and sends it jobs, so that a benchmark can take turns between hooklab (in this
process) and Inseq (in the worker) with both models loaded.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "OMP_NUM_THREADS": "1",  # for the subprocesses, as torch.set_num_threads(1) here
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_key, _value)

ROOT = Path(__file__).resolve().parents[1]
VENV = Path("/tmp/hooklab-inseq-venv")
CACHE = Path(os.environ.get("HOOKLAB_BENCH_CACHE", "/tmp/hooklab-bench"))
WORKER = Path(__file__).resolve().parent / "inseq_worker.py"
EOT = "<|endoftext|>"
VOCAB = 32000
GPT2_SMALL = dict(n_layer=12, n_embd=768, n_head=12, vocab_size=VOCAB)
GPT2_TINY = dict(n_layer=2, n_embd=64, n_head=4, vocab_size=2000)


def build_model(path: Path, seed: int = 0, **config) -> None:
    """Save a random GPT-2 (GPT-2-small shape unless ``config`` says otherwise) with random
    non-zero biases and a word-level tokenizer ("<|endoftext|>", "w1", "w2", ...)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    cfg = {**GPT2_SMALL, **config}
    words = [EOT, *(f"w{i}" for i in range(cfg["vocab_size"] - 1))]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=words[0]))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=words[0], eos_token=words[0], pad_token=words[0]
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(**cfg, bos_token_id=0, eos_token_id=0)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(torch.randn(p.shape) * 0.2)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


def cached_model(name: str, seed: int = 0, **config) -> Path:
    """``build_model`` once under ``$HOOKLAB_BENCH_CACHE/name``; return the directory."""
    path = CACHE / name
    if not (path / "config.json").is_file():
        tmp = CACHE / f".{name}-{os.getpid()}"
        build_model(tmp, seed, **config)
        tmp.rename(path)  # whole or absent: an interrupted build leaves no half checkpoint
    return path


def random_gpt2(tiny: bool = False, seed: int = 0) -> Path:
    """The benchmarks' random GPT-2 (GPT-2-small shape, or a tiny one), built once."""
    name = ("compare-tiny" if tiny else "compare-gpt2-small") + (f"-seed{seed}" if seed else "")
    return cached_model(name, seed, **(GPT2_TINY if tiny else GPT2_SMALL))


def word_prompt(n_words: int = 19, vocab: int = VOCAB) -> str:
    """A fixed prompt of ``n_words`` tokens of the word-level tokenizer (BOS not included)."""
    return " ".join(f"w{(37 * i + 11) % (vocab - 1) + 1}" for i in range(n_words))


def median_time(fn: Callable[[], object], reps: int) -> tuple[float, object]:
    """Median wall time of ``reps`` runs of ``fn`` and its last result."""
    times, out = [], None
    for _ in range(reps):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def take_turns(
    fns: dict[str, Callable[[], float]], repeats: int, budget_s: float = float("inf")
) -> dict[str, list[float]]:
    """Run each function (which returns the seconds it measured) up to ``repeats`` times,
    taking turns so that all see the same load; after the first round, stop once
    ``budget_s`` seconds are spent. Returns the samples of each."""
    times: dict[str, list[float]] = {key: [] for key in fns}
    for i in range(repeats):
        if i and sum(map(sum, times.values())) > budget_s:
            break
        for key, fn in fns.items():
            times[key].append(fn())
    return times


def clock(fn: Callable[[], object], keep: dict | None = None) -> float:
    """Seconds one call of ``fn`` takes; its result goes to ``keep["out"]`` if given."""
    start = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - start
    if keep is not None:
        keep["out"] = out
    return seconds


def wall(cmd: list[str], python: str = sys.executable) -> float:
    """Wall time of a fresh process (imports, model load, run); raises on failure."""
    start = time.perf_counter()
    subprocess.run([python, *cmd], check=True, capture_output=True, text=True, cwd=ROOT)
    return time.perf_counter() - start


def inseq_python() -> str:
    return str(VENV / "bin" / "python")


def ensure_inseq() -> str | None:
    """Create the Inseq venv once; return None when ready, else why it failed."""
    python = inseq_python()
    check = [python, "-c", "import importlib.metadata as m; assert m.version('inseq') == '0.7.1'"]
    if Path(python).exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return None
    steps = [
        [sys.executable, "-m", "venv", str(VENV)],
        [python, "-m", "pip", "install", "-q", "torch==2.13.0"],
        [python, "-m", "pip", "install", "-q", "inseq==0.7.1", "transformers<5"],
        check,
    ]
    for step in steps:
        print("$", " ".join(step[2:] if step[0] == python else step), flush=True)
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode:
            return f"`{' '.join(step)}` failed: {(done.stderr or done.stdout).strip()[-800:]}"
    return None


class InseqWorker:
    """``benchmarks/inseq_worker.py`` running in Inseq's venv: ``worker(op, **kwargs)`` sends
    one job and returns its JSON reply (timed inside the worker, so without the round trip).

    Its stderr (Inseq's warnings and prints) goes to ``log_path``. Use as a context manager.
    """

    def __init__(self, log_path: Path) -> None:
        why = ensure_inseq()
        if why:
            raise RuntimeError(why)
        self.log_path = Path(log_path)
        self._log = self.log_path.open("w")
        self._proc = subprocess.Popen(
            [inseq_python(), str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            cwd=ROOT,
        )

    def __call__(self, op: str, **kwargs) -> dict:
        self._proc.stdin.write(json.dumps({"op": op, **kwargs}) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            tail = self.log_path.read_text()[-1500:]
            raise RuntimeError(f"the Inseq worker exited ({self._proc.poll()}): {tail}")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"Inseq worker, {op}: {reply['error']}")
        return reply

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.stdin.close()
            self._proc.wait(timeout=60)
        self._log.close()

    def __enter__(self) -> InseqWorker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (5 min {five:.1f}) on {os.cpu_count()} CPUs"


@dataclass
class Row:
    """One line of a comparison table: the reference's samples (Inseq's, or Hugging Face's)
    against hooklab's, and the target ratio reference / hooklab (medians)."""

    label: str
    ref: list[float]
    ours: list[float]
    goal: float | None = None  # met when median(ref) / median(ours) >= goal
    goal_text: str = ""

    @property
    def ratio(self) -> float | None:
        if not self.ref or not self.ours:
            return None
        return statistics.median(self.ref) / statistics.median(self.ours)

    @property
    def verdict(self) -> str:
        if self.goal is None or self.ratio is None:
            return ""
        return "yes" if self.ratio >= self.goal else "NO"


def print_table(rows: list[Row], ref_name: str = "Inseq s") -> None:
    """Print rows as: label, reference s, hooklab s, ratio, target, met (medians)."""

    def cell(samples: list[float]) -> str:
        return f"{statistics.median(samples):.3f}" if samples else "-"

    head = f"{'workload':<58}{ref_name:>9}{'hooklab s':>11}{'ratio':>8}  {'target':<26}met"
    print(head + "\n" + "-" * len(head))
    for row in rows:
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "-"
        print(
            f"{row.label:<58}{cell(row.ref):>9}{cell(row.ours):>11}{ratio:>8}  "
            f"{row.goal_text:<26}{row.verdict}"
        )
