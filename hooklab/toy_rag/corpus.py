"""Deterministic corpus of the embedded toy retrieval model (``hooklab.load("toy-rag")``).

Every example is a few one-fact documents of one fixed shape, each about another person, a
question that names a person and a relation per asked fact, and the answer, one sentence per
fact::

    <|endoftext|>[1] Anna lives in Rome.
    [2] Ben lives in Oslo.
    [3] Clara lives in Paris.
    Question: Ben lives in?
    Answer: Ben lives in Oslo.<|endoftext|>

Every person, relation word and value is one token. Exactly one document holds each asked
fact (the gold document); the distractors are same-shaped facts about other people. In most
examples every document states the same relation, so only the asked person picks the document
(a model that matches the relation word before the value, the easy shortcut, is right by
chance only) and only the value is the gold one's alone. Multi-sentence answers ask about two
people. A share of the training examples has no documents and a random value in the answer, so
the model learns a spread distribution without them (what PECoRe's contextless pass sees).
Pure Python, deterministic given the seed.
"""

from __future__ import annotations

import random
from typing import Any

from hooklab.toy.package_data import write_jsonl

BOS = "<|endoftext|>"
DOCUMENT_TEMPLATE = "[{i}] {text}"
DOCUMENT_SEPARATOR = "\n"
INPUT_TEMPLATE = "{context}\nQuestion: {current}\nAnswer:"
CONTEXTLESS_TEMPLATE = "Question: {current}\nAnswer:"


def _words(spec: str) -> list[str]:
    return spec.split()


NAMES = _words(
    "Anna Ben Clara David Emma Felix Greta Hugo Ida Jonas Karl Lena Mia Nora Oscar Paul Rosa "
    "Sara Tom Uma Vera Zoe"
)
RELATIONS: dict[str, dict[str, Any]] = {
    "city": {
        "fact": "{name} lives in {value}.",
        "values": _words("Rome Paris Oslo Berlin Madrid Vienna Prague Lisbon Dublin Athens"),
    },
    "job": {
        "fact": "{name} works as {value}.",
        "values": _words("baker doctor teacher pilot farmer painter nurse lawyer chef driver"),
    },
    "pet": {
        "fact": "{name} keeps a {value}.",
        "values": _words("cat dog horse parrot rabbit goat turtle hamster snake duck"),
    },
}
KINDS = ("single", "two_people")  # one fact; two facts of two people
NEEDED = {"single": 1, "two_people": 2}  # gold documents
#: Training only: every document's person is asked, in another order (dense lookup practice).
RECALL = "every_person"
TRAINING_KINDS = {"single": 0.5, "two_people": 0.5}
MIXED = 0.2  # share of examples whose documents state any relations (else all the same one)


def corpus_words() -> list[str]:
    """Every word of the corpus (the tokenizer keeps each one a single token)."""
    words = set(NAMES) | {"Question", "Answer"}
    for rel in RELATIONS.values():
        words |= set(rel["values"])
        words |= set(rel["fact"].replace("{name}", "").replace("{value}", "").strip(".").split())
    return sorted(words)


def value_words() -> list[str]:
    """The answer values (cities, jobs, pets): the words copied from the gold document."""
    return sorted({v for rel in RELATIONS.values() for v in rel["values"]})


def fact(person: str, relation: str, value: str) -> str:
    """One fact sentence: ``"Ben lives in Oslo."``."""
    return RELATIONS[relation]["fact"].format(name=person, value=value)


def question_of(person: str, relation: str) -> str:
    """The question for one fact: the fact with its value left out (``"Ben lives in?"``)."""
    return fact(person, relation, "").replace(" .", "?")


def join_documents(documents: list[str]) -> str:
    """The documents as the model reads them: numbered from 1, one per line."""
    return DOCUMENT_SEPARATOR.join(
        DOCUMENT_TEMPLATE.format(i=i, text=d) for i, d in enumerate(documents, 1)
    )


def make_example(rng: random.Random, kind: str, n_documents: int) -> dict[str, Any]:
    """One example: documents, question, answer sentences and the gold document per sentence.

    ``gold_documents`` holds, per answer sentence, the 0-based id of the one document that
    states its fact. Every document is about another person. All documents state one relation,
    except in a ``MIXED`` share of the examples where each fact has any relation; values are
    distinct per relation.
    """
    relations = list(RELATIONS)
    needed = n_documents if kind == RECALL else NEEDED[kind]
    n_documents = max(n_documents, needed)
    people = rng.sample(NAMES, n_documents)  # one person per document
    one = rng.choice(relations)
    mixed = rng.random() < MIXED
    facts = [(p, rng.choice(relations) if mixed else one) for p in people]
    asked = facts[:needed]
    pools = {r: rng.sample(RELATIONS[r]["values"], len(RELATIONS[r]["values"])) for r in relations}
    values = [pools[r].pop() for _, r in facts]  # distinct values per relation
    order = rng.sample(range(n_documents), n_documents)  # document d states facts[order[d]]
    documents = [fact(*facts[i], values[i]) for i in order]
    sentences = [fact(p, r, values[k]) for k, (p, r) in enumerate(asked)]
    return {
        "kind": kind,
        "documents": documents,
        "question": " ".join(question_of(p, r) for p, r in asked),
        "answer": " ".join(sentences),
        "answer_sentences": sentences,
        "gold_documents": [[order.index(k)] for k in range(len(asked))],
    }


def _kind(rng: random.Random, kinds: dict[str, float]) -> str:
    return rng.choices(list(kinds), weights=list(kinds.values()))[0]


def training_text(example: dict[str, Any]) -> tuple[str, str]:
    """(prompt, answer) as the model reads them; the answer follows after one space."""
    current = example["question"]
    if example["documents"]:
        prompt = INPUT_TEMPLATE.format(
            context=join_documents(example["documents"]), current=current
        )
    else:
        prompt = CONTEXTLESS_TEMPLATE.format(current=current)
    return prompt, " " + example["answer"]


def generate_examples(
    n: int,
    seed: int,
    contextless: float = 0.1,
    max_documents: int = 5,
    kinds: dict[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Training examples with 1 to ``max_documents`` documents (at least the gold ones).

    ``kinds`` weighs the answer kinds (default ``TRAINING_KINDS``; ``RECALL`` asks about every
    document's person). A ``contextless`` share has no documents and random answer values.
    Examples without a distractor start the curriculum (the training script's first pool).
    """
    rng = random.Random(seed)
    kinds = TRAINING_KINDS if kinds is None else kinds
    out = []
    for _ in range(n):
        kind = _kind(rng, kinds)
        ex = make_example(rng, kind, rng.randint(1, max_documents))
        if rng.random() < contextless:
            sentences = [_swap_value(s, rng) for s in ex["answer_sentences"]]
            ex = {
                **ex,
                "documents": [],
                "gold_documents": [[] for _ in sentences],
                "answer_sentences": sentences,
                "answer": " ".join(sentences),
            }
        out.append(ex)
    return out


def _swap_value(sentence: str, rng: random.Random) -> str:
    """``sentence`` with its value (last word) replaced by a random value of its relation."""
    for rel in RELATIONS.values():
        head = rel["fact"].split("{value}")[0].replace("{name}", "")
        if head in sentence:
            return sentence[: sentence.index(head) + len(head)] + rng.choice(rel["values"]) + "."
    return sentence


def generate_eval_examples(n: int, seed: int) -> list[dict[str, Any]]:
    """Held-out evaluation examples (another seed than training), kinds in turn, 3–5 documents."""
    rng = random.Random(seed)
    return [make_example(rng, KINDS[i % len(KINDS)], 3 + i % 3) for i in range(n)]


def write_eval_examples(path, n: int, seed: int):
    """Write :func:`generate_eval_examples` as JSONL (package data)."""
    return write_jsonl(path, generate_eval_examples(n, seed))


#: The default example of ``hooklab cite`` / ``scripts/cite.py`` (answer generated).
RELEASE_EXAMPLE: dict[str, Any] = {
    "question": "Ben works as? Clara keeps a?",
    "documents": [
        "Anna lives in Rome.",
        "Ben works as pilot.",
        "Clara keeps a cat.",
        "David keeps a dog.",
    ],
    "answer": "Ben works as pilot. Clara keeps a cat.",
    "gold_documents": [[1], [2]],
}
