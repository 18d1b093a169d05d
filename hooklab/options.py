"""Method options, declared once: the keyword-only signature is the declaration.

A method's options are its keyword-only parameters with defaults. The annotation gives the type
and, through :data:`typing.Annotated` metadata, the range (:class:`Check`) or the valid
values (:class:`Choice`); the Google-style docstring's ``Args:`` gives the description::

    def my_method(model, batch, *, attributed_fn, n_samples: PositiveInt = 8,
                  metric: Annotated[str, Choice("cosine", "euclidean")] = "cosine"): ...

:func:`check_options` reads that declaration and raises one clear error per bad value, so
:meth:`hooklab.methods.base.MethodSpec.resolve` (what :func:`hooklab.attribute` calls before
any model work), the command line (``hooklab attribute --n_samples 0``, and its ``--help``),
the demo and the saved parameters all follow it. The rules: bools are not ints, strings are
not numbers, an int is a number; a union accepts what any member accepts (``PositiveInt |
None``, :data:`IntOrAuto`). A wrong type raises TypeError, a value out of range ValueError;
both name the option, the value and what is valid.
"""

from __future__ import annotations

import collections.abc
import difflib
import inspect
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal


@dataclass(frozen=True)
class Check:
    """A numeric range: ``min <= value <= max`` (``<`` where open), finite unless ``inf``."""

    min: int | float | None = None
    max: int | float | None = None
    min_open: bool = False
    max_open: bool = False
    inf: bool = False

    def holds(self, value: int | float) -> bool:
        if not self.inf and not math.isfinite(value):
            return False
        low = self.min is None or (value > self.min if self.min_open else value >= self.min)
        high = self.max is None or (value < self.max if self.max_open else value <= self.max)
        return low and high

    def text(self, base: type) -> str:
        if base is int and self.min in (0, 1) and self.max is None:
            return "a positive int" if self.min == 1 else "a non-negative int"
        bounded = self.min is not None and self.max is not None
        noun = "an int" if base is int else "a number" if bounded or self.inf else "a finite number"
        if self.min is not None and self.max is not None:
            left, right = "(" if self.min_open else "[", ")" if self.max_open else "]"
            return f"{noun} in {left}{self.min:g}, {self.max:g}{right}"
        if self.min is not None:
            return f"{noun} {'>' if self.min_open else '>='} {self.min:g}"
        if self.max is not None:
            return f"{noun} {'<' if self.max_open else '<='} {self.max:g}"
        return noun


class Choice:
    """The valid values of a string option: ``Annotated[str, Choice("cosine", "euclidean")]``."""

    def __init__(self, *values: str) -> None:
        self.values = values

    def __repr__(self) -> str:
        return f"Choice{self.values!r}"

    def text(self, near: object = None) -> str:
        close = difflib.get_close_matches(str(near), self.values, n=3, cutoff=0.6)
        ordered = [*close, *(v for v in self.values if v not in close)]
        return "one of " + ", ".join(repr(v) for v in ordered)


#: An int >= 1 (bools are not ints).
PositiveInt = Annotated[int, Check(min=1)]
#: An int >= 0.
NonNegativeInt = Annotated[int, Check(min=0)]
#: The seed of random draws: an int >= 0.
Seed = NonNegativeInt
#: A finite number > 0.
PositiveFloat = Annotated[float, Check(min=0, min_open=True)]
#: A finite number >= 0.
NonNegativeFloat = Annotated[float, Check(min=0)]
#: A fraction in (0, 1].
Ratio = Annotated[float, Check(min=0, max=1, min_open=True)]
#: A fraction in (0, 1), both ends excluded.
OpenRatio = Annotated[float, Check(min=0, max=1, min_open=True, max_open=True)]
#: A probability in [0, 1].
Probability = Annotated[float, Check(min=0, max=1)]
#: A positive int or the text "auto" (the method picks).
IntOrAuto = PositiveInt | Literal["auto"]


@dataclass(frozen=True)
class OptionSpec:
    """One declared option: its name, annotation (with metadata), default and description."""

    name: str
    hint: Any
    default: Any
    help: str = ""

    @property
    def rule(self) -> str:
        """What is valid, in words (``"a positive int or None"``)."""
        return rule_text(self.hint)


def docstring_sections(doc: str | None) -> tuple[str, dict[str, str]]:
    """The description (before ``Args:``/``Attributes:``) and ``{name: description}``."""
    doc = inspect.cleandoc(doc or "")
    parts = re.split(r"^(?:Args|Attributes):\s*$", doc, maxsplit=1, flags=re.M)
    head, rest = parts[0], parts[1] if len(parts) > 1 else ""
    described: dict[str, str] = {}
    name = None
    for line in rest.splitlines():
        if line and not line.startswith(" "):  # the next section (Returns:, Example:)
            break
        match = re.match(r"^ {4}(\*{0,2}\w+)(?: \(.*?\))?:\s*(.*)$", line)
        if match:
            name = match.group(1).lstrip("*")
            described[name] = match.group(2).strip()
        elif name and line.strip():
            described[name] += " " + line.strip()
    return head.strip(), described


def _evaluate(fn: Callable, text: str) -> Any:
    """Evaluate a postponed annotation in ``fn``'s module (Any where a name is missing)."""
    scope = {**vars(typing), **getattr(inspect.unwrap(fn), "__globals__", {})}
    try:
        return eval(text, scope)  # an annotation of the library's own code
    except (NameError, AttributeError, TypeError, SyntaxError):
        return Any


def declared_options(
    fn: Callable, skip: tuple[str, ...] = ("attributed_fn",)
) -> dict[str, OptionSpec]:
    """``{name: OptionSpec}`` of ``fn``'s keyword-only parameters with defaults."""
    described = docstring_sections(fn.__doc__)[1]
    out = {}
    for p in inspect.signature(fn).parameters.values():
        if p.kind is not p.KEYWORD_ONLY or p.name in skip or p.default is p.empty:
            continue
        hint = p.annotation
        hint = Any if hint is p.empty else _evaluate(fn, hint) if isinstance(hint, str) else hint
        out[p.name] = OptionSpec(p.name, hint, p.default, described.get(p.name, ""))
    return out


def _members(hint: Any) -> tuple[Any, ...]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _split(hint: Any) -> tuple[Any, list[Any]]:
    """(the bare type, its Annotated metadata)."""
    if typing.get_origin(hint) is Annotated:
        base, *meta = typing.get_args(hint)
        return base, meta
    return hint, []


def _is_type(value: object, base: Any) -> bool:
    """Whether ``value`` has the type ``base`` (bools are not ints; an int is a float)."""
    if base is Any or base is object:
        return True
    if base is None or base is type(None):
        return value is None
    if typing.get_origin(base) is Literal:
        return any(value == v and type(value) is type(v) for v in typing.get_args(base))
    if base is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if base is int:
        return isinstance(value, int) and not isinstance(value, bool)
    origin = typing.get_origin(base) or base
    if not isinstance(origin, type) or not isinstance(value, origin):
        return False
    args = typing.get_args(base)
    if origin is not str and issubclass(origin, collections.abc.Sequence) and len(args) == 1:
        return all(_is_type(v, args[0]) for v in value)  # type: ignore[union-attr]
    return True


def _holds(value: object, meta: list[Any]) -> bool:
    for m in meta:
        if isinstance(m, Check) and not m.holds(value):  # type: ignore[arg-type]
            return False
        if isinstance(m, Choice) and value not in m.values:
            return False
    return True


def _type_name(base: Any) -> str:
    if base is None or base is type(None):
        return "None"
    if typing.get_origin(base) is Literal:
        return " or ".join(repr(v) for v in typing.get_args(base))
    names = {int: "an int", float: "a number", str: "a string", bool: "True or False"}
    if base in names:
        return names[base]
    origin = typing.get_origin(base) or base
    args = typing.get_args(base)
    name = getattr(origin, "__name__", str(origin))
    if args and len(args) == 1:
        return f"a {name} of {_type_name(args[0]).removeprefix('a ').removeprefix('an ')}s"
    return f"a {name}"


def rule_text(hint: Any, near: object = None) -> str:
    """What ``hint`` accepts, in words; a :class:`Choice` lists values close to ``near`` first."""
    parts = []
    for member in _members(hint):
        base, meta = _split(member)
        text = _type_name(base)
        for m in meta:
            text = m.text(base) if isinstance(m, Check) else m.text(near)
        parts.append(text)
    parts = list(dict.fromkeys(parts))
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]


def check_value(name: str, value: object, hint: Any) -> None:
    """Raise TypeError (wrong type) or ValueError (out of range) unless ``value`` fits ``hint``.

    The message names the option, the value and what is valid, e.g. ``n_samples must be a
    positive int, got 0.``
    """
    typed = [(base, meta) for base, meta in map(_split, _members(hint)) if _is_type(value, base)]
    if any(_holds(value, meta) for _, meta in typed):
        return
    rule = rule_text(hint, near=value)
    if not typed and not (isinstance(value, str) and any(_choices(hint))):
        kind = type(value).__name__
        raise TypeError(f"{name} must be {rule}, got {kind}: {value!r}.")
    close = difflib.get_close_matches(str(value), list(_choices(hint)), n=1, cutoff=0.6)
    hint_text = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"{name} must be {rule}, got {value!r}.{hint_text}")


def _choices(hint: Any) -> list[str]:
    out: list[str] = []
    for member in _members(hint):
        base, meta = _split(member)
        out += [v for m in meta if isinstance(m, Choice) for v in m.values]
        if typing.get_origin(base) is Literal:
            out += [v for v in typing.get_args(base) if isinstance(v, str)]
    return out


def check_options(fn: Callable, options: Mapping[str, Any]) -> None:
    """Check each of ``options`` against ``fn``'s declaration (:func:`declared_options`)."""
    declared = declared_options(fn)
    for name, value in options.items():
        if name in declared:
            check_value(name, value, declared[name].hint)


def scalar_type(hint: Any) -> Any:
    """``hint`` without metadata, literals as ``str``: what the command line parses it as
    (a union of bool, int, float, str and None), or ``Any`` for anything richer."""
    scalars = (bool, int, float, str, type(None))
    bare = []
    for member in _members(hint):
        base = _split(member)[0]
        if typing.get_origin(base) is Literal:
            base = str
        bare.append(type(None) if base is None else base)
    bare = list(dict.fromkeys(bare))
    if not all(b in scalars for b in bare):
        return Any
    return bare[0] if len(bare) == 1 else typing.Union[tuple(bare)]  # noqa: UP007
