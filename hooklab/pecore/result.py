"""The result of one PECoRe run, its JSON schema, and its text / HTML / figure views.

JSON schema (``PecoreResult.to_dict``; ``format_version`` 1)::

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
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from hooklab.output.provenance import freeze, thaw

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Cue:
    index: int
    token: str
    score: float


@dataclass(frozen=True)
class ContextSensitiveToken:
    index: int
    token: str
    score: float
    contextless_token: str
    input_context_tokens: tuple[str, ...]
    input_context_scores: tuple[float, ...]
    cues: tuple[Cue, ...]


@dataclass(frozen=True)
class PecoreResult:
    """CTI scores of every output token and CCI cues of the context-sensitive ones."""

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
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["context_sensitive"] = [asdict(c) for c in self.context_sensitive]
        out["parameters"] = thaw(self.parameters)
        out["model"] = None if self.model is None else thaw(self.model)
        out["format_version"] = FORMAT_VERSION
        return _clean(out)

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, **kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PecoreResult:
        data = dict(data)
        version = data.pop("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ValueError(f"PECoRe result format {version!r} is not {FORMAT_VERSION}.")
        for extra in ("line", "error"):
            data.pop(extra, None)
        data["context_sensitive"] = tuple(
            ContextSensitiveToken(
                **{
                    **c,
                    "input_context_tokens": tuple(c["input_context_tokens"]),
                    "input_context_scores": tuple(_num(x) for x in c["input_context_scores"]),
                    "cues": tuple(Cue(**cue) for cue in c["cues"]),
                }
            )
            for c in data["context_sensitive"]
        )
        for key in ("input_context_tokens", "output_current_tokens"):
            data[key] = tuple(data[key])
        data["cti_scores"] = tuple(_num(x) for x in data["cti_scores"])
        return cls(**data)

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the JSON to ``path``; refuse to overwrite unless asked."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{str(path)!r} exists; pass overwrite=True to replace it.")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(self.to_json(indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> PecoreResult:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    # ---- views ------------------------------------------------------------------------------
    def to_text(self) -> str:
        """Inseq-style text: targets as ``{token}(score)``, cues as ``[token](score)``."""
        from hooklab.pecore.render import to_text

        return to_text(self)

    def show(self) -> None:
        print(self.to_text())

    def to_html(self) -> str:
        from hooklab.pecore.render import to_html

        return to_html(self)

    def _repr_html_(self) -> str:
        return self.to_html()

    def plot(self, **kwargs: Any):
        """Return a matplotlib Figure: output tokens coloured by CTI, context by CCI."""
        from hooklab.pecore.render import plot

        return plot(self, **kwargs)


def _num(x: Any) -> float:
    return math.nan if x is None else float(x)


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
