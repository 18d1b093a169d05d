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
with the CTI and CCI scores as float64 tensors.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from hooklab.output.io import FORMAT_VERSION
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
        from hooklab.output.io import header

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

    def to_pandas(self) -> pd.DataFrame:
        """Return a tidy table: one CTI row per output token, one CCI row per (selected
        token, context token).

        Columns ``kind, output_pos, output_token, context_pos, context_token, score,
        selected``; see :func:`hooklab.output.tidy.pecore_frame`.
        """
        from hooklab.output.tidy import pecore_frame

        return pecore_frame(self)

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Save to exactly ``path``; refuse to overwrite unless asked.

        The format is the safetensors file of every output (:mod:`hooklab.output.io`), or
        the documented JSON export (:meth:`to_dict`) when ``path`` ends in ``.json``;
        :meth:`load` reads both.
        """
        from hooklab.output import io

        if Path(path).suffix.lower() == ".json":
            return io.write_json(path, self.to_dict(), overwrite=overwrite)
        return io.save(self, path, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path) -> PecoreResult:
        """Load a result written by :meth:`save` (either format)."""
        from hooklab.output.io import load

        return load(path, cls.kind)

    # ---- views ------------------------------------------------------------------------------
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
