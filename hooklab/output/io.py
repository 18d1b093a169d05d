"""Save and load attribution outputs as one safetensors file with JSON metadata.

Layout: tensors are named ``{i}.token_ids``, ``{i}.attributions``, ``{i}.step.{name}`` and
``{i}.extra.{name}`` for sequence ``i``; the safetensors header's ``hooklab`` entry holds the
JSON metadata (format version, info, tokens, target starts, methods, parameters). Nothing is
pickled, and loading needs no importable class paths.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from hooklab.output.sequence import (
    FORMAT_VERSION,
    AttributionOutput,
    SequenceAttribution,
    _jsonable,
)

_META_KEY = "hooklab"


def _with_suffix(path: str | Path) -> Path:
    path = Path(path)
    return path if path.suffix == ".safetensors" else path.with_name(path.name + ".safetensors")


def write_tensors(
    path: str | Path,
    tensors: dict[str, Tensor],
    meta: dict[str, Any],
    *,
    key: str = _META_KEY,
    overwrite: bool = False,
) -> Path:
    """Atomically write tensors + JSON metadata (under header entry ``key``) to one file.

    ``.safetensors`` is appended to ``path`` if missing; an existing file is kept unless
    ``overwrite``.
    """
    path = _with_suffix(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{str(path)!r} exists; pass overwrite=True to replace it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        save_file(tensors, tmp, metadata={key: json.dumps(meta)})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def read_tensors(
    path: str | Path,
    *,
    key: str = _META_KEY,
    what: str = "hooklab output",
    version: int = FORMAT_VERSION,
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Read a file written by :func:`write_tensors`; check its ``format_version``."""
    path = Path(path)
    if not path.exists() and _with_suffix(path).exists():
        path = _with_suffix(path)
    if not path.is_file():
        raise FileNotFoundError(f"No saved {what} at {str(path)!r}.")
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata() or {}
        if key not in header:
            raise ValueError(f"{str(path)!r} is a safetensors file but not a {what}.")
        meta = json.loads(header[key])
        tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
    found = meta.get("format_version")
    if found != version:
        raise ValueError(
            f"{str(path)!r} has format version {found!r}; this hooklab reads version "
            f"{version}. Re-create it with a matching hooklab version."
        )
    return meta, tensors


def save_output(output: AttributionOutput, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``output`` to ``path`` (``.safetensors`` is appended if missing), atomically."""
    tensors = {}
    sequences = []
    for i, s in enumerate(output.sequences):
        tensors[f"{i}.token_ids"] = s.token_ids
        if s.attributions is not None:
            tensors[f"{i}.attributions"] = s.attributions
        for name, value in s.step_scores.items():
            tensors[f"{i}.step.{name}"] = value
        for name, value in s.extras.items():
            tensors[f"{i}.extra.{name}"] = value
        sequences.append(
            {
                "tokens": list(s.tokens),
                "target_start": s.target_start,
                "method": s.method,
                "parameters": _jsonable(s.parameters),
                "step_scores": list(s.step_scores),
                "extras": list(s.extras),
            }
        )
    meta = {
        "format_version": FORMAT_VERSION,
        "info": _jsonable(output.info),
        "sequences": sequences,
    }
    return write_tensors(path, tensors, meta, overwrite=overwrite)


def load_output(path: str | Path) -> AttributionOutput:
    """Read an output written by :func:`save_output`."""
    meta, tensors = read_tensors(path)
    sequences = []
    for i, s in enumerate(meta["sequences"]):
        sequences.append(
            SequenceAttribution(
                tokens=tuple(s["tokens"]),
                token_ids=tensors[f"{i}.token_ids"],
                target_start=s["target_start"],
                attributions=tensors.get(f"{i}.attributions"),
                step_scores={n: tensors[f"{i}.step.{n}"] for n in s["step_scores"]},
                method=s["method"],
                parameters=s["parameters"],
                extras={n: tensors[f"{i}.extra.{n}"] for n in s["extras"]},
            )
        )
    return AttributionOutput(tuple(sequences), meta["info"])
