"""The demo form: text fields ↔ PECoRe's texts and :class:`~hooklab.pecore.PecoreOptions`.

Every field of the page is a string (what a text box holds). :func:`settings_from_form` turns
them into the arguments of :func:`hooklab.pecore.pecore`: an empty optional output text is
None (generate), a λ or top-k of ``""`` / ``"None"`` is None, numbers are parsed (text that is
not a number raises the message ``PecoreOptions`` gives for it), special tokens are
comma-separated, and everything else goes to ``PecoreOptions`` unchanged, so a bad value
raises the API's own error and the page shows that message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hooklab.pecore import PecoreOptions
from hooklab.pecore.dataset import TEXT_KEYS
from hooklab.pecore.examples import release_example

TEXT_FIELDS = TEXT_KEYS  # the four texts of an example, as in the dataset mode
#: the PECoRe options shown on the page (the others keep the model's defaults)
OPTION_FIELDS = (
    "context_sensitivity_metric",
    "context_sensitivity_std_threshold",
    "context_sensitivity_topk",
    "attribution_method",
    "attributed_fn",
    "attribution_std_threshold",
    "attribution_topk",
    "input_template",
    "output_template",
    "contextless_input_current_text",
    "contextless_output_current_text",
    "decoder_input_output_separator",
    "special_tokens_to_keep",
)
FORM_FIELDS = TEXT_FIELDS + OPTION_FIELDS
_OPTIONAL_TEXTS = ("output_context_text", "output_current_text")
_NUMBERS = ("context_sensitivity_std_threshold", "attribution_std_threshold")
_COUNTS = ("context_sensitivity_topk", "attribution_topk")


@dataclass(frozen=True)
class Settings:
    """One PECoRe call: the model, the texts and the (validated) options."""

    model_name_or_path: str
    input_context_text: str
    input_current_text: str
    output_context_text: str | None
    output_current_text: str | None
    options: PecoreOptions

    def texts(self) -> dict[str, str | None]:
        """The text arguments of :func:`hooklab.pecore.pecore`, by name."""
        return {name: getattr(self, name) for name in TEXT_FIELDS}


def model_defaults(model_name_or_path: str) -> PecoreOptions:
    """The options ``hooklab attribute-context`` uses for this model when none is given."""
    return PecoreOptions().replace(**release_example(model_name_or_path)["options"])


def default_form(model_name_or_path: str) -> dict[str, str]:
    """The form filled with the model's release example and default options."""
    example = release_example(model_name_or_path)
    options = model_defaults(model_name_or_path).resolved()
    form = {name: example.get(name) for name in TEXT_FIELDS}
    form.update({name: options[name] for name in OPTION_FIELDS})
    return {name: to_field(value) for name, value in form.items()}


def to_field(value: Any) -> str:
    """The text a form field shows for an option value (None: empty)."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(value)
    return str(value)


def _parse_number(name: str, text: str, integer: bool) -> Any:
    """``""`` / ``"none"`` → None, else an int (top-k) or a float (λ); other text raises the
    error :class:`PecoreOptions` gives for that value."""
    stripped = text.strip()
    if stripped.lower() in ("", "none"):
        return None
    try:
        return int(stripped) if integer else float(stripped)
    except ValueError:
        if integer:
            raise ValueError(f"{name} must be a positive int or None, got {text!r}.") from None
        raise TypeError(f"{name} must be a number or None, got {text!r}.") from None


def settings_from_form(model_name_or_path: str, form: Mapping[str, Any]) -> Settings:
    """Parse the form's fields (missing ones: the model's defaults) into :class:`Settings`.

    Raises:
        KeyError: a field name that is not in :data:`FORM_FIELDS`.
        ValueError, TypeError, KeyError: an invalid option, with the API's message.
    """
    unknown = sorted(set(form) - set(FORM_FIELDS))
    if unknown:
        raise KeyError(f"Unknown form fields {unknown}; valid ones: {list(FORM_FIELDS)}.")
    values = {**default_form(model_name_or_path), **form}
    values = {k: "" if v is None else v for k, v in values.items()}
    options: dict[str, Any] = {}
    for name in OPTION_FIELDS:
        raw = values[name]
        if name in _NUMBERS or name in _COUNTS:
            options[name] = _parse_number(name, str(raw), integer=name in _COUNTS)
        elif name == "special_tokens_to_keep":
            options[name] = tuple(t.strip() for t in str(raw).split(",") if t.strip())
        elif name == "output_template":
            options[name] = raw or None
        else:
            options[name] = raw
    texts = {
        name: (values[name] or None) if name in _OPTIONAL_TEXTS else values[name]
        for name in TEXT_FIELDS
    }
    opts = model_defaults(model_name_or_path).replace(**options)
    return Settings(model_name_or_path, options=opts, **texts)
