"""Embedded toy translation model: a tiny Marian trained on a parallel corpus with known context
dependencies (pronoun gender, word sense, formality), for PECoRe on machine translation."""

import pathlib

from hooklab.toy_mt.corpus import (
    BRK,
    FAMILIES,
    RELEASE_EXAMPLE,
    generate_eval_examples,
    generate_pairs,
    ground_truth,
    pair_texts,
    write_eval_examples,
    write_ground_truth,
)

TOY_MT_DIR = pathlib.Path(__file__).parent / "model"
GROUND_TRUTH = pathlib.Path(__file__).parent / "ground_truth.json"
EVAL_EXAMPLES = pathlib.Path(__file__).parent / "eval_examples.jsonl"

__all__ = [
    "BRK",
    "EVAL_EXAMPLES",
    "FAMILIES",
    "GROUND_TRUTH",
    "RELEASE_EXAMPLE",
    "TOY_MT_DIR",
    "generate_eval_examples",
    "generate_pairs",
    "ground_truth",
    "pair_texts",
    "write_eval_examples",
    "write_ground_truth",
]
