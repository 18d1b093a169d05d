"""Export a :class:`~hooklab.pecore.result.PecoreResult` as Inseq's ``attribute-context`` JSON.

Analysis code written for Inseq (``AttributeContextOutput.from_dict`` / ``to_dict``, Inseq
0.6–0.7) reads what :func:`to_inseq` returns. The mapping between the two schemas:

==========================  =================================================================
Inseq field                 hooklab source
==========================  =================================================================
input_context               ``input_context``
input_context_tokens        ``input_context_tokens``
output_context              ``output_context`` (None without an output context)
output_context_tokens       ``output_context_tokens`` (None without an output context)
output_current              ``output_current``
output_current_tokens       ``output_current_tokens``
cti_scores                  ``cti_scores``
cci_scores[k].cti_idx       ``context_sensitive[k].index``
cci_scores[k].cti_token     ``context_sensitive[k].token``
cci_scores[k].cti_score     ``context_sensitive[k].score``
  .contextual_output        output context (with its joiner) + current output up to the token
  .contrast_token           ``contextless_token`` when ``attributed_fn`` is contrastive, else None
  .contextless_output       contextless output prefix + ``contextless_token`` (None likewise)
  .input_context_scores     ``input_context_scores`` (None without an input context)
  .output_context_scores    ``output_context_scores`` (None without an output context)
info                        the options under Inseq's argument names (``parameters``), plus
                            ``model_name_or_path`` from ``model``
==========================  =================================================================

Differences to know: tokens are the decoded text of each token (``" hospital"``), where Inseq
writes the tokenizer's pieces (``"Ġhospital"``); scores align one to one either way. The
selection threshold of hooklab uses the population standard deviation of the scores, Inseq's
the unbiased one, so with few tokens Inseq's threshold is slightly higher. Cues are not part of
Inseq's schema (Inseq selects them when it visualises); hooklab's selected cues stay in
:meth:`PecoreResult.to_dict`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hooklab.steps import CONTRASTIVE

if TYPE_CHECKING:
    from hooklab.pecore.result import ContextSensitiveToken, PecoreResult

#: hooklab option -> Inseq ``AttributeContextArgs`` field (the same name in every case).
INSEQ_ARGUMENTS = (
    "input_template",
    "output_template",
    "contextless_input_current_text",
    "contextless_output_current_text",
    "decoder_input_output_separator",
    "context_sensitivity_metric",
    "context_sensitivity_std_threshold",
    "context_sensitivity_topk",
    "attribution_method",
    "attributed_fn",
    "attribution_std_threshold",
    "attribution_topk",
    "special_tokens_to_keep",
    "generation_kwargs",
    "attribution_kwargs",
)


def _output_context_prefix(result: PecoreResult) -> str:
    """The output text before the current output: the output context and its joiner."""
    if result.output_context is None:
        return ""
    template = result.parameters.get("output_template") or "{context} {current}"
    head = template.split("{current}")[0].rstrip()  # the lead space is the current tokens'
    return head.replace("{context}", result.output_context)


def _cci_entry(result: PecoreResult, c: ContextSensitiveToken) -> dict[str, Any]:
    prefix = "".join(result.output_current_tokens[: c.index])
    contextual = (_output_context_prefix(result) + prefix + c.token).lstrip(" ")
    contrastive = result.cci_attributed_fn in CONTRASTIVE
    return {
        "cti_idx": c.index,
        "cti_token": c.token,
        "cti_score": c.score,
        "contextual_output": contextual,
        "contrast_token": c.contextless_token if contrastive else None,
        "contextless_output": (prefix + c.contextless_token).lstrip(" ") if contrastive else None,
        "input_context_scores": list(c.input_context_scores) if c.input_context_tokens else None,
        "output_context_scores": (
            list(c.output_context_scores) if result.output_context is not None else None
        ),
    }


def to_inseq(result: PecoreResult) -> dict[str, Any]:
    """Return ``result`` as Inseq's ``AttributeContextOutput.to_dict()`` (see the module doc)."""
    has_output_context = result.output_context is not None
    info = {name: result.parameters.get(name) for name in INSEQ_ARGUMENTS}
    info.update(
        model_name_or_path=None if result.model is None else result.model.get("name_or_path"),
        input_context_text=result.input_context,
        input_current_text=result.input_current,
        output_context_text=result.output_context,
        output_current_text=result.output_current,
    )
    if info["output_template"] is None:  # Inseq fills its default in the same way
        info["output_template"] = "{context} {current}" if has_output_context else "{current}"
    out = {
        "input_context": result.input_context,
        "input_context_tokens": list(result.input_context_tokens),
        "output_context": result.output_context,
        "output_context_tokens": (
            list(result.output_context_tokens) if has_output_context else None
        ),
        "output_current": result.output_current,
        "output_current_tokens": list(result.output_current_tokens),
        "cti_scores": list(result.cti_scores),
        "cci_scores": [_cci_entry(result, c) for c in result.context_sensitive],
        "info": info,
    }
    return _plain(out)


def _plain(value: Any) -> Any:
    """Plain dicts and lists (NaN stays a float, as Inseq's ``json.dump`` writes it)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
