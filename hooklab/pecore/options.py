"""PECoRe options (named as in Inseq's ``attribute-context``) and input formatting."""

from __future__ import annotations

import string
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Annotated, Any

from hooklab.methods import METHODS
from hooklab.options import Check, OptionSpec, PositiveInt, check_fields, declared_fields
from hooklab.registry import unknown_name_error
from hooklab.steps import CONTRASTIVE, STEP_FUNCTIONS

RELATIVE_CONTEXT_SALIENCY = "relative_context_saliency"
#: λ of a selection rule (|score| >= mean + λ·std): a finite number (None: top-k only).
Lambda = Annotated[float, Check()]


def cti_metrics() -> list[str]:
    """Valid CTI metrics: every contrastive step function, plus relative context saliency."""
    return [*sorted(CONTRASTIVE), RELATIVE_CONTEXT_SALIENCY]


# no_type_check: the declared fields are checked by check_fields in __post_init__, with the
# messages of hooklab.options; the test-time type checker would pre-empt them.
@typing.no_type_check
@dataclass(frozen=True)
class PecoreOptions:
    """Settings shared by the examples of a PECoRe run.

    Attributes:
        input_template: how context and current input combine (``{context}``, ``{current}``).
        output_template: how output context and current output combine; defaults to
            ``"{current}"``, or ``"{context} {current}"`` when an output context is given.
        contextless_input_current_text: template of the input without context (``{current}``).
        contextless_output_current_text: template of the output without context.
        decoder_input_output_separator: text between the input and the output.
        context_sensitivity_metric: the CTI metric (see :func:`cti_metrics`).
        context_sensitivity_std_threshold: λ of the CTI selection (None: no threshold).
        context_sensitivity_topk: keep at most k context-sensitive tokens (None: no limit).
        attribution_method: a registered attribution method for CCI.
        attributed_fn: the step function CCI attributes (default P(ŷ) − P(ỹ*)).
        attribution_std_threshold: λ of the cue selection.
        attribution_topk: keep at most k cues per target.
        special_tokens_to_keep: special tokens that may be selected (others never are).
        generation_kwargs: options of :func:`hooklab.generate` when the output is generated.
        attribution_kwargs: options of the attribution method.
        prepend_bos: prepend BOS to the contextual and contextless inputs (decoder-only
            models); None: where the model's own tokenizer adds it. Templates may hold chat
            markers such as ``<|im_start|>``: special tokens written in them stay single
            tokens.
    """

    input_template: str = "{context} {current}"
    output_template: str | None = None
    contextless_input_current_text: str = "{current}"
    contextless_output_current_text: str = "{current}"
    decoder_input_output_separator: str = " "
    context_sensitivity_metric: str = "kl_divergence"
    context_sensitivity_std_threshold: Lambda | None = 1.0
    context_sensitivity_topk: PositiveInt | None = None
    attribution_method: str = "saliency"
    attributed_fn: str = "contrast_prob_diff"
    attribution_std_threshold: Lambda | None = 1.0
    attribution_topk: PositiveInt | None = None
    special_tokens_to_keep: Sequence[str] = ()
    generation_kwargs: Mapping[str, Any] = field(default_factory=dict)
    attribution_kwargs: Mapping[str, Any] = field(default_factory=dict)
    prepend_bos: bool | None = None

    def __post_init__(self) -> None:
        check_fields(self)  # the declared scalars: types, ranges (hooklab.options)
        keep = self.special_tokens_to_keep
        if isinstance(keep, str) or not isinstance(keep, (list, tuple)):
            raise TypeError(
                f"special_tokens_to_keep must be a list of token strings, got {keep!r}; "
                "e.g. special_tokens_to_keep=['<|endoftext|>']."
            )
        object.__setattr__(self, "special_tokens_to_keep", tuple(keep))
        _placeholders(self.input_template, "input_template", required={"current"})
        _placeholders(
            self.contextless_input_current_text,
            "contextless_input_current_text",
            required={"current"},
            allowed={"current"},
        )
        _placeholders(
            self.contextless_output_current_text,
            "contextless_output_current_text",
            required={"current"},
            allowed={"current"},
        )
        if self.output_template is not None:
            _placeholders(self.output_template, "output_template", required={"current"})
        metric = self.context_sensitivity_metric
        if metric not in cti_metrics():
            raise unknown_name_error("context sensitivity metric", metric, cti_metrics())
        METHODS.get(self.attribution_method)
        STEP_FUNCTIONS.get(self.attributed_fn)
        bad = [t for t in self.special_tokens_to_keep if not isinstance(t, str) or not t]
        if bad:
            raise TypeError(
                f"special_tokens_to_keep must hold token strings such as '<|endoftext|>', "
                f"got {bad!r}."
            )

    def resolved(self) -> dict[str, Any]:
        """Every option with its value (defaults included), as recorded in each result."""
        return {k: getattr(self, k) for k in self.field_names()}

    @classmethod
    def declared(cls) -> dict[str, OptionSpec]:
        """Each option's declaration (annotation with its range, default, description): what
        the checks, the demo's form and the saved parameters read."""
        return declared_fields(cls)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def replace(self, **changes: Any) -> PecoreOptions:
        """Return a copy with some options changed (validated again)."""
        unknown = sorted(set(changes) - set(self.field_names()))
        if unknown:
            raise unknown_name_error("PECoRe option", unknown[0], self.field_names())
        return PecoreOptions(**{**self.resolved(), **changes})


def template_fields(template: object, name: str) -> set[str]:
    """The ``{placeholders}`` of the format string ``template`` (option ``name``); TypeError
    for a non-string, ValueError for a malformed template."""
    if not isinstance(template, str):
        raise TypeError(f"{name} must be a string, got {template!r}.")
    try:
        return {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as err:
        raise ValueError(f"{name} {template!r} is not a valid template: {err}.") from None


def _placeholders(
    template: str, name: str, *, required: set[str], allowed: set[str] | None = None
) -> set[str]:
    found = template_fields(template, name)
    allowed = allowed or {"context", "current"}
    if found - allowed:
        raise ValueError(
            f"{name} {template!r} uses unknown placeholders {sorted(found - allowed)}; "
            f"valid ones: {sorted(allowed)}."
        )
    missing = required - found
    if missing:
        raise ValueError(
            f"{name} {template!r} lacks {{{sorted(missing)[0]}}}; add it, e.g. "
            "'{context} {current}'."
        )
    return found


def fill(template: str, *, context: str | None, current: str) -> tuple[str, tuple[int, int] | None]:
    """Format ``template``; return the text and the character span of the context in it."""
    out, span = [], None
    for literal, name, _, _ in string.Formatter().parse(template):
        out.append(literal)
        if name == "current":
            out.append(current)
        elif name == "context":
            start = sum(map(len, out))
            out.append(context or "")
            span = (start, start + len(context or ""))
    return "".join(out), span


def check_texts(template: str, context: str | None, current: str | None, what: str) -> None:
    """Raise for a non-string or empty current text, or a context the template cannot hold."""
    for name, value in ((f"{what}_context_text", context), (f"{what}_current_text", current)):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{name} must be a string, got {type(value).__name__}: {value!r}.")
    if current is None or not str(current).strip():
        raise ValueError(f"{what}_current_text is empty ({current!r}); pass some text.")
    has_slot = "{context}" in template
    if context and not has_slot:
        raise ValueError(
            f"{what}_context_text is given but the {what} template {template!r} has no "
            "{context} placeholder; add it, e.g. '{context} {current}'."
        )
    if has_slot and not context and what == "input":
        raise ValueError(
            f"The {what} template {template!r} expects a context but input_context_text is "
            f"{context!r}; PECoRe needs a context to contrast with."
        )
