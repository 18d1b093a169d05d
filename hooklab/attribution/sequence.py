"""The attribution scores of one sequence, and its part of the attribution record.

Dimension names (used across hooklab): ``step`` indexes attributed target tokens (step t
predicts ``tokens[target_start + t]``); ``pos`` / ``key_pos`` index tokens of the sequence
(BOS included); ``source_pos`` the source tokens of an encoder–decoder output; ``d_model`` is
the hidden size.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from hooklab.output.provenance import freeze, thaw, unthaw

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure


@dataclass(frozen=True, eq=False)
class SequenceAttribution:
    """Attribution scores and step scores of one prompt + target sequence.

    Attributes:
        tokens: every token of the sequence as text, BOS included.
        token_ids: their ids.
        target_start: index in ``tokens`` of the first attributed target token.
        attributions: row t holds the score of each token for step t (predicting
            ``tokens[target_start + t]``); tokens the step cannot see are NaN. A trailing
            ``d_model`` dimension is kept when the method's hidden-size reduction is deferred.
            None for methods that only compute step scores.
        step_scores: named ``[step]`` scores.
        method: the attribution method's name.
        parameters: the options the method ran with (frozen: a read-only mapping per output).
        extras: other named per-step tensors a method returns (e.g. IG's completeness delta).
        source_tokens: encoder–decoder only: the source (encoder input) tokens as the model
            sees them (special tokens such as ``</s>`` included); None for decoder-only models.
            ``tokens`` are then the decoder input: the decoder start token, then the targets
            (``target_start`` = 1 unless a forced prefix is not attributed).
        source_token_ids: their ids.
        source_attributions: ``[step, source_pos, ...]``, the score of each source token for
            each step (every step sees every source token); trailing dims as ``attributions``.
        special_tokens: the tokenizer's special tokens, which views can hide
            (``hide_special=True``) without changing the stored scores.
    """

    tokens: tuple[str, ...]
    token_ids: Int[Tensor, "pos"]
    target_start: int
    attributions: Float[Tensor, "step key_pos *d_model"] | None = None
    step_scores: dict[str, Float[Tensor, "step"]] = field(default_factory=dict)
    method: str = "dummy"
    parameters: Mapping[str, Any] = field(default_factory=dict)
    extras: dict[str, Float[Tensor, "step"]] = field(default_factory=dict)
    source_tokens: tuple[str, ...] | None = None
    source_token_ids: Int[Tensor, "source_pos"] | None = None
    source_attributions: Float[Tensor, "step source_pos *d_model"] | None = None
    special_tokens: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "tokens", tuple(self.tokens))
        object.__setattr__(self, "parameters", freeze(self.parameters))
        object.__setattr__(self, "special_tokens", tuple(self.special_tokens))
        self._check_source()
        n = len(self.tokens)
        if tuple(self.token_ids.shape) != (n,):
            raise ValueError(f"token_ids has shape {tuple(self.token_ids.shape)}; expected ({n},)")
        if not 0 < self.target_start <= n:
            raise ValueError(f"target_start={self.target_start} is outside 1..{n}")
        steps = self.n_steps
        if steps > n - self.target_start:
            raise ValueError(
                f"{steps} steps but only {n - self.target_start} tokens after target_start"
            )
        if self.attributions is not None and (
            self.attributions.ndim < 2 or tuple(self.attributions.shape[:2]) != (steps, n)
        ):
            raise ValueError(
                f"attributions has shape {tuple(self.attributions.shape)}; expected "
                f"({steps}, {n}, ...) = (step, key_pos, ...)"
            )
        for kind, scores in (("step score", self.step_scores), ("extra", self.extras)):
            for name, value in scores.items():
                if tuple(value.shape) != (steps,):
                    raise ValueError(
                        f"{kind} {name!r} has shape {tuple(value.shape)}; expected ({steps},)"
                    )

    def _check_source(self) -> None:
        if self.source_tokens is None:
            if self.source_token_ids is not None or self.source_attributions is not None:
                raise ValueError("source_token_ids / source_attributions need source_tokens.")
            return
        object.__setattr__(self, "source_tokens", tuple(self.source_tokens))
        n = len(self.source_tokens)
        ids = self.source_token_ids
        if ids is None or tuple(ids.shape) != (n,):
            shape = None if ids is None else tuple(ids.shape)
            raise ValueError(f"source_token_ids has shape {shape}; expected ({n},)")
        if (self.source_attributions is None) != (self.attributions is None):
            raise ValueError("source_attributions and attributions go together (both or none).")
        if self.source_attributions is not None:
            got, target = tuple(self.source_attributions.shape), tuple(self.attributions.shape)
            expected = (target[0], n, *target[2:])
            if got != expected:
                raise ValueError(
                    f"source_attributions has shape {got}; expected {expected} = "
                    "(step, source_pos, ...) with the trailing dims of attributions"
                )

    # ---- shape helpers ---------------------------------------------------------------------
    @property
    def encoder_decoder(self) -> bool:
        """Whether this is an encoder–decoder output (it has source tokens)."""
        return self.source_tokens is not None

    @property
    def n_steps(self) -> int:
        if self.attributions is not None:
            return self.attributions.shape[0]
        for scores in (*self.step_scores.values(), *self.extras.values()):
            return scores.shape[0]
        return len(self.tokens) - self.target_start

    @property
    def prompt_tokens(self) -> tuple[str, ...]:
        return self.tokens[: self.target_start]

    @property
    def target_tokens(self) -> tuple[str, ...]:
        return self.tokens[self.target_start : self.target_start + self.n_steps]

    @property
    def default_reduce(self) -> str:
        """The method's own reduction of trailing dims (``"l2"`` unless it set another)."""
        return str(self.parameters.get("reduce", "l2"))

    def scores(
        self, reduce: str | None = None, *, normalize: bool = False, side: str = "target"
    ) -> Float[Tensor, "step key_pos"] | None:
        """Return ``[step, key_pos]`` scores, reducing kept trailing dims with ``reduce``.

        Args:
            reduce: ``None`` uses the method's default (L2 norm over the hidden size for
                gradient methods, the mean over layers and heads for attention).
            normalize: divide each step's scores by the sum of their absolute values, so each
                row shows shares of the step's total (as Inseq displays attributions); on
                encoder–decoder outputs the total covers the source and the target side.
            side: encoder–decoder outputs: ``"target"`` (``[step, target_pos]``, the decoder
                input), ``"source"`` (``[step, source_pos]``) or ``"both"`` (the source
                positions, then the target positions). Decoder-only outputs: ``"target"``.
        """
        from hooklab.attribution.aggregate import reduce_hidden

        if side not in ("target", "source", "both"):
            raise ValueError(f"side={side!r}; use 'target', 'source' or 'both'.")
        if side != "target" and not self.encoder_decoder:
            raise ValueError(f"side={side!r} needs an encoder-decoder output; use 'target'.")
        if self.attributions is None:
            return None
        how = reduce or self.default_reduce
        parts = [reduce_hidden(self.attributions, how)]
        if self.source_attributions is not None:
            parts.insert(0, reduce_hidden(self.source_attributions, how))
        scores = torch.cat(parts, dim=1)  # [step, source_pos + target_pos]
        if normalize:
            total = scores.abs().nansum(dim=-1, keepdim=True)
            scores = scores / torch.where(total > 0, total, torch.ones_like(total))
        n_source = len(self.source_tokens or ())
        return {"target": scores[:, n_source:], "source": scores[:, :n_source], "both": scores}[
            side
        ]

    def aggregate(self, how: str = "words", **kwargs: Any) -> SequenceAttribution:
        """Merge tokens into words or spans (:func:`~hooklab.attribution.aggregate.aggregate`)."""
        from hooklab.attribution.aggregate import aggregate

        return aggregate(self, how, **kwargs)

    # ---- conversions -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-friendly dict (tensors as nested lists, NaN as ``"nan"``)."""
        tensors, entry = record_entry(self, 0)
        return nest_entry(entry, tensors, 0)

    def to_pandas(self, reduce: str | None = None) -> pd.DataFrame:
        """Return a tidy table: one row per (step, visible source position).

        Columns ``step, target_pos, target_token, pos, token, score`` and one per step score
        and extra; see :func:`hooklab.attribution.views.sequence_frame`.
        """
        from hooklab.attribution.views import sequence_frame

        return sequence_frame(self, reduce)

    def with_(self, **changes: Any) -> SequenceAttribution:
        """Return a copy with some fields replaced."""
        return replace(self, **changes)

    # ---- display (implemented in hooklab.attribution.views / plot) -------------------------
    def to_text(self, **kwargs: Any) -> str:
        """Return the terminal table of the scores (options: see ``render.to_text``)."""
        from hooklab.attribution.views import to_text

        return to_text(self, **kwargs)

    def show(self, **kwargs: Any) -> None:
        """Print :meth:`to_text` (coloured only on a terminal without ``NO_COLOR``)."""
        print(self.to_text(**kwargs))

    def to_html(self, **kwargs: Any) -> str:
        """Return an HTML table of the scores."""
        from hooklab.attribution.views import to_html

        return to_html(self, **kwargs)

    def _repr_html_(self) -> str:
        return self.to_html()

    def plot(self, **kwargs: Any) -> Figure:
        """Return a matplotlib Figure with a heatmap of the scores (never shows it)."""
        from hooklab.attribution.plot import plot_sequence

        return plot_sequence(self, **kwargs)

    def __sub__(self, other: SequenceAttribution) -> SequenceAttribution:
        """Return ``self - other`` as shares: a signed ``[step, key_pos]`` map in [-1, 1].

        Each side is reduced to ``[step, key_pos]`` (its default reduction) and each step
        normalised to ``Σ|score| = 1`` before subtracting, so methods on different scales
        compare (the L2 norm of input x gradient is far smaller than saliency's; a raw
        difference would be saliency's map with the sign flipped). Positive cells: ``self``
        gives the token a larger share. For the raw difference use
        ``hooklab.attribution.aggregate.difference(a, b)``.
        """
        from hooklab.attribution.aggregate import difference

        return difference(self, other, normalize=True)


# ---- one sequence's part of the record (hooklab.attribution.output.AttributionOutput._record) -
def record_entry(s: SequenceAttribution, i: int) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Sequence ``i``'s tensors (named ``"{i}.<what>"``) and its entry in ``"sequences"``."""
    tensors = {f"{i}.token_ids": s.token_ids}
    if s.attributions is not None:
        tensors[f"{i}.attributions"] = s.attributions
    tensors.update({f"{i}.step.{n}": v for n, v in s.step_scores.items()})
    tensors.update({f"{i}.extra.{n}": v for n, v in s.extras.items()})
    entry = {
        "tokens": list(s.tokens),
        "target_start": s.target_start,
        "method": s.method,
        "parameters": thaw(s.parameters),
        "step_scores": list(s.step_scores),
        "extras": list(s.extras),
    }
    if s.source_tokens is not None:  # encoder-decoder: the source side too
        tensors[f"{i}.source_token_ids"] = s.source_token_ids
        if s.source_attributions is not None:
            tensors[f"{i}.source_attributions"] = s.source_attributions
        entry["source_tokens"] = list(s.source_tokens)
        entry["special_tokens"] = list(s.special_tokens)
    return tensors, entry


def from_record_entry(
    s: Mapping[str, Any], tensors: Mapping[str, Tensor], i: int
) -> SequenceAttribution:
    source_tokens = s.get("source_tokens")
    return SequenceAttribution(
        tokens=tuple(s["tokens"]),
        token_ids=tensors[f"{i}.token_ids"],
        target_start=s["target_start"],
        attributions=tensors.get(f"{i}.attributions"),
        step_scores={n: tensors[f"{i}.step.{n}"] for n in s["step_scores"]},
        method=s["method"],
        parameters=unthaw(s["parameters"]),
        extras={n: tensors[f"{i}.extra.{n}"] for n in s["extras"]},
        source_tokens=None if source_tokens is None else tuple(source_tokens),
        source_token_ids=tensors.get(f"{i}.source_token_ids"),
        source_attributions=tensors.get(f"{i}.source_attributions"),
        special_tokens=tuple(s.get("special_tokens", ())),
    )


def nest_entry(entry: Mapping[str, Any], tensors: Mapping[str, Tensor], i: int) -> dict[str, Any]:
    """The ``to_dict`` form of sequence ``i``: its record entry with its tensors as lists."""
    out = {
        "tokens": entry["tokens"],
        "token_ids": thaw(tensors[f"{i}.token_ids"]),
        "target_start": entry["target_start"],
        "attributions": thaw(tensors.get(f"{i}.attributions")),
        "step_scores": {n: thaw(tensors[f"{i}.step.{n}"]) for n in entry["step_scores"]},
        "extras": {n: thaw(tensors[f"{i}.extra.{n}"]) for n in entry["extras"]},
        "method": entry["method"],
        "parameters": entry["parameters"],
    }
    if "source_tokens" in entry:
        out["source_tokens"] = entry["source_tokens"]
        out["source_token_ids"] = thaw(tensors[f"{i}.source_token_ids"])
        out["source_attributions"] = thaw(tensors.get(f"{i}.source_attributions"))
        out["special_tokens"] = entry["special_tokens"]
    return out


def _floats(value: Any) -> Tensor:
    """A float32 tensor from nested lists (``"nan"`` / ``"inf"`` strings read back as floats)."""
    return torch.tensor(unthaw(value), dtype=torch.float32)


def flatten_entry(s: Mapping[str, Any], i: int) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Invert :func:`nest_entry`: the record entry and the tensors of sequence ``i``."""
    tensors = {f"{i}.token_ids": torch.tensor(s["token_ids"], dtype=torch.long)}
    if s.get("attributions") is not None:
        tensors[f"{i}.attributions"] = _floats(s["attributions"])
    tensors.update({f"{i}.step.{n}": _floats(v) for n, v in s["step_scores"].items()})
    tensors.update({f"{i}.extra.{n}": _floats(v) for n, v in s["extras"].items()})
    if s.get("source_tokens") is not None:
        tensors[f"{i}.source_token_ids"] = torch.tensor(s["source_token_ids"], dtype=torch.long)
        if s.get("source_attributions") is not None:
            tensors[f"{i}.source_attributions"] = _floats(s["source_attributions"])
    entry = {**s, "step_scores": list(s["step_scores"]), "extras": list(s["extras"])}
    return entry, tensors
