"""Models across devices: a sharded model gives the unsharded results; CUDA gives CPU's.

Every registered attribution method, every step score (contrastive ones with a contrast
prompt), greedy generation, PECoRe, value zeroing and attention knockout are compared on the
tiny GPT-2 and Llama of conftest:

- sharded vs unsharded: the model loaded with an explicit ``device_map`` that spreads its
  blocks over the visible GPUs (with one GPU: the first half of the blocks on ``cuda:0``, the
  rest on ``"cpu"``, which Accelerate keeps in CPU memory and runs on ``cuda:0``: CPU
  offload), against the model on the first of those devices. The same comparison runs on any
  machine with every shard on the CPU (that exercises the map's code path and these checks
  themselves; results must then match to 1e-6).
- CUDA vs CPU: the model on ``cuda:0`` against the model on the CPU.

Tolerance across devices (float32): ``atol=1e-4, rtol=1e-3`` (kernels sum in other orders;
the scores of these models are O(0.01..1)). ``mc_dropout_prob_avg`` is left out: its dropout
masks come from each device's own random generator. The GPU tests are marked ``gpu``
(``pytest -m gpu``, run by ``benchmarks/gpu_check.sh``) and skip without CUDA.
"""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

import hooklab
from hooklab.mixing import attention_knockout, value_zeroing
from hooklab.pecore import pecore

PROMPTS = ["George was sick yesterday. His colleagues asked him", "It rained all morning."]
TARGETS = [" to come to the hospital.", " She took her umbrella"]
CONTRASTS = ["His colleagues asked him", "She"]
#: options that keep the slow methods quick; ReAGent draws uniform replacements (the model's
#: predicted distributions differ in the last bits across devices, so would its samples)
OPTIONS = {
    "integrated_gradients": {"n_steps": 8},
    "gradient_shap": {"n_samples": 4},
    "reagent": {"num_probes": 4, "max_probe_steps": 20, "replacements": "uniform"},
}
#: step scores with a random part that depends on the device
DEVICE_RANDOM = {"mc_dropout_prob_avg"}
CROSS_DEVICE = {"atol": 1e-4, "rtol": 1e-3}
SAME_DEVICE = {"atol": 1e-6, "rtol": 1e-5}
NO_CUDA = "no CUDA device (torch.cuda.is_available() is False); run benchmarks/gpu_check.sh"
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)


def gpu_shards(n_blocks: int) -> list[str]:
    """The devices of a sharded model: up to ``n_blocks`` GPUs, or ``cuda:0`` and the CPU."""
    n = torch.cuda.device_count()
    return [f"cuda:{i}" for i in range(min(n, n_blocks))] if n > 1 else ["cuda:0", "cpu"]


def split_map(hf_model, devices: list[str]) -> dict[str, str]:
    """An explicit device map: block i on ``devices[i * len(devices) // n_blocks]``, every other
    module (embeddings, final norm, unembedding) on ``devices[0]``."""
    path = next(n for n, m in hf_model.named_modules() if isinstance(m, torch.nn.ModuleList))
    parts = path.split(".")
    mapping = {}
    for depth in range(len(parts)):  # the siblings of each ancestor of the block list
        parent = ".".join(parts[:depth])
        module = hf_model.get_submodule(parent)
        for name, _ in module.named_children():
            full = f"{parent}.{name}" if parent else name
            if full != ".".join(parts[: depth + 1]):
                mapping[full] = devices[0]
    n_blocks = len(hf_model.get_submodule(path))
    for i in range(n_blocks):
        mapping[f"{path}.{i}"] = devices[i * len(devices) // n_blocks]
    return mapping


def check_placement(hf_model, mapping: dict[str, str]) -> None:
    """Every module's parameters where the map puts them. Next to a GPU, Accelerate keeps a
    module mapped to "cpu" in CPU memory and runs it on the first GPU (CPU offload): its
    parameters then show as "meta" (the weights stream in for each forward)."""
    offload = any(d != "cpu" for d in mapping.values())
    for name, device in mapping.items():
        want = torch.device(device)
        for p in hf_model.get_submodule(name).parameters():
            streamed = offload and want.type == "cpu" and p.device.type == "meta"
            assert p.device == want or streamed, f"{name} mapped to {device!r} is on {p.device}"


def _close(a, b, tol) -> None:
    a, b = a.detach().cpu(), b.detach().cpu()
    assert a.shape == b.shape
    assert torch.equal(a.isnan(), b.isnan())
    assert_close(a.nan_to_num(), b.nan_to_num(), **tol)


@pytest.fixture(scope="module", params=["gpt2_dir", "llama_dir"])
def model_dir(request):
    return request.getfixturevalue(request.param)


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("cpu-shards", id="sharded-on-cpu"),
        pytest.param("gpu-shards", id="sharded-on-gpus", marks=[pytest.mark.gpu, needs_cuda]),
        pytest.param("cuda-vs-cpu", id="cuda-vs-cpu", marks=[pytest.mark.gpu, needs_cuda]),
    ],
)
def pair(request, model_dir):
    """``(model, reference, tolerance)``: the model under test and the one it must equal."""
    if request.param == "cuda-vs-cpu":
        cuda = hooklab.load(model_dir, device="cuda:0")
        return cuda, hooklab.load(model_dir, device="cpu"), CROSS_DEVICE
    plain = hooklab.load(model_dir, device="cpu")
    n_blocks = plain.cfg.n_layers
    devices = ["cpu", "cpu"] if request.param == "cpu-shards" else gpu_shards(n_blocks)
    sharded = hooklab.load(model_dir, device_map=split_map(plain.original_model, devices))
    check_placement(sharded.original_model, split_map(plain.original_model, devices))
    if devices[0] != "cpu":
        plain = hooklab.load(model_dir, device=devices[0])
    return sharded, plain, SAME_DEVICE if request.param == "cpu-shards" else CROSS_DEVICE


@pytest.mark.parametrize("method", hooklab.list_methods())
def test_every_method(pair, method):
    model, reference, tol = pair
    kwargs = {"method": method, "step_scores": ["probability"], **OPTIONS.get(method, {})}
    got = hooklab.attribute(model, PROMPTS, TARGETS, **kwargs)
    want = hooklab.attribute(reference, PROMPTS, TARGETS, **kwargs)
    for a, b in zip(got, want, strict=True):
        assert a.tokens == b.tokens
        if b.attributions is not None:
            _close(a.attributions, b.attributions, tol)
        _close(a.step_scores["probability"], b.step_scores["probability"], tol)
        for name in b.extras:
            _close(a.extras[name], b.extras[name], tol)


def test_every_step_score(pair):
    model, reference, tol = pair
    names = [n for n in hooklab.list_step_functions() if n not in DEVICE_RANDOM]
    kwargs = {"method": "dummy", "step_scores": names, "contrast_prompts": CONTRASTS}
    got = hooklab.attribute(model, PROMPTS, TARGETS, **kwargs)
    want = hooklab.attribute(reference, PROMPTS, TARGETS, **kwargs)
    for a, b in zip(got, want, strict=True):
        assert list(a.step_scores) == names
        for name in names:
            _close(a.step_scores[name], b.step_scores[name], tol)


def test_pecore(pair):
    model, reference, tol = pair
    texts = ("George was sick yesterday.", "His colleagues asked him to come")
    got = pecore(model, *texts, output_current_text=" to the hospital.")
    want = pecore(reference, *texts, output_current_text=" to the hospital.")
    assert got.output_current_tokens == want.output_current_tokens
    _close(torch.tensor(got.cti_scores), torch.tensor(want.cti_scores), tol)
    assert [c.index for c in got.context_sensitive] == [c.index for c in want.context_sensitive]
    for a, b in zip(got.context_sensitive, want.context_sensitive, strict=True):
        scores = [torch.tensor(x.input_context_scores) for x in (a, b)]
        _close(*scores, tol)


def test_value_zeroing(pair):
    model, reference, tol = pair
    got = value_zeroing(model, PROMPTS, targets=TARGETS, rollout=True)
    want = value_zeroing(reference, PROMPTS, targets=TARGETS, rollout=True)
    for a, b in zip(got, want, strict=True):
        assert a.tokens == b.tokens
        _close(a.scores, b.scores, tol)
        _close(a.rollout, b.rollout, tol)


def test_attention_knockout(pair):
    model, reference, tol = pair
    kwargs = {"sources": {"context": "sick yesterday", "last": -1}, "window": 1}
    got = attention_knockout(model, PROMPTS[0], **kwargs)
    want = attention_knockout(reference, PROMPTS[0], **kwargs)
    for a, b in zip(got, want, strict=True):
        assert a.target_id == b.target_id
        _close(torch.tensor(a.base_probability), torch.tensor(b.base_probability), tol)
        _close(a.probabilities, b.probabilities, tol)


def test_generation(pair):
    model, reference, _ = pair
    got = hooklab.attribute(model, PROMPTS, method="dummy", generation_kwargs={"max_new_tokens": 6})
    want = hooklab.attribute(
        reference, PROMPTS, method="dummy", generation_kwargs={"max_new_tokens": 6}
    )
    assert [a.tokens for a in got] == [b.tokens for b in want]
