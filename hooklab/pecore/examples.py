"""The embedded models' PECoRe examples: the release example and gold-annotated datasets.

``"toy"`` (the context LM) and ``"toy-mt"`` (the context translation model) ship eval examples
with ground truth (:mod:`hooklab.toy`, :mod:`hooklab.toy_mt`). The translation model reads
``"{context} <brk> {current}"`` on both sides (the format it was trained on, as PECoRe's MT
setting in Inseq); its output context is the reference translation of the input context,
forced on the decoder, and the current output is generated.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TOY, TOY_MT = "toy", "toy-mt"
_MT_TEMPLATE = "{context} <brk> {current}"
#: PECoRe options each embedded model needs (the others keep their defaults).
OPTIONS: dict[str, dict[str, Any]] = {
    TOY: {},
    TOY_MT: {"input_template": _MT_TEMPLATE, "output_template": _MT_TEMPLATE},
}


def eval_examples(model_name: str) -> list[dict[str, Any]]:
    """The eval examples shipped with embedded model ``"toy"`` or ``"toy-mt"``."""
    if model_name == TOY:
        from hooklab.toy import EVAL_EXAMPLES
    elif model_name == TOY_MT:
        from hooklab.toy_mt import EVAL_EXAMPLES
    else:
        raise ValueError(f"No embedded examples for {model_name!r}; choose 'toy' or 'toy-mt'.")
    lines = Path(EVAL_EXAMPLES).read_text(encoding="utf-8").splitlines()
    return [json.loads(x) for x in lines if x.strip()]


def release_example(model_name_or_path: str) -> dict[str, Any]:
    """The default example: texts (``pecore``'s arguments) and ``options`` for that model.

    ``"toy-mt"`` gets its first eval example ("The table was old. <brk> It was broken." →
    "Der Tisch war alt. <brk> Er war kaputt."); every other model the toy LM's release
    example ("George was sick yesterday." / "His colleagues asked him to come").
    """
    name = TOY_MT if model_name_or_path == TOY_MT else TOY
    ex = eval_examples(name)[0]
    texts = {
        "input_context_text": ex["input_context_text"],
        "input_current_text": ex["input_current_text"],
        "output_context_text": ex.get("output_context_text"),
    }
    return {**texts, "options": dict(OPTIONS[name])}


def dataset_records(model_name: str, n: int, *, forced: bool = False) -> list[dict[str, Any]]:
    """The first ``n`` eval examples as PECoRe dataset lines with gold annotations.

    Gold: the dependent word (CTI), its input-context cue and, for ``"toy-mt"``, its
    output-context cue; per-line options carry the model's templates.
    """
    examples = eval_examples(model_name)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(examples):
        raise ValueError(f"n must be an int in 1..{len(examples)} (eval examples), got {n!r}.")
    records = []
    for k, ex in enumerate(examples[:n]):
        record = {
            "id": f"{ex['family']}-{k}",
            "input_context_text": ex["input_context_text"],
            "input_current_text": ex["input_current_text"],
            **OPTIONS[model_name],
            "gold_context_sensitive_words": [ex["dependent_word"]],
            "gold_cue_words": [ex["cue_word"]],
        }
        if ex.get("output_context_text"):
            record["output_context_text"] = ex["output_context_text"]
            record["gold_output_cue_words"] = [ex["output_cue_word"]]
        if forced:
            record["output_current_text"] = ex["output_current_text"].lstrip()
        records.append(record)
    return records
