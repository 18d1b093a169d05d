"""The model-zoo matrix: every feature of hooklab on every family of :mod:`hooklab.zoo`.

One check per feature, each ``check(model, family) -> note`` (raises on failure; the note is
e.g. a max error). ``tests/test_zoo.py`` parametrises over :data:`FAMILIES` × :data:`FEATURES`;
``python -m tests.zoo_matrix --markdown`` runs the same checks and prints the README's
"Supported models" table. The checks live here, under ``tests/``, because the value-zeroing
cell compares with the reference implementation in ``tests/reference/`` (scripts must not
import ``tests/``, and the library must not ship test references).

Features:
    logits: the bridge's logits (and :func:`hooklab.forward.forward`'s) equal the Hugging Face
        model's, one prompt alone and two left-padded in a batch (encoder–decoder: right-padded
        sources and decoder inputs).
    prompt_ids: hooklab's prompt ids follow the tokenizer's convention: decoder-only, the
        Hugging Face tokenizer's ids with its BOS token prepended once when it has one (none
        invented when it has none, as on Qwen); encoder–decoder, the tokenizer's ids as they are.
    generate: :func:`hooklab.generate` (two prompts, batched) equals Hugging Face
        ``generate(do_sample=False)`` on each prompt alone, on the same prompt ids.
    method:<name>: :func:`hooklab.testing.check_method` for every registered method.
    vz_reference: :func:`hooklab.mixing.value_zeroing` runs and plots; the note is the max
        error of its unnormalised distances (every layer; every part of an encoder-decoder)
        against independent references written without hooklab's mixing code, one forward per
        key (``tests.reference.mixing``: the key's attention column zeroed at ``hook_pattern``,
        or its value at ``hook_v`` where a bridge discards pattern edits), within
        :data:`VZ_ATOL`.
    knockout: :func:`hooklab.mixing.attention_knockout` runs (finite probabilities) and plots.
    routes: :func:`hooklab.mixing.information_flow` at threshold 0, one edge per head, runs
        and plots; each target state's edge weights sum to 1, and every weight equals the
        contribution recomputed edge by edge from recorded hooks
        (``tests.reference.flow.ref_route_weights``; encoder–decoder:
        ``tests.reference.flow_seq2seq.ref_seq2seq_route_weights``) within
        :data:`ROUTES_ATOL`; the note is the max error.
    pecore: :func:`hooklab.pecore.pecore` on a forced output runs (CTI + CCI) and plots.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor
from torch.testing import assert_close

import hooklab
from hooklab import zoo
from hooklab.forward import bridge_forward, forward, seq2seq_forward
from hooklab.inputs import as_prompt_ids, make_batch, pad_token_id
from hooklab.seq2seq import decoder_start_id, encode_source
from hooklab.testing import check_method

FAMILIES = tuple(zoo.FAMILIES)
METHODS = tuple(hooklab.list_methods())
FEATURES = ("logits", "prompt_ids", "generate", *(f"method:{m}" for m in METHODS),
            "vz_reference", "knockout", "routes", "pecore")  # fmt: skip
#: Options that keep the slow methods cheap; the contract does not depend on them.
FAST = {
    "integrated_gradients": {"n_steps": 4},
    "gradient_shap": {"n_samples": 3, "stdevs": 0.1},
    "reagent": {"num_probes": 4, "max_probe_steps": 30},  # random models rarely stop early
}
PROMPTS = ("George was sick yesterday. His colleagues asked him", "It rained")
MAX_NEW_TOKENS = 6
ATOL, RTOL = 1e-5, 1e-4
ROUTES_ATOL = 1e-4  # float32 route weights (shares in [0, 1]) against the reference
VZ_ATOL = 1e-5  # float32, unnormalised cosine distances against the references (issue 19)
CONTEXT, CURRENT, OUTPUT = "George was sick yesterday.", "His colleagues asked", " him to come"


class Skip(Exception):
    """Raised by a check that cannot run yet (e.g. its reference does not exist)."""


class NotSupported(Exception):
    """Raised by a check whose feature refuses the family with the documented clear error."""


_SOFTCAP = "tanh soft-capped logits: no linear readout of the last residual stream"
#: ``{(family, feature): (what the refusal must say, why)}``: the cells where a feature refuses
#: the family by design (also in the README's "Supported models" table). The check asserts the
#: refusal is a ``NotImplementedError`` whose message matches; a cell that starts working fails
#: until its entry is removed.
UNSUPPORTED: dict[tuple[str, str], tuple[str, str]] = {
    ("gemma2", "method:alti_logit"): ("soft-caps its logits", _SOFTCAP),
}  # fmt: skip


def expect_refusal(family: zoo.Family, feature: str, run: Callable[[], object]) -> None:
    """Run ``run``; for an :data:`UNSUPPORTED` cell, require its documented refusal and raise
    :class:`NotSupported` with the reason."""
    expected = UNSUPPORTED.get((family.name, feature))
    if expected is None:
        run()
        return
    match, why = expected
    try:
        run()
    except (NotImplementedError, AssertionError) as err:  # check_method wraps what it sees
        text = f"{type(err).__name__}: {err}"
        if "NotImplementedError" not in text or match not in text:
            raise AssertionError(f"refused with another error: {text}") from err
        raise NotSupported(why) from None
    raise AssertionError(f"{feature} now runs on {family.name}: remove it from UNSUPPORTED.")


def hf_tokenizer(model):
    """The checkpoint's tokenizer as Hugging Face loads it (the bridge may have changed its own
    copy, e.g. given it a BOS token)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model.hooklab_name)


def _close_figure(fig) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)


# ---- logits ------------------------------------------------------------------------------------
@torch.no_grad()
def check_logits(model, family: zoo.Family) -> str:
    hf = model.original_model
    if family.encoder_decoder:
        return _seq2seq_logits(model, hf)
    ids = [as_prompt_ids(model, p) for p in PROMPTS]
    alone = [hf(torch.tensor([x])).logits[0] for x in ids]
    one = make_batch(ids[:1], pad_id=pad_token_id(model))
    assert_close(bridge_forward(model, one)[0], alone[0], atol=ATOL, rtol=RTOL)
    batch = make_batch(ids, pad_id=pad_token_id(model))  # left-padded
    err = 0.0
    for name, logits in (
        ("bridge", bridge_forward(model, batch)),
        ("forward", forward(model, batch)),
    ):
        for i, ref in enumerate(alone):
            real = batch.attention_mask[i].bool()
            got = logits[i][real]
            assert_close(got, ref, atol=ATOL, rtol=RTOL, msg=lambda m, n=name, i=i: f"{n} {i}: {m}")
            err = max(err, float((got - ref).abs().max()))
    return f"max |Δ| {err:.1e}"


def _seq2seq_logits(model, hf) -> str:
    start = decoder_start_id(model)
    sources = [encode_source(model, p) for p in PROMPTS]
    decoder = [[start, *model.tokenizer(t, add_special_tokens=False)["input_ids"]]
               for t in (" His colleagues", " all")]  # fmt: skip
    batch = make_batch(decoder, sources=sources, pad_id=pad_token_id(model))  # right-padded
    logits = seq2seq_forward(model, batch)
    err = 0.0
    for i, (src, dec) in enumerate(zip(sources, decoder, strict=True)):
        ref = hf(input_ids=torch.tensor([src]), decoder_input_ids=torch.tensor([dec])).logits[0]
        got = logits[i, : len(dec)]
        assert_close(got, ref, atol=ATOL, rtol=RTOL)
        err = max(err, float((got - ref).abs().max()))
    return f"max |Δ| {err:.1e}"


# ---- generation --------------------------------------------------------------------------------
def expected_prompt_ids(family: zoo.Family, tok, text: str) -> list[int]:
    """The ids a Hugging Face user feeds the model: the tokenizer's own, BOS where it adds one
    and none where it has none (hooklab's documented convention)."""
    del family  # one rule for both kinds of model
    return list(tok(text)["input_ids"])


def check_prompt_ids(model, family: zoo.Family) -> str:
    tok = hf_tokenizer(model)
    encode = encode_source if family.encoder_decoder else as_prompt_ids
    for text in reversed(PROMPTS):  # the short one first: its ids fit in the message
        got, expected = encode(model, text), expected_prompt_ids(family, tok, text)
        if got != expected:
            raise AssertionError(
                f"hooklab's ids {got}, the tokenizer's {expected} for {text!r} (its BOS token: "
                f"{tok.bos_token!r})."
            )
    return ""


@torch.no_grad()
def check_generate(model, family: zoo.Family) -> str:
    hf = model.original_model
    gen = hooklab.generate(model, list(PROMPTS), max_new_tokens=MAX_NEW_TOKENS)
    eos = model.tokenizer.eos_token_id
    for ids, out in zip(gen.prompt_ids, gen.output_ids, strict=True):
        src = torch.tensor([list(ids)])
        ref = hf.generate(
            src, attention_mask=torch.ones_like(src), do_sample=False, num_beams=1,
            max_new_tokens=MAX_NEW_TOKENS, pad_token_id=pad_token_id(model),
        )[0].tolist()  # fmt: skip
        new = ref[1:] if family.encoder_decoder else ref[len(ids) :]
        if eos in new:
            new = new[: new.index(eos)]
        if list(out) != new:
            raise AssertionError(f"hooklab generated {list(out)}, Hugging Face {new}.")
    return f"{sum(map(len, gen.output_ids))} tokens"


# ---- methods -----------------------------------------------------------------------------------
def method_check(name: str) -> Callable:
    def check(model, family: zoo.Family) -> str:
        expect_refusal(
            family, f"method:{name}", lambda: check_method(model, name, **FAST.get(name, {}))
        )
        return ""

    check.__name__ = f"check_method_{name}"
    return check


# ---- mixing and PECoRe -------------------------------------------------------------------------
def _decoder_reference(model, ids, layer) -> Tensor:
    """Unnormalised cosine distances of one layer by the pattern reference (one forward per
    key, its attention column zeroed), or by zeroing ``hook_v`` per key where the bridge
    discards pattern edits (OPT, GPT-J: the pattern reference says so)."""
    from tests.reference.mixing import ref_value_zeroing, value_zeroing_by_pattern

    try:
        return value_zeroing_by_pattern(model, ids, layer)
    except RuntimeError:
        return ref_value_zeroing(model, ids, layer, normalize=False)


def _reference_error(model, family: zoo.Family) -> float:
    """Max |hooklab - reference| of the unnormalised value-zeroing distances, every layer (and
    every part of an encoder-decoder model), asserting it is within :data:`VZ_ATOL`."""
    from tests.reference.mixing import value_zeroing_seq2seq_by_forward

    parts = ("encoder", "decoder", "cross") if family.encoder_decoder else (None,)
    err = 0.0
    for part in parts:
        (raw,) = hooklab.mixing.value_zeroing(
            model, PROMPTS[0], targets=OUTPUT, part=part, normalize=False
        )
        if family.encoder_decoder:
            (cross,) = hooklab.mixing.value_zeroing(model, PROMPTS[0], targets=OUTPUT)
            src, tgt = cross.key_token_ids.tolist(), cross.token_ids.tolist()
        for k, layer in enumerate(raw.layers):
            if family.encoder_decoder:
                ref = value_zeroing_seq2seq_by_forward(model, src, tgt, part, layer)
            else:
                ref = _decoder_reference(model, raw.token_ids.tolist(), layer)
            ref = ref.to(raw.scores.dtype)
            err = max(err, float((raw.scores[k] - ref).abs().max()))
            assert_close(raw.scores[k], ref, atol=VZ_ATOL, rtol=0)
    return err


def check_value_zeroing(model, family: zoo.Family) -> str:
    rollout = not family.encoder_decoder  # (cross-attention matrices are not square)
    (mix,) = hooklab.mixing.value_zeroing(model, PROMPTS[0], targets=OUTPUT, rollout=rollout)
    if not torch.isfinite(mix.scores).all():
        raise AssertionError("value zeroing returned non-finite scores.")
    _close_figure(mix.plot())
    if rollout:
        _close_figure(mix.plot(rollout=True))
    return f"{_reference_error(model, family):.1e}"


def check_knockout(model, family: zoo.Family) -> str:
    (ko,) = hooklab.mixing.attention_knockout(model, PROMPTS[0], targets=" to")
    if not torch.isfinite(ko.probabilities).all():
        raise AssertionError("attention knockout returned non-finite probabilities.")
    _close_figure(ko.plot())
    return ""


def _routes_error(model) -> float:
    from tests.reference.flow import ref_route_weights
    from tests.reference.flow_seq2seq import ref_seq2seq_route_weights

    routes = hooklab.mixing.information_flow(
        model, PROMPTS[0], targets=OUTPUT, threshold=0.0, per_head=True
    )
    if not (routes.weights.gt(0) & routes.weights.le(1 + 1e-6)).all():
        raise AssertionError("routes returned weights outside (0, 1].")
    sums: dict[tuple[int, int], float] = {}  # per target state
    for edge, w in zip(routes.edges.tolist(), routes.weights.tolist(), strict=True):
        sums[edge[2], edge[3]] = sums.get((edge[2], edge[3]), 0.0) + w
    assert_close(torch.tensor(list(sums.values())), torch.ones(len(sums)), atol=1e-5, rtol=0)
    ids, n_src, edges = routes.token_ids.tolist(), routes.source_length, routes.edges.tolist()
    if n_src:
        ref = ref_seq2seq_route_weights(model, ids[:n_src], ids[n_src:], edges, per_head=True)
    else:
        ref = ref_route_weights(model, ids, edges, per_head=True)
    assert_close(routes.weights, ref, atol=ROUTES_ATOL, rtol=0)
    _close_figure(routes.plot())
    return float((routes.weights - ref).abs().max())


def check_routes(model, family: zoo.Family) -> str:
    errors = []
    expect_refusal(family, "routes", lambda: errors.append(_routes_error(model)))
    return f"{errors[0]:.1e}"


def check_pecore(model, family: zoo.Family) -> str:
    res = hooklab.pecore.pecore(
        model, CONTEXT, CURRENT, output_current_text=OUTPUT,
        context_sensitivity_std_threshold=None, context_sensitivity_topk=1,
    )  # fmt: skip
    if len(res.context_sensitive) != 1:
        raise AssertionError(f"{len(res.context_sensitive)} context-sensitive tokens, not 1.")
    _close_figure(res.plot())
    return ""


CHECKS: dict[str, Callable] = {
    "logits": check_logits,
    "prompt_ids": check_prompt_ids,
    "generate": check_generate,
    **{f"method:{m}": method_check(m) for m in METHODS},
    "vz_reference": check_value_zeroing,
    "knockout": check_knockout,
    "routes": check_routes,
    "pecore": check_pecore,
}


# ---- models ------------------------------------------------------------------------------------
def load(name: str, directory: str | Path):
    """Build family ``name``'s tiny checkpoint in ``directory`` and load it on the CPU."""
    return hooklab.load(zoo.build(name, Path(directory) / name), device="cpu")


def load_error(name: str, directory: str | Path) -> str | None:
    """Why TransformerLens cannot load family ``name`` (None when it can)."""
    try:
        load(name, directory)
    except Exception as exc:  # any failure to load is the reason we report
        return short_reason(exc)
    return None


def short_reason(exc: BaseException, width: int = 90) -> str:
    """The innermost cause of an exception, as ``Type: first line``, cut to ``width``."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    text = text.replace("|", "/")
    return text if len(text) <= width else text[: width - 1] + "…"


# ---- the table ---------------------------------------------------------------------------------
def run_family(name: str, directory: str | Path, features=FEATURES) -> dict[str, tuple]:
    """``{feature: (status, note, seconds)}`` for one family; status ✓, ✗ or skip."""
    try:
        model = load(name, directory)
    except Exception as exc:
        return {"load": ("✗", short_reason(exc), 0.0)}
    cells = {}
    family = zoo.FAMILIES[name]
    for feature in features:
        start = time.perf_counter()
        try:
            note = CHECKS[feature](model, family)
            status = "✓"
        except Skip as exc:
            status, note = "–", str(exc)
        except NotSupported as exc:
            status, note = "n/a", str(exc)
        except Exception as exc:
            status, note = "✗", short_reason(exc)
            if os.environ.get("ZOO_TRACEBACK"):
                traceback.print_exc()
        cells[feature] = (status, note, time.perf_counter() - start)
    return cells


def markdown(results: dict[str, dict[str, tuple]], features=FEATURES) -> str:
    """The "Supported models" table: one row per family, ✓ / ✗ / – (skipped) with a numbered
    note below the table giving the reason (one note per feature and reason)."""
    short = {f: f.removeprefix("method:") for f in features}
    lines = ["| family | " + " | ".join(short[f] for f in features) + " |"]
    lines.append("|---" * (len(features) + 1) + "|")
    notes: dict[tuple[str, str], int] = {}
    for name, cells in results.items():
        label = zoo.FAMILIES[name].label or name
        if "load" in cells:
            lines.append(f"| {label} | not supported: {cells['load'][1]} |")
            continue
        row = []
        for f in features:
            status, note, _ = cells[f]
            if status == "✓":
                row.append(f"✓ {note}" if f == "vz_reference" and note else "✓")
            else:
                number = notes.setdefault((short[f], note), len(notes) + 1)
                row.append(f"{status} [{number}]")
        lines.append(f"| {label} | " + " | ".join(row) + " |")
    if notes:
        lines.append("")
        lines += [f"{n}. {feature}: {note}" for (feature, note), n in notes.items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print the markdown table")
    parser.add_argument("--families", nargs="*", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--features", nargs="*", default=list(FEATURES), choices=FEATURES)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    torch.set_num_threads(1)
    import matplotlib

    matplotlib.use("Agg")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.families:
            start = time.perf_counter()
            results[name] = run_family(name, tmp, args.features)
            failed = [f for f, c in results[name].items() if c[0] == "✗"]
            print(f"{name}: {time.perf_counter() - start:.1f} s, failed: {failed}", file=sys.stderr)
    totals = {f: sum(r[f][2] for r in results.values() if f in r) for f in args.features}
    print("seconds per feature:", {f: round(t, 1) for f, t in totals.items()}, file=sys.stderr)
    if args.markdown:
        print(markdown(results, args.features))
    return 0


if __name__ == "__main__":
    sys.exit(main())
