"""The training loop both toy models share (``train_toy.py`` and ``train_toy_mt.py``).

AdamW (weight decay on matrices only), linear warm-up then cosine decay to 10% of the rate,
gradient clipping at 1.0, and a curriculum: the first ``curriculum`` fraction of the steps draws
only from the examples whose context holds the cue (the context lookup is learned much faster
without the uncued ones). Deterministic on CPU given the seed.
"""

from __future__ import annotations

import math
import pathlib
import time
from collections.abc import Callable

import torch


def start(out: str, seed: int, threads: int) -> pathlib.Path:
    """Seed, thread count, deterministic kernels, quiet transformers; make and return ``out``."""
    import transformers

    transformers.logging.set_verbosity_error()
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    out_dir = pathlib.Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def _optimizer(model, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr)


def _schedule(step: int, warmup: int, steps: int) -> float:
    """Learning-rate factor: linear warm-up, then cosine from 1 to 0.1."""
    cosine = 0.1 + 0.45 * (1 + math.cos(math.pi * min(step, steps) / steps))
    return min(1.0, (step + 1) / warmup) * cosine


def train(
    model,
    loss_of: Callable[[list[int]], torch.Tensor],
    cued: list[bool],
    *,
    steps: int,
    batch_size: int,
    lr: float,
    warmup: int,
    weight_decay: float,
    curriculum: float,
    seed: int,
    eval_every: int = 0,
    on_eval: Callable[[], None] | None = None,
) -> None:
    """Train ``model`` in place on batches of example indices; ``loss_of(indices)`` is the loss.

    Args:
        cued: per example, whether its context holds the cue (the curriculum's first pool).
        on_eval: called every ``eval_every`` steps (not after the last one); training stops
            early when it returns True.
    """
    t0 = time.time()
    opt = _optimizer(model, lr, weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, warmup, steps))
    pools = {
        "cued": torch.tensor([i for i, c in enumerate(cued) if c]),
        "all": torch.arange(len(cued)),
    }
    gen = torch.Generator().manual_seed(seed)
    order = {k: (v[torch.randperm(len(v), generator=gen)], 0) for k, v in pools.items()}
    ema = None
    for step in range(1, steps + 1):
        model.train()
        pool = "cued" if step <= curriculum * steps else "all"
        perm, pos = order[pool]
        if pos + batch_size > len(perm):
            perm, pos = pools[pool][torch.randperm(len(perm), generator=gen)], 0
        order[pool] = (perm, pos + batch_size)
        loss = loss_of(perm[pos : pos + batch_size].tolist())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if step % 50 == 0 or step == 1:
            print(
                f"step {step:5d}  loss {loss.item():.4f}  ema {ema:.4f}  "
                f"lr {sched.get_last_lr()[0]:.2e}  {time.time() - t0:.0f}s",
                flush=True,
            )
        due = on_eval is not None and eval_every and step % eval_every == 0 and step < steps
        if due and on_eval() is True:
            break
    model.eval()


def word_tokenizer(texts: list[str], words: list[str], eot: str, vocab_size: int):
    """Byte-level BPE in which every corpus word (with or without leading space) is one token;
    ``eot`` (id 0) is BOS, EOS, unk and pad, and the tokenizer adds it first, as the toy models
    are trained (so ``tokenizer(text)`` is what they saw)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=[eot],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([*texts, " ".join(words), *words], trainer=trainer)
    assert tok.token_to_id(eot) == 0
    bad = [w for w in words for s in (w, " " + w) if len(tok.encode(s).ids) != 1]
    assert not bad, f"words split into several tokens: {bad[:10]}"
    tok.post_processor = processors.TemplateProcessing(
        single=f"{eot} $A", pair=f"{eot} $A {eot} $B", special_tokens=[(eot, 0)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=eot, eos_token=eot, unk_token=eot, pad_token=eot,
        model_max_length=128,
    )  # fmt: skip


def save_checkpoint(model, tokenizer, out_dir: pathlib.Path) -> None:
    """Save model and tokenizer, world-readable (safetensors writes 0600; package data)."""
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    for f in out_dir.iterdir():
        f.chmod(0o644)


def print_size(out_dir: pathlib.Path, n_params: int, seconds: float) -> None:
    """One line: parameters, checkpoint size, training time and the files written."""
    size = sum(f.stat().st_size for f in out_dir.iterdir() if f.is_file()) / 2**20
    print(
        f"params {n_params}, checkpoint {size:.2f} MB, training+save {seconds:.0f}s, "
        f"files {sorted(f.name for f in out_dir.iterdir())}"
    )
