"""The output of an attention-knockout sweep (:mod:`hooklab.mixing.knockout`)."""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jaxtyping import Float, Int
from torch import Tensor

from hooklab.output.provenance import freeze
from hooklab.output.render import display_token
from hooklab.output.sequence import _jsonable


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
        parameters: the options it ran with.
        key_tokens: the tokens ``sources`` index when they are not ``tokens`` (the source
            text, for cross-attention knockouts in encoder–decoder models).
        model: the model that made it (:func:`~hooklab.output.provenance.describe_model`).
    """

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

    def _labels(self) -> list[str]:
        if self.centres is None:
            return [f"layers {w[0]}-{w[-1]}" for w in self.windows]
        return [str(c) for c in self.centres]

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

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-friendly dict."""
        return {
            "tokens": list(self.tokens),
            "token_ids": self.token_ids.tolist(),
            "target_id": self.target_id,
            "target_token": self.target_token,
            "queries": list(self.queries),
            "sources": {k: list(v) for k, v in self.sources.items()},
            "windows": [list(w) for w in self.windows],
            "centres": None if self.centres is None else list(self.centres),
            "base_probability": self.base_probability,
            "table": self.table(),
            "parameters": _jsonable(self.parameters),
            "key_tokens": None if self.key_tokens is None else list(self.key_tokens),
            "model": None if self.model is None else _jsonable(self.model),
        }

    def to_text(self, digits: int = 1) -> str:
        """Return the relative changes (in %) as a table: source sets by centre layer."""
        labels, change = self._labels(), (100 * self.relative_change).tolist()
        cells = [[f"{v:+.{digits}f}" for v in row] for row in change]
        names = list(self.sources)
        name_w = max(len(n) for n in [*names, "source"])
        widths = [max(len(lab), *(len(r[j]) for r in cells)) for j, lab in enumerate(labels)]
        query = ", ".join(display_token(self.tokens[q]) for q in self.queries)
        lines = [
            f"attention knockout: P({display_token(self.target_token)!r}) = "
            f"{self.base_probability:.4f}; relative change (%) when {query} cannot attend to "
            "the source",
            "source".ljust(name_w)
            + " │ "
            + " ".join(lab.rjust(w) for lab, w in zip(labels, widths)),
            "─" * name_w + "─┼─" + "─".join("─" * w for w in widths),
        ]
        for name, row in zip(names, cells):
            lines.append(
                name.ljust(name_w) + " │ " + " ".join(c.rjust(w) for c, w in zip(row, widths))
            )
        return "\n".join(lines)

    def show(self, **kwargs: Any) -> None:
        """Print :meth:`to_text`."""
        print(self.to_text(**kwargs))

    def to_html(self) -> str:
        """Return the table of relative changes as HTML."""
        esc = html.escape
        rows = "".join(
            f"<tr><th>{esc(name)}</th>"
            + "".join(f"<td>{100 * v:+.1f}</td>" for v in values)
            + "</tr>"
            for name, values in zip(self.sources, self.relative_change.tolist())
        )
        head = "".join(f"<th>{esc(lab)}</th>" for lab in self._labels())
        return (
            f"<div class='hooklab-knockout'><b>{esc(self.to_text().splitlines()[0])}</b>"
            f"<table><tr><th>source</th>{head}</tr>{rows}</table></div>"
        )

    def _repr_html_(self) -> str:
        return self.to_html()

    def plot(self, **kwargs: Any):
        """Return a Figure with the paper's curves (never shown)."""
        from hooklab.mixing.plot import plot_knockout

        return plot_knockout(self, **kwargs)
