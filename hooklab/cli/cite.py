"""``cite``: answer attribution with citations (MIRAGE) on one question over documents."""

from __future__ import annotations

from pathlib import Path
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
    figure_path: str | None = None,
    html_path: str | None = None,
    overwrite: bool = False,
    device: str | None = None,
    dtype: str | None = None,
    input: str | None = None,
    output: str | None = None,
    show_progress: bool = True,
    restart: bool = False,
    **options: Any,
) -> None:
    """Cite the documents each answer sentence relies on (MIRAGE) and print the answer.

    With no option: the toy-rag example (four documents, a two-part question; the answer is
    generated), printed as the numbered documents, the question, and the answer with [n]
    markers after each sentence.

    With --input and --output (the dataset mode) each line of a JSONL file ({"question",
    "documents", optional "answer", "gold_documents", "id"}) gets one JSON record
    (hooklab/cite/dataset.py); a rerun resumes; the summary printed at the end holds the
    agreement, citation precision, recall and F1 of the annotated lines. Under torchrun each
    process runs every WORLD_SIZE-th line: ``torchrun --nproc_per_node 2 -m hooklab cite
    --input in.jsonl --output out.jsonl``.

    Args:
        model_name_or_path: "toy-rag" (the embedded retrieval model), a checkpoint directory
            or a hub name.
        question: the question (default: the toy-rag example's).
        documents: the documents, e.g. "Anna lives in Rome.","Ben lives in Oslo." (default: the
            toy-rag example's).
        answer: the answer to attribute, forced; None generates it.
        save_path: write the CitationResult as JSON.
        inseq_path: write Inseq's attribute-context JSON of the underlying PECoRe run.
        figure_path: write the figure (answer with citation markers over a heat strip of the
            selected tokens' filtered CCI mass per document) as PNG and PDF (suffix replaced).
        html_path: write the HTML view (hover an answer token for its document scores).
        overwrite: replace existing output files.
        device: "cpu", "cuda"...; default: CUDA when available (under torchrun
            cuda:LOCAL_RANK).
        dtype: torch dtype, e.g. "float32".
        input: dataset mode: the JSONL file, one example per line.
        output: dataset mode: the JSONL file written, one record per input line.
        show_progress: dataset mode: show a progress bar on stderr.
        restart: dataset mode: discard an existing output and start over (otherwise it is
            resumed; needed when the options or the model changed).
    """
    from hooklab.cite import CiteOptions

    if input is not None or output is not None:
        one = {"--question": question, "--documents": documents, "--answer": answer,
               "--save_path": save_path, "--inseq_path": inseq_path,
               "--figure_path": figure_path, "--html_path": html_path}  # fmt: skip
        return _dataset(
            model_name_or_path, input, output, device, dtype, show_progress, restart, one, options
        )
    if (question is None) != (documents is None):
        raise UsageError("give --question and --documents together (or neither: the example).")
    figures = [] if figure_path is None else [Path(figure_path).with_suffix(".png"),
                                              Path(figure_path).with_suffix(".pdf")]  # fmt: skip
    check_outputs([save_path, inseq_path, html_path, *figures], overwrite)
    opts = CiteOptions(**options)  # checked before the model loads
    if question is None:
        from hooklab.toy_rag import RELEASE_EXAMPLE

        question, documents = RELEASE_EXAMPLE["question"], RELEASE_EXAMPLE["documents"]
    import hooklab

    model = hooklab.load(model_name_or_path, device=device, dtype=dtype)
    result = hooklab.cite(model, question, list(documents), answer=answer, options=opts)
    print(result.to_text())
    if save_path is not None:
        result.save(save_path, overwrite=overwrite)
    if inseq_path is not None:  # the PECoRe run's Inseq export (its one save rule)
        result.pecore.save(inseq_path, format="inseq", overwrite=overwrite)
    if html_path is not None:
        from hooklab.output.files import atomic_write

        page = f"<!doctype html><meta charset='utf-8'><body>{result.to_html()}</body>"
        atomic_write(html_path, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"),
                     overwrite=True)  # fmt: skip
    if figure_path is not None:
        from hooklab.output.style import save

        save(result.plot(), figure_path)


def _dataset(
    model_name_or_path, input, output, device, dtype, show_progress, restart, one, options
):
    """``hooklab cite --input X.jsonl --output Y.jsonl`` (:mod:`hooklab.cite.dataset`)."""
    from hooklab.cite import CiteOptions
    from hooklab.cite.dataset import run_dataset
    from hooklab.cli.datasets import check_dataset_flags, log, run_on_ranks

    check_dataset_flags(input, output, 1, one_example=one)
    opts = CiteOptions(**options)  # checked before the model loads

    def run(model, rank: int, world_size: int) -> dict[str, Any]:
        return run_dataset(
            model, input, output, show_progress=show_progress and rank == 0, restart=restart,
            log=log, rank=rank, world_size=world_size, options=opts,
        )  # fmt: skip

    run_on_ranks(model_name_or_path, device, dtype, run)
