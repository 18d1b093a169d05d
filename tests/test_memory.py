"""Bounded memory: ``max_batch_tokens`` chunks passes without changing results.

Every method that batches sequences (examples, quadrature points, samples, occluded copies) or
steps (batched VJPs) takes ``max_batch_tokens``; chunking regroups the same arithmetic, so the
results equal the unchunked ones (float64, to 1e-12). The peak-memory test runs saliency on a
2k-token input in a subprocess and reads the kernel's peak resident set size (``VmHWM``, reset
through ``/proc/self/clear_refs``) around each call.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

import hooklab
from hooklab.hooks import hook_name, temporary_hooks
from hooklab.methods.gradients import MAX_BATCH_TOKENS, plan
from hooklab.mixing.value_zeroing import MAX_BATCH_TOKENS as MIXING_DEFAULT
from hooklab.mixing.value_zeroing import value_zeroing

PROMPTS = ["George was sick yesterday.", "It rained"]
TARGETS = [" His colleagues asked", " all morning. She took"]
ROOT = Path(__file__).resolve().parents[1]

CHUNKED = {  # method -> options; each runs with the default budget and with tiny ones
    "saliency": {},
    "input_x_gradient": {"vjp": "batched"},
    "integrated_gradients": {"n_steps": 3},
    "gradient_shap": {"n_samples": 3, "stdevs": 0.1},
    "occlusion": {},
    "value_zeroing": {},
}


@pytest.fixture(scope="module", params=["gpt2_dir", "llama_dir"])
def model64(request):
    return hooklab.load(request.getfixturevalue(request.param), device="cpu", dtype="float64")


def _passes(model, fn) -> tuple[object, int]:
    """Run ``fn()``; return its result and how many forward passes it made."""
    calls = []

    def count(x, hook):
        calls.append(x.shape[0])
        return x

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # 3 IG points leave a large delta
        with temporary_hooks(model, [(hook_name("embed"), count)]):
            out = fn()
    return out, len(calls)


@pytest.mark.parametrize("method", list(CHUNKED))
def test_chunked_results_equal_unchunked(model64, method):
    """Budgets of 1 token (one sequence, one step per pass) and of about one sequence give the
    default's result, with more passes."""
    width = max(len(s.token_ids) for s in hooklab.attribute(model64, PROMPTS, TARGETS))

    def run(budget):
        return hooklab.attribute(
            model64, PROMPTS, TARGETS, method=method, max_batch_tokens=budget, **CHUNKED[method]
        )

    ref, n_ref = _passes(model64, lambda: run(MAX_BATCH_TOKENS))
    for budget in (1, width + 3):
        out, n = _passes(model64, lambda b=budget: run(b))
        if method != "value_zeroing":  # value zeroing makes one forward per example anyway
            assert n > n_ref
        for a, b in zip(out, ref):
            assert_close(a.attributions, b.attributions, atol=1e-12, rtol=0, equal_nan=True)
            for key, value in b.extras.items():
                assert_close(a.extras[key], value, atol=1e-12, rtol=0, equal_nan=True)
        assert out[0].parameters["max_batch_tokens"] == budget


def test_mixing_value_zeroing_chunked(toy):
    text = "George was sick yesterday. His colleagues asked him to come"
    (ref,) = value_zeroing(toy, text, targets="")
    (small,) = value_zeroing(toy, text, targets="", max_batch_tokens=5)
    assert_close(small.scores, ref.scores, atol=1e-6, rtol=0)
    assert MIXING_DEFAULT == MAX_BATCH_TOKENS  # one default for every method


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((4, 30, 10, 2048), (4, 10)),  # everything fits
        ((50, 30, 10, 2048), (50, 1)),  # 50 sequences x 30 tokens = 1500, one step per VJP
        ((20, 30, 10, 2048), (20, 3)),  # 20 x 30 x 3 steps = 1800
        ((1, 2048, 10, 2048), (1, 1)),  # a long sequence: one step per VJP
        ((1, 500, 10, 2048), (1, 4)),  # 4 steps x 500 tokens
        ((3, 5000, 10, 2048), (1, 1)),  # longer than the budget: one and one (the minimum)
        ((3, 10, 0, 100), (3, 1)),  # no steps (a forward-only pass): rows x width
    ],
)
def test_plan(args, expected):
    rows, chunk = plan(*args)
    assert (rows, chunk) == expected
    width, budget = args[1], args[3]
    assert rows * width * chunk <= budget or (rows, chunk) == (1, 1)


def test_plan_caps():
    assert plan(50, 30, 10, 2048, max_rows=2) == (2, 10)
    assert plan(50, 30, 10, 2048, max_rows=6, max_steps=3) == (6, 3)


# ---- peak memory ---------------------------------------------------------------------------
LONG = 2044  # prompt tokens (BOS included); + 4 forced targets = 2048 positions
BUDGET_MB = 400


def build_long_gpt2(path: Path, *, layers: int = 2, d_model: int = 64, heads: int = 4) -> Path:
    """A GPT-2 (default: 2 layers, d_model 64, 4 heads) with a 2048-token context, saved to
    ``path``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from tests.conftest import _tokenizer, save_tiny

    torch.manual_seed(0)
    tok = _tokenizer("<|endoftext|>", "<|endoftext|>")
    cfg = GPT2Config(
        n_layer=layers, n_embd=d_model, n_head=heads, n_positions=2048, vocab_size=len(tok),
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    return save_tiny(GPT2LMHeadModel(cfg).eval(), tok, path, seed=0)


def run_probe(module: str, path: Path) -> dict[str, float]:
    """Run ``python -m module path`` (its ``probe``) in a fresh one-thread process; return the
    peaks it prints as its last line of JSON."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", module, str(path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _peak_mb(fn) -> float:
    """Largest resident-set growth (MB) during ``fn()``: the kernel's high-water mark, reset
    just before (``clear_refs`` 5), minus the resident set at that moment."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back, so growth is visible
    Path("/proc/self/clear_refs").write_text("5")
    base = _status_kb("VmRSS")
    fn()
    return (_status_kb("VmHWM") - base) / 1024


def probe(path: str) -> dict[str, float]:
    """Peak memory of saliency on a 2048-token input, unchunked and at the default budget."""
    torch.set_num_threads(1)
    model = hooklab.load(path, device="cpu")
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, model.cfg.d_vocab, (LONG + 4,), generator=gen).tolist()
    prompt, target = [model.tokenizer.bos_token_id, *ids[: LONG - 1]], ids[LONG - 1 : LONG + 3]

    def run(budget, vjp="auto"):
        return hooklab.attribute(
            model, [prompt], [target], method="saliency", max_batch_tokens=budget, vjp=vjp
        )

    hooklab.attribute(model, [prompt[:20]], [target], method="saliency")  # warm-up
    fused = _peak_mb(lambda: run(MAX_BATCH_TOKENS))  # the default, on the fused twin
    with hooklab.no_twin():  # the bridge's eager attention
        hooklab.attribute(model, [prompt[:20]], [target], method="saliency")  # warm-up
        unchunked = _peak_mb(lambda: run(10**9, "batched"))  # one forward, one VJP, 4 steps
        chunked = _peak_mb(lambda: run(MAX_BATCH_TOKENS))  # the default: one step per VJP
    return {"unchunked_mb": unchunked, "chunked_mb": chunked, "fused_mb": fused}


@pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists() or sys.platform != "linux",
    reason="needs Linux /proc/self/clear_refs to reset the peak RSS",
)
def test_saliency_on_2k_tokens_stays_under_the_budget(tmp_path):
    """Saliency on 2048 tokens (tiny 2-layer GPT-2, 4 heads, 4 steps), peak RSS growth:
    default ``max_batch_tokens=2048`` (one step per VJP) below ``BUDGET_MB`` = 400 MB; unchunked
    (``vjp="batched"``: all 4 steps in one batched VJP, whose attention gradients are
    4 x 4 x 2048² floats per tensor) above it, both on the bridge (``no_twin``). Measured on
    the 2-core dev machine: ~1000 MB unchunked, ~210 MB chunked (with 8 steps: ~1770 MB and
    ~260 MB). The default on the fused twin (fused attention, no ``[head, pos, pos]``
    scores kept) stays below the bridge's chunked peak (measured ~66 MB).
    """
    peaks = run_probe("tests.test_memory", build_long_gpt2(tmp_path / "gpt2-2k"))
    assert peaks["chunked_mb"] < BUDGET_MB < peaks["unchunked_mb"], peaks
    assert peaks["fused_mb"] < peaks["chunked_mb"], peaks


if __name__ == "__main__":
    print(json.dumps(probe(sys.argv[1])))
