"""Atomic file writes: every hooklab file (outputs, JSON exports, figures) is written this way.

The file is written under a unique temporary name in the target directory (removed on any
error), given the permissions of a new file under the user's umask, then moved onto ``path``
-- exactly ``path``, no suffix is added. An existing file is kept unless ``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


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


def write_text(path: str | Path, text: str, *, overwrite: bool) -> Path:
    """Write ``text`` (UTF-8) at exactly ``path``, atomically."""
    return atomic_write(
        path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), overwrite=overwrite
    )


def write_json(path: str | Path, data: dict[str, Any], *, overwrite: bool) -> Path:
    """Write ``data`` as indented JSON at exactly ``path`` (atomic; NaN refused)."""
    text = json.dumps(data, ensure_ascii=False, indent=2, allow_nan=False) + "\n"
    return write_text(path, text, overwrite=overwrite)
