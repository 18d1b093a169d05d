"""Evaluate citations against gold documents, with baselines, on annotated examples.

An example is a dict with ``question``, ``documents``, ``answer`` and ``gold_documents`` (per
answer sentence, the 0-based ids of the documents that support it), as in
``hooklab/toy_rag/eval_examples.jsonl``. The answer is forced, so every method cites the same
sentences. Methods:

* ``cite``: :func:`hooklab.cite.cite` with the given options (MIRAGE).
* ``attention``: the document with the most attention from the positions that predict the
  sentence's tokens (mean over layers, heads and tokens of the attention summed over each
  document's tokens); one citation.
* ``lexical``: the document sharing the most words with the sentence (ties: the first); one.
* ``random``: one document drawn uniformly (seeded).

Scores, over all sentences: ``agreement`` (share of sentences whose cited set equals the gold
set), citation ``precision`` (cited documents that are gold / all cited), ``recall`` (gold
documents cited / all gold) and their ``f1``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from hooklab.cite.aggregate import owners, split_sentences, token_spans
from hooklab.cite.core import cite, join_documents
from hooklab.cite.examples import check_examples
from hooklab.cite.options import CiteOptions

if TYPE_CHECKING:
    import pandas as pd

METHODS = ("cite", "attention", "lexical", "random")


def score_citations(predicted: Sequence[Sequence[int]], gold: Sequence[Sequence[int]]) -> dict:
    """Agreement, precision, recall and F1 of per-sentence citations (see the module doc)."""
    if len(predicted) != len(gold):
        raise ValueError(f"{len(predicted)} predicted sentences for {len(gold)} gold ones.")
    agree = sum(set(p) == set(g) for p, g in zip(predicted, gold, strict=True))
    hits = sum(len(set(p) & set(g)) for p, g in zip(predicted, gold, strict=True))
    n_pred, n_gold = sum(len(set(p)) for p in predicted), sum(len(set(g)) for g in gold)
    precision = hits / n_pred if n_pred else 0.0
    recall = hits / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    n = len(gold)
    return {
        "sentences": n,
        "agreement": agree / n if n else 0.0,
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def lexical_citations(documents: Sequence[str], sentences: Sequence[str]) -> list[list[int]]:
    """Per sentence, the document sharing the most words with it (ties: the first)."""
    out = []
    for s in sentences:
        overlap = [len(_words(s) & _words(d)) for d in documents]
        out.append([max(range(len(documents)), key=lambda i: (overlap[i], -i))])
    return out


@torch.no_grad()
def attention_citations(
    model, question: str, documents: Sequence[str], answer: str, options: CiteOptions
) -> list[list[int]]:
    """Per answer sentence, the document with the most attention (see the module doc)."""
    from hooklab.forward import forward
    from hooklab.hooks import hook_name, recorder
    from hooklab.inputs import encode_prompt, encode_target, make_batch, pad_token_id, str_tokens

    context, regions = join_documents(documents, options)
    prompt_text = options.input_template.format(context=context, current=question)
    prompt = encode_prompt(model, prompt_text)
    target = encode_target(model, " " + answer)
    start = prompt_text.index(context)  # the context's offset in the prompt text
    plain = model.tokenizer(prompt_text, add_special_tokens=False, return_offsets_mapping=True)
    shift = len(prompt) - len(plain["input_ids"])  # BOS
    regions = [(a + start, b + start) for a, b in regions]
    doc_of = owners(list(plain["offset_mapping"]), regions)
    names = [hook_name("pattern", layer) for layer in range(model.cfg.n_layers)]
    hooks, cache = recorder(names)
    batch = make_batch([prompt], [target], pad_id=pad_token_id(model), device=model.cfg.device)
    forward(model, batch, hooks=hooks)
    pad = batch.tokens.shape[1] - len(prompt) - len(target)  # left padding (none for one)
    pattern = torch.stack([cache[n][0] for n in names]).float().mean((0, 1))  # [query, key]
    per_doc = torch.zeros(pattern.shape[0], len(documents))
    for k, d in enumerate(doc_of):
        if d is not None:
            per_doc[:, d] += pattern[:, pad + shift + k].cpu()
    text = "".join(str_tokens(model, target))
    sentence_of = owners(token_spans(str_tokens(model, target), text), split_sentences(text))
    out = []
    for s in range(len(split_sentences(text))):
        rows = [pad + len(prompt) - 1 + t for t, x in enumerate(sentence_of) if x == s]
        out.append([int(per_doc[rows].mean(0).argmax())] if rows else [])
    return out


def evaluate_citations(
    model,
    examples: Sequence[Mapping[str, Any]],
    *,
    methods: Sequence[str] = METHODS,
    options: CiteOptions | None = None,
    seed: int = 0,
    **option_overrides,
) -> pd.DataFrame:
    """Score ``methods`` on ``examples``: one row per method (see the module doc).

    Returns:
        A DataFrame indexed by method with ``sentences, agreement, precision, recall, f1``.
    """
    import pandas as pd

    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        from hooklab.registry import unknown_name_error

        raise unknown_name_error("citation evaluation method", unknown[0], list(METHODS))
    opts = (options or CiteOptions()).replace(**option_overrides)
    rng = random.Random(seed)
    predicted: dict[str, list[list[int]]] = {m: [] for m in methods}
    gold: list[list[int]] = []
    check_examples(examples)  # all checked before any model run
    for ex in examples:
        docs, answer = list(ex["documents"]), ex["answer"]
        gold += [list(g) for g in ex["gold_documents"]]
        sentences = [answer[a:b] for a, b in split_sentences(answer)]
        n_sent = len(sentences)
        for m in methods:
            if m == "cite":
                got = cite(model, ex["question"], docs, answer=answer, options=opts).citations
            elif m == "attention":
                got = attention_citations(model, ex["question"], docs, answer, opts)
            elif m == "lexical":
                got = lexical_citations(docs, sentences)
            else:
                got = [[rng.randrange(len(docs))] for _ in sentences]
            got = (got + [[]] * n_sent)[:n_sent]
            predicted[m] += got
    rows = {m: score_citations(predicted[m], gold) for m in methods}
    return pd.DataFrame.from_dict(rows, orient="index")
