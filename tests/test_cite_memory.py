"""Memory of citations on a long document context: CCI only on the selected answer tokens and
``max_batch_tokens`` respected keep the peak within the budget the README states.

The model has GPT-2-small's width (d_model 768, 12 heads, 2048 positions) but 2 layers instead
of 12 and the 400-token test vocabulary, so that it is built from a config in seconds and the
test runs in about a minute on two busy CPU cores (65 s measured at load ~6); the attention and
activation memory per layer, which dominates here, is GPT-2-small's. The peak is read in a
subprocess from the kernel's high-water mark (``tests.test_memory.run_probe``), never from
timings.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

import hooklab
from tests.test_memory import _peak_mb, build_long_gpt2, run_probe

CONTEXT_TOKENS = 1000  # at least this many document tokens
BUDGET_MB = 900  # peak resident-set growth of cite() with the default options (README)
NAMES = ["Anna", "Ben", "Clara", "David", "Ida", "Nora", "Rosa", "Vera"]
PLACES = ["Rome", "Oslo", "Paris", "Dublin", "Vienna", "Madrid"]


def documents(model, n_tokens: int) -> list[str]:
    """Documents ("Anna lives in Rome. ...", 12 sentences each) until the joined context holds
    ``n_tokens`` tokens."""
    from hooklab.cite import CiteOptions, join_documents

    docs, k = [], 0
    while True:
        sentences = []
        for _ in range(12):
            sentences.append(f"{NAMES[k % 8]} lives in {PLACES[(k * 5) % 6]}.")
            k += 1
        docs.append(" ".join(sentences))
        context, _ = join_documents(docs, CiteOptions())
        if len(model.tokenizer(context, add_special_tokens=False)["input_ids"]) >= n_tokens:
            return docs


def probe(path: str) -> dict[str, float]:
    """Peaks (MB) of cite() on a 1,000-token context: default (``max_batch_tokens`` 2048: one
    CCI sequence a pass) and unbounded (every selected token's CCI in one batch)."""
    torch.set_num_threads(1)
    model = hooklab.load(path, device="cpu")
    docs = documents(model, CONTEXT_TOKENS)
    question, answer = "Ben lives in?", "Ben lives in Oslo."
    hooklab.cite(model, question, docs[:1], answer=answer)  # warm-up

    out = {}

    def run(name, **options):
        def call():
            out[name] = hooklab.cite(model, question, docs, answer=answer, **options)

        return _peak_mb(call)

    peaks = {
        "default_mb": run("default"),
        "unbounded_mb": run(
            "unbounded", pecore_options={"attribution_kwargs": {"max_batch_tokens": 10**9}}
        ),
    }
    return {
        **peaks,
        "context_tokens": len(out["default"].pecore.input_context_tokens),
        "answer_tokens": len(out["default"].pecore.output_current_tokens),
        "selected_default": len(out["default"].pecore.context_sensitive),
        "selected_unbounded": len(out["unbounded"].pecore.context_sensitive),
    }


@pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists() or sys.platform != "linux",
    reason="needs Linux /proc/self/clear_refs to reset the peak RSS",
)
def test_cite_on_1k_token_context_stays_within_the_budget(tmp_path):
    """Peak RSS growth of cite() on 1,073 document tokens (16 answer tokens, 3 selected):
    default below ``BUDGET_MB`` = 900 MB; the same selection without a batch budget (all
    three CCI sequences in one pass) above it. Measured on the 2-core dev machine: ~620 MB
    default, ~1180 MB unbounded; CCI on all 16 answer tokens in one pass: ~5900 MB."""
    model = build_long_gpt2(tmp_path / "gpt2-wide", layers=2, d_model=768, heads=12)
    peaks = run_probe("tests.test_cite_memory", model)
    assert peaks["context_tokens"] >= CONTEXT_TOKENS, peaks
    assert peaks["selected_default"] < peaks["answer_tokens"], peaks  # CCI on selected only
    assert peaks["default_mb"] < BUDGET_MB < peaks["unbounded_mb"], peaks


if __name__ == "__main__":
    print(json.dumps(probe(sys.argv[1])))
