"""The Gradio app: a form, a Run button, the result panels, downloads and "Show code".

One model is loaded per server and shared read-only by every browser tab. PECoRe adds hooks
to it while it runs, so :class:`Runner` lets one run use it at a time (a second tab waits,
with a progress message); figures are drawn one at a time too (matplotlib's state is
process-wide). Results live in each tab's ``gr.State`` and in a fresh temporary directory
per run: nothing mutable is shared between sessions.
"""

from __future__ import annotations

import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # nothing may need the network

import gradio as gr

from hooklab.demo.code import cli_code, python_code
from hooklab.demo.settings import FORM_FIELDS, default_form, settings_from_form
from hooklab.demo.views import CSS, cues_html, error_html, output_html, target_choices
from hooklab.pecore import PecoreResult, cti_metrics, pecore

USER_ERRORS = (ValueError, TypeError, KeyError)
# matplotlib's state (rcParams, font caches) is process-wide: one figure is drawn at a time
_DRAWING = threading.Lock()


def error_message(err: Exception) -> str:
    """The one-line message the command line prints for ``err`` (a KeyError's text unquoted)."""
    return err.args[0] if isinstance(err, KeyError) and err.args else str(err)


class Runner:
    """The loaded model, shared read-only, and the lock that serialises runs on it."""

    def __init__(self, model_name_or_path: str = "toy", model=None, **load_kwargs: Any) -> None:
        import hooklab

        self.model_name_or_path = model_name_or_path
        self.model = model if model is not None else hooklab.load(model_name_or_path, **load_kwargs)
        self._lock = threading.Lock()

    def busy(self) -> bool:
        return self._lock.locked()

    def run(self, form: dict[str, Any]) -> PecoreResult:
        """PECoRe on the form's settings (raises the API's errors for bad input)."""
        settings = settings_from_form(self.model_name_or_path, form)
        with self._lock:
            return pecore(self.model, **settings.texts(), options=settings.options)


@dataclass(frozen=True)
class Page:
    """What one run shows: the result and the files written for it."""

    result: PecoreResult
    directory: Path
    target: int | None
    figure: Path | None
    files: tuple[Path, ...]


def render(result: PecoreResult, directory: Path, target: int | None) -> Page:
    """Write the JSON files and the figure (of ``target``'s cues) into ``directory``."""
    from hooklab.output.io import write_json
    from hooklab.output.style import save

    files = [
        write_json(directory / "pecore.json", result.to_dict(), overwrite=True),
        write_json(directory / "pecore_inseq.json", result.to_inseq(), overwrite=True),
    ]
    with _DRAWING:
        fig = result.plot(target=target or 0)
        png, pdf = save(fig, directory / f"pecore_target{target or 0}", formats=("png", "pdf"))
    return Page(result, directory, target, png, (*files, png, pdf))


def compute(runner: Runner, form: dict[str, Any]) -> Page:
    """Run the form (what the Run button does) into a new temporary directory."""
    result = runner.run(form)
    directory = Path(tempfile.mkdtemp(prefix="hooklab-demo-"))
    return render(result, directory, 0 if result.context_sensitive else None)


def show_code(model_name_or_path: str, form: dict[str, Any]) -> tuple[str, str, str]:
    """The Python, ``hooklab`` and ``scripts/pecore.py`` code of the form's settings."""
    try:
        settings = settings_from_form(model_name_or_path, form)
    except USER_ERRORS as err:
        note = f"# Not valid yet: {error_message(err)}\n"
        return note, note, note
    return python_code(settings), cli_code(settings), cli_code(settings, "script")


def _textbox(label: str, value: str, **kwargs: Any) -> gr.Textbox:
    return gr.Textbox(label=label, value=value, **kwargs)


def build_app(runner: Runner) -> gr.Blocks:
    """The page for ``runner``'s model (launch it with :func:`launch` or ``.launch()``)."""
    from hooklab.methods import METHODS
    from hooklab.steps import STEP_FUNCTIONS

    name = runner.model_name_or_path
    form = default_form(name)
    with gr.Blocks(title=f"hooklab PECoRe · {name}") as demo:
        gr.Markdown(
            f"## PECoRe context attribution · model `{name}`\n"
            "Which output tokens depend on the context (CTI), and which context tokens they "
            "rely on (CCI). Sarti et al., ICLR 2024. Edit the texts or options and press Run."
        )
        fields: dict[str, gr.components.Component] = {}
        with gr.Row():
            with gr.Column(scale=1):
                fields["input_context_text"] = _textbox("Input context", form["input_context_text"])
                fields["input_current_text"] = _textbox("Input current", form["input_current_text"])
                fields["output_context_text"] = _textbox(
                    "Output context (optional)", form["output_context_text"]
                )
                fields["output_current_text"] = _textbox(
                    "Output current (optional)", form["output_current_text"],
                    placeholder="empty: generated by the model",
                )  # fmt: skip
                with gr.Accordion("PECoRe options", open=False, elem_id="options"):
                    with gr.Row():
                        fields["context_sensitivity_metric"] = gr.Dropdown(
                            cti_metrics(), value=form["context_sensitivity_metric"],
                            label="CTI metric",
                        )  # fmt: skip
                        fields["context_sensitivity_std_threshold"] = _textbox(
                            "CTI λ (std threshold; None: off)",
                            form["context_sensitivity_std_threshold"],
                        )
                        fields["context_sensitivity_topk"] = _textbox(
                            "CTI top-k (None: all)", form["context_sensitivity_topk"]
                        )
                    with gr.Row():
                        fields["attribution_method"] = gr.Dropdown(
                            METHODS.names(), value=form["attribution_method"],
                            label="CCI attribution method",
                        )  # fmt: skip
                        fields["attributed_fn"] = gr.Dropdown(
                            STEP_FUNCTIONS.names(), value=form["attributed_fn"],
                            label="CCI attributed function",
                        )  # fmt: skip
                        fields["attribution_std_threshold"] = _textbox(
                            "CCI λ", form["attribution_std_threshold"]
                        )
                        fields["attribution_topk"] = _textbox("CCI top-k", form["attribution_topk"])
                    with gr.Row():
                        for key, label in (
                            ("input_template", "Input template"),
                            ("output_template", "Output template (empty: default)"),
                            ("contextless_input_current_text", "Contextless input"),
                            ("contextless_output_current_text", "Contextless output"),
                        ):
                            fields[key] = _textbox(label, form[key])
                    with gr.Row():
                        fields["decoder_input_output_separator"] = _textbox(
                            "Input/output separator", form["decoder_input_output_separator"]
                        )
                        fields["special_tokens_to_keep"] = _textbox(
                            "Special tokens to keep (comma-separated)",
                            form["special_tokens_to_keep"],
                        )
                with gr.Row():
                    run = gr.Button("Run", variant="primary", elem_id="run")
                    reset = gr.Button("Reset to the example", elem_id="reset")
            with gr.Column(scale=1):
                error = gr.HTML("", elem_id="error", visible=False)
                gr.Markdown("### Output (context-sensitive tokens and CTI scores)")
                output = gr.HTML("<p>Press Run.</p>", elem_id="output")
                target = gr.Radio([], label="Selected token: show its cues", elem_id="target")
                cues = gr.HTML("", elem_id="cues")
        with gr.Row():
            figure = gr.Image(label="Figure (CTI with threshold, CCI of the selected token)",
                              type="filepath", elem_id="figure", scale=2, interactive=False,
                              show_label=False)  # fmt: skip
            downloads = gr.File(label="Downloads (JSON, Inseq JSON, PNG, PDF)",
                                file_count="multiple", elem_id="downloads", scale=1,
                                interactive=False)  # fmt: skip
        code_values = show_code(name, form)
        with gr.Accordion("Show code", open=False, elem_id="show-code"):
            gr.Markdown("The same result from Python or the command line (current settings).")
            code_py = gr.Code(code_values[0], language="python", label="Python",
                              elem_id="code-python")  # fmt: skip
            code_cli = gr.Code(code_values[1], language="shell", label="hooklab",
                               elem_id="code-cli")  # fmt: skip
            code_script = gr.Code(code_values[2], language="shell", label="scripts/pecore.py",
                                  elem_id="code-script")  # fmt: skip
        state = gr.State(None)
        for key, component in fields.items():
            component.elem_id = f"field-{key}"  # for tests and custom CSS
        inputs = {fields[k] for k in FORM_FIELDS}  # a set: handlers get {component: value}
        names = {component: key for key, component in fields.items()}

        def on_code(values):
            return show_code(name, {names[c]: v for c, v in values.items()})

        # Gradio's idiom: it replaces this default with a tracker per request
        def on_run(values, progress=gr.Progress()):  # noqa: B008
            if runner.busy():
                progress(0.05, desc="Waiting: another tab is using the model")
            progress(0.2, desc="Running PECoRe (CTI, then CCI)")
            try:
                page = compute(runner, {names[c]: v for c, v in values.items()})
            except USER_ERRORS as err:
                return (gr.update(value=error_html(error_message(err)), visible=True),
                        "<p>No result: fix the input above.</p>", gr.update(choices=[], value=None),
                        "", None, None, None)  # fmt: skip
            progress(0.9, desc="Drawing")
            return _show(page, error=gr.update(value="", visible=False))

        def _show(page: Page, **extra):
            choices = target_choices(page.result)
            return (
                *extra.values(),
                output_html(page.result),
                gr.update(choices=choices, value=page.target),
                cues_html(page.result, page.target),
                str(page.figure),
                [str(f) for f in page.files],
                {"result": page.result.to_dict(), "directory": str(page.directory)},
            )

        def on_target(k, saved):
            if saved is None or k is None:
                return gr.skip(), gr.skip(), gr.skip()
            result = PecoreResult.from_dict(saved["result"])
            page = render(result, Path(saved["directory"]), int(k))
            return cues_html(result, page.target), str(page.figure), [str(f) for f in page.files]

        gr.on([c.change for c in inputs], on_code, inputs, [code_py, code_cli, code_script],
              queue=False, trigger_mode="always_last")  # fmt: skip
        run.click(on_run, inputs, [error, output, target, cues, figure, downloads, state])
        target.input(on_target, [target, state], [cues, figure, downloads])
        reset.click(lambda: [form[k] for k in FORM_FIELDS], None, [fields[k] for k in FORM_FIELDS],
                    queue=False)  # fmt: skip
    return demo


def launch(
    model_name_or_path: str = "toy",
    *,
    host: str = "127.0.0.1",
    port: int | None = 7860,
    share: bool = False,
    block: bool = True,
    model=None,
    **load_kwargs: Any,
) -> gr.Blocks:
    """Load the model, build the page and serve it on ``host:port`` (localhost by default).

    ``host="0.0.0.0"`` serves it to the network; ``share=True`` asks Gradio for a public link
    (this needs the internet). ``block=False`` returns at once (tests); ``demo.close()`` stops.
    """
    demo = build_app(Runner(model_name_or_path, model=model, **load_kwargs))
    demo.queue(default_concurrency_limit=2)
    demo.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=not block,
                css=CSS, theme=gr.themes.Default(), quiet=not block)  # fmt: skip
    return demo
