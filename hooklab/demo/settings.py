"""The demo form: text fields ↔ PECoRe's texts and :class:`~hooklab.pecore.PecoreOptions`.

Every field of the page is a string (what a text box holds). :func:`settings_from_form` turns
them into the arguments of :func:`hooklab.pecore.pecore`: an empty optional output text is
None (generate); each option is read as :meth:`PecoreOptions.declared` declares it (a number
field such as a λ or a top-k is parsed as its declared type, ``""`` / ``"None"`` is None where
None is allowed, text that is not a number goes on unchanged); special tokens are
comma-separated; then ``PecoreOptions`` checks everything against the same declaration, so a
bad value raises the API's own error and the page shows that message.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hooklab.options import scalar_type
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


def from_field(hint: Any, text: str) -> Any:
    """The value a form field's ``text`` stands for, read as the option's declaration ``hint``
    says: None for ``""`` / ``"none"`` where None is valid, an int or a number where one is
    declared, else the text unchanged (so that :class:`PecoreOptions` names a bad one)."""
    kinds = typing.get_args(scalar_type(hint)) or (scalar_type(hint),)
    stripped = text.strip()
    if type(None) in kinds and stripped.lower() in ("", "none"):
        return None
    for kind in (int, float) if int in kinds or float in kinds else ():
        try:
            return kind(stripped)
        except ValueError:
            pass
    return text


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
    declared = PecoreOptions.declared()
    for name in OPTION_FIELDS:
        raw = values[name]
        if name == "special_tokens_to_keep":
            options[name] = tuple(t.strip() for t in str(raw).split(",") if t.strip())
        elif name == "output_template":
            options[name] = raw or None
        else:
            options[name] = from_field(declared[name].hint, str(raw))
    texts = {
        name: (values[name] or None) if name in _OPTIONAL_TEXTS else values[name]
        for name in TEXT_FIELDS
    }
    opts = model_defaults(model_name_or_path).replace(**options)
    return Settings(model_name_or_path, options=opts, **texts)
