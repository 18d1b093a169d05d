"""The command-line layer: flags from a function's signature, help from its docstring.

A :class:`Command` reads a plain function: each keyword parameter is a flag (``--name value``,
``--name=value``, ``--flag`` / ``--noflag`` for booleans; ``-`` and ``_`` are the same), its
type annotation says how the text is parsed, its default is shown in full in ``--help``, and
its description comes from the docstring's ``Args:`` section (or a dataclass's
``Attributes:``). Everything is checked before the function runs, so a typo never costs a
model load:

- an unknown flag is an error naming the closest valid ones;
- ``str`` options keep the text exactly (``"{current}"`` stays a string, not a set);
- ``int`` / ``float`` options must parse as numbers; ``None`` is accepted where the default
  or the annotation allows it; lists and dicts use Fire's syntax (``"{max_new_tokens: 5}"``,
  ``a,b``) through :func:`fire.parser.DefaultParseValue`.

Errors are :class:`UsageError`; :func:`hooklab.cli.main` prints them as one line.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
import textwrap
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fire.parser import DefaultParseValue

from hooklab.options import docstring_sections

_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")
_NONE = ("none", "null")


class UsageError(Exception):
    """A mistake on the command line: printed as one line, exit status 2."""


class HelpRequested(Exception):
    """``--help`` was given."""


@dataclass(frozen=True)
class Option:
    """One flag: its name, annotation, default (``REQUIRED`` if none) and description."""

    name: str
    hint: Any
    default: Any
    help: str = ""
    default_text: str | None = None  # shown instead of repr(default) in --help

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty

    @property
    def is_bool(self) -> bool:
        return self.hint is bool

    def metavar(self) -> str:
        kinds = [t for t in _members(self.hint) if t is not type(None)]
        names = {str: "TEXT", int: "INT", float: "NUMBER", bool: "", Any: "VALUE"}
        parts = [names.get(t, _origin_name(t)) for t in kinds]
        return "|".join(dict.fromkeys(p for p in parts if p))

    def parse(self, raw: str) -> Any:
        """Convert the text of one flag's value to the annotated type (or raise UsageError)."""
        kinds = _members(self.hint)
        flag = f"--{self.name}"
        if self.hint is Any:  # untyped: Fire's own parsing (numbers, lists, dicts, text)
            return DefaultParseValue(raw)
        if raw.strip().lower() in _NONE and (type(None) in kinds or self.default is None):
            return None
        if bool in kinds:
            if raw.lower() in _TRUE:
                return True
            if raw.lower() in _FALSE:
                return False
            raise UsageError(f"{flag} is true or false, got {raw!r}.")
        if int in kinds and re.fullmatch(r"[+-]?\d+", raw.strip()):
            return int(raw)
        if float in kinds:
            try:
                return float(raw)
            except ValueError:
                if str not in kinds:
                    raise UsageError(f"{flag} expects a number, got {raw!r}.") from None
        if str in kinds:
            return raw
        if int in kinds:
            raise UsageError(f"{flag} expects an integer, got {raw!r}.")
        origin = {typing.get_origin(t) or t for t in kinds}
        value = DefaultParseValue(raw)
        if origin & {dict, Mapping}:
            if not isinstance(value, dict):
                raise UsageError(f'{flag} expects a dict such as "{{key: value}}", got {raw!r}.')
            return value
        if origin & {tuple, list, Sequence}:
            value = value if isinstance(value, (list, tuple)) else (value,)
            return tuple(str(v) if isinstance(v, (int, float)) else v for v in value)
        raise UsageError(f"{flag} cannot parse {raw!r} as {self.metavar()}.")


def _members(hint: Any) -> tuple[Any, ...]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _origin_name(hint: Any) -> str:
    origin = typing.get_origin(hint) or hint
    if origin in (tuple, list, Sequence):
        return "A,B,..."
    if origin in (dict, Mapping):
        return "{KEY: VALUE}"
    return getattr(origin, "__name__", str(origin)).upper()


def options_of(obj: Callable | type) -> list[Option]:
    """The options of a function (keyword parameters) or a dataclass (fields), documented."""
    _, described = docstring_sections(obj.__doc__)
    hints = typing.get_type_hints(obj)
    if dataclasses.is_dataclass(obj):
        out = []
        for f in dataclasses.fields(obj):
            default = f.default
            if f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            out.append(Option(f.name, hints[f.name], default, described.get(f.name, "")))
        return out
    params = inspect.signature(obj).parameters.values()
    return [
        Option(p.name, hints.get(p.name, str), p.default, described.get(p.name, ""))
        for p in params
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]


@dataclass
class Command:
    """A subcommand: ``fn`` called with the parsed flags (``extra`` options go to its ``**``)."""

    name: str
    fn: Callable[..., Any]
    extra: list[Option] = field(default_factory=list)
    extra_title: str = ""

    @property
    def options(self) -> dict[str, Option]:
        return {o.name: o for o in [*options_of(self.fn), *self.extra]}

    @property
    def summary(self) -> str:
        return docstring_sections(self.fn.__doc__)[0].split("\n", 1)[0]

    def parse(self, argv: Sequence[str]) -> dict[str, Any]:
        """``{parameter: value}`` from ``argv``; raise UsageError / HelpRequested."""
        options, values, i = self.options, {}, 0
        positional = [o for o in options.values() if o.required]
        while i < len(argv):
            token = argv[i]
            i += 1
            if token in ("-h", "--help"):
                raise HelpRequested
            if not token.startswith("--"):
                free = [o for o in positional if o.name not in values]
                if not free:
                    raise UsageError(f"unexpected argument {token!r}; options start with --.")
                values[free[0].name] = free[0].parse(token)
                continue
            name, eq, raw = token[2:].partition("=")
            name = name.replace("-", "_")
            option = options.get(name)
            negated = options.get(name[2:]) if name.startswith("no") else None
            if option is None and negated is not None and negated.is_bool and not eq:
                values[negated.name] = False
                continue
            if option is None:
                close = difflib.get_close_matches(name, list(options), n=3, cutoff=0.6)
                hint = f" Did you mean {' or '.join('--' + c for c in close)}?" if close else ""
                raise UsageError(f"unknown option --{name}.{hint} See --help for all options.")
            if name in values:
                raise UsageError(f"--{name} is given twice.")
            if option.is_bool and not eq:
                nxt = argv[i].lower() if i < len(argv) else ""
                raw, i = (argv[i], i + 1) if nxt in _TRUE + _FALSE else ("true", i)
            elif not eq:
                if i >= len(argv) or argv[i].startswith("--"):
                    raise UsageError(f"--{name} needs a value ({option.metavar()}).")
                raw, i = argv[i], i + 1
            values[name] = option.parse(raw)
        missing = [o.name for o in positional if o.name not in values]
        if missing:
            raise UsageError(f"missing --{missing[0]} (required).")
        return values

    def help(self, prog: str, others: Sequence[Command] = ()) -> str:
        """The ``--help`` text: description, every option with its description and default."""
        head, _ = docstring_sections(self.fn.__doc__)
        lines = [f"usage: {prog} [--option VALUE ...]", "", head, "", "Options:"]
        own = {o.name for o in options_of(self.fn)}
        for o in self.options.values():
            if o.name not in own and o is self.extra[0]:
                lines += ["", self.extra_title or "More options:"]
            lines.append(f"  --{o.name} {o.metavar()}".rstrip())
            text = o.help or ""
            shown = o.default_text or repr(o.default)
            text += " (required)" if o.required else f" (default: {shown})"
            lines += textwrap.wrap(text, 92, initial_indent=" " * 6, subsequent_indent=" " * 6)
        lines += [
            "",
            "  --debug",
            "      Show the full traceback on errors (or set HOOKLAB_DEBUG=1).",
        ]
        lines += ["", "  -h, --help", "      Show this message and exit."]
        if others:
            lines += ["", "Other commands (run with --help for theirs):"]
            lines += [f"  {c.name:<18} {c.summary}" for c in others]
        return "\n".join(lines)
