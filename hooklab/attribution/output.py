"""The result of :func:`hooklab.attribute`: one :class:`SequenceAttribution` per input.

Saved through :mod:`hooklab.output.io` from :meth:`AttributionOutput._record` (the one
serialisation of attribution scores: ``to_dict``, ``from_dict``, ``save`` and ``load`` derive
from it; one sequence's part is in :mod:`hooklab.attribution.sequence`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor

from hooklab.attribution.sequence import (
    SequenceAttribution,
    flatten_entry,
    from_record_entry,
    nest_entry,
    record_entry,
)
from hooklab.output.io import FORMAT_VERSION, header, register_kind
from hooklab.output.provenance import freeze, thaw, unthaw

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = ["AttributionOutput", "SequenceAttribution"]


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

    # ---- record: the one serialisation (file, to_dict and from_dict derive from it) ---------
    def _record(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """The tensors and fields of the saved file (see :mod:`hooklab.output.io`)."""
        tensors: dict[str, Tensor] = {}
        entries = []
        for i, s in enumerate(self.sequences):
            seq_tensors, entry = record_entry(s, i)
            tensors.update(seq_tensors)
            entries.append(entry)
        return tensors, {"info": thaw(self.info), "sequences": entries}

    @classmethod
    def _from_record(
        cls, meta: Mapping[str, Any], tensors: Mapping[str, Tensor]
    ) -> AttributionOutput:
        sequences = tuple(from_record_entry(s, tensors, i) for i, s in enumerate(meta["sequences"]))
        model = None if meta.get("model") is None else unthaw(meta["model"])
        return cls(sequences, unthaw(meta["info"]), model=model)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-friendly dict: the saved header, ``info`` and every sequence (its
        tensors as nested lists, in the sequence's entry)."""
        tensors, fields = self._record()
        sequences = [nest_entry(s, tensors, i) for i, s in enumerate(fields["sequences"])]
        return {**header(self.kind, self.model, self.parameters), **fields, "sequences": sequences}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AttributionOutput:
        """Rebuild an output from :meth:`to_dict` (e.g. a record of the attribution dataset
        mode; other keys such as ``line`` are ignored). The scores come back exactly (float32,
        whose values JSON numbers hold exactly)."""
        version, kind = data.get("format_version"), data.get("kind")
        if version != FORMAT_VERSION or kind != cls.kind:
            raise ValueError(
                f"Expected an attribution output's to_dict() (format version {FORMAT_VERSION}, "
                f"kind 'attribution'); got format version {version!r}, kind {kind!r}."
            )
        tensors: dict[str, Tensor] = {}
        entries = []
        for i, s in enumerate(data["sequences"]):
            entry, seq_tensors = flatten_entry(s, i)
            tensors.update(seq_tensors)
            entries.append(entry)
        return cls._from_record({**data, "sequences": entries}, tensors)

    def to_pandas(self, reduce: str | None = None) -> pd.DataFrame:
        """Return a tidy table: one row per (example, step, visible source position).

        Columns ``example, step, target_pos, target_token, pos, token, score`` and one per
        step score and extra; see :func:`hooklab.attribution.views.sequence_frame`.
        """
        from hooklab.attribution.views import attribution_frame

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
        """Aggregate every sequence (see :func:`hooklab.attribution.aggregate.aggregate`)."""
        from hooklab.attribution.aggregate import aggregate

        seqs = tuple(aggregate(s, how, **kwargs) for s in self)
        return AttributionOutput(seqs, self.info, model=self.model)

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Save to exactly ``path``: one safetensors file with JSON metadata (no pickle).

        See :mod:`hooklab.output.io` and :meth:`_record`; an existing file is kept unless
        ``overwrite``.
        """
        from hooklab.output.io import save

        return save(self, path, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path) -> AttributionOutput:
        """Load an attribution output written by :meth:`save`."""
        from hooklab.output.io import load

        return load(path, cls.kind)


register_kind(
    "attribution", AttributionOutput, what="an attribution output (hooklab.AttributionOutput)"
)
