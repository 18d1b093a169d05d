"""What the plain twin's invalidation key costs per forward, CPU, one thread.

Before each hook-free pass, :func:`hooklab.plain._key` walks every module of the bridge and of
its Hugging Face model and reads every parameter and buffer (id, storage, dtype, device), so
that a replaced tensor or a dtype move rebuilds the twin (issue 19). Printed per model: the
key's time, a hook-free ``forward`` (which includes it) at 30 and 200 tokens, and the key as a
share of that forward. Models: the toy model and the GPT-2-small-shaped random model of the
other benchmarks (``benchmarks/common.py``).

Measured (2 shared cores, load average 6-8, so both columns are inflated): toy 0.17 ms of a
13 ms forward (1.3%); GPT-2-small-shaped (803 modules, 221 tensors) 0.53 ms of 350 ms at 30
tokens (0.15%), 0.63 ms of 1.5 s at 200 tokens (0.04%). On a GPU, where a forward takes a few
milliseconds, the key (CPU work) weighs more; not measured here.

    python benchmarks/twin_key.py [--repeats 20]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fire
import torch

import hooklab
from benchmarks.common import median_time, random_gpt2, take_turns
from hooklab import plain
from hooklab.forward import forward, twin
from hooklab.inputs import make_batch


def _row(name: str, model, tokens: int, repeats: int) -> None:
    ids = [[(37 * i + 11) % (model.cfg.d_vocab - 1) + 1 for i in range(tokens)]]
    batch = make_batch(ids, device="cpu")
    with torch.no_grad():
        assert twin(model) is not None  # the forwards timed run on the twin
        times = take_turns(
            {
                "key": lambda: median_time(lambda: plain._key(model), 20)[0],
                "forward": lambda: median_time(lambda: forward(model, batch), 1)[0],
            },
            repeats,
        )
    key, fwd = (sorted(times[k])[len(times[k]) // 2] for k in ("key", "forward"))
    print(f"{name:18s} {tokens:4d} tok  key {key * 1e3:7.3f} ms  forward {fwd * 1e3:8.2f} ms  "
          f"key/forward {key / fwd:6.2%}")  # fmt: skip


def main(repeats: int = 20) -> None:
    torch.set_num_threads(1)
    models = {"toy": hooklab.load("toy", device="cpu")}
    models["gpt2-small-shaped"] = hooklab.load(random_gpt2(), device="cpu")
    for name, model in models.items():
        n_modules = len({id(m) for m in (*model.modules(), *model.original_model.modules())})
        n_tensors = len([*model.original_model.parameters(), *model.original_model.buffers()])
        print(f"{name}: {n_modules} modules, {n_tensors} parameters and buffers")
        for tokens in (30, 200) if name != "toy" else (30,):
            _row(name, model, tokens, repeats)


if __name__ == "__main__":
    fire.Fire(main)
