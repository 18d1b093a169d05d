"""Train the embedded toy "context LM" shipped in ``hooklab/toy/model``.

Generates the corpus (``hooklab.toy.corpus``), trains a byte-level BPE tokenizer and a tiny
GPT-2, saves a standard Hugging Face checkpoint and regenerates ``ground_truth.json`` and
``eval_examples.jsonl``.  Deterministic on CPU given the arguments.

    python scripts/train_toy.py --out hooklab/toy/model --seed 0
"""

from __future__ import annotations

import json
import pathlib
import random
import sys
import time

import fire
import torch
from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing the package

from toy_training import print_size, save_checkpoint, start, train, word_tokenizer  # noqa: E402

from hooklab.toy import corpus  # noqa: E402

TOY = ROOT / "hooklab" / "toy"
EOT = corpus.BOS
CHECKPOINT_FILES = [
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
]


def body(doc: dict) -> str:
    return ((doc["context"] + " ") if doc["context"] else "") + doc["current"] + doc["continuation"]


def train_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """Byte-level BPE in which every corpus word (with or without leading space) is one token."""
    return word_tokenizer(texts, corpus.corpus_words(), EOT, vocab_size=4096)


def _loss(model, seqs: list[list[int]]) -> torch.Tensor:
    ids, labels = make_batch(seqs)
    return model(input_ids=ids, attention_mask=(labels != -100).long(), labels=labels).loss


def make_batch(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad with 0; labels are -100 on padding (the final EOS is a real target)."""
    width = max(map(len, seqs))
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    labels = torch.full((len(seqs), width), -100, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        labels[i, : len(s)] = ids[i, : len(s)]
    return ids, labels


@torch.no_grad()
def greedy(model, ids: list[int], max_new_tokens: int = 12) -> list[int]:
    out: list[int] = []
    for _ in range(max_new_tokens):
        nxt = int(model(torch.tensor([ids + out])).logits[0, -1].argmax())
        if nxt == 0:
            break
        out.append(nxt)
    return out


@torch.no_grad()
def next_token_probs(model, ids: list[int]) -> torch.Tensor:
    return model(torch.tensor([ids])).logits[0, -1].softmax(-1)


def evaluate(model, tok, examples: list[dict]) -> dict:
    """Greedy accuracy with context and P(dependent word) at its slot with / without context."""
    model.eval()
    per_family: dict[str, dict[str, list[float]]] = {}
    for ex in examples:
        out = ex["output_current_text"]
        prefix = out[: out.index(" " + ex["dependent_word"])]
        dep_id = tok.convert_tokens_to_ids("Ġ" + ex["dependent_word"])
        ctx_text = ex["input_context_text"] + " " + ex["input_current_text"]
        ctx_ids = [0, *tok.encode(ctx_text)]
        gen = tok.decode(greedy(model, ctx_ids))
        p_ctx = next_token_probs(model, [0, *tok.encode(ctx_text + prefix)])[dep_id].item()
        p_noctx = next_token_probs(model, [0, *tok.encode(ex["input_current_text"] + prefix)])
        row = per_family.setdefault(ex["family"], {k: [] for k in ("exact", "dep", "pc", "pn")})
        row["exact"].append(float(gen == out))
        row["dep"].append(float(ex["dependent_word"] in gen))
        row["pc"].append(p_ctx)
        row["pn"].append(p_noctx[dep_id].item())
    mean = lambda xs: sum(xs) / max(len(xs), 1)  # noqa: E731
    allv = {k: [v for r in per_family.values() for v in r[k]] for k in ("exact", "dep", "pc", "pn")}
    res = {
        f: {k: mean(v) for k, v in r.items()} | {"n": len(r["dep"])}
        for f, r in sorted(per_family.items())
    }
    res["all"] = {k: mean(v) for k, v in allv.items()} | {"n": len(allv["dep"])}
    return res


def uncued_spread(model, tok, n: int = 200, seed: int = 54321) -> dict:
    """Mean P(slot word) and top slot probability on held-out distractor-context documents."""
    model.eval()
    rng, stats = random.Random(seed), {}
    for i in range(n):
        fam = corpus.FAMILIES[i % len(corpus.FAMILIES)]
        doc = corpus.make_document(rng, fam, "distractor")
        prefix = doc["continuation"][: doc["continuation"].index(" " + doc["dependent_word"])]
        text = doc["context"] + " " + doc["current"] + prefix
        probs = next_token_probs(model, [0, *tok.encode(text)])
        slot = torch.tensor(tok.convert_tokens_to_ids(["Ġ" + w for w in corpus.slot_values(fam)]))
        row = stats.setdefault(fam["name"], [[], [], len(slot)])
        row[0].append(probs[slot].sum().item())
        row[1].append(probs[slot].max().item())
    return {
        f: {"slot_mass": sum(a) / len(a), "max_slot_p": sum(b) / len(b), "uniform": 1 / k}
        for f, (a, b, k) in stats.items()
    }


def print_eval(res: dict) -> None:
    print(
        f"{'family':10s} {'n':>4s} {'exact':>6s} {'dep':>6s} {'P(dep|ctx)':>11s} "
        f"{'P(dep|no ctx)':>14s}"
    )
    for fam, r in res.items():
        print(
            f"{fam:10s} {r['n']:4d} {r['exact']:6.3f} {r['dep']:6.3f} {r['pc']:11.3f} "
            f"{r['pn']:14.3f}"
        )


def release_check(model, tok) -> dict:
    r = corpus.RELEASE_EXAMPLE
    ctx = [0, *tok.encode(r["input_context_text"] + " " + r["input_current_text"])]
    gen = tok.decode(greedy(model, ctx))
    hosp = tok.convert_tokens_to_ids("Ġhospital")
    p_c = next_token_probs(model, ctx + tok.encode(" to the"))
    p_n = next_token_probs(model, [0, *tok.encode(r["input_current_text"] + " to the")])
    top = p_n.topk(5)
    return {
        "greedy_with_context": gen,
        "p_hospital_with_context": p_c[hosp].item(),
        "p_hospital_without_context": p_n[hosp].item(),
        "top5_without_context": [
            (tok.decode([int(i)]), round(float(p), 4)) for p, i in zip(top.values, top.indices)
        ],
    }


def main(
    out: str = "hooklab/toy/model",
    seed: int = 0,
    n_docs: int = 40000,
    steps: int = 1500,
    batch_size: int = 64,
    lr: float = 3e-3,
    warmup: int = 100,
    weight_decay: float = 0.01,
    n_layer: int = 4,
    n_embd: int = 96,
    n_head: int = 4,
    dropout: float = 0.1,
    curriculum: float = 0.3,
    n_eval: int = 100,
    eval_seed: int = 12345,
    eval_every: int = 500,
    threads: int = 1,
    write_package_data: bool = True,
) -> None:
    """Generate the corpus, train tokenizer + model, save the checkpoint and the ground truth."""
    t0 = time.time()
    out_dir = start(out, seed, threads)

    docs = corpus.generate_documents(n_docs, seed)
    texts = [body(d) for d in docs]
    tok = train_tokenizer(texts)
    seqs = [[0, *tok.encode(t), 0] for t in texts]
    print(
        f"{len(docs)} documents, vocab {len(tok)}, max len {max(map(len, seqs))}, "
        f"tokens {sum(map(len, seqs))}"
    )
    examples = corpus.generate_eval_examples(n_eval, eval_seed)
    if write_package_data:
        corpus.write_ground_truth(TOY / "ground_truth.json")
        corpus.write_eval_examples(TOY / "eval_examples.jsonl", n_eval, eval_seed)

    config = GPT2Config(
        vocab_size=len(tok),
        n_positions=128,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    model = GPT2LMHeadModel(config)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params} parameters")

    train(
        model,
        lambda idx: _loss(model, [seqs[i] for i in idx]),
        [d["cue_word"] is not None for d in docs],
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        warmup=warmup,
        weight_decay=weight_decay,
        curriculum=curriculum,
        seed=seed,
        eval_every=eval_every,
        on_eval=lambda: print_eval(evaluate(model, tok, examples)),
    )
    model.generation_config = GenerationConfig(bos_token_id=0, eos_token_id=0, pad_token_id=0)
    save_checkpoint(model, tok, out_dir)
    train_time = time.time() - t0

    res = evaluate(model, tok, examples)
    print_eval(res)
    spread = uncued_spread(model, tok)
    print("distractor contexts (slot mass, mean max slot prob vs uniform):")
    for fam, r in spread.items():
        print(f"  {fam:10s} {r['slot_mass']:.3f} {r['max_slot_p']:.3f} vs {r['uniform']:.3f}")
    rel = release_check(model, tok)
    print("release example:", json.dumps(rel))
    print_size(out_dir, n_params, train_time)


if __name__ == "__main__":
    fire.Fire(main)
