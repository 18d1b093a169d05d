"""PECoRe: CTI and CCI against explicit computations, selection edge cases, bad input, datasets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from hooklab.hooks import hook_name, temporary_hooks
from hooklab.inputs import encode_prompt, encode_target
from hooklab.pecore import PecoreOptions, PecoreResult, pecore, select
from hooklab.pecore.dataset import run_dataset
from hooklab.pecore.metrics import auprc, f1, top1, word_indices

CONTEXT, CURRENT, OUTPUT = (
    "George was sick yesterday.",
    "His colleagues asked him",
    "to the hospital.",
)


def _logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids]), prepend_bos=False)[0]


@pytest.mark.parametrize("metric", ["kl_divergence", "pcxmi", "likelihood_ratio"])
def test_cti_equals_two_explicit_passes(tiny, metric):
    res = pecore(
        tiny, CONTEXT, CURRENT, output_current_text=OUTPUT, context_sensitivity_metric=metric
    )
    ctx = encode_prompt(tiny, f"{CONTEXT} {CURRENT}")
    noctx = encode_prompt(tiny, CURRENT)
    out = encode_target(tiny, " " + OUTPUT)
    assert len(res.cti_scores) == len(out)
    lc, ln = _logits(tiny, ctx + out), _logits(tiny, noctx + out)
    for t, y in enumerate(out):
        p = torch.log_softmax(lc[len(ctx) + t - 1], -1)
        q = torch.log_softmax(ln[len(noctx) + t - 1], -1)
        expected = {
            "kl_divergence": (p.exp() * (p - q)).sum(),
            "pcxmi": (p[y] - q[y]) / torch.log(torch.tensor(2.0)),
            "likelihood_ratio": (p[y] - q[y]).exp(),
        }[metric]
        assert res.cti_scores[t] == pytest.approx(expected.item(), rel=1e-4, abs=1e-6)


def _cci_gradient(model, ctx: list[int], noctx: list[int], out: list[int], t: int):
    """Explicit autograd of PECoRe's CCI target at output step t: the gradient of
    P(y_t) - P(y_alt) after the contextual prefix with respect to its token embeddings (the
    contextless probability of y_t instead when the contextless prediction y_alt is y_t),
    and y_alt."""
    alt = int(_logits(model, noctx + out)[len(noctx) + t - 1].argmax())
    ids = ctx + out[:t]
    emb = model.embed(torch.tensor([ids]))[0].detach().requires_grad_(True)
    with temporary_hooks(model, [(hook_name("embed"), lambda x, hook, e=emb: e[None])]):
        probs = torch.softmax(model(torch.tensor([ids]), prepend_bos=False)[0, -1], -1)
    if alt != out[t]:
        target = probs[out[t]] - probs[alt]
    else:  # contrast with the contextless pass instead
        target = probs[out[t]] - torch.softmax(_logits(model, noctx + out[:t])[-1], -1)[out[t]]
    (g,) = torch.autograd.grad(target, emb)
    return g, alt


def test_cci_equals_explicit_autograd(gpt2):
    opts = dict(
        output_current_text=OUTPUT,
        context_sensitivity_topk=2,
        context_sensitivity_std_threshold=None,
    )
    res = pecore(gpt2, CONTEXT, CURRENT, **opts)
    assert len(res.context_sensitive) == 2
    ctx = encode_prompt(gpt2, f"{CONTEXT} {CURRENT}")
    noctx = encode_prompt(gpt2, CURRENT)
    out = encode_target(gpt2, " " + OUTPUT)
    n_ctx_tokens = len(encode_target(gpt2, CONTEXT))
    for entry in res.context_sensitive:
        g, alt = _cci_gradient(gpt2, ctx, noctx, out, entry.index)
        expected = g.abs().norm(dim=-1)[1 : 1 + n_ctx_tokens]  # skip BOS; context comes first
        assert_close(
            torch.tensor(entry.input_context_scores, dtype=torch.float32),
            expected,
            atol=1e-6,
            rtol=1e-4,
        )
        assert entry.contextless_token == gpt2.tokenizer.decode([alt])


@pytest.mark.parametrize(
    ("scores", "kwargs", "expected"),
    [
        ([0.3], {}, []),  # one token: nothing stands out
        ([0.3], {"topk": 1, "std_threshold": None}, [0]),
        ([1.0, 1.0, 1.0], {}, []),  # all equal
        ([1.0, 1.0, 1.0], {"std_threshold": None, "topk": 2}, [0, 1]),
        ([0.0, 1.0, 2.0, 3.0], {"std_threshold": 0.0}, [2, 3]),  # λ = 0: >= mean
        ([0.0, 1.0, 2.0, 9.0], {}, [3]),
        ([0.0, -5.0, 1.0, 0.5], {}, [1]),  # signed: |s|
        ([0.1, 0.2], {"std_threshold": None, "topk": 10}, [0, 1]),  # top-k > length
        ([0.0, 1.0, 2.0, 3.0], {"std_threshold": 0.0, "topk": 1}, [3]),
        ([float("nan"), 1.0, 5.0], {"std_threshold": None}, [1, 2]),
    ],
)
def test_select_edge_cases(scores, kwargs, expected):
    assert select(torch.tensor(scores), **kwargs) == expected


def test_select_respects_candidates_and_validates():
    assert select(
        torch.tensor([9.0, 0.0, 1.0, 0.0]), candidates=torch.tensor([False, True, True, True])
    ) == [2]
    with pytest.raises(ValueError, match="topk"):
        select(torch.tensor([1.0]), topk=-1)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"input_template": "{context} only"}, ValueError, r"lacks \{current\}"),
        ({"input_template": "{current} alone"}, ValueError, r"has no \{context\}"),
        ({"input_current_text": "  "}, ValueError, "input_current_text is empty"),
        ({"context_sensitivity_metric": "kl"}, KeyError, "kl_divergence"),
        ({"attribution_method": "salency"}, KeyError, "saliency"),
        ({"attributed_fn": "prob"}, KeyError, "probability"),
        ({"output_current_text": "word " * 80}, ValueError, "context window"),
        ({"input_template": "{context} {current} {oops}"}, ValueError, "unknown placeholders"),
        ({"context_sensitivity_topk": 0}, ValueError, "context_sensitivity_topk"),
    ],
)
def test_bad_input(gpt2, kwargs, error, match):
    call = {
        "input_context_text": CONTEXT,
        "input_current_text": CURRENT,
        "output_current_text": OUTPUT,
    }
    call.update(kwargs)
    with pytest.raises(error, match=match):
        pecore(gpt2, call.pop("input_context_text"), call.pop("input_current_text"), **call)


def test_result_round_trip_and_views(gpt2, tmp_path):
    res = pecore(
        gpt2,
        CONTEXT,
        CURRENT,
        output_current_text=OUTPUT,
        context_sensitivity_topk=1,
        context_sensitivity_std_threshold=None,
    )
    before = res.to_json()
    text, page, fig = res.to_text(), res.to_html(), res.plot()
    assert "{" in text and "Input context" in text and "<span" in page
    assert fig.axes and res.to_json() == before  # views never change the scores
    path = res.save(tmp_path / "r.json")
    assert PecoreResult.load(path) == res
    with pytest.raises(FileExistsError):
        res.save(path)
    data = json.loads(path.read_text())
    entry = data["context_sensitive"][0]
    assert data["output_current_tokens"][entry["index"]] == entry["token"]
    for cue in entry["cues"]:
        assert entry["input_context_tokens"][cue["index"]] == cue["token"]


@pytest.mark.parametrize("metric", ["kl_divergence", "pcxmi"])
def test_cti_one_pass_equals_two_passes(gpt2, metric):
    """CTI's contextual and contextless rows in one batched forward (the default) give the
    scores and contextless alternatives of two separate passes (``one_pass=False``)."""
    from hooklab.pecore.core import cti_scores
    from hooklab.pecore.encode import encode_example

    opts = PecoreOptions(context_sensitivity_metric=metric)
    texts = [(CONTEXT, CURRENT, OUTPUT), ("It rained.", "She took her", "umbrella to work.")]
    examples = [
        encode_example(
            gpt2, opts, input_context_text=c, input_current_text=i, output_current_text=o
        )
        for c, i, o in texts
    ]
    one, one_alt = cti_scores(gpt2, examples, opts)
    two, two_alt = cti_scores(gpt2, examples, opts, one_pass=False)
    assert one_alt == two_alt
    for a, b in zip(one, two, strict=True):
        assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_batched_equals_one_by_one(gpt2):
    from hooklab.pecore import pecore_batch

    examples = [
        {
            "input_context_text": CONTEXT,
            "input_current_text": CURRENT,
            "output_current_text": OUTPUT,
        },
        {
            "input_context_text": "It rained.",
            "input_current_text": "She took her",
            "output_current_text": "umbrella to the office.",
        },
    ]
    opts = PecoreOptions(context_sensitivity_topk=2, context_sensitivity_std_threshold=None)
    both = pecore_batch(gpt2, examples, opts)
    for ex, res in zip(examples, both):
        alone = pecore_batch(gpt2, [ex], opts)[0]
        assert alone.output_current_tokens == res.output_current_tokens
        assert alone.cti_scores == pytest.approx(res.cti_scores, abs=1e-5)
        for a, b in zip(alone.context_sensitive, res.context_sensitive, strict=True):
            assert a.index == b.index
            assert a.input_context_scores == pytest.approx(b.input_context_scores, abs=1e-5)


def test_metrics():
    assert f1([1, 2], [2, 3]) == pytest.approx(0.5)
    assert f1([], []) == 1.0 and f1([1], []) == 0.0
    assert auprc([0.9, 0.1, 0.5], [0, 2]) == pytest.approx(1.0)
    assert auprc([0.1, 0.9, 0.5], [0]) == pytest.approx(1 / 3)
    assert auprc([0.1], []) is None
    assert top1([0.1, -0.9, 0.5], [1]) == 1.0
    assert word_indices([" George", " was", " sick", " yes", "terday", "."], ["yesterday"]) == [
        3,
        4,
    ]
    assert word_indices([" sickness", " sick", "."], ["sick"]) == [1]


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")


def test_dataset_resume_and_malformed_lines(gpt2, tmp_path):
    good = {
        "input_context_text": CONTEXT,
        "input_current_text": CURRENT,
        "output_current_text": OUTPUT,
        "gold_context_sensitive_words": ["hospital"],
        "gold_cue_words": ["sick"],
    }
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps({**good, "input_template": "{current}"}),
        "",
        json.dumps({**good, "bogus": 1}),
        json.dumps({**good, "input_current_text": "It"}),
    ]
    data, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(data, lines)
    logged = []
    summary = run_dataset(
        gpt2, data, out, PecoreOptions(), batch_size=2, show_progress=False, log=logged.append
    )
    records = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(r["line"] for r in records) == [1, 2, 3, 5, 6]
    errors = {e["line"]: e["error"] for e in summary["errors"]}
    assert set(errors) == {2, 3, 5} and "not valid JSON" in errors[2] and "bogus" in errors[5]
    assert any("line 3" in m for m in logged)
    first = next(r for r in records if r["line"] == 1)
    assert {"cti_f1", "cti_auprc", "cci_top1"} <= set(first["metrics"])
    # simulate a crash mid-write: drop one finished record and leave half a line behind
    kept = out.read_text().splitlines()
    out.write_text("\n".join(kept[:-1]) + "\n" + kept[-1][:20])
    summary2 = run_dataset(gpt2, data, out, PecoreOptions(), show_progress=False, log=logged.append)
    records2 = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(r["line"] for r in records2) == [1, 2, 3, 5, 6]
    assert summary2["succeeded"] == summary["succeeded"]


def test_batched_generation_equals_one_by_one(toy):
    from hooklab.pecore import pecore_batch

    examples = [
        {
            "input_context_text": "George was sick yesterday.",
            "input_current_text": CURRENT + " to come",
        },
        {
            "input_context_text": "It was hot all week.",
            "input_current_text": "Before leaving, she grabbed her",
        },
    ]
    both = pecore_batch(toy, examples, PecoreOptions())
    for ex, res in zip(examples, both):
        alone = pecore_batch(toy, [ex], PecoreOptions())[0]
        assert alone.output_current == res.output_current
        assert alone.cti_scores == pytest.approx(res.cti_scores, abs=1e-5)
    assert both[0].output_current.startswith("to the hospital")
    assert both[1].output_current.startswith("hat")


def test_result_records_model_and_resolved_options(toy):
    from hooklab.pecore import PecoreOptions, pecore

    res = pecore(toy, "George was sick yesterday.", "His colleagues asked him to come")
    # every option is recorded, defaults included, and cannot be changed afterwards
    assert set(res.parameters) == set(PecoreOptions.field_names())
    assert res.parameters["context_sensitivity_metric"] == "kl_divergence"
    assert res.parameters["attribution_std_threshold"] == 1.0
    with pytest.raises(TypeError):
        res.parameters["attribution_method"] = "attention"
    assert res.model["name_or_path"] == "toy" and len(res.model["config_digest"]) == 16


def test_output_context_cci_equals_explicit_autograd(gpt2):
    """Decoder-only output context: CCI scores its tokens too, and cues span both contexts."""
    out_ctx = "Mary was hungry at noon."
    res = pecore(
        gpt2, CONTEXT, CURRENT, output_context_text=out_ctx, output_current_text=OUTPUT,
        output_template="{context} {current}", context_sensitivity_topk=1,
        context_sensitivity_std_threshold=None, attribution_std_threshold=None,
        attribution_topk=3,
    )  # fmt: skip
    (entry,) = res.context_sensitive
    n_in, n_out = len(encode_target(gpt2, CONTEXT)), len(entry.output_context_tokens)
    assert len(entry.input_context_scores) == n_in and len(entry.output_context_scores) == n_out
    # the separator may be a token of its own (this tokenizer: ' ', 'Mary'); it is not context
    assert "".join(entry.output_context_tokens).strip() == out_ctx
    sep_tokens = len(encode_target(gpt2, " " + out_ctx)) - n_out
    assert res.output_context_tokens == entry.output_context_tokens
    # the contextual input: BOS, input context + current, separator + output context, output
    ctx = encode_prompt(gpt2, f"{CONTEXT} {CURRENT}") + encode_target(gpt2, " " + out_ctx)
    noctx = encode_prompt(gpt2, CURRENT)
    out = encode_target(gpt2, " " + OUTPUT)
    g, _ = _cci_gradient(gpt2, ctx, noctx, out, entry.index)
    norms = g.norm(dim=-1)
    first_out = len(encode_prompt(gpt2, f"{CONTEXT} {CURRENT}")) + sep_tokens
    assert_close(torch.tensor(entry.input_context_scores), norms[1 : 1 + n_in].float(),
                 atol=1e-6, rtol=1e-4)  # fmt: skip
    assert_close(torch.tensor(entry.output_context_scores),
                 norms[first_out : first_out + n_out].float(), atol=1e-6, rtol=1e-4)  # fmt: skip
    # cues: top 3 by |score| over both contexts together, each with its side
    both = [("input", i, s) for i, s in enumerate(entry.input_context_scores)]
    both += [("output", i, s) for i, s in enumerate(entry.output_context_scores)]
    top = sorted(both, key=lambda x: -abs(x[2]))[:3]
    assert sorted((q.side, q.index) for q in entry.cues) == sorted((s, i) for s, i, _ in top)
    assert PecoreResult.from_dict(res.to_dict()) == res


FIXTURE = Path(__file__).parent / "fixtures" / "inseq_attribute_context.json"


def _same_shape(ours, theirs, where="") -> list[str]:
    """Differences in keys and JSON types between two Inseq-schema values (None matches all)."""
    if ours is None or theirs is None:
        return []
    if isinstance(theirs, dict):
        if not isinstance(ours, dict):
            return [f"{where}: dict expected, got {type(ours).__name__}"]
        missing = [f"{where}.{k}: missing" for k in theirs if k not in ours]
        extra = [f"{where}.{k}: not in Inseq's schema" for k in ours if k not in theirs]
        nested = [
            d for k in theirs if k in ours for d in _same_shape(ours[k], theirs[k], f"{where}.{k}")
        ]
        return missing + extra + nested
    if isinstance(theirs, list):
        if not isinstance(ours, list):
            return [f"{where}: list expected, got {type(ours).__name__}"]
        return (
            [d for x in ours[:1] for d in _same_shape(x, theirs[0], f"{where}[0]")]
            if theirs
            else []
        )
    number = (int, float)
    kind_ok = isinstance(ours, number) if isinstance(theirs, number) else type(ours) is type(theirs)
    return [] if kind_ok else [f"{where}: {type(theirs).__name__} expected, got {ours!r}"]


def test_inseq_export_matches_inseq_schema(toy):
    """`to_inseq()` has Inseq's AttributeContextOutput fields, field by field, and types."""
    fixture = json.loads(FIXTURE.read_text())
    res = pecore(toy, "George was sick yesterday.", "His colleagues asked him to come")
    ours = res.to_inseq()
    assert _same_shape(ours, fixture) == []
    assert json.loads(json.dumps(ours)) == ours  # plain JSON values
    (entry,) = ours["cci_scores"]
    assert entry["cti_token"] == " hospital" and entry["cti_idx"] == 2
    assert entry["contextual_output"] == "to the hospital"
    assert entry["contextless_output"] == "to the" + entry["contrast_token"]
    assert entry["input_context_scores"] == list(res.context_sensitive[0].input_context_scores)
    assert entry["output_context_scores"] is None and ours["output_context_tokens"] is None
    assert ours["info"]["model_name_or_path"] == "toy"
    # with an output context both score lists are there
    with_out = pecore(
        toy, "George was sick yesterday.", "His colleagues asked him to come",
        output_context_text="He stayed home.", output_current_text="to the hospital.",
        output_template="{context} {current}", context_sensitivity_topk=1,
    )  # fmt: skip
    entry = with_out.to_inseq()["cci_scores"][0]
    assert len(entry["output_context_scores"]) == len(with_out.output_context_tokens) > 0
    assert entry["contextual_output"].startswith("He stayed home. ")


def test_inseq_export_loads_in_inseq_when_installed(toy):
    """Only where Inseq happens to be installed (nothing is installed for this test)."""
    pytest.importorskip("inseq")
    from inseq.commands.attribute_context.attribute_context_helpers import AttributeContextOutput

    ours = pecore(toy, "George was sick yesterday.", "His colleagues asked him to come").to_inseq()
    loaded = AttributeContextOutput.from_dict(ours)
    assert loaded.cti_scores == ours["cti_scores"]
    assert (
        loaded.cci_scores[0].input_context_scores == ours["cci_scores"][0]["input_context_scores"]
    )
