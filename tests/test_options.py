"""Every declared option rejects a wrong type and an out-of-range value with a message that names
the option and the value: method options through :func:`hooklab.attribute` and the command line,
each command's own options through its parser and its checks (issue 21).

The cases are built from the declarations (:mod:`hooklab.options`), so a new method or option is
tested by declaring it.
"""

from __future__ import annotations

import math
import re
import types
import typing
from typing import Annotated, Any, Literal

import pytest

import hooklab
from hooklab.cli import commands, main
from hooklab.cli.args import UsageError
from hooklab.methods import METHODS
from hooklab.options import Check, Choice, check_value

P, T = "George was sick yesterday.", " His colleagues"
UNCHECKED = (Any, object)  # e.g. reagent's replacements: a name or a model


def _members(hint: Any) -> list[tuple[Any, list[Any]]]:
    """(bare type, Annotated metadata) of each member of a union."""
    members = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if typing.get_origin(hint) is typing.Union:
        members = typing.get_args(hint)
    out = []
    for member in members:
        if typing.get_origin(member) is Annotated:
            base, *meta = typing.get_args(member)
            out.append((base, meta))
        else:
            out.append((member, []))
    return out


def bad_values(hint: Any) -> list[object]:
    """Values no member of ``hint`` accepts: wrong types, then values out of range."""
    members = _members(hint)
    bases = {base for base, _ in members}
    if bases & set(UNCHECKED):
        return []
    plain_str = any(base is str and not meta for base, meta in members)
    numbers = bases & {int, float}
    out: list[object] = []
    if (numbers or bool in bases) and not plain_str:
        out.append("3")  # a string is not a number (nor a bool)
    if numbers and bool not in bases:
        out.append(True)  # a bool is not an int
    if int in bases and float not in bases:
        out.append(2.5)  # a float is not an int
    if bool in bases and not numbers:
        out.append(2)
    for base, meta in members:
        for m in meta:
            if isinstance(m, Check):
                step = 0 if base is float else 1
                if m.min is not None:
                    out.append(m.min if m.min_open else m.min - max(step, 0.5))
                if m.max is not None:
                    out.append(m.max if m.max_open else m.max + max(step, 0.5))
                if base is float and not m.inf:
                    out.append(math.nan)
            if isinstance(m, Choice) and not plain_str:
                out.append(m.values[0] + "x")
        if typing.get_origin(base) is Literal and not plain_str:
            out.append("nonsense")
    return out


def method_cases() -> list[tuple[str, str, object]]:
    cases = []
    for method in METHODS.names():
        for name, option in METHODS.get(method).options.items():
            cases += [(method, name, value) for value in bad_values(option.hint)]
    return cases


def named(option: str, value: object) -> str:
    """A pattern for a message naming the option, then the value."""
    return f"{re.escape(option)}.*{re.escape(repr(value))}"


def test_every_builtin_option_is_declared():
    """Each built-in option's annotation is readable, and its default passes its own rule."""
    for method in METHODS.names():
        for name, option in METHODS.get(method).options.items():
            assert option.hint is not Any or option.name == "replacements", (method, name)
            check_value(name, option.default, option.hint)
            assert option.help, f"{method}: option {name} has no description in Args:"
    assert len(method_cases()) > 40


@pytest.mark.parametrize(("method", "option", "value"), method_cases())
def test_method_option_bad_value_through_attribute(gpt2, method, option, value):
    with pytest.raises((TypeError, ValueError), match=named(option, value)):
        hooklab.attribute(gpt2, P, T, method=method, **{option: value})


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if a command loads a model."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(hooklab, "load", refuse)


@pytest.mark.parametrize(
    ("method", "option", "value"),
    # a bool is a flag and NaN a number on the command line; "3" parses as a number there
    [c for c in method_cases() if not isinstance(c[2], bool) and c[2] == c[2] and c[2] != "3"],
)
def test_method_option_bad_value_on_the_command_line(method, option, value, no_model, capsys):
    argv = ["attribute", "--method", method, f"--{option}={value}", "--figure_path", "none"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert re.search(f"--{re.escape(option)}.*{re.escape(str(value))}", err), err
    assert "Traceback" not in err


def command_cases() -> list[tuple[str, str, str]]:
    """(command, option, text) for each typed option of each command: text it cannot parse."""
    cases = []
    for name, command in commands().items():
        for option in command.options.values():
            kinds = {m for m, _ in _members(option.hint)}
            if kinds & {str, Any}:
                continue
            if kinds & {int, float}:
                cases.append((name, option.name, "many"))
            elif bool in kinds:
                cases.append((name, option.name, "maybe"))
    return cases


@pytest.mark.parametrize(("command", "option", "text"), command_cases())
def test_command_option_wrong_type(command, option, text):
    with pytest.raises(UsageError, match=f"--{option}.*{text}"):
        commands()[command].parse([f"--{option}={text}"])


@pytest.mark.parametrize(
    "argv",
    [
        ["attribute", "--max_new_tokens", "0"],
        ["attribute", "--input", "in.jsonl", "--output", "out.jsonl", "--batch_size", "0"],
        ["mixing", "--panels", "0"],
        ["mixing", "--example", "-1"],
        ["knockout", "--window", "0"],
        ["knockout", "--example", "999"],
        ["attribute-context", "--attribution_topk", "0"],
        ["attribute-context", "--context_sensitivity_std_threshold", "inf"],
    ],
)
def test_command_option_out_of_range_exits_2(argv, no_model, capsys, tmp_path, monkeypatch):
    """Each command's own range checks run before the model is loaded."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.jsonl").write_text('{"prompt": "a"}\n')
    assert main(argv) == 2
    err = capsys.readouterr().err
    option, value = argv[-2], argv[-1]
    assert option in err or option[2:] in err, err
    assert value in err, err
