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

from safetensors import safe_open
from safetensors.torch import save_file

from hooklab.output.sequence import (
    FORMAT_VERSION,
    AttributionOutput,
    SequenceAttribution,
    _jsonable,
)

_META_KEY = "hooklab"


def save_output(output: AttributionOutput, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``output`` to ``path`` (``.safetensors`` is appended if missing), atomically."""
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_name(path.name + ".safetensors")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{str(path)!r} exists; pass overwrite=True to replace it.")
    tensors = {}
    sequences = []
    for i, s in enumerate(output.sequences):
        tensors[f"{i}.token_ids"] = s.token_ids.detach().cpu().contiguous()
        if s.attributions is not None:
            tensors[f"{i}.attributions"] = s.attributions.detach().cpu().contiguous()
        for name, value in s.step_scores.items():
            tensors[f"{i}.step.{name}"] = value.detach().cpu().contiguous()
        for name, value in s.extras.items():
            tensors[f"{i}.extra.{name}"] = value.detach().cpu().contiguous()
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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={_META_KEY: json.dumps(meta)})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load_output(path: str | Path) -> AttributionOutput:
    """Read an output written by :func:`save_output`."""
    path = Path(path)
    if not path.exists() and path.with_name(path.name + ".safetensors").exists():
        path = path.with_name(path.name + ".safetensors")
    if not path.is_file():
        raise FileNotFoundError(f"No saved hooklab output at {str(path)!r}.")
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata() or {}
        if _META_KEY not in header:
            raise ValueError(f"{str(path)!r} is a safetensors file but not a hooklab output.")
        meta = json.loads(header[_META_KEY])
        version = meta.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"{str(path)!r} has format version {version!r}; this hooklab reads version "
                f"{FORMAT_VERSION}. Re-create it with a matching hooklab version."
            )
        names = set(f.keys())
        sequences = []
        for i, s in enumerate(meta["sequences"]):
            attr_key = f"{i}.attributions"
            sequences.append(
                SequenceAttribution(
                    tokens=tuple(s["tokens"]),
                    token_ids=f.get_tensor(f"{i}.token_ids"),
                    target_start=s["target_start"],
                    attributions=f.get_tensor(attr_key) if attr_key in names else None,
                    step_scores={n: f.get_tensor(f"{i}.step.{n}") for n in s["step_scores"]},
                    method=s["method"],
                    parameters=s["parameters"],
                    extras={n: f.get_tensor(f"{i}.extra.{n}") for n in s["extras"]},
                )
            )
    return AttributionOutput(tuple(sequences), meta["info"])
