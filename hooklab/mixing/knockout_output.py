"""The output of an attention-knockout sweep (:mod:`hooklab.mixing.knockout`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from jaxtyping import Float, Int
from torch import Tensor

from hooklab.output.provenance import freeze, thaw

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

    def table(self) -> list[dict[str, Any]]:
        """One row per (source set, window): the blocked layers, P(target), relative change."""
        change = self.relative_change
        return [
            {
                "source": name,
                "centre": None if self.centres is None else self.centres[w],
                "layers": list(self.windows[w]),
                "probability": float(self.probabilities[s, w]),
                "relative_change": float(change[s, w]),
            }
            for s, name in enumerate(self.sources)
            for w in range(len(self.windows))
        ]

    def to_pandas(self) -> pd.DataFrame:
        """Return a tidy table: one row per (source set, window).

        Columns ``source, window, centre, layers, probability, relative_change``; see
        :func:`hooklab.output.tidy.knockout_frame`.
        """
        from hooklab.output.tidy import knockout_frame

        return knockout_frame(self)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-friendly dict: the saved header, the fields and :meth:`table`."""
        from hooklab.output.io import as_dict

        return {**as_dict(self), "table": thaw(self.table())}

    def to_text(self, digits: int = 1, *, color: bool | None = None) -> str:
        """Return the relative changes (in %) as a table: source sets by centre layer.

        ``color`` None: colour only on a terminal without ``NO_COLOR``.
        """
        from hooklab.output.render import knockout_text

        return knockout_text(self, digits=digits, color=color)

    def show(self, **kwargs: Any) -> None:
        """Print :meth:`to_text`."""
        print(self.to_text(**kwargs))

    def to_html(self, digits: int = 1) -> str:
        """Return the table of relative changes as HTML, with the colour legend."""
        from hooklab.output.render import knockout_html

        return knockout_html(self, digits=digits)

    def _repr_html_(self) -> str:
        return self.to_html()

    def plot(self, **kwargs: Any) -> Figure:
        """Return a Figure with the paper's curves (never shown)."""
        from hooklab.mixing.plot import plot_knockout

        return plot_knockout(self, **kwargs)

    # ---- persistence -----------------------------------------------------------------------
    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Save to exactly ``path`` (see :mod:`hooklab.output.io`); refuse to overwrite."""
        from hooklab.output.io import save

        return save(self, path, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path) -> KnockoutOutput:
        """Load a knockout output written by :meth:`save`."""
        from hooklab.output.io import load

        return load(path, cls.kind)
