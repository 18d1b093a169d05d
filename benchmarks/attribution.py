"""Attribution speed: hooklab against a naive per-step loop, on a GPT-2-small-shaped model.

    python benchmarks/attribution.py           # GPT-2 small shape, ~6 minutes on 2 cores
    python benchmarks/attribution.py --quick   # tiny config, a smoke run

The model has random weights (GPT2Config n_layer=12, n_embd=768, n_head=12, vocab 32000,
n_positions=1024) and a byte-level BPE tokenizer trained offline on Python's standard library
sources; both are cached under $HOOKLAB_BENCH_CACHE (default /tmp/hooklab-bench). One thread,
a 20-token prompt and 10 forced target tokens, attributed_fn="probability".

The naive loop is what Inseq does: for every target step, a forward (and backward) pass on the
prefix only; occlusion runs one forward per (step, token), attention one per step, integrated
gradients one forward + backward per (step, alpha). It reuses the slow references of
``tests/reference/attribution.py``. Peak memory is the largest resident set size (RSS) above
the RSS at the start of the call, sampled every 2 ms by a thread (after ``gc`` and
``malloc_trim``); it counts activations, the autograd graph and outputs, not the model.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import glob
import os
import statistics
import sys
import sysconfig
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import psutil
import torch

import hooklab
from hooklab.hooks import hook_name, temporary_hooks
from hooklab.methods.integrated_gradients import quadrature

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.reference.attribution import (  # noqa: E402
    _grad,
    embeddings,
    ref_attention,
    ref_gradient,
    ref_occlusion,
)

CACHE = Path(os.environ.get("HOOKLAB_BENCH_CACHE", "/tmp/hooklab-bench"))
CONFIGS = {  # GPT2Config fields
    "gpt2-small": dict(n_layer=12, n_embd=768, n_head=12, vocab_size=32000, n_positions=1024),
    "tiny": dict(n_layer=2, n_embd=64, n_head=4, vocab_size=2000, n_positions=64),
}
TEXT_MB = {"gpt2-small": 10.0, "tiny": 0.5}  # text the tokenizer is trained on
LENGTHS = {"gpt2-small": (20, 10), "tiny": (10, 4)}  # prompt tokens, forced targets
PROMPT_TEXT = (
    "The committee met on Tuesday to review the budget for the new library. After a long "
    "discussion about costs, the members agreed to postpone the final vote until next month."
)
# Inseq on this machine, measured by someone else (quoted in the issue; not measured here).
QUOTED_INSEQ = {
    "saliency": 2.7,
    "saliency (generate)": 3.2,
    "integrated_gradients": 70.0,
    "attention": 0.7,
    "occlusion": 36.0,
}


def build_model(name: str) -> Path:
    """Train the tokenizer and save a random GPT-2 under the cache (once); return its path."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    path = CACHE / name
    if (path / "config.json").is_file():
        return path
    files = sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "**", "*.py")))
    texts, size = [], 0
    for file in files:
        text = Path(file).read_text(encoding="utf-8", errors="ignore")
        texts.append(text)
        size += len(text)
        if size > TEXT_MB[name] * 1e6:
            break
    cfg = CONFIGS[name]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg["vocab_size"],
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    special = "<|endoftext|>"
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=special, eos_token=special, unk_token=special
    )
    eos = fast.eos_token_id
    torch.manual_seed(0)
    # the model's vocabulary stays at vocab_size even if the tokenizer reached fewer tokens
    config = GPT2Config(**cfg, bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    GPT2LMHeadModel(config).eval().save_pretrained(path)
    fast.save_pretrained(path)
    return path


def malloc_trim() -> None:
    """Return freed heap memory to the OS, so that the next call's RSS growth is visible."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class RssPeak:
    """Largest RSS growth (MB) over the ``with`` block, sampled every 2 ms by a thread."""

    def __enter__(self) -> RssPeak:
        self._proc, self._stop = psutil.Process(), threading.Event()
        self.base = self.top = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.top = max(self.top, self._proc.memory_info().rss)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.top = max(self.top, self._proc.memory_info().rss)
        self.peak_mb = (self.top - self.base) / 2**20


@dataclass
class Timing:
    samples: list[float]
    peak_mb: float  # largest over the runs
    cpu: list[float] = field(default_factory=list)  # process CPU seconds of each run

    @property
    def seconds(self) -> float:
        return statistics.median(self.samples)

    @property
    def cpu_seconds(self) -> float:
        """Median CPU time: on one thread, less moved by other jobs than the wall time."""
        return statistics.median(self.cpu) if self.cpu else float("nan")


def round_robin(fns: dict, reps: dict, budget_s: float) -> tuple[dict, dict]:
    """Run each function ``reps[name]`` times, taking turns so that they share the machine's
    load; after the first round, stop once ``budget_s`` is spent. Returns Timings and the last
    outputs."""
    times = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    peaks = dict.fromkeys(fns, 0.0)
    outs = {}
    for i in range(max(reps.values())):
        for key, fn in fns.items():
            if i >= reps[key] or (i and sum(map(sum, times.values())) > budget_s):
                continue
            outs[key] = None
            gc.collect()
            malloc_trim()
            with RssPeak() as mem:
                start, start_cpu = time.perf_counter(), time.process_time()
                outs[key] = fn()
                times[key].append(time.perf_counter() - start)
                cpu[key].append(time.process_time() - start_cpu)
            peaks[key] = max(peaks[key], mem.peak_mb)
    timings = {k: Timing(t, peaks[k], cpu[k]) for k, t in times.items()}
    return timings, outs


def rel_diff(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """max |ours - ref| / max |ref| over the entries both define (the others are NaN)."""
    ours, ref = ours.double(), ref.double()
    both = ours.isfinite() & ref.isfinite()
    if not both.any() or (ours.isfinite() != ref.isfinite()).any():
        return float("nan")
    return float((ours - ref)[both].abs().max() / ref[both].abs().max().clamp(min=1e-30))


# ---- the naive per-step loops not in tests/reference (same helpers, same targets) ----


def naive_integrated_gradients(model, ids, n_prompt, alphas, weights):
    """Integrated gradients, one forward + backward on the prefix per (step, alpha)."""
    x = embeddings(model, ids)
    out = torch.full((len(ids) - n_prompt, len(ids), x.shape[-1]), torch.nan)
    for t in range(len(ids) - n_prompt):
        total = torch.zeros_like(x[: n_prompt + t])
        for a, w in zip(alphas.tolist(), weights.tolist(), strict=True):
            total += w * _grad(model, ids, n_prompt, t, "probability", None, a * x)
        out[t, : n_prompt + t] = total * x[: n_prompt + t]
    return out


def naive_gradient_shap(model, ids, n_prompt, n_samples=8, seed=0):
    """Gradient SHAP (zero baseline, no noise), one forward + backward per (step, sample),
    with the same random alphas as hooklab's default."""
    x = embeddings(model, ids)
    alphas = torch.rand(n_samples, generator=torch.Generator().manual_seed(seed)).tolist()
    out = torch.full((len(ids) - n_prompt, len(ids), x.shape[-1]), torch.nan)
    for t in range(len(ids) - n_prompt):
        grads = [_grad(model, ids, n_prompt, t, "probability", None, a * x) for a in alphas]
        out[t, : n_prompt + t] = torch.stack(grads).mean(0) * x[: n_prompt + t]
    return out


def floor_pass(model, ids, n_prompt):
    """1 forward with grad over the full sequence + one backward per step (retained graph)."""
    leaf = embeddings(model, ids)[None].requires_grad_(True)
    steps = len(ids) - n_prompt
    with temporary_hooks(model, [(hook_name("embed"), lambda x, hook: leaf)]):
        logits = model(torch.tensor([ids]), prepend_bos=False)
    probs = logits[0, n_prompt - 1 : -1].softmax(-1)
    probs = probs[torch.arange(steps), torch.tensor(ids[n_prompt:])]
    for t in range(steps):
        torch.autograd.grad(probs[t], leaf, retain_graph=t < steps - 1)


def ig_error(out) -> tuple[float, float]:
    """(max_t |completeness delta_t|, max_t |F_t(x) - F_t(x')|) of a hooklab IG output."""
    seq = out[0]
    delta = seq.extras["completeness_delta"].double()
    gap = seq.attributions.double().nansum(dim=(1, 2)) - delta
    return float(delta.abs().max()), float(gap.abs().max())


def search_gauss_legendre(run_ig, target_err: float, max_n: int) -> tuple[int | None, dict]:
    """Smallest Gauss-Legendre size whose completeness error is <= ``target_err`` (scanning
    1, 2, 3, ...; the error falls fast, so a scan costs less than a bisection)."""
    errors = {}
    for n in range(1, max_n + 1):
        errors[n] = ig_error(run_ig(n))[0]
        if errors[n] <= target_err:
            return n, errors
    return None, errors


def run(args) -> None:
    torch.set_num_threads(1)
    name = "tiny" if args.quick else "gpt2-small"
    reps, budget = (1, 1.0) if args.quick else (args.repeats, args.budget)
    n_prompt, n_target = LENGTHS[name]
    t0 = time.perf_counter()
    model = hooklab.load(build_model(name), device="cpu")
    text_ids = hooklab.encode_target(model, PROMPT_TEXT)
    while len(text_ids) < n_prompt + n_target:
        text_ids = text_ids * 2
    ids = text_ids[: n_prompt + n_target]
    prompt, target = ids[:n_prompt], ids[n_prompt:]
    print(
        f"model {name}: {model.cfg.n_layers} layers, d_model {model.cfg.d_model}, vocab "
        f"{model.cfg.d_vocab} (tokenizer {len(model.tokenizer)}); {n_prompt}-token prompt, "
        f"{n_target} forced targets; torch {torch.__version__}, {torch.get_num_threads()} "
        f"thread; setup {time.perf_counter() - t0:.1f} s; load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs",
        flush=True,
    )

    def hl(method, **kw):
        return lambda: hooklab.attribute(model, [prompt], [target], method=method, **kw)

    def fwd():
        with torch.no_grad():
            model(torch.tensor([ids]), prepend_bos=False)

    def naive_of(fn, *a, **kw):
        return lambda: fn(model, ids, n_prompt, *a, **kw)

    def progress(what):
        print(f"  [{time.perf_counter() - t0:5.0f} s] {what}", file=sys.stderr, flush=True)

    hl("saliency")()  # warm-up
    gen_kw = {"max_new_tokens": n_target, "stop_at_eos": False}
    progress("forward, floor, saliency, input x gradient")
    t = {"unit": Timing([], 0.0)}

    def group(fns: dict, reps_of: dict, budget_s: float) -> dict:
        """round_robin, with the unit forward taking its turns too (it is cheap), so that
        its median sees the same load as everything else."""
        timings, outs = round_robin({"unit": fwd, **fns}, {"unit": reps, **reps_of}, budget_s)
        t["unit"].samples += timings.pop("unit").samples
        t.update(timings)
        return outs

    first = {
        "generate": lambda: hooklab.generate(model, [prompt], **gen_kw),
        "floor": naive_of(floor_pass),
        "saliency": hl("saliency"),
        "saliency batched": hl("saliency", vjp="batched"),
        "saliency generate": lambda: hooklab.attribute(
            model, [prompt], method="saliency", generation_kwargs=gen_kw
        ),
        "input_x_gradient": hl("input_x_gradient"),
        "naive saliency": naive_of(ref_gradient),
        "naive input_x_gradient": naive_of(ref_gradient, times_input=True),
    }
    out = group(first, dict.fromkeys(first, reps), 3 * budget)
    check = {
        "saliency": rel_diff(out["saliency"][0].attributions, out["naive saliency"].abs()),
        "saliency batched": rel_diff(
            out["saliency batched"][0].attributions, out["naive saliency"].abs()
        ),
        "input_x_gradient": rel_diff(
            out["input_x_gradient"][0].attributions, out["naive input_x_gradient"]
        ),
    }
    # IG: the error of Inseq's default quadrature, and the Gauss-Legendre size that reaches it
    progress("integrated gradients, trapezoid-50 (hooklab, naive)")
    alphas, weights = quadrature(50, "riemann_trapezoid")
    every = 1 if args.quick else max(1, 50 // args.naive_ig_alphas)
    out2 = group(
        {
            "ig trapezoid-50": hl("integrated_gradients", n_steps=50, rule="riemann_trapezoid"),
            "naive ig trapezoid-50": naive_of(
                naive_integrated_gradients, alphas[::every], weights[::every]
            ),
        },
        {"ig trapezoid-50": 1, "naive ig trapezoid-50": 1},
        budget,
    )
    naive_ig = t["naive ig trapezoid-50"]
    scale = len(alphas) / len(alphas[::every])  # each (step, alpha) pass costs the same
    naive_ig.samples = [x * scale for x in naive_ig.samples]
    trap_err, gap = ig_error(out2["ig trapezoid-50"])
    check["ig trapezoid-50"] = (
        rel_diff(out2["ig trapezoid-50"][0].attributions, out2["naive ig trapezoid-50"])
        if every == 1
        else float("nan")
    )
    progress("integrated gradients, Gauss-Legendre search")
    n_gl, errors = search_gauss_legendre(
        lambda n: hl("integrated_gradients", n_steps=n)(), trap_err, args.max_gl
    )
    progress("integrated gradients, GL-50 batched vs per point, and n_steps='auto'")
    unbounded = 10**9  # max_batch_tokens that never splits a pass
    ig_paths = {  # the points' batching: one alpha per pass (per point) vs several
        "ig GL-50 per point": hl(
            "integrated_gradients", n_steps=50, internal_batch_size=1, max_batch_tokens=unbounded
        ),
        "ig GL-50 16 per pass": hl(
            "integrated_gradients", n_steps=50, internal_batch_size=16, max_batch_tokens=unbounded
        ),
        "ig GL-50 50 per pass": hl(
            "integrated_gradients", n_steps=50, internal_batch_size=50, max_batch_tokens=unbounded
        ),
        "ig GL-50 default": hl("integrated_gradients", n_steps=50),
        "ig auto": hl("integrated_gradients", n_steps="auto"),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a fixed size may leave a large delta
        out_paths = group(ig_paths, dict.fromkeys(ig_paths, reps), budget)
    for key in ig_paths:
        check[key] = rel_diff(
            out_paths[key][0].attributions, out_paths["ig GL-50 per point"][0].attributions
        )
    groups = {
        "gradient_shap": (hl("gradient_shap"), naive_of(naive_gradient_shap), 1),
        "attention": (hl("attention"), naive_of(ref_attention), reps),
        "occlusion": (hl("occlusion"), naive_of(ref_occlusion), 1),
    }
    if n_gl is not None:
        groups[f"ig GL-{n_gl}"] = (hl("integrated_gradients", n_steps=n_gl), None, 0)
    for key, (ours, naive, naive_reps) in groups.items():
        progress(key)
        fns = {key: ours} | ({f"naive {key}": naive} if naive else {})
        out3 = group(fns, {key: reps, f"naive {key}": naive_reps}, budget)
        if naive:
            check[key] = rel_diff(out3[key][0].attributions, out3[f"naive {key}"])

    # ---- report ----
    u, floor = t["unit"].seconds, t["floor"]
    print(
        f"\n1 forward, {len(ids)} tokens, no grad (the unit): {u * 1e3:.0f} ms (median of "
        f"{len(t['unit'].samples)}, taken in turns with the rest)"
    )
    print(
        f"floor, 1 forward + {n_target} backward: {floor.seconds:.2f} s = {floor.seconds / u:.1f} "
        f"fwd-eq, peak +{floor.peak_mb:.0f} MB\n"
    )
    head = (
        f"{'method':<40}{'hooklab s':>10}{'fwd-eq':>8}{'naive s':>9}{'naive/hl':>9}"
        f"{'hl/floor':>9}{'hl MB':>7}{'naive MB':>9}{'check':>9}"
    )
    print(head + "\n" + "-" * len(head))
    table = [
        ("saliency", "saliency", "naive saliency", True),
        ("saliency, vjp='batched'", "saliency batched", "naive saliency", True),
        (f"saliency, generating the {n_target} targets", "saliency generate", None, False),
        (f"  of which generating {n_target} tokens", "generate", None, False),
        ("input_x_gradient", "input_x_gradient", "naive input_x_gradient", True),
        ("integrated_gradients trapezoid-50", "ig trapezoid-50", "naive ig trapezoid-50", False),
    ]
    if n_gl is not None:
        label = f"integrated_gradients GL-{n_gl} (same error)"
        table.append((label, f"ig GL-{n_gl}", "naive ig trapezoid-50", False))
    table += [
        ("gradient_shap (8 samples)", "gradient_shap", "naive gradient_shap", False),
        ("attention", "attention", "naive attention", False),
        ("occlusion", "occlusion", "naive occlusion", False),
    ]
    for label, key, naive_key, grad in table:
        mine = t[key]
        ref = t.get(naive_key)
        mark = "*" if ref is naive_ig and every > 1 else " "
        cells = [
            f"{label:<40}{mine.seconds:>10.2f}{mine.seconds / u:>8.1f}",
            f"{ref.seconds:>8.2f}{mark}{ref.seconds / mine.seconds:>8.1f}x" if ref else " " * 18,
            f"{mine.seconds / floor.seconds:>9.2f}" if grad else " " * 9,
            f"{mine.peak_mb:>7.0f}",
            f"{ref.peak_mb:>9.0f}" if ref else " " * 9,
            f"{check[key]:>9.1e}" if key in check else "",
        ]
        print("".join(cells))
    gl_curve = ", ".join(f"{n}:{e:.1e}" for n, e in sorted(errors.items()))
    print(
        f"\nIG completeness error max_t |sum IG_t - (F_t(x) - F_t(x'))| (largest |F_t(x) - "
        f"F_t(x')| {gap:.1e}):\n  trapezoid-50 {trap_err:.1e}; Gauss-Legendre n:error {gl_curve}"
    )
    if every > 1:
        print(
            f"* naive IG timed on {len(alphas[::every])} of the 50 alphas per step and scaled "
            f"by {len(alphas) / len(alphas[::every]):g} (--naive_ig_alphas 50 times all)"
        )
    print(
        "the GL row's naive time is the naive trapezoid-50 loop, which reaches that error.\n"
        "check = max|hooklab - naive| / max|naive| over visible entries (nan: not comparable)"
    )

    per_point = t["ig GL-50 per point"].seconds
    print(
        "\nIG quadrature points batched (k points per forward pass, then one batched VJP over"
        " all steps; default: max_batch_tokens=2048 sets points per pass and steps per VJP)"
        " against one point per pass; check = max|x - per point| / max|per point|; cpu ="
        " process time:"
    )
    for key in ig_paths:
        err, _ = ig_error(out_paths[key])
        n_used = int(out_paths[key][0].extras["n_points"][0])
        print(
            f"  {key:<22}{t[key].seconds:>8.2f} s (cpu {t[key].cpu_seconds:6.2f} s)"
            f"{per_point / t[key].seconds:>7.2f}x"
            f"  {n_used:>3} points, max |delta| {err:.1e}, peak +{t[key].peak_mb:.0f} MB,"
            f" check {check[key]:.1e}"
        )

    print("\nQuoted Inseq times (measured by someone else on this machine; NOT measured here):")
    if args.quick:
        print("(quick run: tiny model and shorter texts, so these ratios mean nothing)")
    ig_key = f"ig GL-{n_gl}" if n_gl is not None else "ig trapezoid-50"
    quoted = [  # label, Inseq s, our key, target ratio
        ("saliency", QUOTED_INSEQ["saliency"], "saliency", 1.5),
        ("saliency, vjp='batched'", QUOTED_INSEQ["saliency"], "saliency batched", 1.5),
        ("saliency (generate)", QUOTED_INSEQ["saliency (generate)"], "saliency generate", 1.5),
        (f"integrated_gradients {ig_key[3:]}", QUOTED_INSEQ["integrated_gradients"], ig_key, 4),
        ("attention", QUOTED_INSEQ["attention"], "attention", 2),
        ("occlusion", QUOTED_INSEQ["occlusion"], "occlusion", 8),
    ]
    print(f"{'method':<36}{'Inseq s':>9}{'hooklab s':>11}{'ratio':>8}{'target':>8}")
    for label, theirs, key, goal in quoted:
        ratio = theirs / t[key].seconds
        verdict = "PASS" if ratio >= goal else "MISS"
        print(
            f"{label:<36}{theirs:>9.1f}{t[key].seconds:>11.2f}{ratio:>7.1f}x{goal:>7}x  {verdict}"
        )
    print("\nTargets against what this run measured:")
    for label, key, naive_key, goal in [
        ("saliency vs naive", "saliency", "naive saliency", 1.5),
        ("input_x_gradient vs naive", "input_x_gradient", "naive input_x_gradient", 1.5),
        ("IG at the trapezoid-50 error vs naive", ig_key, "naive ig trapezoid-50", 4),
        ("attention vs naive", "attention", "naive attention", 2),
        ("occlusion vs naive", "occlusion", "naive occlusion", 8),
    ]:
        ratio = t[naive_key].seconds / t[key].seconds
        print(f"  {label:<40}{ratio:>7.1f}x  (>= {goal}x) {'PASS' if ratio >= goal else 'MISS'}")
    for key in ("saliency", "saliency batched", "input_x_gradient"):
        ratio = t[key].seconds / floor.seconds
        verdict = "PASS" if ratio <= 1.3 else "MISS"
        print(f"  {key + ' / floor':<40}{ratio:>7.2f}x  (<= 1.3x) {verdict}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny config, one run each")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument(
        "--budget", type=float, default=20.0, help="s per group before repeats stop"
    )
    parser.add_argument("--max_gl", type=int, default=32, help="largest Gauss-Legendre size tried")
    parser.add_argument(
        "--naive_ig_alphas", type=int, default=5, help="alphas of 50 the naive IG loop times"
    )
    run(parser.parse_args())


if __name__ == "__main__":
    main()
