"""Attribution over a JSONL dataset: records equal one-by-one calls, reload exactly, resume,
refuse bad lines and bad settings clearly. (torchrun and SIGKILL: test_distributed.py and
test_dataset_kill.py run this mode too.)"""

from __future__ import annotations

import json

import pytest
import torch

import hooklab
from hooklab.attribute_dataset import load_results, run_dataset
from hooklab.cli import main
from tests.dataset_cases import MAX_NEW_TOKENS, examples, records, run_in_process, write

GEN = {"max_new_tokens": MAX_NEW_TOKENS}


def _same(a, b, attributions=None) -> None:
    """``a`` equals ``b`` exactly (its attributions equal ``attributions`` when given)."""
    assert a.tokens == b.tokens and a.target_start == b.target_start
    assert torch.equal(a.token_ids, b.token_ids)
    want = b.attributions if attributions is None else attributions
    torch.testing.assert_close(a.attributions, want, rtol=0, atol=0, equal_nan=True)
    assert a.step_scores.keys() == b.step_scores.keys()
    for name in a.step_scores:
        torch.testing.assert_close(a.step_scores[name], b.step_scores[name], rtol=0, atol=0)
    assert dict(a.parameters) == dict(b.parameters)


def test_records_equal_one_call_per_example_and_reload_exactly(gpt2, tmp_path):
    lines = examples("attribute", 6)
    data, out = write(tmp_path / "in.jsonl", lines), tmp_path / "out.jsonl"
    summary = run_in_process("attribute", gpt2, data, out)
    assert summary == {"examples": 6, "succeeded": 6, "errors": []}
    saved = records(out)
    assert [r["line"] for r in saved] == [1, 2, 3, 4, 5, 6]
    assert [r["id"] for r in saved] == [x["id"] for x in lines]
    assert {r["kind"] for r in saved} == {"attribution"} and "elapsed_s" not in saved[0]["info"]
    loaded = load_results(out)
    assert list(loaded) == [1, 2, 3, 4, 5, 6]
    for n, line in enumerate(lines, start=1):
        want = hooklab.attribute(
            gpt2, line["prompt"], line.get("target"), method="saliency",
            step_scores=["probability"], generation_kwargs=GEN,
        )  # fmt: skip
        (got,) = loaded[n].sequences
        assert want[0].attributions.ndim == 3 and got.attributions.ndim == 2  # [step, pos, d]
        _same(got, want[0], want[0].scores())  # reduced as views show them: L2 over d_model
        assert loaded[n].info["generated"] == ("target" not in line)
        assert dict(loaded[n].model) == dict(want.model)


def test_keep_hidden_stores_the_trailing_dims(gpt2, tmp_path):
    lines = examples("attribute", 2)
    data, out = write(tmp_path / "in.jsonl", lines), tmp_path / "out.jsonl"
    run_in_process("attribute", gpt2, data, out, keep_hidden=True, method="input_x_gradient")
    for n, line in enumerate(lines, start=1):
        want = hooklab.attribute(gpt2, line["prompt"], line.get("target"), step_scores=[
            "probability"], method="input_x_gradient", generation_kwargs=GEN)  # fmt: skip
        _same(load_results(out)[n][0], want[0])
        assert load_results(out)[n].info["keep_hidden"]
    with pytest.raises(TypeError, match="keep_hidden"):
        run_dataset(gpt2, data, out, keep_hidden="yes", show_progress=False)


def test_batches_equal_one_by_one(gpt2, tmp_path):
    data = write(tmp_path / "in.jsonl", examples("attribute", 7))
    run_in_process("attribute", gpt2, data, tmp_path / "one.jsonl")
    run_in_process("attribute", gpt2, data, tmp_path / "four.jsonl", batch_size=4)
    one, four = load_results(tmp_path / "one.jsonl"), load_results(tmp_path / "four.jsonl")
    assert list(one) == list(four) == list(range(1, 8))
    for n in one:  # padding changes float32 rounding only
        a, b = one[n][0], four[n][0]
        assert a.tokens == b.tokens
        torch.testing.assert_close(a.attributions, b.attributions, atol=1e-5, rtol=1e-4,
                                   equal_nan=True)  # fmt: skip


def test_resumes_after_an_interruption(gpt2, tmp_path):
    data = write(tmp_path / "in.jsonl", examples("attribute", 8))
    reference = tmp_path / "reference.jsonl"
    run_in_process("attribute", gpt2, data, reference)
    out = tmp_path / "out.jsonl"
    kept = reference.read_text().splitlines()
    out.write_text("\n".join(kept[:3]) + "\n" + kept[3][:40])  # a crash mid-write of line 4
    logged = []
    summary = run_in_process("attribute", gpt2, data, out, log=logged.append)
    assert out.read_text() == reference.read_text()  # nothing lost, nothing duplicated
    assert summary["succeeded"] == 8 and not logged


def test_bad_lines_become_error_records_naming_line_and_field(gpt2, tmp_path):
    good = {"prompt": "George was sick yesterday. His colleagues asked him", "target": " to come"}
    raw = [
        json.dumps(good),
        "{not json",
        json.dumps({"promt": "typo"}),
        json.dumps({"prompt": 3}),
        json.dumps({"prompt": "   "}),
        json.dumps({**good, "target": ["to", "come"]}),
        json.dumps(["a list"]),
        "",
        json.dumps({"target": " alone"}),
        json.dumps({**good, "id": 7}),
    ]
    data, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    data.write_text("\n".join(raw) + "\n")
    logged = []
    summary = run_dataset(gpt2, data, out, show_progress=False, log=logged.append)
    errors = {e["line"]: e["error"] for e in summary["errors"]}
    assert summary["succeeded"] == 2 and sorted(errors) == [2, 3, 4, 5, 6, 7, 9]
    assert "not valid JSON" in errors[2]
    assert "unknown keys ['promt']" in errors[3] and "'prompt'" in errors[3]
    assert "'prompt' must be a non-empty string, got 3" in errors[4]
    assert "'prompt' must be a non-empty string" in errors[5]
    assert "'target' must be a non-empty string" in errors[6] and "['to', 'come']" in errors[6]
    assert "expected a JSON object, got list" in errors[7]
    assert "missing 'prompt'" in errors[9]
    assert all(message.startswith(f"line {n}: ") for n, message in errors.items())
    assert len(logged) == 7 and all(f"line {n}:" in " ".join(logged) for n in errors)
    assert sorted(load_results(out)) == [1, 10]
    assert sorted(r["line"] for r in records(out)) == [1, 2, 3, 4, 5, 6, 7, 9, 10]


def test_bad_options_fail_before_any_line_runs(gpt2, tmp_path):
    data, out = write(tmp_path / "in.jsonl", examples("attribute", 2)), tmp_path / "out.jsonl"
    with pytest.raises(KeyError, match="saliency"):
        run_dataset(gpt2, data, out, method="salency", show_progress=False)
    with pytest.raises(TypeError, match="n_steps"):
        run_dataset(gpt2, data, out, method="saliency", n_steps=3, show_progress=False)
    assert not out.exists()


def test_resume_with_other_settings_is_refused(gpt2, tmp_path):
    data, out = write(tmp_path / "in.jsonl", examples("attribute", 2)), tmp_path / "out.jsonl"
    run_dataset(gpt2, data, out, show_progress=False)
    first = out.read_bytes()
    with pytest.raises(ValueError, match="options.method"):
        run_dataset(gpt2, data, out, method="input_x_gradient", show_progress=False)
    with pytest.raises(ValueError, match="options.method_options"):
        run_dataset(gpt2, data, out, abs=False, show_progress=False)
    assert out.read_bytes() == first
    run_dataset(gpt2, data, out, method="input_x_gradient", show_progress=False, restart=True)
    assert {r["parameters"]["method"] for r in records(out)} == {"input_x_gradient"}


def test_encoder_decoder_record_reloads_exactly():
    mt = hooklab.load("toy-mt")
    out = hooklab.attribute(mt, "The table was old.", "Der Tisch war alt.",
                            method="input_x_gradient", step_scores=["probability"])  # fmt: skip
    back = hooklab.AttributionOutput.from_dict(json.loads(json.dumps(out.to_dict())))
    (a,), (b,) = out.sequences, back.sequences
    _same(a, b)
    assert a.source_tokens == b.source_tokens and torch.equal(
        a.source_token_ids, b.source_token_ids
    )
    assert torch.equal(a.source_attributions, b.source_attributions)
    with pytest.raises(ValueError, match="kind 'pecore'"):
        hooklab.AttributionOutput.from_dict({**out.to_dict(), "kind": "pecore"})


def test_command_dataset_mode(gpt2_dir, tmp_path, capsys):
    data, out = write(tmp_path / "in.jsonl", examples("attribute", 3)), tmp_path / "out.jsonl"
    flags = ["--model_name_or_path", str(gpt2_dir), "--device", "cpu", "--noshow_progress"]
    assert main(["attribute", *flags, "--input", str(data), "--output", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["succeeded"] == 3
    assert sorted(load_results(out)) == [1, 2, 3]
    for wrong, message in [
        (["--input", str(data)], "needs both --input"),
        (["--input", str(data), "--output", str(out), "--prompt", "Hi"], "--prompt: for one"),
        (["--input", str(tmp_path / "no.jsonl"), "--output", str(out)], "is not a file"),
        (["--input", str(data), "--output", str(tmp_path)], "is a directory"),
    ]:
        assert main(["attribute", *flags, *wrong]) == 2
        assert message in capsys.readouterr().err
