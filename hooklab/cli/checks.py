"""Checks the commands run before any model work: output paths, positions, toy examples."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hooklab.cli.args import UsageError


def check_outputs(paths: Iterable[str | Path | None], overwrite: bool) -> list[Path]:
    """Raise UsageError if an output exists (without ``--overwrite``) or cannot be written."""
    out = []
    for path in paths:
        if path is None:
            continue
        path = Path(path)
        if path.is_dir():
            raise UsageError(f"{str(path)!r} is a directory; give a file name.")
        if path.exists() and not overwrite:
            raise UsageError(f"{str(path)!r} exists; pass --overwrite to replace it.")
        parent = next((p for p in path.parents if p.exists()), Path("."))
        if not parent.is_dir():
            raise UsageError(f"cannot create {str(path)!r}: {str(parent)!r} is not a directory.")
        out.append(path)
    return out


def fill_path(template: str, flag: str, **fields: Any) -> str:
    """``template`` with ``{method}``-style fields filled; UsageError for an unknown field."""
    try:
        return template.format(**fields)
    except (KeyError, IndexError, ValueError) as err:
        raise UsageError(
            f"{flag} {template!r} has an unknown placeholder ({err}); valid: "
            f"{', '.join('{' + k + '}' for k in fields)}."
        ) from None


def figure_paths(path: str, formats: Iterable[str] = ("png", "pdf")) -> list[Path]:
    """The PNG and PDF files written for ``path`` (its suffix replaced)."""
    return [Path(path).with_suffix(f".{ext}") for ext in formats]


def slug(text: str, words: int = 4) -> str:
    """``text-george-was-sick-yesterday``: a file-name part from a custom text."""
    parts = re.findall(r"[a-z0-9]+", text.lower())[:words]
    return "text-" + "-".join(parts) if parts else "text"


def toy_examples() -> list[dict[str, Any]]:
    """The toy model's eval examples (``hooklab/toy/eval_examples.jsonl``)."""
    from hooklab.pecore.examples import eval_examples

    return eval_examples("toy")


def toy_example(index: int) -> dict[str, Any]:
    """Toy example ``index``, or UsageError naming the valid range."""
    examples = toy_examples()
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(examples):
        raise UsageError(
            f"--example must be in 0..{len(examples) - 1} (toy examples), got {index!r}."
        )
    return examples[index]


_ITEM = re.compile(r"^\s*(-?\d+)\s*(?::\s*(-?\d+)\s*)?$")


def positions(spec: str, flag: str) -> int | str | list[int]:
    """Parse ``"sick"`` (text), ``"-1"``, ``"3:6"`` (a range) or ``"1,4,-1"`` (positions)."""
    items = [x for x in spec.split(",")] if "," in spec else [spec]
    numbers: list[int] = []
    for item in items:
        match = _ITEM.match(item)
        if match is None:
            if len(items) > 1:
                raise UsageError(
                    f"{flag} {spec!r}: mix of text and positions; give one text or positions."
                )
            if not spec.strip():
                raise UsageError(f"{flag} is empty; give a word of the text or positions.")
            return spec
        lo, hi = match.groups()
        numbers += [int(lo)] if hi is None else list(range(int(lo), int(hi)))
    if not numbers:
        raise UsageError(f"{flag} {spec!r} selects no position.")
    return numbers[0] if len(numbers) == 1 and ":" not in spec else numbers


def source_sets(spec: str) -> dict[str, int | str | list[int]]:
    """``"cue=sick; context=1:6; last=-1"`` -> ``{name: positions}``; unnamed sets are named
    by their text (``"sick; yesterday"``)."""
    sets: dict[str, int | str | list[int]] = {}
    for part in spec.split(";"):
        if not part.strip():
            continue
        name, eq, value = part.partition("=")
        name, value = (name.strip(), value) if eq else (part.strip(), part.strip())
        if name in sets:
            raise UsageError(f"--sources names {name!r} twice.")
        sets[name] = positions(value.strip(), f"--sources {name!r}")
    if not sets:
        raise UsageError("--sources is empty; e.g. --sources 'cue=sick; last=-1'.")
    return sets


def layer_list(spec: int | str | None, flag: str = "--layers") -> list[int] | None:
    """``"0:4"``, ``"1,3"`` or ``2`` as a list of layers (None: all)."""
    if spec is None:
        return None
    chosen = positions(str(spec), flag)
    if isinstance(chosen, str):
        raise UsageError(f"{flag} expects layers such as 0:4 or 1,3, got {spec!r}.")
    return [chosen] if isinstance(chosen, int) else chosen


def depth_window(window: int | str, n_layers: int) -> int | None:
    """The knockout window: ``"auto"`` (a quarter of the layers, at least 1), ``"all"`` or k."""
    if window == "auto":
        from hooklab.mixing.knockout import auto_window

        return auto_window(n_layers)
    if window == "all":
        return None
    return int(window)


def check_window(window: int | str) -> None:
    if window in ("auto", "all"):
        return
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise UsageError(f"--window must be a positive int, 'auto' or 'all', got {window!r}.")
