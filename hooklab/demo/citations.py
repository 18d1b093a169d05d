"""The demo's citation view, without Gradio: the form ↔ :func:`hooklab.cite`, and its HTML.

The panel runs :func:`hooklab.cite` (MIRAGE citations) on a retrieval model of its own,
``toy-rag`` by default, loaded on the first run and shared read-only by every tab (one run at
a time). Its HTML is :meth:`hooklab.cite.CitationResult.to_html`: the numbered documents, the
question, the answer with ``[n]`` markers; hovering an answer token shows its scores over the
documents.
"""

from __future__ import annotations

import html
import threading
from typing import Any

from hooklab.cite import CitationResult, cite


def default_citation_form() -> dict[str, str]:
    """The toy-rag release example: question, documents (one a line), answer (empty:
    generated)."""
    from hooklab.toy_rag import RELEASE_EXAMPLE

    return {
        "question": RELEASE_EXAMPLE["question"],
        "documents": "\n".join(RELEASE_EXAMPLE["documents"]),
        "answer": "",
    }


def parse_documents(text: str) -> list[str]:
    """One document a line; blank lines are skipped (an empty form is an error of cite())."""
    if not isinstance(text, str):
        raise TypeError(f"documents must be text, one document a line; got {text!r}.")
    return [line.strip() for line in text.splitlines() if line.strip()]


class CiteRunner:
    """The retrieval model (loaded on first use) and the lock that serialises runs on it."""

    def __init__(self, model_name_or_path: str = "toy-rag", model=None, **load_kwargs: Any):
        self.model_name_or_path = model_name_or_path
        self._model, self._load_kwargs = model, load_kwargs
        self._lock = threading.Lock()

    @property
    def model(self):
        if self._model is None:
            import hooklab

            self._model = hooklab.load(self.model_name_or_path, **self._load_kwargs)
        return self._model

    def run(self, form: dict[str, str]) -> CitationResult:
        """:func:`hooklab.cite` on the form (raises its errors for bad input)."""
        answer = (form.get("answer") or "").strip() or None
        documents = parse_documents(form.get("documents", ""))
        with self._lock:
            return cite(self.model, form.get("question", ""), documents, answer=answer)


def citation_html(result: CitationResult) -> str:
    """The panel: the result's hover HTML and its text form's citation notes."""
    notes = [line.strip() for line in result.to_text().splitlines() if line.startswith("  ")]
    extra = "".join(f"<p class='hl-cite-note'>{html.escape(n)}</p>" for n in notes)
    return result.to_html() + extra
