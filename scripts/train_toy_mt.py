"""Train the embedded toy translation model shipped in ``hooklab/toy_mt/model``.

Generates the parallel corpus (``hooklab.toy_mt.corpus``), builds a word-level tokenizer
(SentencePiece-style ``▁word`` tokens, one per corpus word; ``</s>`` appended to every
sequence, as Marian's tokenizer does), trains a tiny Marian, saves a standard Hugging Face
checkpoint and regenerates ``ground_truth.json`` and ``eval_examples.jsonl``. Deterministic on
CPU given the arguments.

    python scripts/train_toy_mt.py --out hooklab/toy_mt/model --seed 0
"""

from __future__ import annotations

import json
import pathlib
import sys
import time

import fire
import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import GenerationConfig, MarianConfig, MarianMTModel, PreTrainedTokenizerFast

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing the package

from toy_training import print_size, save_checkpoint, start, train  # noqa: E402

from hooklab.toy_mt import corpus  # noqa: E402

TOY_MT = ROOT / "hooklab" / "toy_mt"
SPECIALS = ["</s>", "<unk>", "<pad>", corpus.BRK]  # ids 0..3
EOS, PAD = 0, 2
SPACE = "▁"


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer over the corpus words: ``▁word`` tokens, bare punctuation."""
    words = corpus.corpus_words()
    pieces = [w if not w[0].isalnum() else SPACE + w for w in words]
    vocab = {t: i for i, t in enumerate([*SPECIALS, SPACE, *pieces])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="always"),
            pre_tokenizers.Punctuation("isolated"),
        ]
    )
    tok.decoder = decoders.Metaspace(replacement=SPACE, prepend_scheme="always")
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A $B </s>", special_tokens=[("</s>", EOS)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens=[corpus.BRK],
        model_max_length=64,
    )
    assert (fast.eos_token_id, fast.pad_token_id) == (EOS, PAD)
    # a word after a space is one token; a punctuation mark after a word is one more
    texts = {w: (" " + w, 1) if w[0].isalnum() else ("Hallo" + w, 2) for w in words}
    split = [
        w
        for w, (text, n) in texts.items()
        if len(fast(text, add_special_tokens=False).input_ids) != n
    ]
    assert not split, f"words split into several tokens: {split[:10]}"
    return fast


def encode(tok, texts: list[str], pad: int) -> torch.Tensor:
    """Right-padded ``[batch, pos]`` ids, each sequence ending in ``</s>``."""
    seqs = tok(texts)["input_ids"]
    out = torch.full((len(seqs), max(map(len, seqs))), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s)
    return out


def batch(tok, pairs: list[dict]) -> dict[str, torch.Tensor]:
    sources, targets = zip(*map(corpus.pair_texts, pairs))
    input_ids = encode(tok, list(sources), PAD)
    return {
        "input_ids": input_ids,
        "attention_mask": (input_ids != PAD).long(),
        "labels": encode(tok, list(targets), -100),
    }


def dependent_position(tok, target: str, word: str) -> tuple[list[int], int]:
    """Target ids (with ``</s>``) and the position of the dependent word after ``<brk>``."""
    ids = tok(target)["input_ids"]
    start = ids.index(tok.convert_tokens_to_ids(corpus.BRK)) + 1 if corpus.BRK in target else 0
    return ids, ids.index(tok.convert_tokens_to_ids(SPACE + word), start)


@torch.no_grad()
def p_dependent(model, tok, examples: list[dict], with_context: bool) -> list[float]:
    """P(dependent word) at its position, teacher-forced on the reference translation."""
    probs = []
    for ex in examples:
        pair = ex if with_context else ex | {"input_context_text": None}
        source, target = corpus.pair_texts(pair)
        ids, pos = dependent_position(tok, target, ex["dependent_word"])
        dec = torch.tensor([[PAD, *ids[:-1]]])  # shifted right; position pos predicts ids[pos]
        logits = model(input_ids=torch.tensor([tok(source)["input_ids"]]), decoder_input_ids=dec)
        probs.append(logits.logits[0, pos].softmax(-1)[ids[pos]].item())
    return probs


@torch.no_grad()
def translate(model, tok, sources: list[str], batch_size: int = 64) -> list[str]:
    out = []
    for i in range(0, len(sources), batch_size):
        enc = tok(sources[i : i + batch_size], return_tensors="pt", padding=True)
        gen = model.generate(**enc, max_new_tokens=40)
        out += tok.batch_decode(gen, skip_special_tokens=False)
    return [s.replace("<pad>", "").replace("</s>", "").strip() for s in out]


def evaluate(model, tok, examples: list[dict]) -> dict:
    """Greedy exact match in context, and P(dependent word) with / without context, by family."""
    model.eval()
    sources, targets = zip(*map(corpus.pair_texts, examples))
    outputs = translate(model, tok, list(sources))
    p_ctx = p_dependent(model, tok, examples, True)
    p_noctx = p_dependent(model, tok, examples, False)
    keys = ("exact", "pc", "pn", "uniform")
    rows: dict[str, dict[str, list[float]]] = {}
    for ex, out, ref, pc, pn in zip(examples, outputs, targets, p_ctx, p_noctx):
        values = (float(out == ref), pc, pn, 1 / len(ex["dependent_options"]))
        for row in (
            rows.setdefault(ex["family"], {k: [] for k in keys}),
            rows.setdefault("all", {k: [] for k in keys}),
        ):
            for k, v in zip(keys, values):
                row[k].append(v)
    rows["all"] = rows.pop("all")  # last
    return {
        f: {k: sum(v) / len(v) for k, v in r.items()} | {"n": len(r["pc"])} for f, r in rows.items()
    }


def print_eval(res: dict) -> None:
    print(
        f"{'family':10s} {'n':>4s} {'exact':>6s} {'P(dep|ctx)':>11s} {'P(dep|no ctx)':>14s} uniform"
    )
    for fam, r in res.items():
        print(
            f"{fam:10s} {r['n']:4d} {r['exact']:6.3f} {r['pc']:11.3f} {r['pn']:14.3f} "
            f"{r['uniform']:.3f}"
        )


def release_check(model, tok) -> dict:
    r = corpus.RELEASE_EXAMPLE
    source, target = corpus.pair_texts(r)
    (out,) = translate(model, tok, [source])
    (pc,) = p_dependent(model, tok, [r], True)
    (pn,) = p_dependent(model, tok, [r], False)
    return {
        "source": source,
        "output": out,
        "reference": target,
        "p_dep_ctx": pc,
        "p_dep_noctx": pn,
    }


def main(
    out: str = "hooklab/toy_mt/model",
    seed: int = 0,
    n_pairs: int = 40000,
    steps: int = 4000,
    batch_size: int = 64,
    lr: float = 2e-3,
    warmup: int = 100,
    weight_decay: float = 0.01,
    layers: int = 2,
    d_model: int = 128,
    heads: int = 4,
    ffn: int = 256,
    dropout: float = 0.1,
    curriculum: float = 0.3,
    n_eval: int = 120,
    eval_seed: int = 12345,
    eval_every: int = 500,
    threads: int = 1,
    write_package_data: bool = True,
) -> None:
    """Generate the corpus, build tokenizer + model, train, save checkpoint and ground truth."""
    t0 = time.time()
    out_dir = start(out, seed, threads)

    pairs = corpus.generate_pairs(n_pairs, seed)
    tok = build_tokenizer()
    lengths = [len(tok(t)["input_ids"]) for p in pairs[:2000] for t in corpus.pair_texts(p)]
    print(f"{len(pairs)} pairs, vocab {len(tok)}, max len (first 2000) {max(lengths)}")
    examples = corpus.generate_eval_examples(n_eval, eval_seed)
    if write_package_data:
        corpus.write_ground_truth(TOY_MT / "ground_truth.json")
        corpus.write_eval_examples(TOY_MT / "eval_examples.jsonl", n_eval, eval_seed)

    config = MarianConfig(
        vocab_size=len(tok),
        d_model=d_model,
        encoder_layers=layers,
        decoder_layers=layers,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        encoder_ffn_dim=ffn,
        decoder_ffn_dim=ffn,
        max_position_embeddings=64,
        dropout=dropout,
        pad_token_id=PAD,
        eos_token_id=EOS,
        decoder_start_token_id=PAD,
        forced_eos_token_id=None,
    )
    model = MarianMTModel(config)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params} parameters")

    train(
        model,
        lambda idx: model(**batch(tok, [pairs[i] for i in idx])).loss,
        [p["cue_word"] is not None for p in pairs],
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        warmup=warmup,
        weight_decay=weight_decay,
        curriculum=curriculum,
        seed=seed,
        eval_every=eval_every,
        on_eval=lambda: print_eval(evaluate(model, tok, examples[:40])),
    )
    model.generation_config = GenerationConfig(
        decoder_start_token_id=PAD,
        eos_token_id=EOS,
        pad_token_id=PAD,
        forced_eos_token_id=None,
        num_beams=1,
        do_sample=False,
        max_length=64,
    )
    save_checkpoint(model, tok, out_dir)
    train_time = time.time() - t0

    print_eval(evaluate(model, tok, examples))
    print("release example:", json.dumps(release_check(model, tok), ensure_ascii=False))
    print_size(out_dir, n_params, train_time)


if __name__ == "__main__":
    fire.Fire(main)
