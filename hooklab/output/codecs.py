"""The codecs of the four output kinds: an output -> (tensors, its own metadata fields) and back.

Used by :mod:`hooklab.output.io`, which adds the common header (format version, hooklab
version, kind, model, parameters) and does the file handling. Each kind stores its tensors
exactly (float64 for PECoRe's scores) and the rest as JSON-friendly fields.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from hooklab.output.provenance import thaw, unthaw, unthaw_float

if TYPE_CHECKING:
    from hooklab.mixing.knockout_output import KnockoutOutput
    from hooklab.mixing.output import MixingOutput
    from hooklab.output.sequence import AttributionOutput
    from hooklab.pecore.result import PecoreResult


def _tuple(value: Any) -> Any:
    return None if value is None else tuple(value)


def _model(meta: dict[str, Any]) -> Any:
    return None if meta.get("model") is None else unthaw(meta["model"])


def _encode_attribution(out: AttributionOutput) -> tuple[dict[str, Tensor], dict[str, Any]]:
    tensors: dict[str, Tensor] = {}
    sequences = []
    for i, s in enumerate(out.sequences):
        tensors[f"{i}.token_ids"] = s.token_ids
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
        sequences.append(entry)
    return tensors, {"info": thaw(out.info), "sequences": sequences}


def _decode_attribution(meta: dict[str, Any], tensors: dict[str, Tensor]) -> AttributionOutput:
    from hooklab.output.sequence import AttributionOutput, SequenceAttribution

    sequences = [
        SequenceAttribution(
            tokens=tuple(s["tokens"]),
            token_ids=tensors[f"{i}.token_ids"],
            target_start=s["target_start"],
            attributions=tensors.get(f"{i}.attributions"),
            step_scores={n: tensors[f"{i}.step.{n}"] for n in s["step_scores"]},
            method=s["method"],
            parameters=unthaw(s["parameters"]),
            extras={n: tensors[f"{i}.extra.{n}"] for n in s["extras"]},
            source_tokens=_tuple(s.get("source_tokens")),
            source_token_ids=tensors.get(f"{i}.source_token_ids"),
            source_attributions=tensors.get(f"{i}.source_attributions"),
            special_tokens=tuple(s.get("special_tokens", ())),
        )
        for i, s in enumerate(meta["sequences"])
    ]
    return AttributionOutput(tuple(sequences), unthaw(meta["info"]), model=_model(meta))


def _floats(value: Any) -> Tensor:
    """A float32 tensor from nested lists (``"nan"`` / ``"inf"`` strings read back as floats)."""
    return torch.tensor(unthaw(value), dtype=torch.float32)


def attribution_from_dict(data: dict[str, Any]) -> AttributionOutput:
    """Rebuild an :class:`AttributionOutput` from its ``to_dict()`` form (exact: the scores
    are float32, whose values JSON numbers hold exactly). Other keys (``line``, ``id``) are
    ignored."""
    from hooklab.output.io import FORMAT_VERSION

    version, kind = data.get("format_version"), data.get("kind")
    if version != FORMAT_VERSION or kind != "attribution":
        raise ValueError(
            f"Expected an attribution output's to_dict() (format version {FORMAT_VERSION}, kind "
            f"'attribution'); got format version {version!r}, kind {kind!r}."
        )
    tensors: dict[str, Tensor] = {}
    sequences = []
    for i, s in enumerate(data["sequences"]):
        tensors[f"{i}.token_ids"] = torch.tensor(s["token_ids"], dtype=torch.long)
        if s.get("attributions") is not None:
            tensors[f"{i}.attributions"] = _floats(s["attributions"])
        tensors.update({f"{i}.step.{n}": _floats(v) for n, v in s["step_scores"].items()})
        tensors.update({f"{i}.extra.{n}": _floats(v) for n, v in s["extras"].items()})
        if s.get("source_tokens") is not None:
            tensors[f"{i}.source_token_ids"] = torch.tensor(s["source_token_ids"], dtype=torch.long)
            if s.get("source_attributions") is not None:
                tensors[f"{i}.source_attributions"] = _floats(s["source_attributions"])
        sequences.append({**s, "step_scores": list(s["step_scores"]), "extras": list(s["extras"])})
    return _decode_attribution({**data, "sequences": sequences}, tensors)


_MIXING_TENSORS = ("token_ids", "scores", "rollout", "key_token_ids")


def _encode_mixing(out: MixingOutput) -> tuple[dict[str, Tensor], dict[str, Any]]:
    tensors = {n: getattr(out, n) for n in _MIXING_TENSORS if getattr(out, n) is not None}
    fields = {
        "tokens": list(out.tokens),
        "layers": list(out.layers),
        "method": out.method,
        "target_start": out.target_start,
        "key_tokens": None if out.key_tokens is None else list(out.key_tokens),
        "causal": out.causal,
    }
    return tensors, fields


def _decode_mixing(meta: dict[str, Any], tensors: dict[str, Tensor]) -> MixingOutput:
    from hooklab.mixing.output import MixingOutput

    return MixingOutput(
        tokens=tuple(meta["tokens"]),
        layers=tuple(meta["layers"]),
        method=meta["method"],
        parameters=unthaw(meta["parameters"]),
        target_start=meta["target_start"],
        key_tokens=_tuple(meta["key_tokens"]),
        causal=meta["causal"],
        model=_model(meta),
        **{n: tensors.get(n) for n in _MIXING_TENSORS},
    )


def _encode_knockout(out: KnockoutOutput) -> tuple[dict[str, Tensor], dict[str, Any]]:
    tensors = {"token_ids": out.token_ids, "probabilities": out.probabilities}
    fields = {
        "tokens": list(out.tokens),
        "target_id": out.target_id,
        "target_token": out.target_token,
        "queries": list(out.queries),
        "sources": {k: list(v) for k, v in out.sources.items()},
        "windows": [list(w) for w in out.windows],
        "centres": None if out.centres is None else list(out.centres),
        "base_probability": thaw(out.base_probability),
        "key_tokens": None if out.key_tokens is None else list(out.key_tokens),
    }
    return tensors, fields


def _decode_knockout(meta: dict[str, Any], tensors: dict[str, Tensor]) -> KnockoutOutput:
    from hooklab.mixing.knockout_output import KnockoutOutput

    return KnockoutOutput(
        tokens=tuple(meta["tokens"]),
        token_ids=tensors["token_ids"],
        target_id=meta["target_id"],
        target_token=meta["target_token"],
        queries=tuple(meta["queries"]),
        sources={k: tuple(v) for k, v in meta["sources"].items()},
        windows=tuple(tuple(w) for w in meta["windows"]),
        centres=_tuple(meta["centres"]),
        base_probability=unthaw_float(meta["base_probability"]),
        probabilities=tensors["probabilities"],
        parameters=unthaw(meta["parameters"]),
        key_tokens=_tuple(meta["key_tokens"]),
        model=_model(meta),
    )


def _encode_pecore(out: PecoreResult) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """CTI and CCI scores as float64 tensors (exact); the rest as the JSON export."""
    fields = out.to_dict()
    tensors = {"cti_scores": torch.tensor(out.cti_scores, dtype=torch.float64)}
    fields.pop("cti_scores")
    for k, (c, entry) in enumerate(zip(out.context_sensitive, fields["context_sensitive"])):
        tensors[f"cci.{k}"] = torch.tensor(c.input_context_scores, dtype=torch.float64)
        tensors[f"cci_output.{k}"] = torch.tensor(c.output_context_scores, dtype=torch.float64)
        entry.pop("input_context_scores")
        entry.pop("output_context_scores")
    return tensors, fields


def _decode_pecore(meta: dict[str, Any], tensors: dict[str, Tensor] | None) -> PecoreResult:
    from hooklab.pecore.result import PecoreResult

    if tensors is not None:  # safetensors layout: put the score tensors back into the JSON export
        meta = {**meta, "cti_scores": tensors["cti_scores"].tolist()}
        meta["context_sensitive"] = [
            {
                **c,
                "input_context_scores": tensors[f"cci.{k}"].tolist(),
                "output_context_scores": tensors[f"cci_output.{k}"].tolist(),
            }
            for k, c in enumerate(meta["context_sensitive"])
        ]
    return PecoreResult.from_dict(meta)


def _routes():
    from hooklab.mixing.routes import RoutesOutput  # the kind owns its record

    return RoutesOutput


#: kind -> (encode, decode)
CODECS: dict[str, tuple[Callable, Callable]] = {
    "attribution": (_encode_attribution, _decode_attribution),
    "mixing": (_encode_mixing, _decode_mixing),
    "knockout": (_encode_knockout, _decode_knockout),
    "pecore": (_encode_pecore, _decode_pecore),
    "routes": (
        lambda out: out._record(),
        lambda meta, tensors: _routes()._from_record(meta, tensors),
    ),
}
