"""The output of a context-mixing method for one example: per-layer mixing matrices.

``scores[l, i, j]`` says how much token ``i`` (query) mixes in token ``j`` (key) at layer
``layers[l]``. Query and key tokens are the same sequence for self-attention; for
cross-attention (encoder–decoder models) the keys are the source tokens (``key_tokens``).
This module owns the kind's record (:meth:`MixingOutput._record`, saved through
:mod:`hooklab.output.io`: one safetensors file, JSON metadata, no pickle), its pandas table and
its terminal and HTML tables (on :mod:`hooklab.output.view`'s one scale); the figures are in
:mod:`hooklab.mixing.plot`.
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
from hooklab.output.provenance import freeze, unthaw
from hooklab.output.view import ColorScale, html_grid, number_format, text_grid, use_color

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure


@dataclass(frozen=True, eq=False)
class MixingOutput:
    """Per-layer context-mixing matrices of one example.

    Attributes:
        tokens: the query tokens as text (the whole sequence, BOS included).
        token_ids: their ids.
        scores: ``[layer, query_pos, key_pos]`` mixing scores of each layer in ``layers``.
        layers: the model layer of each row of ``scores``.
        rollout: optional ``[layer, query_pos, key_pos]`` scores rolled out up to each layer.
        method: the method's name.
        parameters: the options it ran with (frozen: a read-only mapping per output).
        target_start: index of the first target (generated or forced) token, if any.
        key_tokens: the key tokens when they differ from ``tokens`` (cross-attention).
        key_token_ids: their ids.
        causal: keys after the query are invisible (blank in tables and plots).
        model: the model that made it (:func:`~hooklab.output.provenance.describe_model`).
    """

    kind: ClassVar[str] = "mixing"

    tokens: tuple[str, ...]
    token_ids: Int[Tensor, "query_pos"]
    scores: Float[Tensor, "layer query_pos key_pos"]
    layers: tuple[int, ...]
    rollout: Float[Tensor, "layer query_pos key_pos"] | None = None
    method: str = "value_zeroing"
    parameters: Mapping[str, Any] = field(default_factory=dict)
    target_start: int | None = None
    key_tokens: tuple[str, ...] | None = None
    key_token_ids: Int[Tensor, "key_pos"] | None = None
    causal: bool = True
    model: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "tokens", tuple(self.tokens))
        object.__setattr__(self, "parameters", freeze(self.parameters))
        object.__setattr__(self, "model", None if self.model is None else freeze(self.model))
        object.__setattr__(self, "layers", tuple(int(x) for x in self.layers))
        if self.key_tokens is not None:
            object.__setattr__(self, "key_tokens", tuple(self.key_tokens))
        n_q, n_k = len(self.tokens), len(self.keys)
        expected = (len(self.layers), n_q, n_k)
        if tuple(self.token_ids.shape) != (n_q,):
            raise ValueError(
                f"token_ids has shape {tuple(self.token_ids.shape)}; expected ({n_q},)"
            )
        if self.key_token_ids is not None and tuple(self.key_token_ids.shape) != (n_k,):
            raise ValueError(
                f"key_token_ids has shape {tuple(self.key_token_ids.shape)}; expected ({n_k},)"
            )
        for name in ("scores", "rollout"):
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != expected:
                raise ValueError(
                    f"{name} has shape {tuple(value.shape)}; expected {expected} = "
                    "(layer, query_pos, key_pos)"
                )
        if self.target_start is not None and not 0 <= self.target_start <= n_q:
            raise ValueError(f"target_start={self.target_start} is outside 0..{n_q}")

    @property
    def keys(self) -> tuple[str, ...]:
        """The key tokens (``tokens`` for self-attention)."""
        return self.tokens if self.key_tokens is None else self.key_tokens

    def layer_index(self, layer: int | None) -> int:
        """Row of ``scores`` holding model layer ``layer`` (the last one when None)."""
        if layer is None:
            return len(self.layers) - 1
        if layer not in self.layers:
            raise ValueError(f"Layer {layer!r} was not computed; computed layers: {self.layers}.")
        return self.layers.index(layer)

    def matrix(self, layer: int | None = None, *, rollout: bool = False) -> Tensor:
        """The ``[query_pos, key_pos]`` scores (or rollout) of ``layer`` (the last if None)."""
        source = self.rollout if rollout else self.scores
        if source is None:
            raise ValueError("This output has no rollout; compute it with rollout=True.")
        return source[self.layer_index(layer)]

    def visible(self) -> Tensor:
        """``[query_pos, key_pos]`` bool mask of the pairs a query can see."""
        n_q, n_k = len(self.tokens), len(self.keys)
        if not self.causal:
            return torch.ones(n_q, n_k, dtype=torch.bool)
        return torch.ones(n_q, n_k, dtype=torch.bool).tril()

    # ---- record: the one serialisation (to_dict, save and load derive from it) -------------
    def _record(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """The tensors and fields of the saved file (see :mod:`hooklab.output.io`)."""
        tensors = {n: getattr(self, n) for n in _TENSORS if getattr(self, n) is not None}
        fields = {
            "tokens": list(self.tokens),
            "layers": list(self.layers),
            "method": self.method,
            "target_start": self.target_start,
            "key_tokens": None if self.key_tokens is None else list(self.key_tokens),
            "causal": self.causal,
        }
        return tensors, fields

    @classmethod
    def _from_record(cls, meta: Mapping[str, Any], tensors: Mapping[str, Tensor]) -> MixingOutput:
        return cls(
            tokens=tuple(meta["tokens"]),
            layers=tuple(meta["layers"]),
            method=meta["method"],
            parameters=unthaw(meta["parameters"]),
            target_start=meta["target_start"],
            key_tokens=None if meta["key_tokens"] is None else tuple(meta["key_tokens"]),
            causal=meta["causal"],
            model=None if meta.get("model") is None else unthaw(meta["model"]),
            **{n: tensors.get(n) for n in _TENSORS},
        )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-friendly dict: the saved header, fields, tensors as nested lists."""
        return as_dict(self)

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Save to exactly ``path`` (see :mod:`hooklab.output.io`); refuse to overwrite."""
        return save(self, path, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path) -> MixingOutput:
        """Load a mixing output written by :meth:`save`."""
        return load(path, cls.kind)

    # ---- tables ----------------------------------------------------------------------------
    def to_pandas(self) -> pd.DataFrame:
        """Return a tidy table: one row per (layer, query, visible key).

        Columns: ``layer`` (the model layer), ``query_pos``, ``query_token``, ``key_pos``,
        ``key_token``, ``score`` (``scores[layers.index(layer), query_pos, key_pos]``) and,
        when the output has it, ``rollout``. Keys a query cannot see (after it, under a causal
        mask) are left out.
        """
        import pandas as pd

        pairs = self.visible().nonzero().tolist()  # [(query, key)]
        q = torch.tensor([i for i, _ in pairs], dtype=torch.long)
        k = torch.tensor([j for _, j in pairs], dtype=torch.long)
        n_layers = len(self.layers)
        scores = self.scores.detach().to("cpu", torch.float64)
        frame = pd.DataFrame(
            {
                "layer": [layer for layer in self.layers for _ in pairs],
                "query_pos": q.tolist() * n_layers,
                "query_token": [self.tokens[i] for i, _ in pairs] * n_layers,
                "key_pos": k.tolist() * n_layers,
                "key_token": [self.keys[j] for _, j in pairs] * n_layers,
                "score": scores[:, q, k].reshape(-1).tolist(),
            }
        )
        if self.rollout is not None:
            rollout = self.rollout.detach().to("cpu", torch.float64)
            frame["rollout"] = rollout[:, q, k].reshape(-1).tolist()
        return frame

    def _grid(self, layer: int | None, rollout: bool) -> list[list[float]]:
        grid = self.matrix(layer, rollout=rollout).detach().to("cpu", torch.float64).clone()
        grid[~self.visible()] = float("nan")
        return grid.tolist()

    def _title(self, layer: int | None, rollout: bool) -> str:
        shown = self.layers[self.layer_index(layer)]
        return f"{self.method} {'rollout' if rollout else 'scores'}, layer {shown}"

    def to_text(
        self,
        layer: int | None = None,
        *,
        rollout: bool = False,
        digits: int | None = None,
        color: bool | None = None,
        max_width: int | None = None,
    ) -> str:
        """Return a terminal table of one layer's matrix: query rows, key columns.

        ``digits`` None: decimals chosen from the matrix (two significant digits at its
        largest). ``color`` None: colour only on a terminal without ``NO_COLOR``.
        ``max_width``: split the columns into blocks that fit.
        """
        grid = self._grid(layer, rollout)
        return text_grid(
            self.tokens,
            self.keys,
            grid,
            scale=ColorScale.fit(grid),
            color=use_color(color),
            fmt=number_format(grid, digits=digits),
            title=[self._title(layer, rollout)],
            max_width=max_width,
        )

    def show(self, layer: int | None = None, *, rollout: bool = False, **kwargs: Any) -> None:
        """Print one layer's mixing matrix (the last layer when None) as a table."""
        print(self.to_text(layer, rollout=rollout, **kwargs))

    def to_html(self, layer: int | None = None, *, rollout: bool = False, digits: int = 3) -> str:
        """Return an HTML table of one layer's matrix with the colour legend.

        ``digits`` None: decimals chosen from the matrix (three significant digits at its
        largest).
        """
        grid = self._grid(layer, rollout)
        return html_grid(
            self.tokens,
            self.keys,
            grid,
            scale=ColorScale.fit(grid),
            fmt=number_format(grid, significant=3, digits=digits),
            title=self._title(layer, rollout),
            kind="mixing",
            legend="rollout" if rollout else "mixing score",
            rule_before=self.target_start if self.key_tokens is None else None,
        )

    def _repr_html_(self) -> str:
        return self.to_html()

    def plot(self, layer: int | None = None, *, rollout: bool = False, **kwargs: Any) -> Figure:
        """Return a Figure: a grid of every layer's heatmap, or one layer's (never shown)."""
        from hooklab.mixing.plot import plot_layers, plot_matrix

        if layer is None:
            return plot_layers(self, rollout=rollout, **kwargs)
        return plot_matrix(self, layer, rollout=rollout, **kwargs)


_TENSORS = ("token_ids", "scores", "rollout", "key_token_ids")

register_kind("mixing", MixingOutput, what="a context-mixing output (hooklab.MixingOutput)")
