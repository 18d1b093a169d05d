"""Deterministic corpus generator for the embedded toy "context LM".

Every training document has the form::

    <|endoftext|>{context} {current}{continuation}<|endoftext|>

(or ``<|endoftext|>{current}{continuation}<|endoftext|>`` without context), where exactly one
*cue word* of the context determines exactly one *dependent word* of the continuation.  There are
five families of such dependencies (see :data:`FAMILIES`).  Without the cue (no context, or an
irrelevant distractor context) the dependent word is drawn uniformly from the family's slot
values, so the model learns a spread distribution there.

Everything is pure Python and deterministic given the seed (``random.Random(seed)``).
"""

from __future__ import annotations

import pathlib
import random
from typing import Any

from hooklab.toy.package_data import balanced_examples, write_json, write_jsonl

BOS = "<|endoftext|>"


def _pairs(spec: str) -> dict[str, str]:
    """``"a:b c:d"`` -> ``{"a": "b", "c": "d"}`` (cue word -> dependent word)."""
    return dict(pair.split(":") for pair in spec.split())


def _words(spec: str) -> list[str]:
    return spec.split()


MALE_NAMES = _words("George John Peter Tom David James Paul Oliver Simon Henry Jack Robert")
FEMALE_NAMES = _words("Mary Anna Sarah Emma Lucy Kate Laura Julia Alice Helen Rose Nora")
PRONOUNS = {
    "male": {"subj": "he", "obj": "him", "pos": "his", "refl": "himself"},
    "female": {"subj": "she", "obj": "her", "pos": "her", "refl": "herself"},
}
TIMES = ["yesterday", "today", "on Monday", "on Friday", "all week", "again"]
CITIES = ["Paris", "London", "Rome", "Berlin", "Madrid", "Vienna"]


# Mixture of document kinds in the training corpus.
MIXTURE = {
    "contextual": 0.45,  # context = one cue sentence of the document's family
    "contextual_multi": 0.12,  # cue sentence + an irrelevant sentence, in random order
    "contextless": 0.33,  # no context; dependent word uniform over the slot values
    "distractor": 0.10,  # context from another family; dependent word uniform
}

# Placeholders: {name} person's name, {cue} cue word, {time}/{Time} time phrase (lower/capitalised),
# {city}, {subj}/{Subj}, {obj}, {pos}/{Pos}, {refl} pronouns of the person, {dep} dependent word.
FAMILIES: list[dict[str, Any]] = [
    {
        "name": "place",
        "description": "The person's state in the context decides where they go.",
        "context_templates": [
            "{name} was {cue} {time}.",
            "{name} felt very {cue} {time}.",
            "{Time}, {name} was {cue}.",
        ],
        "current_templates": [
            {"current": "{Pos} colleagues asked {obj} to come", "continuation": " to the {dep}."},
            {"current": "{Pos} friends told {obj} to go", "continuation": " to the {dep}."},
            {"current": "So {subj} decided to go", "continuation": " to the {dep}."},
            {"current": "{Pos} sister drove {obj}", "continuation": " to the {dep}."},
        ],
        "cue_to_dependent": _pairs(
            "sick:hospital hungry:restaurant tired:hotel bored:party thirsty:bar"
            " lost:station busy:office nervous:meeting"
        ),
    },
    {
        "name": "pronoun",
        "description": "The person's name in the context decides the object pronoun (him/her).",
        "context_templates": [
            "{name} finished the report {time}.",
            "{name} arrived at work {time}.",
            "{name} wrote a long letter {time}.",
        ],
        "current_templates": [
            {"current": "The manager thanked", "continuation": " {dep} warmly."},
            {"current": "Everyone wanted to meet", "continuation": " {dep} soon."},
            {"current": "The neighbours greeted", "continuation": " {dep} politely."},
            {"current": "The boss praised", "continuation": " {dep} loudly."},
        ],
        "cue_to_dependent": {**{n: "him" for n in MALE_NAMES}, **{n: "her" for n in FEMALE_NAMES}},
    },
    {
        "name": "weather",
        "description": "The weather in the context decides what the person takes outside.",
        "context_templates": [
            "It was {cue} {time}.",
            "The weather was {cue} {time}.",
            "{Time}, it was very {cue}.",
        ],
        "current_templates": [
            {"current": "Before leaving, {subj} grabbed {pos}", "continuation": " {dep}."},
            {"current": "{name} went outside with {pos}", "continuation": " {dep}."},
            {"current": "{Subj} did not forget {pos}", "continuation": " {dep}."},
        ],
        "cue_to_dependent": _pairs(
            "rainy:umbrella sunny:sunglasses snowy:boots windy:jacket freezing:gloves hot:hat"
        ),
    },
    {
        "name": "drink",
        "description": "The time of day in the context decides the drink.",
        "context_templates": [
            "It was {cue} in {city}.",
            "The {cue} was quiet.",
            "{name} woke up in the {cue}.",
        ],
        "current_templates": [
            {"current": "{Subj} asked the waiter for some", "continuation": " {dep}."},
            {"current": "{name} poured {refl} some", "continuation": " {dep}."},
            {"current": "{Subj} wanted to drink some", "continuation": " {dep}."},
        ],
        "cue_to_dependent": _pairs(
            "morning:coffee afternoon:tea evening:wine night:milk dawn:water"
        ),
    },
    {
        "name": "tool",
        "description": "The person's job in the context decides the tool they use.",
        "context_templates": [
            "{name} is a {cue}.",
            "{name} works as a {cue}.",
            "{name} has been a {cue} for years.",
        ],
        "current_templates": [
            {"current": "At work, {subj} always uses {pos}", "continuation": " {dep}."},
            {"current": "Every day, {subj} needs {pos}", "continuation": " {dep}."},
            {"current": "{Subj} cannot work without {pos}", "continuation": " {dep}."},
        ],
        "cue_to_dependent": _pairs(
            "painter:brush chef:knife writer:pen farmer:tractor builder:hammer"
            " tailor:needle photographer:camera teacher:chalk"
        ),
    },
]
FAMILY_BY_NAME = {f["name"]: f for f in FAMILIES}

RELEASE_EXAMPLE = {
    "input_context_text": "George was sick yesterday.",
    "input_current_text": "His colleagues asked him to come",
    "output_current_text": " to the hospital.",
    "family": "place",
    "cue_word": "sick",
    "dependent_word": "hospital",
    "kind": "contextual",
}


def slot_values(family: dict[str, Any]) -> list[str]:
    """Distinct dependent words of a family, in first-seen order."""
    return list(dict.fromkeys(family["cue_to_dependent"].values()))


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _fields(person: tuple[str, str], rng: random.Random) -> dict[str, str]:
    name, gender = person
    p = PRONOUNS[gender]
    time = rng.choice(TIMES)
    return {
        "name": name,
        "time": time,
        "Time": _cap(time),
        "city": rng.choice(CITIES),
        "subj": p["subj"],
        "Subj": _cap(p["subj"]),
        "obj": p["obj"],
        "pos": p["pos"],
        "Pos": _cap(p["pos"]),
        "refl": p["refl"],
    }


def _person(rng: random.Random, gender: str | None = None) -> tuple[str, str]:
    gender = gender or rng.choice(["male", "female"])
    return rng.choice(MALE_NAMES if gender == "male" else FEMALE_NAMES), gender


def _has_name(template: str) -> bool:
    return "{name}" in template


def _sentence(
    family: dict[str, Any],
    cue: str,
    fields: dict[str, str],
    rng: random.Random,
    nameless: bool = False,
) -> str:
    templates = [t for t in family["context_templates"] if not (nameless and _has_name(t))]
    return rng.choice(templates).format(cue=cue, **fields)


def _distractor(
    target: dict[str, Any], fields: dict[str, str], rng: random.Random, nameless: bool
) -> str:
    """A context sentence from another family that says nothing about ``target``'s slot."""
    others = [
        f
        for f in FAMILIES
        if f is not target and not (nameless and all(_has_name(t) for t in f["context_templates"]))
    ]
    fam = rng.choice(others)
    time = rng.choice(TIMES)
    fields = {**fields, "time": time, "Time": _cap(time), "city": rng.choice(CITIES)}
    return _sentence(fam, rng.choice(list(fam["cue_to_dependent"])), fields, rng, nameless)


def make_document(
    rng: random.Random, family: dict[str, Any] | None = None, kind: str | None = None
) -> dict[str, Any]:
    """Sample one document (a dict with context/current/continuation and annotations)."""
    family = family or rng.choice(FAMILIES)
    if kind is None:
        kind = rng.choices(list(MIXTURE), weights=list(MIXTURE.values()))[0]
    is_pronoun = family["name"] == "pronoun"
    cue = None
    if kind.startswith("contextual"):
        cue = rng.choice(list(family["cue_to_dependent"]))
        dep = family["cue_to_dependent"][cue]
        person = (cue, "male" if dep == "him" else "female") if is_pronoun else _person(rng)
    else:
        dep = rng.choice(slot_values(family))
        person = _person(rng, ("male" if dep == "him" else "female") if is_pronoun else None)
    fields = _fields(person, rng)
    if kind == "contextless":
        context = None
    elif kind == "distractor":
        # The pronoun slot must not be revealed by a name in the distractor.
        context = _distractor(family, fields, rng, nameless=is_pronoun)
    else:
        context = _sentence(family, cue, fields, rng)
        if kind == "contextual_multi":
            nameless = is_pronoun or person[0] in context
            other = _distractor(family, fields, rng, nameless=nameless)
            context = " ".join([context, other] if rng.random() < 0.5 else [other, context])
    tpl = rng.choice(family["current_templates"])
    current = tpl["current"].format(**fields)
    continuation = tpl["continuation"].format(dep=dep)
    return {
        "context": context,
        "current": current,
        "continuation": continuation,
        "family": family["name"],
        "kind": kind,
        "cue_word": cue,
        "dependent_word": dep,
    }


def document_text(doc: dict[str, Any], bos: str = BOS) -> str:
    """Full training text of a document, with BOS/EOS markers."""
    body = doc["current"] + doc["continuation"]
    if doc["context"]:
        body = doc["context"] + " " + body
    return bos + body + bos


def generate_documents(n: int, seed: int = 0, include_release: bool = True) -> list[dict]:
    """``n`` training documents; the release example (and a contextless copy) come first."""
    rng = random.Random(seed)
    docs: list[dict] = []
    if include_release:
        r = RELEASE_EXAMPLE
        docs.append(
            {
                "context": r["input_context_text"],
                "current": r["input_current_text"],
                "continuation": r["output_current_text"],
                "family": r["family"],
                "kind": "contextual",
                "cue_word": r["cue_word"],
                "dependent_word": r["dependent_word"],
            }
        )
    while len(docs) < n:
        docs.append(make_document(rng))
    return docs[:n]


def _eval_example(rng: random.Random, family: dict[str, Any], kind: str) -> dict[str, Any]:
    doc = make_document(rng, family, kind)
    return {
        "input_context_text": doc["context"],
        "input_current_text": doc["current"],
        "output_current_text": doc["continuation"],
        "family": doc["family"],
        "cue_word": doc["cue_word"],
        "dependent_word": doc["dependent_word"],
        "kind": kind,
    }


def generate_eval_examples(
    n: int = 100, seed: int = 12345, multi_fraction: float = 0.25
) -> list[dict]:
    """Held-out annotated examples (balanced over families); line 1 is the release example."""
    return balanced_examples(n, seed, RELEASE_EXAMPLE, FAMILIES, _eval_example, multi_fraction)


def corpus_words() -> list[str]:
    """All words (letters only, in every capitalisation that can occur) of the corpus, sorted."""
    text: list[str] = []
    for fam in FAMILIES:
        text += fam["context_templates"] + [w for kv in fam["cue_to_dependent"].items() for w in kv]
        text += [t["current"] + t["continuation"] for t in fam["current_templates"]]
    text += MALE_NAMES + FEMALE_NAMES + TIMES + CITIES + [_cap(t) for t in TIMES]
    text += [f(w) for p in PRONOUNS.values() for w in p.values() for f in (str, _cap)]
    words: set[str] = set()
    for chunk in text:
        for raw in chunk.replace("{", " {").replace("}", "} ").split():
            w = "".join(c for c in raw if c.isalpha())
            if w and not raw.startswith("{"):
                words.add(w)
    return sorted(words)


def ground_truth() -> dict[str, Any]:
    """Machine-readable description of the corpus and its dependencies."""
    families = []
    for fam in FAMILIES:
        families.append(
            {
                "name": fam["name"],
                "description": fam["description"],
                "context_templates": fam["context_templates"],
                "current_templates": fam["current_templates"],
                "cue_to_dependent": fam["cue_to_dependent"],
                "slot_values": slot_values(fam),
            }
        )
    return {
        "format": "hooklab-toy-ground-truth/v1",
        "description": (
            "Ground truth of the hooklab toy context LM. Documents are "
            "'<|endoftext|>{context} {current}{continuation}<|endoftext|>' (contextless: "
            "'<|endoftext|>{current}{continuation}<|endoftext|>'). In each family exactly one "
            "context word (the cue, a key of cue_to_dependent, substituted for {cue} in a context "
            "template; for 'pronoun' the {name}) determines one word of the continuation (the "
            "dependent word, substituted for {dep}). Without the cue (contextless or distractor "
            "documents) the dependent word is uniform over slot_values. Placeholders: {name}, "
            "{cue}, {time}/{Time}, {city}, {subj}/{Subj}, {obj}, {pos}/{Pos}, {refl}, {dep}; "
            "pronouns in the current text agree with the gender of the context's name."
        ),
        "special_token": BOS,
        "special_token_id": 0,
        "eval_input_template": "{context} {current}",
        "release_example": RELEASE_EXAMPLE,
        "mixture": MIXTURE,
        "names": {"male": MALE_NAMES, "female": FEMALE_NAMES},
        "pronouns": PRONOUNS,
        "fillers": {"times": TIMES, "cities": CITIES},
        "families": families,
    }


def write_ground_truth(path: str | pathlib.Path) -> pathlib.Path:
    return write_json(path, ground_truth())


def write_eval_examples(path: str | pathlib.Path, n: int = 100, seed: int = 12345) -> pathlib.Path:
    return write_jsonl(path, generate_eval_examples(n, seed))
