"""Bad input gets a clear error that names the bad value; nothing is lost or silently wrong.

Every case asserts the exception type and that the message names the offending argument, value
or path; cases that use a model also check that hooks, weights and mode are unchanged.
"""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

import hooklab
from hooklab.hooks import count_hooks
from hooklab.pecore import PecoreOptions, pecore
from hooklab.pecore.dataset import run_dataset

CONTEXT = "George was sick yesterday."
CURRENT = "His colleagues asked him"
OUTPUT = "to come to the hospital."


def raises_clearly(model, exc: type[Exception], match: str, fn, *args, **kwargs):
    """Assert ``fn`` raises ``exc`` whose message matches ``match``; model left unchanged."""
    before = None
    if model is not None:
        before = {k: v.clone() for k, v in model.state_dict().items()}
        training, hooks = model.training, count_hooks(model)  # some bridges own hooks
    with pytest.raises(exc, match=match):
        fn(*args, **kwargs)
    if model is not None:
        assert count_hooks(model) == hooks
        assert model.training == training
        after = model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)


# ---- PECoRe options --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("option", "value", "exc", "match"),
    [
        ("context_sensitivity_std_threshold", math.nan, ValueError, "must be finite"),
        ("context_sensitivity_std_threshold", math.inf, ValueError, "must be finite"),
        # (a TypeError; under the test-time jaxtyping checks, its TypeCheckError subclass)
        ("context_sensitivity_std_threshold", "1.0", TypeError, "context_sensitivity_std_thr"),
        ("attribution_std_threshold", math.nan, ValueError, "attribution_std_threshold"),
        ("attribution_std_threshold", True, TypeError, "attribution_std_threshold"),
        ("context_sensitivity_topk", 0, ValueError, "context_sensitivity_topk"),
        ("context_sensitivity_topk", True, ValueError, "context_sensitivity_topk"),
        ("attribution_topk", -1, ValueError, "attribution_topk"),
        ("special_tokens_to_keep", 5, TypeError, "special_tokens_to_keep"),
        ("special_tokens_to_keep", "<|endoftext|>", TypeError, "list of token strings"),
        ("special_tokens_to_keep", [""], TypeError, "special_tokens_to_keep"),
        ("decoder_input_output_separator", None, TypeError, "decoder_input_output_separator"),
        ("input_template", "{current}{bogus}", ValueError, "bogus"),
        ("contextless_input_current_text", "{context}", ValueError, "contextless_input"),
        ("context_sensitivity_metric", "kl", KeyError, "kl_divergence"),
        ("attribution_method", "salency", KeyError, "saliency"),
        ("attributed_fn", "prob", KeyError, "probability"),
    ],
)
def test_pecore_options(option, value, exc, match):
    raises_clearly(None, exc, match, PecoreOptions, **{option: value})


def test_unknown_option_name_is_listed():
    raises_clearly(None, KeyError, "context_sensitivity_topk", PecoreOptions().replace, topk=3)


def test_unknown_special_token_to_keep(gpt2):
    raises_clearly(
        gpt2, ValueError, "not special tokens", pecore, gpt2, CONTEXT, CURRENT,
        output_current_text=OUTPUT, special_tokens_to_keep=["hospital"],
    )  # fmt: skip


# ---- loading ---------------------------------------------------------------------------------
def test_checkpoint_without_tokenizer_is_refused(gpt2_dir, tmp_path):
    import shutil

    for name in ("config.json", "model.safetensors"):
        shutil.copy(gpt2_dir / name, tmp_path / name)
    raises_clearly(None, ValueError, "tokenizer has 1 tokens", hooklab.load, tmp_path)
    # with the tokenizer passed explicitly it loads
    from transformers import AutoTokenizer

    model = hooklab.load(tmp_path, tokenizer=AutoTokenizer.from_pretrained(gpt2_dir))
    assert len(model.tokenizer) == model.cfg.d_vocab


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda b: b[: len(b) // 2], "model.safetensors' is not a readable safetensors file"),
        (lambda b: b"", "truncated or damaged"),
        (lambda b: b"not a safetensors file", "model.safetensors"),
    ],
)
def test_damaged_weights_are_named(gpt2_dir, tmp_path, damage, match):
    import shutil

    for f in gpt2_dir.iterdir():
        shutil.copy(f, tmp_path / f.name)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    raises_clearly(None, ValueError, match, hooklab.load, tmp_path)


def test_damaged_config_is_named(gpt2_dir, tmp_path):
    import shutil

    for f in gpt2_dir.iterdir():
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "config.json").write_text("{not json")
    raises_clearly(None, ValueError, "config.json' is not valid JSON", hooklab.load, tmp_path)


@pytest.mark.parametrize(
    ("context", "current", "exc", "match"),
    [
        # TypeError naming the argument (test-time jaxtyping checks raise a TypeError subclass
        # that names it first; users get hooklab's own "... must be a string, got int: 5.")
        (5, CURRENT, TypeError, "input_context_text"),
        (CONTEXT, ["a list"], TypeError, "input_current_text"),
        (CONTEXT, "", ValueError, "input_current_text is empty"),
        (CONTEXT, "   ", ValueError, "input_current_text is empty"),
        ("", CURRENT, ValueError, "expects a context"),
    ],
)
def test_pecore_texts(gpt2, context, current, exc, match):
    raises_clearly(gpt2, exc, match, pecore, gpt2, context, current)


# ---- dataset mode ----------------------------------------------------------------------------
def _good(**changes):
    return {
        "input_context_text": CONTEXT,
        "input_current_text": CURRENT,
        "output_current_text": OUTPUT,
        **changes,
    }


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_dataset_refuses_input_as_output(gpt2, tmp_path):
    data = tmp_path / "data.jsonl"
    _write(data, [_good()] * 3)
    before = data.read_bytes()
    raises_clearly(gpt2, ValueError, "is the input file", run_dataset, gpt2, data, data,
                   PecoreOptions(), show_progress=False)  # fmt: skip
    link = tmp_path / "link.jsonl"
    link.symlink_to(data)
    raises_clearly(gpt2, ValueError, "is the input file", run_dataset, gpt2, data, link,
                   PecoreOptions(), show_progress=False)  # fmt: skip
    assert data.read_bytes() == before


def test_dataset_poison_line_becomes_an_error_record(gpt2, tmp_path):
    records = [_good() for _ in range(40)]
    records[17] = _good(attributed_fn="top_p_size")  # not differentiable: fails inside torch
    data, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(data, records)
    summary = run_dataset(gpt2, data, out, PecoreOptions(), batch_size=8, show_progress=False,
                          log=lambda m: None)  # fmt: skip
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 40 and sorted(r["line"] for r in lines) == list(range(1, 41))
    errors = [r for r in lines if "error" in r]
    assert [r["line"] for r in errors] == [18]
    assert summary["succeeded"] == 39 and len(summary["errors"]) == 1


def test_dataset_refuses_foreign_output_and_leaves_it(gpt2, tmp_path):
    data, out = tmp_path / "in.jsonl", tmp_path / "notes.txt"
    _write(data, [_good()])
    out.write_text("my notes\nmore notes")  # no trailing newline: must not be cut off
    before = out.read_bytes()
    raises_clearly(gpt2, ValueError, "line 1 is not a PECoRe dataset record", run_dataset,
                   gpt2, data, out, PecoreOptions(), show_progress=False)  # fmt: skip
    assert out.read_bytes() == before
    out.write_text('{"no_line": 1}\n')
    raises_clearly(gpt2, ValueError, "notes.txt", run_dataset, gpt2, data, out,
                   PecoreOptions(), show_progress=False)  # fmt: skip


def test_dataset_resume_with_other_settings_is_refused(gpt2, tmp_path):
    data, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(data, [_good(), _good()])
    run_dataset(gpt2, data, out, PecoreOptions(), show_progress=False)
    first = out.read_bytes()
    other = PecoreOptions(context_sensitivity_metric="pcxmi")
    raises_clearly(gpt2, ValueError, "options.context_sensitivity_metric", run_dataset,
                   gpt2, data, out, other, show_progress=False)  # fmt: skip
    assert out.read_bytes() == first
    run_dataset(gpt2, data, out, other, show_progress=False, restart=True)
    redone = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(redone) == 2
    assert {r["parameters"]["context_sensitivity_metric"] for r in redone} == {"pcxmi"}


@pytest.mark.parametrize(
    ("gold", "match"),
    [
        ({"gold_context_sensitive": [99]}, "outside the"),
        ({"gold_context_sensitive": ["3"]}, "list of int token indices"),
        ({"gold_cues": [-1]}, "outside the"),
        ({"gold_cue_words": ["headache"]}, "headache"),
        ({"gold_context_sensitive_words": "hospital"}, "gold_context_sensitive_words"),
    ],
)
def test_dataset_bad_gold_annotations(gpt2, tmp_path, gold, match):
    data, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(data, [_good(), _good(**gold)])
    summary = run_dataset(gpt2, data, out, PecoreOptions(), show_progress=False,
                          log=lambda m: None)  # fmt: skip
    assert summary["succeeded"] == 1
    (error,) = summary["errors"]
    assert error["line"] == 2 and match in error["error"]


# ---- encoder-decoder models: bad sources and targets, PECoRe refused ------------------------
@pytest.fixture(scope="module", params=["marian", "t5"])
def seq2seq(request, tmp_path_factory):
    from tests.test_mixing_encoder_decoder import build_seq2seq

    path = build_seq2seq(tmp_path_factory.mktemp(request.param), request.param)
    return hooklab.load(path, device="cpu")


def test_encoder_decoder_bad_sources_and_targets(seq2seq):
    window = seq2seq.cfg.n_ctx
    raises_clearly(seq2seq, ValueError, "Source text is empty", hooklab.attribute,
                   seq2seq, "  ", "Georg war krank .")  # fmt: skip
    long_source = list(range(5, 5 + window + 1))
    raises_clearly(seq2seq, ValueError, re.escape(f"source (encoder input) is {window + 1} tokens"),
                   hooklab.attribute, seq2seq, [long_source], [[5, 6]])  # fmt: skip
    what = f"decoder input (decoder start token + target) is {window + 2} tokens"
    raises_clearly(seq2seq, ValueError, re.escape(what), hooklab.attribute, seq2seq,
                   "George was sick .", [list(range(5, 5 + window + 1))])  # fmt: skip


def test_pecore_encoder_decoder_bad_input(seq2seq):
    raises_clearly(seq2seq, ValueError, "input_current_text is empty", pecore, seq2seq,
                   CONTEXT, " ")  # fmt: skip
    too_long = r"source \(encoder input\) is \d+ tokens long"
    raises_clearly(seq2seq, ValueError, too_long, pecore, seq2seq, "a " * seq2seq.cfg.n_ctx,
                   CURRENT, output_current_text=OUTPUT)  # fmt: skip
    raises_clearly(seq2seq, ValueError, "contextless_input_current_text", pecore, seq2seq,
                   CONTEXT, CURRENT, contextless_input_current_text="no placeholder")  # fmt: skip
