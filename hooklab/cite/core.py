"""Answer attribution with citations for retrieval-augmented generation.

MIRAGE (Qi, Sarti, Fernández, Bisazza, EMNLP 2024, "Model Internals-based Answer Attribution
for Trustworthy Retrieval-Augmented Generation"): PECoRe's CTI finds the answer tokens whose
prediction changes when the documents are removed, its CCI attributes each of them to the
document tokens, and each answer sentence cites the documents that hold the most filtered CCI
mass (:mod:`hooklab.cite.aggregate`). The PECoRe run is :func:`hooklab.pecore.pecore`'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from hooklab.cite.aggregate import (
    filter_scores,
    owners,
    rank_documents,
    split_sentences,
    token_spans,
)
from hooklab.cite.options import CiteOptions
from hooklab.cite.result import CitationResult, SentenceCitation
from hooklab.inputs import context_window, encode_prompt, encode_target
from hooklab.pecore import PecoreOptions, PecoreResult, pecore
from hooklab.pecore.select import selection_threshold


def join_documents(
    documents: Sequence[str], options: CiteOptions
) -> tuple[str, list[tuple[int, int]]]:
    """The documents joined into the context, and each formatted document's character span."""
    check_documents(documents, options.document_separator)
    parts, spans, at = [], [], 0
    for i, doc in enumerate(documents, 1):
        if parts:
            at += len(options.document_separator)
        text = options.document_template.format(i=i, text=doc)
        parts.append(text)
        spans.append((at, at + len(text)))
        at += len(text)
    return options.document_separator.join(parts), spans


def check_documents(documents: Sequence[str], separator: str) -> None:
    """Raise for no documents, a non-string or empty document, or one holding the separator."""
    if isinstance(documents, str) or not isinstance(documents, Sequence):
        raise TypeError(
            f"documents must be a list of strings, got {type(documents).__name__}: "
            f"{documents!r:.80}; pass e.g. ['Anna lives in Rome.', 'Ben lives in Oslo.']."
        )
    if not documents:
        raise ValueError("documents is empty ([]); cite() needs at least one document to cite.")
    for i, doc in enumerate(documents):
        if not isinstance(doc, str):
            raise TypeError(f"documents[{i}] must be a string, got {type(doc).__name__}: {doc!r}.")
        if not doc.strip():
            raise ValueError(f"documents[{i}] is empty ({doc!r}); remove it or give it some text.")
        if separator in doc:
            raise ValueError(
                f"documents[{i}] contains the document separator {separator!r} "
                f"({doc!r:.80}); the documents could not be told apart. Remove it from the "
                "document or pass another document_separator."
            )


def _check_length(model, context: str, question: str, answer: str | None, opts: CiteOptions):
    """Raise when the prompt plus the forced answer does not fit the model's window."""
    window = context_window(model)
    prompt = encode_prompt(model, opts.input_template.format(context=context, current=question))
    n_answer = 0 if answer is None else len(encode_target(model, " " + answer))
    if len(prompt) + max(n_answer, 1) > window:
        raise ValueError(
            f"The prompt ({len(prompt)} tokens: documents + question) and the answer "
            f"({n_answer} tokens: {answer!r:.60}) make {len(prompt) + n_answer} tokens, more "
            f"than the model's window of {window}. Pass fewer or shorter documents, or a "
            "shorter answer."
        )


def cite(
    model,
    question: str,
    documents: Sequence[str],
    *,
    answer: str | None = None,
    options: CiteOptions | None = None,
    **option_overrides,
) -> CitationResult:
    """Cite, for each sentence of the answer, the documents it relies on (MIRAGE).

    Args:
        model: a ``TransformerBridge`` from :func:`hooklab.load`.
        question: the question (``{current}`` of ``input_template``).
        documents: the retrieved documents, in order (cited as ``[1]``, ``[2]``...).
        answer: the answer to attribute; generated greedily when None.
        options: a :class:`CiteOptions`; ``**option_overrides`` change single fields.

    Returns:
        A :class:`CitationResult` holding the PECoRe run it was computed from.

    Example:
        >>> import hooklab
        >>> model = hooklab.load("toy-rag")
        >>> docs = ["Anna lives in Rome.", "Ben lives in Oslo.", "Clara lives in Paris."]
        >>> hooklab.cite(model, "Ben lives in?", docs).to_text(documents=False)
        'Answer: Ben lives in Oslo. [2][1]'
    """
    opts = (options or CiteOptions()).replace(**option_overrides)
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"question must be a non-empty string, got {question!r}.")
    if answer is not None and (not isinstance(answer, str) or not answer.strip()):
        raise ValueError(f"answer must be a non-empty string or None (generate), got {answer!r}.")
    context, _ = join_documents(documents, opts)
    _check_length(model, context, question, answer, opts)
    result = pecore(model, context, question, output_current_text=answer, options=opts.to_pecore())
    return cite_from_pecore(result, documents, opts, question=question)


def cite_from_pecore(
    result: PecoreResult,
    documents: Sequence[str],
    options: CiteOptions | None = None,
    *,
    question: str | None = None,
    **option_overrides,
) -> CitationResult:
    """Citations from a recorded PECoRe run, without a model (re-threshold offline).

    ``result`` must come from a run on ``documents`` joined with the options' template and
    separator. The CCI scores exist only for the tokens PECoRe selected: a calibrated
    ``cti_threshold`` can only be raised offline above the recorded selection (the run made
    with a calibrated threshold records CCI for every answer token).
    """
    opts = (options or CiteOptions()).replace(**option_overrides)
    context, regions = join_documents(documents, opts)
    if result.input_context != context:
        raise ValueError(
            "The PECoRe result's input context is not these documents joined with "
            f"document_template {opts.document_template!r} and separator "
            f"{opts.document_separator!r}: {result.input_context!r:.80} vs {context!r:.80}."
        )
    doc_of = owners(token_spans(result.input_context_tokens, context), regions)
    threshold = opts.cti_threshold if opts.cti_threshold is not None else result.cti_threshold
    selected = [
        c
        for c in result.context_sensitive
        if opts.cti_threshold is None or abs(c.score) >= threshold
    ]
    out_text = "".join(result.output_current_tokens)
    sentences = split_sentences(out_text)
    tok_spans = token_spans(result.output_current_tokens, out_text)
    tok_sentence = owners(tok_spans, sentences)
    n_docs = len(documents)
    mass = torch.zeros(len(sentences), n_docs, dtype=torch.float64)
    chosen: list[list[int]] = [[] for _ in sentences]
    for c in selected:
        s = tok_sentence[c.index]
        if s is None:
            continue
        chosen[s].append(c.index)
        kept = filter_scores(
            c.input_context_scores,
            top_p=opts.cci_top_p if opts.cci_filter == "top_p" else None,
            top_k=opts.cci_top_k if opts.cci_filter == "top_k" else None,
        )
        for j, d in enumerate(doc_of):
            if d is not None:
                mass[s, d] += kept[j]
    rows = tuple(
        SentenceCitation(
            text=out_text[a:b],
            start=a,
            end=b,
            tokens=tuple(i for i, t in enumerate(tok_sentence) if t == s),
            selected=tuple(chosen[s]),
            mass=tuple(mass[s].tolist()),
            citations=tuple(rank_documents(mass[s].tolist(), opts.max_citations)),
        )
        for s, (a, b) in enumerate(sentences)
    )
    return CitationResult(
        question=question if question is not None else result.input_current,
        documents=tuple(documents),
        answer=result.output_current,
        sentences=rows,
        document_of_token=tuple(doc_of),
        cti_threshold=threshold,
        pecore=result,
        parameters=opts.resolved(),
        model=result.model,
    )


_PIECE_MARKS = {"Ġ": " ", "▁": " ", "Ċ": "\n", "<0x0A>": "\n"}


def _piece_text(token: str) -> str:
    """A tokenizer piece as text (``"Ġhospital"`` -> ``" hospital"``), as Inseq writes them."""
    for mark, text in _PIECE_MARKS.items():
        token = token.replace(mark, text)
    return token


def cite_from_inseq(
    record: Mapping[str, Any],
    documents: Sequence[str],
    options: CiteOptions | None = None,
    *,
    question: str | None = None,
    **option_overrides,
) -> CitationResult:
    """Citations from a recorded Inseq ``attribute-context`` JSON (re-threshold offline).

    ``record`` is Inseq's ``AttributeContextOutput.to_dict()`` (or
    :meth:`~hooklab.pecore.PecoreResult.to_inseq`) of a run on ``documents`` joined with the
    options' template and separator. The CTI threshold is the calibrated ``cti_threshold``, or
    mean + k·std of the recorded CTI scores (all output tokens, as MIRAGE computes it); only
    the tokens with recorded CCI scores can be selected.
    """
    from hooklab.pecore.result import ContextSensitiveToken

    opts = (options or CiteOptions()).replace(**option_overrides)
    scores = [float(x) for x in record["cti_scores"]]
    if opts.cti_threshold is not None:
        threshold = float(opts.cti_threshold)
    else:
        threshold = selection_threshold(torch.tensor(scores), opts.cti_std_threshold)
    context_tokens = tuple(_piece_text(t) for t in record["input_context_tokens"])
    output_tokens = tuple(_piece_text(t) for t in record["output_current_tokens"])
    entries = tuple(
        ContextSensitiveToken(
            index=c["cti_idx"],
            token=output_tokens[c["cti_idx"]],
            score=float(c["cti_score"]),
            contextless_token=c.get("contrast_token") or "",
            input_context_tokens=context_tokens,
            input_context_scores=tuple(float(x) for x in c["input_context_scores"]),
            cues=(),
        )
        for c in record["cci_scores"]
        if threshold is None or abs(float(c["cti_score"])) >= threshold
    )
    info = record.get("info") or {}
    result = PecoreResult(
        input_context=record["input_context"],
        input_current=question or info.get("input_current_text") or "",
        output_current=record.get("output_current") or "".join(output_tokens),
        input_context_tokens=context_tokens,
        output_current_tokens=output_tokens,
        cti_metric=info.get("context_sensitivity_metric") or opts.cti_metric,
        cti_scores=tuple(scores),
        cti_threshold=threshold,
        context_sensitive=entries,
        cci_method=info.get("attribution_method") or opts.attribution_method,
        cci_attributed_fn=info.get("attributed_fn") or opts.attributed_fn,
        parameters={k: v for k, v in info.items() if k in PecoreOptions.field_names()},
        model={"name_or_path": info.get("model_name_or_path")},
    )
    return cite_from_pecore(result, documents, opts.replace(cti_threshold=None), question=question)
