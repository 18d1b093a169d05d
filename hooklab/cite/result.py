"""The result of :func:`hooklab.cite.cite`, its record and its views.

Saved through :mod:`hooklab.output.io` as kind ``"citation"``: a safetensors file whose tensors
hold the per-sentence document masses (``mass``, float64, sentence x document) and the PECoRe
run's scores (``pecore.*``), and whose metadata holds the rest; or, for a path ending in
``.json``, the JSON export (``CitationResult.to_dict``)::

    format_version, hooklab_version, kind ("citation"), model, parameters (every cite option)
    question, documents, answer: the texts used
    sentences: one entry per answer sentence:
        text, start, end    -> the sentence and its character span in the answer tokens' text
        tokens              -> indices of its answer tokens (into pecore.output_current_tokens)
        selected            -> those CTI selected
        mass                -> filtered CCI mass on each document
        citations           -> cited documents, 0-based, largest mass first
    document_of_token: per document-context token, its document (0-based) or null (separator)
    cti_threshold: the CTI threshold applied
    pecore: the underlying PECoRe run (``PecoreResult.to_dict``)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from hooklab.output import io
from hooklab.output.io import FORMAT_VERSION, header, register_kind
from hooklab.output.provenance import freeze, thaw, unthaw, unthaw_float
from hooklab.pecore.result import PecoreResult

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class SentenceCitation:
    """One answer sentence and the documents it cites (0-based ids, largest mass first)."""

    text: str
    start: int
    end: int
    tokens: tuple[int, ...]
    selected: tuple[int, ...]
    mass: tuple[float, ...]
    citations: tuple[int, ...]

    @property
    def reason(self) -> str:
        """Why it cites what it cites: ``"cited"``, ``"no_selected_token"`` or ``"no_mass"``."""
        if self.citations:
            return "cited"
        return "no_selected_token" if not self.selected else "no_mass"


@dataclass(frozen=True)
class CitationResult:
    """Per-sentence citations of an answer, with the PECoRe run they come from."""

    kind: ClassVar[str] = "citation"

    question: str
    documents: tuple[str, ...]
    answer: str
    sentences: tuple[SentenceCitation, ...]
    document_of_token: tuple[int | None, ...]
    cti_threshold: float | None
    pecore: PecoreResult
    parameters: Mapping[str, Any] = field(default_factory=dict)
    model: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "parameters", freeze(self.parameters))
        object.__setattr__(self, "model", None if self.model is None else freeze(self.model))
        if len(self.document_of_token) != len(self.pecore.input_context_tokens):
            raise ValueError(
                f"{len(self.document_of_token)} document ids for "
                f"{len(self.pecore.input_context_tokens)} context tokens; they must match."
            )
        for s in self.sentences:
            if len(s.mass) != len(self.documents):
                raise ValueError(
                    f"Sentence {s.text!r} has {len(s.mass)} masses for {len(self.documents)} "
                    "documents; they must match."
                )

    @property
    def citations(self) -> list[list[int]]:
        """Cited documents (0-based) of each sentence."""
        return [list(s.citations) for s in self.sentences]

    # ---- record ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Return the documented JSON-friendly dict (see the module docstring)."""
        out = header(self.kind, self.model, self.parameters)
        out.update(
            question=self.question,
            documents=list(self.documents),
            answer=self.answer,
            sentences=[asdict(s) for s in self.sentences],
            document_of_token=list(self.document_of_token),
            cti_threshold=self.cti_threshold,
            pecore=self.pecore.to_dict(),
        )
        return thaw(out)

    def to_json(self, **kwargs: Any) -> str:
        """Return :meth:`to_dict` as JSON (``kwargs`` go to ``json.dumps``)."""
        return json.dumps(self.to_dict(), ensure_ascii=False, allow_nan=False, **kwargs)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CitationResult:
        """Rebuild a result from :meth:`to_dict`."""
        version, kind = data.get("format_version"), data.get("kind")
        if version != FORMAT_VERSION or kind != cls.kind:
            raise ValueError(
                f"Expected a citation result of format version {FORMAT_VERSION} (kind "
                f"{cls.kind!r}); got version {version!r}, kind {kind!r}."
            )
        sentences = tuple(
            SentenceCitation(
                **{
                    **s,
                    "tokens": tuple(s["tokens"]),
                    "selected": tuple(s["selected"]),
                    "mass": tuple(float(unthaw_float(m)) for m in s["mass"]),
                    "citations": tuple(s["citations"]),
                }
            )
            for s in data["sentences"]
        )
        threshold = data.get("cti_threshold")
        return cls(
            question=data["question"],
            documents=tuple(data["documents"]),
            answer=data["answer"],
            sentences=sentences,
            document_of_token=tuple(data["document_of_token"]),
            cti_threshold=None if threshold is None else float(unthaw_float(threshold)),
            pecore=PecoreResult.from_dict(data["pecore"]),
            parameters=unthaw(data.get("parameters", {})),
            model=None if data.get("model") is None else unthaw(data["model"]),
        )

    # ---- record: the JSON export with the masses and PECoRe's scores as tensors -------------
    _HEADER: ClassVar[tuple[str, ...]] = (
        "format_version",
        "hooklab_version",
        "kind",
        "model",
        "parameters",
    )

    def _record(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """The tensors and fields of the saved file (see :mod:`hooklab.output.io`)."""
        fields = self.to_dict()
        for key in self._HEADER:
            fields.pop(key)  # the header, which the file layer writes
        mass = torch.tensor([s.mass for s in self.sentences], dtype=torch.float64)
        tensors = {"mass": mass.reshape(len(self.sentences), len(self.documents))}
        for entry in fields["sentences"]:
            entry.pop("mass")
        pecore_tensors, pecore_fields = self.pecore._record()
        tensors.update({f"pecore.{k}": v for k, v in pecore_tensors.items()})
        head = {k: fields["pecore"][k] for k in self._HEADER}
        fields["pecore"] = {**head, **pecore_fields}
        return tensors, fields

    @classmethod
    def _from_record(
        cls, meta: Mapping[str, Any], tensors: Mapping[str, Tensor] | None
    ) -> CitationResult:
        """The result from a saved file; ``tensors`` None: the JSON export (:meth:`to_dict`)."""
        if tensors is not None:  # put the tensors back into the JSON export
            mass = tensors["mass"].tolist()
            sentences = [{**s, "mass": m} for s, m in zip(meta["sentences"], mass, strict=True)]
            inner = {k[len("pecore.") :]: v for k, v in tensors.items() if k.startswith("pecore.")}
            pecore = PecoreResult._from_record(meta["pecore"], inner)
            meta = {**meta, "sentences": sentences, "pecore": pecore.to_dict()}
        return cls.from_dict(meta)

    def save(self, path: str | Path, *, overwrite: bool = False, format: str = "auto") -> Path:
        """Save to exactly ``path``; refuse to overwrite unless asked.

        Args:
            path: the file to write.
            overwrite: replace an existing file.
            format: ``"safetensors"`` (the file of every output, :mod:`hooklab.output.io`),
                ``"json"`` (the JSON export, :meth:`to_dict`) or ``"auto"``: JSON when
                ``path`` ends in ``.json``, else safetensors. :meth:`load` reads both.
        """
        return io.save_in_format(self, path, format, SAVE_FORMATS, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path) -> CitationResult:
        """Load a result written by :meth:`save` (safetensors or the JSON export)."""
        return io.load(path, cls.kind)

    def to_inseq(self) -> dict[str, Any]:
        """Inseq's ``attribute-context`` JSON of the underlying PECoRe run."""
        return self.pecore.to_inseq()

    # ---- views ----------------------------------------------------------------------------
    def to_pandas(self) -> pd.DataFrame:
        """One row per (sentence, document): ``sentence, sentence_text, document, mass, rank,
        cited, n_selected`` (``rank`` 1-based among the citations, else NA)."""
        import pandas as pd

        rows = []
        for i, s in enumerate(self.sentences):
            for d, m in enumerate(s.mass):
                rank = s.citations.index(d) + 1 if d in s.citations else None
                rows.append(
                    {
                        "sentence": i,
                        "sentence_text": s.text,
                        "document": d,
                        "mass": m,
                        "rank": rank,
                        "cited": rank is not None,
                        "n_selected": len(s.selected),
                    }
                )
        frame = pd.DataFrame(rows)
        frame["rank"] = frame["rank"].astype("Int64")
        return frame

    def to_text(self, *, documents: bool = True) -> str:
        """The answer with ``[1][3]`` markers (1-based) after each sentence, and a note for each
        sentence that cites nothing and why; with ``documents``, the numbered documents first."""
        lines = []
        if documents:
            lines += [f"[{i}] {d}" for i, d in enumerate(self.documents, 1)]
            lines.append(f"Question: {self.question}")
        marked = " ".join(
            s.text + (" " + "".join(f"[{d + 1}]" for d in s.citations) if s.citations else "")
            for s in self.sentences
        )
        lines.append(f"Answer: {marked}")
        notes = {
            "no_selected_token": "no context-sensitive token (CTI selected none): no citation",
            "no_mass": "its selected tokens put no filtered CCI mass on a document: no citation",
        }
        for i, s in enumerate(self.sentences, 1):
            if s.reason != "cited":
                lines.append(f"  sentence {i} ({s.text!r}): {notes[s.reason]}")
        return "\n".join(lines)

    def show(self, **kwargs: Any) -> None:
        """Print :meth:`to_text`."""
        print(self.to_text(**kwargs))

    def to_html(self) -> str:
        """Self-contained HTML: documents, question, answer with ``[n]`` markers; hovering an
        answer token shows its scores over the documents (:mod:`hooklab.cite.render`)."""
        from hooklab.cite.render import to_html

        return to_html(self)

    def _repr_html_(self) -> str:
        return self.to_html()

    def plot(self, **kwargs: Any) -> Figure:
        """The answer with citation markers above a heat strip of the selected tokens'
        filtered CCI mass per document (:func:`hooklab.cite.render.plot`)."""
        from hooklab.cite.render import plot

        return plot(self, **kwargs)


#: The formats :meth:`CitationResult.save` writes.
SAVE_FORMATS = ("auto", "safetensors", "json")

register_kind(
    "citation",
    CitationResult,
    what="a citation result (hooklab.CitationResult)",
    json_export=True,
)
