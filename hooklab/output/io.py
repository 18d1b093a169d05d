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

from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from hooklab.output.codecs import CODECS
from hooklab.output.provenance import hooklab_version, thaw
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
KINDS = ("attribution", "mixing", "knockout", "pecore", "routes")


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
    "routes": "information-flow routes (hooklab.mixing.routes.RoutesOutput)",
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
    if found not in CODECS:
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
        return CODECS[found][1](meta, tensors)
    except (KeyError, TypeError, IndexError, AttributeError) as err:
        missing = f"missing entry {err}" if isinstance(err, KeyError) else f"{err}"
        raise ValueError(
            f"{str(path)!r} claims to hold {_WHAT[found]} but is incomplete or damaged "
            f"({missing}); {_EXPECTED}."
        ) from err


def save(output: Output, path: str | Path, *, overwrite: bool = False) -> Path:
    """Save any output (see the module docstring for the layout); return ``path``."""
    kind = output.kind
    if kind not in CODECS:
        raise TypeError(f"Cannot save {type(output).__name__}; savable kinds: {KINDS}.")
    tensors, fields = CODECS[kind][0](output)
    meta = {**header(kind, output.model, output.parameters), **fields}
    return write(path, tensors, meta, overwrite=overwrite)


def as_dict(output: Output) -> dict[str, Any]:
    """The saved form as one JSON-friendly dict: header, fields, tensors as nested lists.

    Tensors the output does not have (e.g. a mixing output without rollout) are left out.
    """
    tensors, fields = CODECS[output.kind][0](output)
    return {
        **header(output.kind, output.model, output.parameters),
        **fields,
        **{name: thaw(value) for name, value in tensors.items()},
    }
