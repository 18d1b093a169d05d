"""Save and load every hooklab output through one file format.

One file per output: a safetensors file whose tensors hold the output's scores and whose
header entry ``"hooklab"`` holds JSON metadata. The metadata always starts with

- ``format_version``: :data:`FORMAT_VERSION` (loading any other version is an error),
- ``hooklab_version``: the hooklab that wrote the file,
- ``kind``: ``"attribution"``, ``"mixing"``, ``"knockout"`` or ``"pecore"`` (see :data:`KINDS`),
- ``model``: name or path, architecture, config digest and dtype of the model (or null),
- ``parameters``: the options the computation ran with, defaults included,

followed by the kind's own fields. JSON cannot hold NaN or infinities: they are written as the
strings ``"nan"``, ``"inf"`` and ``"-inf"`` and read back as floats (the policy of
:func:`~hooklab.output.provenance.thaw` / :func:`~hooklab.output.provenance.unthaw`), so a
round trip is exact. Nothing is pickled; loading needs no importable class paths.

A PECoRe result may also be saved as its documented JSON export (a path ending in ``.json``);
:func:`load` reads both.

Writing is atomic: the file is written under a unique temporary name in the target directory
(removed on any error), given the permissions of a new file under the user's umask, then moved
onto ``path`` -- exactly ``path``, no suffix is added. An existing file is kept unless
``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from hooklab.output.provenance import hooklab_version, thaw, unthaw, unthaw_float
from hooklab.registry import unknown_name_error

if TYPE_CHECKING:
    from hooklab.mixing.knockout_output import KnockoutOutput
    from hooklab.mixing.output import MixingOutput
    from hooklab.output.sequence import AttributionOutput
    from hooklab.pecore.result import PecoreResult

    Output = AttributionOutput | MixingOutput | KnockoutOutput | PecoreResult

#: The one format version of every saved output (2: one format for all four kinds).
FORMAT_VERSION = 2
#: The safetensors header entry holding the JSON metadata.
META_KEY = "hooklab"
#: The kinds of output this module saves and loads.
KINDS = ("attribution", "mixing", "knockout", "pecore")


def header(kind: str, model: Any, parameters: Any) -> dict[str, Any]:
    """Return the metadata every saved output (and every ``to_dict``) starts with."""
    return {
        "format_version": FORMAT_VERSION,
        "hooklab_version": hooklab_version(),
        "kind": kind,
        "model": None if model is None else thaw(model),
        "parameters": thaw(parameters),
    }


# ---- writing -------------------------------------------------------------------------------
def _umask() -> int:
    """The process umask, read without changing it where Linux allows (``/proc``)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # no /proc: set and restore at once
    os.umask(mask)
    return mask


def _exists_error(path: Path) -> FileExistsError:
    return FileExistsError(f"{str(path)!r} exists; pass overwrite=True to replace it.")


def atomic_write(path: str | Path, writer: Callable[[str], None], *, overwrite: bool) -> Path:
    """Call ``writer(tmp)`` on a unique temporary file, then move it onto exactly ``path``.

    The file gets mode ``0o666 & ~umask`` (as ``open`` would give it); the temporary file is
    removed on any error. Without ``overwrite``, an existing ``path`` raises FileExistsError.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{str(path)!r} is a directory; pass a file path to save to.")
    if path.exists() and not overwrite:
        raise _exists_error(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        writer(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if path appeared meanwhile: never clobber
            except FileExistsError:
                raise _exists_error(path) from None
            except OSError:  # no hard links on this filesystem
                os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
    return path


def write(
    path: str | Path, tensors: dict[str, Tensor], meta: dict[str, Any], *, overwrite: bool
) -> Path:
    """Write ``tensors`` and the JSON ``meta`` as one safetensors file at exactly ``path``."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    text = json.dumps(meta, ensure_ascii=False, allow_nan=False)
    return atomic_write(
        path, lambda tmp: save_file(tensors, tmp, metadata={META_KEY: text}), overwrite=overwrite
    )


def write_json(path: str | Path, data: dict[str, Any], *, overwrite: bool) -> Path:
    """Write ``data`` as indented JSON at exactly ``path`` (atomic, like :func:`write`)."""
    text = json.dumps(data, ensure_ascii=False, indent=2, allow_nan=False) + "\n"
    return atomic_write(
        path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), overwrite=overwrite
    )


# ---- reading -------------------------------------------------------------------------------
_WHAT = {
    "attribution": "an attribution output (hooklab.AttributionOutput)",
    "mixing": "a context-mixing output (hooklab.MixingOutput)",
    "knockout": "an attention-knockout output (hooklab.KnockoutOutput)",
    "pecore": "a PECoRe result (hooklab.pecore.PecoreResult)",
}
_EXPECTED = "expected a file written by an output's .save()"


def _not_output(path: Path, why: str) -> ValueError:
    return ValueError(f"{str(path)!r} is not a hooklab output: {why}; {_EXPECTED}.")


def read(path: str | Path) -> tuple[dict[str, Any], dict[str, Tensor] | None]:
    """Return the metadata and tensors (None for a JSON export) of a saved output.

    Checks that it is a hooklab file of :data:`FORMAT_VERSION`.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(
            f"{str(path)!r} is a directory; pass the path of a file written by .save()."
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"No saved hooklab output at {str(path)!r}; expected a file written by .save()."
        )
    size = path.stat().st_size
    if size == 0:
        raise _not_output(path, "the file is empty (0 bytes: an interrupted save or copy?)")
    with path.open("rb") as f:
        start = f.read(64).lstrip()
    if start[:1] in (b"{", b"["):  # a JSON export (PECoRe), or some other JSON
        try:
            meta, tensors = json.loads(path.read_text(encoding="utf-8")), None
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise _not_output(path, f"invalid JSON, truncated or damaged? ({err})") from err
    else:
        try:
            with safe_open(str(path), framework="pt") as f:
                entries = f.metadata() or {}
                tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
        except (SafetensorError, OSError) as err:
            raise _not_output(
                path, f"not a safetensors file, or a truncated or damaged one ({size} bytes) "
                f"({err})"
            ) from err  # fmt: skip
        key = META_KEY if META_KEY in entries else next(
            (k for k in entries if k.startswith(META_KEY)), None
        )  # fmt: skip
        if key is None:
            raise _not_output(path, f"a safetensors file without the {META_KEY!r} metadata entry")
        try:
            meta = json.loads(entries[key])
        except json.JSONDecodeError as err:
            raise _not_output(path, f"its {META_KEY!r} metadata is damaged JSON ({err})") from err
    if not isinstance(meta, dict) or not {"format_version", "kind"} <= set(meta):
        found = f"keys {sorted(meta)[:8]}" if isinstance(meta, dict) else f"a {type(meta).__name__}"
        raise _not_output(
            path, f"JSON of another schema ({found}; a hooklab output is an object with "
            "'format_version', 'kind', 'model' and 'parameters')"
        )  # fmt: skip
    found = meta.get("format_version")
    if found != FORMAT_VERSION:
        raise ValueError(
            f"{str(path)!r} has hooklab format version {found!r}; this hooklab "
            f"({hooklab_version()}) reads version {FORMAT_VERSION}. Re-create it with this "
            "version, or load it with the hooklab that wrote it."
        )
    return meta, tensors


def load(path: str | Path, kind: str | None = None) -> Output:
    """Load any saved output; return the class its ``kind`` names.

    Args:
        path: a file written by an output's ``.save()``.
        kind: if given, the kind expected (one of :data:`KINDS`); another kind is an error.
    """
    if kind is not None and kind not in KINDS:
        raise ValueError(unknown_name_error("output kind", kind, list(KINDS)).args[0])
    meta, tensors = read(path)
    found = meta.get("kind")
    if found not in _CODECS:
        raise ValueError(
            f"{str(path)!r} holds an output of unknown kind {found!r}; expected one of {KINDS}."
        )
    if kind is not None and found != kind:
        raise ValueError(
            f"{str(path)!r} holds a {found!r} output, not a {kind!r} output: it is "
            f"{_WHAT[found]}, not {_WHAT[kind]}. Load it with its class's .load() or with "
            "hooklab.load_output (which returns the right class)."
        )
    if tensors is None and found != "pecore":
        raise ValueError(
            f"{str(path)!r} is JSON; only PECoRe results load from their JSON export. Save a "
            f"{found!r} output with .save() to a safetensors file."
        )
    try:
        return _CODECS[found][1](meta, tensors)
    except (KeyError, TypeError, IndexError, AttributeError) as err:
        missing = f"missing entry {err}" if isinstance(err, KeyError) else f"{err}"
        raise ValueError(
            f"{str(path)!r} claims to hold {_WHAT[found]} but is incomplete or damaged "
            f"({missing}); {_EXPECTED}."
        ) from err


def save(output: Output, path: str | Path, *, overwrite: bool = False) -> Path:
    """Save any output (see the module docstring for the layout); return ``path``."""
    kind = output.kind
    if kind not in _CODECS:
        raise TypeError(f"Cannot save {type(output).__name__}; savable kinds: {KINDS}.")
    tensors, fields = _CODECS[kind][0](output)
    meta = {**header(kind, output.model, output.parameters), **fields}
    return write(path, tensors, meta, overwrite=overwrite)


# ---- the codecs: output -> (tensors, own metadata fields) and back -------------------------
def _tuple(value: Any) -> Any:
    return None if value is None else tuple(value)


def _model(meta: dict[str, Any]) -> Any:
    return None if meta.get("model") is None else unthaw(meta["model"])


def _encode_attribution(out: AttributionOutput) -> tuple[dict[str, Tensor], dict[str, Any]]:
    tensors: dict[str, Tensor] = {}
    sequences = []
    for i, s in enumerate(out.sequences):
        tensors[f"{i}.token_ids"] = s.token_ids
        if s.attributions is not None:
            tensors[f"{i}.attributions"] = s.attributions
        tensors.update({f"{i}.step.{n}": v for n, v in s.step_scores.items()})
        tensors.update({f"{i}.extra.{n}": v for n, v in s.extras.items()})
        entry = {
            "tokens": list(s.tokens),
            "target_start": s.target_start,
            "method": s.method,
            "parameters": thaw(s.parameters),
            "step_scores": list(s.step_scores),
            "extras": list(s.extras),
        }
        if s.source_tokens is not None:  # encoder-decoder: the source side too
            tensors[f"{i}.source_token_ids"] = s.source_token_ids
            if s.source_attributions is not None:
                tensors[f"{i}.source_attributions"] = s.source_attributions
            entry["source_tokens"] = list(s.source_tokens)
            entry["special_tokens"] = list(s.special_tokens)
        sequences.append(entry)
    return tensors, {"info": thaw(out.info), "sequences": sequences}


def _decode_attribution(meta: dict[str, Any], tensors: dict[str, Tensor]) -> AttributionOutput:
    from hooklab.output.sequence import AttributionOutput, SequenceAttribution

    sequences = [
        SequenceAttribution(
            tokens=tuple(s["tokens"]),
            token_ids=tensors[f"{i}.token_ids"],
            target_start=s["target_start"],
            attributions=tensors.get(f"{i}.attributions"),
            step_scores={n: tensors[f"{i}.step.{n}"] for n in s["step_scores"]},
            method=s["method"],
            parameters=unthaw(s["parameters"]),
            extras={n: tensors[f"{i}.extra.{n}"] for n in s["extras"]},
            source_tokens=_tuple(s.get("source_tokens")),
            source_token_ids=tensors.get(f"{i}.source_token_ids"),
            source_attributions=tensors.get(f"{i}.source_attributions"),
            special_tokens=tuple(s.get("special_tokens", ())),
        )
        for i, s in enumerate(meta["sequences"])
    ]
    return AttributionOutput(tuple(sequences), unthaw(meta["info"]), model=_model(meta))


_MIXING_TENSORS = ("token_ids", "scores", "rollout", "key_token_ids")


def _encode_mixing(out: MixingOutput) -> tuple[dict[str, Tensor], dict[str, Any]]:
    tensors = {n: getattr(out, n) for n in _MIXING_TENSORS if getattr(out, n) is not None}
    fields = {
        "tokens": list(out.tokens),
        "layers": list(out.layers),
        "method": out.method,
        "target_start": out.target_start,
        "key_tokens": None if out.key_tokens is None else list(out.key_tokens),
        "causal": out.causal,
    }
    return tensors, fields


def _decode_mixing(meta: dict[str, Any], tensors: dict[str, Tensor]) -> MixingOutput:
    from hooklab.mixing.output import MixingOutput

    return MixingOutput(
        tokens=tuple(meta["tokens"]),
        layers=tuple(meta["layers"]),
        method=meta["method"],
        parameters=unthaw(meta["parameters"]),
        target_start=meta["target_start"],
        key_tokens=_tuple(meta["key_tokens"]),
        causal=meta["causal"],
        model=_model(meta),
        **{n: tensors.get(n) for n in _MIXING_TENSORS},
    )


def _encode_knockout(out: KnockoutOutput) -> tuple[dict[str, Tensor], dict[str, Any]]:
    tensors = {"token_ids": out.token_ids, "probabilities": out.probabilities}
    fields = {
        "tokens": list(out.tokens),
        "target_id": out.target_id,
        "target_token": out.target_token,
        "queries": list(out.queries),
        "sources": {k: list(v) for k, v in out.sources.items()},
        "windows": [list(w) for w in out.windows],
        "centres": None if out.centres is None else list(out.centres),
        "base_probability": thaw(out.base_probability),
        "key_tokens": None if out.key_tokens is None else list(out.key_tokens),
    }
    return tensors, fields


def _decode_knockout(meta: dict[str, Any], tensors: dict[str, Tensor]) -> KnockoutOutput:
    from hooklab.mixing.knockout_output import KnockoutOutput

    return KnockoutOutput(
        tokens=tuple(meta["tokens"]),
        token_ids=tensors["token_ids"],
        target_id=meta["target_id"],
        target_token=meta["target_token"],
        queries=tuple(meta["queries"]),
        sources={k: tuple(v) for k, v in meta["sources"].items()},
        windows=tuple(tuple(w) for w in meta["windows"]),
        centres=_tuple(meta["centres"]),
        base_probability=unthaw_float(meta["base_probability"]),
        probabilities=tensors["probabilities"],
        parameters=unthaw(meta["parameters"]),
        key_tokens=_tuple(meta["key_tokens"]),
        model=_model(meta),
    )


def _encode_pecore(out: PecoreResult) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """CTI and CCI scores as float64 tensors (exact); the rest as the JSON export."""
    fields = out.to_dict()
    tensors = {"cti_scores": torch.tensor(out.cti_scores, dtype=torch.float64)}
    fields.pop("cti_scores")
    for k, (c, entry) in enumerate(zip(out.context_sensitive, fields["context_sensitive"])):
        tensors[f"cci.{k}"] = torch.tensor(c.input_context_scores, dtype=torch.float64)
        tensors[f"cci_output.{k}"] = torch.tensor(c.output_context_scores, dtype=torch.float64)
        entry.pop("input_context_scores")
        entry.pop("output_context_scores")
    return tensors, fields


def _decode_pecore(meta: dict[str, Any], tensors: dict[str, Tensor] | None) -> PecoreResult:
    from hooklab.pecore.result import PecoreResult

    if tensors is not None:  # safetensors layout: put the score tensors back into the JSON export
        meta = {**meta, "cti_scores": tensors["cti_scores"].tolist()}
        meta["context_sensitive"] = [
            {
                **c,
                "input_context_scores": tensors[f"cci.{k}"].tolist(),
                "output_context_scores": tensors[f"cci_output.{k}"].tolist(),
            }
            for k, c in enumerate(meta["context_sensitive"])
        ]
    return PecoreResult.from_dict(meta)


def as_dict(output: Output) -> dict[str, Any]:
    """The saved form as one JSON-friendly dict: header, fields, tensors as nested lists.

    Tensors the output does not have (e.g. a mixing output without rollout) are left out.
    """
    tensors, fields = _CODECS[output.kind][0](output)
    return {
        **header(output.kind, output.model, output.parameters),
        **fields,
        **{name: thaw(value) for name, value in tensors.items()},
    }


_CODECS: dict[str, tuple[Callable, Callable]] = {
    "attribution": (_encode_attribution, _decode_attribution),
    "mixing": (_encode_mixing, _decode_mixing),
    "knockout": (_encode_knockout, _decode_knockout),
    "pecore": (_encode_pecore, _decode_pecore),
}
