"""Loading with a device map: on CPU the map's code path (Accelerate placement) must give the
same model as a plain load. A map that spans several GPUs is not tested here."""

from __future__ import annotations

import pytest
import torch

import hooklab

PROMPT = "George was sick yesterday. His colleagues asked him"
TARGET = " to come to the hospital."


def _every_module_on_cpu(model) -> dict[str, str]:
    """An explicit map: each top-level module and each block of the HF model on "cpu"."""
    hf = model.original_model
    blocks = [f"transformer.h.{i}" for i in range(len(hf.transformer.h))]
    return {"transformer.wte": "cpu", "transformer.wpe": "cpu", **dict.fromkeys(blocks, "cpu"),
            "transformer.ln_f": "cpu", "lm_head": "cpu"}  # fmt: skip


@pytest.mark.parametrize("kind", ["string", "explicit"])
def test_device_map_on_cpu_equals_plain_load(gpt2, gpt2_dir, kind):
    device_map = "cpu" if kind == "string" else _every_module_on_cpu(gpt2)
    mapped = hooklab.load(gpt2_dir, device_map=device_map)
    assert mapped.cfg.device == "cpu"
    assert all(p.device.type == "cpu" for p in mapped.parameters())
    torch.testing.assert_close(mapped(PROMPT), gpt2(PROMPT), rtol=0, atol=1e-6)
    (got,) = hooklab.attribute(mapped, PROMPT, PROMPT + TARGET, method="saliency").sequences
    (want,) = hooklab.attribute(gpt2, PROMPT, PROMPT + TARGET, method="saliency").sequences
    assert got.tokens == want.tokens and len(got.tokens) > 10
    assert got.attributions.isfinite().any()
    torch.testing.assert_close(  # NaN: positions after the step, as in a plain load
        got.attributions, want.attributions, rtol=0, atol=1e-6, equal_nan=True
    )


def test_device_and_device_map_together_are_refused(gpt2_dir):
    with pytest.raises(ValueError, match="exclusive. Pass device= for one device"):
        hooklab.load(gpt2_dir, device="cpu", device_map="cpu")
