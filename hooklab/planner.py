"""Memory planning: each method's peak memory from the model's shape, before it runs.

One budget serves every method: ``max_batch_tokens`` (token rows per pass, what chunking
divides; :mod:`hooklab.budget`) and, optionally, ``max_bytes`` (the bytes the call may hold
above the model's weights). :func:`estimate` gives a method's peak from the model's shape and
the input's (examples, positions, steps, the method's options), term by term; :func:`fit`
lowers ``max_batch_tokens`` until the estimate fits ``max_bytes`` and raises
:class:`MemoryBudgetError` (naming the budget, the estimate and what to change) when even one
token row per pass does not fit: the part that cannot be chunked (a gradient method's
autograd graph of one whole sequence, a returned ``[layer, pos, pos]`` matrix) is too big.

The model, in elements of the compute dtype (glossary: ``L`` layers, ``H`` heads, ``d``
d_model, ``m`` d_mlp, ``V`` d_vocab; ``w`` positions of one sequence, ``s`` steps; rows
``r`` sequences per pass and ``c`` steps per VJP from :func:`hooklab.budget.plan`), plus
:data:`RUNTIME_BYTES`; the coefficients (:data:`FORWARD`, :data:`GRAPH_PER_LAYER`,
:data:`VJP`) were measured on GPT-2-shaped models (``tests/test_budget.py``):

- one no-grad forward, per sequence: ``F = 4·H·w² + 24·w·d + 2·w·m + 2·w·V``;
- the autograd graph of one sequence: ``G = L·(4·H·w² + 24·w·d + 3·w·m) + 3·w·V``;
- one step's VJP through it, per sequence: ``J = 5·H·w² + 24·w·d + 3·w·m + 2·w·V``;
- gradient methods: ``r·G + c·r·J + 2·b·s·w·d``, without the ``H·w²`` terms of ``G`` and ``J``
  where their passes run on the fused twin (fused attention, :mod:`hooklab.plain`); occlusion
  and ReAGent: ``r·F`` (+ the copies); attention: ``F`` with ``4·H·C·w`` for its ``4·H·w²``
  (``C`` query rows per pass, ``budget.query_chunk``) + the KV cache ``2·L·w·d`` when ``C < w``
  + ``L·H·s·w`` (the kept query rows); value zeroing: ``F`` + the captured layers
  (``budget.CAPTURE_ELEMENTS``, or one layer) + a block call on ``max_batch_tokens`` rows (``H·w
  + 12·d + 2·m`` each) + ``L·r·w`` (the scores of ``r`` query rows: the attribution method's
  ``s`` steps, the mixing entry's ``w``); ALTI-Logit ``F + L·(w·d·H + w²)``; ALTI ``F +
  8·L·w·d`` + a chunk + ``L·w²``; knockout ``batch_size·(F + w²)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

import torch

from hooklab.budget import (
    CAPTURE_ELEMENTS,
    MAX_BATCH_TOKENS,
    attention_bound,
    attention_rows,
    check_positive,
    plan,
    query_chunk,
)
from hooklab.forward import twin

#: Elements per sequence of ``w`` positions, as coefficients of ``(H·w², w·d, w·m, w·V)``:
#: measured through ``TransformerBridge`` on the CPU (eager attention keeps scores, masked
#: scores, pattern and hook copies; SDPA on a GPU keeps fewer), ``tests/test_budget.py``.
FORWARD = (4, 24, 2, 2)  # a no-grad forward's peak: one layer's attention at a time
#: The same on the fused twin (SDPA, no scores, no hook copies), for occlusion's and ReAGent's
#: perturbed passes: measured on the 2-layer test GPT-2, occlusion at 256 positions (16 copies
#: per pass) peaks at ~22 MB.
FUSED_FORWARD = (0, 12, 1, 1)
GRAPH_PER_LAYER = (4, 24, 3, 0)  # what autograd keeps of each layer
GRAPH_LOGITS = (0, 0, 0, 3)  # and of the logits
VJP = (5, 24, 3, 2)  # one step's backward pass through one layer and the logits
#: What a call holds whatever its size (allocator arenas, autograd's engine), measured on CPU.
RUNTIME_BYTES = 48 << 20


class MemoryBudgetError(ValueError):
    """A method's estimated peak memory does not fit ``max_bytes``, even unchunked to 1 row."""


@dataclass(frozen=True)
class Shape:
    """What memory depends on: the model's sizes and its compute dtype's bytes per element."""

    layers: int
    heads: int
    d_model: int
    d_mlp: int
    d_vocab: int
    bytes_per_element: int = 4
    fused_attention: bool = False  # the method's passes run on the fused twin: no scores

    @classmethod
    def of(cls, model) -> Shape:
        """The shape of a ``TransformerBridge`` (its ``cfg``; the dtype of its embedding)."""
        cfg = model.cfg
        d_model = int(cfg.d_model)
        d_mlp = int(getattr(cfg, "d_mlp", None) or 4 * d_model)
        weight = next(iter(model.parameters()), None)
        size = weight.element_size() if weight is not None else 4
        return cls(int(cfg.n_layers), int(cfg.n_heads), d_model, d_mlp, int(cfg.d_vocab), size)

    def elements(
        self, w: int, coefficients: tuple[int, int, int, int], rows: int | None = None
    ) -> int:
        """``a·H·rows·w + b·w·d + c·w·m + e·w·V`` for coefficients ``(a, b, c, e)``; ``rows``
        (the query rows of one pass's scores) defaults to ``w``."""
        a, b, c, e = coefficients
        rows = w if rows is None else rows
        return w * (a * self.heads * rows + b * self.d_model + c * self.d_mlp + e * self.d_vocab)

    def forward(self, w: int, rows: int | None = None) -> int:
        """Elements one sequence of ``w`` positions holds at the peak of a no-grad forward
        (``rows``: query rows per pass, for a forward in query chunks; default ``w``)."""
        return self.elements(w, FUSED_FORWARD if self.fused_attention else FORWARD, rows)

    def graph(self, w: int) -> int:
        """Elements of the autograd graph of one sequence of ``w`` positions."""
        per_layer = self.elements(w, self._fused(GRAPH_PER_LAYER))
        return self.layers * per_layer + self.elements(w, GRAPH_LOGITS)

    def vjp(self, w: int) -> int:
        """Elements one step's backward pass adds, per sequence of ``w`` positions."""
        return self.elements(w, self._fused(VJP))

    def _fused(self, coefficients: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        return (0, *coefficients[1:]) if self.fused_attention else coefficients


@dataclass(frozen=True)
class Estimate:
    """A method's estimated peak (bytes above the weights), term by term."""

    method: str
    examples: int
    positions: int
    steps: int
    max_batch_tokens: int
    terms: Mapping[str, int] = field(default_factory=dict)  # name -> bytes

    def __post_init__(self) -> None:
        object.__setattr__(self, "terms", MappingProxyType(dict(self.terms)))

    @property
    def bytes(self) -> int:
        return sum(self.terms.values())

    def __str__(self) -> str:
        parts = ", ".join(f"{k} {human(v)}" for k, v in self.terms.items())
        return (
            f"{self.method} on {self.examples} x {self.positions} positions, {self.steps} "
            f"step(s), max_batch_tokens={self.max_batch_tokens}: ~{human(self.bytes)} ({parts})"
        )


def human(n: int | float) -> str:
    """Bytes as ``'1.5 GB'`` (powers of 1024)."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024:
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TB"


Estimator = Callable[..., dict[str, int]]  # (shape, b, w, s, mbt, options) -> elements per term


def _gradient(shape: Shape, b: int, w: int, s: int, mbt: int, options: Mapping) -> dict[str, int]:
    n = options.get("n_steps", options.get("n_samples", 1))  # IG points, SHAP samples
    n = int(options.get("max_steps", 256)) if n == "auto" else int(n)
    rows, chunk = plan(b * n, w, s, mbt, max_rows=options.get("internal_batch_size"),
                       max_steps=options.get("vjp_chunk"))  # fmt: skip
    long = attention_bound(shape.heads, shape.d_model, shape.d_mlp, w)
    if options.get("vjp") == "loop" or (options.get("vjp", "auto") == "auto" and long):
        chunk = 1
    return {
        "autograd graph": rows * shape.graph(w),
        "VJP": chunk * rows * shape.vjp(w),
        "gradients": 2 * b * s * w * shape.d_model,
    }


def _copies(shape: Shape, b: int, w: int, s: int, mbt: int, options: Mapping) -> dict[str, int]:
    """Occlusion: copies per pass capped by the budget and by ``budget.attention_rows``."""
    cap = options.get("internal_batch_size") or attention_rows(shape.heads, w)
    rows, _ = plan(b * w, w, 1, mbt, max_rows=cap)
    return {"forward": rows * shape.forward(w), "copies": 2 * rows * w * shape.d_model,
            "scores": b * s * w}  # fmt: skip


def _probes(shape: Shape, b: int, w: int, s: int, mbt: int, options: Mapping) -> dict[str, int]:
    """ReAGent: probe copies per pass capped by the budget only."""
    rows, _ = plan(b * w, w, 1, mbt)
    return {"forward": rows * shape.forward(w), "copies": 2 * rows * w * shape.d_model,
            "scores": b * s * w}  # fmt: skip


def _attention(shape: Shape, b: int, w: int, s: int, mbt: int, options: Mapping) -> dict[str, int]:
    chunk = min(w, options.get("query_chunk") or query_chunk(b, shape.heads, w))
    cache = 2 * shape.layers * w * shape.d_model if chunk < w else 0  # the KV cache
    forward = shape.forward(w, rows=chunk) + cache
    return {"forward": b * forward, "kept rows": b * shape.layers * shape.heads * s * w}


def _value_zeroing(shape: Shape, b: int, w: int, s: int, mbt: int, options: Mapping) -> dict:
    """``query_rows``: the query rows computed (the attribution method's: its ``s`` steps;
    :func:`hooklab.mixing.value_zeroing`'s: all ``w``)."""
    r = min(w, options.get("query_rows") or s)
    per_layer = w * w + 4 * w * shape.d_model  # budget.layer_groups' unit (general path)
    fast = shape.heads * r * w + 6 * r * shape.d_model + w * shape.d_model  # the fast path's
    capture = min(shape.layers * max(per_layer, fast), max(CAPTURE_ELEMENTS, per_layer, fast))
    call = max(mbt, w) * (shape.heads * w + 12 * shape.d_model + 2 * shape.d_mlp)
    return {"clean forward": shape.forward(w), "captured layers": capture,
            "block call": call, "scores": shape.layers * r * w}  # fmt: skip


def _alti(shape: Shape, b: int, w: int, s: int, mbt: int, options: Mapping) -> dict[str, int]:
    per_layer = w * shape.d_model * shape.heads + w * w
    return {"forward": b * shape.forward(w), "contributions": b * shape.layers * per_layer}


def _mixing_alti(shape: Shape, b: int, w: int, s: int, mbt: int, options: Mapping) -> dict:
    """ALTI (:mod:`hooklab.mixing.alti`): every layer's recorded activations, a chunk of
    transformed vectors (``alti._CHUNK_ELEMENTS``), the ``[layer, pos, pos]`` matrices."""
    chunk = 1 << 22  # hooklab.mixing.alti._CHUNK_ELEMENTS
    return {
        "forward": shape.forward(w),
        "recorded": shape.layers * 8 * w * shape.d_model,
        "transformed": 4 * max(chunk, w * shape.d_model),
        "scores": shape.layers * w * w,
    }


def _knockout(shape: Shape, b: int, w: int, s: int, mbt: int, options: Mapping) -> dict:
    """Attention knockout: ``batch_size`` knocked-out copies per forward, their masks."""
    rows = int(options.get("batch_size", 16))
    return {"forward": rows * shape.forward(w), "masks": rows * w * w}


def _step_scores(shape: Shape, b: int, w: int, s: int, mbt: int, options: Mapping) -> dict:
    return {"forward": b * shape.forward(w)}


#: method name -> estimator of its terms (elements); a registered method missing here is
#: estimated as one forward pass per example (``dummy``'s).
ESTIMATORS: dict[str, Estimator] = {
    "dummy": _step_scores,
    "saliency": _gradient,
    "input_x_gradient": _gradient,
    "integrated_gradients": _gradient,
    "gradient_shap": _gradient,
    "occlusion": _copies,
    "reagent": _probes,
    "attention": _attention,
    "value_zeroing": _value_zeroing,
    "alti_logit": _alti,
    "alti": _mixing_alti,
    "knockout": _knockout,
}
#: What to change when a method's irreducible part does not fit (appended to the error).
FIXES = {
    "gradient": "a gradient method needs one whole sequence's autograd graph at once; use "
    "a perturbation or mixing method (occlusion, attention, value_zeroing), a shorter input, "
    "a lower-precision dtype, or a larger max_bytes",
    "default": "use a shorter input, a lower-precision dtype, or a larger max_bytes",
}


def method_shape(model_or_shape, method: str) -> Shape:
    """The :class:`Shape` ``method``'s estimate uses: a model's, with ``fused_attention`` set
    where the method's passes run on the fused twin (gradient and perturbation methods); a
    given :class:`Shape` as it is."""
    if isinstance(model_or_shape, Shape):
        return model_or_shape
    shape = Shape.of(model_or_shape)
    if ESTIMATORS.get(method) in (_gradient, _copies, _probes):
        with torch.enable_grad():  # do its passes run on the fused twin (no H·w² terms)?
            fused = twin(model_or_shape, embeds=True) is not None
        shape = replace(shape, fused_attention=fused)
    return shape


def estimate(
    model_or_shape,
    method: str,
    *,
    positions: int,
    steps: int = 1,
    examples: int = 1,
    max_batch_tokens: int = MAX_BATCH_TOKENS,
    **options,
) -> Estimate:
    """Estimate ``method``'s peak memory (bytes above the weights) on ``examples`` sequences of
    ``positions`` positions with ``steps`` attributed steps, before running it.

    Example:
        >>> import hooklab
        >>> from hooklab.planner import estimate
        >>> est = estimate(hooklab.load("toy"), "saliency", positions=512, steps=4)
        >>> est.bytes > 0
        True
    """
    shape = method_shape(model_or_shape, method)
    estimator = ESTIMATORS.get(method, _step_scores)
    terms = estimator(shape, examples, positions, steps, max_batch_tokens, options)
    size = shape.bytes_per_element
    terms = {k: v * size for k, v in terms.items()} | {"runtime": RUNTIME_BYTES}
    return Estimate(method, examples, positions, steps, max_batch_tokens, terms)


def fit(model_or_shape, method: str, *, max_bytes: int | None, **kwargs) -> Estimate:
    """:func:`estimate` at the largest ``max_batch_tokens`` (at most the one given) that fits
    ``max_bytes``; raise :class:`MemoryBudgetError` when even 1 does not. ``None``: no check."""
    check_positive("max_bytes", max_bytes, optional=True)
    model_or_shape = method_shape(model_or_shape, method)  # once, not per estimate below
    est = estimate(model_or_shape, method, **kwargs)
    if max_bytes is None or est.bytes <= max_bytes:
        return est
    lo, hi = 1, est.max_batch_tokens  # the estimate grows with max_batch_tokens
    least = estimate(model_or_shape, method, **{**kwargs, "max_batch_tokens": lo})
    if least.bytes > max_bytes:
        kind = "gradient" if ESTIMATORS.get(method) is _gradient else "default"
        raise MemoryBudgetError(
            f"max_bytes={max_bytes} ({human(max_bytes)}) is too small: the estimate for {least}"
            " is over it even at the smallest chunking (what is left cannot be split). To fit: "
            f"{FIXES[kind]} (at least max_bytes={least.bytes})."
        )
    while lo < hi:  # the largest max_batch_tokens that fits
        mid = (lo + hi + 1) // 2
        if (
            estimate(model_or_shape, method, **{**kwargs, "max_batch_tokens": mid}).bytes
            <= max_bytes
        ):
            lo = mid
        else:
            hi = mid - 1
    return estimate(model_or_shape, method, **{**kwargs, "max_batch_tokens": lo})


def planned_options(model, method: str, batch, options: Mapping, max_bytes: int | None) -> dict:
    """``options`` for one batch, with ``max_batch_tokens`` lowered to fit ``max_bytes`` (the
    result does not depend on it); raises :class:`MemoryBudgetError` when nothing fits."""
    if max_bytes is None:
        return dict(options)
    kwargs = {k: v for k, v in options.items() if k != "max_batch_tokens"}
    size = dict(positions=batch.input_width, steps=batch.n_steps, examples=batch.size)
    budget = options.get("max_batch_tokens", MAX_BATCH_TOKENS)
    est = fit(model, method, max_bytes=max_bytes, max_batch_tokens=budget, **size, **kwargs)
    if "max_batch_tokens" in options:
        return {**options, "max_batch_tokens": est.max_batch_tokens}
    return dict(options)


__all__ = [
    "ESTIMATORS",
    "Estimate",
    "MemoryBudgetError",
    "Shape",
    "estimate",
    "fit",
    "human",
    "planned_options",
]
