"""Embedded toy "context LM": a tiny GPT-2 trained on a corpus with known context dependencies."""

import pathlib

from hooklab.toy.corpus import (
    FAMILIES,
    RELEASE_EXAMPLE,
    document_text,
    generate_documents,
    generate_eval_examples,
    ground_truth,
    write_eval_examples,
    write_ground_truth,
)

TOY_DIR = pathlib.Path(__file__).parent / "model"
GROUND_TRUTH = pathlib.Path(__file__).parent / "ground_truth.json"
EVAL_EXAMPLES = pathlib.Path(__file__).parent / "eval_examples.jsonl"

__all__ = [
    "EVAL_EXAMPLES",
    "FAMILIES",
    "GROUND_TRUTH",
    "RELEASE_EXAMPLE",
    "TOY_DIR",
    "document_text",
    "generate_documents",
    "generate_eval_examples",
    "ground_truth",
    "write_eval_examples",
    "write_ground_truth",
]
