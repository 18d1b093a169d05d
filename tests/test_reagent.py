"""ReAGent: the update rule by hand, determinism, the toy model's cue, no NaN without convergence.

The contract (shapes, NaN pattern, batch == one by one, cleanup, save/load) is checked for every
registered method in tests/test_contract.py.
"""

from __future__ import annotations

import json
import math
import types
import warnings

import pytest
import torch

import hooklab
from hooklab.inputs import make_batch
from hooklab.methods.reagent import target_rank, update_logits
from hooklab.methods.replacements import replacement_probs, sample, special_ids
from hooklab.steps import STEP_FUNCTIONS
from hooklab.toy import EVAL_EXAMPLES

PROMPT, TARGET = "George was sick yesterday. His colleagues asked him to come", " to the hospital."
FAST = {"num_probes": 4, "max_probe_steps": 20}


def test_update_rule_by_hand():
    s = torch.tensor([0.2, 0.5, 0.1])
    replaced = torch.tensor([True, False, True])
    delta = torch.tensor(0.4)  # p(target | x) - p(target | x with R replaced)
    up = math.log(0.7 / 0.3)  # logit(0.5 + 0.5 * 0.4)
    expected = torch.tensor([0.2 + up, 0.5 - up, 0.1 + up])
    torch.testing.assert_close(update_logits(s, replaced, delta), expected)
    # a replacement that raised the probability (delta < 0) lowers the replaced tokens
    torch.testing.assert_close(update_logits(s, replaced, -delta)[0], torch.tensor(0.2 - up))


def test_target_rank():
    logits = torch.tensor([[[0.1, 3.0, 2.0, -1.0]]])
    assert target_rank(logits, torch.tensor([[2]])).item() == 2
    assert target_rank(logits, torch.tensor([[1]])).item() == 1


def test_seed_makes_it_deterministic(toy):
    a = hooklab.attribute(toy, PROMPT, TARGET, method="reagent", seed=3, **FAST)[0]
    b = hooklab.attribute(toy, PROMPT, TARGET, method="reagent", seed=3, **FAST)[0]
    c = hooklab.attribute(toy, PROMPT, TARGET, method="reagent", seed=4, **FAST)[0]
    torch.testing.assert_close(a.attributions, b.attributions, equal_nan=True, rtol=0, atol=0)
    assert not torch.allclose(a.attributions.nan_to_num(), c.attributions.nan_to_num())


def test_rows_are_distributions_and_bos_is_zero(toy):
    seq = hooklab.attribute(toy, PROMPT, TARGET, method="reagent", **FAST)[0]
    attr = seq.attributions
    assert (attr[:, 0] == 0).all()  # BOS is never replaced
    torch.testing.assert_close(attr.nansum(-1), torch.ones(seq.n_steps))
    assert (attr.nan_to_num() >= 0).all()


GROUND_TRUTH = json.loads((EVAL_EXAMPLES.parent / "ground_truth.json").read_text())


def _first_contextual(per_family: int) -> dict[str, list[dict]]:
    rows = [json.loads(line) for line in EVAL_EXAMPLES.read_text().splitlines()]
    picked: dict[str, list[dict]] = {}
    for r in rows:
        group = picked.setdefault(r["family"], [])
        if r["kind"] == "contextual" and len(group) < per_family:
            group.append(r)
    return picked


def _slot_probability(slot_ids: list[int]):
    """p(y) renormalised over the family's slot values: what only the cue decides.

    The toy model's ground truth: the cue picks the dependent word among the slot values
    (uniform without it), while the words just before the slot ("to the") decide that a slot
    value comes at all. So the probability of the dependent word among the slot values depends
    on the cue alone, and the plain probability on both.
    """
    ids = torch.tensor(slot_ids)

    def fn(args):
        logits = args.logits.float()
        target = logits.gather(-1, args.target_ids[..., None])[..., 0]
        slots = logits[..., ids].logsumexp(-1)
        is_slot = (args.target_ids[..., None] == ids).any(-1)  # other steps: slots + target
        return (target - torch.where(is_slot, slots, torch.logaddexp(slots, target))).exp()

    return fn


def test_toy_cue_ranks_first(toy):
    # With keep_top_n=0 the stopping check replaces every token and needs the target at rank 1,
    # which a context-dependent step rarely reaches, so its probes run many updates. Measured
    # over the first 32 contextual evaluation examples, one call each: the cue ranks first over
    # all tokens in 32/32 (seed 0, 16 probes x 100 steps); 21/32 with Inseq's default
    # options, where probes stop after a few updates; 15/32 explaining the plain probability.
    opts = {"num_probes": 16, "max_probe_steps": 100, "keep_top_n": 0, "keep_ratio": None}
    families = {f["name"]: f["slot_values"] for f in GROUND_TRUTH["families"]}
    checked = 0
    for family, rows in _first_contextual(per_family=2).items():
        slot_ids = [toy.tokenizer(" " + w, add_special_tokens=False)["input_ids"][-1]
                    for w in families[family]]  # fmt: skip
        name = f"toy_slot_probability_{family}"
        hooklab.register_step_function(name, _slot_probability(slot_ids))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "no probe stopped": the mean over probes
                out = hooklab.attribute(
                    toy,
                    [f"{r['input_context_text']} {r['input_current_text']}" for r in rows],
                    [r["output_current_text"] for r in rows],
                    method="reagent", attributed_fn=name, stopping_condition_top_k=1, seed=0,
                    **opts,
                )  # fmt: skip
        finally:
            STEP_FUNCTIONS.unregister(name)
        for r, seq in zip(rows, out, strict=True):
            words = [t.strip() for t in seq.tokens]
            step = words.index(r["dependent_word"], seq.target_start) - seq.target_start
            best = int(seq.attributions[step].nan_to_num(-1.0).argmax())
            assert words[best] == r["cue_word"], (family, r["cue_word"], words[best])
            checked += 1
    assert checked == 2 * len(families)


def test_no_probe_stops_gives_the_mean_and_a_warning(toy):
    # every token replaced in the check and the target needed at rank 1: no probe stops in 2 steps
    opts = {"num_probes": 3, "max_probe_steps": 2, "keep_top_n": 0, "stopping_condition_top_k": 1}
    with pytest.warns(UserWarning, match="no probe stopped"):
        seq = hooklab.attribute(toy, PROMPT, TARGET, method="reagent", **opts)[0]
    visible = ~seq.attributions.isnan()
    assert visible.sum() > 0 and torch.isfinite(seq.attributions[visible]).all()
    assert (seq.extras["reagent_converged"] == 0).any()  # those steps: the mean of all probes
    torch.testing.assert_close(seq.attributions.nansum(-1), torch.ones(seq.n_steps))


def test_replacement_sources(toy, gpt2):
    ids = toy.tokenizer(PROMPT)["input_ids"]
    batch = make_batch([[toy.tokenizer.bos_token_id, *ids]])
    for source in ("model", "uniform", toy):
        probs = replacement_probs(toy, batch, source)
        assert probs.gather(-1, batch.tokens[..., None]).eq(0).all()  # never the original
        assert probs[..., special_ids(toy)].eq(0).all()
        torch.testing.assert_close(probs.sum(-1), torch.ones(batch.tokens.shape))
    torch.testing.assert_close(
        replacement_probs(toy, batch, toy), replacement_probs(toy, batch, "model")
    )
    with pytest.raises(ValueError, match="tokenizer differs"):
        replacement_probs(toy, batch, gpt2)
    with pytest.raises(ValueError, match="not one of"):
        replacement_probs(toy, batch, "nltk")


def test_sample_inverts_the_cdf():
    cdf = torch.tensor([[0.0, 0.5, 0.5, 1.0]])  # tokens 1 and 3, half each; 0 and 2 never
    u = torch.tensor([[0.0], [0.49], [0.5], [0.99]])[None, ..., 0].T  # [n=4, pos=1]
    assert sample(cdf, u).flatten().tolist() == [1, 1, 3, 3]


@pytest.mark.parametrize(
    ("option", "value", "match"),
    [("num_probes", 0, "num_probes"), ("replacing_ratio", 1.0, "replacing_ratio"),
     ("keep_ratio", 2.0, "keep_ratio")],
)  # fmt: skip
def test_bad_options(toy, option, value, match):
    with pytest.raises(Exception, match=match):
        hooklab.attribute(toy, PROMPT, TARGET, method="reagent", **{option: value})


@pytest.mark.parametrize("model_name", ["gpt2", "toy"])
def test_reagent_matches_the_slow_reference(request, model_name):
    from tests.reference.reagent import ref_reagent

    model = request.getfixturevalue(model_name)
    opts = {"num_probes": 3, "max_probe_steps": 4, "keep_top_n": 2, "seed": 5}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seq = hooklab.attribute(model, PROMPT, TARGET, method="reagent", **opts)[0]
    ids = seq.token_ids.tolist()
    ref = ref_reagent(model, ids, seq.target_start, keep_top_n=2, probes=3, steps=4, seed=5)
    torch.testing.assert_close(seq.attributions, ref, atol=1e-5, rtol=1e-4, equal_nan=True)


# ---- encoder-decoder models: probes on the source and on the decoder input ---------------------
SOURCES, TARGETS = ["George was sick yesterday.", "It rained"], [" His colleagues asked", " all"]


@pytest.fixture(scope="module", params=["marian", "t5"])
def seq2seq(request, tmp_path_factory):
    from tests.test_mixing_encoder_decoder import build_seq2seq

    path = build_seq2seq(tmp_path_factory.mktemp(request.param), request.param)
    return hooklab.load(path, device="cpu", dtype="float64")


def test_seq2seq_contract(seq2seq):
    from hooklab.testing import check_method

    check_method(seq2seq, "reagent", prompts=SOURCES, targets=TARGETS, atol=1e-6, rtol=1e-5)


def test_seq2seq_replacements_skip_specials_and_the_start_token(seq2seq):
    from hooklab.methods.reagent_inputs import input_replacement_probs, replaceable
    from hooklab.seq2seq import decoder_start_id, encode_source

    src = encode_source(seq2seq, SOURCES[0])
    tgt = seq2seq.tokenizer(TARGETS[0], add_special_tokens=False)["input_ids"]
    batch = make_batch([[decoder_start_id(seq2seq)]], [tgt], sources=[src])
    slots = replaceable(seq2seq, batch)[0]
    specials = special_ids(seq2seq)
    assert slots[: len(src)].tolist() == [i not in specials for i in src]
    assert slots[len(src) :].tolist() == [False] + [True] * len(tgt)  # never the start token
    for source in ("model", "uniform"):
        probs = input_replacement_probs(seq2seq, batch, source)
        assert probs.gather(-1, batch.input_ids[..., None]).eq(0).all()
        assert probs[..., specials].eq(0).all()
        torch.testing.assert_close(probs.sum(-1), torch.ones(batch.input_ids.shape))
    # source side: uniform over the non-special tokens other than the original, with "model" too
    row = input_replacement_probs(seq2seq, batch, "model")[0, 1]
    assert row[row > 0].unique().numel() == 1
    causal_lm = types.SimpleNamespace(tokenizer=seq2seq.tokenizer, cfg=seq2seq.cfg)
    with pytest.raises(ValueError, match="encoder-decoder model"):
        input_replacement_probs(seq2seq, batch, causal_lm)


def test_seq2seq_matches_the_slow_reference(seq2seq):
    from tests.reference.reagent import ref_reagent_seq2seq

    opts = {"num_probes": 3, "max_probe_steps": 4, "keep_top_n": 2, "seed": 5}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = hooklab.attribute(seq2seq, SOURCES, TARGETS, method="reagent", **opts)
    for seq in out:
        src, dec = seq.source_token_ids.tolist(), seq.token_ids.tolist()
        source, target = ref_reagent_seq2seq(seq2seq, src, dec, seq.target_start, keep_top_n=2,
                                             probes=3, steps=4, seed=5)  # fmt: skip
        tol = {"atol": 1e-5, "rtol": 1e-4, "equal_nan": True}
        torch.testing.assert_close(seq.source_attributions, source, **tol)
        torch.testing.assert_close(seq.attributions, target, **tol)


def test_toy_mt_release_example():
    from hooklab.toy_mt import RELEASE_EXAMPLE as ex

    mt = hooklab.load("toy-mt", device="cpu")
    source = f"{ex['input_context_text']} <brk> {ex['input_current_text']}"
    target = f"{ex['output_context_text']} <brk> {ex['output_current_text']}"
    runs = [hooklab.attribute(mt, source, target, method="reagent", seed=s, **FAST)[0]
            for s in (1, 1, 2)]  # fmt: skip
    seq = runs[0]
    step = seq.tokens.index(" Er") - seq.target_start
    src, tgt = seq.source_attributions[step], seq.attributions[step]
    seen = tgt[: seq.target_start + step]
    assert not src.isnan().any() and not seen.isnan().any() and tgt[len(seen) :].isnan().all()
    # each step's scores over the source and the decoder input sum to 1; specials and the
    # decoder start token are never replaced and score 0
    torch.testing.assert_close(src.sum() + seen.sum(), torch.tensor(1.0))
    specials = special_ids(mt)
    assert all(src[j] == 0 for j, i in enumerate(seq.source_token_ids.tolist()) if i in specials)
    assert seen[0] == 0
    for other, same in ((runs[1], True), (runs[2], False)):
        equal = torch.equal(other.source_attributions, seq.source_attributions)
        assert equal == same
