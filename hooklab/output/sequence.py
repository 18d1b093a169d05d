"""The attribution output of one sequence, and of a batch of them.

Dimension names (used across hooklab): ``step`` indexes attributed target tokens (step t
predicts ``tokens[target_start + t]``); ``pos`` / ``key_pos`` index tokens of the sequence
(BOS included); ``source_pos`` the source tokens of an encoder–decoder output; ``d_model`` is
the hidden size.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from jaxtyping import Float, Int
from torch import Tensor

from hooklab.output.provenance import freeze, thaw

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
        from hooklab.output.aggregate import reduce_hidden

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
        """Merge tokens into words or spans (see :func:`hooklab.output.aggregate.aggregate`)."""
        from hooklab.output.aggregate import aggregate

        return aggregate(self, how, **kwargs)

    # ---- conversions -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-friendly dict (tensors as nested lists, NaN as ``"nan"``)."""
        return {
            "tokens": list(self.tokens),
            "token_ids": self.token_ids.tolist(),
            "target_start": self.target_start,
            "attributions": thaw(self.attributions),
            "step_scores": thaw(self.step_scores),
            "extras": thaw(self.extras),
            "method": self.method,
            "parameters": thaw(self.parameters),
            **self._source_dict(),
        }

    def _source_dict(self) -> dict[str, Any]:
        """The source side's fields (encoder–decoder outputs only)."""
        if self.source_tokens is None:
            return {}
        return {
            "source_tokens": list(self.source_tokens),
            "source_token_ids": thaw(self.source_token_ids),
            "source_attributions": thaw(self.source_attributions),
            "special_tokens": list(self.special_tokens),
        }

    def to_pandas(self, reduce: str | None = None) -> pd.DataFrame:
        """Return a tidy table: one row per (step, visible source position).

        Columns ``step, target_pos, target_token, pos, token, score`` and one per step score
        and extra; see :func:`hooklab.output.tidy.sequence_frame`.
        """
        from hooklab.output.tidy import sequence_frame

        return sequence_frame(self, reduce)

    def with_(self, **changes: Any) -> SequenceAttribution:
        """Return a copy with some fields replaced."""
        return replace(self, **changes)

    # ---- display (implemented in hooklab.output.render / plot) ------------------------------
    def to_text(self, **kwargs: Any) -> str:
        """Return the terminal table of the scores (options: see ``render.to_text``)."""
        from hooklab.output.render import to_text

        return to_text(self, **kwargs)

    def show(self, **kwargs: Any) -> None:
        """Print :meth:`to_text` (coloured only on a terminal without ``NO_COLOR``)."""
        print(self.to_text(**kwargs))

    def to_html(self, **kwargs: Any) -> str:
        """Return an HTML table of the scores."""
        from hooklab.output.render import to_html

        return to_html(self, **kwargs)

    def _repr_html_(self) -> str:
        return self.to_html()

    def plot(self, **kwargs: Any) -> Figure:
        """Return a matplotlib Figure with a heatmap of the scores (never shows it)."""
        from hooklab.output.plot import plot_sequence

        return plot_sequence(self, **kwargs)

    def __sub__(self, other: SequenceAttribution) -> SequenceAttribution:
        """Return ``self - other`` as shares: a signed ``[step, key_pos]`` map in [-1, 1].

        Each side is reduced to ``[step, key_pos]`` (its default reduction) and each step
        normalised to ``Σ|score| = 1`` before subtracting, so methods on different scales
        compare (the L2 norm of input x gradient is far smaller than saliency's; a raw
        difference would be saliency's map with the sign flipped). Positive cells: ``self``
        gives the token a larger share. For the raw difference use
        ``hooklab.output.aggregate.difference(a, b)``.
        """
        from hooklab.output.aggregate import difference

        return difference(self, other, normalize=True)


@dataclass(frozen=True, eq=False)
class AttributionOutput:
    """The result of :func:`hooklab.attribute`: one :class:`SequenceAttribution` per input.

    Attributes:
        sequences: per input example.
        info: how it was computed (method, resolved options, timings).
        model: the model that made it (:func:`~hooklab.output.provenance.describe_model`).
    """

    kind: ClassVar[str] = "attribution"

    sequences: tuple[SequenceAttribution, ...]
    info: Mapping[str, Any] = field(default_factory=dict)
    model: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "sequences", tuple(self.sequences))
        object.__setattr__(self, "info", freeze(self.info))
        object.__setattr__(self, "model", None if self.model is None else freeze(self.model))
        for s in self.sequences:
            if not isinstance(s, SequenceAttribution):
                raise TypeError(f"sequences must hold SequenceAttribution, got {type(s)!r}")

    @property
    def parameters(self) -> Mapping[str, Any]:
        """The resolved options: ``info["parameters"]`` (else the first sequence's)."""
        if "parameters" in self.info:
            return self.info["parameters"]
        return self.sequences[0].parameters if self.sequences else freeze({})

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, i: int) -> SequenceAttribution:
        return self.sequences[i]

    def __iter__(self) -> Iterator[SequenceAttribution]:
        return iter(self.sequences)

    def __sub__(self, other: AttributionOutput) -> AttributionOutput:
        if len(self) != len(other):
            raise ValueError(f"Cannot subtract outputs of {len(other)} and {len(self)} sequences.")
        seqs = tuple(a - b for a, b in zip(self, other, strict=True))
        info = {**self.info, "difference_of": [self.info, other.info]}
        return AttributionOutput(seqs, info, model=self.model)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-friendly dict: the saved header, ``info`` and every sequence."""
        from hooklab.output.io import header

        return {
            **header(self.kind, self.model, self.parameters),
            "info": thaw(self.info),
            "sequences": [s.to_dict() for s in self.sequences],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AttributionOutput:
        """Rebuild an output from :meth:`to_dict` (e.g. a record of the attribution dataset
        mode; other keys such as ``line`` are ignored). The scores come back exactly."""
        from hooklab.output.codecs import attribution_from_dict

        return attribution_from_dict(dict(data))

    def to_pandas(self, reduce: str | None = None) -> pd.DataFrame:
        """Return a tidy table: one row per (example, step, visible source position).

        Columns ``example, step, target_pos, target_token, pos, token, score`` and one per
        step score and extra; see :func:`hooklab.output.tidy.sequence_frame`.
        """
        from hooklab.output.tidy import attribution_frame

        return attribution_frame(self, reduce)

    def to_text(self, **kwargs: Any) -> str:
        """Return every sequence's table (see :meth:`SequenceAttribution.to_text`)."""
        return "\n\n".join(s.to_text(**kwargs) for s in self.sequences)

    def show(self, **kwargs: Any) -> None:
        """Print :meth:`to_text` (coloured only on a terminal without ``NO_COLOR``)."""
        print(self.to_text(**kwargs))

    def to_html(self, **kwargs: Any) -> str:
        return "\n".join(s.to_html(**kwargs) for s in self.sequences)

    def _repr_html_(self) -> str:
        return self.to_html()

    def plot(self, index: int = 0, **kwargs: Any) -> Figure:
        """Return a Figure of sequence ``index``."""
        return self.sequences[index].plot(**kwargs)

    def aggregate(self, how: str = "words", **kwargs: Any) -> AttributionOutput:
        """Aggregate every sequence (see :func:`hooklab.output.aggregate.aggregate`)."""
        from hooklab.output.aggregate import aggregate

        seqs = tuple(aggregate(s, how, **kwargs) for s in self)
        return AttributionOutput(seqs, self.info, model=self.model)

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Save to exactly ``path``: one safetensors file with JSON metadata (no pickle).

        See :mod:`hooklab.output.io`; an existing file is kept unless ``overwrite``.
        """
        from hooklab.output.io import save

        return save(self, path, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path) -> AttributionOutput:
        """Load an attribution output written by :meth:`save`."""
        from hooklab.output.io import load

        return load(path, cls.kind)
