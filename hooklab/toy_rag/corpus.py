"""Deterministic corpus of the embedded toy retrieval model (``hooklab.load("toy-rag")``).

Every example is a handful of short documents about different people, a question about one or
two facts, and the answer, one sentence per fact::

    <|endoftext|>[1] Anna lives in Rome. Anna has a cat.
    [2] Ben lives in Oslo.
    [3] Clara works as a baker. Clara lives in Paris.
    Question: Where does Ben live?
    Answer: Ben lives in Oslo.<|endoftext|>

Exactly one document holds each asked fact (the gold document); the others are same-shaped
distractors: other people, the same relations, other values. Values of an asked relation
differ across documents, so only the person's name tells the documents apart. A share of the
examples has no documents and a random value in the answer, so the model learns a spread
distribution without them (what PECoRe's contextless pass sees). Pure Python, deterministic
given the seed.
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
    "Sara Tom Uma Vera Walter Zoe Alma Bruno Carla Dora Elias Frida Gustav Hanna Igor Julia "
    "Kurt Linus Marta Nils Olga Peter Ruth"
)
RELATIONS: dict[str, dict[str, Any]] = {
    "city": {
        "fact": "{name} lives in {value}.",
        "question": "Where does {name} live?",
        "values": _words(
            "Rome Paris Oslo Berlin Madrid Vienna Prague Lisbon Dublin Athens Warsaw Zurich "
            "Munich Milan Porto Lyon Bergen Krakow Sofia Riga"
        ),
    },
    "job": {
        "fact": "{name} works as a {value}.",
        "question": "What is the job of {name}?",
        "values": _words(
            "baker doctor teacher pilot farmer painter nurse lawyer chef driver singer writer "
            "dentist tailor guard"
        ),
    },
    "pet": {
        "fact": "{name} has a {value}.",
        "question": "Which pet does {name} have?",
        "values": _words("cat dog horse parrot rabbit goat turtle hamster snake duck pony mouse"),
    },
}
KINDS = ("single", "two_people", "one_person")  # one fact; two facts of two / of one person
NEEDED = {"single": 1, "one_person": 1, "two_people": 2, "three_people": 3}  # documents
TRAINING_KINDS = {"single": 0.3, "two_people": 0.3, "one_person": 0.15, "three_people": 0.25}


def corpus_words() -> list[str]:
    """Every word of the corpus (the tokenizer keeps each one a single token)."""
    words = set(NAMES) | {"Question", "Answer"}
    for rel in RELATIONS.values():
        words |= set(rel["values"])
        for t in (rel["fact"], rel["question"]):
            words |= set(t.replace("{name}", "").replace("{value}", "").strip(".?").split())
    return sorted(words)


def value_words() -> list[str]:
    """The answer values (cities, jobs, pets): the words copied from the gold document."""
    return sorted({v for rel in RELATIONS.values() for v in rel["values"]})


def join_documents(documents: list[str]) -> str:
    """The documents as the model reads them: numbered from 1, one per line."""
    return DOCUMENT_SEPARATOR.join(
        DOCUMENT_TEMPLATE.format(i=i, text=d) for i, d in enumerate(documents, 1)
    )


def make_example(rng: random.Random, kind: str, n_documents: int) -> dict[str, Any]:
    """One example: documents, question, answer sentences and the gold document per sentence.

    ``gold_documents`` holds, per answer sentence, the 0-based ids of the documents that state
    its fact (always exactly one).
    """
    people = rng.sample(NAMES, n_documents)
    asked_people = {"two_people": [0, 1], "three_people": [0, 1, 2]}.get(kind, [0])
    relations = list(RELATIONS)
    if kind == "one_person":
        asked = [(0, r) for r in rng.sample(relations, 2)]
    else:
        asked = [(p, rng.choice(relations)) for p in asked_people]
    asked_relations = sorted({r for _, r in asked})
    values = {r: rng.sample(RELATIONS[r]["values"], n_documents) for r in relations}
    documents = []
    for d in range(n_documents):
        mine = {r for p, r in asked if p == d}
        rels = set(mine) | {rng.choice(asked_relations)}  # distractors share the relations
        if rng.random() < 0.5:
            rels.add(rng.choice(relations))
        order = rng.sample(sorted(rels), len(rels))
        text = " ".join(
            RELATIONS[r]["fact"].format(name=people[d], value=values[r][d]) for r in order
        )
        documents.append(text)
    perm = rng.sample(range(n_documents), n_documents)  # shuffle; gold ids follow
    documents = [documents[i] for i in perm]
    where = {old: new for new, old in enumerate(perm)}
    questions = [RELATIONS[r]["question"].format(name=people[p]) for p, r in asked]
    sentences = [RELATIONS[r]["fact"].format(name=people[p], value=values[r][p]) for p, r in asked]
    return {
        "kind": kind,
        "documents": documents,
        "question": " ".join(questions),
        "answer": " ".join(sentences),
        "answer_sentences": sentences,
        "gold_documents": [[where[p]] for p, _ in asked],
    }


def _kind(rng: random.Random) -> str:
    return rng.choices(list(TRAINING_KINDS), weights=list(TRAINING_KINDS.values()))[0]


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


def generate_examples(n: int, seed: int, contextless: float = 0.15) -> list[dict[str, Any]]:
    """Training examples; a ``contextless`` share has no documents and random answer values.

    Training also asks about three people at once (``three_people``): more answer values per
    sequence, so more signal for finding the right document; it has 1–5 documents (held-out
    examples 3–5), so some examples have no distractor (the curriculum starts with those).
    """
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        kind = _kind(rng)
        ex = make_example(rng, kind, max(NEEDED[kind], rng.randint(1, 5)))
        if rng.random() < contextless:
            other = make_example(rng, ex["kind"], 3)  # same shape, other values
            names = ex["question"]
            ex = {**ex, "documents": [], "gold_documents": [[] for _ in ex["gold_documents"]]}
            ex["answer_sentences"] = [
                _swap_value(s, o) for s, o in zip(ex["answer_sentences"], other["answer_sentences"])
            ]
            ex["answer"] = " ".join(ex["answer_sentences"])
            ex["question"] = names
        out.append(ex)
    return out


def _swap_value(sentence: str, other: str) -> str:
    """``sentence`` with its value (last word) replaced by a random value of its relation."""
    for rel in RELATIONS.values():
        head = rel["fact"].split("{value}")[0].replace("{name}", "")
        if head in sentence:
            value = random.Random(other).choice(rel["values"])
            return sentence[: sentence.index(head) + len(head)] + value + "."
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
    "question": "Where does Ben live? Which pet does Clara have?",
    "documents": [
        "Anna lives in Rome. Anna has a dog.",
        "Ben lives in Oslo.",
        "Clara has a cat. Clara lives in Paris.",
        "David lives in Madrid. David has a horse.",
    ],
    "answer": "Ben lives in Oslo. Clara has a cat.",
    "gold_documents": [[1], [2]],
}
