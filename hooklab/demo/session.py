"""What one press of Run does, without Gradio: run PECoRe, write the files, make the code.

One model is loaded per server and shared read-only by every browser tab. PECoRe adds hooks
to it while it runs, so :class:`Runner` lets one run use it at a time; figures are drawn one
at a time too (matplotlib's state is process-wide). Each run returns its own :class:`Page`
and writes a fresh directory inside the runner's temporary workspace: nothing mutable is shared
between sessions. The workspace keeps the newest ``keep_runs`` runs and is removed when the
runner is closed or garbage-collected, or when the process exits.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hooklab.demo.code import cli_code, python_code
from hooklab.demo.settings import settings_from_form
from hooklab.pecore import PecoreResult, pecore

USER_ERRORS = (ValueError, TypeError, KeyError)
# matplotlib's state (rcParams, font caches) is process-wide: one figure is drawn at a time
_DRAWING = threading.Lock()


def error_message(err: Exception) -> str:
    """The one-line message the command line prints for ``err`` (a KeyError's text unquoted)."""
    return err.args[0] if isinstance(err, KeyError) and err.args else str(err)


class Runner:
    """The loaded model, shared read-only, and the lock that serialises runs on it."""

    def __init__(
        self,
        model_name_or_path: str = "toy",
        model=None,
        *,
        keep_runs: int = 50,
        **load_kwargs: Any,
    ) -> None:
        import hooklab

        if isinstance(keep_runs, bool) or not isinstance(keep_runs, int) or keep_runs < 1:
            raise ValueError(
                f"keep_runs must be a positive int (runs kept on disk), got {keep_runs!r}."
            )
        self.model_name_or_path = model_name_or_path
        self.model = model if model is not None else hooklab.load(model_name_or_path, **load_kwargs)
        self.keep_runs = keep_runs
        self._lock = threading.Lock()
        self._files = threading.Lock()
        self._workspace = tempfile.TemporaryDirectory(prefix="hooklab-demo-")
        self._runs: list[Path] = []

    @property
    def workspace(self) -> Path:
        """The directory that holds every run's files."""
        return Path(self._workspace.name)

    def new_directory(self) -> Path:
        """A fresh directory for one run's files; the oldest runs beyond ``keep_runs`` go."""
        with self._files:
            directory = Path(tempfile.mkdtemp(prefix="run-", dir=self.workspace))
            self._runs.append(directory)
            while len(self._runs) > self.keep_runs:
                shutil.rmtree(self._runs.pop(0), ignore_errors=True)
        return directory

    def close(self) -> None:
        """Remove the workspace and every run's files."""
        self._workspace.cleanup()

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
    """Run the form (what the Run button does) into a new directory of the runner's workspace."""
    result = runner.run(form)
    return render(result, runner.new_directory(), 0 if result.context_sensitive else None)


def show_code(model_name_or_path: str, form: dict[str, Any]) -> tuple[str, str, str]:
    """The Python, ``hooklab`` and ``scripts/pecore.py`` code of the form's settings."""
    try:
        settings = settings_from_form(model_name_or_path, form)
    except USER_ERRORS as err:
        note = f"# Not valid yet: {error_message(err)}\n"
        return note, note, note
    return python_code(settings), cli_code(settings), cli_code(settings, "script")
