"""Options of :func:`hooklab.cite.cite`, declared and checked once."""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Annotated, Any

from hooklab.options import Check, Choice, PositiveInt, check_value
from hooklab.pecore.options import template_fields
from hooklab.registry import unknown_name_error
from hooklab.toy_rag.corpus import (
    CONTEXTLESS_TEMPLATE,
    DOCUMENT_SEPARATOR,
    DOCUMENT_TEMPLATE,
    INPUT_TEMPLATE,
)

CCI_FILTERS = ("top_p", "top_k")


@dataclass(frozen=True)
class CiteOptions:
    """How :func:`~hooklab.cite.cite` builds the prompt, selects and aggregates.

    Attributes:
        document_template: one document (``{text}``; ``{i}`` is its 1-based number).
        document_separator: text between documents; may not occur inside a document.
        input_template: the prompt (``{context}``: the joined documents; ``{current}``: the
            question); the answer follows after one space.
        contextless_input_template: the prompt without documents (``{current}``), CTI's contrast.
        cti_metric: the CTI metric (any of :func:`hooklab.pecore.cti_metrics`).
        cti_std_threshold: k of the per-answer rule mean + k·std (used when ``cti_threshold``
            is None).
        cti_threshold: a calibrated CTI threshold (scores >= it are selected); None: the k rule.
        attribution_method: the registered attribution method CCI uses.
        attributed_fn: the step function CCI attributes (MIRAGE: P(ŷ) − P(ỹ*)).
        cci_filter: ``"top_p"`` (scores within the top ``cci_top_p`` % of the range) or
            ``"top_k"`` (the ``cci_top_k`` largest).
        cci_top_p: p of the ``top_p`` filter, in percent (MIRAGE: 5).
        cci_top_k: k of the ``top_k`` filter.
        max_citations: cite at most this many documents per sentence (None: no limit).
        pecore_options: other :class:`~hooklab.pecore.PecoreOptions` fields (e.g.
            ``generation_kwargs``, ``attribution_kwargs``).
    """

    document_template: str = DOCUMENT_TEMPLATE
    document_separator: str = DOCUMENT_SEPARATOR
    input_template: str = INPUT_TEMPLATE
    contextless_input_template: str = CONTEXTLESS_TEMPLATE
    cti_metric: str = "kl_divergence"
    cti_std_threshold: Annotated[float, Check()] = 1.0
    cti_threshold: Annotated[float, Check()] | None = None
    attribution_method: str = "saliency"
    attributed_fn: str = "contrast_prob_diff"
    cci_filter: Annotated[str, Choice(*CCI_FILTERS)] = "top_p"
    cci_top_p: Annotated[float, Check(min=0, max=100)] = 5.0
    cci_top_k: PositiveInt = 3
    max_citations: PositiveInt | None = 3
    pecore_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _template(self.document_template, "document_template", {"text"}, {"text", "i"})
        _template(self.input_template, "input_template", {"context", "current"})
        _template(
            self.contextless_input_template, "contextless_input_template", {"current"}, {"current"}
        )
        if not isinstance(self.document_separator, str) or not self.document_separator:
            raise ValueError(
                f"document_separator must be a non-empty string, got "
                f"{self.document_separator!r}; e.g. '\\n'."
            )
        hints = typing.get_type_hints(CiteOptions, include_extras=True)
        for name in DECLARED:  # the range or the choices each declares
            check_value(name, getattr(self, name), hints[name])
        taken = {"input_template", "contextless_input_current_text", "context_sensitivity_metric"}
        clash = sorted(set(self.pecore_options) & (taken | {"attribution_method", "attributed_fn"}))
        if clash:
            raise ValueError(
                f"pecore_options sets {clash}, which CiteOptions owns; pass them as cite() "
                "options instead (input_template, contextless_input_template, cti_metric, "
                "attribution_method, attributed_fn)."
            )
        object.__setattr__(self, "pecore_options", dict(self.pecore_options))
        self.to_pecore()  # validates the metric, the method and the other PECoRe fields

    def to_pecore(self):
        """The :class:`~hooklab.pecore.PecoreOptions` of the underlying PECoRe run.

        With a calibrated ``cti_threshold``, PECoRe runs CCI on every answer token (no λ) and
        the threshold is applied afterwards; otherwise PECoRe selects with λ = k itself.
        """
        from hooklab.pecore import PecoreOptions

        return PecoreOptions(
            input_template=self.input_template,
            contextless_input_current_text=self.contextless_input_template,
            context_sensitivity_metric=self.cti_metric,
            context_sensitivity_std_threshold=(
                self.cti_std_threshold if self.cti_threshold is None else None
            ),
            attribution_method=self.attribution_method,
            attributed_fn=self.attributed_fn,
            **self.pecore_options,
        )

    def resolved(self) -> dict[str, Any]:
        """Every option with its value (defaults included), as recorded in each result."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def replace(self, **changes: Any) -> CiteOptions:
        """Return a copy with some options changed (validated again)."""
        names = [f.name for f in fields(self)]
        unknown = sorted(set(changes) - set(names))
        if unknown:
            raise unknown_name_error("cite option", unknown[0], names)
        return CiteOptions(**{**self.resolved(), **changes})


#: The options whose annotation declares their range or choices (:mod:`hooklab.options`).
DECLARED = (
    "cti_std_threshold",
    "cti_threshold",
    "cci_filter",
    "cci_top_p",
    "cci_top_k",
    "max_citations",
)


def _template(template: str, name: str, required: set[str], allowed: set[str] | None = None):
    found = template_fields(template, name)
    allowed = allowed or required
    if found - allowed or required - found:
        raise ValueError(
            f"{name} {template!r} must use the placeholders {sorted(required)} (allowed: "
            f"{sorted(allowed)}), found {sorted(found)}."
        )
