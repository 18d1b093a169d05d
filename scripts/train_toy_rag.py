"""Train the embedded toy retrieval model shipped in ``hooklab/toy_rag/model``.

Generates the corpus (``hooklab.toy_rag.corpus``), trains a byte-level BPE tokenizer in which
every corpus word is one token and which adds the BOS the model reads first, trains a tiny Llama
(rotary positions; ``--arch gpt2`` for GPT-2) on the answers (``--answer_only False``: every
token), the answer values weighted ``value_weight`` times (the tokens that need the right
document). Every ``eval_every`` steps it scores greedy answers on the held-out examples, saves
the best checkpoint so far (a standard Hugging Face one) and stops once exact match reaches
``stop_at``. Writes ``eval_examples.jsonl`` (held out: another seed). Deterministic on CPU given
the arguments.

    nice -n 10 python scripts/train_toy_rag.py --out hooklab/toy_rag/model --seed 0

The shipped checkpoint is this command's output (defaults: 4 layers x 128, 8 heads, 3,500
steps, about 35 minutes on one loaded CPU core).
"""

from __future__ import annotations

import pathlib
import sys
import time

import fire
import torch
from transformers import (
    AutoModelForCausalLM,
    GenerationConfig,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing the package

from toy_training import print_size, save_checkpoint, start, train, word_tokenizer  # noqa: E402

from hooklab.toy_rag import corpus  # noqa: E402

TOY_RAG = ROOT / "hooklab" / "toy_rag"
EOT = corpus.BOS


def train_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """Byte-level BPE in which every corpus word (with or without leading space) is one token."""
    return word_tokenizer(texts, corpus.corpus_words(), EOT, vocab_size=1024)


def encode(tok, example: dict) -> tuple[list[int], int]:
    """Ids ``[EOT, prompt, answer, EOT]`` and where the answer starts."""
    prompt, answer = corpus.training_text(example)
    p = tok.encode(prompt)  # starts with BOS (the post-processor)
    return [*p, *tok.encode(answer, add_special_tokens=False), 0], len(p)


def has_distractor(example: dict) -> bool:
    """Whether a document of ``example`` holds no asked fact (the curriculum starts without)."""
    gold = {d for ids in example["gold_documents"] for d in ids}
    return len(example["documents"]) > len(gold)


def make_batch(items: list[tuple[list[int], int]], answer_only: bool) -> tuple[torch.Tensor, ...]:
    """Right-padded ids, attention mask, and labels (on the answer only, or on every token)."""
    width = max(len(s) for s, _ in items)
    ids = torch.zeros(len(items), width, dtype=torch.long)
    mask = torch.zeros(len(items), width, dtype=torch.long)
    labels = torch.full((len(items), width), -100, dtype=torch.long)
    for i, (s, a) in enumerate(items):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
        a = a if answer_only else 1
        labels[i, a : len(s)] = ids[i, a : len(s)]
    return ids, mask, labels


@torch.no_grad()
def answer(model, tok, examples: list[dict], max_new_tokens: int = 16) -> list[str]:
    """Greedy answers (batched, left-padded)."""
    prompts = [tok.encode(corpus.training_text(e)[0]) for e in examples]
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=0,
        eos_token_id=0,
    )
    return [tok.decode([t for t in row[width:].tolist() if t != 0]) for row in out]


def evaluate(model, tok, examples: list[dict]) -> dict[str, float]:
    """Exact-match accuracy of greedy answers, per kind and overall."""
    model.eval()
    got = answer(model, tok, examples)
    res: dict[str, list[float]] = {}
    for ex, g in zip(examples, got, strict=True):
        for k in (ex["kind"], "all"):
            res.setdefault(k, []).append(float(g.strip() == ex["answer"]))
    return {k: sum(v) / len(v) for k, v in res.items()}


def main(
    out: str = "hooklab/toy_rag/model",
    seed: int = 0,
    n_examples: int = 60000,
    steps: int = 3500,
    batch_size: int = 32,
    lr: float = 2e-3,
    warmup: int = 100,
    weight_decay: float = 0.01,
    n_layer: int = 4,
    n_embd: int = 128,
    n_head: int = 8,
    mlp_ratio: int = 2,
    dropout: float = 0.0,
    curriculum: float = 0.2,
    answer_only: bool = True,
    arch: str = "llama",
    value_weight: float = 4.0,
    n_eval: int = 120,
    eval_seed: int = 12345,
    eval_every: int = 250,
    stop_at: float = 0.99,
    threads: int = 1,
    write_package_data: bool = True,
    init: str | None = None,
    recall: float = 0.0,
    max_documents: int = 5,
) -> None:
    """Generate the corpus, train tokenizer + model, save the checkpoint and the eval examples.

    ``init``: a checkpoint directory to continue training from (its model and tokenizer).
    ``recall``: share of training examples that ask about every document's person (dense
    practice of the name -> value lookup); ``max_documents``: most documents per example.
    """
    t0 = time.time()
    out_dir = start(out, seed, threads)
    share = (1.0 - recall) / 2
    kinds = {"single": share, "two_people": share, corpus.RECALL: recall}
    examples = corpus.generate_examples(n_examples, seed, max_documents=max_documents, kinds=kinds)
    texts = ["".join(corpus.training_text(e)) for e in examples[:5000]]
    tok = train_tokenizer(texts) if init is None else PreTrainedTokenizerFast.from_pretrained(init)
    items = [encode(tok, e) for e in examples]
    print(f"{len(items)} examples, vocab {len(tok)}, max len {max(len(s) for s, _ in items)}")
    held_out = corpus.generate_eval_examples(n_eval, eval_seed)
    if write_package_data:
        corpus.write_eval_examples(TOY_RAG / "eval_examples.jsonl", n_eval, eval_seed)

    if init is None:
        model = build_model(arch, len(tok), n_layer, n_embd, n_head, dropout, mlp_ratio)
    else:
        model = AutoModelForCausalLM.from_pretrained(init)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {arch}, {n_params} parameters")

    values = torch.zeros(len(tok), dtype=torch.bool)
    values[[tok.convert_tokens_to_ids("Ġ" + w) for w in corpus.value_words()]] = True

    def loss_of(idx: list[int]) -> torch.Tensor:
        ids, mask, labels = make_batch([items[i] for i in idx], answer_only)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        target = labels[:, 1:]
        per_token = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), target, ignore_index=-100, reduction="none"
        )
        weight = (target != -100).float() * torch.where(
            values[target.clamp(min=0)], value_weight, 1.0
        )
        return (per_token * weight).sum() / weight.sum()

    model.generation_config = GenerationConfig(bos_token_id=0, eos_token_id=0, pad_token_id=0)
    best = {"all": -1.0}

    def on_eval() -> bool:
        """Score the held-out examples; keep the best checkpoint; stop at ``stop_at``."""
        scores = evaluate(model, tok, held_out)
        print("held-out exact match:", scores, flush=True)
        if scores["all"] > best["all"]:
            best.update(scores)
            save_checkpoint(model, tok, out_dir)
        return scores["all"] >= stop_at

    train(
        model,
        loss_of,
        [not has_distractor(e) for e in examples],
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        warmup=warmup,
        weight_decay=weight_decay,
        curriculum=curriculum,
        seed=seed,
        eval_every=eval_every,
        on_eval=on_eval,
    )
    final = evaluate(model, tok, held_out)
    print("held-out exact match:", final, flush=True)
    if final["all"] >= best["all"]:
        save_checkpoint(model, tok, out_dir)
    train_time = time.time() - t0
    print("kept held-out exact match:", max(final["all"], best["all"]))
    print_size(out_dir, n_params, train_time)


def build_model(
    arch: str, vocab: int, n_layer: int, n_embd: int, n_head: int, dropout: float, mlp_ratio: int
):
    """A GPT-2 (learned absolute positions) or a Llama (rotary positions: the relative offsets
    between a name and its value are learned much faster)."""
    if arch == "llama":
        config = LlamaConfig(
            vocab_size=vocab,
            hidden_size=n_embd,
            intermediate_size=mlp_ratio * n_embd,
            num_hidden_layers=n_layer,
            num_attention_heads=n_head,
            max_position_embeddings=128,
            attention_dropout=dropout,
            bos_token_id=0,
            eos_token_id=0,
            pad_token_id=0,
            tie_word_embeddings=True,
        )
        return LlamaForCausalLM(config)
    if arch != "gpt2":
        raise ValueError(f"arch must be 'gpt2' or 'llama', got {arch!r}.")
    config = GPT2Config(
        vocab_size=vocab,
        n_positions=128,
        n_embd=n_embd,
        n_inner=mlp_ratio * n_embd,
        n_layer=n_layer,
        n_head=n_head,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    return GPT2LMHeadModel(config)


if __name__ == "__main__":
    fire.Fire(main)
