"""The memory budget every method shares: how many token rows one batched pass may hold.

A leaf module (it imports only :mod:`hooklab.options`, itself a leaf), so that the attribution
methods (:mod:`hooklab.methods`) and the context-mixing methods (:mod:`hooklab.mixing`) read
one default without importing each other.
"""

from __future__ import annotations

#: Default of every method's ``max_batch_tokens``: sequence-tokens per forward pass or VJP.
MAX_BATCH_TOKENS = 2048
#: Elements (floats) of per-layer activations one clean capture may hold: value zeroing
#: records as many layers per clean forward as fit (all of a short input's, one of a long one's:
#: from about 650 tokens on GPT-2-small's shape). 2^23 (32 MB in float32; was 2^26): at 1,000
#: tokens on a 12-layer, 4-head GPT-2 the value-zeroing peak fell from 584 to 181 MB, the
#: extra clean forwards costing little next to the n² MLP rows each layer recomputes.
CAPTURE_ELEMENTS = 1 << 23
#: Elements of one layer's attention scores a no-grad pass of several copies may hold: past
#: it, eager attention costs more per sequence as copies are added (measured, one CPU thread,
#: 2-layer 4-head GPT-2 at 1,000 tokens: 0.19 s per sequence one per pass, 0.28 two, 0.39
#: eight), below it batching copies pays (256 tokens: 32 per pass 20% faster than 8).
ATTENTION_ELEMENTS = 1 << 22


def layer_groups(layers: list[int], per_layer: int) -> list[list[int]]:
    """Split ``layers`` into consecutive groups whose captures (``per_layer`` elements each)
    fit :data:`CAPTURE_ELEMENTS`; at least one layer per group."""
    size = max(1, CAPTURE_ELEMENTS // max(1, per_layer))
    return [layers[i : i + size] for i in range(0, len(layers), size)]


#: Elements of one layer's attention scores (``batch x head x query rows x key_pos``) a pass of
#: the ``attention`` method may hold: longer inputs run their queries in chunks over the KV
#: cache (4 MB in float32: at 2,000 tokens on 4 heads, 131 query rows per pass).
SCORE_ELEMENTS = 1 << 20


def query_chunk(batch: int, heads: int, width: int) -> int:
    """Query positions per pass that keep one layer's scores within :data:`SCORE_ELEMENTS`
    (at least 16; the whole ``width`` when it fits)."""
    return max(16, SCORE_ELEMENTS // max(1, batch * heads * width))


def attention_rows(heads: int, width: int) -> int:
    """Copies of a ``width``-position sequence per no-grad pass whose attention scores
    (``heads x width²`` each) fit :data:`ATTENTION_ELEMENTS`; at least 1."""
    return max(1, ATTENTION_ELEMENTS // max(1, heads * width * width))


def plan(
    n_rows: int,
    width: int,
    steps: int,
    max_batch_tokens: int,
    *,
    max_rows: int | None = None,
    max_steps: int | None = None,
) -> tuple[int, int]:
    """Return (sequences per forward pass, steps per batched VJP) within the token budget.

    The most rows ``r`` (at most ``max_rows``) with ``r * width <= max_batch_tokens``, then the
    most steps ``c`` (at most ``max_steps``) with ``c * r * width <= max_batch_tokens``; at
    least 1 each (a sequence longer than the budget runs alone, one step at a time). Rows come
    first: every forward pass costs a fixed overhead, while a VJP costs about the same per
    (row, step) whatever the chunk.
    """
    rows = max(1, min(n_rows, max_rows or n_rows, max_batch_tokens // max(1, width)))
    steps = max(1, min(steps, max_steps or steps))
    return rows, max(1, min(steps, max_batch_tokens // max(1, rows * width)))


def attention_bound(heads: int, d_model: int, d_mlp: int, width: int) -> bool:
    """True where one sequence's attention outweighs its dense activations in a VJP
    (``H·w >= (12·d_model + 3·d_mlp) / 2``): ``vjp="auto"`` then runs the steps one at a time,
    since a batched VJP copies every step's ``[head, pos, pos]`` gradients. Measured, one CPU
    thread, saliency with 4 steps: 2-layer GPT-2 (d_model 64, 4 heads) 0.048 s batched / 0.059 s
    looped at 128 tokens, 0.40 / 0.20 s at 512, 1.54 / 0.67 s at 1,000; GPT-2-small shape
    at 1,000 tokens 63-74 / 55-59 s."""
    return 2 * heads * width >= 12 * d_model + 3 * d_mlp


def check_positive(name: str, value: object, what: str = "", *, optional: bool = False) -> None:
    """Raise unless ``value`` is an int >= 1 (or None when ``optional``): the
    :data:`~hooklab.options.PositiveInt` rule, for callers outside a method's declaration."""
    from hooklab.options import PositiveInt, check_value

    del what  # the rule names itself
    check_value(name, value, PositiveInt | None if optional else PositiveInt)


__all__ = [
    "ATTENTION_ELEMENTS",
    "CAPTURE_ELEMENTS",
    "MAX_BATCH_TOKENS",
    "SCORE_ELEMENTS",
    "attention_bound",
    "attention_rows",
    "check_positive",
    "layer_groups",
    "plan",
    "query_chunk",
]
