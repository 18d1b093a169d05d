"""hooklab.cite.calibrate: the CTI threshold search, on handmade recorded runs and the toy model."""

from __future__ import annotations

import json
import re

import pytest

from hooklab.cite import CiteOptions, cite_from_inseq, join_documents
from hooklab.cite.calibrate import calibrate_from_runs, pick_threshold, split_examples
from hooklab.cite.examples import read_examples

DOCS = ["Anna lives in Rome.", "Ben lives in Oslo.", "Clara has a cat."]
ANSWER = " Ben lives in Oslo. Clara has a cat."  # 10 tokens, two sentences
SENTENCE = [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]  # sentence of each answer token


def _context_tokens() -> list[str]:
    context, _ = join_documents(DOCS, CiteOptions())
    return re.findall(r"\s*\S+", context)


def _doc_token(doc: int) -> int:
    """A context token inside document ``doc`` (its first word after the ``[n]`` mark)."""
    tokens, seen = _context_tokens(), -1
    for k, t in enumerate(tokens):
        if t.strip().startswith("["):
            seen += 1
        elif seen == doc:
            return k
    raise AssertionError(doc)


def _run(cti: list[float], peaks: list[int]):
    """A recorded run (every token's CTI and CCI): token t puts all its CCI on doc peaks[t]."""
    ctx = _context_tokens()
    context, _ = join_documents(DOCS, CiteOptions())
    cci = []
    for t, (score, doc) in enumerate(zip(cti, peaks, strict=True)):
        row = [0.0] * len(ctx)
        row[_doc_token(doc)] = 1.0
        cci.append({"cti_idx": t, "cti_score": score, "input_context_scores": row})
    record = {
        "input_context": context,
        "input_context_tokens": ctx,
        "output_current_tokens": re.findall(r"\s*\w+|\.", ANSWER),
        "cti_scores": cti,
        "cci_scores": cci,
        "info": {},
    }
    return cite_from_inseq(record, DOCS, cti_threshold=0.0, question="Where? Which?")


# each example: CTI per token, document each token points to, gold per sentence.
# High-CTI tokens point to the gold document, mid-CTI ones (0.4-0.9) to a wrong one, low ones
# anywhere: the best threshold lies between the mid and the high scores of most examples.
CASES = [
    (
        [0.1, 0.5, 0.2, 2.0, 0.1, 0.1, 0.3, 0.1, 1.5, 0.2],
        [0, 2, 1, 1, 0, 2, 0, 1, 2, 2],
        [[1], [2]],
    ),
    (
        [0.2, 0.1, 0.9, 1.8, 0.1, 0.1, 0.6, 0.1, 2.5, 0.2],
        [2, 0, 0, 1, 0, 1, 0, 1, 2, 0],
        [[1], [2]],
    ),
    (
        [0.1, 0.1, 0.1, 1.2, 0.1, 0.1, 0.1, 0.8, 3.0, 0.1],
        [0, 0, 0, 1, 0, 1, 1, 0, 2, 1],
        [[1], [2]],
    ),
    (
        [0.3, 0.7, 0.1, 1.1, 0.2, 0.1, 0.4, 0.1, 1.9, 0.1],
        [1, 0, 2, 1, 0, 0, 1, 2, 2, 1],
        [[1], [2]],
    ),
    (
        [0.1, 0.2, 0.1, 0.95, 0.1, 0.1, 0.1, 0.1, 0.2, 0.1],
        [0, 0, 0, 1, 0, 1, 1, 0, 0, 1],
        [[1], []],
    ),
    (
        [0.1, 0.6, 0.1, 2.2, 0.1, 0.2, 0.1, 0.9, 1.4, 0.1],
        [0, 2, 0, 1, 0, 0, 1, 0, 2, 1],
        [[1], [2]],
    ),
    (
        [0.5, 0.1, 0.1, 1.7, 0.1, 0.1, 0.1, 0.1, 1.3, 0.1],
        [2, 2, 0, 1, 0, 0, 0, 0, 2, 1],
        [[1], [2]],
    ),
    (
        [0.1, 0.1, 0.8, 1.0, 0.1, 0.1, 0.7, 0.1, 2.1, 0.1],
        [0, 0, 2, 1, 2, 0, 0, 1, 2, 1],
        [[1], [2]],
    ),
]


@pytest.fixture(scope="module")
def runs():
    return [_run(cti, peaks) for cti, peaks, _ in CASES]


def _by_hand(case, t: float) -> list[list[int]]:
    """Citations at threshold t, by explicit loops: one peak per token, so the mass of a
    document is the number of selected tokens of the sentence pointing at it."""
    cti, peaks, gold = case
    out = []
    for s in range(len(gold)):
        mass = [0, 0, 0]
        for k in range(len(cti)):
            if SENTENCE[k] == s and abs(cti[k]) >= t:
                mass[peaks[k]] += 1
        ranked = sorted((d for d in range(3) if mass[d] > 0), key=lambda d: (-mass[d], d))
        out.append(ranked[:3])
    return out


def _brute_force(cases, thresholds) -> tuple[float, float]:
    best = (-1.0, None)
    for t in thresholds:
        agree = total = 0
        for case in cases:
            for got, gold in zip(_by_hand(case, t), case[2], strict=True):
                agree += set(got) == set(gold)
                total += 1
        if agree / total > best[0]:
            best = (agree / total, t)
    return best[1], best[0]


def test_recorded_runs_match_the_hand_rule(runs):
    for run, case in zip(runs, CASES, strict=True):
        assert run.citations == _by_hand(case, 0.0)


def test_picked_threshold_equals_brute_force(runs):
    candidates = sorted({abs(x) for case in CASES for x in case[0]})
    candidates.append(candidates[-1] + 1.0)
    want_t, want_a = _brute_force(CASES, candidates)
    got_t, got_a = pick_threshold(runs, [c[2] for c in CASES])
    assert (got_t, got_a) == (want_t, pytest.approx(want_a))
    assert 0.9 < got_t <= 0.95  # between the wrong mid scores and the lowest right one
    # no threshold on a fine grid does better: the score values are the only steps
    grid = [i / 200 for i in range(0, 801)]
    assert _brute_force(CASES, grid)[1] == pytest.approx(got_a)


def test_calibration_split_and_heldout(runs):
    cal = calibrate_from_runs(runs, [c[2] for c in CASES], heldout_fraction=0.25, seed=3)
    assert sorted(cal.calibration_ids + cal.heldout_ids) == list(range(len(CASES)))
    assert len(cal.heldout_ids) == 2
    _want_t, want_a = _brute_force([CASES[i] for i in cal.calibration_ids], [cal.threshold])
    assert cal.calibration_agreement == pytest.approx(want_a)
    held = [CASES[i] for i in cal.heldout_ids]
    assert cal.heldout_agreement == pytest.approx(_brute_force(held, [cal.threshold])[1])
    best_t, best_a = _brute_force(
        [CASES[i] for i in cal.calibration_ids],
        [*sorted({abs(x) for i in cal.calibration_ids for x in CASES[i][0]}), 99.0],
    )
    assert (cal.threshold, cal.calibration_agreement) == (best_t, pytest.approx(best_a))
    # mean + 1 std per answer (population std of |CTI|), by hand
    std_agree = []
    for cti, peaks, gold in held:
        mean = sum(cti) / len(cti)
        std = (sum((x - mean) ** 2 for x in cti) / len(cti)) ** 0.5
        for got, g in zip(_by_hand((cti, peaks, gold), mean + std), gold, strict=True):
            std_agree.append(set(got) == set(g))
    assert cal.heldout_agreement_std == pytest.approx(sum(std_agree) / len(std_agree))
    assert "calibrated CTI threshold" in cal.to_text()
    assert json.loads(json.dumps(cal.to_dict()))["threshold"] == cal.threshold


def test_split_is_seeded_and_disjoint():
    a = split_examples(20, 0.3, seed=0)
    assert a == split_examples(20, 0.3, seed=0)
    assert a != split_examples(20, 0.3, seed=1)
    assert len(a[1]) == 6 and not set(a[0]) & set(a[1])
    with pytest.raises(ValueError, match=r"heldout_fraction must be in \(0, 1\), got 1.5"):
        split_examples(20, 1.5, seed=0)
    with pytest.raises(ValueError, match="at least 2 examples"):
        split_examples(1, 0.3, seed=0)


# ---- bad input -----------------------------------------------------------------------------
GOOD = {
    "question": "Ben?",
    "documents": DOCS,
    "answer": "Ben lives in Oslo.",
    "gold_documents": [[1]],
}


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"gold_documents": None}, "missing 'gold_documents'"),
        ({"question": None}, "missing 'question'"),
        ({"gold_documents": [[3]]}, r"gold_documents\[0\] holds the document id 3, out of range"),
        ({"gold_documents": [[-1]]}, r"document id -1, out of range: ids are 0-based, 0..2"),
        ({"gold_documents": [[1], [2]]}, "has 1 sentences but 'gold_documents' has 2 entries"),
        ({"gold_documents": [1]}, "one list of document ids per answer sentence"),
        ({"documents": []}, r"'documents' must be a non-empty list of strings, got \[\]"),
        ({"documents": ["A.", " "]}, r"documents\[1\] must be a non-empty string, got ' '"),
        ({"colour": "red"}, r"unknown keys \['colour'\]"),
    ],
)
def test_bad_examples_name_the_value(tmp_path, change, match):
    ex = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    path = tmp_path / "ex.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(ex) + "\n")
    with pytest.raises(ValueError, match="line 2: .*" + match):
        read_examples(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    with pytest.raises(ValueError, match="no examples"):
        read_examples(path)
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_examples(tmp_path / "nope.jsonl")


# ---- on the toy model, from the command line -----------------------------------------------
def test_cli_calibrate_cti(tmp_path, capsys):
    from hooklab.cli import main
    from hooklab.toy_rag import EVAL_EXAMPLES

    path = tmp_path / "ex.jsonl"
    path.write_text("\n".join(EVAL_EXAMPLES.read_text().splitlines()[:5]) + "\n")
    out = tmp_path / "cal.json"
    assert (
        main(["calibrate-cti", str(path), "--save_path", str(out), "--heldout_fraction", "0.4"])
        == 0
    )
    printed = capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert f"{saved['threshold']:.6g}" in printed and "mean + 1 std" in printed
    assert len(saved["heldout_ids"]) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({**GOOD, "gold_documents": [[7]]}) + "\n")
    assert main(["calibrate-cti", str(bad)]) == 2
    assert "document id 7, out of range" in capsys.readouterr().err
