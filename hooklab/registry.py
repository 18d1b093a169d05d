"""A plain name -> function registry with helpful errors.

Methods and step functions are registered in instances of :class:`Registry`: a dict with
``register`` (refuses to overwrite unless asked), ``unregister`` and ``get`` (unknown names
list the valid choices, closest match first).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

F = TypeVar("F", bound=Callable)


def unknown_name_error(kind: str, name: object, valid: list[str], hint: str = "") -> KeyError:
    """Build a KeyError naming ``name``, the closest valid names, and all valid names."""
    close = difflib.get_close_matches(str(name), valid, n=3, cutoff=0.5)
    msg = f"Unknown {kind} {name!r}."
    if close:
        msg += f" Did you mean {' or '.join(repr(c) for c in close)}?"
    msg += f" Valid {kind}s: {', '.join(sorted(valid))}."
    if hint:
        msg += f" {hint}"
    return KeyError(msg)


class Registry(Generic[F]):
    """A named collection of functions of one kind (e.g. ``"method"``, ``"step function"``)."""

    def __init__(self, kind: str, hint: str = "") -> None:
        self.kind = kind
        self.hint = hint
        self._items: dict[str, F] = {}

    def register(self, name: str, fn: F, *, overwrite: bool = False) -> F:
        """Register ``fn`` under ``name``; raise ValueError if taken and ``overwrite`` is False."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"A {self.kind} name must be a non-empty string, got {name!r}.")
        if not callable(fn):
            raise TypeError(f"A {self.kind} must be callable, got {type(fn).__name__}.")
        if name in self._items and not overwrite:
            raise ValueError(
                f"{self.kind.capitalize()} {name!r} is already registered. "
                "Pass overwrite=True to replace it."
            )
        self._items[name] = fn
        return fn

    def unregister(self, name: str) -> F:
        """Remove ``name`` and return what was registered; KeyError with the valid names."""
        item = self.get(name)
        del self._items[name]
        return item

    def get(self, name: str) -> F:
        """Return the function registered as ``name``; KeyError with the valid names if absent."""
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise unknown_name_error(self.kind, name, list(self._items), self.hint) from None

    def names(self) -> list[str]:
        """Return the registered names in registration order."""
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)
