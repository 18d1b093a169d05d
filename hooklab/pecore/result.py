"""The result of one PECoRe run, its JSON schema, and its text / HTML / figure views.

JSON schema (``PecoreResult.to_dict``, one line per example in the dataset mode, and the file
``save`` writes for a path ending in ``.json``)::

    format_version (2), hooklab_version, kind ("pecore"): as in every saved hooklab output
    model: name_or_path, architecture, config_digest, dtype of the model (or null)
    parameters: the selection options used (std thresholds λ and top-k of CTI and CCI)
    input_context, input_current, output_context, output_current: the texts used
    input_context_tokens: tokens of the input context
    output_current_tokens: tokens of the current output (the CTI candidates)
    cti_metric, cti_scores (one per output token), cti_threshold (None without λ)
    cci_method, cci_attributed_fn, cci_threshold_std, cci_topk
    context_sensitive: one entry per selected output token:
        index           -> into output_current_tokens
        token, score    -> the token and its CTI score
        contextless_token -> the next token the model predicts without context (ỹ*)
        input_context_tokens, input_context_scores -> CCI scores of the context tokens
        cues: [{index (into input_context_tokens), token, score}]

Non-finite numbers are the strings ``"nan"``, ``"inf"`` and ``"-inf"`` (JSON has none; see
:func:`hooklab.output.provenance.thaw`); :meth:`PecoreResult.from_dict` reads them back. The
default ``save`` format is the safetensors file of every output (:mod:`hooklab.output.io`),
with the CTI and CCI scores as float64 tensors (:meth:`PecoreResult._record`: the JSON export
with the scores moved into tensors). :meth:`PecoreResult.save` holds the one rule that picks
the format from the path or the ``format`` argument (the command line uses it too).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from hooklab.options import checked_options
from hooklab.output import io
from hooklab.output.io import FORMAT_VERSION, header, register_kind
from hooklab.output.provenance import freeze, thaw, unthaw, unthaw_float

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class Cue:
    """A selected context token: ``index`` into the input or output context tokens (``side``)."""

    index: int
    token: str
    score: float
    side: str = "input"


@dataclass(frozen=True)
class ContextSensitiveToken:
    """A context-sensitive output token, its CCI scores over both contexts and its cues.

    Cues are selected over the input and output context scores together (the same rule).
    """

    index: int
    token: str
    score: float
    contextless_token: str
    input_context_tokens: tuple[str, ...]
    input_context_scores: tuple[float, ...]
    cues: tuple[Cue, ...]
    output_context_tokens: tuple[str, ...] = ()
    output_context_scores: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        for side in ("input", "output"):
            tokens = getattr(self, f"{side}_context_tokens")
            scores = getattr(self, f"{side}_context_scores")
            if len(tokens) != len(scores):
                raise ValueError(
                    f"{len(scores)} {side} context scores for {len(tokens)} {side} context "
                    "tokens; they must match one to one."
                )


@dataclass(frozen=True)
class PecoreResult:
    """CTI scores of every output token and CCI cues of the context-sensitive ones."""

    kind: ClassVar[str] = "pecore"

    input_context: str
    input_current: str
    output_current: str
    input_context_tokens: tuple[str, ...]
    output_current_tokens: tuple[str, ...]
    cti_metric: str
    cti_scores: tuple[float, ...]
    cti_threshold: float | None
    context_sensitive: tuple[ContextSensitiveToken, ...]
    output_context: str | None = None
    output_context_tokens: tuple[str, ...] = ()
    cci_method: str = "saliency"
    cci_attributed_fn: str = "contrast_prob_diff"
    parameters: Mapping[str, Any] = field(default_factory=dict)
    model: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "parameters", freeze(self.parameters))
        object.__setattr__(self, "model", None if self.model is None else freeze(self.model))
        if len(self.cti_scores) != len(self.output_current_tokens):
            raise ValueError(
                f"{len(self.cti_scores)} CTI scores for {len(self.output_current_tokens)} "
                "output tokens; they must match one to one."
            )

    def to_dict(self) -> dict[str, Any]:
        """Return the documented JSON-friendly dict (see the module docstring)."""
        out = header(self.kind, self.model, self.parameters)
        for f in fields(self):
            if f.name not in out:
                out[f.name] = getattr(self, f.name)
        out["context_sensitive"] = [asdict(c) for c in self.context_sensitive]
        return thaw(out)

    def to_inseq(self) -> dict[str, Any]:
        """Return Inseq's ``attribute-context`` JSON dict (mapping: :mod:`hooklab.pecore.inseq`)."""
        from hooklab.pecore.inseq import to_inseq

        return to_inseq(self)

    def to_json(self, **kwargs: Any) -> str:
        """Return :meth:`to_dict` as JSON (``kwargs`` go to ``json.dumps``)."""
        return json.dumps(self.to_dict(), ensure_ascii=False, allow_nan=False, **kwargs)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PecoreResult:
        """Rebuild a result from :meth:`to_dict` (other keys, e.g. ``line``, are ignored)."""
        version, kind = data.get("format_version"), data.get("kind", cls.kind)
        if version != FORMAT_VERSION or kind != cls.kind:
            raise ValueError(
                f"Expected a PECoRe result of format version {FORMAT_VERSION} (kind "
                f"{cls.kind!r}); got version {version!r}, kind {kind!r}."
            )
        names = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in names}
        data["context_sensitive"] = tuple(
            ContextSensitiveToken(
                **{
                    **c,
                    "score": float(unthaw_float(c["score"])),
                    "input_context_tokens": tuple(c["input_context_tokens"]),
                    "input_context_scores": tuple(
                        float(unthaw_float(x)) for x in c["input_context_scores"]
                    ),
                    "output_context_tokens": tuple(c.get("output_context_tokens", ())),
                    "output_context_scores": tuple(
                        float(unthaw_float(x)) for x in c.get("output_context_scores", ())
                    ),
                    "cues": tuple(
                        Cue(**{**cue, "score": float(unthaw_float(cue["score"]))})
                        for cue in c["cues"]
                    ),
                }
            )
            for c in data["context_sensitive"]
        )
        for key in ("input_context_tokens", "output_current_tokens", "output_context_tokens"):
            data[key] = tuple(data.get(key, ()))
        data["cti_scores"] = tuple(float(unthaw_float(x)) for x in data["cti_scores"])
        if data.get("cti_threshold") is not None:
            data["cti_threshold"] = float(unthaw_float(data["cti_threshold"]))
        data["parameters"] = unthaw(data.get("parameters", {}))
        data["model"] = None if data.get("model") is None else unthaw(data["model"])
        return cls(**data)

    # ---- record: the JSON export with the scores as float64 tensors ------------------------
    def _record(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """The tensors and fields of the saved file (see :mod:`hooklab.output.io`)."""
        fields = self.to_dict()
        for key in ("format_version", "hooklab_version", "kind", "model", "parameters"):
            fields.pop(key)  # the header, which the file layer writes
        tensors = {"cti_scores": torch.tensor(self.cti_scores, dtype=torch.float64)}
        fields.pop("cti_scores")
        for k, (c, entry) in enumerate(zip(self.context_sensitive, fields["context_sensitive"])):
            tensors[f"cci.{k}"] = torch.tensor(c.input_context_scores, dtype=torch.float64)
            tensors[f"cci_output.{k}"] = torch.tensor(c.output_context_scores, dtype=torch.float64)
            entry.pop("input_context_scores")
            entry.pop("output_context_scores")
        return tensors, fields

    @classmethod
    def _from_record(
        cls, meta: Mapping[str, Any], tensors: Mapping[str, Tensor] | None
    ) -> PecoreResult:
        """The result from a saved file; ``tensors`` None: the JSON export (:meth:`to_dict`)."""
        if tensors is not None:  # put the score tensors back into the JSON export
            meta = {**meta, "cti_scores": tensors["cti_scores"].tolist()}
            meta["context_sensitive"] = [
                {
                    **c,
                    "input_context_scores": tensors[f"cci.{k}"].tolist(),
                    "output_context_scores": tensors[f"cci_output.{k}"].tolist(),
                }
                for k, c in enumerate(meta["context_sensitive"])
            ]
        return cls.from_dict(meta)

    def save(self, path: str | Path, *, overwrite: bool = False, format: str = "auto") -> Path:
        """Save to exactly ``path``; refuse to overwrite unless asked.

        Args:
            path: the file to write.
            overwrite: replace an existing file.
            format: ``"safetensors"`` (the file of every output, :mod:`hooklab.output.io`),
                ``"json"`` (the documented JSON export, :meth:`to_dict`), ``"inseq"`` (Inseq's
                ``attribute-context`` JSON, :meth:`to_inseq`; not loadable by hooklab) or
                ``"auto"``: JSON when ``path`` ends in ``.json``, else safetensors.
                :meth:`load` reads the first two.
        """
        return io.save_in_format(
            self, path, format, SAVE_FORMATS, overwrite=overwrite, exports={"inseq": self.to_inseq}
        )

    @classmethod
    def load(cls, path: str | Path) -> PecoreResult:
        """Load a result written by :meth:`save` (safetensors or the JSON export)."""
        return io.load(path, cls.kind)

    # ---- table -------------------------------------------------------------------------------
    def to_pandas(self) -> pd.DataFrame:
        """Return a tidy table: CTI rows (one per output token), then CCI rows (one per
        selected token x context token, the input context's, then the output context's).

        Columns: ``kind`` (``"cti"`` or ``"cci"``), ``output_pos`` and ``output_token`` (index
        into ``output_current_tokens`` and the token), ``context`` (CCI rows: ``"input"`` or
        ``"output"``, the context the token is from; missing on CTI rows), ``context_pos`` and
        ``context_token`` (index into that context's tokens; missing on CTI rows), ``score``
        (the CTI score of the output token, or the CCI score of the context token for that
        output token) and ``selected`` (CTI rows: the token was selected as context-sensitive;
        CCI rows: the context token is a cue).
        """
        import pandas as pd

        selected = {c.index for c in self.context_sensitive}
        rows = [
            ("cti", i, tok, None, None, None, float(score), i in selected)
            for i, (tok, score) in enumerate(
                zip(self.output_current_tokens, self.cti_scores, strict=True)
            )
        ]
        for c in self.context_sensitive:
            for side in ("input", "output"):
                tokens = getattr(c, f"{side}_context_tokens")
                scores = getattr(c, f"{side}_context_scores")
                cues = {q.index for q in c.cues if q.side == side}
                rows += [
                    ("cci", c.index, c.token, side, j, tok, float(score), j in cues)
                    for j, (tok, score) in enumerate(zip(tokens, scores, strict=True))
                ]
        columns = ["kind", "output_pos", "output_token", "context", "context_pos"]
        frame = pd.DataFrame(rows, columns=[*columns, "context_token", "score", "selected"])
        frame["context_pos"] = frame["context_pos"].astype("Int64")
        return frame

    # ---- views ------------------------------------------------------------------------------
    @checked_options
    def to_text(self, *, color: bool | None = None) -> str:
        """Inseq-style text: targets as ``{token}(score)``, cues as ``[token](score)``.

        ``color`` None: colour tokens by score only on a terminal without ``NO_COLOR``.
        """
        from hooklab.pecore.render import to_text

        return to_text(self, color=color)

    def show(self, **kwargs: Any) -> None:
        """Print :meth:`to_text`."""
        print(self.to_text(**kwargs))

    def to_html(self) -> str:
        """Return HTML: output tokens coloured by CTI, context tokens by CCI, with legends."""
        from hooklab.pecore.render import to_html

        return to_html(self)

    def _repr_html_(self) -> str:
        return self.to_html()

    def plot(self, **kwargs: Any) -> Figure:
        """Return a matplotlib Figure: output tokens coloured by CTI, context by CCI."""
        from hooklab.pecore.render import plot

        return plot(self, **kwargs)


#: The formats :meth:`PecoreResult.save` writes.
SAVE_FORMATS = ("auto", "safetensors", "json", "inseq")

register_kind(
    "pecore",
    PecoreResult,
    what="a PECoRe result (hooklab.pecore.PecoreResult)",
    json_export=True,
)
