"""The output of a context-mixing method for one example: per-layer mixing matrices.

``scores[l, i, j]`` says how much token ``i`` (query) mixes in token ``j`` (key) at layer
``layers[l]``. Query and key tokens are the same sequence for self-attention; for
cross-attention (encoder–decoder models) the keys are the source tokens (``key_tokens``).
Saved as one safetensors file: tensors plus JSON metadata with a format version, no pickle.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from hooklab.output.io import read_tensors, write_tensors
from hooklab.output.provenance import freeze
from hooklab.output.render import display_token
from hooklab.output.sequence import _jsonable

FORMAT_VERSION = 1
_META_KEY = "hooklab_mixing"
_TENSORS = ("token_ids", "scores", "rollout", "key_token_ids")


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
        parameters: the options it ran with (JSON-friendly).
        target_start: index of the first target (generated or forced) token, if any.
        key_tokens: the key tokens when they differ from ``tokens`` (cross-attention).
        key_token_ids: their ids.
        causal: keys after the query are invisible (blank in tables and plots).
        model: the model that made it (:func:`~hooklab.output.provenance.describe_model`).
    """

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

    # ---- conversions -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-friendly dict (tensors as nested lists)."""
        out: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "tokens": list(self.tokens),
            "layers": list(self.layers),
            "method": self.method,
            "parameters": _jsonable(self.parameters),
            "target_start": self.target_start,
            "key_tokens": None if self.key_tokens is None else list(self.key_tokens),
            "causal": self.causal,
            "model": None if self.model is None else _jsonable(self.model),
        }
        for name in _TENSORS:
            value = getattr(self, name)
            out[name] = None if value is None else value.tolist()
        return out

    # ---- display ---------------------------------------------------------------------------
    def to_text(
        self,
        layer: int | None = None,
        *,
        rollout: bool = False,
        digits: int = 2,
        color: bool = True,
    ) -> str:
        """Return a terminal table of one layer's matrix: query rows, key columns."""
        grid, mask = self.matrix(layer, rollout=rollout).double(), self.visible()
        vmax = float(grid[mask].abs().max()) if mask.any() else 0.0
        rows = [display_token(t) for t in self.tokens]
        cols = [display_token(t) for t in self.keys]
        label_w = max(len(r) for r in rows)
        cells = [
            [f"{v:.{digits}f}" if m else "" for v, m in zip(row, seen)]
            for row, seen in zip(grid.tolist(), mask.tolist())
        ]
        widths = [max(len(cols[j]), *(len(r[j]) for r in cells)) for j in range(len(cols))]
        what = "rollout" if rollout else "scores"
        lines = [f"{self.method} {what}, layer {self.layers[self.layer_index(layer)]}"]
        lines.append(" " * label_w + " │ " + " ".join(c.rjust(w) for c, w in zip(cols, widths)))
        lines.append("─" * label_w + "─┼─" + "─".join("─" * w for w in widths))
        for i, label in enumerate(rows):
            parts = []
            for j, w in enumerate(widths):
                text = cells[i][j].rjust(w)
                if color and cells[i][j] and vmax > 0:
                    shade = round(255 * (1 - min(abs(grid[i, j].item()) / vmax, 1.0)))
                    fg = "255;255;255" if shade < 115 else "0;0;0"
                    text = f"\x1b[48;2;255;{shade};{shade}m\x1b[38;2;{fg}m{text}\x1b[0m"
                parts.append(text)
            lines.append(label.ljust(label_w) + " │ " + " ".join(parts))
        return "\n".join(line.rstrip() for line in lines)

    def show(self, layer: int | None = None, *, rollout: bool = False, **kwargs: Any) -> None:
        """Print one layer's mixing matrix (the last layer when None) as a colour table."""
        print(self.to_text(layer, rollout=rollout, **kwargs))

    def to_html(self, layer: int | None = None, *, rollout: bool = False, digits: int = 3) -> str:
        """Return an HTML table of one layer's matrix (inline styles, tokens escaped)."""
        grid, mask = self.matrix(layer, rollout=rollout).double(), self.visible()
        vmax = float(grid[mask].abs().max()) if mask.any() else 0.0
        esc, style = html.escape, "padding:2px 5px;text-align:right;border:1px solid #eee;"
        title = f"{self.method}, layer {self.layers[self.layer_index(layer)]}"
        parts = [
            '<div class="hooklab-mixing" style="font-family:monospace;font-size:12px">',
            f"<div><b>{esc(title + (' (rollout)' if rollout else ''))}</b></div>",
            "<table style='border-collapse:collapse'><tr><th></th>",
            *(f"<th style='white-space:pre'>{esc(display_token(t))}</th>" for t in self.keys),
            "</tr>",
        ]
        for i, token in enumerate(self.tokens):
            parts.append(f"<tr><th style='white-space:pre;text-align:left'>{esc(token)}</th>")
            for j in range(len(self.keys)):
                if not mask[i, j]:
                    parts.append(f"<td style='{style}'></td>")
                    continue
                v = float(grid[i, j])
                shade = round(255 * (1 - min(abs(v) / vmax, 1.0))) if vmax > 0 else 255
                parts.append(
                    f"<td style='{style}background:rgb(255,{shade},{shade})' "
                    f"title='{v:.6g}'>{v:.{digits}f}</td>"
                )
            parts.append("</tr>")
        parts.append("</table></div>")
        return "\n".join(parts)

    def _repr_html_(self) -> str:
        return self.to_html()

    def plot(self, layer: int | None = None, *, rollout: bool = False, **kwargs: Any):
        """Return a Figure: a grid of every layer's heatmap, or one layer's (never shown)."""
        from hooklab.mixing.plot import plot_layers, plot_matrix

        if layer is None:
            return plot_layers(self, rollout=rollout, **kwargs)
        return plot_matrix(self, layer, rollout=rollout, **kwargs)

    # ---- persistence -----------------------------------------------------------------------
    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write to one ``.safetensors`` file (suffix added if missing); refuse to overwrite."""
        tensors = {n: getattr(self, n) for n in _TENSORS if getattr(self, n) is not None}
        meta = {k: v for k, v in self.to_dict().items() if k not in _TENSORS}
        return write_tensors(path, tensors, meta, key=_META_KEY, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path) -> MixingOutput:
        """Read an output written by :meth:`save`."""
        meta, tensors = read_tensors(
            path, key=_META_KEY, what="mixing output", version=FORMAT_VERSION
        )
        meta.pop("format_version")
        for name in ("tokens", "layers", "key_tokens"):
            if meta[name] is not None:
                meta[name] = tuple(meta[name])
        return cls(**meta, **{name: tensors.get(name) for name in _TENSORS})
