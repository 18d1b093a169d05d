"""Save and load every hooklab output through one file format.

One file per output: a safetensors file whose tensors hold the output's scores and whose
header entry ``"hooklab"`` holds JSON metadata. The metadata always starts with

- ``format_version``: the kind's format version (:data:`FORMAT_VERSION` for every kind today),
- ``hooklab_version``: the hooklab that wrote the file,
- ``kind``: the name the output's class registered with :func:`register_kind`
  (``"attribution"``, ``"mixing"``, ``"knockout"``, ``"pecore"``),
- ``model``: name or path, architecture, config digest and dtype of the model (or null),
- ``parameters``: the options the computation ran with, defaults included,

followed by the kind's own fields. JSON cannot hold NaN or infinities: they are written as the
strings ``"nan"``, ``"inf"`` and ``"-inf"`` and read back as floats (the policy of
:func:`~hooklab.output.provenance.thaw` / :func:`~hooklab.output.provenance.unthaw`), so a
round trip is exact. Nothing is pickled; loading needs no importable class paths.

This module knows no concrete kind. A result class plugs in by calling :func:`register_kind`
next to its definition and by defining the pair its module owns:

- ``output._record() -> (tensors, fields)``: the tensors and the JSON-friendly fields that
  follow the header (``output.kind``, ``output.model`` and ``output.parameters`` fill it);
- ``cls._from_record(meta, tensors)``: the output back from the metadata (header included)
  and the tensors (None for a kind's JSON export, where the kind allows one).

Writing is atomic (:func:`~hooklab.output.files.atomic_write`): an existing file is kept
unless ``overwrite=True``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from hooklab.output.files import atomic_write, write_json
from hooklab.output.provenance import hooklab_version, thaw
from hooklab.registry import unknown_name_error

__all__ = [
    "FORMAT_VERSION",
    "META_KEY",
    "as_dict",
    "atomic_write",
    "header",
    "kinds",
    "load",
    "read",
    "register_kind",
    "save",
    "save_in_format",
    "write",
    "write_json",
]

#: The format version every kind writes unless it registers another (2: one format for all).
FORMAT_VERSION = 2
#: The safetensors header entry holding the JSON metadata.
META_KEY = "hooklab"


@dataclass(frozen=True)
class Kind:
    """A registered kind of output (see :func:`register_kind`)."""

    name: str
    cls: type
    what: str
    version: int
    reads: tuple[int, ...]
    json_export: bool


_KINDS: dict[str, Kind] = {}


def register_kind(
    name: str,
    cls: type,
    *,
    what: str,
    version: int = FORMAT_VERSION,
    reads: tuple[int, ...] | None = None,
    json_export: bool = False,
    overwrite: bool = False,
) -> type:
    """Make ``cls`` savable and loadable as ``kind`` ``name``; return ``cls``.

    Args:
        name: the ``kind`` written into every file (``cls.kind`` must equal it).
        cls: the result class; it defines ``_record()`` and ``_from_record(meta, tensors)``.
        what: the kind in words, for error messages (``"a mixing output (hooklab.MixingOutput)"``).
        version: the format version this hooklab writes for the kind. Bump it only when the
            kind's record changes, and keep the old number in ``reads``.
        reads: the versions ``_from_record`` reads (``meta["format_version"]`` tells them
            apart); by default only ``version``.
        json_export: whether the kind also loads from a plain JSON file of its ``to_dict()``.
        overwrite: replace an existing registration (else registering a name twice is an error).
    """
    if getattr(cls, "kind", None) != name:
        raise ValueError(f"{cls.__name__}.kind is {getattr(cls, 'kind', None)!r}, not {name!r}.")
    for method in ("_record", "_from_record"):
        if not callable(getattr(cls, method, None)):
            raise TypeError(f"{cls.__name__} cannot be registered: it has no {method}().")
    if name in _KINDS and _KINDS[name].cls is not cls and not overwrite:
        raise ValueError(
            f"Output kind {name!r} is registered by {_KINDS[name].cls.__name__}; pass "
            "overwrite=True to replace it."
        )
    reads = tuple(reads) if reads is not None else (version,)
    _KINDS[name] = Kind(name, cls, what, version, reads, json_export)
    return cls


def kinds() -> tuple[str, ...]:
    """The registered kinds of output."""
    return tuple(_KINDS)


def header(kind: str, model: Any, parameters: Any) -> dict[str, Any]:
    """Return the metadata every saved output (and every ``to_dict``) starts with."""
    return {
        "format_version": _KINDS[kind].version if kind in _KINDS else FORMAT_VERSION,
        "hooklab_version": hooklab_version(),
        "kind": kind,
        "model": None if model is None else thaw(model),
        "parameters": thaw(parameters),
    }


# ---- writing -------------------------------------------------------------------------------
def write(
    path: str | Path, tensors: dict[str, Tensor], meta: dict[str, Any], *, overwrite: bool
) -> Path:
    """Write ``tensors`` and the JSON ``meta`` as one safetensors file at exactly ``path``."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    text = json.dumps(meta, ensure_ascii=False, allow_nan=False)
    return atomic_write(
        path, lambda tmp: save_file(tensors, tmp, metadata={META_KEY: text}), overwrite=overwrite
    )


def _kind_of(output: Any) -> Kind:
    kind = getattr(output, "kind", None)
    if kind not in _KINDS or not isinstance(output, _KINDS[kind].cls):
        raise TypeError(f"Cannot save {type(output).__name__}; savable kinds: {kinds()}.")
    return _KINDS[kind]


def save(output: Any, path: str | Path, *, overwrite: bool = False) -> Path:
    """Save any registered output (see the module docstring for the layout); return ``path``."""
    kind = _kind_of(output)
    tensors, fields = output._record()
    meta = {**header(kind.name, output.model, output.parameters), **fields}
    return write(path, tensors, meta, overwrite=overwrite)


def save_in_format(
    output: Any,
    path: str | Path,
    format: str,
    formats: tuple[str, ...],
    *,
    overwrite: bool = False,
    exports: Mapping[str, Callable[[], Any]] | None = None,
) -> Path:
    """Save ``output`` as ``format``, one of ``formats``: ``"safetensors"`` (:func:`save`),
    ``"json"`` (its ``to_dict()``), a name of ``exports`` (the JSON its function returns), or
    ``"auto"``: JSON when ``path`` ends in ``.json``, else safetensors. The one save rule of the
    kinds that also write JSON (PECoRe, citations); return ``path``."""
    if format not in formats:
        raise ValueError(f"format={format!r}; choose from {formats}.")
    if format == "auto":
        format = "json" if Path(path).suffix.lower() == ".json" else "safetensors"
    if format == "safetensors":
        return save(output, path, overwrite=overwrite)
    payload = output.to_dict() if format == "json" else dict(exports or {})[format]()
    return write_json(path, payload, overwrite=overwrite)


def as_dict(output: Any) -> dict[str, Any]:
    """The saved form as one JSON-friendly dict: header, fields, tensors as nested lists.

    Tensors the output does not have (e.g. a mixing output without rollout) are left out.
    """
    kind = _kind_of(output)
    tensors, fields = output._record()
    return {
        **header(kind.name, output.model, output.parameters),
        **fields,
        **{name: thaw(value) for name, value in tensors.items()},
    }


# ---- reading -------------------------------------------------------------------------------
_EXPECTED = "expected a file written by an output's .save()"


def _not_output(path: Path, why: str) -> ValueError:
    return ValueError(f"{str(path)!r} is not a hooklab output: {why}; {_EXPECTED}.")


def _read_safetensors(path: Path, size: int) -> tuple[dict[str, Any], dict[str, Tensor]]:
    try:
        with safe_open(str(path), framework="pt") as f:
            entries = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as err:
        raise _not_output(
            path, f"not a safetensors file, or a truncated or damaged one ({size} bytes) ({err})"
        ) from err
    key = META_KEY if META_KEY in entries else next(
        (k for k in entries if k.startswith(META_KEY)), None
    )  # fmt: skip
    if key is None:
        raise _not_output(path, f"a safetensors file without the {META_KEY!r} metadata entry")
    try:
        return json.loads(entries[key]), tensors
    except json.JSONDecodeError as err:
        raise _not_output(path, f"its {META_KEY!r} metadata is damaged JSON ({err})") from err


def read(path: str | Path) -> tuple[dict[str, Any], dict[str, Tensor] | None]:
    """Return the metadata and tensors (None for a JSON export) of a saved output.

    Checks that it is a hooklab file (an object with a format version and a kind); the
    version is checked against the kind's by :func:`load`.
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
        meta, tensors = _read_safetensors(path, size)
    if not isinstance(meta, dict) or not {"format_version", "kind"} <= set(meta):
        found = f"keys {sorted(meta)[:8]}" if isinstance(meta, dict) else f"a {type(meta).__name__}"
        raise _not_output(
            path, f"JSON of another schema ({found}; a hooklab output is an object with "
            "'format_version', 'kind', 'model' and 'parameters')"
        )  # fmt: skip
    return meta, tensors


def _check_version(path: Path, kind: Kind, found: Any) -> None:
    if found not in kind.reads:
        readable = kind.reads[0] if len(kind.reads) == 1 else kind.reads
        raise ValueError(
            f"{str(path)!r} has hooklab format version {found!r}; this hooklab "
            f"({hooklab_version()}) reads version {readable} of {kind.what}. Re-create it "
            "with this version, or load it with the hooklab that wrote it."
        )


def load(path: str | Path, kind: str | None = None) -> Any:
    """Load any saved output; return the class its ``kind`` names.

    Args:
        path: a file written by an output's ``.save()``.
        kind: if given, the kind expected (one of :func:`kinds`); another kind is an error.
    """
    if kind is not None and kind not in _KINDS:
        raise ValueError(unknown_name_error("output kind", kind, list(_KINDS)).args[0])
    path = Path(path)
    meta, tensors = read(path)
    found = meta.get("kind")
    if found not in _KINDS:
        raise ValueError(
            f"{str(path)!r} holds an output of unknown kind {found!r}; expected one of {kinds()}."
        )
    entry = _KINDS[found]
    if kind is not None and found != kind:
        raise ValueError(
            f"{str(path)!r} holds a {found!r} output, not a {kind!r} output: it is "
            f"{entry.what}, not {_KINDS[kind].what}. Load it with its class's .load() or with "
            "hooklab.load_output (which returns the right class)."
        )
    _check_version(path, entry, meta.get("format_version"))
    if tensors is None and not entry.json_export:
        json_kinds = " or ".join(k.what for k in _KINDS.values() if k.json_export) or "none"
        raise ValueError(
            f"{str(path)!r} is JSON; only {json_kinds} loads from its JSON export. Save a "
            f"{found!r} output with .save() to a safetensors file."
        )
    try:
        return entry.cls._from_record(meta, tensors)
    except (KeyError, TypeError, IndexError, AttributeError) as err:
        missing = f"missing entry {err}" if isinstance(err, KeyError) else f"{err}"
        raise ValueError(
            f"{str(path)!r} claims to hold {entry.what} but is incomplete or damaged "
            f"({missing}); {_EXPECTED}."
        ) from err
