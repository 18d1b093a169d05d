"""Embedded toy retrieval model: a tiny Llama that answers questions over a few documents."""

import pathlib

from hooklab.toy_rag.corpus import (
    CONTEXTLESS_TEMPLATE,
    DOCUMENT_SEPARATOR,
    DOCUMENT_TEMPLATE,
    INPUT_TEMPLATE,
    RELEASE_EXAMPLE,
    generate_eval_examples,
    join_documents,
)

TOY_RAG_DIR = pathlib.Path(__file__).parent / "model"
EVAL_EXAMPLES = pathlib.Path(__file__).parent / "eval_examples.jsonl"

__all__ = [
    "CONTEXTLESS_TEMPLATE",
    "DOCUMENT_SEPARATOR",
    "DOCUMENT_TEMPLATE",
    "EVAL_EXAMPLES",
    "INPUT_TEMPLATE",
    "RELEASE_EXAMPLE",
    "TOY_RAG_DIR",
    "generate_eval_examples",
    "join_documents",
]
