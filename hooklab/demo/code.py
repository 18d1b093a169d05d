"""The "Show code" panel: the Python and command lines that reproduce the page's result.

Both are generated from the same :class:`~hooklab.demo.settings.Settings` the page runs:

- :func:`python_code`: ``hooklab.pecore.pecore(...)`` with the options that differ from
  :class:`~hooklab.pecore.PecoreOptions`'s defaults (the API's);
- :func:`cli_code`: ``hooklab attribute-context ...`` or ``python scripts/pecore.py ...``
  with the texts and the options that differ from the command's defaults for that model
  (``release_example(model)["options"]`` over ``PecoreOptions()``), shell-quoted.

``tests/test_demo.py`` runs both and compares them with the page's result.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from typing import Any

from hooklab.demo.settings import TEXT_FIELDS, Settings, model_defaults
from hooklab.pecore import PecoreOptions

#: the command-line programs :func:`cli_code` writes
PROGRAMS = {
    "hooklab": "hooklab attribute-context",
    "script": "python scripts/pecore.py",
}


def changed_options(options: PecoreOptions, base: PecoreOptions) -> dict[str, Any]:
    """The options whose value differs from ``base``, in field order."""
    ref = base.resolved()
    return {k: v for k, v in options.resolved().items() if v != ref[k]}


def _py(value: Any) -> str:
    """A Python literal for ``value`` (strings in double quotes, as ruff formats them)."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_py(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_py(k)}: {_py(v)}" for k, v in value.items()) + "}"
    return repr(value)


def python_code(settings: Settings) -> str:
    """The Python that computes the same result: load the model, call ``pecore``, show it."""
    args = [_py(settings.input_context_text), _py(settings.input_current_text)]
    for name in ("output_context_text", "output_current_text"):
        if getattr(settings, name) is not None:
            args.append(f"{name}={_py(getattr(settings, name))}")
    for name, value in changed_options(settings.options, PecoreOptions()).items():
        args.append(f"{name}={_py(value)}")
    call = "".join(f"    {a},\n" for a in ["model", *args])
    return (
        "import hooklab\n"
        "from hooklab.pecore import pecore\n\n"
        f"model = hooklab.load({_py(settings.model_name_or_path)})\n"
        f"result = pecore(\n{call})\n"
        "result.show()\n"
    )


def _flag(value: Any) -> str:
    """A flag's value as ``hooklab.cli.args`` parses it back."""
    if value is None:
        return "None"
    if isinstance(value, (list, tuple, Mapping)):
        return _py(value)  # a Python literal: Fire's parser reads lists and dicts
    return str(value)


def cli_arguments(settings: Settings) -> list[str]:
    """The flags of ``attribute-context`` for ``settings`` (texts always given)."""
    argv = ["--model_name_or_path", settings.model_name_or_path]
    for name in TEXT_FIELDS:
        if getattr(settings, name) is not None:
            argv += [f"--{name}", getattr(settings, name)]
    base = model_defaults(settings.model_name_or_path)
    for name, value in changed_options(settings.options, base).items():
        argv += [f"--{name}", _flag(value)]
    return argv


def cli_code(settings: Settings, program: str = "hooklab") -> str:
    """The shell command (``program``: a key of :data:`PROGRAMS`), one flag per line."""
    if program not in PROGRAMS:
        raise KeyError(f"Unknown program {program!r}; choose from {list(PROGRAMS)}.")
    argv = cli_arguments(settings)
    pairs = []
    for flag, value in zip(argv[::2], argv[1::2], strict=True):
        # a value that starts with "-" would read as a flag: join it with "="
        joined = value.startswith("-")
        pairs.append(shlex.quote(f"{flag}={value}") if joined else f"{flag} {shlex.quote(value)}")
    return " \\\n  ".join([PROGRAMS[program], *pairs]) + "\n"
