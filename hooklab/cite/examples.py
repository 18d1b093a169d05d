"""Annotated citation examples: the JSONL schema, checked once for every reader.

One JSON object per line (``hooklab/toy_rag/eval_examples.jsonl`` is one such file)::

    question          the question (non-empty string)
    documents         the retrieved documents (non-empty list of non-empty strings)
    answer            the answer to attribute (non-empty string; optional in the dataset mode,
                      where a missing answer is generated)
    gold_documents    per answer sentence (:func:`hooklab.cite.split_sentences`), the 0-based
                      ids of the documents that support it, e.g. ``[[1], [0, 2]]``
    answer_sentences, kind, id: optional, kept as they are

:func:`check_example` returns what is wrong with one example, naming the field and the value;
:func:`read_examples` reads a file and raises for the first bad line.
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hooklab.cite.aggregate import split_sentences
from hooklab.jsonl_runs import parse_lines

#: the keys an annotated example may hold
KEYS = ("question", "documents", "answer", "gold_documents", "answer_sentences", "kind")


def check_gold(gold: Any, n_documents: int, answer: str | None) -> str | None:
    """What is wrong with ``gold_documents`` (one list of ids per answer sentence), or None."""
    if not isinstance(gold, list) or not all(isinstance(g, list) for g in gold):
        return (
            "'gold_documents' must be a list with one list of document ids per answer "
            f"sentence, e.g. [[1], [0, 2]], got {reprlib.repr(gold)}"
        )
    for s, ids in enumerate(gold):
        for d in ids:
            if isinstance(d, bool) or not isinstance(d, int) or not 0 <= d < n_documents:
                return (
                    f"gold_documents[{s}] holds the document id {d!r}, out of range: ids are "
                    f"0-based, 0..{n_documents - 1} for {n_documents} documents"
                )
    if answer is not None:
        n = len(split_sentences(answer))
        if n != len(gold):
            return (
                f"the answer {reprlib.repr(answer)} has {n} sentences but 'gold_documents' has "
                f"{len(gold)} entries ({reprlib.repr(gold)}); give one list per sentence"
            )
    return None


def check_example(
    ex: Mapping[str, Any], *, need_answer: bool = True, need_gold: bool = True
) -> str | None:
    """What is wrong with an annotated example (naming the field and value), or None."""
    for key in (
        ("question", "documents") + ("answer",) * need_answer + ("gold_documents",) * need_gold
    ):
        if key not in ex:
            return f"missing {key!r} (an example needs {', '.join(KEYS[:4])})"
    question, docs, answer = ex["question"], ex["documents"], ex.get("answer")
    if not isinstance(question, str) or not question.strip():
        return f"'question' must be a non-empty string, got {reprlib.repr(question)}"
    if not isinstance(docs, list) or not docs:
        return f"'documents' must be a non-empty list of strings, got {reprlib.repr(docs)}"
    for i, d in enumerate(docs):
        if not isinstance(d, str) or not d.strip():
            return f"documents[{i}] must be a non-empty string, got {reprlib.repr(d)}"
    if answer is not None and (not isinstance(answer, str) or not answer.strip()):
        return f"'answer' must be a non-empty string, got {reprlib.repr(answer)}"
    if ex.get("gold_documents") is not None:
        if answer is None:
            return "'gold_documents' needs a forced 'answer' (its sentences are what is annotated)"
        return check_gold(ex["gold_documents"], len(docs), answer)
    return None


def check_examples(examples: Sequence[Mapping[str, Any]]) -> None:
    """ValueError naming the first bad example (``examples[i]: ...``): all are checked before
    any model runs."""
    for i, ex in enumerate(examples):
        problem = check_example(ex)
        if problem:
            raise ValueError(f"examples[{i}]: {problem}.")


def read_examples(path: str | Path) -> list[dict[str, Any]]:
    """The annotated examples of a JSONL file; ValueError names the first bad line and field."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No examples file {str(path)!r}; pass a JSONL file.")
    out = []
    for _, ex, error in parse_lines(path, KEYS, check_example):  # the dataset engine's parser
        if error:
            raise ValueError(f"{path}: {error}.")
        out.append(ex)
    if not out:
        raise ValueError(f"{path}: no examples (the file is empty); give one JSON object a line.")
    return out
