"""The output of an attention-knockout sweep (:mod:`hooklab.mixing.knockout`).

This module owns the kind's record (:meth:`KnockoutOutput._record`, saved through
:mod:`hooklab.output.io`), its rows (:meth:`KnockoutOutput.table`, which ``to_pandas`` and
``to_dict`` read) and its terminal and HTML tables; the figure is in :mod:`hooklab.mixing.plot`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from jaxtyping import Float, Int
from torch import Tensor

from hooklab.output.io import as_dict, load, register_kind, save
from hooklab.output.provenance import freeze, thaw, unthaw, unthaw_float
from hooklab.output.view import (
    ColorScale,
    display_token,
    html_grid,
    number_format,
    text_grid,
    use_color,
)

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure


@dataclass(frozen=True, eq=False)
class KnockoutOutput:
    """Attention-knockout sweep of one prompt (Geva et al., EMNLP 2023).

    Attributes:
        tokens: the prompt tokens as text (BOS included); the query side's tokens.
        token_ids: their ids.
        target_id: the token whose probability at the last position is measured.
        target_token: its text.
        queries: query positions whose incoming edges were blocked.
        sources: ``{name: key positions}`` of each source set.
        windows: the layers blocked at each sweep point.
        centres: the centre layer of each window (None when one window holds all layers).
        base_probability: P(target) without any knockout.
        probabilities: ``[source, layer]`` P(target) with the edges query ← source blocked in
            each window (sources in ``sources`` order, one column per window).
        parameters: the options it ran with (frozen: a read-only mapping per output).
        key_tokens: the tokens ``sources`` index when they are not ``tokens`` (the source
            text, for cross-attention knockouts in encoder–decoder models).
        model: the model that made it (:func:`~hooklab.output.provenance.describe_model`).
    """

    kind: ClassVar[str] = "knockout"

    tokens: tuple[str, ...]
    token_ids: Int[Tensor, "pos"]
    target_id: int
    target_token: str
    queries: tuple[int, ...]
    sources: dict[str, tuple[int, ...]]
    windows: tuple[tuple[int, ...], ...]
    centres: tuple[int, ...] | None
    base_probability: float
    probabilities: Float[Tensor, "source layer"]
    parameters: Mapping[str, Any] = field(default_factory=dict)
    key_tokens: tuple[str, ...] | None = None
    model: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "parameters", freeze(self.parameters))
        object.__setattr__(self, "model", None if self.model is None else freeze(self.model))
        expected = (len(self.sources), len(self.windows))
        if tuple(self.probabilities.shape) != expected:
            raise ValueError(
                f"probabilities has shape {tuple(self.probabilities.shape)}; expected "
                f"{expected} = (source, window)"
            )
        if self.centres is not None and len(self.centres) != len(self.windows):
            raise ValueError(f"{len(self.centres)} centres for {len(self.windows)} windows.")

    @property
    def relative_change(self) -> Float[Tensor, "source layer"]:
        """``(p_knocked - p) / p`` per source set and window."""
        return (self.probabilities - self.base_probability) / self.base_probability

    # ---- record: the one serialisation (to_dict, save and load derive from it) -------------
    def _record(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """The tensors and fields of the saved file (see :mod:`hooklab.output.io`)."""
        tensors = {"token_ids": self.token_ids, "probabilities": self.probabilities}
        fields = {
            "tokens": list(self.tokens),
            "target_id": self.target_id,
            "target_token": self.target_token,
            "queries": list(self.queries),
            "sources": {k: list(v) for k, v in self.sources.items()},
            "windows": [list(w) for w in self.windows],
            "centres": None if self.centres is None else list(self.centres),
            "base_probability": thaw(self.base_probability),
            "key_tokens": None if self.key_tokens is None else list(self.key_tokens),
        }
        return tensors, fields

    @classmethod
    def _from_record(cls, meta: Mapping[str, Any], tensors: Mapping[str, Tensor]) -> KnockoutOutput:
        return cls(
            tokens=tuple(meta["tokens"]),
            token_ids=tensors["token_ids"],
            target_id=meta["target_id"],
            target_token=meta["target_token"],
            queries=tuple(meta["queries"]),
            sources={k: tuple(v) for k, v in meta["sources"].items()},
            windows=tuple(tuple(w) for w in meta["windows"]),
            centres=None if meta["centres"] is None else tuple(meta["centres"]),
            base_probability=unthaw_float(meta["base_probability"]),
            probabilities=tensors["probabilities"],
            parameters=unthaw(meta["parameters"]),
            key_tokens=None if meta["key_tokens"] is None else tuple(meta["key_tokens"]),
            model=None if meta.get("model") is None else unthaw(meta["model"]),
        )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-friendly dict: the saved header, the fields and :meth:`table`."""
        return {**as_dict(self), "table": thaw(self.table())}

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Save to exactly ``path`` (see :mod:`hooklab.output.io`); refuse to overwrite."""
        return save(self, path, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path) -> KnockoutOutput:
        """Load a knockout output written by :meth:`save`."""
        return load(path, cls.kind)

    # ---- tables ----------------------------------------------------------------------------
    def table(self) -> list[dict[str, Any]]:
        """One row per (source set, window), sources in order, then windows.

        Keys: ``source`` (the set's name), ``window`` (index of the sweep point), ``centre``
        (its centre layer; None when one window holds all layers), ``layers`` (tuple of the
        blocked layers), ``probability`` (P(target) with the edges blocked) and
        ``relative_change`` (``(probability - base_probability) / base_probability``).
        """
        probs = self.probabilities.detach().to("cpu", torch.float64)
        change = self.relative_change.detach().to("cpu", torch.float64)
        return [
            {
                "source": name,
                "window": w,
                "centre": None if self.centres is None else self.centres[w],
                "layers": tuple(self.windows[w]),
                "probability": probs[s, w].item(),
                "relative_change": change[s, w].item(),
            }
            for s, name in enumerate(self.sources)
            for w in range(len(self.windows))
        ]

    def to_pandas(self) -> pd.DataFrame:
        """Return :meth:`table` as a tidy DataFrame (``centre`` a nullable integer column)."""
        import pandas as pd

        columns = ["source", "window", "centre", "layers", "probability", "relative_change"]
        frame = pd.DataFrame(self.table(), columns=columns)
        frame["centre"] = frame["centre"].astype("Int64")
        return frame

    def _title(self) -> str:
        query = ", ".join(display_token(self.tokens[q]) for q in self.queries)
        return (
            f"attention knockout: P({display_token(self.target_token)!r}) = "
            f"{self.base_probability:.4f}; relative change (%) when {query} cannot attend to "
            "the source"
        )

    def _columns(self) -> list[str]:
        if self.centres is None:
            return [f"layers {w[0]}-{w[-1]}" for w in self.windows]
        return [str(c) for c in self.centres]

    def to_text(self, digits: int = 1, *, color: bool | None = None) -> str:
        """Return the relative changes (in %) as a table: source sets by centre layer.

        ``color`` None: colour only on a terminal without ``NO_COLOR``.
        """
        grid = (100 * self.relative_change).double().tolist()
        which = "centre layer" if self.centres else "window"
        return text_grid(
            list(self.sources),
            self._columns(),
            grid,
            scale=ColorScale.fit(grid, signed=True),
            color=use_color(color),
            fmt=number_format(digits=digits, sign=True),
            title=[self._title(), f"source \\ {which}"],
        )

    def show(self, **kwargs: Any) -> None:
        """Print :meth:`to_text`."""
        print(self.to_text(**kwargs))

    def to_html(self, digits: int = 1) -> str:
        """Return the table of relative changes as HTML, with the colour legend."""
        grid = (100 * self.relative_change).double().tolist()
        return html_grid(
            list(self.sources),
            self._columns(),
            grid,
            scale=ColorScale.fit(grid, signed=True),
            fmt=number_format(digits=digits, sign=True),
            title=self._title(),
            kind="knockout",
            legend="relative change of P(target) (%)",
        )

    def _repr_html_(self) -> str:
        return self.to_html()

    def plot(self, **kwargs: Any) -> Figure:
        """Return a Figure with the paper's curves (never shown)."""
        from hooklab.mixing.plot import plot_knockout

        return plot_knockout(self, **kwargs)


register_kind(
    "knockout", KnockoutOutput, what="an attention-knockout output (hooklab.KnockoutOutput)"
)
