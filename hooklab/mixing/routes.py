"""Information-flow routes: the graph of the edges that matter for one prediction.

Ferrando and Voita (EMNLP 2024), "Information Flow Routes: Automatically Interpreting Language
Models at Scale" (the LLM Transparency Tool). Nodes are residual-stream states (a position at
a depth: before layer ℓ, after its attention, after the layer); each state is a sum of
components, and a component's importance is ALTI's proportion
``max(0, ‖y‖₁ - ‖y - e‖₁)``, normalised over the components of ``y``:

- after attention, ``y_i = x_i + Σ_j Σ_h a^h_ij v^h_j W^h_O + b_O``: an **attention** edge
  from ``x_j`` per source token and head (or summed over heads) and a **residual** edge from
  ``x_i``;
- after the layer, ``resid_post_i = resid_mid_i + MLP_i``: a **residual** edge and an **mlp**
  edge from ``resid_mid_i`` (parallel blocks: attention, residual and mlp edges straight from
  the layer input, no middle state).

From the prediction's state (the last layer's output at ``position``) downwards, the edges
above ``threshold`` are kept and their sources explored: one forward pass, no gradients. The
decomposition and its checks are :mod:`hooklab.mixing.alti`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import torch
from jaxtyping import Float, Int
from torch import Tensor

from hooklab.mixing.adapter import model_adapter, side_tokens
from hooklab.mixing.alti import check_supported, contributions, layer_acts, record
from hooklab.mixing.routes_seq2seq import seq2seq_routes
from hooklab.options import Check, PositiveFloat, checked_options
from hooklab.output.io import register_kind
from hooklab.output.provenance import describe_model, freeze

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

#: Edge kinds, in the order of the ``kind`` column of :attr:`RoutesOutput.edges` ("cross":
#: encoder–decoder cross-attention, :mod:`hooklab.mixing.routes_seq2seq`).
EDGE_KINDS = ("attention", "residual", "mlp", "cross")
#: Columns of :attr:`RoutesOutput.edges`.
EDGE_COLUMNS = ("source_depth", "source_pos", "target_depth", "target_pos", "kind", "head")


@dataclass(frozen=True, eq=False)
class RoutesOutput:
    """The important edges of one prediction's information flow.

    Depth ``d`` is the residual stream before layer ``d // 2`` (even ``d``), after its
    attention (odd ``d``), or after the last layer (``d = 2 * n_layers``); shown at height
    ``d / 2``. On encoder–decoder models (``source_length > 0``) the first ``source_length``
    tokens are the source, whose encoder states have that layout over ``encoder_layers``;
    decoder states have three per layer (``3ℓ`` before decoder layer ℓ, then after its
    self-attention, its cross-attention and the layer), shown at height ``d / 3``
    (:mod:`hooklab.mixing.routes_seq2seq`).

    Attributes:
        tokens: the prompt's tokens as text (BOS included); token_ids: their ids.
        edges: ``[edge, 6]`` ints, columns :data:`EDGE_COLUMNS` (kind indexes
            :data:`EDGE_KINDS`; head is -1 for residual, mlp and head-summed edges).
        weights: ``[edge]`` each edge's importance (its share of the target state).
        n_layers: the model's layers.
        position: the predicting position (the graph's root is ``(2 * n_layers, position)``).
        threshold: edges at or below it were dropped.
        source_length: encoder–decoder models: the source tokens at the start of ``tokens``;
            0 on decoder-only models. encoder_layers: the encoder's layers (0 if none).
        parameters: the options it ran with; model: the model that made it.
    """

    kind: ClassVar[str] = "routes"

    tokens: tuple[str, ...]
    token_ids: Int[Tensor, "pos"]
    edges: Int[Tensor, "edge 6"]
    weights: Float[Tensor, "edge"]
    n_layers: int
    position: int
    threshold: float
    source_length: int = 0
    encoder_layers: int = 0
    parameters: Mapping[str, Any] = field(default_factory=dict)
    model: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "tokens", tuple(self.tokens))
        object.__setattr__(self, "parameters", freeze(self.parameters))
        object.__setattr__(self, "model", None if self.model is None else freeze(self.model))
        n = len(self.tokens)
        if tuple(self.token_ids.shape) != (n,):
            raise ValueError(f"token_ids has shape {tuple(self.token_ids.shape)}; expected ({n},)")
        if self.edges.ndim != 2 or self.edges.shape[1] != len(EDGE_COLUMNS):
            raise ValueError(f"edges has shape {tuple(self.edges.shape)}; expected (edge, 6)")
        if tuple(self.weights.shape) != (self.edges.shape[0],):
            raise ValueError(
                f"weights has shape {tuple(self.weights.shape)}; expected ({self.edges.shape[0]},)"
            )
        if not 0 <= self.position < n:
            raise ValueError(f"position={self.position} is outside 0..{n - 1}")

    @property
    def root_depth(self) -> int:
        """Depth of the predicting state: after the last (decoder) layer."""
        return (3 if self.source_length else 2) * self.n_layers

    def height(self, depth: int, pos: int) -> float:
        """Where a state is drawn: layers below it (a decoder layer has three sublayers)."""
        return depth / (3 if pos >= self.source_length > 0 else 2)

    @property
    def nodes(self) -> list[tuple[int, int]]:
        """Every ``(depth, pos)`` on a kept edge, and the root, sorted."""
        found = {(self.root_depth, self.position)}
        for sd, sp, td, tp, _, _ in self.edges.tolist():
            found |= {(sd, sp), (td, tp)}
        return sorted(found)

    # ---- conversions -----------------------------------------------------------------------
    def to_pandas(self) -> pd.DataFrame:
        """One row per edge: the columns of :data:`EDGE_COLUMNS` (kind by name), the source and
        target tokens, and ``weight``."""
        import pandas as pd

        rows = [dict(zip(EDGE_COLUMNS, e, strict=True)) for e in self.edges.tolist()]
        for row, w in zip(rows, self.weights.tolist(), strict=True):
            row["kind"] = EDGE_KINDS[row["kind"]]
            row["source_token"] = self.tokens[row["source_pos"]]
            row["target_token"] = self.tokens[row["target_pos"]]
            row["weight"] = w
        return pd.DataFrame(rows, columns=[*EDGE_COLUMNS, "source_token", "target_token", "weight"])

    def _record(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Tensors and JSON fields to save (read back by :meth:`_from_record`)."""
        tensors = {"token_ids": self.token_ids, "edges": self.edges, "weights": self.weights}
        fields = {"tokens": list(self.tokens), "n_layers": self.n_layers,
                  "position": self.position, "threshold": self.threshold,
                  "source_length": self.source_length,
                  "encoder_layers": self.encoder_layers}  # fmt: skip
        return tensors, fields

    @classmethod
    def _from_record(cls, meta: dict[str, Any], tensors: dict[str, Tensor]) -> RoutesOutput:
        from hooklab.output.provenance import unthaw

        return cls(
            tokens=tuple(meta["tokens"]), n_layers=meta["n_layers"], position=meta["position"],
            threshold=meta["threshold"], source_length=meta.get("source_length", 0),
            encoder_layers=meta.get("encoder_layers", 0), parameters=unthaw(meta["parameters"]),
            model=None if meta["model"] is None else unthaw(meta["model"]), **tensors,
        )  # fmt: skip

    # ---- display ---------------------------------------------------------------------------
    @checked_options
    def plot(self, *, ax=None, max_width: PositiveFloat = 6.0) -> Figure:
        """Return the route figure: tokens on x, depth on y, edge width by importance.

        Attention edges are blue, residual edges grey, MLP edges orange; never shown.
        """
        import matplotlib.pyplot as plt

        if ax is None:
            fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(self.tokens)), 1 + self.n_layers))
        else:
            fig = ax.figure
        colors = {"attention": "tab:blue", "residual": "0.55", "mlp": "tab:orange"}
        if self.source_length:
            colors["cross"] = "tab:purple"
        for (sd, sp, td, tp, kind, _), w in zip(self.edges.tolist(), self.weights.tolist(),
                                                strict=True):  # fmt: skip
            name = EDGE_KINDS[kind]
            dx = 0.12 if name == "mlp" else 0.0  # mlp and residual edges share their nodes
            heights = [self.height(sd, sp), self.height(td, tp)]
            ax.plot([sp + dx, tp + dx], heights, color=colors[name], lw=0.5 + max_width * w,
                    alpha=0.8, solid_capstyle="round")  # fmt: skip
        depth, pos = zip(*self.nodes, strict=True)
        ax.scatter(pos, [self.height(d, p) for d, p in zip(depth, pos, strict=True)], s=12,
                   color="black", zorder=3)  # fmt: skip
        ax.set_xticks(range(len(self.tokens)), [repr(t)[1:-1] for t in self.tokens], rotation=60)
        ax.set_yticks(range(max(self.n_layers, self.encoder_layers) + 1))
        if self.source_length:  # the source | decoder boundary
            ax.axvline(self.source_length - 0.5, color="0.8", lw=1, zorder=0)
        ax.set_ylabel("layer")
        ax.set_xlim(-0.5, len(self.tokens) - 0.5)
        handles = [plt.Line2D([], [], color=c, lw=2, label=k) for k, c in colors.items()]
        ax.legend(handles=handles, loc="upper left", fontsize="small", frameon=False)
        ax.set_title(f"Information flow routes (threshold {self.threshold:g})")
        fig.tight_layout()
        return fig

    # ---- persistence -----------------------------------------------------------------------
    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Save to exactly ``path`` (see :mod:`hooklab.output.io`); refuse to overwrite."""
        from hooklab.output.io import save

        return save(self, path, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path) -> RoutesOutput:
        """Load routes written by :meth:`save`."""
        from hooklab.output.io import load

        return load(path, cls.kind)


register_kind(
    "routes", RoutesOutput, what="information-flow routes (hooklab.mixing.routes.RoutesOutput)"
)


def _edges(parts, sources, total, threshold):
    """Importance of each part of ``total``; the ``(source, weight)`` pairs above threshold."""
    weights = contributions(torch.stack(parts), total)
    return [(s, float(w)) for s, w in zip(sources, weights.tolist(), strict=True) if w > threshold]


#: The edge threshold τ: a number in [0, 1).
Threshold = Annotated[float, Check(min=0, max=1, max_open=True)]


def _decoder_only_edges(model, ids, position: int, threshold: float, per_head: bool) -> list:
    """The kept edges of one decoder-only sequence, top-down from ``position``."""
    n, n_layers = len(ids), model.cfg.n_layers
    act = record(model, ids, range(n_layers))
    edges: list[tuple[int, int, int, int, int, int, float]] = []
    active = {position}
    attention, residual, mlp = range(3)
    for layer in reversed(range(n_layers)):
        acts = layer_acts(model, act, layer)
        top, mid, bottom = 2 * layer + 2, 2 * layer + 1, 2 * layer
        if not acts.parallel:  # resid_post = resid_mid + mlp_out, edges from the middle state
            below = set()
            for i in sorted(active):
                parts = [acts.y[i], acts.mlp_out[i]]
                for kind, w in _edges(parts, [residual, mlp], acts.y[i] + acts.mlp_out[i],
                                      threshold):  # fmt: skip
                    edges.append((mid, i, top, i, kind, -1, w))
                    below.add(i)
            active, top = below, mid
        below = set()
        for i in sorted(active):
            heads = acts.head_terms(i)  # [head, key_pos, d_model]
            parts = list(heads.flatten(0, 1)) if per_head else list(heads.sum(0))
            # part h * n + j per head (flatten order), else part j
            sources = [(attention, j, h) for h in range(len(heads)) for j in range(n)]
            sources = sources if per_head else [(attention, j, -1) for j in range(n)]
            parts.append(acts.x[i])
            sources.append((residual, i, -1))
            if acts.parallel:
                parts.append(acts.mlp_out[i])
                sources.append((mlp, i, -1))
            total = acts.y[i]
            for (kind, j, h), w in _edges(parts, sources, total, threshold):
                edges.append((bottom, j, top, i, kind, h, w))
                below.add(j)
        active = below
    return edges


@checked_options
@torch.no_grad()
def information_flow(
    model,
    prompt: str,
    *,
    targets: str = "",
    threshold: Threshold = 0.04,
    position: int = -1,
    per_head: bool = True,
) -> RoutesOutput:
    """Extract the information-flow routes of one prediction (Ferrando and Voita, 2024).

    Args:
        model: a ``TransformerBridge``: decoder-only (sequential pre-norm or parallel blocks,
            a norm on the attention output as in Gemma 2/3 and OLMo 2, residual branches
            scaled by a constant as in Granite) or encoder–decoder (post-norm as Marian and
            BART, or pre-norm as T5; :mod:`hooklab.mixing.routes_seq2seq`).
        prompt: the text (the source, on encoder–decoder models).
        targets: a forced continuation: after the prompt (decoder-only), or the decoder's
            input after its start token (encoder–decoder); ``""`` adds none.
        threshold: keep edges whose importance is above it (the paper's τ; 0.04 by default).
        position: the predicting position (negative counts from the end), among the prompt's
            and target's tokens (decoder-only) or the decoder's input (encoder–decoder); the
            explained prediction is the next token after it.
        per_head: one attention edge per head (else per source token, summed over heads).

    Returns:
        A :class:`RoutesOutput`.

    Example:
        >>> import hooklab
        >>> routes = information_flow(hooklab.load("toy"), "George was sick. His colleagues")
        >>> routes.weights.gt(0.04).all().item()
        True
    """
    check_supported(model, "information_flow")
    adapter = model_adapter(model)
    example = adapter.encode([prompt], targets)[0]
    ids = example.decoder_ids if adapter.encoder_decoder else example.ids
    n, n_src = len(ids), len(example.ids) if adapter.encoder_decoder else 0
    if not -n <= position < n:
        side = "decoder input's" if n_src else "prompt's"
        raise ValueError(f"position={position} is outside the {side} {n} tokens.")
    position %= n
    if n_src:
        edges = seq2seq_routes(model, example, position, threshold, per_head)
        tokens = sum(side_tokens(adapter, example)[::-1], ())  # source, then decoder
        token_ids = [*example.ids, *example.decoder_ids]
    else:
        edges = _decoder_only_edges(model, ids, position, threshold, per_head)
        tokens, token_ids = side_tokens(adapter, example)[0], ids
    table = torch.tensor([e[:6] for e in edges], dtype=torch.long).reshape(-1, 6)
    return RoutesOutput(
        tokens=tokens,
        token_ids=torch.tensor(token_ids),
        edges=table,
        weights=torch.tensor([e[6] for e in edges], dtype=torch.float64),
        n_layers=len(model.decoder_blocks) if n_src else model.cfg.n_layers,
        position=n_src + position,
        threshold=float(threshold),
        source_length=n_src,
        encoder_layers=len(model.encoder_blocks) if n_src else 0,
        parameters={
            "threshold": threshold,
            "position": position,
            "per_head": per_head,
            "targets": targets,
        },
        model=describe_model(model),
    )
