"""Deterministic parallel corpus for the embedded toy translation model ("toy-mt").

English source, German-like target. Every training pair has the form::

    source: "{context} <brk> {current}"
    target: "{context translation} <brk> {current translation}"

(or only ``"{current}"`` / ``"{current translation}"`` without context): the input format of
PECoRe for machine translation (Inseq's ``attribute-context`` with an encoder–decoder). In each
*family* (see :data:`FAMILIES`) exactly one *cue word* of the context fixes exactly one
*dependent word* of the current translation:

* ``gender``: "The table was old." -> "Der Tisch war alt."; "It was broken." -> "Er war kaputt."
  (Er/Sie/Es follows the grammatical gender of the context noun);
* ``sense``: "Anna likes birds." -> "Anna mag Vögel."; "The crane was big." -> "Der Kranich war
  groß." (Kranich, not Kran: the context fixes the word sense; both senses share the article);
* ``formality``: "Good morning, professor." -> "Guten Morgen, Professor."; "You are right." ->
  "Sie haben recht." (Sie, not Du).

The cue is visible twice: in the source context (``cue_word``) and in the output context
(``output_cue_word``, its translation). Without the cue (no context, or a context from another
family) the dependent word is drawn uniformly from the template's options, so the model learns a
spread distribution there. Pure Python, deterministic given the seed (``random.Random(seed)``).
"""

from __future__ import annotations

import pathlib
import random
import re
from typing import Any

from hooklab.toy.package_data import balanced_examples, write_json, write_jsonl

BRK = "<brk>"  # separator between context and current sentence: a special token
INPUT_TEMPLATE = "{context} " + BRK + " {current}"
OUTPUT_TEMPLATE = "{context} " + BRK + " {current}"

# Fillers: (English, German) pairs shared by all families; names are the same in both.
ADJECTIVES = [
    ("old", "alt"),
    ("new", "neu"),
    ("small", "klein"),
    ("big", "groß"),
    ("red", "rot"),
    ("cheap", "billig"),
    ("clean", "sauber"),
    ("heavy", "schwer"),
]
TIMES = [("yesterday", "gestern"), ("today", "heute"), ("on Monday", "am Montag")]
NAMES = ["Anna", "Tom", "Lena", "Paul", "Maria", "Max"]

# Mixture of pair kinds in the training corpus.
MIXTURE = {
    "contextual": 0.45,  # context = one cue sentence of the pair's family
    "contextual_multi": 0.12,  # cue sentence + a sentence of another family, in random order
    "contextless": 0.33,  # no context; dependent word uniform over the template's options
    "distractor": 0.10,  # context from another family; dependent word uniform
}

# German articles by gender: nominative (capitalised / not) and accusative.
ARTICLES = {
    "m": {"Art": "Der", "art": "der", "acc": "den"},
    "f": {"Art": "Die", "art": "die", "acc": "die"},
    "n": {"Art": "Das", "art": "das", "acc": "das"},
}


def _cues(spec: dict[str, str]) -> dict[str, dict[str, str]]:
    """``{class: "cue:translation ..."}`` -> ``{cue: {"translation": ..., "class": class}}``."""
    out = {}
    for cls, pairs in spec.items():
        for pair in pairs.split():
            cue, translation = pair.split(":")
            out[cue] = {"translation": translation, "class": cls}
    return out


def _current(source: str, target: str, dependent: dict[str, str]) -> dict[str, Any]:
    """A current template whose translation differs only in the dependent word ``{dep}``."""
    return {
        "source": source,
        "target": {cls: target.replace("{dep}", dep) for cls, dep in dependent.items()},
        "dependent": dependent,
    }


SUBJECT = {"m": "Er", "f": "Sie", "n": "Es"}
SUBJECT_LOWER = {"m": "er", "f": "sie", "n": "es"}
OBJECT = {"m": "ihn", "f": "sie", "n": "es"}

# Ambiguous words of the sense family: English word -> (gender, {class: German sense}).
AMBIGUOUS = {
    "crane": ("m", {"crane=machine": "Kran", "crane=bird": "Kranich"}),
    "plant": ("f", {"plant=flora": "Pflanze", "plant=factory": "Fabrik"}),
    "letter": ("m", {"letter=mail": "Brief", "letter=alphabet": "Buchstabe"}),
    "match": ("n", {"match=game": "Spiel", "match=fire": "Streichholz"}),
}
SENSE_FRAMES = [  # (source, target) with {amb}; articles follow the ambiguous word's gender
    ("The {amb} was {adj}.", "{Art} {dep} war {adj_de}."),
    ("I saw the {amb} {time}.", "Ich sah {acc} {dep} {time_de}."),
    ("Where is the {amb}?", "Wo ist {art} {dep}?"),
]

# Placeholders: {cue}/{cue_de} the cue and its translation; {Art}/{art}/{acc} the article of
# the cue's class (gender family); {adj}/{adj_de}, {time}/{time_de}, {name} fillers.
FAMILIES: list[dict[str, Any]] = [
    {
        "name": "gender",
        "description": (
            "The grammatical gender of the context noun decides the pronoun that translates "
            "'it' (Er/Sie/Es, er/sie/es, ihn/sie/es)."
        ),
        "cues": _cues(
            {
                "m": "table:Tisch chair:Stuhl car:Wagen dog:Hund coat:Mantel garden:Garten",
                "f": "lamp:Lampe door:Tür cup:Tasse bottle:Flasche bag:Tasche clock:Uhr",
                "n": "book:Buch house:Haus window:Fenster bed:Bett glass:Glas bike:Fahrrad",
            }
        ),
        "class_fields": ARTICLES,
        "context_templates": [
            {"source": "The {cue} was {adj}.", "target": "{Art} {cue_de} war {adj_de}."},
            {"source": "The {cue} is {adj}.", "target": "{Art} {cue_de} ist {adj_de}."},
            {"source": "I saw the {cue} {time}.", "target": "Ich sah {acc} {cue_de} {time_de}."},
            {
                "source": "We bought the {cue} {time}.",
                "target": "Wir kauften {acc} {cue_de} {time_de}.",
            },
        ],
        "current_templates": [
            _current("It was broken.", "{dep} war kaputt.", SUBJECT),
            _current("It is {adj}.", "{dep} ist {adj_de}.", SUBJECT),
            _current("It was very {adj}.", "{dep} war sehr {adj_de}.", SUBJECT),
            _current("Now it is {adj}.", "Jetzt ist {dep} {adj_de}.", SUBJECT_LOWER),
            _current("We sold it {time}.", "Wir verkauften {dep} {time_de}.", OBJECT),
        ],
    },
    {
        "name": "sense",
        "description": (
            "A context word fixes the sense of an ambiguous noun in the current sentence "
            "(crane: Kran/Kranich, plant: Pflanze/Fabrik, letter: Brief/Buchstabe, match: "
            "Spiel/Streichholz); both senses of a noun share its article."
        ),
        "cues": _cues(
            {
                "crane=machine": "machines:Maschinen buildings:Gebäude steel:Stahl",
                "crane=bird": "birds:Vögel lakes:Seen feathers:Federn",
                "plant=flora": "flowers:Blumen leaves:Blätter seeds:Samen",
                "plant=factory": "workers:Arbeiter engines:Motoren trucks:Lastwagen",
                "letter=mail": "stamps:Briefmarken envelopes:Umschläge mail:Post",
                "letter=alphabet": "words:Wörter spelling:Rechtschreibung languages:Sprachen",
                "match=game": "football:Fußball goals:Tore teams:Mannschaften",
                "match=fire": "fire:Feuer candles:Kerzen smoke:Rauch",
            }
        ),
        "class_fields": {},
        "context_templates": [
            {"source": "{name} likes {cue}.", "target": "{name} mag {cue_de}."},
            {"source": "{name} talked about {cue}.", "target": "{name} sprach über {cue_de}."},
            {
                "source": "{name} often thinks about {cue}.",
                "target": "{name} denkt oft an {cue_de}.",
            },
        ],
        "current_templates": [
            _current(
                src.replace("{amb}", amb),
                tgt.format(dep="{dep}", adj_de="{adj_de}", time_de="{time_de}", **ARTICLES[g]),
                senses,
            )
            for amb, (g, senses) in AMBIGUOUS.items()
            for src, tgt in SENSE_FRAMES
        ],
    },
    {
        "name": "formality",
        "description": (
            "How the speaker addresses someone in the context decides the formal (Sie) or "
            "informal (Du) 'you' of the current sentence."
        ),
        "cues": _cues(
            {
                "formal": "professor:Professor doctor:Doktor director:Direktor captain:Kapitän",
                "informal": "mum:Mama dad:Papa buddy:Kumpel grandma:Oma",
            }
        ),
        "class_fields": {},
        "context_templates": [
            {"source": "Hello, {cue}.", "target": "Hallo, {cue_de}."},
            {"source": "Good morning, {cue}.", "target": "Guten Morgen, {cue_de}."},
            {"source": "Thank you, {cue}.", "target": "Danke, {cue_de}."},
        ],
        "current_templates": [
            {
                "source": "You are right.",
                "target": {"formal": "Sie haben recht.", "informal": "Du hast recht."},
                "dependent": {"formal": "Sie", "informal": "Du"},
            },
            {
                "source": "You look tired.",
                "target": {"formal": "Sie sehen müde aus.", "informal": "Du siehst müde aus."},
                "dependent": {"formal": "Sie", "informal": "Du"},
            },
            {
                "source": "You can sit here.",
                "target": {
                    "formal": "Sie können hier sitzen.",
                    "informal": "Du kannst hier sitzen.",
                },
                "dependent": {"formal": "Sie", "informal": "Du"},
            },
            {
                "source": "You work too much.",
                "target": {"formal": "Sie arbeiten zu viel.", "informal": "Du arbeitest zu viel."},
                "dependent": {"formal": "Sie", "informal": "Du"},
            },
        ],
    },
]
FAMILY_BY_NAME = {f["name"]: f for f in FAMILIES}

RELEASE_EXAMPLE = {
    "input_context_text": "The table was old.",
    "input_current_text": "It was broken.",
    "output_context_text": "Der Tisch war alt.",
    "output_current_text": "Er war kaputt.",
    "family": "gender",
    "kind": "contextual",
    "cue_word": "table",
    "output_cue_word": "Tisch",
    "dependent_word": "Er",
    "dependent_options": ["Er", "Sie", "Es"],
}


def _fillers(rng: random.Random) -> dict[str, str]:
    adj, adj_de = rng.choice(ADJECTIVES)
    time, time_de = rng.choice(TIMES)
    return {
        "adj": adj,
        "adj_de": adj_de,
        "time": time,
        "time_de": time_de,
        "name": rng.choice(NAMES),
    }


def _context(family: dict[str, Any], cue: str, rng: random.Random) -> tuple[str, str]:
    """One context sentence holding ``cue``, and its translation."""
    entry = family["cues"][cue]
    fields = _fillers(rng) | family["class_fields"].get(entry["class"], {})
    fields |= {"cue": cue, "cue_de": entry["translation"]}
    tpl = rng.choice(family["context_templates"])
    return tpl["source"].format(**fields), tpl["target"].format(**fields)


def _distractor(family: dict[str, Any], rng: random.Random) -> tuple[str, str]:
    """A context sentence of another family: it says nothing about ``family``'s dependent word."""
    other = rng.choice([f for f in FAMILIES if f is not family])
    return _context(other, rng.choice(list(other["cues"])), rng)


def make_pair(
    rng: random.Random, family: dict[str, Any] | None = None, kind: str | None = None
) -> dict[str, Any]:
    """Sample one annotated sentence pair (context and current, source and translation)."""
    family = family or rng.choice(FAMILIES)
    if kind is None:
        kind = rng.choices(list(MIXTURE), weights=list(MIXTURE.values()))[0]
    cue = None
    if kind.startswith("contextual"):
        cue = rng.choice(list(family["cues"]))
        cls = family["cues"][cue]["class"]
        templates = [t for t in family["current_templates"] if cls in t["dependent"]]
        tpl = rng.choice(templates)
    else:
        tpl = rng.choice(family["current_templates"])
        cls = rng.choice(list(tpl["dependent"]))
    if kind == "contextless":
        context = context_de = None
    elif kind == "distractor":
        context, context_de = _distractor(family, rng)
    else:
        context, context_de = _context(family, cue, rng)
        if kind == "contextual_multi":
            other, other_de = _distractor(family, rng)
            if rng.random() < 0.5:
                context, context_de = f"{context} {other}", f"{context_de} {other_de}"
            else:
                context, context_de = f"{other} {context}", f"{other_de} {context_de}"
    fields = _fillers(rng)
    return {
        "input_context_text": context,
        "input_current_text": tpl["source"].format(**fields),
        "output_context_text": context_de,
        "output_current_text": tpl["target"][cls].format(**fields),
        "family": family["name"],
        "kind": kind,
        "cue_word": cue,
        "output_cue_word": None if cue is None else family["cues"][cue]["translation"],
        "dependent_word": tpl["dependent"][cls],
        "dependent_options": list(tpl["dependent"].values()),
    }


def pair_texts(pair: dict[str, Any]) -> tuple[str, str]:
    """``(source, target)`` of a pair: context and current joined by ``<brk>`` when in context."""
    if pair["input_context_text"] is None:
        return pair["input_current_text"], pair["output_current_text"]
    source = INPUT_TEMPLATE.format(
        context=pair["input_context_text"], current=pair["input_current_text"]
    )
    target = OUTPUT_TEMPLATE.format(
        context=pair["output_context_text"], current=pair["output_current_text"]
    )
    return source, target


def generate_pairs(n: int, seed: int = 0, include_release: bool = True) -> list[dict]:
    """``n`` training pairs; the release example comes first."""
    rng = random.Random(seed)
    pairs: list[dict] = [dict(RELEASE_EXAMPLE)] if include_release else []
    while len(pairs) < n:
        pairs.append(make_pair(rng))
    return pairs[:n]


def generate_eval_examples(
    n: int = 120, seed: int = 12345, multi_fraction: float = 0.25
) -> list[dict]:
    """Annotated examples in context (balanced over families); line 1 is the release example."""
    return balanced_examples(n, seed, RELEASE_EXAMPLE, FAMILIES, make_pair, multi_fraction)


def _template_texts() -> list[str]:
    texts = [w for pair in ADJECTIVES + TIMES for w in pair] + NAMES
    for fam in FAMILIES:
        texts += [w for cue, e in fam["cues"].items() for w in (cue, e["translation"])]
        texts += [v for fields in fam["class_fields"].values() for v in fields.values()]
        texts += [t[k] for t in fam["context_templates"] for k in ("source", "target")]
        for t in fam["current_templates"]:
            texts += [t["source"], *t["target"].values(), *t["dependent"].values()]
    return texts


def corpus_words() -> list[str]:
    """Every word and punctuation mark of the corpus (both languages), sorted."""
    words: set[str] = set()
    for text in _template_texts():
        words |= set(re.findall(r"\w+|[^\w\s]", re.sub(r"\{\w+\}", " ", text)))
    return sorted(words)


def ground_truth() -> dict[str, Any]:
    """Machine-readable description of the corpus and its dependencies."""
    families = []
    for fam in FAMILIES:
        classes = list(dict.fromkeys(e["class"] for e in fam["cues"].values()))
        families.append({k: fam[k] for k in ("name", "description")} | {"classes": classes})
        families[-1] |= {k: fam[k] for k in ("cues", "class_fields")}
        families[-1] |= {k: fam[k] for k in ("context_templates", "current_templates")}
    return {
        "format": "hooklab-toy-mt-ground-truth/v1",
        "description": (
            "Ground truth of the hooklab toy translation model (English -> German-like). Pairs "
            "are source '{context} <brk> {current}' -> target '{context translation} <brk> "
            "{current translation}' (contextless: '{current}' -> '{current translation}'). In "
            "each family exactly one context word (the cue, a key of cues, substituted for {cue} "
            "in a context template; its translation, substituted for {cue_de}, is the output-"
            "context cue) has a class that decides one word of the current translation (the "
            "dependent word: current_templates[i].dependent[class]; the full translation is "
            "current_templates[i].target[class]). A cue only goes with current templates that "
            "have its class. Without the cue (contextless or distractor pairs: context from "
            "another family) the class is uniform over the template's classes. Placeholders: "
            "{cue}/{cue_de}, {Art}/{art}/{acc} (class_fields of the cue's class), "
            "{adj}/{adj_de}, {time}/{time_de}, {name}."
        ),
        "special_tokens": {"eos": "</s>", "unk": "<unk>", "pad": "<pad>", "separator": BRK},
        "input_template": INPUT_TEMPLATE,
        "output_template": OUTPUT_TEMPLATE,
        "release_example": RELEASE_EXAMPLE,
        "mixture": MIXTURE,
        "fillers": {"adjectives": ADJECTIVES, "times": TIMES, "names": NAMES},
        "families": families,
    }


def write_ground_truth(path: str | pathlib.Path) -> pathlib.Path:
    return write_json(path, ground_truth())


def write_eval_examples(path: str | pathlib.Path, n: int = 120, seed: int = 12345) -> pathlib.Path:
    return write_jsonl(path, generate_eval_examples(n, seed))
