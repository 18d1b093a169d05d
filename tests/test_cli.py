"""The ``hooklab`` command: flags checked before any model work, help, defaults, wrappers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import hooklab
from hooklab.cli import commands, main
from hooklab.cli.args import UsageError, docstring_sections
from hooklab.cli.checks import depth_window, positions, source_sets

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1"}


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if a command loads a model."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(hooklab, "load", refuse)


def test_misspelt_flag_exits_2_without_a_traceback(monkeypatch, capsys):
    done = subprocess.run(
        [sys.executable, "-m", "hooklab", "attribute-context", "--attribution_methd", "saliency"],
        capture_output=True, text=True, env=ENV,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--attribution_method" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not done.stdout
    # ...and before any model work: loading would raise here (no timing threshold in tests:
    # the note of the CLI work states the measured time)
    import hooklab
    from hooklab import cli

    def no_load(*args, **kwargs):
        raise AssertionError("a model was loaded before the flags were checked")

    monkeypatch.setattr(hooklab, "load", no_load)
    assert cli.main(["attribute-context", "--attribution_methd", "saliency"]) == 2
    assert "--attribution_method" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["attribute-context", "--attribution_methd", "saliency"], "--attribution_method"),
        (["attribute-context", "--attribution_method", "salency"], "'saliency'"),
        (["attribute-context", "--context_sensitivity_std_threshold", "nan"], "finite"),
        (["attribute-context", "--context_sensitivity_topk", "two"], "integer"),
        (["attribute", "--method", "saliency", "--n_steps", "4"], "has no option 'n_steps'"),
        (["attribute", "--step_scores", "probability,entorpy"], "entropy"),
        (["knockout", "--example", "999"], "--example must be in 0..99"),
        (["knockout", "--window", "0"], "--window"),
        (["knockout", "--sources", "cue=sick,3"], "mix of text and positions"),
        (["mixing", "--metric", "manhattan"], "manhattan"),
        (["dataset", "--input", "missing.jsonl", "--output", "o.jsonl"], "not a file"),
        (["toy-dataset"], "missing --output"),
        (["atribute"], "Did you mean attribute"),
    ],
)
def test_user_errors_are_one_line_exit_2_before_loading(argv, message, no_model, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_existing_outputs_are_refused_before_the_computation(tmp_path, no_model, capsys):
    for flag in ("--save_path", "--viz_path", "--figure_path"):
        path = tmp_path / "out.png"
        path.write_text("x")
        assert main(["attribute-context", flag, str(path)]) == 2
        assert "pass --overwrite" in capsys.readouterr().err
    (tmp_path / "attribution_integrated_gradients.pdf").write_text("x")
    pattern = str(tmp_path / "attribution_{method}.png")
    assert main(["attribute", "--method", "integrated_gradients", "--figure_path", pattern]) == 2
    assert "attribution_integrated_gradients.pdf' exists" in capsys.readouterr().err


def test_debug_shows_the_traceback(no_model, monkeypatch):
    with pytest.raises(UsageError):
        main(["knockout", "--example", "999", "--debug"])
    monkeypatch.setenv("HOOKLAB_DEBUG", "1")
    with pytest.raises(UsageError):
        main(["knockout", "--example", "999"])


@pytest.mark.parametrize("name", list(commands()))
def test_help_lists_every_option_with_its_description(name, no_model, capsys):
    assert main([name, "--help"]) == 0
    text = capsys.readouterr().out
    command = commands()[name]
    described = docstring_sections(command.fn.__doc__)[1]
    for option in command.options.values():
        assert f"--{option.name}" in text
        if option.name in described:
            assert described[option.name].split()[0] in text
        if not option.required:
            assert (option.default_text or repr(option.default)) in " ".join(text.split())
    assert "--debug" in text


def test_help_lists_pecore_options_and_subcommands(no_model, capsys):
    assert main(["dataset", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--context_sensitivity_metric" in text and "the CTI metric" in text
    assert main(["--help"], prog="scripts/pecore.py", default="attribute-context") == 0
    text = capsys.readouterr().out
    assert "--input_context_text" in text and "dataset" in text and "toy-dataset" in text
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert all(name in text for name in commands())


def test_strings_stay_strings_and_numbers_are_parsed():
    command = commands()["attribute-context"]
    values = command.parse(
        ["--contextless_input_current_text", "{current}", "--input_current_text", "123",
         "--context_sensitivity_std_threshold", "None", "--attribution_topk=2",
         "--noshow_viz", "--generation_kwargs", "{max_new_tokens: 5}"]
    )  # fmt: skip
    assert values == {
        "contextless_input_current_text": "{current}",
        "input_current_text": "123",
        "context_sensitivity_std_threshold": None,
        "attribution_topk": 2,
        "show_viz": False,
        "generation_kwargs": {"max_new_tokens": 5},
    }
    assert commands()["knockout"].parse(["--window", "3", "--query", "-1"]) == {
        "window": 3,
        "query": "-1",
    }
    assert commands()["attribute"].parse(["--step_scores", "probability,entropy"]) == {
        "step_scores": ("probability", "entropy")
    }
    # method options are typed by their annotations: int | str parses both ways (issue 21)
    attribute = commands()["attribute"]
    assert attribute.parse(["--n_steps", "auto"]) == {"n_steps": "auto"}
    assert attribute.parse(["--n_steps", "16"]) == {"n_steps": 16}
    assert attribute.parse(["--keep_ratio", "none"]) == {"keep_ratio": None}
    with pytest.raises(UsageError, match="--num_probes expects an integer, got 'many'"):
        attribute.parse(["--num_probes", "many"])


def test_positions_sources_and_depth_window():
    assert positions("-1", "q") == -1 and positions("sick", "q") == "sick"
    assert positions("3:6", "q") == [3, 4, 5] and positions("1,4", "q") == [1, 4]
    assert source_sets("cue=sick; ctx=1:3; -1") == {"cue": "sick", "ctx": [1, 2], "-1": -1}
    assert [depth_window("auto", n) for n in (1, 2, 4, 12, 48, 80)] == [1, 1, 1, 3, 12, 20]
    assert depth_window("all", 12) is None and depth_window(2, 12) == 2


def test_attribute_context_default_reproduces_the_example(tmp_path, capsys):
    figure = tmp_path / "pecore.pdf"
    argv = ["attribute-context", "--contextless_input_current_text", "{current}",
            "--figure_path", str(figure), "--save_path", str(tmp_path / "r.json")]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "{hospital}" in out and "[sick]" in out
    result = hooklab.pecore.PecoreResult.load(tmp_path / "r.json")
    assert [c.token for c in result.context_sensitive] == [" hospital"]
    assert [q.token.strip() for q in result.context_sensitive[0].cues] == ["sick"]
    assert figure.exists() and b"/Type3" not in figure.read_bytes()


def test_knockout_on_custom_text_uses_a_depth_window(tmp_path, capsys):
    text = "George was sick yesterday. His colleagues asked him to come to the"
    path = tmp_path / "ko.safetensors"
    argv = ["knockout", "--text", text, "--sources", "cue=sick; last=-1", "--save_path",
            str(path), "--figure_path", str(tmp_path / "ko_{example}.png")]  # fmt: skip
    assert main(argv) == 0
    out = hooklab.KnockoutOutput.load(path)
    assert out.parameters["window"] == 1 and list(out.sources) == ["cue", "last"]
    assert (tmp_path / "ko_text-george-was-sick-yesterday.pdf").exists()
    assert "wrote" not in capsys.readouterr().err


def test_python_m_hooklab_and_scripts_are_thin_wrappers():
    for args in (["-m", "hooklab", "--help"], [str(ROOT / "scripts" / "knockout.py"), "--help"]):
        done = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=ENV)
        assert done.returncode == 0 and "usage:" in done.stdout
    for script in ("attribute", "knockout", "mixing", "pecore"):
        assert len((ROOT / "scripts" / f"{script}.py").read_text().splitlines()) < 30
    assert "hooklab = hooklab.cli:run" in (ROOT / "setup.cfg").read_text()


def test_mixing_on_an_encoder_decoder_model_with_the_default_part(tmp_path):
    # the default part of an encoder-decoder model is cross-attention, which has no rollout
    prefix = str(tmp_path / "mt")
    text, targets = "The table was old. <brk> It was broken.", "Der Tisch war alt. <brk> Er war."
    argv = ["mixing", "--model", "toy-mt", "--text", text, "--targets", targets,
            "--out_prefix", prefix]  # fmt: skip
    assert main(argv) == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    assert "mt.safetensors" in written and "mt_layers.png" in written
    assert not any("rollout" in name for name in written)
    assert hooklab.load_output(prefix + ".safetensors").parameters["part"] == "cross"


def test_attribute_takes_prepend_bos(tmp_path):
    attribute = commands()["attribute"]
    assert attribute.parse(["--prepend_bos", "false"]) == {"prepend_bos": False}
    assert attribute.parse(["--prepend_bos", "none"]) == {"prepend_bos": None}
    path = tmp_path / "out.safetensors"
    argv = ["attribute", "--prepend_bos", "false", "--figure_path", "none", "--noshow",
            "--save_path", str(path)]  # fmt: skip
    assert main(argv) == 0
    (seq,) = hooklab.load_output(path).sequences
    assert seq.tokens[0] == "George" and seq.parameters["prepend_bos"] is False
