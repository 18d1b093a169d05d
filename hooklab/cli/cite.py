"""``cite``: answer attribution with citations (MIRAGE) on one question over documents."""

from __future__ import annotations

import json
from typing import Any

from hooklab.cli.args import UsageError
from hooklab.cli.checks import check_outputs


def cite(
    model_name_or_path: str = "toy-rag",
    question: str | None = None,
    documents: tuple[str, ...] | None = None,
    answer: str | None = None,
    save_path: str | None = None,
    inseq_path: str | None = None,
    overwrite: bool = False,
    device: str | None = None,
    **options: Any,
) -> None:
    """Cite the documents each answer sentence relies on (MIRAGE) and print the answer.

    With no option: the toy-rag example (four documents, a two-part question; the answer is
    generated), printed as the numbered documents, the question, and the answer with [n]
    markers after each sentence.

    Args:
        model_name_or_path: "toy-rag" (the embedded retrieval model), a checkpoint directory
            or a hub name.
        question: the question (default: the toy-rag example's).
        documents: the documents, e.g. "Anna lives in Rome.","Ben lives in Oslo." (default: the
            toy-rag example's).
        answer: the answer to attribute, forced; None generates it.
        save_path: write the CitationResult as JSON.
        inseq_path: write Inseq's attribute-context JSON of the underlying PECoRe run.
        overwrite: replace existing output files.
        device: "cpu", "cuda"...; default: CUDA when available.
    """
    from hooklab.cite import CiteOptions

    if (question is None) != (documents is None):
        raise UsageError("give --question and --documents together (or neither: the example).")
    check_outputs([save_path, inseq_path], overwrite)
    opts = CiteOptions(**options)  # checked before the model loads
    if question is None:
        from hooklab.toy_rag import RELEASE_EXAMPLE

        question, documents = RELEASE_EXAMPLE["question"], RELEASE_EXAMPLE["documents"]
    import hooklab

    model = hooklab.load(model_name_or_path, device=device)
    result = hooklab.cite(model, question, list(documents), answer=answer, options=opts)
    print(result.to_text())
    if save_path is not None:
        result.save(save_path, overwrite=overwrite)
    if inseq_path is not None:
        from hooklab.output.io import write_json

        write_json(inseq_path, json.loads(json.dumps(result.to_inseq())), overwrite=overwrite)
