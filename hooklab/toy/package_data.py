"""What both toy corpora (:mod:`hooklab.toy.corpus`, :mod:`hooklab.toy_mt.corpus`) build the
same way: evaluation examples balanced over the families, and the package-data files."""

from __future__ import annotations

import json
import pathlib
import random
from collections.abc import Callable, Sequence
from typing import Any

Example = dict[str, Any]


def balanced_examples(
    n: int,
    seed: int,
    release: Example,
    families: Sequence[dict[str, Any]],
    make: Callable[[random.Random, dict[str, Any], str], Example],
    multi_fraction: float,
) -> list[Example]:
    """``release`` first, then ``make(rng, family, kind)`` for the families in turn.

    ``kind`` is ``"contextual_multi"`` with probability ``multi_fraction``, else
    ``"contextual"``; deterministic given ``seed``.
    """
    rng = random.Random(seed)
    out = [dict(release)]
    i = 0
    while len(out) < n:
        family = families[i % len(families)]
        i += 1
        kind = "contextual_multi" if rng.random() < multi_fraction else "contextual"
        out.append(make(rng, family, kind))
    return out


def write_json(path: str | pathlib.Path, data: Any) -> pathlib.Path:
    """Write ``data`` as indented JSON (UTF-8, non-ASCII kept) with a final newline."""
    path = pathlib.Path(path)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return path


def write_jsonl(path: str | pathlib.Path, rows: Sequence[Any]) -> pathlib.Path:
    """Write one JSON object per line (non-ASCII kept)."""
    path = pathlib.Path(path)
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    return path
