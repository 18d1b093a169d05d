"""An interactive PECoRe page (Gradio): ``hooklab demo`` or ``python scripts/demo.py``.

The page runs :func:`hooklab.pecore.pecore` on one loaded model (the embedded toy model by
default) and shows the context-sensitive output tokens, the cues of the selected one, the
figure, downloads, and the Python / command-line code that gives the same result.

- :mod:`hooklab.demo.settings`: the form's text fields ↔ texts and
  :class:`~hooklab.pecore.PecoreOptions` (pure, no Gradio);
- :mod:`hooklab.demo.code`: the "Show code" generator (pure, no Gradio);
- :mod:`hooklab.demo.views`: the HTML of the result panels (pure, no Gradio);
- :mod:`hooklab.demo.session`: what Run does: the shared model, one run at a time, the
  files of each run (no Gradio);
- :mod:`hooklab.demo.app`: the Gradio app (``pip install -e ".[demo]"``).
"""

from hooklab.demo.code import cli_code, python_code
from hooklab.demo.settings import FORM_FIELDS, Settings, default_form, settings_from_form

__all__ = [
    "FORM_FIELDS",
    "Settings",
    "build_app",
    "cli_code",
    "default_form",
    "launch",
    "python_code",
    "settings_from_form",
]


def build_app(*args, **kwargs):
    """:func:`hooklab.demo.app.build_app` (imports Gradio)."""
    from hooklab.demo.app import build_app

    return build_app(*args, **kwargs)


def launch(*args, **kwargs):
    """:func:`hooklab.demo.app.launch` (imports Gradio)."""
    from hooklab.demo.app import launch

    return launch(*args, **kwargs)
