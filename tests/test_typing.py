"""One vocabulary: every jaxtyping dimension name in hooklab is in the glossary."""

from __future__ import annotations

import pathlib
import re

import hooklab
from hooklab.typing import DIMENSIONS

# Float[Tensor, "batch step pos"] / Int[Tensor, "pos"] / Bool[...] annotations
_SHAPE = re.compile(r"(?:Float|Int|Bool|Shaped)\[\s*Tensor\s*,\s*\"([^\"]*)\"\s*\]")


def _names(shape: str) -> list[str]:
    parts = [part.lstrip("*#") for part in shape.split() if part not in ("...", "_")]
    return [part for part in parts if not part.isdigit()]  # fixed sizes are numbers


def test_every_annotated_dimension_is_in_the_glossary():
    root = pathlib.Path(hooklab.__file__).parent
    used: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        for shape in _SHAPE.findall(path.read_text(encoding="utf-8")):
            for name in _names(shape):
                used.setdefault(name, set()).add(str(path.relative_to(root)))
    assert used, "no jaxtyping annotations found: the pattern is broken"
    unknown = {name: sorted(files) for name, files in used.items() if name not in DIMENSIONS}
    assert not unknown, f"dimension names missing from hooklab/typing.py: {unknown}"


def test_glossary_documents_every_name():
    doc = hooklab.typing.__doc__
    assert all(re.search(rf"^{name}\s", doc, re.M) for name in DIMENSIONS)
